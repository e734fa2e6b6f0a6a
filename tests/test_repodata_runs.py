"""The msgspec reader of repodata.json (pkgcache.conda.repodata_runs) against the careful one (repodata_stream).

What is checked: on every document and at every window size, the runs hold exactly the records, in the same
order, that `repodata_stream` reads (and so what json.load reads), or the reader declines; it reads the regular
shapes (compact, indented, nested values, braces and quotes inside strings) without declining; it never accepts a
document that is not JSON; and the offset msgspec puts in its "trailing characters" message, which the reader
relies on, is still where the reader expects it (this fails on a msgspec upgrade that changes it).
"""

from __future__ import annotations

import io
import json
import random
from collections.abc import Iterator
from typing import Any

import msgspec
import pytest

from pkgcache.conda import repodata_runs
from pkgcache.conda.repodata_runs import Declined, RecordRun, iter_repodata_runs
from pkgcache.conda.repodata_stream import Info, MalformedRepodata, Record, Removed, iter_repodata


def record(name: str, version: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "version": version, "build": "h0_0", "depends": [f"dep-{version} >=1"], **extra}


def regular_document() -> dict[str, Any]:
    """A repodata with the shapes real ones have, and strings that look like the places the reader cuts at."""
    packages = {f"pkg{i}-1.{i}-h0_0.tar.bz2": record(f"pkg{i}", f"1.{i}", size=1000 + i) for i in range(40)}
    packages["tricky-1-h0_0.tar.bz2"] = record(
        "tricky",
        "1",
        license='MIT}, "other-1-0.tar.bz2": {"name": "x"}',
        summary='a "quoted" }, "word" with \\ and \u00e9\u4e2d \U0001f600',
        run_exports={"weak": ["tricky >=1"]},
        extra={"nested": {"deeper": [{"a": 1}, {"b": None}]}, "n": 2.5e-3},
    )
    conda = {f"pkg{i}-1.{i}-h0_0.conda": record(f"pkg{i}", f"1.{i}", ratio=i / 7) for i in range(0, 40, 3)}
    conda["brace-1-h0_0.conda"] = record("brace", "1", note="}", other={"x": {}}, empty=[])
    return {
        "info": {"subdir": "linux-64", "base_url": "https://example.invalid/"},
        "packages": packages,
        "packages.conda": conda,
        "v3": {"whl": {"w-1-py3-none-any.whl": record("w", "1")}, "conda": {}},
        "unknown": [1, {"a": [2, {"}": "},"}]}],
        "removed": ["pkg1-0.9-h0_0.tar.bz2", "gone-1-0.conda"],
        "repodata_version": 2,
    }


def serialisations(document: dict[str, Any]) -> dict[str, str]:
    return {
        "compact": json.dumps(document, separators=(",", ":"), ensure_ascii=False),
        "spaced": json.dumps(document),
        "indented": json.dumps(document, indent=2, ensure_ascii=False),
        "sorted, ascii": json.dumps(document, indent=1, sort_keys=True),
        "crlf and tabs": json.dumps(document, indent="\t").replace("\n", "\r\n") + "\r\n",
    }


def careful_items(text: str) -> list[Any]:
    return list(iter_repodata(io.StringIO(text)))


RAW = {"raw_records": False}


@pytest.fixture(autouse=True, params=[False, True], ids=["decoded", "raw records"])
def raw_records(request: pytest.FixtureRequest) -> Iterator[None]:
    """Every test both ways: records decoded by the reader, or left as their JSON text (sorted_shards' way)."""
    RAW["raw_records"] = request.param
    yield
    RAW["raw_records"] = False


def run_items(data: bytes) -> list[Any]:
    """The runs, flattened to the careful reader's items. Raw records are decoded as sorted_shards' makers do
    (and declined as they decline what is not an object)."""
    items: list[Any] = []
    for item in iter_repodata_runs(io.BytesIO(data), raw_records=RAW["raw_records"]):
        if isinstance(item, RecordRun):
            assert item.records, "an empty run"
            items += [Record(item.section, filename, _decoded(rec)) for filename, rec in item.records.items()]
        else:
            items.append(item)
    return items


def _decoded(record: Any) -> Any:
    if not isinstance(record, msgspec.Raw):
        assert not RAW["raw_records"]
        return record
    try:
        decoded = msgspec.json.decode(record)
    except msgspec.DecodeError as exc:
        raise Declined(str(exc)) from None
    if type(decoded) is not dict:
        raise Declined("a record that is not an object")
    return decoded


