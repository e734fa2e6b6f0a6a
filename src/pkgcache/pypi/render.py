"""Writing a ProjectPage as PEP 503 HTML or PEP 691 JSON, with every file link pointing at pkgcache.

Links are relative to the project page (`../../files/<project>/<file>`), so the same bytes are right whatever
host name or reverse proxy the client reached pkgcache through, and can be rendered once and reused. Provenance
links (PEP 740) point through pkgcache the same way (`<file>.provenance`); the upstream's own URL stays in the model.

Each page declares the lowest simple API version that covers what it says (see `html_api_version` and
`json_api_version`), never one whose requirements it does not meet.
"""

from __future__ import annotations

import json
from html import escape
from typing import Any
from urllib.parse import quote

from pkgcache.pypi.model import DistFile, ProjectPage, ProjectStatus
from pkgcache.pypi.names import PROVENANCE_SUFFIX

HTML_CONTENT_TYPE = "application/vnd.pypi.simple.v1+html"
JSON_CONTENT_TYPE = "application/vnd.pypi.simple.v1+json"
TEXT_HTML = "text/html"

# What each minor version of the simple API added (the specification's version history).
BASE_VERSION = (1, 0)
PEP_700_VERSION = (1, 1)  # JSON only: `versions`, and `size` (required from then on) and `upload-time` per file
PEP_708_VERSION = (1, 2)  # tracks, alternate locations
PEP_740_VERSION = (1, 3)  # provenance
PEP_792_VERSION = (1, 4)  # project status: the newest version, and every field of it is kept


def with_charset(content_type: str) -> str:
    """The Content-Type header for a format: text/html names its charset, the PEP 691 types are UTF-8 by definition."""
    return f"{content_type}; charset=utf-8" if content_type == TEXT_HTML else content_type


def file_link(project: str, filename: str) -> str:
    """Where a project page links a file: relative to /pypi/simple/<project>/."""
    return f"../../files/{quote(project)}/{quote(filename)}"


def provenance_link(project: str, filename: str) -> str:
    """Where a project page links a file's PEP 740 provenance: beside the file, through pkgcache."""
    return file_link(project, filename + PROVENANCE_SUFFIX)


# --- which API version a page is ---


def html_api_version(page: ProjectPage) -> str:
    """The `pypi:repository-version` of the page as HTML, which has no PEP 700 fields."""
    return _version_text(_project_fields_version(page))


def json_api_version(page: ProjectPage) -> str:
    """The `meta.api-version` of the page as JSON.

    JSON always carries `versions` (1.1), and every version from 1.1 on requires each file's `size`: when one is
    unknown (an HTML upstream gives none) the page can only be vouched for as 1.0, whatever newer fields it has
    (clients ignore keys they do not know, and read the ones they do whatever the version).
    """
    if any(dist.size is None for dist in page.files):
        return _version_text(BASE_VERSION)
    return _version_text(max(PEP_700_VERSION, _project_fields_version(page)))


def _project_fields_version(page: ProjectPage) -> tuple[int, int]:
    if page.status is not None:
        return PEP_792_VERSION
    if any(dist.provenance_url for dist in page.files):
        return PEP_740_VERSION
    if page.tracks or page.alternate_locations:
        return PEP_708_VERSION
    return BASE_VERSION


def _version_text(version: tuple[int, int]) -> str:
    return f"{version[0]}.{version[1]}"


# --- HTML ---


def render_html(page: ProjectPage) -> bytes:
    title = escape(page.name)
    lines = [
        "<!DOCTYPE html>",
        "<html>",
        "  <head>",
        *(f"    {tag}" for tag in _html_meta_tags(page)),
        f"    <title>Links for {title}</title>",
        "  </head>",
        "  <body>",
        f"    <h1>Links for {title}</h1>",
    ]
    lines.extend(f"    {_html_anchor(page.name, dist)}<br>" for dist in page.files)
    lines += ["  </body>", "</html>"]
    if page.last_serial is not None:
        lines.append(f"<!--SERIAL {page.last_serial}-->")  # where the official index and the mirrors write it
    lines.append("")
    return "\n".join(lines).encode()


def _html_meta_tags(page: ProjectPage) -> list[str]:
    tags = [("pypi:repository-version", html_api_version(page))]
    if page.status is not None:
        tags.append(("pypi:project-status", page.status.status))
        if page.status.reason is not None:
            tags.append(("pypi:project-status-reason", page.status.reason))
    tags += [("pypi:tracks", url) for url in page.tracks]
    tags += [("pypi:alternate-locations", url) for url in page.alternate_locations]
    return [f'<meta name="{name}" content="{escape(content)}">' for name, content in tags]


