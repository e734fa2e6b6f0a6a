"""The offline kit end to end: `pkgcache seed` from every input format against the fake upstreams, `export`,
`import` into a fresh data directory, and real pip, uv and rattler installs from an instance no upstream reaches.

Inputs are made by the real tools where they can be here (uv lock, uv export, uv pip compile, rattler's lock
writer); poetry.lock, pdm.lock, conda-lock.yml and the @EXPLICIT list are written in the tools' shapes, naming
real files of the fakes. Each input names files no other input names, so every format is seen to seed its own.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path

import pytest

from tests.cache_service import CacheProcess
from tests.conda_support import APP_TREE, SUBDIR, Channels, assert_app_landed, install, installed_names
from tests.fakes.conda_channel import find_pkg
from tests.fakes.conda_upstreams import MirrorLikeUpstream
from tests.fakes.dists import find_dist, sample_dists
from tests.fakes.pypi_upstreams import OfficialLikeUpstream
from tests.fakes.rattler_lock import write_pixi_lock
from tests.kit_support import (
    bundle_members,
    cached_names,
    pkgcache,
    serve_offline,
    write,
    write_config,
)
from tests.support import UV, BackgroundLoop, installed_dists, isolated_env, run_pip_install, run_uv_install

# What each PyPI input names, and no other does.
BY_INPUT = {
    "uv.lock": {"bigpkg-1.0-py3-none-any.whl"},
    "pylock.toml": {"delta_pkg-3.0-py3-none-any.whl"},
    "requirements.txt": {"beta-1.1-py3-none-any.whl", "gamma-0.5-py3-none-any.whl"},  # pins with hashes
    "requirements.in": {"alpha-1.0-py3-none-any.whl"},  # a range: resolved by uv at seed time
    "poetry.lock": {"beta-1.0-py3-none-any.whl"},  # file names only, as poetry writes them
    "pdm.lock": {"gamma-0.4-py3-none-any.whl"},  # a URL on the index (a yanked file: locked all the same)
}


def run_uv(cwd: Path, *args: str) -> None:
    env = isolated_env(UV_CACHE_DIR=str(cwd / ".uv-cache"))
    proc = subprocess.run([str(UV), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr


def project(directory: Path, dependency: str) -> Path:
    write(directory, "pyproject.toml", f'[project]\nname = "demo"\nversion = "0.1"\ndependencies = ["{dependency}"]\n')
    return directory


def sha_of(filename: str) -> str:
    return find_dist(sample_dists(), filename).sha256


def pypi_inputs(directory: Path, upstream: OfficialLikeUpstream) -> list[Path]:
    """One input of each PyPI format, made by uv where uv makes it."""
    index = upstream.index_url
    run_uv(project(directory / "uvproj", "bigpkg"), "lock", "--index-url", index)
    run_uv(project(directory / "pyproj", "delta-pkg"), "lock", "--index-url", index)
    run_uv(directory / "pyproj", "export", "--format", "pylock.toml", "-o", "pylock.toml")
    write(directory, "pins.in", "beta==1.1\n")
    run_uv(
        directory, "pip", "compile", "--generate-hashes", "--index-url", index, "pins.in",
        "-o", "requirements.txt", "--python-version", "3.11",
    )  # fmt: skip
    write(directory, "requirements.in", "alpha<2\n")
    beta = "beta-1.0-py3-none-any.whl"
    write(
        directory,
        "poetry.lock",
        f'[[package]]\nname = "beta"\nversion = "1.0"\ndescription = ""\noptional = false\n'
        f'python-versions = "*"\ngroups = ["main"]\n'
        f'files = [\n    {{file = "{beta}", hash = "sha256:{sha_of(beta)}"}},\n]\n\n'
        f'[metadata]\nlock-version = "2.1"\npython-versions = "^3.11"\ncontent-hash = "{"0" * 64}"\n',
    )
    gamma = find_dist(sample_dists(), "gamma-0.4-py3-none-any.whl")
    write(
        directory,
        "pdm.lock",
        '[metadata]\ngroups = ["default"]\nstrategy = ["static_urls"]\nlock_version = "4.5.0"\n'
        f'content_hash = "sha256:{"0" * 64}"\n\n'
        '[[package]]\nname = "gamma"\nversion = "0.4"\nsummary = ""\ngroups = ["default"]\n'
        f'files = [\n    {{url = "{upstream.file_url(gamma)}", hash = "sha256:{gamma.sha256}"}},\n]\n',
    )
    return [
        directory / "uvproj" / "uv.lock",
        directory / "pyproj" / "pylock.toml",
        directory / "requirements.txt",
        directory / "requirements.in",
        directory / "poetry.lock",
        directory / "pdm.lock",
    ]


def manifest_packages(bundle: Path) -> set[str]:
    manifest, _ = bundle_members(bundle)
    return {entry["path"].rsplit("/", 1)[-1] for entry in manifest["files"] if entry["kind"] == "package"}


def test_every_pypi_input_is_seeded_exported_imported_and_installed_by_pip_and_uv_with_no_upstream(
    tmp_path: Path, official_upstream: OfficialLikeUpstream, bg_loop: BackgroundLoop
) -> None:
    inputs = pypi_inputs(tmp_path / "inputs", official_upstream)
    config = write_config(tmp_path, [official_upstream.index_url])
    data = tmp_path / "outside"
    official_upstream.reset_log()
    official_upstream.files.reset_log()

    seeded = pkgcache("seed", "--config", config, "--data-dir", data, "--python", "3.11", "--no-progress", *inputs)

    assert seeded.returncode == 0, seeded.stderr
    assert "serving it here for the seed" in seeded.stderr
    everything = set().union(*BY_INPUT.values())
    assert cached_names(data, "pypi/files") == everything
    # Each file came from the upstream once, through pkgcache (whose user agent the fake saw).
    for filename in everything:
        assert official_upstream.files.count_whole(f"/{filename}") == 1, filename
    assert all(r.headers.get("User-Agent", "").startswith("pkgcache/") for r in official_upstream.files.requests)
    assert f"seed: {len(everything)} fetched" in seeded.stderr

    # A second run, through a pkgcache running on that directory, fetches nothing again.
    server = CacheProcess(data, "--pypi-upstream", official_upstream.index_url, "--workers", "1")
    try:
        again = pkgcache("seed", "--data-dir", data, "--python", "3.11", "--no-progress", *inputs)
    finally:
        server.terminate()
    assert again.returncode == 0, again.stderr
    assert "seeding through the running pkgcache" in again.stderr
    assert f"0 fetched (0 B), {len(everything)} already cached" in again.stderr
    assert all(official_upstream.files.count_whole(f"/{name}") == 1 for name in everything)

    bundle = tmp_path / "week1.tar"
    exported = pkgcache("export", "--data-dir", data, "-o", bundle)
    assert exported.returncode == 0, exported.stderr
    assert manifest_packages(bundle) == everything
    # --from selects what a lock file names, with its page.
    only_poetry = tmp_path / "poetry.tar"
    assert pkgcache("export", "--data-dir", data, "--from", inputs[4], "-o", only_poetry).returncode == 0
    manifest, _ = bundle_members(only_poetry)
    assert {e["path"] for e in manifest["files"] if e["kind"] != "metadata"} >= {
        "pypi/files/beta/beta-1.0-py3-none-any.whl",
        "pypi/simple/beta/page.json",
    }
    assert manifest_packages(only_poetry) == BY_INPUT["poetry.lock"]

    inside = tmp_path / "inside"
    imported = pkgcache("import", "--data-dir", inside, bundle)
    assert imported.returncode == 0, imported.stderr
    assert cached_names(inside, "pypi/files") == everything
    assert f"import: {len(list(manifest_of(bundle)))} files added" in imported.stderr

    cache = serve_offline(bg_loop, inside)
    try:
        pip = run_pip_install(cache.index_url, tmp_path / "pip-target", "alpha<2", "bigpkg", "beta==1.1")
        assert pip.returncode == 0, pip.stderr
        assert installed_dists(tmp_path / "pip-target") == {"alpha==1.0", "bigpkg==1.0", "beta==1.1", "gamma==0.5"}
        uv = run_uv_install(cache.index_url, tmp_path / "uv-target", "delta-pkg", "beta==1.0", "gamma==0.4")
        assert uv.returncode == 0, uv.stderr
        assert installed_dists(tmp_path / "uv-target") == {"delta-pkg==3.0", "beta==1.0", "gamma==0.4"}
        page = cache.get("/", {"Accept-Language": "en"})
        assert b"Seeded and imported" in page.body and b"imported " in page.body
    finally:
        cache.stop()

    # Next week: one more project seeded outside; the bundle since the last export carries only it.
    official_upstream.files.reset_log()
    more = write(tmp_path / "inputs", "more.txt", "alpha==2.0\n")
    seeded = pkgcache("seed", "--config", config, "--data-dir", data, "--python", "3.11", "--no-progress", more)
    assert seeded.returncode == 0, seeded.stderr
    assert official_upstream.files.count_whole("/alpha-2.0-py3-none-any.whl") == 1
    weekly = tmp_path / "week2.tar"
    assert pkgcache("export", "--data-dir", data, "--since", "last", "-o", weekly).returncode == 0
    assert manifest_packages(weekly) == {"alpha-2.0-py3-none-any.whl"}
    assert pkgcache("import", "--data-dir", inside, weekly).returncode == 0
    cache = serve_offline(bg_loop, inside)
    try:
        pip = run_pip_install(cache.index_url, tmp_path / "pip-week2", "alpha==2.0")
        assert pip.returncode == 0, pip.stderr
        assert "alpha==2.0" in installed_dists(tmp_path / "pip-week2")
    finally:
        cache.stop()


def manifest_of(bundle: Path) -> list[dict[str, object]]:
    manifest, _ = bundle_members(bundle)
    return manifest["files"]


# --- conda --------------------------------------------------------------------------------------------------------


def conda_inputs(directory: Path, mirror: MirrorLikeUpstream, channels: Channels) -> list[Path]:
    """pixi.lock by rattler's writer (conda-forge: app and its tree); an @EXPLICIT list, a conda-lock.yml and an
    environment.yml naming pkgs/main packages nothing else names."""
    forge = mirror.channel_url("conda-forge")
    main = mirror.channel_url("pkgs/main")
    write_pixi_lock([forge], [SUBDIR], ["app"], directory / "pixi.lock", directory / "rattler-cache")
    old_libfoo = find_pkg(channels.main_pkgs, "libfoo", "1.0")
    write(
        directory,
        "conda-linux-64.lock",
        f"# platform: {SUBDIR}\n@EXPLICIT\n{main}/{SUBDIR}/{old_libfoo.filename}#{old_libfoo.sha256}\n",
    )
    forge_old_libfoo = find_pkg(channels.forge_pkgs, "libfoo", "1.0")
    write(
        directory,
        "conda-lock.yml",
        "version: 1\nmetadata:\n  platforms: [" + SUBDIR + "]\n  channels: []\npackage:\n"
        f"- name: libfoo\n  version: '1.0'\n  manager: conda\n  platform: {SUBDIR}\n  dependencies: {{}}\n"
        f"  url: {forge}/{SUBDIR}/{forge_old_libfoo.filename}\n"
        f"  hash:\n    md5: {forge_old_libfoo.md5}\n    sha256: {forge_old_libfoo.sha256}\n",
    )
    write(directory, "environment.yml", "name: t\nchannels:\n  - pkgs/main\ndependencies:\n  - bigpkg\n")
    return [directory / name for name in ("pixi.lock", "conda-linux-64.lock", "conda-lock.yml", "environment.yml")]


def test_every_conda_input_is_seeded_exported_imported_and_installed_by_rattler_with_no_upstream(
    tmp_path: Path, conda_mirror: MirrorLikeUpstream, conda_channels: Channels, bg_loop: BackgroundLoop
) -> None:
    inputs = conda_inputs(tmp_path / "inputs", conda_mirror, conda_channels)
    config = write_config(tmp_path, ["http://127.0.0.1:9/simple/"], [f"{conda_mirror.url}/anaconda/"])
    data = tmp_path / "outside"
    conda_mirror.reset_log()

    seeded = pkgcache("seed", "--config", config, "--data-dir", data, "--platform", SUBDIR, "--no-progress", *inputs)

    assert seeded.returncode == 0, seeded.stderr
    forge = {"app-1.0-h1_0.conda", "libfoo-1.1-h1_0.conda", "pydata-2.0-py_0.conda", "tzinfo-2024.1-h0_0.tar.bz2"}
    forge_extra = {"libfoo-1.0-h1_0.tar.bz2"}  # from conda-lock.yml
    main = {"libfoo-1.0-h1_0.tar.bz2", "bigpkg-1.0-h0_0.conda"}  # @EXPLICIT, environment.yml
    assert cached_names(data, "conda/cloud/conda-forge") == forge | forge_extra
    assert cached_names(data, "conda/pkgs/main") == main
    for name in forge | main:
        assert conda_mirror.count(f"/{name}") >= 1, name
    assert all(r.headers.get("User-Agent", "").startswith("pkgcache/") for r in conda_mirror.requests)

    bundle = tmp_path / "conda.tar"
    assert pkgcache("export", "--data-dir", data, "-o", bundle).returncode == 0
    inside = tmp_path / "inside"
    imported = pkgcache("import", "--data-dir", inside, bundle)
    assert imported.returncode == 0, imported.stderr

    cache = serve_offline(bg_loop, inside)
    try:
        forge_url, main_url = (f"{cache.url}/conda/{c}" for c in ("cloud/conda-forge", "pkgs/main"))
        prefix, result = install(tmp_path, [forge_url], ["app"], name="forge-env")
        assert installed_names(result) == APP_TREE
        assert_app_landed(prefix)
        _, result = install(tmp_path, [main_url], ["bigpkg", "libfoo ==1.0"], name="main-env")
        assert installed_names(result) == {"bigpkg", "libfoo"}
        assert all(p["url"].startswith(cache.url) for p in result["installed"])
    finally:
        cache.stop()


# --- bundles that fail their checks ---------------------------------------------------------------------------


@pytest.fixture
def small_bundle(tmp_path: Path, official_upstream: OfficialLikeUpstream) -> Path:
    """A bundle of two projects' pages and wheels, exported from a seeded data directory."""
    config = write_config(tmp_path, [official_upstream.index_url])
    lock = write(tmp_path, "pins.txt", f"gamma==0.5 --hash=sha256:{sha_of('gamma-0.5-py3-none-any.whl')}\n")
    write(tmp_path, "more.txt", f"delta-pkg==3.0 --hash=sha256:{sha_of('delta_pkg-3.0-py3-none-any.whl')}\n")
    data = tmp_path / "outside"
    seeded = pkgcache("seed", "--config", config, "--data-dir", data, "--no-progress", lock, tmp_path / "more.txt")
    assert seeded.returncode == 0, seeded.stderr
    bundle = tmp_path / "small.tar"
    assert pkgcache("export", "--data-dir", data, "-o", bundle).returncode == 0
    return bundle


