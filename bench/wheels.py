"""Writing PEP 503 pages and synthetic wheels for the local upstream."""

from __future__ import annotations

import base64
import hashlib
import os
import zipfile
from dataclasses import dataclass
from email.parser import BytesHeaderParser
from html import escape
from pathlib import Path

CHUNK = 1 << 20


@dataclass(frozen=True)
class IndexedFile:
    """One file as a project page lists it; `href` is relative to the project page."""

    filename: str
    href: str
    sha256: str
    requires_python: str | None = None
    metadata_sha256: str | None = None


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def extract_metadata(wheel: Path, dest: Path) -> tuple[str, str | None]:
    """Write the wheel's METADATA beside it as `<wheel>.metadata` (PEP 658); its sha256 and Requires-Python."""
    with zipfile.ZipFile(wheel) as archive:
        name = next(n for n in archive.namelist() if n.count("/") == 1 and n.endswith(".dist-info/METADATA"))
        data = archive.read(name)
    dest.write_bytes(data)
    headers = BytesHeaderParser().parsebytes(data)
    return hashlib.sha256(data).hexdigest(), headers.get("Requires-Python")


def project_page_html(project: str, files: list[IndexedFile]) -> str:
    lines = [
        "<!DOCTYPE html>",
        "<html>",
        "  <head>",
        '    <meta name="pypi:repository-version" content="1.1">',
        f"    <title>Links for {escape(project)}</title>",
        "  </head>",
        "  <body>",
        f"    <h1>Links for {escape(project)}</h1>",
    ]
    lines += [f"    {_anchor(item)}<br />" for item in files]
    lines += ["  </body>", "</html>", ""]
    return "\n".join(lines)


def _anchor(item: IndexedFile) -> str:
    attrs = [f'href="{escape(item.href)}#sha256={item.sha256}"']
    if item.requires_python:
        attrs.append(f'data-requires-python="{escape(item.requires_python)}"')
    if item.metadata_sha256:
        attrs.append(f'data-dist-info-metadata="sha256={item.metadata_sha256}"')
        attrs.append(f'data-core-metadata="sha256={item.metadata_sha256}"')
    return f"<a {' '.join(attrs)}>{escape(item.filename)}</a>"


def root_page_html(projects: list[str]) -> str:
    anchors = "\n".join(f'    <a href="{p}/">{p}</a><br />' for p in projects)
    return (
        '<!DOCTYPE html>\n<html>\n  <head>\n    <meta name="pypi:repository-version" content="1.1">\n'
        f"    <title>Simple index</title>\n  </head>\n  <body>\n{anchors}\n  </body>\n</html>\n"
    )


def write_synthetic_wheel(dest: Path, project: str, version: str, payload_bytes: int) -> None:
    """A valid, installable wheel whose bulk is random bytes stored uncompressed (so its size is what we ask)."""
    dist = project.replace("-", "_")
    info = f"{dist}-{version}.dist-info"
    metadata = f"Metadata-Version: 2.1\nName: {project}\nVersion: {version}\nRequires-Python: >=3.8\n".encode()
    wheel_meta = b"Wheel-Version: 1.0\nGenerator: pkgcache-bench\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
    tmp = dest.with_suffix(".part")
    records: list[str] = []
    with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED) as archive:
        records.append(_add(archive, f"{dist}/__init__.py", b"VERSION = %r\n" % version))
        records.append(_add_random(archive, f"{dist}/blob.bin", payload_bytes))
        records.append(_add(archive, f"{info}/METADATA", metadata))
        records.append(_add(archive, f"{info}/WHEEL", wheel_meta))
        records.append(f"{info}/RECORD,,")
        archive.writestr(f"{info}/RECORD", "\n".join(records) + "\n")
    tmp.replace(dest)


def _add(archive: zipfile.ZipFile, name: str, data: bytes) -> str:
    archive.writestr(name, data)
    return _record_line(name, hashlib.sha256(data), len(data))


def _add_random(archive: zipfile.ZipFile, name: str, size: int) -> str:
    digest = hashlib.sha256()
    with archive.open(name, "w", force_zip64=True) as handle:
        remaining = size
        while remaining > 0:
            chunk = os.urandom(min(CHUNK, remaining))
            digest.update(chunk)
            handle.write(chunk)
            remaining -= len(chunk)
    return _record_line(name, digest, size)


def _record_line(name: str, digest: hashlib._Hash, size: int) -> str:
    encoded = base64.urlsafe_b64encode(digest.digest()).rstrip(b"=").decode()
    return f"{name},sha256={encoded},{size}"
