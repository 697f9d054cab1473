"""Turn a decoded TOML document into msgspec Structs, reporting every problem at once.

msgspec stops at the first validation error. An operator fixing a config file
wants them all, so this walks the Struct definitions field by field: tables and
arrays are walked here, scalar leaves are converted by msgspec (so Meta
constraints still apply), and each problem is recorded with its key path
(``routes[2].upstream``) instead of aborting.

It also owns the two things TOML cannot express: human units (``Duration``,
``Size`` markers in ``Annotated`` metadata, stored as plain float/int) and
``${ENV}`` interpolation in string values.
"""

from __future__ import annotations

import difflib
import re
import types
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import msgspec

from .units import describe_value, parse_duration, parse_size

__all__ = [
    "INVALID",
    "LOADER_FILLED",
    "Duration",
    "Issues",
    "Size",
    "StructDecoder",
    "UnitMarker",
    "close_match_hint",
    "interpolate_env",
    "key_path",
]


@dataclass(frozen=True)
class UnitMarker:
    """Annotated metadata: the TOML value is a human unit string parsed by `parse`."""

    kind: str
    parse: Callable[[Any], Any]


class _LoaderFilled:
    """Annotated metadata: set by the loader, never read from TOML nor shown in the schema."""

    def __repr__(self) -> str:
        return "LOADER_FILLED"


DURATION = UnitMarker("duration", parse_duration)
SIZE = UnitMarker("size", parse_size)
LOADER_FILLED = _LoaderFilled()

#: A duration written as "250ms"/"30s"; the attribute holds float seconds.
Duration = Annotated[float, DURATION]
#: A size written as "16KiB" or a byte count; the attribute holds int bytes.
Size = Annotated[int, SIZE]


class _Invalid:
    def __repr__(self) -> str:
        return "INVALID"


#: Returned in place of a value that could not be decoded (its problem is already recorded).
INVALID: Any = _Invalid()


@dataclass
class Issues:
    """Problems found so far, as (key path, message) pairs in the order found."""

    items: list[tuple[str, str]] = field(default_factory=list)

    def add(self, path: str, message: str) -> None:
        self.items.append((path, message))

    def __len__(self) -> int:
        return len(self.items)

    def lines(self, source: str) -> list[str]:
        return [
            f"{source}: {path}: {message}" if path else f"{source}: {message}" for path, message in self.items
        ]


_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")


def key_path(parent: str, key: str | int) -> str:
    """Extend a key path the way it would be written in TOML: ``a.b``, ``a[0]``, ``a."b c"``."""
    if isinstance(key, int):
        return f"{parent}[{key}]"
    segment = key if _BARE_KEY.fullmatch(key) else describe_value(key)
    return f"{parent}.{segment}" if parent else segment


def close_match_hint(word: str, candidates: list[str]) -> str:
    """`` (did you mean "x"?)`` when a candidate is close to word, else ""."""
    matches = difflib.get_close_matches(word, candidates, n=1, cutoff=0.6)
    return f' (did you mean "{matches[0]}"?)' if matches else ""


# --- environment interpolation -------------------------------------------------------------------

_REFERENCE = re.compile(r"\$\$\{|\$\{([^}]*)\}|\$\{")
_VARIABLE = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)(?::-(.*))?", re.DOTALL)


def interpolate_env(value: str, env: Mapping[str, str], path: str, issues: Issues) -> str:
    """Substitute ``${VAR}`` and ``${VAR:-default}`` (default also when VAR is empty) in one string.

    ``$${`` stands for a literal ``${``. A reference that cannot be resolved is
    reported at `path` and left as written.
    """

    def replace(match: re.Match[str]) -> str:
        if match.group(0) == "$${":
            return "${"
        inner = match.group(1)
        variable = _VARIABLE.fullmatch(inner) if inner is not None else None
        if variable is None:
            issues.add(
                path,
                f"invalid environment reference {describe_value(match.group(0))}: expected ${{NAME}} "
                "or ${NAME:-default} (write $${ for a literal ${)",
            )
            return match.group(0)
        name, default = variable.group(1), variable.group(2)
        found = env.get(name)
        if found is None or (found == "" and default is not None):
            if default is None:
                issues.add(
                    path,
                    f'environment variable "{name}" is not set '
                    f"(write ${{{name}:-default}} to give a default)",
                )
                return match.group(0)
            return default
        return found

    return _REFERENCE.sub(replace, value)


# --- Struct decoding -----------------------------------------------------------------------------

#: Called with a Struct built from the decoded fields, its key path, the issue list, the
#: names of fields that failed to decode (left at their defaults; checks involving them
#: should be skipped) and the names of fields the file set (so "only with X" rules can
#: refuse a key even when it repeats its default). Returns the Struct, possibly normalised.
Validator = Callable[[Any, str, Issues, frozenset[str], frozenset[str]], Any]


def _unwrap(tp: Any) -> tuple[Any, tuple[Any, ...]]:
    """Split ``Annotated[T, *metadata]`` into T and the metadata."""
    if get_origin(tp) is Annotated:
        return tp.__origin__, tp.__metadata__
    return tp, ()


def _is_struct(tp: Any) -> bool:
    return isinstance(tp, type) and issubclass(tp, msgspec.Struct)


def _without_none(tp: Any) -> Any:
    """``X | None`` -> X (TOML has no null, so the None branch is only ever the default)."""
    if get_origin(tp) in (Union, types.UnionType):
        rest = [arg for arg in get_args(tp) if arg is not type(None)]
        if len(rest) == 1:
            return rest[0]
    return tp