def test_a_byte_changed_in_transit_is_refused_for_that_file_alone_and_the_rest_is_merged(
    tmp_path: Path, small_bundle: Path
) -> None:
    from tests.kit_support import flip_last_byte, rewrite_bundle

    bad_path = "pypi/files/gamma/gamma-0.5-py3-none-any.whl"
    corrupted = tmp_path / "corrupted.tar"
    rewrite_bundle(small_bundle, corrupted, lambda name, data: flip_last_byte(data) if name == bad_path else data)
    inside = tmp_path / "inside"

    result = pkgcache("import", "--data-dir", inside, corrupted)

    assert result.returncode == 1
    assert f"{bad_path}: sha256 " in result.stderr and "is not the manifest's" in result.stderr
    assert "refused (1)" in result.stderr
    assert not (inside / bad_path).exists()
    assert (inside / "pypi/files/delta-pkg/delta_pkg-3.0-py3-none-any.whl").is_file()
    assert not list((inside / "tmp").iterdir())  # nothing staged is left behind


def test_a_package_that_matches_a_forged_manifest_is_refused_by_its_page_and_never_replaces_a_good_copy(
    tmp_path: Path, small_bundle: Path
) -> None:
    from tests.kit_support import flip_last_byte, rewrite_bundle

    bad_path = "pypi/files/delta-pkg/delta_pkg-3.0-py3-none-any.whl"
    good = sha_of("delta_pkg-3.0-py3-none-any.whl")
    _manifest, members = bundle_members(small_bundle)
    forged_bytes = flip_last_byte(dict((m.name, d) for m, d in members)[bad_path])

    def forge_manifest(document: dict[str, object]) -> None:
        for entry in document["files"]:  # type: ignore[attr-defined]
            if entry["path"] == bad_path:
                entry["sha256"] = hashlib.sha256(forged_bytes).hexdigest()

    forged = tmp_path / "forged.tar"
    rewrite_bundle(small_bundle, forged, lambda name, data: forged_bytes if name == bad_path else data, forge_manifest)
    inside = tmp_path / "inside"
    assert pkgcache("import", "--data-dir", inside, small_bundle).returncode == 0  # the good copy is here first

    result = pkgcache("import", "--data-dir", inside, forged)

    assert result.returncode == 1
    assert f"{bad_path}: sha256 {hashlib.sha256(forged_bytes).hexdigest()} is not the {good}" in result.stderr
    assert "pypi/simple/delta-pkg/page.json lists" in result.stderr
    assert hashlib.sha256((inside / bad_path).read_bytes()).hexdigest() == good


