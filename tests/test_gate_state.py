"""The gate as each worker holds it: blocks read from the data directory, the offline state shared with replicas,
side predicates handed over on every change; the block commands and `policy check` working on the directory."""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from click.testing import CliRunner

from pkgcache.cli.kit_commands import workers_behind
from pkgcache.cli.policy_commands import block_command, check_command, show_command, unblock_command
from pkgcache.config import Settings, load_settings
from pkgcache.config_template import render_config_template
from pkgcache.gate.blocks import BlockBook, BlocksUnreadable, block_from_target
from pkgcache.gate.first_seen import KNOWS_NOTHING, note_first_seen, read_first_seen
from pkgcache.gate.holdings import mark_imported, read_import_mark
from pkgcache.gate.refusals import MAX_REASON_CHARS, reason_phrase
from pkgcache.gate.state import Gate, SideGate
from pkgcache.storage.store import CacheStore


def _settings(tmp_path: Path, **server: object) -> Settings:
    return load_settings(None, server={"data_dir": tmp_path / "data", **server})


def test_a_side_with_no_rule_passes_everything_and_a_block_or_offline_does_not(tmp_path: Path) -> None:
    store = CacheStore(tmp_path / "data")
    store.prepare()
    gate = Gate(_settings(tmp_path), store, {})
    seen: list[SideGate] = []
    gate.subscribe("pypi", seen.append)
    assert seen[-1].passes_everything and "conda" in gate.sides and gate.sides["conda"].policy is None

    BlockBook(store).add("pypi", block_from_target("pypi", "Requests==2.32.0", "alice", "bad"))
    assert gate.load_blocks() and not gate.load_blocks()  # read when it changed, not again
    assert not seen[-1].passes_everything and seen[-1].policy is not None
    assert not seen[-1].policy.check_file("requests", "requests-2.32.0-py3-none-any.whl").allowed
    fingerprint = seen[-1].fingerprint

    assert BlockBook(store).remove("pypi", "requests", "2.32.0") is not None
    gate.load_blocks()
    assert seen[-1].passes_everything and seen[-1].fingerprint != fingerprint

    offline = Gate(_settings(tmp_path, offline=True), store, {})
    assert offline.sides["pypi"].view_offline and not offline.sides["pypi"].passes_everything


@pytest.mark.parametrize(
    "damage",
    [b"{not json", b'{"pypi": [{"version": "1.0"}], "conda": []}'],
    ids=["not JSON", "a block without its name"],
)
def test_a_damaged_blocks_file_lifts_no_block_and_is_never_written_over(tmp_path: Path, damage: bytes) -> None:
    """A blocks file that cannot be read whole leaves the blocks read before in force in a running gate, and
    `block`/`unblock` refuse to write over it (which would keep only the new block and drop every other)."""
    store = CacheStore(tmp_path / "data")
    store.prepare()
    book = BlockBook(store)
    book.add("pypi", block_from_target("pypi", "requests==2.32.0", "alice", "bad"))
    book.add("pypi", block_from_target("pypi", "urllib3", "alice", "bad"))
    gate = Gate(_settings(tmp_path), store, {})
    seen: list[SideGate] = []
    gate.subscribe("pypi", seen.append)
    assert gate.load_blocks() and seen[-1].policy is not None
    assert not seen[-1].policy.check_file("requests", "requests-2.32.0-py3-none-any.whl").allowed

    time.sleep(0.01)  # a new stamp for the file
    book.path.write_bytes(damage)
    gate.load_blocks()
    assert not seen[-1].passes_everything and seen[-1].policy is not None
    assert not seen[-1].policy.check_file("urllib3", "urllib3-2.0.0-py3-none-any.whl").allowed

    # A worker starting now has no blocks read before: it does not start (the supervisor and `start` say why).
    with pytest.raises(BlocksUnreadable, match="cannot be read"):
        Gate(_settings(tmp_path), store, {}).load_blocks_at_start()

    where = ["--data-dir", str(tmp_path / "data")]
    runner = CliRunner()
    for command, target in ((block_command, "idna"), (unblock_command, "urllib3")):
        refused = runner.invoke(command, [target, *where])
        assert refused.exit_code == 1 and "cannot be read" in refused.output, refused.output
    assert book.path.read_bytes() == damage


