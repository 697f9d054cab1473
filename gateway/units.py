"""Human-readable durations and sizes, as written in the config file.

Durations: one or more ``<number><unit>`` parts with units in descending order
(``"250ms"``, ``"30s"``, ``"1m30s"``, ``"1.5s"``), stored as float seconds.
Sizes: ``<number><unit>`` with binary (KiB = 1024) or decimal (KB = 1000) units,
or a plain byte count, stored as int bytes. Both parsers raise ValueError with a
message that shows what was expected, ready to be prefixed with a key path.
"""

from __future__ import annotations

import json
import math
import re
from decimal import Decimal

__all__ = [
    "DURATION_PATTERN",
    "SIZE_PATTERN",
    "describe_value",
    "format_duration",
    "format_size",
    "parse_duration",
    "parse_size",
]

# Seconds per unit, largest first: the order a compound duration must follow.
_DURATION_UNITS: dict[str, Decimal] = {
    "h": Decimal(3600),
    "m": Decimal(60),
    "s": Decimal(1),
    "ms": Decimal("0.001"),
    "us": Decimal("0.000001"),
    "µs": Decimal("0.000001"),  # U+00B5 MICRO SIGN
    "μs": Decimal("0.000001"),  # U+03BC GREEK SMALL LETTER MU (what many keyboards produce)
    "ns": Decimal("0.000000001"),
}
_DURATION_RANK = {"h": 0, "m": 1, "s": 2, "ms": 3, "us": 4, "µs": 4, "μs": 4, "ns": 5}
# "ms" must be tried before "m" and "s"; the alternation order does that.
_DURATION_PART = re.compile(r"([0-9]+(?:\.[0-9]+)?)(ms|us|µs|μs|ns|h|m|s)")

# Lower-cased unit -> bytes. Unit names are matched case-insensitively because
# there are no bit units here that case would distinguish.
_SIZE_UNITS: dict[str, int] = {
    "b": 1,
    "kb": 1000,
    "mb": 1000**2,
    "gb": 1000**3,
    "tb": 1000**4,
    "kib": 1024,
    "mib": 1024**2,
    "gib": 1024**3,
    "tib": 1024**4,
}
_SIZE_RE = re.compile(r"([0-9]+(?:\.[0-9]+)?) ?([A-Za-z]+)?")

#: ECMA-262 patterns for the JSON Schema (they accept what the parsers accept).
# Durations: each unit at most once, largest first ("1h30m", not "30m1h" or "0h0h"), as the parser.
_NUMBER = r"[0-9]+(\.[0-9]+)?"
DURATION_PATTERN = (
    rf"^(0|(?=.)({_NUMBER}h)?({_NUMBER}m)?({_NUMBER}s)?({_NUMBER}ms)?({_NUMBER}(us|µs|μs))?({_NUMBER}ns)?)$"
)
SIZE_PATTERN = r"^[0-9]+(\.[0-9]+)? ?([Bb]|[KkMmGgTt][Ii]?[Bb])?$"

_DURATION_EXPECTED = 'expected a duration like "250ms", "30s" or "5m"'
_SIZE_EXPECTED = (
    'expected a size like "512B", "16KiB" or "1MiB" (KiB = 1024 bytes, KB = 1000), or a byte count'
)


def describe_value(value: object) -> str:
    """Render a config value the way it is written in TOML, for error messages."""
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, bool):
        return "true" if value else "false"
    return repr(value)


def parse_duration(value: str) -> float:
    """Parse ``"250ms"``, ``"30s"``, ``"1m30s"``, ``"1.5s"``, ``"100us"`` into float seconds."""
    if not isinstance(value, str):
        hint = f' (write "{value}s" for seconds)' if _is_number(value) else ""
        raise ValueError(f"{_DURATION_EXPECTED}, got {describe_value(value)}{hint}")
    text = value.strip()
    if text == "0":
        return 0.0
    total = Decimal(0)
    position = 0
    last_rank = -1
    for match in _DURATION_PART.finditer(text):
        rank = _DURATION_RANK[match.group(2)]
        if match.start() != position or rank <= last_rank:
            break
        total += Decimal(match.group(1)) * _DURATION_UNITS[match.group(2)]
        position = match.end()
        last_rank = rank
    if not text or position != len(text):
        raise ValueError(f"{_DURATION_EXPECTED}, got {describe_value(value)}")
    return float(total)


def parse_size(value: str | int) -> int:
    """Parse ``"16KiB"``, ``"10KB"``, ``"512B"``, ``"1024"`` or ``1024`` into int bytes."""
    if isinstance(value, int) and not isinstance(value, bool):
        if value < 0:
            raise ValueError(f"{_SIZE_EXPECTED}, got {value} (sizes cannot be negative)")
        return value
    if not isinstance(value, str):
        raise ValueError(f"{_SIZE_EXPECTED}, got {describe_value(value)}")
    match = _SIZE_RE.fullmatch(value.strip())
    multiplier = _SIZE_UNITS.get((match.group(2) or "b").lower()) if match else None
    if match is None or multiplier is None:
        hint = ""
        if match and (match.group(2) or "").lower() in ("k", "m", "g", "t"):
            hint = f' (did you mean "{match.group(1)}{match.group(2).upper()}iB"?)'
        raise ValueError(f"{_SIZE_EXPECTED}, got {describe_value(value)}{hint}")
    amount = Decimal(match.group(1)) * multiplier
    if amount != amount.to_integral_value():
        raise ValueError(f"{_SIZE_EXPECTED}, got {describe_value(value)} (not a whole number of bytes)")
    return int(amount)


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def format_duration(seconds: float) -> str:
    """The largest unit that divides exactly: 0.25 -> "250ms", 75 -> "75s", 300 -> "5m"."""
    if seconds < 0 or not math.isfinite(seconds):
        raise ValueError(f"cannot format {seconds!r} as a duration")
    if seconds == 0:
        return "0s"
    remaining = Decimal(repr(float(seconds)))
    if remaining < 1:
        for unit in ("ms", "us", "ns"):
            scaled = remaining / _DURATION_UNITS[unit]
            if scaled >= 1:
                return f"{_plain(scaled)}{unit}"
        return f"{_plain(remaining / _DURATION_UNITS['ns'])}ns"
    for unit in ("h", "m"):
        if remaining % _DURATION_UNITS[unit] == 0:
            return f"{int(remaining // _DURATION_UNITS[unit])}{unit}"
    return f"{_plain(remaining)}s"


def format_size(size: int) -> str:
    """The largest binary unit that divides exactly: 16384 -> "16KiB", 1000 -> "1000B"."""
    if size < 0:
        raise ValueError(f"cannot format {size!r} as a size")
    for unit, factor in (("TiB", 1024**4), ("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if size and size % factor == 0:
            return f"{size // factor}{unit}"
    return f"{size}B"


def _plain(number: Decimal) -> str:
    """A Decimal without exponent or trailing zeros: Decimal("2.50") -> "2.5"."""
    return format(number.normalize(), "f")
