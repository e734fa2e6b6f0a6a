"""A TUNA-like PyPI mirror for the "resolution" scenario (issue 11): static pages, big wheels, no metadata.

The domestic mirrors serve PEP 503 HTML pages with `#sha256=` fragments and `data-requires-python`, and no PEP 658
metadata (no `.metadata` files, no `data-core-metadata`); nginx serves their files with Range support. This module
writes such a mirror under bench/.work/resolution/mirror/ with a dependency tree shaped like the scientific stack
(numpy, scipy, pandas, matplotlib, pillow, scikit-learn, sympy, networkx and their dependencies): many versions
each, wheels of their real sizes (a few hundred KB to tens of MB), `*.dist-info` at the end of the archive with a
central directory of as many entries as the real wheel has. The newest scipy and scikit-learn need numpy 2, and
the requirements ask for numpy<2, so a resolver has to step back through versions (reading their metadata), as
real resolutions do.

Only one wheel per version has bytes of its own; the other platforms' wheels of that version are hard links to it
(pages list them, resolvers for this machine never fetch them), so the mirror costs about 0.7 GB of disk.
"""

from __future__ import annotations

import base64
import hashlib
import os
import random
import shutil
import zipfile
from dataclasses import dataclass, field
from html import escape
from pathlib import Path

from packaging.utils import canonicalize_name

from bench.common import WORK, log

MIRROR_ROOT = WORK / "resolution" / "mirror"
REQUIREMENTS_IN = WORK / "resolution" / "requirements.in"
STAMP_VERSION = "resolution-1"
# What the scenario asks the resolvers for: the eight names, with numpy held below 2.
REQUESTED = ("numpy<2", "scipy", "pandas", "matplotlib", "pillow", "scikit-learn", "sympy", "networkx")
PLATFORM_TAGS = (
    "manylinux_2_17_x86_64.manylinux2014_x86_64",
    "manylinux_2_17_aarch64.manylinux2014_aarch64",
    "macosx_11_0_arm64",
    "win_amd64",
)
PYTHONS = ("cp310", "cp311", "cp312", "cp313")
OWN_BYTES_TAG = ("cp311", PLATFORM_TAGS[0])  # the one wheel per version resolvers on this machine read
BLOCK = random.Random(11).randbytes(1 << 20)  # incompressible filler, written repeatedly


@dataclass(frozen=True)
class Release:
    version: str
    requires: tuple[str, ...] = ()
    requires_python: str = ">=3.10"


@dataclass(frozen=True)
class Project:
    name: str
    megabytes: float  # the size of one wheel, as the real project's linux cp311 wheel
    entries: int  # files in the wheel: the central directory is as big as the real one's
    releases: tuple[Release, ...]
    pure: bool = False  # one py3-none-any wheel per version instead of one per python and platform
    extra_files: dict[str, str] = field(default_factory=dict)


def _releases(versions: str, requires: tuple[str, ...] = (), **by_version: tuple[str, ...]) -> tuple[Release, ...]:
    """Releases of space-separated `versions`, each needing `requires` unless `by_version` (1_2_3=...) says else."""
    return tuple(Release(v, by_version.get("v" + v.replace(".", "_"), requires)) for v in versions.split())


