"""The events AWS services hand to Lambda functions, built the way AWS builds them.

HTTP routes to functions speak API Gateway's Lambda proxy protocol in one of two payload formats,
and the function's result is mapped back to HTTP with API Gateway's rules:

- payload "2.0": an HTTP API event (`build_http_event_v2`, `result_to_response_v2`);
- payload "1.0": a REST API proxy event (`build_rest_event_v1`, `result_to_response_v1`).

Triggers deliver SQS-style batches (`build_sqs_batch`, `parse_batch_item_failures`) and
EventBridge Scheduler events (`build_schedule_event`).

Every event is a msgspec Struct whose JSON is byte-for-byte the shape AWS sends: encode it with
`encode_event` (what the sandbox receives), or turn it into plain dicts with `event_to_dict`.

Where AWS's behaviour depends on settings lambdagate does not have, or is undocumented, these are
the rules (each matches what AWS does for the common configuration, observed on live APIs):

- Request bodies are sent as text when the Content-Type is textual (`text/*`, `application/json`,
  `application/xml`, `application/javascript`) and the bytes are valid UTF-8; anything else,
  including a missing Content-Type and form posts, is base64 with `isBase64Encoded: true`. That is
  HTTP APIs' rule; for payload 1.0 it is a REST API whose binaryMediaTypes are the non-text types.
- Payload 2.0 delivers the path percent-decoded (`rawPath`, `requestContext.http.path`), as HTTP
  APIs do; payload 1.0 keeps `path` as sent, as REST APIs do. Both decode query keys and values
  (`+` is a space) and path parameters (`+` stays `+`); `rawQueryString` stays as sent.
- Results: `isBase64Encoded: true` bodies are always decoded (for 1.0: as if the client's Accept
  matched a binary media type). A payload 2.0 structured result may carry a non-string body; it
  is sent as JSON (HTTP APIs tolerate this; REST APIs do not, so 1.0 answers 502).
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Final, Literal, NamedTuple
from urllib.parse import unquote, unquote_plus

import msgspec
from msgspec import UNSET, UnsetType

__all__ = [
    "BatchMessage",
    "EventOrigin",
    "HttpEventV2",
    "HttpResult",
    "PayloadVersion",
    "RestEventV1",
    "ScheduleEvent",
    "SqsBatch",
    "build_http_event_v2",
    "build_rest_event_v1",
    "build_schedule_event",
    "build_sqs_batch",
    "encode_event",
    "event_to_dict",
    "format_request_time",
    "function_error_response",
    "parse_batch_item_failures",
    "result_to_response",
    "result_to_response_v1",
    "result_to_response_v2",
    "route_key",
    "with_forwarded_headers",
]

PayloadVersion = Literal["1.0", "2.0"]
DEFAULT_ROUTE_KEY: Final = "$default"


class EventOrigin(msgspec.Struct, frozen=True):
    """Who AWS would say the event came from: the account, region and API id in ARNs and contexts."""

    account_id: str = "123456789012"
    region: str = "us-east-1"
    api_id: str = "lambdagate"


DEFAULT_ORIGIN: Final = EventOrigin()


class HttpResult(NamedTuple):
    """An HTTP response made from a function's result."""

    status: int
    headers: list[tuple[str, str]]
    body: bytes


# --- shared request helpers ----------------------------------------------------------------------

_MONTHS: Final = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_TEXT_APPLICATION_TYPES: Final = frozenset({"application/json", "application/xml", "application/javascript"})


_request_time: tuple[int, str] = (-1, "")  # the last second formatted (one event per request)


def format_request_time(time_ms: int) -> str:
    """API Gateway's request time, '27/Nov/2026:16:06:00 +0000' (UTC, English month, locale-free)."""
    global _request_time
    second = time_ms // 1000
    if _request_time[0] == second:
        return _request_time[1]
    t = time.gmtime(second)
    text = (
        f"{t.tm_mday:02d}/{_MONTHS[t.tm_mon - 1]}/{t.tm_year}:"
        f"{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d} +0000"
    )
    _request_time = (second, text)
    return text


