"""Python distributions built at test time, byte-for-byte deterministic.

Wheels are written as zip files directly (no build backend) so building the
whole sample tree takes milliseconds and needs no network or toolchain.
"""

from __future__ import annotations

import base64
import functools
import gzip
import hashlib
import io
import random
import tarfile
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from packaging.utils import canonicalize_name

# Fixed timestamp for every archive member: identical inputs give identical bytes.
_ZIP_DATE = (2024, 1, 1, 0, 0, 0)
_TAR_MTIME = 1704067200  # 2024-01-01T00:00:00Z

MiB = 1024 * 1024


@dataclass(frozen=True)
class Dist:
    """One uploaded file of a project, as an index would list it."""

    project: str  # display name as uploaded, e.g. "Delta_Pkg"
    version: str
    filename: str
    data: bytes
    requires_python: str | None = None
    yanked: str | bool = False  # False, True, or a reason string
    metadata: bytes | None = None  # the wheel's METADATA bytes (None for sdists)

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()

    @property
    def normalized(self) -> str:
        """PEP 503 name, the one used in /simple/<name>/ URLs."""
        return canonicalize_name(self.project)

    @property
    def metadata_sha256(self) -> str | None:
        return hashlib.sha256(self.metadata).hexdigest() if self.metadata is not None else None

    @property
    def is_wheel(self) -> bool:
        return self.filename.endswith(".whl")

    @property
    def size(self) -> int:
        return len(self.data)


def escape_name(name: str) -> str:
    """Name as it appears in wheel and sdist filenames (normalised, underscores)."""
    return canonicalize_name(name).replace("-", "_")


def _record_hash(data: bytes) -> str:
    digest = hashlib.sha256(data).digest()
    return "sha256=" + base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def _metadata(name: str, version: str, requires: Sequence[str], requires_python: str | None) -> bytes:
    lines = ["Metadata-Version: 2.1", f"Name: {name}", f"Version: {version}"]
    if requires_python:
        lines.append(f"Requires-Python: {requires_python}")
    lines += [f"Requires-Dist: {req}" for req in requires]
    return ("\n".join(lines) + "\n\n").encode("utf-8")


def _payload(name: str, version: str, size: int) -> bytes:
    # Seeded so that rebuilding gives the same bytes (and the same sha256).
    return random.Random(f"{name}-{version}").randbytes(size)


def _zip_bytes(members: list[tuple[str, bytes]], methods: Mapping[str, int] | None = None) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for path, data in members:
            info = zipfile.ZipInfo(path, date_time=_ZIP_DATE)
            info.external_attr = 0o644 << 16
            # Random payload does not shrink; storing it keeps building fast.
            info.compress_type = zipfile.ZIP_STORED if len(data) > 64 * 1024 else zipfile.ZIP_DEFLATED
            info.compress_type = (methods or {}).get(path, info.compress_type)
            zf.writestr(info, data)
    return buf.getvalue()


def build_wheel(
    name: str,
    version: str,
    requires: Sequence[str] = (),
    requires_python: str | None = None,
    payload_size: int = 0,
    yanked: str | bool = False,
    metadata_method: int | None = None,
    metadata_padding: int = 0,
    leading_members: Sequence[tuple[str, bytes]] = (),
) -> Dist:
    """A pure-Python wheel with one importable module (named after the project).

    `metadata_method` compresses METADATA with that `zipfile` method (bzip2, LZMA) instead of deflate;
    `metadata_padding` makes METADATA that many bytes longer (a long description, as some projects have);
    `leading_members` (path, bytes) come first in the archive, before the module (a stray `.dist-info`...).
    """
    escaped = escape_name(name)
    dist_info = f"{escaped}-{version}.dist-info"
    metadata = _metadata(name, version, requires, requires_python) + b"x" * metadata_padding
    members = [
        (f"{escaped}/__init__.py", f'__version__ = "{version}"\n'.encode()),
        (f"{dist_info}/METADATA", metadata),
        (
            f"{dist_info}/WHEEL",
            b"Wheel-Version: 1.0\nGenerator: pkgcache-tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
        ),
    ]
    if payload_size:
        members.insert(1, (f"{escaped}/payload.bin", _payload(name, version, payload_size)))
    members[:0] = leading_members
    record_lines = [f"{path},{_record_hash(data)},{len(data)}" for path, data in members]
    record_lines.append(f"{dist_info}/RECORD,,")
    members.append((f"{dist_info}/RECORD", ("\n".join(record_lines) + "\n").encode()))
    return Dist(
        project=name,
        version=version,
        filename=f"{escaped}-{version}-py3-none-any.whl",
        data=_zip_bytes(members, None if metadata_method is None else {f"{dist_info}/METADATA": metadata_method}),
        requires_python=requires_python,
        yanked=yanked,
        metadata=metadata,
    )


