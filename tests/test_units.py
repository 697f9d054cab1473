"""gateway.units: durations and sizes as written in the config file."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.units import (
    DURATION_PATTERN,
    SIZE_PATTERN,
    describe_value,
    format_duration,
    format_size,
    parse_duration,
    parse_size,
)

DURATION_EXPECTED = 'expected a duration like "250ms", "30s" or "5m"'
SIZE_EXPECTED = (
    'expected a size like "512B", "16KiB" or "1MiB" (KiB = 1024 bytes, KB = 1000), or a byte count'
)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("250ms", 0.25),
        ("30s", 30.0),
        ("5m", 300.0),
        ("1h", 3600.0),
        ("1m30s", 90.0),
        ("2h45m", 9900.0),
        ("1h0m0s", 3600.0),
        ("1.5s", 1.5),
        ("100us", 0.0001),
        ("100µs", 0.0001),  # MICRO SIGN
        ("100μs", 0.0001),  # GREEK SMALL LETTER MU
        ("10ns", 1e-8),
        ("0", 0.0),
        ("0s", 0.0),
        (" 30s ", 30.0),
    ],
)
def test_parse_duration(text: str, seconds: float) -> None:
    parsed = parse_duration(text)
    assert parsed == pytest.approx(seconds, rel=1e-12)
    assert type(parsed) is float


@pytest.mark.parametrize(
    "text",
    [
        "3 seconds",
        "",
        "s",
        "1.s",
        ".5s",
        "-1s",
        "30s1m",
        "1m1m",
        "10",
        "1d",
        "1S",
        "5 m",
        "\u0661s",
    ],  # an Arabic-Indic digit
)
def test_parse_duration_rejects(text: str) -> None:
    with pytest.raises(ValueError) as caught:
        parse_duration(text)
    assert str(caught.value) == f"{DURATION_EXPECTED}, got {describe_value(text)}"


def test_parse_duration_error_message_from_the_brief() -> None:
    with pytest.raises(
        ValueError, match=re.escape('expected a duration like "250ms", "30s" or "5m", got "3 seconds"')
    ):
        parse_duration("3 seconds")


def test_parse_duration_bare_number_suggests_seconds() -> None:
    with pytest.raises(ValueError) as caught:
        parse_duration(5)  # type: ignore[arg-type]
    assert str(caught.value) == f'{DURATION_EXPECTED}, got 5 (write "5s" for seconds)'


@pytest.mark.parametrize(
    ("value", "size"),
    [
        ("16KiB", 16 * 1024),
        ("1MiB", 1024**2),
        ("1GiB", 1024**3),
        ("2TiB", 2 * 1024**4),
        ("512B", 512),
        ("10KB", 10_000),
        ("3MB", 3_000_000),
        ("1024", 1024),
        ("16kib", 16 * 1024),
        ("16 KiB", 16 * 1024),
        ("1.5KiB", 1536),
        (1024, 1024),
        (0, 0),
    ],
)
def test_parse_size(value: str | int, size: int) -> None:
    parsed = parse_size(value)
    assert parsed == size
    assert type(parsed) is int


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("16k", f'{SIZE_EXPECTED}, got "16k" (did you mean "16KiB"?)'),
        ("1m", f'{SIZE_EXPECTED}, got "1m" (did you mean "1MiB"?)'),
        ("x", f'{SIZE_EXPECTED}, got "x"'),
        ("-1", f'{SIZE_EXPECTED}, got "-1"'),
        ("1.3B", f'{SIZE_EXPECTED}, got "1.3B" (not a whole number of bytes)'),
        ("16KiBs", f'{SIZE_EXPECTED}, got "16KiBs"'),
        (-1, f"{SIZE_EXPECTED}, got -1 (sizes cannot be negative)"),
        (1.5, f"{SIZE_EXPECTED}, got 1.5"),
        (True, f"{SIZE_EXPECTED}, got true"),
    ],
)
def test_parse_size_rejects(value: object, message: str) -> None:
    with pytest.raises(ValueError) as caught:
        parse_size(value)  # type: ignore[arg-type]
    assert str(caught.value) == message


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0, "0s"),
        (0.25, "250ms"),
        (1, "1s"),
        (30, "30s"),
        (60, "1m"),
        (75, "75s"),
        (3600, "1h"),
        (0.0001, "100us"),
    ],
)
def test_format_duration(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text


@pytest.mark.parametrize(
    ("size", "text"), [(0, "0B"), (512, "512B"), (1000, "1000B"), (16384, "16KiB"), (1024**3, "1GiB")]
)
def test_format_size(size: int, text: str) -> None:
    assert format_size(size) == text


@settings(max_examples=300, deadline=None)
@given(st.integers(min_value=0, max_value=10**9), st.sampled_from([1, 1000, 1_000_000, 1_000_000_000]))
def test_format_duration_round_trips(count: int, per_second: int) -> None:
    seconds = count / per_second
    text = format_duration(seconds)
    assert parse_duration(text) == pytest.approx(seconds, rel=1e-12, abs=1e-15)
    assert re.fullmatch(DURATION_PATTERN, text)


@settings(max_examples=300, deadline=None)
@given(st.integers(min_value=0, max_value=2**50))
def test_format_size_round_trips(size: int) -> None:
    text = format_size(size)
    assert parse_size(text) == size
    assert re.fullmatch(SIZE_PATTERN, text)


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet="0123456789.hmsunµKMGTiBb -", max_size=8))
def test_schema_patterns_agree_with_parsers(text: str) -> None:
    """The JSON Schema patterns accept what the parsers accept (outer spaces aside).

    A pattern cannot tell "1.5B" (half a byte) from "1.5KiB", so for sizes it may accept more.
    """
    for pattern, parse in ((DURATION_PATTERN, parse_duration), (SIZE_PATTERN, parse_size)):
        try:
            parse(text)
            rejection = ""
        except ValueError as exc:
            rejection = str(exc)
        if text == text.strip():
            matches = bool(re.fullmatch(pattern, text))
            assert matches == (not rejection) or rejection.endswith("(not a whole number of bytes)"), (
                pattern,
                text,
            )
