"""compose.yaml run the way its users run it: `up -d`, pip through the container, `down` mid-download, `up` again.

Run by scripts/test_container, which builds the image and starts podman's docker-compatible service; the name does
not match pytest's test file pattern, so the rest of the suite never collects it. The tests run in file order and
each continues from the state the one before left: the project, its data volume and the fake upstream live for
the whole module.
"""

from __future__ import annotations

import hashlib
import http.client
import os
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

from pkgcache.config import load_settings
from tests.cache_service import free_port
from tests.container.deployment import (
    REPO,
    STOP_TIMEOUT,
    ComposeProject,
    missing_environment,
    podman,
    process_tree_memory,
    wait_until,
)
from tests.container.gated_upstream import GatedUpstream
from tests.fakes.dists import find_dist, sample_dists
from tests.support import BackgroundLoop, http_get, installed_dists, run_pip_install

if missing_environment():
    pytest.skip(f"run by scripts/test_container (missing {', '.join(missing_environment())})", allow_module_level=True)

EXPECTED_TREE = {"alpha==2.0", "beta==1.1", "gamma==0.5", "delta-pkg==3.0"}
# Fetched for the first time while the container stops: one is let finish, the other never is.
FINISHED_IN_FLIGHT = "alpha-1.0-py3-none-any.whl"
CUT_IN_FLIGHT = "bigpkg-1.0-py3-none-any.whl"
CONTAINER_UID = 10001  # the Dockerfile's pkgcache user


@dataclass
class Deployment:
    project: ComposeProject
    upstream: GatedUpstream

    def file_url(self, filename: str) -> str:
        project = filename.split("-")[0]
        return f"{self.project.url}/pypi/files/{project}/{filename}"


