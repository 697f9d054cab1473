"""A small HTTP/1.1 GET client for control-plane fetches (JWKS documents and the like).

Not a general client: one request per connection (``Connection: close``), no redirects, a
deadline on the whole exchange and a cap on the body size, so a slow or hostile server can
neither stall a worker nor make it buffer without bound. Bodies may be sent with
Content-Length, chunked, or delimited by the server closing the connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import ssl
from dataclasses import dataclass
from urllib.parse import urlsplit

__all__ = ["FetchError", "FetchedResponse", "http_get", "validate_fetch_url"]

_MAX_HEAD_BYTES = 64 * 1024
_CHUNK_SIZE = re.compile(rb"[0-9a-fA-F]{1,15}")


class FetchError(Exception):
    """The fetch failed: bad URL, network error, timeout, malformed or oversized response."""


@dataclass(frozen=True)
class FetchedResponse:
    status: int
    headers: list[tuple[str, str]]
    body: bytes


@dataclass(frozen=True)
class _Target:
    scheme: str
    host: str
    port: int
    request_target: str
    host_header: str


def validate_fetch_url(url: str) -> str | None:
    """Why `url` cannot be fetched, or None when it is a usable http(s) URL."""
    try:
        _parse_url(url)
    except FetchError as exc:
        return str(exc)
    return None


def _parse_url(url: str) -> _Target:
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise FetchError(f"invalid URL {url!r}: {exc}") from None
    if parts.scheme not in ("http", "https"):
        raise FetchError(f"invalid URL {url!r}: the scheme must be http or https")
    if not parts.hostname:
        raise FetchError(f"invalid URL {url!r}: no host")
    if parts.fragment or any(c in url for c in " \r\n\t\0"):
        raise FetchError(f"invalid URL {url!r}: fragments and whitespace are not allowed")
    default_port = 443 if parts.scheme == "https" else 80
    port = port or default_port
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    host = parts.hostname
    host_header = f"[{host}]" if ":" in host else host
    if port != default_port:
        host_header += f":{port}"
    return _Target(parts.scheme, host, port, target, host_header)


async def http_get(
    url: str,
    *,
    timeout: float,
    max_body_bytes: int,
    headers: list[tuple[str, str]] | None = None,
    ssl_context: ssl.SSLContext | None = None,
) -> FetchedResponse:
    """GET `url`; raises FetchError on any failure (including a timeout of the whole exchange)."""
    target = _parse_url(url)
    try:
        return await asyncio.wait_for(
            _exchange(target, max_body_bytes, headers or [], ssl_context), timeout=timeout
        )
    except TimeoutError:
        raise FetchError(f"GET {url}: no complete response within {timeout:g}s") from None
    except FetchError as exc:
        raise FetchError(f"GET {url}: {exc}") from None
    except (OSError, ssl.SSLError, asyncio.IncompleteReadError, asyncio.LimitOverrunError) as exc:
        raise FetchError(f"GET {url}: {type(exc).__name__}: {exc}") from None


async def _exchange(
    target: _Target,
    max_body_bytes: int,
    extra_headers: list[tuple[str, str]],
    ssl_context: ssl.SSLContext | None,
) -> FetchedResponse:
    context: ssl.SSLContext | None = None
    if target.scheme == "https":
        context = ssl_context or ssl.create_default_context()
    reader, writer = await asyncio.open_connection(
        target.host,
        target.port,
        ssl=context,
        server_hostname=target.host if context else None,
        limit=_MAX_HEAD_BYTES,
    )
    try:
        lines = [
            f"GET {target.request_target} HTTP/1.1",
            f"Host: {target.host_header}",
            "Accept: application/json",
            "User-Agent: lambdagate",
            "Connection: close",
            *(f"{name}: {value}" for name, value in extra_headers),
        ]
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
        await writer.drain()
        status, headers = await _read_head(reader)
        body = await _read_body(reader, headers, max_body_bytes)
        return FetchedResponse(status, headers, body)
    finally:
        writer.close()
        # The response is complete; an unclean TLS/TCP shutdown does not matter.
        with contextlib.suppress(OSError, ssl.SSLError):
            await writer.wait_closed()


async def _read_head(reader: asyncio.StreamReader) -> tuple[int, list[tuple[str, str]]]:
    while True:
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head[:-4].decode("latin-1").split("\r\n")
        version, _, rest = lines[0].partition(" ")
        code = rest[:3]
        if not version.startswith("HTTP/1.") or len(code) != 3 or not code.isdigit():
            raise FetchError(f"malformed status line {lines[0][:100]!r}")
        status = int(code)
        headers: list[tuple[str, str]] = []
        for line in lines[1:]:
            name, colon, value = line.partition(":")
            if not colon or not name or name != name.strip():
                raise FetchError(f"malformed header line {line[:100]!r}")
            headers.append((name.lower(), value.strip()))
        if status >= 200 or status == 101:
            return status, headers
        # 1xx informational responses (103 Early Hints, a stray 100) precede the real one.


def _header(headers: list[tuple[str, str]], name: str) -> str | None:
    values = [value for key, value in headers if key == name]
    if len(values) > 1 and len(set(values)) > 1:
        raise FetchError(f"conflicting {name} headers")
    return values[0] if values else None


async def _read_body(reader: asyncio.StreamReader, headers: list[tuple[str, str]], limit: int) -> bytes:
    encoding = _header(headers, "transfer-encoding")
    if encoding is not None:
        if encoding.lower() != "chunked":
            raise FetchError(f"unsupported transfer-encoding {encoding!r}")
        return await _read_chunked(reader, limit)
    length = _header(headers, "content-length")
    if length is not None:
        if not length.isdigit():
            raise FetchError(f"invalid content-length {length!r}")
        size = int(length)
        if size > limit:
            raise FetchError(f"body of {size} bytes exceeds the {limit}-byte limit")
        return await reader.readexactly(size)
    body = await reader.read(limit + 1)
    while len(body) <= limit:
        more = await reader.read(limit + 1 - len(body))
        if not more:
            return body
        body += more
    raise FetchError(f"body exceeds the {limit}-byte limit")


async def _read_chunked(reader: asyncio.StreamReader, limit: int) -> bytes:
    body = bytearray()
    while True:
        line = await reader.readuntil(b"\r\n")
        size_text = line[:-2].split(b";", 1)[0].strip()
        if not _CHUNK_SIZE.fullmatch(size_text):
            raise FetchError(f"malformed chunk size {size_text[:20]!r}")
        size = int(size_text, 16)
        if size == 0:
            # Trailer fields (ignored) end with an empty line.
            while await reader.readuntil(b"\r\n") != b"\r\n":
                pass
            return bytes(body)
        if len(body) + size > limit:
            raise FetchError(f"body exceeds the {limit}-byte limit")
        body += await reader.readexactly(size)
        if await reader.readexactly(2) != b"\r\n":
            raise FetchError("chunk not followed by CRLF")