def route_key(path_pattern: str, methods: Sequence[str] | None, request_method: str) -> str:
    """The routeKey AWS reports: '$default', 'GET /hello/{name}', or 'ANY /x' for a route of any method.

    A lambdagate route listing several methods stands for one AWS route per method, so the key
    names the method the request used.
    """
    if path_pattern == DEFAULT_ROUTE_KEY:
        return DEFAULT_ROUTE_KEY
    method = request_method.upper() if methods else "ANY"
    return f"{method} {path_pattern}"


def with_forwarded_headers(
    headers: Iterable[tuple[str, str]], client_ip: str, scheme: str, port: int
) -> list[tuple[str, str]]:
    """The request headers plus the X-Forwarded-For/-Port/-Proto that API Gateway adds.

    The client address is appended to an X-Forwarded-For the client sent; port and scheme
    replace any the client sent, since only the gateway knows them.
    """
    out: list[tuple[str, str]] = []
    forwarded_for: str | None = None
    for name, value in headers:
        lowered = name.lower()
        if lowered == "x-forwarded-for":
            forwarded_for = value if forwarded_for is None else f"{forwarded_for}, {value}"
        elif lowered not in ("x-forwarded-port", "x-forwarded-proto"):
            out.append((name, value))
    out.append(("X-Forwarded-For", client_ip if forwarded_for is None else f"{forwarded_for}, {client_ip}"))
    out.append(("X-Forwarded-Port", str(port)))
    out.append(("X-Forwarded-Proto", scheme))
    return out


def _is_text_content_type(content_type: str | None) -> bool:
    if content_type is None:
        return False
    media_type = content_type.split(";", 1)[0].strip().lower()
    return media_type.startswith("text/") or media_type in _TEXT_APPLICATION_TYPES


def _encode_body(body: bytes, content_type: str | None) -> tuple[str, bool]:
    """(body as the event carries it, isBase64Encoded)."""
    if _is_text_content_type(content_type):
        try:
            return body.decode("utf-8"), False
        except UnicodeDecodeError:
            pass  # mislabelled binary: base64 keeps it intact rather than mangling it
    return base64.b64encode(body).decode("ascii"), True


def _parse_query(raw_query: str) -> dict[str, list[str]]:
    """Decoded query keys -> values in order; keys without '=' get ''; empty pieces are skipped."""
    params: dict[str, list[str]] = {}
    if not raw_query:
        return params
    for piece in raw_query.split("&"):
        if not piece:
            continue
        key, _, value = piece.partition("=")
        params.setdefault(unquote_plus(key), []).append(unquote_plus(value))
    return params


def _decode_path_params(path_params: Mapping[str, str] | None) -> dict[str, str] | None:
    if not path_params:
        return None
    return {name: unquote(value) for name, value in path_params.items()}


def _split_cookies(value: str) -> Iterable[str]:
    for cookie in value.split(";"):
        cookie = cookie.strip()
        if cookie:
            yield cookie


@functools.lru_cache(maxsize=256)  # one Host per request; a few distinct ones in practice
def _domain(host: str | None) -> tuple[str, str]:
    """(domainName, domainPrefix) from the Host header, without a port."""
    if not host:
        return "localhost", "localhost"
    name = host
    bracket = name.rfind("]")
    colon = name.rfind(":")
    if colon > bracket:
        name = name[:colon]
    return name, name.split(".", 1)[0]


# --- payload 2.0: HTTP API -----------------------------------------------------------------------


class HttpInfoV2(msgspec.Struct, rename="camel"):
    method: str
    path: str
    protocol: str
    source_ip: str
    user_agent: str