@pytest.fixture(scope="module")
def deployment(bg_loop: BackgroundLoop, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    upstream = GatedUpstream(sample_dists())
    bg_loop.run(upstream.start())
    directory = tmp_path_factory.mktemp("compose-project")
    # The config file compose.yaml mounts from beside itself: the only way the container learns of the fake.
    (directory / "pkgcache.toml").write_text(
        f'[pypi]\nupstreams = ["{upstream.index_url}"]\n\n[conda]\nenabled = false\n', encoding="utf-8"
    )
    project = ComposeProject(os.environ["PKGCACHE_TEST_PROJECT"], directory, free_port())
    try:
        yield Deployment(project, upstream)
    finally:
        project.run("down", "--volumes", timeout=STOP_TIMEOUT)
        bg_loop.run(upstream.stop())


def _wait_healthy(project: ComposeProject) -> None:
    def answers() -> bool:
        try:
            return http_get(f"{project.url}/-/health", timeout=5).status == 200
        except OSError:
            return False

    wait_until(answers, f"{project.url}/-/health answering 200")


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _whole_body(url: str) -> tuple[int, bytes]:
    """GET `url` to its end: status and body; an answer cut short raises (IncompleteRead, a reset...)."""
    return (answer := http_get(url, timeout=120)).status, answer.body


def _partial_files(data_dir: Path) -> list[Path]:
    """What a stop could leave half-written: anything in tmp/, and any *.part file anywhere."""
    tmp = data_dir / "tmp"
    leftovers = list(tmp.iterdir()) if tmp.exists() else []
    return leftovers + [path for path in data_dir.rglob("*.part") if path.parent != tmp]


def _cached_file(data_dir: Path, filename: str) -> Path | None:
    return next((path for path in (data_dir / "pypi").rglob(filename) if path.is_file()), None)


def test_the_config_file_beside_compose_yaml_is_one_pkgcache_accepts() -> None:
    # The test's project mounts a config of its own; this one is what users start from.
    settings = load_settings(REPO / "pkgcache.toml")
    assert settings.pypi.upstreams and settings.conda.upstreams


def test_up_starts_a_healthy_unprivileged_service_that_pip_installs_through(
    deployment: Deployment, tmp_path: Path
) -> None:
    project, upstream = deployment.project, deployment.upstream
    project.run("up", "-d", "--no-build")
    _wait_healthy(project)
    container = project.container_id()
    # The image's own HEALTHCHECK command, run by the engine inside the container.
    podman("healthcheck", "run", container)
    users = podman("top", container, "user").split()[1:]
    assert users and set(users) == {"pkgcache"}, users

    main_pid = int(podman("inspect", "--format", "{{.State.Pid}}", container).strip())
    idle = process_tree_memory(main_pid)
    print(
        f"\ncontainer: idle memory {idle.pss_bytes / 1e6:.0f} MB PSS ({idle.rss_bytes / 1e6:.0f} MB RSS) "
        f"over {idle.processes} processes"
    )

    result = run_pip_install(f"{project.url}/pypi/simple/", tmp_path / "site", "alpha==2.0")
    assert result.returncode == 0, result.stdout + result.stderr
    assert installed_dists(tmp_path / "site") == EXPECTED_TREE
    # The fake mirror served this install, to pkgcache (its firewall refuses pip's own User-Agent). A wheel may be
    # asked for twice: for its core metadata (this mirror has no PEP 658 files), then whole.
    assert upstream.count("/simple/alpha/") >= 1
    assert upstream.count("/alpha-2.0-py3-none-any.whl") >= 1
    assert upstream.firewall.refused == []

    # `logs` shows the access log: one line per request.
    def logged() -> bool:
        return "pkgcache.access: GET /pypi/simple/alpha/ 200" in project.run("logs", "--no-color", "pkgcache")

    wait_until(logged, "the access line of the page pip asked for in `docker-compose logs`", timeout=30)
    data_dir = project.volume_dir()
    cached = _cached_file(data_dir, "alpha-2.0-py3-none-any.whl")
    assert cached is not None and cached.stat().st_uid == CONTAINER_UID
    # Held while it runs; the next test expects it gone after a graceful stop.
    assert (data_dir / "pkgcache.pid").exists()


def test_down_mid_download_finishes_or_cuts_it_and_leaves_no_partial_file(deployment: Deployment) -> None:
    project, upstream = deployment.project, deployment.upstream
    container = project.container_id()
    data_dir = project.volume_dir()
    finished_gate = upstream.hold(FINISHED_IN_FLIGHT)
    cut_gate = upstream.hold(CUT_IN_FLIGHT)
    with ThreadPoolExecutor(2) as clients:
        finished: Future[tuple[int, bytes]] = clients.submit(_whole_body, deployment.file_url(FINISHED_IN_FLIGHT))
        cut: Future[tuple[int, bytes]] = clients.submit(_whole_body, deployment.file_url(CUT_IN_FLIGHT))
        wait_until(lambda: finished_gate.reached.is_set() and cut_gate.reached.is_set(), "both downloads halfway")
        # Their unfinished bytes are where the check after the stop looks.
        wait_until(lambda: len(_partial_files(data_dir)) == 2, "a temporary file for each download in tmp/")

        down = project.start("down")
        try:
            wait_until(
                lambda: "shutting down" in podman("logs", container),
                "pkgcache saying it is shutting down",
            )
            finished_gate.open()  # the upstream goes on: this download ends within the stop's grace
            output, _ = down.communicate(timeout=STOP_TIMEOUT)
        finally:
            if down.poll() is None:
                down.kill()
        assert down.returncode == 0, output

        status, body = finished.result(timeout=60)
        assert status == 200
        assert _sha256(body) == find_dist(sample_dists(), FINISHED_IN_FLIGHT).sha256
        # The held one never finished: its client got less than the whole file.
        with pytest.raises((http.client.HTTPException, OSError)):
            cut.result(timeout=60)

    assert podman("ps", "--all", "--quiet", "--filter", f"id={container}").strip() == ""
    assert _partial_files(data_dir) == []
    kept = _cached_file(data_dir, FINISHED_IN_FLIGHT)
    assert kept is not None and _sha256(kept.read_bytes()) == find_dist(sample_dists(), FINISHED_IN_FLIGHT).sha256
    assert _cached_file(data_dir, CUT_IN_FLIGHT) is None
    # A stop that ran to its end removes the pid file; one killed by the engine leaves it behind.
    assert not (data_dir / "pkgcache.pid").exists()


def test_up_again_serves_from_the_volume_with_the_upstream_failing(deployment: Deployment, tmp_path: Path) -> None:
    project, upstream = deployment.project, deployment.upstream
    assert project.volume_exists()
    upstream.faults.fail_mode = "503"
    upstream.reset_log()
    project.run("up", "-d", "--no-build")
    _wait_healthy(project)

    result = run_pip_install(f"{project.url}/pypi/simple/", tmp_path / "site", "alpha==2.0")
    assert result.returncode == 0, result.stdout + result.stderr
    assert installed_dists(tmp_path / "site") == EXPECTED_TREE
    answer = http_get(deployment.file_url(FINISHED_IN_FLIGHT))
    assert answer.status == 200
    assert answer.headers["x-pkgcache-cache"] == "hit"
    assert _sha256(answer.body) == find_dist(sample_dists(), FINISHED_IN_FLIGHT).sha256
    # Every file came out of the volume: none was asked of the upstream.
    assert [r.path for r in upstream.requests if "/packages/" in r.path] == []
