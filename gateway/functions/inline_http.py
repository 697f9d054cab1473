"""HTTP routes of python functions: the event built, and the result mapped, inside the instance.

An HTTP route's invocation costs the worker more than anything else on the way: the payload 2.0
event built and encoded as JSON, then the function's JSON result decoded and mapped back to an
HTTP response. For the built-in python runtime both ends are ours, so the worker sends the
request's parts (a msgpack array) and the instance builds the event with the same builder
(gateway.functions.events), hands the handler the same dict JSON would have given it, and
answers with the HTTP response already mapped by API Gateway's rules. The work moves from the
worker's one CPU to the instances', and the JSON round trip of both event and result goes.

Runtimes that are not ours (``runtime = "provided"``) get the JSON event, as from AWS.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final

import msgspec

from gateway.functions.events import HttpResult, build_http_event_v2, result_to_response_v2
from gateway.functions.spec import MAX_RESPONSE_BYTES  # (runtime_api would import asyncio here)

# The invocation frame's "shape" field: its payload is request parts, the answer an HTTP frame.
HTTP_V2: Final = "http2"

_encoder = msgspec.msgpack.Encoder()
_parts_decoder = msgspec.msgpack.Decoder(
    tuple[str, str, str, list[tuple[str, str]], bytes, str, str, dict[str, str] | None, str, int]
)
_reply_decoder = msgspec.msgpack.Decoder(tuple[int, list[tuple[str, str]], bytes])


# -- the worker's side -----------------------------------------------------------------------


def encode_request_parts(
    *,
    method: str,
    raw_path: str,
    raw_query: str,
    headers: Sequence[tuple[str, str]],
    body: bytes,
    client_ip: str,
    route_key: str,
    path_params: Mapping[str, str] | None,
    request_id: str,
    time_ms: int,
) -> bytes:
    """What build_http_event_v2 takes, as the instance receives it."""
    return _encoder.encode(
        (method, raw_path, raw_query, headers, body, client_ip, route_key, path_params, request_id, time_ms)
    )


def decode_http_reply(body: bytes) -> HttpResult:
    """The mapped response an instance answered with (a frame of kind RESPONSE_HTTP)."""
    status, headers, payload = _reply_decoder.decode(body)
    return HttpResult(status, headers, payload)


# -- the instance's side ---------------------------------------------------------------------


def event_from_parts(parts: bytes) -> dict[str, Any]:
    """The payload 2.0 event, as the dict JSON decoding of the encoded event gives a handler."""
    method, raw_path, raw_query, headers, body, client_ip, key, params, request_id, time_ms = (
        _parts_decoder.decode(parts)
    )
    event = build_http_event_v2(
        method=method,
        raw_path=raw_path,
        raw_query=raw_query,
        headers=headers,
        body=body,
        client_ip=client_ip,
        route_key=key,
        path_params=params,
        request_id=request_id,
        time_ms=time_ms,
    )
    decoded: dict[str, Any] = msgspec.to_builtins(event)
    return decoded


_PLAIN_SIZE: Final = 1 << 18  # characters: under MAX_RESPONSE_BYTES even at 12 JSON bytes each
_RESPONSE_KEYS: Final = frozenset({"statusCode", "headers", "cookies", "body", "isBase64Encoded"})


def http_reply(result: Any, encode: Callable[[Any], bytes]) -> bytes | None:
    """The RESPONSE_HTTP frame body for a handler's result: the response result_to_response_v2
    makes of the result's JSON (``encode`` is the runtime's result encoder, and raises what it
    raises). None: the JSON is larger than a response may be; the caller sends it as it is, and
    the gateway refuses it as it refuses any response that large.
    """
    mapped = _plain_response(result)
    if mapped is None:
        payload = encode(result)
        if len(payload) > MAX_RESPONSE_BYTES:
            return None
        mapped = result_to_response_v2(payload)
    return _encoder.encode(mapped)


def _plain_response(result: Any) -> HttpResult | None:
    """The usual result - {"statusCode": int, "headers": {str: str}, "body": str, "cookies":
    [str], "isBase64Encoded": bool}, JSON types only - mapped without its JSON round trip.
    None for anything else (those take the JSON path, so every result maps as its JSON does)."""
    if type(result) is not dict or not _RESPONSE_KEYS.issuperset(result):
        return None
    status = result.get("statusCode")
    if type(status) is not int or not 100 <= status <= 599:
        return None
    header_list: list[tuple[str, str]] = []
    size = 0  # about what the JSON holds: a large result takes the JSON path and its size limit
    headers = result.get("headers")
    if headers is not None:
        if type(headers) is not dict:
            return None
        for name, value in headers.items():
            if type(name) is not str or type(value) is not str:
                return None
            header_list.append((name, value))
            size += len(name) + len(value)
    cookies = result.get("cookies")
    if cookies is not None:
        if type(cookies) is not list:
            return None
        for cookie in cookies:
            if type(cookie) is not str:
                return None
            header_list.append(("Set-Cookie", cookie))
            size += len(cookie)
    body = result.get("body")
    is_base64 = result.get("isBase64Encoded")
    if body is not None and type(body) is not str:
        return None
    if is_base64 is not None and type(is_base64) is not bool:
        return None
    if body is not None:
        size += len(body)
    if is_base64 or size > _PLAIN_SIZE:
        return None  # base64 decoding and its errors, and the size limit, as the JSON path does them
    try:
        payload = b"" if body is None else body.encode()
    except UnicodeEncodeError:  # a lone surrogate: JSON's escaping of it decides
        return None
    return HttpResult(status, header_list, payload)