def test_export_prints_the_bundles_sha256_and_import_given_it_refuses_an_edited_bundle_whole(
    tmp_path: Path, small_bundle: Path
) -> None:
    from tests.kit_support import rewrite_bundle

    bundle = tmp_path / "again.tar"
    exported = pkgcache("export", "--data-dir", tmp_path / "outside", "-o", bundle)
    assert exported.returncode == 0, exported.stderr
    digest = hashlib.sha256(bundle.read_bytes()).hexdigest()
    assert f"sha256 {digest} " in exported.stderr
    # Edited with its manifest (a wheel taken out of both), the bundle passes every check of its own.
    dropped = "pypi/files/gamma/gamma-0.5-py3-none-any.whl"

    def drop_entry(document: dict[str, object]) -> None:
        document["files"] = [e for e in document["files"] if e["path"] != dropped]  # type: ignore[attr-defined]

    edited = tmp_path / "edited.tar"
    rewrite_bundle(bundle, edited, lambda name, data: None if name == dropped else data, drop_entry)
    assert pkgcache("import", "--data-dir", tmp_path / "unchecked", edited).returncode == 0
    inside = tmp_path / "inside"

    refused = pkgcache("import", "--data-dir", inside, "--sha256", digest, edited)

    assert refused.returncode == 1
    assert f"not the {digest} given" in refused.stderr and "nothing was imported" in refused.stderr
    assert cached_names(inside, "pypi/files") == set()
    assert not list((inside / "tmp").iterdir())
    accepted = pkgcache("import", "--data-dir", inside, "--sha256", digest.upper(), bundle)
    assert accepted.returncode == 0, accepted.stderr
    assert "gamma-0.5-py3-none-any.whl" in cached_names(inside, "pypi/files")
    wrong = pkgcache("import", "--data-dir", inside, "--sha256", "abc", bundle)
    assert wrong.returncode == 2 and "is not a sha256" in wrong.stderr