def assert_same_records(items: list[Any], expected: list[Any]) -> None:
    assert items == expected
    # Key order inside records too: shards keep repodata.json's order.
    assert [list(i.record) for i in items if isinstance(i, Record)] == [
        list(i.record) for i in expected if isinstance(i, Record)
    ]


@pytest.fixture(params=[(64, 16), (1000, 7), (4096, 4096), (1 << 20, 1 << 20)], ids=lambda p: f"run{p[0]}-read{p[1]}")
def small_windows(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    run_bytes, read_bytes = request.param
    monkeypatch.setattr(repodata_runs, "RUN_BYTES", run_bytes)
    monkeypatch.setattr(repodata_runs, "READ_BYTES", read_bytes)


@pytest.mark.usefixtures("small_windows")
@pytest.mark.parametrize("form", sorted(serialisations(regular_document())))
def test_regular_documents_are_read_without_declining_and_give_what_the_careful_reader_gives(form: str) -> None:
    text = serialisations(regular_document())[form]
    assert_same_records(run_items(text.encode()), careful_items(text))


def test_runs_carry_many_records_each() -> None:
    document = regular_document()
    document["packages"] = {f"p{i}-1-0.conda": record(f"p{i}", "1") for i in range(5000)}
    data = io.BytesIO(json.dumps(document).encode())
    runs = [i for i in iter_repodata_runs(data, raw_records=RAW["raw_records"]) if isinstance(i, RecordRun)]
    assert sum(len(run.records) for run in runs) == 5000 + len(document["packages.conda"]) + 1
    assert max(len(run.records) for run in runs) == 5000  # one call to msgspec for the whole section


EDGE_DOCUMENTS = {
    "empty sections": '{"packages": {}, "packages.conda": {  }, "removed": []}',
    "only info": '{"info": {"subdir": "noarch"}}',
    "section last, no comma after": '{"info": {}, "packages": {"a-1-0.conda": {"name": "a"}}}',
    "one record per section": '{"packages":{"a-1-0.conda":{"name":"a"}},"packages.conda":{"b-1-0.conda":{"name":"b"}}}',
    "section twice": '{"packages": {"a-1-0.conda": {"name": "a"}}, "packages": {"b-1-0.conda": {"name": "b"}}}',
    "v3 empty": '{"v3": {}, "packages": {"a-1-0.conda": {"name": "a"}}}',
    "escaped key": '{"packages": {"we\\"ird-1-0.conda": {"name": "we\\"ird"}, "b-1-0.conda": {"name": "b"}}}',
    "big numbers": '{"packages": {"a-1-0.conda": {"name": "a", "size": 123456789012345678901234567890}}}',
    "whitespace everywhere": (
        ' \n { "packages" :\n {\n "a-1-0.conda" :\n {"name":"a"} \n,\n "b-1-0.conda":{"name":"b"}\n}\n}\n '
    ),
}


@pytest.mark.usefixtures("small_windows")
@pytest.mark.parametrize("case", sorted(EDGE_DOCUMENTS))
def test_edge_shapes_give_what_the_careful_reader_gives(case: str) -> None:
    text = EDGE_DOCUMENTS[case]
    assert_same_records(run_items(text.encode()), careful_items(text))


NOT_JSON = {
    "empty": b"",
    "a list": b"[]",
    "html": b"<html>502</html>",
    "cut in a record": b'{"packages": {"a-1-0.conda": {"name": "a", "depends": ["x"',
    "cut between records": b'{"packages": {"a-1-0.conda": {"name": "a"},',
    "cut after the section": b'{"packages": {"a-1-0.conda": {"name": "a"}}',
    "trailing comma": b'{"packages": {"a-1-0.conda": {"name": "a"},}}',
    "data after the end": b'{"packages": {}} {}',
    "a record is a number": b'{"packages": {"a-1-0.conda": 5}}',
    "packages is a list": b'{"packages": []}',
    "removed holds a number": b'{"removed": [1]}',
    "info is a string": b'{"info": "x"}',
    "NaN, which json.load takes": b'{"packages": {"a-1-0.conda": {"name": "a", "x": NaN}}}',
    "a lone surrogate, which json.load takes": b'{"packages": {"a-1-0.conda": {"name": "\\ud800"}}}',
    "not utf-8": b'{"packages": {"a-1-0.conda": {"name": "\xff"}}}',
}


@pytest.mark.usefixtures("small_windows")
@pytest.mark.parametrize("case", sorted(NOT_JSON))
def test_anything_else_is_declined(case: str) -> None:
    with pytest.raises(Declined):
        run_items(NOT_JSON[case])


def test_a_value_larger_than_the_limit_is_declined(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(repodata_runs, "MAX_VALUE_BYTES", 10_000)
    monkeypatch.setattr(repodata_runs, "RUN_BYTES", 1000)
    monkeypatch.setattr(repodata_runs, "READ_BYTES", 1000)
    huge = b'{"packages": {"a-1-0.conda": {"name": "a", "x": "' + b"y" * 50_000 + b'"}}}'
    with pytest.raises(Declined, match="larger than"):
        run_items(huge)
    with pytest.raises(Declined):  # an unterminated string is not read to the end of a huge file
        run_items(b'{"packages": {"a-1-0.conda": {"name": "' + b"y" * 500_000)


@pytest.mark.parametrize("seed", range(6))
def test_mutated_documents_are_read_as_json_load_reads_them_or_declined(
    monkeypatch: pytest.MonkeyPatch, seed: int
) -> None:
    """Random edits of a regular document (most of them break it): whatever the reader accepts equals what the
    careful reader (json.load's scanner) reads; whatever is not JSON is declined."""
    monkeypatch.setattr(repodata_runs, "RUN_BYTES", 300)
    monkeypatch.setattr(repodata_runs, "READ_BYTES", 128)
    rng = random.Random(seed)
    base = serialisations(regular_document())["spaced"]
    alphabet = '{}[],:" \\\n0a}'
    read = declined = 0
    for _ in range(250):
        text = list(base)
        for _ in range(rng.randint(1, 3)):
            at = rng.randrange(len(text))
            if rng.random() < 0.5:
                text[at] = rng.choice(alphabet)
            else:
                del text[at]
        mutated = "".join(text)
        try:
            expected = careful_items(mutated)
        except MalformedRepodata:
            expected = None
        try:
            items = run_items(mutated.encode())
        except Declined:
            declined += 1
            continue
        read += 1
        assert expected is not None, f"accepted what is not a repodata: {mutated!r}"
        # Duplicate keys made by an edit collapse inside a run (as json.load would collapse them): compare maps.
        assert _by_key(items) == _by_key(expected)
    assert read > 10 and declined > 10


def _by_key(items: list[Any]) -> tuple[list[Any], dict[tuple[str, str], Any], list[str]]:
    records = {(i.section, i.filename): i.record for i in items if isinstance(i, Record)}
    return [i for i in items if isinstance(i, Info)], records, [i.filename for i in items if isinstance(i, Removed)]


def test_msgspec_still_reports_where_trailing_characters_start() -> None:
    """The reader finds the end of a section from this message; if a msgspec release changes it, every file is
    read by the careful reader instead (correct, twice as slow): this test says so."""
    with pytest.raises(msgspec.DecodeError) as caught:
        msgspec.json.decode(b'{"a": {"b": 1}} \n , "next"')
    assert repodata_runs._trailing_offset(caught.value) == len(b'{"a": {"b": 1}} \n ')
    with pytest.raises(msgspec.DecodeError) as caught:
        msgspec.json.decode(b'{"a": "unterminated')
    assert str(caught.value) == repodata_runs._TRUNCATED


def test_runs_tell_the_names_they_hold_twice_with_every_record() -> None:
    def runs_of(text: bytes) -> list[RecordRun]:
        items = iter_repodata_runs(io.BytesIO(text), raw_records=True, repeats=True)
        return [item for item in items if isinstance(item, RecordRun)]

    twice = b'{"packages": {"a-1-0.tar.bz2": {"n": 1}, "a-1-0.tar.bz2": {"n": 3, "x": {"y": 1}}, "b-1-0.tar.bz2": {}}}'
    assert next(run.repeated for run in runs_of(twice)) == {"a-1-0.tar.bz2": [{"n": 1}, {"n": 3, "x": {"y": 1}}]}
    plain = b'{"packages": {"a-1-0.tar.bz2": {"n": 1}, "b-1-0.tar.bz2": {"n": 2}, "c-1-0.tar.bz2": {"n": 2}}}'
    assert next((run.repeated, run.flat) for run in runs_of(plain)) == ({}, True)
    nested = b'{"packages": {"a-1-0.tar.bz2": {"n": {}}, "b-1-0.tar.bz2": {"n": 2}, "c-1-0.tar.bz2": {"n": 2}}}'
    assert next((run.repeated, run.flat) for run in runs_of(nested)) == ({}, False)
