"""The systems under test and the upstream, each started on loopback and stopped by pid.

Every system exposes the same few URLs (index, project page, conda file) so scenarios treat them alike.
`start(fresh=True)` begins with an empty cache: that is how the cold scenarios get their cold cache.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from bench import nginx_conf, procs
from bench.common import LOOPBACK, MAIN_PYTHON, REPO, byte_compile_pkgcache, clean_env, free_port, log
from bench.policy import policy_keys
from bench.prepare_conda import CHANNEL
from bench.prepare_pypi import UPSTREAM_ROOT
from bench.venvs import ensure_venv


@dataclass
class System:
    name: str
    run_dir: Path
    port: int = field(default_factory=free_port)
    proc: procs.Proc | None = None
    conda: bool = False
    hwm_kb: int = 0  # VmHWM of every instance stopped so far (the largest)
    starts: int = 0

    @property
    def base(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    @property
    def index_url(self) -> str:
        raise NotImplementedError

    def page_url(self, project: str) -> str:
        return f"{self.index_url}{project}/"

    def conda_url(self, subdir: str, filename: str) -> str | None:
        return f"{self.base}/conda/{CHANNEL}/{subdir}/{filename}" if self.conda else None

    @property
    def health_url(self) -> str:
        return self.base + "/"

    def _launch(self, fresh: bool) -> procs.Proc:
        raise NotImplementedError

    def start(self, fresh: bool) -> None:
        self.stop()
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.proc = self._launch(fresh)
        procs.wait_http(self.health_url, self.proc)
        self.starts += 1

    def stop(self) -> None:
        if self.proc is not None:
            procs.stop(self.proc)
            self.hwm_kb = max(self.hwm_kb, self.proc.hwm_kb)
            self.proc = None


class Upstream(System):
    """nginx serving the prepared tree: the upstream every proxy fetches from, and 'direct' in the tables."""

    def __init__(self, name: str, run_dir: Path) -> None:
        super().__init__(name, run_dir, conda=True)

    @property
    def access_log(self) -> Path:
        return self.run_dir / "access.log"

    @property
    def index_url(self) -> str:
        return f"{self.base}/simple/"

    @property
    def health_url(self) -> str:
        return self.index_url

    def _launch(self, fresh: bool) -> procs.Proc:
        conf = self.run_dir / "nginx.conf"
        conf.write_text(nginx_conf.upstream_conf(self.run_dir, UPSTREAM_ROOT, self.port, self.access_log))
        return start_nginx(self.name, self.run_dir, conf)

    def fetches(self, path_suffix: str) -> int:
        """How many GETs the upstream has logged for a path ending in `path_suffix`."""
        if not self.access_log.exists():
            return 0
        count = 0
        with self.access_log.open() as handle:
            for line in handle:
                parts = line.split()
                if len(parts) >= 3 and parts[1] == "GET" and parts[2].endswith(path_suffix):
                    count += 1
        return count


class NginxCache(System):
    def __init__(self, name: str, run_dir: Path, upstream: Upstream) -> None:
        super().__init__(name, run_dir, conda=True)
        self.upstream = upstream

    @property
    def index_url(self) -> str:
        return f"{self.base}/simple/"

    @property
    def health_url(self) -> str:
        return self.base + "/-/health"

    def _launch(self, fresh: bool) -> procs.Proc:
        if fresh:
            shutil.rmtree(self.run_dir / "cache", ignore_errors=True)
        conf = self.run_dir / "nginx.conf"
        access = self.run_dir / "access.log"
        conf.write_text(nginx_conf.cache_conf(self.run_dir, self.port, self.upstream.port, access))
        return start_nginx(self.name, self.run_dir, conf)


def start_nginx(name: str, prefix: Path, conf: Path) -> procs.Proc:
    for folder in ("client_body", "proxy_temp", "fastcgi", "uwsgi", "scgi"):
        (prefix / folder).mkdir(parents=True, exist_ok=True)
    argv = ["nginx", "-p", str(prefix), "-c", str(conf), "-e", str(prefix / "error.log")]
    return procs.start(name, argv, prefix / "server.log", clean_env())


class Pkgcache(System):
    def __init__(
        self,
        name: str,
        run_dir: Path,
        upstream: Upstream,
        variant: str | None = None,
        server: dict[str, str | int | float] | None = None,
        channels: tuple[str, ...] = (CHANNEL,),
        sections: str = "",
        env: dict[str, str] | None = None,
        policy_rules: int = 0,
    ) -> None:
        super().__init__(name, run_dir, conda=True)
        self.upstream = upstream
        self.variant = variant  # see bench/pkgcache_variant.py; None: the plain `pkgcache` command
        self.server = server or {}  # [server] settings other than the defaults (workers, log_level)
        self.channels = channels
        self.sections = sections  # more TOML, after the other sections (e.g. [upstream] for the faults scenario)
        self.env = env or {}  # more environment (e.g. LD_PRELOAD for bench/page_cost.py's clock counter)
        self.policy_rules = policy_rules  # rules of a policy on each side (bench/policy.py); 0: none

    @property
    def index_url(self) -> str:
        return f"{self.base}/pypi/simple/"

    @property
    def health_url(self) -> str:
        return self.base + "/-/health"

    @property
    def data_dir(self) -> Path:
        return self.run_dir / "data"

    def pypi_upstreams(self) -> str:
        """The [pypi] upstreams as TOML: the bench's upstream, or more in priority order (set by a subclass)."""
        return json.dumps([self.upstream.index_url])

    def _launch(self, fresh: bool) -> procs.Proc:
        if fresh:
            shutil.rmtree(self.data_dir, ignore_errors=True)
        config = self.run_dir / "pkgcache.toml"
        # Defaults everywhere but the address, the data directory and the upstreams.
        extra = "".join(f"{key} = {json.dumps(value)}\n" for key, value in self.server.items())
        config.write_text(
            f'[server]\nhost = "{LOOPBACK}"\nport = {self.port}\ndata_dir = "{self.data_dir}"\n{extra}\n'
            f"[pypi]\nupstreams = {self.pypi_upstreams()}\n{policy_keys('pypi', self.policy_rules)}\n"
            f'[conda]\nupstreams = ["{self.upstream.base}/conda/"]\nchannels = {json.dumps(list(self.channels))}\n'
            + policy_keys("conda", self.policy_rules)
            + self.sections
        )
        command = [str(MAIN_PYTHON.parent / "pkgcache")]
        if self.variant:
            command = [str(MAIN_PYTHON), "-m", "bench.pkgcache_variant", self.variant]
        argv = [*command, "serve", "--config", str(config)]
        byte_compile_pkgcache()
        return procs.start(self.name, argv, self.run_dir / "server.log", clean_env(PYTHONPATH=str(REPO), **self.env))