def test_a_bundle_cut_short_reports_the_files_it_lacks_and_a_non_bundle_is_refused_whole(
    tmp_path: Path, small_bundle: Path
) -> None:
    raw = small_bundle.read_bytes()
    cut = tmp_path / "cut.tar"
    _manifest, members = bundle_members(small_bundle)
    last = members[-1][0].name
    cut.write_bytes(raw[: len(raw) // 2])
    inside = tmp_path / "inside"

    result = pkgcache("import", "--data-dir", inside, cut)

    assert result.returncode == 1
    assert f"{last}: in the manifest but not in the bundle (cut short?)" in result.stderr
    assert not (inside / last).exists()

    not_a_bundle = write(tmp_path, "notes.tar", "hello")
    refused = pkgcache("import", "--data-dir", inside, not_a_bundle)
    assert refused.returncode == 1
    assert "not a bundle" in refused.stderr or "not a pkgcache bundle" in refused.stderr


def test_pages_in_a_bundle_are_checked_and_the_kit_record_is_kept(tmp_path: Path, small_bundle: Path) -> None:
    from tests.kit_support import rewrite_bundle

    page = "pypi/simple/gamma/page.json"
    broken = tmp_path / "broken.tar"

    def break_page(document: dict[str, object]) -> None:
        for entry in document["files"]:  # type: ignore[attr-defined]
            if entry["path"] == page:
                entry["sha256"] = hashlib.sha256(b"{}").hexdigest()
                entry["size"] = 2

    rewrite_bundle(small_bundle, broken, lambda name, data: b"{}" if name == page else data, break_page)
    inside = tmp_path / "inside"

    result = pkgcache("import", "--data-dir", inside, broken)

    assert result.returncode == 1
    assert f"{page}: not a project page pkgcache can read" in result.stderr
    # With its page refused and none here, gamma's wheel cannot be checked: refused too, and said why.
    assert "gamma-0.5-py3-none-any.whl: no project page in the bundle or the cache lists it" in result.stderr
    record = json.loads((inside / "pkgcache.kit.json").read_text())
    assert record["import"][-1]["failed"] == 2


def test_paths_outside_the_cache_are_refused_whether_in_the_manifest_or_only_in_the_tar(
    tmp_path: Path, small_bundle: Path
) -> None:
    import io
    import tarfile

    inside = tmp_path / "inside"
    evil = tmp_path / "evil.tar"
    with tarfile.open(small_bundle) as source, tarfile.open(evil, "w", format=tarfile.PAX_FORMAT) as target:
        for member in source.getmembers():
            target.addfile(member, source.extractfile(member))
        for name in ("../escaped.txt", "pypi/../../escaped.txt", "/tmp/escaped.txt"):
            info = tarfile.TarInfo(name)
            info.size = 4
            target.addfile(info, io.BytesIO(b"evil"))

    result = pkgcache("import", "--data-dir", inside, evil)

    assert result.returncode == 1
    assert "../escaped.txt: not in the manifest" in result.stderr
    assert not (tmp_path / "escaped.txt").exists() and not Path("/tmp/escaped.txt").exists()

    listed = tmp_path / "listed.tar"

    def list_escape(document: dict[str, object]) -> None:
        document["files"].append(  # type: ignore[attr-defined]
            {"path": "conda/../../escaped.txt", "size": 4, "sha256": "0" * 64, "mtime_ns": 0}
        )

    from tests.kit_support import rewrite_bundle

    rewrite_bundle(small_bundle, listed, lambda name, data: data, list_escape)
    refused = pkgcache("import", "--data-dir", inside, listed)
    assert refused.returncode == 1
    assert "has an unsafe segment '..'" in refused.stderr
    assert not (tmp_path / "escaped.txt").exists()


@pytest.mark.parametrize("since", ["garbage", "last"])
def test_export_since_a_date_it_cannot_read_or_an_export_never_made_says_so(tmp_path: Path, since: str) -> None:
    (tmp_path / "data" / "pypi").mkdir(parents=True)  # a cache, with nothing exported from it
    answer = pkgcache("export", "--data-dir", tmp_path / "data", "--since", since, "-o", tmp_path / "out.tar")
    assert answer.returncode == 2 and "Traceback" not in answer.stderr, answer.stderr
    assert "Invalid value for --since" in answer.stderr
    assert ("not a date like" if since == "garbage" else "no export of this data directory") in answer.stderr
    assert not (tmp_path / "out.tar").exists()


def test_since_last_counts_from_the_last_export_of_everything_not_from_a_selection_by_lock(
    tmp_path: Path, official_upstream: OfficialLikeUpstream, bg_loop: BackgroundLoop
) -> None:
    from tests.cache_service import cache_settings, start_cache

    config = write_config(tmp_path, [official_upstream.index_url])
    data = tmp_path / "outside"
    gamma = write(tmp_path, "gamma.txt", f"gamma==0.5 --hash=sha256:{sha_of('gamma-0.5-py3-none-any.whl')}\n")
    beta = write(tmp_path, "beta.txt", f"beta==1.0 --hash=sha256:{sha_of('beta-1.0-py3-none-any.whl')}\n")
    assert pkgcache("seed", "--config", config, "--data-dir", data, "--no-progress", gamma, beta).returncode == 0
    assert pkgcache("export", "--data-dir", data, "-o", tmp_path / "w0.tar").returncode == 0
    assert pkgcache("export", "--data-dir", data, "--since", "last", "-o", tmp_path / "w1.tar").returncode == 0
    # A client fetches alpha 1.0 through the instance; then a bundle for one app, whose lock does not name it.
    cache = start_cache(bg_loop, cache_settings(data, [official_upstream.index_url]))
    try:
        assert cache.get("/pypi/simple/alpha/").status == 200
        assert cache.get("/pypi/files/alpha/alpha-1.0-py3-none-any.whl").status == 200
    finally:
        cache.stop()
    app = tmp_path / "app.tar"
    assert pkgcache("export", "--data-dir", data, "--from", beta, "-o", app).returncode == 0
    assert manifest_packages(app) == {"beta-1.0-py3-none-any.whl"}

    weekly = tmp_path / "w2.tar"
    exported = pkgcache("export", "--data-dir", data, "--since", "last", "-o", weekly)

    assert exported.returncode == 0, exported.stderr
    assert manifest_packages(weekly) == {"alpha-1.0-py3-none-any.whl"}
    # That one moved the baseline: the next carries nothing again.
    again = tmp_path / "w3.tar"
    assert pkgcache("export", "--data-dir", data, "--since", "last", "-o", again).returncode == 0
    assert manifest_packages(again) == set()
    record = json.loads((data / "pkgcache.kit.json").read_text())
    assert [e["baseline"] for e in record["export"]] == [True, True, False, True, True]


def test_since_last_after_only_selections_by_lock_says_an_export_of_everything_is_needed(
    tmp_path: Path, official_upstream: OfficialLikeUpstream
) -> None:
    config = write_config(tmp_path, [official_upstream.index_url])
    data = tmp_path / "outside"
    beta = write(tmp_path, "beta.txt", f"beta==1.0 --hash=sha256:{sha_of('beta-1.0-py3-none-any.whl')}\n")
    assert pkgcache("seed", "--config", config, "--data-dir", data, "--no-progress", beta).returncode == 0
    assert pkgcache("export", "--data-dir", data, "--from", beta, "-o", tmp_path / "app.tar").returncode == 0

    answer = pkgcache("export", "--data-dir", data, "--since", "last", "-o", tmp_path / "w.tar")

    assert answer.returncode == 2, answer.stderr
    assert "no export of everything from this data directory is recorded yet" in answer.stderr
    assert not (tmp_path / "w.tar").exists()