NUMPY_1 = "numpy>=1.23.5"
NUMPY_2 = "numpy>=2.0"
# fmt: off
PROJECTS: tuple[Project, ...] = (
    Project("numpy", 16.4, 1300, _releases("1.24.4 1.25.2 1.26.0 1.26.2 1.26.4 2.0.0 2.0.2 2.1.3 2.2.6 2.3.1")),
    Project("scipy", 37.0, 2300, _releases("1.11.4 1.12.0 1.13.1 1.14.1 1.15.3 1.16.0", (NUMPY_1,),
                                           v1_15_3=(NUMPY_2,), v1_16_0=(NUMPY_2,))),
    Project("pandas", 12.7, 1900, _releases(
        "2.0.3 2.1.1 2.1.4 2.2.0 2.2.1 2.2.2 2.2.3 2.3.0",
        (NUMPY_1, "python-dateutil>=2.8.2", "pytz>=2020.1", "tzdata>=2022.7"))),
    Project("matplotlib", 8.6, 900, _releases(
        "3.7.5 3.8.2 3.8.4 3.9.2 3.9.4 3.10.3",
        ("contourpy>=1.0.1", "cycler>=0.10", "fonttools>=4.22.0", "kiwisolver>=1.3.1", NUMPY_1, "packaging>=20.0",
         "pillow>=8", "pyparsing>=2.3.1", "python-dateutil>=2.7"))),
    Project("pillow", 4.5, 250, _releases("10.2.0 10.3.0 10.4.0 11.0.0 11.1.0 11.2.1")),
    Project("scikit-learn", 13.3, 1100, _releases(
        "1.3.2 1.4.2 1.5.2 1.6.1 1.7.0", (NUMPY_1, "scipy>=1.6.0", "joblib>=1.2.0", "threadpoolctl>=3.1.0"),
        v1_7_0=(NUMPY_2, "scipy>=1.15.0", "joblib>=1.2.0", "threadpoolctl>=3.1.0"))),
    Project("sympy", 6.2, 1500, _releases("1.12 1.12.1 1.13.1 1.13.3", ("mpmath>=1.1.0,<1.4",)), pure=True),
    Project("networkx", 1.7, 600, _releases("3.2.1 3.3 3.4.2 3.5"), pure=True),
    Project("contourpy", 0.33, 30, _releases("1.2.0 1.2.1 1.3.0 1.3.2", (NUMPY_1,))),
    Project("cycler", 0.008, 6, _releases("0.11.0 0.12.1"), pure=True),
    Project("fonttools", 4.9, 400, _releases("4.53.1 4.54.1 4.55.3 4.58.4")),
    Project("kiwisolver", 1.4, 20, _releases("1.4.5 1.4.7 1.4.8")),
    Project("packaging", 0.065, 20, _releases("23.2 24.1 24.2 25.0"), pure=True),
    Project("pyparsing", 0.11, 20, _releases("3.1.2 3.1.4 3.2.1 3.2.3"), pure=True),
    Project("python-dateutil", 0.23, 25, _releases("2.8.2 2.9.0.post0", ("six>=1.5",)), pure=True),
    Project("six", 0.011, 5, _releases("1.16.0 1.17.0"), pure=True),
    Project("pytz", 0.5, 600, _releases("2024.1 2024.2 2025.1 2025.2"), pure=True),
    Project("tzdata", 0.35, 600, _releases("2024.1 2024.2 2025.1 2025.2"), pure=True),
    Project("joblib", 0.3, 120, _releases("1.3.2 1.4.2 1.5.1"), pure=True),
    Project("threadpoolctl", 0.018, 6, _releases("3.4.0 3.5.0 3.6.0"), pure=True),
    Project("mpmath", 0.54, 60, _releases("1.2.1 1.3.0"), pure=True),
)
# fmt: on


def prepare_resolution_mirror() -> Path:
    """Write the mirror once (a stamp says it is there); its root, served as-is by nginx."""
    stamp = MIRROR_ROOT / ".resolution-ready"
    if stamp.exists() and stamp.read_text() == STAMP_VERSION:
        log("resolution mirror already prepared")
        return MIRROR_ROOT
    shutil.rmtree(MIRROR_ROOT, ignore_errors=True)
    (MIRROR_ROOT / "simple").mkdir(parents=True)
    (MIRROR_ROOT / "packages").mkdir()
    log("writing the resolution mirror (about 0.7 GB of generated wheels)")
    for project in PROJECTS:
        anchors = [anchor for release in project.releases for anchor in _write_release(project, release)]
        _write_page(project.name, anchors)
    names = sorted(str(canonicalize_name(p.name)) for p in PROJECTS)
    (MIRROR_ROOT / "simple" / "index.html").write_text(
        "<!DOCTYPE html>\n<html><body>\n" + "".join(f'<a href="{n}/">{n}</a>\n' for n in names) + "</body></html>\n"
    )
    REQUIREMENTS_IN.write_text("\n".join(REQUESTED) + "\n")
    stamp.write_text(STAMP_VERSION)
    files = list((MIRROR_ROOT / "packages").iterdir())
    listed = sum(p.stat().st_size for p in files)
    on_disk = sum({p.stat().st_ino: p.stat().st_size for p in files}.values())
    log(
        f"resolution mirror ready: {len(PROJECTS)} projects, {len(files)} wheels listed ({listed / 1e9:.1f} GB), "
        f"{on_disk / 1e6:.0f} MB on disk"
    )
    return MIRROR_ROOT


