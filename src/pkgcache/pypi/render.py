"""Writing a ProjectPage as PEP 503 HTML or PEP 691 JSON, with every file link pointing at pkgcache.

Links are relative to the project page (`../../files/<project>/<file>`), so the same bytes are right whatever
host name or reverse proxy the client reached pkgcache through, and can be rendered once and reused.
"""

from __future__ import annotations

import json
from html import escape
from typing import Any
from urllib.parse import quote

from pkgcache.pypi.model import DistFile, ProjectPage

HTML_CONTENT_TYPE = "application/vnd.pypi.simple.v1+html"
JSON_CONTENT_TYPE = "application/vnd.pypi.simple.v1+json"
TEXT_HTML = "text/html"


def with_charset(content_type: str) -> str:
    """The Content-Type header for a format: text/html names its charset, the PEP 691 types are UTF-8 by definition."""
    return f"{content_type}; charset=utf-8" if content_type == TEXT_HTML else content_type


def file_link(project: str, filename: str) -> str:
    """Where a project page links a file: relative to /pypi/simple/<project>/."""
    return f"../../files/{quote(project)}/{quote(filename)}"


def render_html(page: ProjectPage) -> bytes:
    title = escape(page.name)
    lines = [
        "<!DOCTYPE html>",
        "<html>",
        "  <head>",
        '    <meta name="pypi:repository-version" content="1.1">',
        f"    <title>Links for {title}</title>",
        "  </head>",
        "  <body>",
        f"    <h1>Links for {title}</h1>",
    ]
    lines.extend(f"    {_html_anchor(page.name, dist)}<br>" for dist in page.files)
    lines += ["  </body>", "</html>", ""]
    return "\n".join(lines).encode()


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


def render_json(page: ProjectPage) -> bytes:
    # API 1.1 (PEP 700) makes `size` mandatory: claim it only when every size is known.
    complete = all(dist.size is not None for dist in page.files)
    document = {
        "meta": {"api-version": "1.1" if complete else "1.0"},
        "name": page.name,
        "files": [_json_file(page.name, dist) for dist in page.files],
        "versions": page.all_versions(),
    }
    return json.dumps(document, separators=(",", ":")).encode()


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
    return entry


def render_project_list_html(names: list[str]) -> bytes:
    lines = [
        "<!DOCTYPE html>",
        "<html>",
        "  <head>",
        '    <meta name="pypi:repository-version" content="1.1">',
        "    <title>Simple index</title>",
        "  </head>",
        "  <body>",
    ]
    lines.extend(f'    <a href="{quote(name)}/">{escape(name)}</a><br>' for name in names)
    lines += ["  </body>", "</html>", ""]
    return "\n".join(lines).encode()


def render_project_list_json(names: list[str]) -> bytes:
    document = {"meta": {"api-version": "1.0"}, "projects": [{"name": name} for name in names]}
    return json.dumps(document, separators=(",", ":")).encode()