def _tar_gz_bytes(members: list[tuple[str, bytes]]) -> bytes:
    raw = io.BytesIO()
    # mtime=0 in the gzip header, fixed mtimes in tar: reproducible bytes.
    with gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as gz, tarfile.open(fileobj=gz, mode="w") as tar:
        for path, data in members:
            info = tarfile.TarInfo(path)
            info.size = len(data)
            info.mtime = _TAR_MTIME
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(data))
    return raw.getvalue()


def build_sdist(name: str, version: str, requires_python: str | None = None) -> Dist:
    """A minimal sdist; it is listed by the fake indexes but clients prefer wheels."""
    base = f"{escape_name(name)}-{version}"
    pkg_info = _metadata(name, version, (), requires_python)
    pyproject = (
        f'[build-system]\nrequires = ["setuptools>=61"]\nbuild-backend = "setuptools.build_meta"\n\n'
        f'[project]\nname = "{name}"\nversion = "{version}"\n'
    ).encode()
    data = _tar_gz_bytes([(f"{base}/PKG-INFO", pkg_info), (f"{base}/pyproject.toml", pyproject)])
    return Dist(project=name, version=version, filename=f"{base}.tar.gz", data=data, requires_python=requires_python)


# A PEP 517 backend in the sdist itself (backend-path), needing nothing installed: a client builds the sdist into a
# wheel without fetching a build backend from any index, so a test can install an sdist through the cache alone.
_IN_TREE_BACKEND = """\
import base64, hashlib, os, zipfile

NAME, VERSION = {name!r}, {version!r}
DIST_INFO = f"{{NAME}}-{{VERSION}}.dist-info"
METADATA = f"Metadata-Version: 2.1\\nName: {{NAME}}\\nVersion: {{VERSION}}\\n".encode()
WHEEL = b"Wheel-Version: 1.0\\nGenerator: in-tree\\nRoot-Is-Purelib: true\\nTag: py3-none-any\\n"


def get_requires_for_build_wheel(config_settings=None):
    return []


def prepare_metadata_for_build_wheel(metadata_directory, config_settings=None):
    os.makedirs(os.path.join(metadata_directory, DIST_INFO))
    with open(os.path.join(metadata_directory, DIST_INFO, "METADATA"), "wb") as file:
        file.write(METADATA)
    return DIST_INFO


def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
    members = [(f"{{NAME}}_sdist_built.py", b"BUILT = True\\n"), (f"{{DIST_INFO}}/METADATA", METADATA),
               (f"{{DIST_INFO}}/WHEEL", WHEEL)]
    record = "".join(
        f"{{path}},sha256={{base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b'=').decode()}},"
        f"{{len(data)}}\\n" for path, data in members
    ) + f"{{DIST_INFO}}/RECORD,,\\n"
    filename = f"{{NAME}}-{{VERSION}}-py3-none-any.whl"
    with zipfile.ZipFile(os.path.join(wheel_directory, filename), "w") as wheel:
        for path, data in [*members, (f"{{DIST_INFO}}/RECORD", record.encode())]:
            wheel.writestr(path, data)
    return filename
"""


def build_buildable_sdist(name: str, version: str) -> Dist:
    """An sdist (`.tar.gz`) that pip and uv build with its own in-tree backend, installing nothing for it: its
    wheel holds a module `<name>_sdist_built`."""
    base = f"{escape_name(name)}-{version}"
    pyproject = (
        '[build-system]\nrequires = []\nbuild-backend = "in_tree_backend"\nbackend-path = ["."]\n\n'
        f'[project]\nname = "{name}"\nversion = "{version}"\n'
    ).encode()
    backend = _IN_TREE_BACKEND.format(name=escape_name(name), version=version).encode()
    members = [
        (f"{base}/PKG-INFO", _metadata(name, version, (), None)),
        (f"{base}/pyproject.toml", pyproject),
        (f"{base}/in_tree_backend.py", backend),
    ]
    return Dist(project=name, version=version, filename=f"{base}.tar.gz", data=_tar_gz_bytes(members))


@functools.lru_cache(maxsize=1)
def _sample_dists() -> tuple[Dist, ...]:
    return (
        build_wheel("alpha", "1.0"),
        build_wheel("alpha", "2.0", requires=["beta>=1.0", "Delta_Pkg"]),
        build_sdist("alpha", "2.0"),
        build_wheel("beta", "1.0", requires=["gamma"]),
        build_wheel("beta", "1.1", requires=["gamma"]),
        build_wheel("gamma", "0.4", yanked="broken"),
        build_wheel("gamma", "0.5", requires_python=">=3.8"),
        build_wheel("Delta_Pkg", "3.0"),
        build_wheel("bigpkg", "1.0", payload_size=4 * MiB),
    )


def sample_dists() -> list[Dist]:
    """The standard sample tree: alpha 2.0 -> beta>=1.0 -> gamma, alpha 2.0 -> Delta_Pkg.

    Returns a fresh list each call (the Dist objects are shared and immutable).
    """
    return list(_sample_dists())


def find_dist(dists: Sequence[Dist], filename: str) -> Dist:
    """The dist with this filename (handy in tests)."""
    for dist in dists:
        if dist.filename == filename:
            return dist
    raise KeyError(filename)