class RequestContextV2(msgspec.Struct, rename="camel"):
    account_id: str
    api_id: str
    domain_name: str
    domain_prefix: str
    http: HttpInfoV2
    request_id: str
    route_key: str
    stage: str
    time: str
    time_epoch: int
    authorizer: dict[str, Any] | UnsetType = UNSET


class HttpEventV2(msgspec.Struct, rename="camel"):
    """API Gateway HTTP API event, payload format 2.0. Unset fields are absent, as AWS omits them."""

    version: str
    route_key: str
    raw_path: str
    raw_query_string: str
    headers: dict[str, str]
    request_context: RequestContextV2
    is_base64_encoded: bool
    cookies: list[str] | UnsetType = UNSET
    query_string_parameters: dict[str, str] | UnsetType = UNSET
    path_parameters: dict[str, str] | UnsetType = UNSET
    stage_variables: dict[str, str] | UnsetType = UNSET
    body: str | UnsetType = UNSET


def build_http_event_v2(
    *,
    method: str,
    raw_path: str,
    raw_query: str,
    headers: Iterable[tuple[str, str]],
    body: bytes,
    client_ip: str,
    route_key: str,
    path_params: Mapping[str, str] | None,
    request_id: str,
    time_ms: int,
    stage: str = "$default",
    origin: EventOrigin = DEFAULT_ORIGIN,
    authorizer: Mapping[str, Any] | None = None,
    stage_variables: Mapping[str, str] | None = None,
) -> HttpEventV2:
    """The payload 2.0 event for one request.

    raw_path/raw_query: as received (percent-encoded, no '?'). path_params: as the router matched
    them in the raw path. time_ms: when the request arrived, epoch milliseconds.
    """
    merged: dict[str, str] = {}
    cookies: list[str] = []
    for name, value in headers:
        lowered = name.lower()
        if lowered == "cookie":
            # HTTP APIs move cookies out of the headers into their own list.
            cookies.extend(_split_cookies(value))
            continue
        previous = merged.get(lowered)
        merged[lowered] = value if previous is None else f"{previous},{value}"
    query = _parse_query(raw_query)
    decoded_params = _decode_path_params(path_params)
    domain_name, domain_prefix = _domain(merged.get("host"))
    path = unquote(raw_path) if "%" in raw_path else raw_path
    event = HttpEventV2(
        version="2.0",
        route_key=route_key,
        raw_path=path,
        raw_query_string=raw_query,
        headers=merged,
        request_context=RequestContextV2(
            account_id=origin.account_id,
            api_id=origin.api_id,
            domain_name=domain_name,
            domain_prefix=domain_prefix,
            http=HttpInfoV2(
                method=method,
                path=path,
                protocol="HTTP/1.1",
                source_ip=client_ip,
                user_agent=merged.get("user-agent", ""),
            ),
            request_id=request_id,
            route_key=route_key,
            stage=stage,
            time=format_request_time(time_ms),
            time_epoch=time_ms,
        ),
        is_base64_encoded=False,
    )
    if cookies:
        event.cookies = cookies
    if query:
        event.query_string_parameters = {key: ",".join(values) for key, values in query.items()}
    if decoded_params is not None:
        event.path_parameters = decoded_params
    if stage_variables:
        event.stage_variables = dict(stage_variables)
    if authorizer is not None:
        event.request_context.authorizer = dict(authorizer)
    if body:
        event.body, event.is_base64_encoded = _encode_body(body, merged.get("content-type"))
    return event


# --- payload 1.0: REST API proxy ----------------------------------------------------------------


class IdentityV1(msgspec.Struct, rename="camel"):
    source_ip: str
    user_agent: str | None
    access_key: None = None
    account_id: None = None
    caller: None = None
    cognito_amr: None = None
    cognito_authentication_provider: None = None
    cognito_authentication_type: None = None
    cognito_identity_id: None = None
    cognito_identity_pool_id: None = None
    principal_org_id: None = None
    user: None = None
    user_arn: None = None


