"""Reading an upstream's project page, HTML (PEP 503) or JSON (PEP 691), into a ProjectPage.

The format is decided from the body, not from the Content-Type: mirrors have labelled JSON as
`application/octet-stream` and answered JSON requests with HTML.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from html.parser import HTMLParser
from typing import Any
from urllib.parse import unquote, urldefrag, urljoin, urlsplit

from pkgcache.pypi.model import DistFile, ProjectPage
from pkgcache.pypi.names import is_distribution_filename

_SERIAL_COMMENT = re.compile(r"\s*SERIAL\s+(\d+)\s*")
_HASH_NAME = re.compile(r"^[a-z0-9_]+$")


class InvalidPage(ValueError):
    """The upstream's answer is not a project page (an error page, a login page, broken JSON...)."""


def parse_project_page(body: bytes, page_url: str, name: str) -> ProjectPage:
    """Read a project page served at `page_url`; relative file links are resolved against it."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidPage("the page is not UTF-8 text") from None
    if text.lstrip().startswith("{"):
        return _parse_json(text, page_url, name)
    return _parse_html(text, page_url, name)


# --- PEP 691 JSON ---


def _parse_json(text: str, page_url: str, name: str) -> ProjectPage:
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise InvalidPage(f"invalid JSON: {exc}") from None
    if not isinstance(data, dict) or not isinstance(data.get("files"), list):
        raise InvalidPage("JSON without a 'files' list")
    meta = data.get("meta")
    api_version = str(meta.get("api-version", "")) if isinstance(meta, dict) else ""
    if not api_version.startswith("1."):
        raise InvalidPage(f"unsupported simple API version {api_version!r}")
    files = tuple(_json_file(item, page_url) for item in data["files"])
    versions = data.get("versions")
    serial = meta.get("_last-serial")
    return ProjectPage(
        name=name,
        files=tuple(dist for dist in files if dist is not None),
        versions=tuple(str(v) for v in versions) if isinstance(versions, list) else None,
        last_serial=serial if isinstance(serial, int) else None,
    )


def _json_file(item: Any, page_url: str) -> DistFile | None:
    if not isinstance(item, dict):
        raise InvalidPage("a file entry is not an object")
    filename, url, hashes = item.get("filename"), item.get("url"), item.get("hashes", {})
    if not isinstance(filename, str) or not isinstance(url, str) or not isinstance(hashes, dict):
        raise InvalidPage("a file entry lacks filename, url or hashes")
    if not is_distribution_filename(filename):
        return None
    metadata = item.get("core-metadata", item.get("dist-info-metadata", False))
    size = item.get("size")
    upload_time = item.get("upload-time")
    requires_python = item.get("requires-python")
    gpg_sig = item.get("gpg-sig")
    return DistFile(
        filename=filename,
        url=urldefrag(urljoin(page_url, url)).url,
        hashes=_clean_hashes(hashes),
        requires_python=requires_python if isinstance(requires_python, str) and requires_python else None,
        yanked=_json_yanked(item.get("yanked", False)),
        core_metadata=_json_metadata(metadata),
        gpg_sig=gpg_sig if isinstance(gpg_sig, bool) else None,
        size=size if isinstance(size, int) and size >= 0 else None,
        upload_time=upload_time if isinstance(upload_time, str) else None,
    )


def _json_yanked(value: Any) -> bool | str:
    if isinstance(value, str):
        return value or True
    return bool(value)


def _json_metadata(value: Any) -> bool | Mapping[str, str]:
    if isinstance(value, dict):
        return _clean_hashes(value) or True
    return bool(value)


def _clean_hashes(hashes: Mapping[Any, Any]) -> dict[str, str]:
    return {
        str(algo).lower(): str(digest).lower()
        for algo, digest in hashes.items()
        if isinstance(digest, str) and _HASH_NAME.match(str(algo).lower())
    }


# --- PEP 503 HTML ---


def _parse_html(text: str, page_url: str, name: str) -> ProjectPage:
    reader = _AnchorReader()
    try:
        reader.feed(text)
        reader.close()
    except (AssertionError, ValueError) as exc:  # HTMLParser's way of giving up
        raise InvalidPage(f"unreadable HTML: {exc}") from None
    files = [dist for anchor in reader.anchors if (dist := _html_file(anchor, page_url)) is not None]
    if not files and not reader.looks_like_index(text):
        raise InvalidPage("an HTML page that is not a project index (no distribution links)")
    return ProjectPage(name=name, files=tuple(files), last_serial=reader.serial)


class _AnchorReader(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.anchors: list[tuple[dict[str, str | None], str]] = []
        self.serial: int | None = None
        self.has_repository_meta = False
        self._open: dict[str, str | None] | None = None
        self._text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "a":
            self._open, self._text = dict(attrs), []
        elif tag == "meta" and dict(attrs).get("name") == "pypi:repository-version":
            self.has_repository_meta = True

    def handle_data(self, data: str) -> None:
        if self._open is not None:
            self._text.append(data)

    def handle_endtag(self, tag: str) -> None:
        if tag == "a" and self._open is not None:
            self.anchors.append((self._open, "".join(self._text).strip()))
            self._open = None

    def handle_comment(self, data: str) -> None:
        match = _SERIAL_COMMENT.fullmatch(data)
        if match:
            self.serial = int(match.group(1))

    def looks_like_index(self, text: str) -> bool:
        # An empty project (every file deleted) is still a page: it has the usual title or the API meta tag.
        return self.has_repository_meta or "Links for" in text


def _html_file(anchor: tuple[dict[str, str | None], str], page_url: str) -> DistFile | None:
    attrs, text = anchor
    href = attrs.get("href")
    if not href:
        return None
    url, fragment = urldefrag(urljoin(page_url, href))
    filename = text or unquote(urlsplit(url).path.rsplit("/", 1)[-1])
    if not is_distribution_filename(filename):
        return None
    return DistFile(
        filename=filename,
        url=url,
        hashes=_fragment_hashes(fragment),
        requires_python=attrs.get("data-requires-python") or None,
        yanked=_html_yanked(attrs),
        core_metadata=_html_metadata(attrs),
        gpg_sig=_html_bool(attrs.get("data-gpg-sig")),
    )


def _fragment_hashes(fragment: str) -> dict[str, str]:
    algo, _, digest = fragment.partition("=")
    return _clean_hashes({algo: digest}) if algo and digest else {}


def _html_yanked(attrs: Mapping[str, str | None]) -> bool | str:
    if "data-yanked" not in attrs:
        return False
    return attrs["data-yanked"] or True


def _html_metadata(attrs: Mapping[str, str | None]) -> bool | Mapping[str, str]:
    # PEP 714 renamed data-dist-info-metadata to data-core-metadata; upstreams may write either or both.
    for key in ("data-core-metadata", "data-dist-info-metadata"):
        if key in attrs:
            value = attrs[key] or "true"
            if value.lower() == "true":
                return True
            if value.lower() == "false":
                return False
            return _fragment_hashes(value) or True
    return False


def _html_bool(value: str | None) -> bool | None:
    if value is None:
        return None
    return value.lower() == "true"