_NOUNS: dict[Any, str] = {str: "a string", int: "an integer", float: "a number", bool: "true or false"}


def _expected(tp: Any) -> str:
    """Describe what a scalar field accepts: ``an integer from 1 to 256``, ``one of "a", "b"``."""
    base, metadata = _unwrap(tp)
    base = _without_none(base)
    if get_origin(base) is Literal:
        return "one of " + ", ".join(describe_value(choice) for choice in get_args(base))
    noun = _NOUNS.get(base, getattr(base, "__name__", str(base)))
    low = next((m.ge for m in metadata if isinstance(m, msgspec.Meta) and m.ge is not None), None)
    high = next((m.le for m in metadata if isinstance(m, msgspec.Meta) and m.le is not None), None)
    if low is not None and high is not None:
        return f"{noun} from {low} to {high}"
    if low is not None:
        return f"{noun} >= {low}"
    if high is not None:
        return f"{noun} <= {high}"
    return noun


class StructDecoder:
    """Decode TOML data into Structs; `validators` run on each Struct built (and may normalise it)."""

    def __init__(self, issues: Issues, validators: Mapping[type, Validator], env: Mapping[str, str]) -> None:
        self._issues = issues
        self._validators = validators
        self._env = env

    def decode(self, tp: Any, raw: Any, path: str) -> Any:
        if _without_none(_unwrap(tp)[0]) is Any:
            return self._interpolate_tree(raw, path)
        # An environment variable carries no TOML type, so "${WORKERS}" may become an int.
        strict = True
        if isinstance(raw, str) and "${" in raw:
            errors_before = len(self._issues)
            raw = interpolate_env(raw, self._env, path, self._issues)
            if len(self._issues) != errors_before:
                return INVALID
            strict = False
        base, metadata = _unwrap(tp)
        unit = next((m for m in metadata if isinstance(m, UnitMarker)), None)
        if unit is not None:
            try:
                return unit.parse(raw)
            except ValueError as exc:
                self._issues.add(path, str(exc))
                return INVALID
        base = _without_none(base)
        if _is_struct(base):
            return self._decode_struct(base, raw, path)
        origin = get_origin(base)
        if origin is list:
            (item_type,) = get_args(base)
            if not isinstance(raw, list):
                return self._mismatch(path, "an array", raw)
            items = [self.decode(item_type, item, key_path(path, i)) for i, item in enumerate(raw)]
            return INVALID if any(item is INVALID for item in items) else items
        if origin is dict:
            _, value_type = get_args(base)
            if not isinstance(raw, dict):
                return self._mismatch(path, "a table", raw)
            values = {key: self.decode(value_type, item, key_path(path, key)) for key, item in raw.items()}
            return INVALID if any(value is INVALID for value in values.values()) else values
        try:
            return msgspec.convert(raw, tp, strict=strict)
        except msgspec.ValidationError:
            return self._mismatch(path, _expected(tp), raw)

    def _interpolate_tree(self, raw: Any, path: str) -> Any:
        """An untyped value (a plugin's config table): substitute ${ENV} in every string inside it.

        Its shape is checked later by whoever owns the type (the plugin's Config struct).
        """
        if isinstance(raw, str):
            if "${" not in raw:
                return raw
            errors_before = len(self._issues)
            value = interpolate_env(raw, self._env, path, self._issues)
            return INVALID if len(self._issues) != errors_before else value
        if isinstance(raw, list):
            items = [self._interpolate_tree(item, key_path(path, i)) for i, item in enumerate(raw)]
            return INVALID if any(item is INVALID for item in items) else items
        if isinstance(raw, dict):
            values = {key: self._interpolate_tree(item, key_path(path, key)) for key, item in raw.items()}
            return INVALID if any(value is INVALID for value in values.values()) else values
        return raw

    def _mismatch(self, path: str, expected: str, raw: Any) -> Any:
        self._issues.add(path, f"expected {expected}, got {describe_value(raw)}")
        return INVALID

    def _decode_struct(self, cls: type[msgspec.Struct], raw: Any, path: str) -> Any:
        if not isinstance(raw, dict):
            return self._mismatch(path, "a table", raw)
        fields = [f for f in msgspec.structs.fields(cls) if LOADER_FILLED not in _unwrap(f.type)[1]]
        known = {f.encode_name: f for f in fields}
        valid = True
        for key in raw:
            if key not in known:
                self._issues.add(key_path(path, key), "unknown key" + close_match_hint(key, list(known)))
                valid = False
        values: dict[str, Any] = {}
        broken: set[str] = set()
        for info in fields:
            if info.encode_name not in raw:
                if info.required:
                    self._issues.add(key_path(path, info.encode_name), "missing required key")
                    broken.add(info.name)
                continue
            value = self.decode(info.type, raw[info.encode_name], key_path(path, info.encode_name))
            if value is INVALID:
                broken.add(info.name)
            else:
                values[info.name] = value
        if any(info.required and info.name not in values for info in fields):
            return INVALID
        # Still run the validator on a Struct with defaults for the broken fields: one
        # pass over the file should report every problem, not only the first per table.
        built = cls(**values)
        validator = self._validators.get(cls)
        if validator is not None:
            errors_before = len(self._issues)
            given = frozenset(info.name for info in fields if info.encode_name in raw)
            built = validator(built, path, self._issues, frozenset(broken), given)
            valid = valid and len(self._issues) == errors_before
        return built if valid and not broken else INVALID