class RequestContextV1(msgspec.Struct, rename="camel"):
    account_id: str
    api_id: str
    domain_name: str
    domain_prefix: str
    extended_request_id: str
    http_method: str
    identity: IdentityV1
    path: str
    protocol: str
    request_id: str
    request_time: str
    request_time_epoch: int
    resource_id: str
    resource_path: str
    stage: str
    authorizer: dict[str, Any] | UnsetType = UNSET


class RestEventV1(msgspec.Struct, rename="camel"):
    """API Gateway REST API proxy event, payload format 1.0. Missing values are null, as AWS sends."""

    version: str
    resource: str
    path: str
    http_method: str
    headers: dict[str, str] | None
    multi_value_headers: dict[str, list[str]] | None
    query_string_parameters: dict[str, str] | None
    multi_value_query_string_parameters: dict[str, list[str]] | None
    request_context: RequestContextV1
    path_parameters: dict[str, str] | None
    stage_variables: dict[str, str] | None
    body: str | None
    is_base64_encoded: bool


def build_rest_event_v1(
    *,
    method: str,
    raw_path: str,
    raw_query: str,
    headers: Iterable[tuple[str, str]],
    body: bytes,
    client_ip: str,
    route_key: str,
    path_params: Mapping[str, str] | None,
    request_id: str,
    time_ms: int,
    stage: str = "$default",
    origin: EventOrigin = DEFAULT_ORIGIN,
    authorizer: Mapping[str, Any] | None = None,
    stage_variables: Mapping[str, str] | None = None,
) -> RestEventV1:
    """The payload 1.0 event for one request (same arguments as `build_http_event_v2`).

    `resource` is the route's path pattern ('$default' for the default route). Header names keep
    the client's spelling; `headers` and `queryStringParameters` hold the last value of a repeated
    name, the multiValue fields hold all of them.
    """
    multi_headers: dict[str, list[str]] = {}
    for name, value in headers:
        multi_headers.setdefault(name, []).append(value)
    query = _parse_query(raw_query)
    resource = route_key.partition(" ")[2] or route_key
    host = next((values[-1] for name, values in multi_headers.items() if name.lower() == "host"), None)
    user_agent = next(
        (values[-1] for name, values in multi_headers.items() if name.lower() == "user-agent"), None
    )
    content_type = next(
        (values[-1] for name, values in multi_headers.items() if name.lower() == "content-type"), None
    )
    domain_name, domain_prefix = _domain(host)
    context = RequestContextV1(
        account_id=origin.account_id,
        api_id=origin.api_id,
        domain_name=domain_name,
        domain_prefix=domain_prefix,
        extended_request_id=request_id,
        http_method=method,
        identity=IdentityV1(source_ip=client_ip, user_agent=user_agent),
        path=raw_path,
        protocol="HTTP/1.1",
        request_id=request_id,
        request_time=format_request_time(time_ms),
        request_time_epoch=time_ms,
        resource_id=route_key,
        resource_path=resource,
        stage=stage,
    )
    if authorizer is not None:
        context.authorizer = dict(authorizer)
    event_body: str | None = None
    is_base64 = False
    if body:
        event_body, is_base64 = _encode_body(body, content_type)
    return RestEventV1(
        version="1.0",
        resource=resource,
        path=raw_path,
        http_method=method,
        headers={name: values[-1] for name, values in multi_headers.items()} or None,
        multi_value_headers=multi_headers or None,
        query_string_parameters={key: values[-1] for key, values in query.items()} or None,
        multi_value_query_string_parameters=query or None,
        request_context=context,
        path_parameters=_decode_path_params(path_params),
        stage_variables=dict(stage_variables) if stage_variables else None,
        body=event_body,
        is_base64_encoded=is_base64,
    )


# --- results back to HTTP ------------------------------------------------------------------------