def test_blocks_made_at_once_are_all_kept(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each block reads the file, adds itself and writes it again: made at once (admin API calls run in threads, on
    several workers, beside `pkgcache block`), each wrote the file without the others' (21 of 30 lost, and a
    blocked release then served)."""
    store = CacheStore(tmp_path / "data")
    store.prepare()
    write = BlockBook._write

    def slow_write(self: BlockBook, blocks: object) -> None:
        time.sleep(0.02)  # the window between the read and the write, made wide
        write(self, blocks)

    monkeypatch.setattr(BlockBook, "_write", slow_write)
    targets = [f"pkg{i}==1.0" for i in range(12)]
    with ThreadPoolExecutor(max_workers=len(targets)) as pool:
        list(pool.map(lambda t: BlockBook(store).add("pypi", block_from_target("pypi", t, "alice", "bad")), targets))
    assert sorted(b.target for b in BlockBook(store).read_sound()["pypi"]) == sorted(targets)

    with ThreadPoolExecutor(max_workers=6) as pool:
        list(pool.map(lambda i: BlockBook(store).remove("pypi", f"pkg{i}", "1.0"), range(6)))
    assert sorted(b.target for b in BlockBook(store).read_sound()["pypi"]) == sorted(targets[6:])


def test_a_replica_reads_the_primarys_word_that_every_upstream_is_down(tmp_path: Path) -> None:
    store = CacheStore(tmp_path / "data")
    store.prepare()
    store.write_json_atomic(store.path_for("gate", "degraded.json"), {"pypi": True, "conda": False})
    replica = Gate(_settings(tmp_path), CacheStore(tmp_path / "data", writable=False), {})
    seen: list[SideGate] = []
    replica.subscribe("pypi", seen.append)
    replica._read_degraded()
    assert seen[-1].degraded and seen[-1].view_offline and not seen[-1].offline


def test_a_worker_reports_an_import_mark_acted_on_only_after_its_listeners_ran(tmp_path: Path) -> None:
    store = CacheStore(tmp_path / "data")
    store.prepare()
    first = mark_imported(store.root)
    gate = Gate(_settings(tmp_path), store, {})
    heard: list[int] = []
    gate.on_import(lambda: heard.append(gate.import_mark))
    # A worker starting after an import holds nothing older than it: the first look counts it as acted on.
    assert not gate.import_seen() and gate.import_mark == first and heard == []

    second = mark_imported(store.root)
    assert second != first and read_import_mark(store.root) == second
    assert gate.import_seen() and gate.import_mark == first  # seen, not acted on yet
    gate._imported()
    assert heard == [first] and gate.import_mark == second  # the listeners ran before the mark was reported
    assert not gate.import_seen()


def test_the_import_command_waits_for_every_worker_to_report_its_mark() -> None:
    rows = [{"index": 0, "pid": 10, "import_mark": 7}, {"index": 1, "pid": 11, "import_mark": 3}]
    assert workers_behind({"workers": rows}, 7) == ["worker 1 (pid 11) has not looked yet"]
    assert workers_behind({"workers": rows[:1]}, 7) == []
    assert workers_behind({"workers": None, "import_mark": 7}, 7) == []  # one process
    assert workers_behind({"workers": None, "import_mark": 3}, 7) == ["the service has not looked yet"]
    assert workers_behind({}, 7) == ["the service has not looked yet"]  # an older service says nothing of it


def test_first_sightings_are_recorded_once_and_tell_first_sight_apart(tmp_path: Path) -> None:
    store = CacheStore(tmp_path / "data")
    store.prepare()
    path = store.path_for("pypi", "simple", "x", "first-seen.json")
    record, complete = note_first_seen(store, path, ["x-1.0.tar.gz"], now=1000.0)
    assert complete and record.lookup(count_first_sight=False)("x-1.0.tar.gz") is None  # there before we looked
    assert record.lookup(count_first_sight=True)("x-1.0.tar.gz").timestamp() == 1000.0
    record, _ = note_first_seen(store, path, ["x-1.0.tar.gz", "x-2.0.tar.gz"], now=2000.0)
    assert record.lookup(count_first_sight=False)("x-2.0.tar.gz").timestamp() == 2000.0
    assert read_first_seen(store, path).files == {"x-1.0.tar.gz": 1000.0, "x-2.0.tar.gz": 2000.0}
    reader = CacheStore(tmp_path / "data", writable=False)
    _, complete = note_first_seen(reader, path, ["x-3.0.tar.gz"], now=3000.0)
    assert not complete and "x-3.0.tar.gz" not in read_first_seen(store, path).files  # a reader writes nothing


def test_release_times_once_given_are_kept_and_outlive_pages_without_them(tmp_path: Path) -> None:
    """A page giving upload times, then one without (another mirror, in HTML): the files keep the age the first
    gave, instead of counting as first seen when the second came."""
    store = CacheStore(tmp_path / "data")
    store.prepare()
    path = store.path_for("pypi", "simple", "x", "first-seen.json")
    times = {"x-1.0.tar.gz": 100.0, "x-2.0.tar.gz": 9000.0}  # the second "uploaded" after it was given: now
    record, complete = note_first_seen(store, path, [], now=1000.0, released=times)
    assert complete and record.released == {"x-1.0.tar.gz": 100.0, "x-2.0.tar.gz": 1000.0}

    record, _ = note_first_seen(store, path, ["x-1.0.tar.gz", "x-2.0.tar.gz", "x-3.0.tar.gz"], now=5000.0)
    for count in (True, False):
        first_seen = record.lookup(count_first_sight=count)
        assert first_seen("x-1.0.tar.gz").timestamp() == 100.0 and first_seen("x-2.0.tar.gz").timestamp() == 1000.0
        assert first_seen("x-3.0.tar.gz").timestamp() == 5000.0  # appeared after the record began: seen then
    assert read_first_seen(store, path).released == record.released

    # Only an earlier time teaches it something (and a write); a later one is not taken.
    written = path.stat()
    note_first_seen(store, path, ["x-1.0.tar.gz"], now=6000.0, released={"x-1.0.tar.gz": 200.0})
    assert read_first_seen(store, path).released["x-1.0.tar.gz"] == 100.0
    assert (path.stat().st_ino, path.stat().st_mtime_ns) == (written.st_ino, written.st_mtime_ns)
    note_first_seen(store, path, [], now=6000.0, released={"x-3.0.tar.gz": 50.0})
    assert read_first_seen(store, path).lookup(count_first_sight=True)("x-3.0.tar.gz").timestamp() == 50.0

    # A worker that only reads the cache keeps them in memory and does not wait for the writer over them.
    reader = CacheStore(tmp_path / "data", writable=False)
    record, complete = note_first_seen(reader, path, [], now=7000.0, released={"x-4.0.tar.gz": 10.0})
    assert complete and record.released["x-4.0.tar.gz"] == 10.0
    assert "x-4.0.tar.gz" not in read_first_seen(store, path).released


def test_a_record_of_sightings_written_before_release_times_were_kept_still_reads(tmp_path: Path) -> None:
    store = CacheStore(tmp_path / "data")
    store.prepare()
    path = store.path_for("pypi", "simple", "x", "first-seen.json")
    store.write_json_atomic(path, {"since": 1000.0, "files": {"x-1.0.tar.gz": 1000.0}})
    record = read_first_seen(store, path)
    assert record is not None and record.released == {} and record.files == {"x-1.0.tar.gz": 1000.0}
    store.write_json_atomic(path, {"since": 1000.0, "files": {}, "released": ["not", "a", "map"]})
    assert read_first_seen(store, path).since == KNOWS_NOTHING  # damaged: counts every file from now


def test_a_damaged_record_of_first_sightings_takes_no_file_for_old(tmp_path: Path) -> None:
    """Begun again as new, it would take every file for one there before pkgcache looked: with unknown_age "allow"
    that serves files it had seen appear an hour ago. A record that knows nothing counts each from now."""
    store = CacheStore(tmp_path / "data")
    store.prepare()
    path = store.path_for("pypi", "simple", "x", "first-seen.json")
    note_first_seen(store, path, ["x-1.0.tar.gz"], now=1000.0)
    note_first_seen(store, path, ["x-1.0.tar.gz", "x-2.0.tar.gz"], now=5000.0)
    path.write_bytes(path.read_bytes()[:20])  # cut short

    record, _ = note_first_seen(store, path, ["x-1.0.tar.gz", "x-2.0.tar.gz"], now=6000.0)
    assert record.lookup(count_first_sight=False)("x-2.0.tar.gz").timestamp() == 6000.0
    assert record.lookup(count_first_sight=False)("x-1.0.tar.gz").timestamp() == 6000.0
    assert read_first_seen(store, path).files == {"x-1.0.tar.gz": 6000.0, "x-2.0.tar.gz": 6000.0}
    assert read_first_seen(store, store.path_for("pypi", "simple", "y", "first-seen.json")) is None  # none yet


def test_a_reason_phrase_is_one_latin1_line_of_bounded_length() -> None:
    phrase = reason_phrase("numpy\r\nrefused: 禁止 " + "x" * 1000)
    assert "\n" not in phrase and "\r" not in phrase
    phrase.encode("latin-1")
    assert len(phrase) == MAX_REASON_CHARS and phrase.endswith("...")


def test_pkgcache_init_documents_the_policy_keys_and_offline() -> None:
    template = render_config_template()
    for key in ("min_release_age", "min_release_age_exempt", "unknown_age", "deny", "allow", "allow_only"):
        assert template.count(f"\n{key} = ") + template.count(f"\n# {key} = ") == 2, key
    assert "offline = false" in template and "# Supply-chain policy (docs/policy.md)" in template


def test_block_and_unblock_work_on_the_data_directory_when_nothing_runs(tmp_path: Path) -> None:
    data = tmp_path / "data"
    wheel = data / "pypi/files/alpha/alpha-2.0-py3-none-any.whl"
    wheel.parent.mkdir(parents=True)
    wheel.write_bytes(b"PK")
    (wheel.parent / (wheel.name + ".metadata")).write_bytes(b"Metadata-Version: 2.1")
    (wheel.parent / "alpha-1.0-py3-none-any.whl").write_bytes(b"PK")
    package = data / "conda/cloud/conda-forge/linux-64/numpy-1.26.4-py312h0_0.conda"
    package.parent.mkdir(parents=True)
    package.write_bytes(b"PK")
    where = ["--data-dir", str(data)]
    runner = CliRunner()

    done = runner.invoke(block_command, ["alpha==2.0", "--reason", "bad build", *where])
    assert done.exit_code == 0, done.output
    assert "purged 2 cached files" in done.output and "not running" in done.output
    assert not wheel.exists() and (wheel.parent / "alpha-1.0-py3-none-any.whl").exists()
    done = runner.invoke(block_command, ["--conda", "numpy==1.26.4", *where])
    assert done.exit_code == 0, done.output
    assert not package.exists()
    assert runner.invoke(block_command, ["--conda", "numpy==not a version!", *where]).exit_code != 0

    shown = runner.invoke(show_command, where)
    assert "blocked: alpha==2.0 by" in shown.output and "bad build" in shown.output
    assert "blocked: numpy==1.26.4" in shown.output
    lines = [json.loads(line) for line in (data / "gate/blocks.log").read_text().splitlines()]
    assert [(line["action"], line["target"], line["purged_files"]) for line in lines] == [
        ("block", "alpha==2.0", 2),
        ("block", "numpy==1.26.4", 1),
    ]

    done = runner.invoke(unblock_command, ["alpha==2.0", *where])
    assert done.exit_code == 0, done.output
    assert runner.invoke(unblock_command, ["alpha==2.0", *where]).exit_code != 0  # no such block any more
    assert [b.target for b in BlockBook(CacheStore(data)).read()["pypi"]] == []


def test_block_and_unblock_refuse_a_data_directory_that_is_not_one(tmp_path: Path) -> None:
    """A mistyped --data-dir is refused as gc and purge refuse it, not created to hold a block no instance reads."""
    runner = CliRunner()
    missing = tmp_path / "nodir"
    for command, args in ((block_command, ["alpha"]), (unblock_command, ["alpha"]), (block_command, ["--conda", "x"])):
        refused = runner.invoke(command, [*args, "--data-dir", str(missing)])
        assert refused.exit_code == 1 and f"data directory {missing} does not exist" in refused.output
    assert not missing.exists()
    empty = tmp_path / "empty"
    empty.mkdir()
    refused = runner.invoke(block_command, ["alpha", "--data-dir", str(empty)])
    assert refused.exit_code == 1 and "holds no pkgcache cache" in refused.output
    assert list(empty.iterdir()) == []

    # A directory holding blocks and nothing cached is a data directory: its blocks can be lifted.
    BlockBook(CacheStore(empty)).add("pypi", block_from_target("pypi", "alpha", "alice", ""))
    lifted = runner.invoke(unblock_command, ["alpha", "--data-dir", str(empty)])
    assert lifted.exit_code == 0, lifted.output
    assert runner.invoke(block_command, ["beta", "--data-dir", str(empty)]).exit_code == 0


@pytest.mark.parametrize(("blocked", "code"), [(False, 0), (True, 1)])
def test_policy_check_says_which_pins_are_refused_for_ci(tmp_path: Path, blocked: bool, code: int) -> None:
    data = tmp_path / "data"
    config = tmp_path / "pkgcache.toml"
    config.write_text('[pypi]\nmin_release_age = "3d"\ndeny = ["evil-*"]\n[conda]\ndeny = ["openssl <3"]\n')
    if blocked:
        BlockBook(CacheStore(data)).add("pypi", block_from_target("pypi", "requests==2.32.0", "ci", "INC-1"))
    # The cache has requests' page: its upload time says how old the pin is.
    page = {
        "page": {"name": "requests", "files": [{"filename": "requests-2.32.0-py3-none-any.whl", "url": "x",
                                                "upload_time": "2020-01-01T00:00:00Z"}]},
        "upstream": "tuna", "fetched_at": time.time(),
    }  # fmt: skip
    (data / "pypi/simple/requests").mkdir(parents=True)
    (data / "pypi/simple/requests/page.json").write_text(json.dumps(page))
    requirements = tmp_path / "requirements.txt"
    requirements.write_text("requests==2.32.0\nnumpy==2.1.0\nflask\n")
    explicit = tmp_path / "conda.txt"
    explicit.write_text("@EXPLICIT\nhttps://conda.anaconda.org/conda-forge/linux-64/openssl-3.3.1-h4ab18f5_0.conda\n")

    checked = CliRunner().invoke(
        check_command, ["--config", str(config), "--data-dir", str(data), str(requirements), str(explicit)]
    )
    assert checked.exit_code == code, checked.output
    assert ("REFUSED  requests==2.32.0" in checked.output) is blocked
    assert "numpy==2.1.0 (" in checked.output and "not checked" in checked.output  # no page: age unknown
    assert "flask (" in checked.output and "not pinned" in checked.output
    assert "REFUSED  openssl" not in checked.output
    assert f"4 pins checked (1 file): {int(blocked)} refused" in checked.output  # the conda package is one


NO_SDISTS = '[pypi]\ndeny = ["evil-*", { name = "*", kind = "sdist", except = ["pyyaml"] }]\n[conda]\nenabled = false\n'


def _poetry_lock(path: Path, packages: dict[str, tuple[str, list[str]]]) -> Path:
    """A poetry.lock listing, for each project, its version and the files of it the lock names."""
    entries = []
    for name, (version, files) in packages.items():
        listed = "".join(f'    {{file = "{file}", hash = "sha256:{"ab" * 32}"}},\n' for file in files)
        entries.append(
            f'[[package]]\nname = "{name}"\nversion = "{version}"\ndescription = ""\noptional = false\n'
            f'python-versions = "*"\nfiles = [\n{listed}]\n'
        )
    path.write_text("\n".join(entries) + '\n[metadata]\nlock-version = "2.0"\npython-versions = "^3.12"\n')
    return path


def _policy_check(tmp_path: Path, config: str, *locks: Path) -> tuple[int, str]:
    (tmp_path / "pkgcache.toml").write_text(config)
    arguments = ["--config", str(tmp_path / "pkgcache.toml"), "--data-dir", str(tmp_path / "data")]
    checked = CliRunner().invoke(check_command, [*arguments, *map(str, locks)])
    return checked.exit_code, checked.output


def test_policy_check_passes_a_locked_wheel_beside_a_refused_sdist_and_notes_the_sdist(tmp_path: Path) -> None:
    # As an installer of the lock meets it: alpha's wheel is served, so the lock installs; a note names the sdist.
    lock = _poetry_lock(
        tmp_path / "poetry.lock",
        {
            "alpha": ("2.0", ["alpha-2.0-py3-none-any.whl", "alpha-2.0.tar.gz"]),
            "pyyaml": ("6.0", ["PyYAML-6.0.tar.gz"]),
        },
    )
    pdm = tmp_path / "pdm.lock"
    pdm.write_text(
        '[metadata]\ngroups = ["default"]\nlock_version = "4.5.0"\n\n[[package]]\nname = "alpha"\nversion = "2.0"\n'
        f'files = [\n    {{file = "alpha-2.0-py3-none-any.whl", hash = "sha256:{"cd" * 32}"}},\n'
        f'    {{file = "alpha-2.0.tar.gz", hash = "sha256:{"ef" * 32}"}},\n]\n'
    )
    code, output = _policy_check(tmp_path, NO_SDISTS, lock, pdm)
    assert code == 0, output
    assert "REFUSED" not in output
    note = (
        "1 of its 2 files is refused (an installer that can use no other file fails): alpha-2.0.tar.gz by "
        '[pypi] deny[1] "* (kind=sdist, except=pyyaml)"'
    )
    assert f"note     alpha==2.0 ({lock}:1): {note}" in output
    assert f"note     alpha==2.0 ({pdm}:" in output
    assert output.splitlines()[-1] == "3 pins checked (5 files): 0 refused, 2 with notes"


def test_policy_check_refuses_a_pin_whose_only_locked_file_is_refused(tmp_path: Path) -> None:
    lock = _poetry_lock(
        tmp_path / "poetry.lock",
        {"alpha": ("2.0", ["alpha-2.0-py3-none-any.whl", "alpha-2.0.tar.gz"]), "beta": ("1.1", ["beta-1.1.tar.gz"])},
    )
    code, output = _policy_check(tmp_path, NO_SDISTS, lock)
    assert code == 1, output
    assert (
        f"REFUSED  beta==1.1 ({lock}:12): beta-1.1.tar.gz is refused by pkgcache's policy: "
        '[pypi] deny[1] "* (kind=sdist, except=pyyaml)"'
    ) in output
    assert "REFUSED  alpha" not in output
    assert output.splitlines()[-1] == "2 pins checked (3 files): 1 refused, 1 with notes"


def test_policy_check_refuses_a_denied_name_or_version_whatever_files_the_lock_lists(tmp_path: Path) -> None:
    lock = _poetry_lock(
        tmp_path / "poetry.lock",
        {
            "evil-pkg": ("1.0", ["evil_pkg-1.0-py3-none-any.whl", "evil_pkg-1.0.tar.gz"]),
            "alpha": ("2.0", ["alpha-2.0-py3-none-any.whl"]),
        },
    )
    config = NO_SDISTS.replace('deny = ["evil-*",', 'deny = ["evil-*", "alpha==2.0",')
    code, output = _policy_check(tmp_path, config, lock)
    assert code == 1, output
    assert (
        "REFUSED  evil-pkg==1.0 (" in output
        and 'evil-pkg==1.0 is refused by pkgcache\'s policy: [pypi] deny[0] "evil-*"' in output
    )
    assert (
        "REFUSED  alpha==2.0 (" in output
        and 'alpha==2.0 is refused by pkgcache\'s policy: [pypi] deny[1] "alpha==2.0"' in output
    )
    assert "note" not in output  # the sdist rule says nothing more of a pin refused whatever its files
    assert output.splitlines()[-1] == "2 pins checked (3 files): 2 refused"


def test_offline_and_online_flags_override_the_config_and_their_absence_does_not() -> None:
    from pkgcache.cli.options import flag_overrides

    assert flag_overrides({"offline": True}) == {"server": {"offline": True}}
    assert flag_overrides({"offline": False}) == {"server": {"offline": False}}  # `restart --online`
    assert flag_overrides({"offline": None}) == {}


@pytest.mark.parametrize(("side", "blocked", "lifted"), [("pypi", "1.1.0", "1.1"), ("conda", "1.1", "1.1.0")])
def test_a_block_is_lifted_by_any_spelling_of_its_version_and_replaced_by_one(
    tmp_path: Path, side: str, blocked: str, lifted: str
) -> None:
    """A block of 1.1.0 refuses the files of 1.1 (one version, as the side compares them): so it is one block,
    lifted by `unblock multi==1.1`, and blocking 1.1 again replaces it rather than adding a second."""
    book = BlockBook(CacheStore(tmp_path))
    book.add(side, block_from_target(side, f"Multi=={blocked}", "ops", "qa"))
    book.add(side, block_from_target(side, f"multi=={lifted}", "ops", "again"))
    assert [(b.version, b.why) for b in book.read()[side]] == [(lifted, "again")]
    removed = book.remove(side, "multi", blocked)
    assert removed is not None and removed.why == "again"
    assert book.read()[side] == ()
    assert book.remove(side, "multi", "1.2") is None  # another version is not this one


def test_block_and_unblock_exit_1_naming_a_worker_the_instance_says_did_not_apply_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The running instance made the change but a worker did not say it has it in force (within the API's bound):
    the command says the change is made, names the worker, and exits 1, so a script does not take it as done."""
    import pkgcache.cli.policy_commands as commands

    answers = {
        "block": {"purged_files": 2, "purged_bytes": 10, "workers_behind": [{"worker": 2, "pid": 4242}]},
        "unblock": {"workers_behind": [{"worker": 1, "pid": 4141}]},
    }
    monkeypatch.setattr(commands, "running_instance_url", lambda located: "http://127.0.0.1:9")
    monkeypatch.setattr(
        commands, "call_admin_api", lambda located, url, path, timeout: answers[path.split("?")[0].rsplit("/")[-1]]
    )
    where = ["--data-dir", str(tmp_path)]
    blocked = CliRunner().invoke(block_command, ["alpha==2.0", *where])
    assert blocked.exit_code == 1, blocked.output
    assert "blocked alpha==2.0 (pypi); purged 2 cached files" in blocked.output
    assert (
        "for everyone" not in blocked.output and "worker 2 (pid 4242) did not say it has it in force" in blocked.output
    )
    unblocked = CliRunner().invoke(unblock_command, ["alpha==2.0", *where])
    assert unblocked.exit_code == 1 and "worker 1 (pid 4141)" in unblocked.output, unblocked.output

    answers["block"] = {"purged_files": 0, "purged_bytes": 0, "workers_behind": []}
    done = CliRunner().invoke(block_command, ["alpha==2.0", *where])
    assert done.exit_code == 0 and "blocked alpha==2.0 (pypi) for everyone" in done.output, done.output


def test_block_given_again_without_a_running_instance_adds_no_line_to_the_log(tmp_path: Path) -> None:
    """QA v35 L3, on the data directory: the same block for the same reason is kept as it was, and logged once."""
    store = CacheStore(tmp_path)
    store.prepare()
    (tmp_path / "gate").mkdir()  # a data directory that holds blocks
    where = ["--data-dir", str(tmp_path)]
    for _ in range(2):
        done = CliRunner().invoke(block_command, ["alpha==2.0", "--reason", "bad", *where])
        assert done.exit_code == 0, done.output
    assert CliRunner().invoke(block_command, ["alpha==2.0", "--reason", "worse", *where]).exit_code == 0
    history = BlockBook(store).history()
    assert [(entry["action"], entry["why"]) for entry in history] == [("block", "bad"), ("block", "worse")]
