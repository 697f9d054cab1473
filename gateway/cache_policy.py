"""RFC 9111 rules for a SHARED cache: may a response be stored, for how long, may a request be served.

Deliberate choices (what a gateway operator expects; nginx and Kong do the same)
- Only the configured methods (GET and HEAD at most) and statuses are stored. The default status
  list is RFC 9110 §15.1's heuristically cacheable codes minus 206 (partial content is not
  stored: the store keeps whole bodies only).
- Responses with Set-Cookie are never stored: a cookie is meant for one client, and replaying it to
  others is the classic shared-cache leak, even when the origin forgot `private`.
- No heuristic freshness (§4.2.2). A response without explicit freshness (s-maxage, max-age,
  Expires) gets the configured default ttl; any explicit freshness wins, including max-age=0,
  which means "do not store".
- No revalidation: responses with `no-cache` (and with a qualified `private="..."`) are not
  stored, and a request with `no-cache`, `max-age=0` or `Pragma: no-cache` is a miss whose
  response refreshes the store.
- `must-understand` (§5.2.2.3) overrides `no-store` when the status code is one this cache
  understands, and prevents storing when it is not.
- Invalid or conflicting freshness directives make a response stale on arrival (§4.2.1, §1.2.2),
  so it is not stored; an invalid Expires (like "0") means "already expired" (§5.3).

Header arguments are (name, value) pairs as received (case-insensitive names, repeated fields
allowed), such as a plugin Request's `headers`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC
from email.utils import parsedate_to_datetime

__all__ = [
    "DEFAULT_METHODS",
    "DEFAULT_STATUSES",
    "MAX_DELTA_SECONDS",
    "RequestRule",
    "StoreDecision",
    "corrected_initial_age",
    "current_age",
    "decide_response",
    "freshness_lifetime",
    "parse_cache_control",
    "parse_http_date",
    "request_rule",
    "vary_names",
]

HeaderPairs = Iterable[tuple[str, str]]

DEFAULT_METHODS: tuple[str, ...] = ("GET", "HEAD")
# RFC 9110 §15.1 "heuristically cacheable" status codes, without 206.
DEFAULT_STATUSES: tuple[int, ...] = (200, 203, 204, 300, 301, 308, 404, 405, 410, 414, 501)
# RFC 9111 §1.2.2: a delta-seconds too large to represent is taken as 2^31.
MAX_DELTA_SECONDS = 2**31
# Status codes whose semantics this cache knows (for must-understand, §5.2.2.3).
UNDERSTOOD_STATUSES = frozenset(
    {200, 203, 204, 300, 301, 302, 303, 307, 308, 400, 403, 404, 405, 410, 414, 451, 500, 501, 502, 503, 504}
)

_INVALID = "\x00invalid"  # a directive value that failed to parse or conflicted with a repeat


def parse_cache_control(values: Iterable[str]) -> dict[str, str | None]:
    """Directives of one or more Cache-Control field values: lowercased name -> value or None.

    Quoted-string values are unquoted. A directive repeated with a different value maps to an
    invalid marker, which freshness_lifetime treats as stale.
    """
    directives: dict[str, str | None] = {}
    for value in values:
        for name, argument in _split_directives(value):
            if name in directives and directives[name] != argument:
                directives[name] = _INVALID
            else:
                directives[name] = argument
    return directives


def _split_directives(value: str) -> list[tuple[str, str | None]]:
    # Commas inside a quoted-string (private="a, b") do not separate directives.
    found: list[tuple[str, str | None]] = []
    i = 0
    n = len(value)
    while i < n:
        while i < n and value[i] in " \t,":
            i += 1
        start = i
        while i < n and value[i] not in "=,":
            i += 1
        name = value[start:i].strip().lower()
        argument: str | None = None
        if i < n and value[i] == "=":
            i += 1
            while i < n and value[i] in " \t":
                i += 1
            if i < n and value[i] == '"':
                i += 1
                chars: list[str] = []
                while i < n and value[i] != '"':
                    if value[i] == "\\" and i + 1 < n:
                        i += 1
                    chars.append(value[i])
                    i += 1
                i += 1  # closing quote
                argument = "".join(chars)
                while i < n and value[i] != ",":
                    i += 1
            else:
                start = i
                while i < n and value[i] != ",":
                    i += 1
                argument = value[start:i].strip()
        if name:
            found.append((name, argument))
    return found


def _delta_seconds(argument: str | None) -> int | None:
    """A delta-seconds value (§1.2.2), or None when absent or invalid."""
    if argument is None or argument is _INVALID or not argument.isdigit() or not argument.isascii():
        return None
    return min(int(argument), MAX_DELTA_SECONDS)


def parse_http_date(value: str | None) -> float | None:
    """An HTTP-date (IMF-fixdate, RFC 850 or asctime form) as Unix time; None if absent or invalid."""
    if value is None:
        return None
    try:
        parsed = parsedate_to_datetime(value.strip())
    except (TypeError, ValueError, IndexError):
        return None
    if parsed.tzinfo is None:
        # The asctime form carries no zone; HTTP-dates are always UTC (RFC 9110 §5.6.7).
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.timestamp()


def _get(headers: list[tuple[str, str]], name: str) -> str | None:
    for key, value in headers:
        if key.lower() == name:
            return value
    return None


def _get_all(headers: list[tuple[str, str]], name: str) -> list[str]:
    return [value for key, value in headers if key.lower() == name]


def freshness_lifetime(
    directives: dict[str, str | None], response_headers: HeaderPairs, response_time: float
) -> float | None:
    """Explicit freshness lifetime for a shared cache (§4.2.1), None when the response gives none.

    s-maxage, then max-age, then Expires minus Date. A present but invalid value yields 0 (stale).
    """
    for directive in ("s-maxage", "max-age"):
        if directive in directives:
            seconds = _delta_seconds(directives[directive])
            return 0.0 if seconds is None else float(seconds)
    headers = list(response_headers)
    expires_values = _get_all(headers, "expires")
    if not expires_values:
        return None
    expires = parse_http_date(expires_values[0]) if len(expires_values) == 1 else None
    if expires is None:
        return 0.0  # §5.3: an invalid Expires (e.g. "0") is a time in the past
    date = parse_http_date(_get(headers, "date"))
    if date is None:
        date = response_time
    return max(0.0, expires - date)


def corrected_initial_age(
    age_value: str | None, date_value: str | None, request_time: float, response_time: float
) -> float:
    """RFC 9111 §4.2.3: how old the response already was when it arrived."""
    date = parse_http_date(date_value)
    apparent_age = 0.0 if date is None else max(0.0, response_time - date)
    age = _delta_seconds(age_value.strip()) if age_value is not None else None
    response_delay = max(0.0, response_time - request_time)
    corrected_age_value = (age or 0) + response_delay
    return max(apparent_age, corrected_age_value)


def current_age(initial_age: float, stored_at: float, now: float) -> int:
    """The Age header value at `now` (whole seconds)."""
    return max(0, int(initial_age + (now - stored_at)))


def vary_names(response_headers: HeaderPairs) -> tuple[str, ...] | None:
    """Lowercased, de-duplicated, sorted field names of the Vary header; None for `Vary: *`."""
    names: set[str] = set()
    for key, value in response_headers:
        if key.lower() != "vary":
            continue
        for token in value.split(","):
            name = token.strip().lower()
            if name == "*":
                return None
            if name:
                names.add(name)
    return tuple(sorted(names))


@dataclass(frozen=True, slots=True)
class RequestRule:
    """What the cache may do for one request."""

    lookup: bool  # may be answered from the store
    store: bool  # its response may be stored (if the response allows it)
    reason: str  # why lookup or store is refused ("" when both are allowed)
    max_age: float | None = None  # request max-age: only entries at most this old
    min_fresh: float = 0.0  # entries must stay fresh at least this much longer
    only_if_cached: bool = False  # a miss is answered 504 instead of going upstream

    def accepts(self, age: float, ttl: float) -> bool:
        """Whether a stored entry of this age and freshness lifetime may answer the request."""
        if self.max_age is not None and age > self.max_age:
            return False
        return age + self.min_fresh < ttl


def request_rule(
    method: str, request_headers: HeaderPairs, methods: Iterable[str] = DEFAULT_METHODS
) -> RequestRule:
    """RFC 9111 §5.2.1 request directives, for a cache that does not revalidate."""
    if method not in methods or method not in DEFAULT_METHODS:
        return RequestRule(False, False, f"method {method} is not cached")
    headers = list(request_headers)
    cache_control = _get_all(headers, "cache-control")
    directives = parse_cache_control(cache_control)
    lookup = True
    store = True
    reason = ""
    if "no-store" in directives:
        # §5.2.1.5: the response must not be stored; a stored response may still answer.
        store = False
        reason = "request no-store"
    max_age: float | None = None
    if "max-age" in directives:
        seconds = _delta_seconds(directives["max-age"])
        max_age = 0.0 if seconds is None else float(seconds)
    pragma_no_cache = not cache_control and any(
        "no-cache" in value.lower() for value in _get_all(headers, "pragma")
    )
    if "no-cache" in directives or max_age == 0.0 or pragma_no_cache:
        lookup = False
        reason = reason or "request asks for a fresh response"
    min_fresh = float(_delta_seconds(directives.get("min-fresh")) or 0)
    return RequestRule(lookup, store, reason, max_age, min_fresh, "only-if-cached" in directives)


@dataclass(frozen=True, slots=True)
class StoreDecision:
    """Whether a response may be stored, for how long and keyed by which request fields."""

    storable: bool
    reason: str  # why not ("" when storable)
    ttl: float = 0.0  # freshness lifetime in seconds
    initial_age: float = 0.0  # corrected initial age (§4.2.3), counted into Age when served
    vary: tuple[str, ...] = ()  # lowercased request field names the response varies on
    explicit: bool = False  # ttl came from the response (not the default ttl)


def _refuse(reason: str) -> StoreDecision:
    return StoreDecision(False, reason)


def decide_response(
    method: str,
    request_headers: HeaderPairs,
    status: int,
    response_headers: HeaderPairs,
    *,
    default_ttl: float,
    statuses: Iterable[int] = DEFAULT_STATUSES,
    methods: Iterable[str] = DEFAULT_METHODS,
    request_time: float,
    response_time: float,
) -> StoreDecision:
    """RFC 9111 §3 (storing responses) for a shared cache, with the choices in the module docstring."""
    if method not in methods or method not in DEFAULT_METHODS:
        return _refuse(f"method {method} is not cached")
    request = list(request_headers)
    response = list(response_headers)
    request_directives = parse_cache_control(_get_all(request, "cache-control"))
    if "no-store" in request_directives:
        return _refuse("request no-store")
    if status < 200:
        return _refuse("interim response")
    if status not in statuses:
        return _refuse(f"status {status} is not cached")
    directives = parse_cache_control(_get_all(response, "cache-control"))
    if "must-understand" in directives:
        if status not in UNDERSTOOD_STATUSES:
            return _refuse(f"must-understand with status {status}")
    elif "no-store" in directives:
        return _refuse("response no-store")
    if "private" in directives:
        return _refuse("response private")
    if "no-cache" in directives:
        return _refuse("response no-cache (revalidation is not implemented)")
    if _get(request, "authorization") is not None and not (
        "public" in directives or "s-maxage" in directives or "must-revalidate" in directives
    ):
        return _refuse("request has Authorization")
    if _get(response, "set-cookie") is not None:
        return _refuse("response sets a cookie")
    names = vary_names(response)
    if names is None:
        return _refuse("Vary: *")
    explicit = freshness_lifetime(directives, response, response_time)
    ttl = default_ttl if explicit is None else explicit
    initial_age = corrected_initial_age(
        _get(response, "age"), _get(response, "date"), request_time, response_time
    )
    if ttl <= 0:
        return _refuse("no freshness lifetime")
    if initial_age >= ttl:
        return _refuse("stale on arrival")
    return StoreDecision(True, "", ttl, initial_age, names, explicit is not None)
