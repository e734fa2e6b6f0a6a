"""Load and timing clients: wrk for throughput, curl for single requests and the herd. Both are C programs,
so the client is not what limits the numbers (a Python client would be)."""

from __future__ import annotations

import re
import subprocess
import urllib.request
from dataclasses import asdict, dataclass
from html.parser import HTMLParser
from urllib.parse import urldefrag, urljoin

from bench.common import clean_env

# What pip 23+ sends for a project page: JSON preferred, HTML accepted.
PIP_ACCEPT = "application/vnd.pypi.simple.v1+json, application/vnd.pypi.simple.v1+html; q=0.1, text/html; q=0.01"
HTML_ACCEPT = "text/html"
_UNITS = {"B": 1, "KB": 1024, "MB": 1024**2, "GB": 1024**3, "TB": 1024**4}
TIME_UNITS = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0}


@dataclass
class WrkResult:
    requests_per_s: float
    p50_ms: float | None
    p99_ms: float | None
    bytes_read: int
    duration_s: float
    errors: int  # non-2xx/3xx answers plus socket errors

    @property
    def mb_per_s(self) -> float:
        return self.bytes_read / self.duration_s / 1e6

    def as_dict(self) -> dict:
        return asdict(self) | {"mb_per_s": round(self.mb_per_s, 1)}


def wrk(url: str, connections: int, duration: float, accept: str | None = None, *headers: str) -> WrkResult:
    """wrk's figures for `url`; `headers` ("Name: value") go on every request beside Accept."""
    threads = min(connections, 2)
    command = ["wrk", "-t", str(threads), "-c", str(connections), "-d", f"{duration:g}s", "--latency",
               "--timeout", "30s"]  # fmt: skip
    if accept:
        command += ["-H", f"Accept: {accept}"]
    for header in headers:
        command += ["-H", header]
    result = subprocess.run([*command, url], capture_output=True, text=True, timeout=duration + 60, env=clean_env())
    if result.returncode != 0:
        raise RuntimeError(f"wrk failed on {url}: {result.stderr.strip()}")
    return parse_wrk(result.stdout)


def parse_wrk(text: str) -> WrkResult:
    summary = re.search(r"(\d+) requests in ([\d.]+)(\w+), ([\d.]+)(\w+) read", text)
    if summary is None:
        raise RuntimeError(f"cannot read wrk's output:\n{text}")
    duration = float(summary.group(2)) * TIME_UNITS[summary.group(3)]
    errors = sum(int(n) for n in re.findall(r"Non-2xx or 3xx responses: (\d+)", text))
    for socket_errors in re.findall(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text):
        errors += sum(int(n) for n in socket_errors)
    return WrkResult(
        requests_per_s=float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1)),
        p50_ms=_percentile(text, "50%"),
        p99_ms=_percentile(text, "99%"),
        bytes_read=int(float(summary.group(4)) * _UNITS[summary.group(5)]),
        duration_s=duration,
        errors=errors,
    )


def _percentile(text: str, label: str) -> float | None:
    found = re.search(rf"^\s+{re.escape(label)}\s+([\d.]+)(us|ms|s|m)\s*$", text, re.MULTILINE)
    return None if found is None else float(found.group(1)) * TIME_UNITS[found.group(2)] * 1000


@dataclass
class CurlTiming:
    status: int
    ttfb_s: float
    total_s: float
    size: int


_CURL_FORMAT = "%{http_code} %{time_starttransfer} %{time_total} %{size_download}\\n"


def curl_get(url: str, accept: str | None = None, timeout: float = 300, follow: bool = True) -> CurlTiming:
    """One GET, body thrown away; redirects followed (proxpi sends clients to the upstream when it is slow)."""
    command = ["curl", "-s", "-o", "/dev/null", "-w", _CURL_FORMAT, "--max-time", str(timeout)]
    if follow:
        command.append("-L")
    if accept:
        command += ["-H", f"Accept: {accept}"]
    out = subprocess.run([*command, url], capture_output=True, text=True, timeout=timeout + 10, env=clean_env())
    return _parse_timing(out.stdout.strip().splitlines()[-1])


def _parse_timing(line: str) -> CurlTiming:
    status, ttfb, total, size = line.split()
    return CurlTiming(int(status), float(ttfb), float(total), int(float(size)))


def curl_herd(url: str, clients: int, timeout: float = 600) -> list[CurlTiming]:
    """`clients` GETs of one URL, all started at once from one curl process (one connection each)."""
    command = ["curl", "-s", "-L", "-Z", "--parallel-immediate", "--parallel-max", str(clients),
               "-w", _CURL_FORMAT, "--max-time", str(timeout)]  # fmt: skip
    for _ in range(clients):
        command += ["-o", "/dev/null", url]
    out = subprocess.run(command, capture_output=True, text=True, timeout=timeout + 30, env=clean_env())
    return [_parse_timing(line) for line in out.stdout.strip().splitlines() if line.strip()]


def fetch(url: str, accept: str = HTML_ACCEPT, timeout: float = 120) -> bytes:
    request = urllib.request.Request(url, headers={"Accept": accept})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return response.read()


class _Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.hrefs: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "a":
            self.hrefs += [value for key, value in attrs if key == "href" and value]


def file_url(page_url: str, filename: str) -> str:
    """Where a system's project page (HTML) links `filename`: each system has its own file URL scheme."""
    parser = _Links()
    parser.feed(fetch(page_url).decode())
    for href in parser.hrefs:
        target = urldefrag(urljoin(page_url, href)).url
        if target.rsplit("/", 1)[-1] == filename:
            return target
    raise RuntimeError(f"{page_url} does not link {filename}")