def _http_api_error() -> HttpResult:
    """HTTP API's answer when a function fails or returns something it cannot use."""
    return HttpResult(500, [("Content-Type", "application/json")], b'{"message":"Internal Server Error"}')


def _rest_api_error() -> HttpResult:
    """REST API's answer when a function fails or returns something it cannot use."""
    return HttpResult(502, [("Content-Type", "application/json")], b'{"message": "Internal server error"}')


HeaderValue = str | int | float | bool


class _ResponseV2(msgspec.Struct, rename="camel"):
    status_code: int | str
    headers: dict[str, HeaderValue] | None = None
    cookies: list[str] | None = None
    body: Any = None
    is_base64_encoded: bool | None = None


class _ResponseV1(msgspec.Struct, rename="camel", forbid_unknown_fields=True):
    status_code: int | str
    headers: dict[str, HeaderValue] | None = None
    multi_value_headers: dict[str, list[HeaderValue]] | None = None
    body: str | None = None
    is_base64_encoded: bool | None = None


class _MalformedResult(Exception):
    pass


def _status(value: int | str) -> int:
    if isinstance(value, str):
        if not value.isdigit():
            raise _MalformedResult("statusCode is not a number")
        value = int(value)
    if not 100 <= value <= 599:
        raise _MalformedResult("statusCode out of range")
    return value


def _header_text(value: HeaderValue) -> str:
    if isinstance(value, str):
        return value
    # Numbers and booleans are written as JSON writes them (true, 1.5), as API Gateway does.
    return msgspec.json.encode(value).decode()


