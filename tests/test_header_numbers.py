"""Numbers read from HTTP headers (header_numbers.py): ASCII digits only, and the shapes of Content-Range."""

from __future__ import annotations

import pytest

from pkgcache.header_numbers import ContentRange, content_range, unsatisfied_range_size


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("bytes 0-9/10", ContentRange(0, 9, 10)),
        ("bytes 5-9/*", ContentRange(5, 9, None)),
        ("bytes 9-5/10", None),  # last before first
        ("bytes 0-10/10", None),  # past the end
        ("bytes */10", None),  # a 416's, not a range that was sent
        ("bytes \u0661-9/10", None),  # an Arabic-Indic digit
        (None, None),
    ],
)
def test_a_content_range_is_read_only_when_consistent(value: str | None, expected: ContentRange | None) -> None:
    assert content_range(value) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("bytes */4994", 4994),
        (" bytes */0 ", 0),
        ("bytes */*", None),
        ("bytes 0-9/10", None),
        ("bytes */\u0664", None),
        ("", None),
        (None, None),
    ],
)
def test_the_size_a_416_gives_is_read_from_its_content_range(value: str | None, expected: int | None) -> None:
    assert unsatisfied_range_size(value) == expected