class Relay(System):
    """bench/latency_proxy.py in front of another system: a link of a given round trip and bandwidth (per
    connection, each way) between whoever connects here and that system. `index_url` and `health_url` are the
    other system's, reached through the link."""

    def __init__(self, name: str, run_dir: Path, behind: System, round_trip_ms: float, mbps: float) -> None:
        super().__init__(name, run_dir, conda=behind.conda)
        self.behind = behind
        self.round_trip_ms = round_trip_ms
        self.mbps = mbps

    @property
    def index_url(self) -> str:
        return self.behind.index_url.replace(self.behind.base, self.base, 1)

    @property
    def health_url(self) -> str:
        return self.behind.health_url.replace(self.behind.base, self.base, 1)

    def _launch(self, fresh: bool) -> procs.Proc:
        argv = [str(MAIN_PYTHON), "-m", "bench.latency_proxy", "--listen", str(self.port),
                "--to", f"{LOOPBACK}:{self.behind.port}", "--delay-ms", str(self.round_trip_ms / 2),
                "--rate-mbps", str(self.mbps)]  # fmt: skip
        return procs.start(self.name, argv, self.run_dir / "relay.log", clean_env(PYTHONPATH=str(REPO)))


class Proxpi(System):
    """proxpi as its Docker image runs it: gunicorn, one worker, two threads, --preload."""

    def __init__(self, name: str, run_dir: Path, upstream: Upstream) -> None:
        super().__init__(name, run_dir)
        self.upstream = upstream

    @property
    def index_url(self) -> str:
        return f"{self.base}/index/"

    def _launch(self, fresh: bool) -> procs.Proc:
        cache = self.run_dir / "cache"
        if fresh:
            shutil.rmtree(cache, ignore_errors=True)
        cache.mkdir(parents=True, exist_ok=True)
        venv = ensure_venv("proxpi")
        env = clean_env(PROXPI_INDEX_URL=self.upstream.index_url, PROXPI_CACHE_DIR=str(cache))
        argv = [
            str(venv / "gunicorn"), "--preload", "--access-logfile", "-",
            "--logger-class", "proxpi.server._GunicornLogger", "proxpi.server:app",
            "--bind", f"{LOOPBACK}:{self.port}", "--threads", "2",
        ]  # fmt: skip
        return procs.start(self.name, argv, self.run_dir / "server.log", env)


class Devpi(System):
    """devpi-server with defaults, serving a mirror index root/bench of the upstream."""

    def __init__(self, name: str, run_dir: Path, upstream: Upstream) -> None:
        super().__init__(name, run_dir)
        self.upstream = upstream
        self._template_ready = False

    @property
    def index_url(self) -> str:
        return f"{self.base}/root/bench/+simple/"

    @property
    def health_url(self) -> str:
        return self.base + "/+api"

    @property
    def server_dir(self) -> Path:
        return self.run_dir / "server"

    @property
    def template_dir(self) -> Path:
        return self.run_dir / "template"

    def _launch(self, fresh: bool) -> procs.Proc:
        if not self._template_ready:
            self._make_template()
        if fresh:
            shutil.rmtree(self.server_dir, ignore_errors=True)
            shutil.copytree(self.template_dir, self.server_dir, symlinks=True)
        return self._run_server(self.server_dir)

    def _run_server(self, server_dir: Path) -> procs.Proc:
        venv = ensure_venv("devpi")
        argv = [str(venv / "devpi-server"), "--serverdir", str(server_dir), "--host", LOOPBACK, "--port",
                str(self.port)]  # fmt: skip
        return procs.start(self.name, argv, self.run_dir / "server.log", clean_env())

    def _make_template(self) -> None:
        """devpi-init and the mirror index once per run; every fresh start copies this untouched server dir."""
        log("devpi: initialising a server directory with a mirror index of the upstream")
        venv = ensure_venv("devpi")
        shutil.rmtree(self.template_dir, ignore_errors=True)
        env = clean_env()
        init = [str(venv / "devpi-init"), "--serverdir", str(self.template_dir), "--no-root-pypi", "--root-passwd", ""]
        subprocess.run(init, env=env, check=True, capture_output=True)
        proc = self._run_server(self.template_dir)
        try:
            procs.wait_http(self.health_url, proc)
            client = self.run_dir / "client"
            devpi = [str(venv / "devpi"), "--clientdir", str(client)]
            for args in (
                ["use", self.base + "/"],
                ["login", "root", "--password", ""],
                ["index", "-c", "root/bench", "type=mirror", f"mirror_url={self.upstream.index_url}"],
            ):
                subprocess.run([*devpi, *args], env=env, check=True, capture_output=True)
        finally:
            procs.stop(proc)
        self._template_ready = True