def wheel_names(project: Project, version: str) -> list[str]:
    """Every wheel a page lists for one version; the first is the one with bytes of its own."""
    dist = project.name.replace("-", "_")
    if project.pure:
        return [f"{dist}-{version}-py3-none-any.whl"]
    own = f"{dist}-{version}-{OWN_BYTES_TAG[0]}-{OWN_BYTES_TAG[0]}-{OWN_BYTES_TAG[1]}.whl"
    others = [f"{dist}-{version}-{py}-{py}-{tag}.whl" for py in PYTHONS for tag in PLATFORM_TAGS
              if (py, tag) != OWN_BYTES_TAG]  # fmt: skip
    return [own, *others]


def _write_release(project: Project, release: Release) -> list[str]:
    names = wheel_names(project, release.version)
    own = MIRROR_ROOT / "packages" / names[0]
    write_wheel(own, project, release)
    digest = _sha256(own)
    for name in names[1:]:
        os.link(own, MIRROR_ROOT / "packages" / name)
    python = escape(release.requires_python)
    return [f'<a href="../../packages/{n}#sha256={digest}" data-requires-python="{python}">{n}</a><br />'
            for n in names]  # fmt: skip


def _write_page(name: str, anchors: list[str]) -> None:
    folder = MIRROR_ROOT / "simple" / str(canonicalize_name(name))
    folder.mkdir()
    (folder / "index.html").write_text(
        f"<!DOCTYPE html>\n<html>\n  <head>\n    <title>Links for {name}</title>\n  </head>\n  <body>\n"
        f"    <h1>Links for {name}</h1>\n" + "".join(f"    {a}\n" for a in anchors) + "  </body>\n</html>\n"
    )


def write_wheel(dest: Path, project: Project, release: Release) -> None:
    """A wheel laid out like a built one: the package's files, then its bulk, then `*.dist-info` last."""
    dist = project.name.replace("-", "_")
    info = f"{dist}-{release.version}.dist-info"
    metadata = "".join(
        [f"Metadata-Version: 2.1\nName: {project.name}\nVersion: {release.version}\n",
         f"Summary: generated for pkgcache's resolution benchmark\nRequires-Python: {release.requires_python}\n"]
        + [f"Requires-Dist: {requirement}\n" for requirement in release.requires]
    ).encode()  # fmt: skip
    tag = "py3-none-any" if project.pure else f"{OWN_BYTES_TAG[0]}-{OWN_BYTES_TAG[0]}-{OWN_BYTES_TAG[1]}"
    records: list[str] = []
    tmp = dest.with_suffix(".part")
    with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED) as archive:
        for number in range(max(0, project.entries - 4)):
            records.append(_add(archive, f"{dist}/module_{number:04d}.py", b"# generated\nVALUE = %d\n" % number))
        records.append(_add_filler(archive, f"{dist}/_core.so", int(project.megabytes * 1e6)))
        records.append(_add(archive, f"{info}/METADATA", metadata))
        records.append(_add(archive, f"{info}/WHEEL", f"Wheel-Version: 1.0\nRoot-Is-Purelib: false\nTag: {tag}\n"
                                                      .encode()))  # fmt: skip
        records.append(f"{info}/RECORD,,")
        archive.writestr(f"{info}/RECORD", "\n".join(records) + "\n")
    tmp.replace(dest)


def _add(archive: zipfile.ZipFile, name: str, data: bytes) -> str:
    archive.writestr(name, data)
    return _record(name, hashlib.sha256(data), len(data))


def _add_filler(archive: zipfile.ZipFile, name: str, size: int) -> str:
    digest = hashlib.sha256()
    with archive.open(name, "w", force_zip64=True) as handle:
        left = size
        while left > 0:
            chunk = BLOCK[: min(len(BLOCK), left)]
            digest.update(chunk)
            handle.write(chunk)
            left -= len(chunk)
    return _record(name, digest, size)


def _record(name: str, digest: hashlib._Hash, size: int) -> str:
    return f"{name},sha256={base64.urlsafe_b64encode(digest.digest()).rstrip(b'=').decode()},{size}"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()
