"""cors: Cross-Origin Resource Sharing, with preflights answered at the edge.

Follows Kong's cors plugin:

- A preflight (``OPTIONS`` with ``Origin`` and ``Access-Control-Request-Method``) is answered
  in the access phase with 204 and the ``Access-Control-*`` headers; it never reaches the
  upstream (unless ``preflight_continue``). Priority 2000 puts it before the auth plugins, as
  browsers send preflights without credentials.
- A preflight from an origin that is not allowed is not refused with 403 (Kong does not
  either): it is answered without ``Access-Control-Allow-Origin``, and the browser then
  blocks the actual request. Unlike Kong, the other ``Access-Control-*`` headers are left
  out too, since they mean nothing without it and would describe the policy to anyone.
- Actual requests get ``Access-Control-Allow-Origin`` (and ``-Credentials``,
  ``-Expose-Headers``) in the response phase; an upstream's own copy is replaced or, for an
  origin that is not allowed, removed. ``Vary: Origin`` is added whenever the answer depends
  on the origin, so a shared cache keeps one copy per origin.

Origins are matched after normalisation (lower-case scheme and host, default port dropped):

    "*"                          any origin (also an empty list)
    "https://app.example.com"    exactly that origin
    "https://*.example.com"      "*" stands for one or more DNS labels (or a port's digits)
    "^https://(a|b)\\.example\\.com$"   a regular expression, when the entry holds any of
                                 ^ $ \\ ( ) [ ] { } | + ? ; matched in full, against the
                                 host alone when the entry has no ":" (as in Kong)
"""

from __future__ import annotations

import re
from typing import Annotated

import msgspec

from gateway.plugins import Plugin, Request, Response, ResponseHead
from gateway.units import describe_value, parse_duration

__all__ = ["DEFAULT_METHODS", "PLUGIN", "Cors", "OriginMatcher", "normalize_origin"]

_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_REGEX_CHARS = frozenset("^$\\()[]{}|+?")
_IPV6_ORIGIN = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://\[[0-9A-Fa-f:.]+\](:[0-9]+)?")
_LABELS = r"[a-z0-9-]+(?:\.[a-z0-9-]+)*"
_DEFAULT_PORTS = {"http": "80", "https": "443"}
_MATCH_CACHE_SIZE = 1024
#: Kong's default list without TRACE and CONNECT, which the gateway does not proxy.
DEFAULT_METHODS = ("GET", "HEAD", "PUT", "PATCH", "POST", "DELETE", "OPTIONS")


def _doc(description: str) -> msgspec.Meta:
    return msgspec.Meta(description=description)


def _split_origin(origin: str) -> tuple[str, str, str] | None:
    """("https", "app.example.com", "8443") of an origin; None when it has no scheme://host."""
    scheme, separator, authority = origin.partition("://")
    if not separator or not scheme or not authority or "/" in authority:
        return None
    if authority.startswith("["):  # an IPv6 literal: "[::1]:8080"
        bracket = authority.find("]")
        if bracket < 0:
            return None
        host, port = authority[: bracket + 1], authority[bracket + 1 :].removeprefix(":")
    else:
        host, _, port = authority.partition(":")
    return scheme.lower(), host.lower(), port


def normalize_origin(origin: str) -> str:
    """The form origins are compared in: "HTTPS://App.Example.com:443" -> "https://app.example.com"."""
    parts = _split_origin(origin.strip())
    if parts is None:
        return origin.strip().lower()
    scheme, host, port = parts
    if port and _DEFAULT_PORTS.get(scheme) != port:
        return f"{scheme}://{host}:{port}"
    return f"{scheme}://{host}"


def _is_regex(entry: str) -> bool:
    # Brackets also surround an IPv6 host ("http://[::1]:8080"), which is an exact origin.
    return any(c in _REGEX_CHARS for c in entry) and not _IPV6_ORIGIN.fullmatch(entry)


def _glob(entry: str) -> re.Pattern[str]:
    return re.compile(_LABELS.join(re.escape(part) for part in normalize_origin(entry).split("*")))


class OriginMatcher:
    """Decides whether a request's Origin is allowed; built once per plugin instance."""

    def __init__(self, entries: list[str]) -> None:
        self.allow_all = not entries or "*" in entries
        self._exact: frozenset[str] = frozenset(
            normalize_origin(e) for e in entries if e != "*" and "*" not in e and not _is_regex(e)
        )
        # (pattern, matches the host alone)
        self._patterns: list[tuple[re.Pattern[str], bool]] = []
        for entry in entries:
            if _is_regex(entry):
                self._patterns.append((re.compile(entry, re.IGNORECASE), ":" not in entry))
            elif "*" in entry and entry != "*":
                self._patterns.append((_glob(entry), False))
        self._cache: dict[str, bool] = {}

    def allows(self, origin: str) -> bool:
        if self.allow_all:
            return True
        known = self._cache.get(origin)
        if known is None:
            known = self._decide(origin)
            if len(self._cache) >= _MATCH_CACHE_SIZE:
                self._cache.clear()  # many distinct origins: a bounded memo, not an LRU
            self._cache[origin] = known
        return known

    def _decide(self, origin: str) -> bool:
        normalized = normalize_origin(origin)
        if normalized in self._exact:
            return True
        parts = _split_origin(normalized)
        host = parts[1] if parts is not None else normalized
        return any(
            pattern.fullmatch(host if by_host else normalized) is not None
            for pattern, by_host in self._patterns
        )


class CorsConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    origins: Annotated[
        list[str],
        _doc(
            'Allowed origins: "*" (any; also an empty list), exact ("https://app.example.com"), '
            'wildcard ("https://*.example.com") or a regular expression.'
        ),
    ] = []
    methods: Annotated[list[str], _doc("Methods listed in Access-Control-Allow-Methods of preflights.")] = (
        msgspec.field(default_factory=lambda: list(DEFAULT_METHODS))
    )
    headers: Annotated[
        list[str],
        _doc(
            "Request headers listed in Access-Control-Allow-Headers of preflights; empty = echo the "
            "preflight's Access-Control-Request-Headers."
        ),
    ] = []
    exposed_headers: Annotated[
        list[str], _doc("Response headers listed in Access-Control-Expose-Headers (readable by scripts).")
    ] = []
    credentials: Annotated[
        bool,
        _doc(
            "Send Access-Control-Allow-Credentials: true; with any-origin, the request's origin is "
            'echoed instead of "*" (browsers refuse "*" with credentials).'
        ),
    ] = False
    max_age: Annotated[
        int | str | None,
        _doc('How long browsers may cache a preflight: seconds or a duration ("10m"); unset = not sent.'),
    ] = None
    preflight_continue: Annotated[
        bool, _doc("Proxy preflights to the upstream instead of answering them at the edge.")
    ] = False

    def __post_init__(self) -> None:
        for key, names in (("methods", self.methods), ("headers", self.headers)):
            for name in names:
                if not _TOKEN.fullmatch(name):
                    raise ValueError(f"{key}: {describe_value(name)} is not a valid token")
        for name in self.exposed_headers:
            if not _TOKEN.fullmatch(name):
                raise ValueError(f"exposed_headers: {describe_value(name)} is not a valid header name")
        for index, entry in enumerate(self.origins):
            if _is_regex(entry):
                try:
                    re.compile(entry)
                except re.error as exc:
                    problem = f"bad regular expression {describe_value(entry)}: {exc}"
                    raise ValueError(f"origins[{index}]: {problem}") from None
            elif any(c in entry for c in " \t\r\n,"):
                problem = f"{describe_value(entry)} is not an origin (write one per entry)"
                raise ValueError(f"origins[{index}]: {problem}")
        if self.max_age is not None:
            _max_age_seconds(self.max_age)


def _max_age_seconds(value: int | str) -> int:
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"max_age: expected seconds >= 0, got {value}")
        return value
    try:
        return int(parse_duration(value))
    except ValueError as exc:
        raise ValueError(f"max_age: {exc}") from None


def _varies_by_origin(response: ResponseHead) -> bool:
    for value in response.headers.get_all("Vary"):
        for token in value.split(","):
            if token.strip().lower() in ("origin", "*"):
                return True
    return False


class Cors(Plugin):
    name = "cors"
    version = "1.0.0"
    priority = 2000  # Kong's cors: before authentication, which preflights never carry
    Config = CorsConfig

    _PREFLIGHT_SEEN = "cors.preflight"

    def __init__(self, config: CorsConfig) -> None:
        super().__init__(config)
        self.origins = OriginMatcher(config.origins)
        # With credentials, an any-origin policy echoes the origin, so the answer depends on it too.
        self._varies = not self.origins.allow_all or config.credentials
        self._allow_methods = ",".join(config.methods)
        self._allow_headers = ",".join(config.headers) if config.headers else None
        self._expose_headers = ",".join(config.exposed_headers) if config.exposed_headers else None
        self._max_age = None if config.max_age is None else str(_max_age_seconds(config.max_age))

    def _allow_origin(self, origin: str) -> str:
        if self.origins.allow_all and not self.config.credentials:
            return "*"
        return origin

    def access(self, request: Request) -> Response | None:
        if request.method != "OPTIONS":
            return None
        origin = request.headers.get("Origin")
        if origin is None or request.headers.get("Access-Control-Request-Method") is None:
            return None  # a plain OPTIONS request, not a preflight
        request.ctx[self._PREFLIGHT_SEEN] = True
        if self.config.preflight_continue:
            return None
        headers: list[tuple[str, str]] = []
        if self._varies:
            headers.append(("Vary", "Origin"))
        if self.origins.allows(origin):
            headers.append(("Access-Control-Allow-Origin", self._allow_origin(origin)))
            if self.config.credentials:
                headers.append(("Access-Control-Allow-Credentials", "true"))
            headers.append(("Access-Control-Allow-Methods", self._allow_methods))
            allow_headers = self._allow_headers or request.headers.get("Access-Control-Request-Headers")
            if allow_headers:
                headers.append(("Access-Control-Allow-Headers", allow_headers))
            if self._max_age is not None:
                headers.append(("Access-Control-Max-Age", self._max_age))
        return Response(204, b"", headers)

    def response(self, request: Request, response: ResponseHead) -> None:
        if request.ctx.get(self._PREFLIGHT_SEEN):
            return  # answered above, or delegated to the upstream with preflight_continue
        if self._varies and not _varies_by_origin(response):
            response.headers.add("Vary", "Origin")
        origin = request.headers.get("Origin")
        if origin is None:
            return
        if not self.origins.allows(origin):
            response.headers.remove("Access-Control-Allow-Origin")
            response.headers.remove("Access-Control-Allow-Credentials")
            return
        response.headers.set("Access-Control-Allow-Origin", self._allow_origin(origin))
        if self.config.credentials:
            response.headers.set("Access-Control-Allow-Credentials", "true")
        if self._expose_headers is not None:
            response.headers.set("Access-Control-Expose-Headers", self._expose_headers)


PLUGIN = Cors