def _body_bytes(body: str | None, is_base64: bool | None) -> bytes:
    if body is None:
        return b""
    if is_base64:
        try:
            return base64.b64decode(body, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise _MalformedResult("isBase64Encoded body is not base64") from exc
    return body.encode("utf-8")


def _decode_object(payload: bytes) -> object:
    try:
        return msgspec.json.decode(payload)
    except msgspec.DecodeError as exc:
        raise _MalformedResult("result is not JSON") from exc


def result_to_response_v2(payload: bytes) -> HttpResult:
    """Map a function's result (the JSON payload it returned) to HTTP with HTTP API's rules.

    An object with a statusCode is a response (statusCode, headers, cookies -> Set-Cookie each,
    body, isBase64Encoded). Any other JSON value - a string, a number, an object without
    statusCode - becomes a 200 application/json response whose body is the payload as returned,
    so a returned string arrives JSON-quoted. A payload that is not JSON, or a response with an
    unusable field, is API Gateway's 500 {"message":"Internal Server Error"}.
    """
    try:
        try:  # the usual result, a response object, decoded in one step
            response = msgspec.json.decode(payload, type=_ResponseV2)
        except (msgspec.DecodeError, msgspec.ValidationError):
            response = None
        if response is not None:
            return _response_v2(response)
        result = _decode_object(payload)
        if not isinstance(result, dict) or "statusCode" not in result:
            return HttpResult(200, [("Content-Type", "application/json")], payload)
        try:
            response = msgspec.convert(result, _ResponseV2)
        except msgspec.ValidationError as exc:
            raise _MalformedResult(str(exc)) from exc
        return _response_v2(response)
    except _MalformedResult:
        return _http_api_error()


def _response_v2(response: _ResponseV2) -> HttpResult:
    status = _status(response.status_code)
    headers = [(name, _header_text(value)) for name, value in (response.headers or {}).items()]
    headers.extend(("Set-Cookie", cookie) for cookie in response.cookies or ())
    body = response.body
    if body is not None and not isinstance(body, str):
        body = msgspec.json.encode(body).decode()
    return HttpResult(status, headers, _body_bytes(body, response.is_base64_encoded))


def result_to_response_v1(payload: bytes) -> HttpResult:
    """Map a function's result to HTTP with REST API proxy rules.

    The result must be an object with statusCode and only the proxy response keys (headers,
    multiValueHeaders, body as a string, isBase64Encoded); anything else is API Gateway's
    502 {"message": "Internal server error"}. A name in multiValueHeaders takes its values from
    there, replacing the same name (case-insensitively) in headers. Without a Content-Type the
    response is application/json, as REST APIs send it.
    """
    try:
        result = _decode_object(payload)
        if not isinstance(result, dict) or "statusCode" not in result:
            raise _MalformedResult("statusCode missing")
        try:
            response = msgspec.convert(result, _ResponseV1)
        except msgspec.ValidationError as exc:
            raise _MalformedResult(str(exc)) from exc
        status = _status(response.status_code)
        multi = response.multi_value_headers or {}
        multi_names = {name.lower() for name in multi}
        headers = [
            (name, _header_text(value))
            for name, value in (response.headers or {}).items()
            if name.lower() not in multi_names
        ]
        headers.extend((name, _header_text(value)) for name, values in multi.items() for value in values)
        if not any(name.lower() == "content-type" for name, _ in headers):
            headers.append(("Content-Type", "application/json"))
        return HttpResult(status, headers, _body_bytes(response.body, response.is_base64_encoded))
    except _MalformedResult:
        return _rest_api_error()


def result_to_response(version: PayloadVersion, payload: bytes) -> HttpResult:
    """`result_to_response_v1` or `_v2`, by the route's payload version."""
    return result_to_response_v2(payload) if version == "2.0" else result_to_response_v1(payload)


def function_error_response(version: PayloadVersion) -> HttpResult:
    """What API Gateway answers when the function failed (an error result, a timeout, a crash)."""
    return _http_api_error() if version == "2.0" else _rest_api_error()


# --- queue batches (SQS) ---------------------------------------------------------------------------


class BatchMessage(msgspec.Struct, frozen=True):
    """One queued message as a queue trigger hands it over.

    receive_count counts this delivery (1 on the first). Timestamps are epoch milliseconds.
    receipt_handle identifies this delivery (defaults to the message id).
    """

    message_id: str
    body: str
    sent_ms: int
    receive_count: int = 1
    first_receive_ms: int | None = None
    receipt_handle: str | None = None
    attributes: Mapping[str, str] = msgspec.field(default_factory=dict)


class _SqsAttributes(msgspec.Struct):
    ApproximateReceiveCount: str
    SentTimestamp: str
    SenderId: str
    ApproximateFirstReceiveTimestamp: str


class _SqsMessageAttribute(msgspec.Struct, rename="camel"):
    string_value: str
    data_type: str = "String"
    string_list_values: list[str] = msgspec.field(default_factory=list)
    binary_list_values: list[str] = msgspec.field(default_factory=list)


class SqsRecord(msgspec.Struct, rename="camel"):
    message_id: str
    receipt_handle: str
    body: str
    attributes: _SqsAttributes
    message_attributes: dict[str, _SqsMessageAttribute]
    md5_of_body: str
    event_source: str
    event_source_arn: str = msgspec.field(name="eventSourceARN")
    aws_region: str = ""


class SqsBatch(msgspec.Struct):
    Records: list[SqsRecord]


def build_sqs_batch(
    messages: Sequence[BatchMessage],
    *,
    queue: str,
    origin: EventOrigin = DEFAULT_ORIGIN,
    sender_id: str = "LAMBDAGATE",
) -> SqsBatch:
    """The event a queue trigger invokes its function with: SQS's Records shape, one per message."""
    arn = f"arn:aws:sqs:{origin.region}:{origin.account_id}:{queue}"
    records = []
    for message in messages:
        first_receive = message.sent_ms if message.first_receive_ms is None else message.first_receive_ms
        records.append(
            SqsRecord(
                message_id=message.message_id,
                receipt_handle=message.receipt_handle or message.message_id,
                body=message.body,
                attributes=_SqsAttributes(
                    ApproximateReceiveCount=str(message.receive_count),
                    SentTimestamp=str(message.sent_ms),
                    SenderId=sender_id,
                    ApproximateFirstReceiveTimestamp=str(first_receive),
                ),
                message_attributes={
                    name: _SqsMessageAttribute(string_value=value)
                    for name, value in message.attributes.items()
                },
                md5_of_body=hashlib.md5(message.body.encode("utf-8"), usedforsecurity=False).hexdigest(),
                event_source="aws:sqs",
                event_source_arn=arn,
                aws_region=origin.region,
            )
        )
    return SqsBatch(Records=records)


class _BatchItemFailure(msgspec.Struct, rename="camel"):
    item_identifier: str | None = None


class _BatchResponse(msgspec.Struct, rename="camel"):
    batch_item_failures: list[_BatchItemFailure] | None = None


def parse_batch_item_failures(payload: bytes | None, message_ids: Sequence[str]) -> list[str]:
    """The ids of the messages to redeliver, from a function's partial batch response.

    Lambda's rules: no payload, null, or a response without (or with an empty or null)
    batchItemFailures means every message succeeded. Invalid JSON, or a failure entry whose
    itemIdentifier is missing, empty, not a string or not in the batch, fails the whole batch.
    A function error is the caller's business: it fails the whole batch too.
    """
    if not payload:
        return []
    try:
        decoded = msgspec.json.decode(payload)
    except msgspec.DecodeError:
        return list(message_ids)
    if not isinstance(decoded, dict):
        return []
    try:
        response = msgspec.convert(decoded, _BatchResponse)
    except msgspec.ValidationError:
        return list(message_ids)
    if not response.batch_item_failures:
        return []
    known = set(message_ids)
    failed: set[str] = set()
    for failure in response.batch_item_failures:
        if not failure.item_identifier or failure.item_identifier not in known:
            return list(message_ids)
        failed.add(failure.item_identifier)
    return [message_id for message_id in message_ids if message_id in failed]


# --- schedules (EventBridge Scheduler) -----------------------------------------------------------


class ScheduleEvent(msgspec.Struct):
    version: str
    id: str
    detail_type: str = msgspec.field(name="detail-type")
    source: str = "aws.scheduler"
    account: str = ""
    time: str = ""
    region: str = ""
    resources: list[str] = msgspec.field(default_factory=list)
    detail: str = "{}"


def build_schedule_event(
    *,
    schedule: str,
    fire_time_s: int,
    origin: EventOrigin = DEFAULT_ORIGIN,
    event_id: str | None = None,
    group: str = "default",
) -> ScheduleEvent:
    """The event EventBridge Scheduler invokes a target with, for one firing of `schedule`.

    fire_time_s: the scheduled time (epoch seconds), not the moment it ran. detail is the
    string "{}", as Scheduler sends for a schedule without input.
    """
    t = time.gmtime(fire_time_s)
    return ScheduleEvent(
        version="0",
        id=event_id or str(uuid.uuid4()),
        detail_type="Scheduled Event",
        source="aws.scheduler",
        account=origin.account_id,
        time=time.strftime("%Y-%m-%dT%H:%M:%SZ", t),
        region=origin.region,
        resources=[f"arn:aws:scheduler:{origin.region}:{origin.account_id}:schedule/{group}/{schedule}"],
        detail="{}",
    )


# --- encoding ------------------------------------------------------------------------------------

AnyEvent = HttpEventV2 | RestEventV1 | SqsBatch | ScheduleEvent


def encode_event(event: AnyEvent) -> bytes:
    """The event's JSON: the payload the function is invoked with."""
    return msgspec.json.encode(event)


def event_to_dict(event: AnyEvent) -> dict[str, Any]:
    """The event as the plain dict a handler receives (JSON types only, unset fields absent)."""
    result: dict[str, Any] = msgspec.to_builtins(event)
    return result
