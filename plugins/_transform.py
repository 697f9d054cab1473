"""What request-transformer and response-transformer share: config pieces and the five operations.

Both follow Kong's transformer semantics, applied in Kong's order:

    remove   drop every field of that name
    rename   move an existing field's values to the new name (an existing field of the new
             name is replaced); nothing happens when the old name is absent
    replace  set the values only when the name is present
    add      set the values only when the name is absent
    append   add the values whether or not the name is present

Header changes go through the phase-guarded ``Headers`` API. Query changes edit the raw query
string segment by segment, so arguments the config does not name keep their exact encoding.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Annotated, NamedTuple
from urllib.parse import quote, unquote_plus

import msgspec

from gateway.plugins import Headers
from gateway.units import describe_value

__all__ = [
    "Changes",
    "HeaderNames",
    "HeaderRenames",
    "HeaderValues",
    "RequestNames",
    "RequestRenames",
    "RequestValues",
    "apply_header_changes",
    "apply_query_changes",
    "compile_changes",
]

Values = tuple[str, ...]

_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
# The engine owns message framing and the hop-by-hop fields; letting a config edit them would
# desynchronise the body from its framing (request smuggling) or break the connection.
_ENGINE_OWNED = frozenset(
    {"content-length", "transfer-encoding", "connection", "keep-alive", "upgrade", "te", "trailer"}
    | {"proxy-connection"}
)


def _doc(description: str) -> msgspec.Meta:
    return msgspec.Meta(description=description)


def _check_header_name(name: str) -> None:
    if not _TOKEN.fullmatch(name):
        raise ValueError(f"{describe_value(name)} is not a valid header name")
    if name.lower() in _ENGINE_OWNED:
        raise ValueError(f"{describe_value(name)} is managed by the gateway; a transformer cannot change it")


def _as_values(value: str | list[str]) -> Values:
    return (value,) if isinstance(value, str) else tuple(value)


def _check_header_names(field: str, names: Iterable[str]) -> None:
    for name in names:
        try:
            _check_header_name(name)
        except ValueError as exc:
            raise ValueError(f"{field}: {exc}") from None


def _check_value_lists(field: str, values: Mapping[str, str | list[str]]) -> None:
    for name, value in values.items():
        if not isinstance(value, str) and not value:
            raise ValueError(f"{field}: the list of values of {describe_value(name)} is empty")


def _check_header_values(field: str, values: Mapping[str, str | list[str]]) -> None:
    _check_header_names(field, values)
    _check_value_lists(field, values)
    for name, value in values.items():
        if any(c in item for item in _as_values(value) for c in "\r\n\0"):
            raise ValueError(f"{field}: the value of {describe_value(name)} contains CR, LF or NUL")


def _check_query_names(field: str, names: Iterable[str]) -> None:
    if any(not name for name in names):
        raise ValueError(f"{field}: a query argument name cannot be empty")


# --- config pieces -----------------------------------------------------------------------------


class HeaderNames(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    headers: Annotated[list[str], _doc("Header names.")] = []

    def __post_init__(self) -> None:
        _check_header_names("headers", self.headers)


class HeaderRenames(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    headers: Annotated[
        dict[str, str], _doc('Old header name -> new header name ({ "X-Old" = "X-New" }).')
    ] = {}

    def __post_init__(self) -> None:
        _check_header_names("headers", [*self.headers, *self.headers.values()])


class HeaderValues(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    headers: Annotated[
        dict[str, str | list[str]], _doc('Header name -> value or list of values ({ "X-Env" = "prod" }).')
    ] = {}

    def __post_init__(self) -> None:
        _check_header_values("headers", self.headers)


class RequestNames(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    headers: Annotated[list[str], _doc("Header names.")] = []
    querystring: Annotated[list[str], _doc("Query argument names.")] = []

    def __post_init__(self) -> None:
        _check_header_names("headers", self.headers)
        _check_query_names("querystring", self.querystring)


class RequestRenames(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    headers: Annotated[
        dict[str, str], _doc('Old header name -> new header name ({ "X-Old" = "X-New" }).')
    ] = {}
    querystring: Annotated[
        dict[str, str], _doc('Old query argument name -> new name ({ "q" = "query" }).')
    ] = {}

    def __post_init__(self) -> None:
        _check_header_names("headers", [*self.headers, *self.headers.values()])
        _check_query_names("querystring", [*self.querystring, *self.querystring.values()])


class RequestValues(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    headers: Annotated[
        dict[str, str | list[str]], _doc('Header name -> value or list of values ({ "X-Env" = "prod" }).')
    ] = {}
    querystring: Annotated[
        dict[str, str | list[str]], _doc('Query argument name -> value or list of values ({ "v" = "2" }).')
    ] = {}

    def __post_init__(self) -> None:
        _check_header_values("headers", self.headers)
        _check_query_names("querystring", self.querystring)
        _check_value_lists("querystring", self.querystring)


# --- compiled operations -----------------------------------------------------------------------


class Changes(NamedTuple):
    """One kind of target's changes, compiled once from the config, in Kong's order."""

    remove: tuple[str, ...]
    rename: tuple[tuple[str, str], ...]
    replace: tuple[tuple[str, Values], ...]
    add: tuple[tuple[str, Values], ...]
    append: tuple[tuple[str, Values], ...]

    def __bool__(self) -> bool:
        return bool(self.remove or self.rename or self.replace or self.add or self.append)


def compile_changes(
    remove: Iterable[str],
    rename: Mapping[str, str],
    replace: Mapping[str, str | list[str]],
    add: Mapping[str, str | list[str]],
    append: Mapping[str, str | list[str]],
) -> Changes:
    return Changes(
        remove=tuple(remove),
        rename=tuple(rename.items()),
        replace=tuple((name, _as_values(value)) for name, value in replace.items()),
        add=tuple((name, _as_values(value)) for name, value in add.items()),
        append=tuple((name, _as_values(value)) for name, value in append.items()),
    )


def _set_values(headers: Headers, name: str, values: Values) -> None:
    headers.set(name, values[0])
    for value in values[1:]:
        headers.add(name, value)


def apply_header_changes(headers: Headers, changes: Changes) -> None:
    for name in changes.remove:
        headers.remove(name)
    for old, new in changes.rename:
        if old in headers and old.lower() != new.lower():
            headers.remove(new)
            headers.rename(old, new)
    for name, values in changes.replace:
        if name in headers:
            _set_values(headers, name, values)
    for name, values in changes.add:
        if name not in headers:
            _set_values(headers, name, values)
    for name, values in changes.append:
        for value in values:
            headers.add(name, value)


def _encode(text: str) -> str:
    return quote(text, safe="")


def _argument_name(segment: str) -> str:
    return unquote_plus(segment.partition("=")[0])


def apply_query_changes(query: str, changes: Changes) -> str:
    """The query string with the changes applied; untouched arguments keep their raw form."""
    segments = query.split("&") if query else []
    names = [_argument_name(segment) for segment in segments]

    def present(name: str) -> bool:
        return name in names

    def drop(name: str) -> None:
        kept = [(n, s) for n, s in zip(names, segments, strict=True) if n != name]
        names[:] = [n for n, _ in kept]
        segments[:] = [s for _, s in kept]

    def encoded(name: str, values: Values) -> list[str]:
        return [f"{_encode(name)}={_encode(value)}" for value in values]

    for name in changes.remove:
        drop(name)
    for old, new in changes.rename:
        if present(old) and old != new:
            drop(new)
            for index, name in enumerate(names):
                if name == old:
                    _, equals, raw_value = segments[index].partition("=")
                    segments[index] = f"{_encode(new)}{equals}{raw_value}"
                    names[index] = new
    for name, values in changes.replace:
        if present(name):
            position = names.index(name)
            drop(name)
            segments[position:position] = encoded(name, values)
            names[position:position] = [name] * len(values)
    for name, values in changes.add:
        if not present(name):
            segments.extend(encoded(name, values))
            names.extend([name] * len(values))
    for name, values in changes.append:
        segments.extend(encoded(name, values))
        names.extend([name] * len(values))
    return "&".join(segments)
