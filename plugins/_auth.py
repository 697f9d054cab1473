"""Pieces the auth plugins share: challenges, config checks, credentials in queries and cookies."""

from __future__ import annotations

from urllib.parse import unquote_plus, unquote_to_bytes

from gateway.plugins import Response

__all__ = [
    "header_name_problem",
    "realm_problem",
    "take_cookie",
    "take_query_param",
    "unauthorized",
]

_TOKEN_CHARS = frozenset("!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")


def header_name_problem(name: str) -> str | None:
    if not name or any(c not in _TOKEN_CHARS for c in name):
        return f"{name!r} is not a valid header name"
    return None


def realm_problem(realm: str) -> str | None:
    # The realm is written inside a quoted-string of WWW-Authenticate.
    if not realm or any(c in realm for c in '"\\') or any(ord(c) < 0x20 or ord(c) > 0x7E for c in realm):
        return "the realm must be non-empty printable ASCII without quotes or backslashes"
    return None


def unauthorized(challenge: str, message: str) -> Response:
    """401 with the scheme's challenge, in the gateway's error shape."""
    return Response.error(401, "unauthorized", message, [("WWW-Authenticate", challenge)])


def take_query_param(query: str, names: frozenset[str]) -> tuple[bytes | None, str]:
    """The first value of any parameter in `names` (percent-decoded bytes) and the query without them.

    Other parameters are kept exactly as the client wrote them.
    """
    found: bytes | None = None
    kept: list[str] = []
    for part in query.split("&"):
        raw_name, _, raw_value = part.partition("=")
        if unquote_plus(raw_name) in names:
            if found is None:
                found = _decode_query_value(raw_value)
            continue
        kept.append(part)
    return found, "&".join(kept)


def _decode_query_value(raw: str) -> bytes:
    # The engine decodes wire bytes as latin-1; encoding back gives those bytes.
    try:
        data = raw.replace("+", " ").encode("latin-1")
    except UnicodeEncodeError:
        data = raw.replace("+", " ").encode("utf-8")
    return unquote_to_bytes(data)


def take_cookie(cookie_header: str, names: frozenset[str]) -> tuple[str | None, str]:
    """The first cookie named in `names` and the Cookie header value without those cookies."""
    found: str | None = None
    kept: list[str] = []
    for pair in cookie_header.split(";"):
        name, _, value = pair.strip().partition("=")
        if name in names:
            if found is None:
                found = value.strip().strip('"')
            continue
        if pair.strip():
            kept.append(pair.strip())
    return found, "; ".join(kept)