def _html_anchor(project: str, dist: DistFile) -> str:
    href = file_link(project, dist.filename) + _hash_fragment(dist)
    attrs = [f'href="{escape(href)}"']
    if dist.requires_python:
        attrs.append(f'data-requires-python="{escape(dist.requires_python)}"')
    if dist.yanked:
        reason = dist.yanked if isinstance(dist.yanked, str) else ""
        attrs.append(f'data-yanked="{escape(reason)}"')
    if dist.core_metadata:
        value = escape(_metadata_attr(dist))
        # Both spellings: PEP 714's, and the older one that pip before 23.2 reads.
        attrs.append(f'data-core-metadata="{value}"')
        attrs.append(f'data-dist-info-metadata="{value}"')
    if dist.gpg_sig is not None:
        attrs.append(f'data-gpg-sig="{"true" if dist.gpg_sig else "false"}"')
    if dist.provenance_url:
        attrs.append(f'data-provenance="{escape(provenance_link(project, dist.filename))}"')
    return f"<a {' '.join(attrs)}>{escape(dist.filename)}</a>"


def _hash_fragment(dist: DistFile) -> str:
    if not dist.hashes:
        return ""
    algo = "sha256" if "sha256" in dist.hashes else next(iter(dist.hashes))
    return f"#{algo}={dist.hashes[algo]}"


def _metadata_attr(dist: DistFile) -> str:
    if isinstance(dist.core_metadata, bool):
        return "true"
    algo = "sha256" if "sha256" in dist.core_metadata else next(iter(dist.core_metadata))
    return f"{algo}={dist.core_metadata[algo]}"


# --- JSON ---


def render_json(page: ProjectPage) -> bytes:
    meta: dict[str, Any] = {"api-version": json_api_version(page)}
    if page.last_serial is not None:
        meta["_last-serial"] = page.last_serial
    if page.tracks:
        meta["tracks"] = list(page.tracks)  # PEP 708 puts tracks in `meta`, alternate locations beside it
    document: dict[str, Any] = {"meta": meta, "name": page.name}
    if page.status is not None:
        document["project-status"] = _json_status(page.status)
    if page.alternate_locations:
        document["alternate-locations"] = list(page.alternate_locations)
    document["files"] = [_json_file(page.name, dist) for dist in page.files]
    document["versions"] = page.all_versions()
    return json.dumps(document, separators=(",", ":")).encode()


def _json_status(status: ProjectStatus) -> dict[str, str]:
    # Never null: uv reads `project-status` as an object and would refuse the page.
    value = {"status": status.status}
    if status.reason is not None:
        value["reason"] = status.reason
    return value


def _json_file(project: str, dist: DistFile) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "filename": dist.filename,
        "url": file_link(project, dist.filename),
        "hashes": dict(dist.hashes),
    }
    if dist.requires_python:
        entry["requires-python"] = dist.requires_python
    if dist.yanked:
        entry["yanked"] = dist.yanked
    if dist.core_metadata:
        metadata = True if isinstance(dist.core_metadata, bool) else dict(dist.core_metadata)
        entry["core-metadata"] = metadata
        entry["dist-info-metadata"] = metadata
    if dist.gpg_sig is not None:
        entry["gpg-sig"] = dist.gpg_sig
    if dist.size is not None:
        entry["size"] = dist.size
    if dist.upload_time is not None:
        entry["upload-time"] = dist.upload_time
    if dist.provenance_url:
        entry["provenance"] = provenance_link(project, dist.filename)
    return entry


# --- the project list ---


def render_project_list_html(names: list[str]) -> bytes:
    # Names only: nothing the base version (1.0) does not have.
    lines = [
        "<!DOCTYPE html>",
        "<html>",
        "  <head>",
        f'    <meta name="pypi:repository-version" content="{_version_text(BASE_VERSION)}">',
        "    <title>Simple index</title>",
        "  </head>",
        "  <body>",
    ]
    lines.extend(f'    <a href="{quote(name)}/">{escape(name)}</a><br>' for name in names)
    lines += ["  </body>", "</html>", ""]
    return "\n".join(lines).encode()


def render_project_list_json(names: list[str]) -> bytes:
    document = {"meta": {"api-version": _version_text(BASE_VERSION)}, "projects": [{"name": name} for name in names]}
    return json.dumps(document, separators=(",", ":")).encode()
