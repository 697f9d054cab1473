"""Handlers written for AWS run unchanged on lambdagate's events, and their results map back to HTTP.

Each test goes the way an invocation does: build the event, encode it (the payload the runtime
receives), decode it as the Python runtime does, call the handler in-process with a context
carrying AWS's fields, serialize the result as the runtime does, map it back to HTTP.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from aws_lambda_powertools.event_handler import (
    APIGatewayHttpResolver,
    APIGatewayRestResolver,
    Response,
    content_types,
)
from aws_lambda_powertools.shared.cookies import Cookie
from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.data_classes import APIGatewayProxyEventV2, EventBridgeEvent, SQSEvent
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.parser import parse
from aws_lambda_powertools.utilities.parser.models import (
    APIGatewayProxyEventModel,
    APIGatewayProxyEventV2Model,
    SqsModel,
)
from fastapi import FastAPI, Query, Request
from fastapi import Response as FastAPIResponse
from mangum import Mangum

from gateway.functions.events import (
    BatchMessage,
    HttpResult,
    PayloadVersion,
    build_http_event_v2,
    build_rest_event_v1,
    build_schedule_event,
    build_sqs_batch,
    encode_event,
    parse_batch_item_failures,
    result_to_response,
    route_key,
)

Handler = Callable[[dict[str, Any], Any], Any]


@dataclass
class LambdaContextStub:
    """The fields of AWS's Python context object (the sandbox builds the real one)."""

    function_name: str = "hello"
    function_version: str = "$LATEST"
    invoked_function_arn: str = "arn:aws:lambda:us-east-1:123456789012:function:hello"
    memory_limit_in_mb: str = "128"
    aws_request_id: str = "6f1e2d3c-0000-4000-8000-000000000001"
    log_group_name: str = "/aws/lambda/hello"
    log_stream_name: str = "2026/11/27/[$LATEST]0123456789abcdef"
    identity: Any = None
    client_context: Any = None
    tenant_id: str | None = None
    deadline_ms: int = field(default_factory=lambda: int(time.time() * 1000) + 3000)

    def get_remaining_time_in_millis(self) -> int:
        return max(self.deadline_ms - int(time.time() * 1000), 0)


def invoke(
    handler: Handler,
    version: PayloadVersion,
    method: str,
    target: str,
    *,
    pattern: str = "$default",
    path_params: dict[str, str] | None = None,
    headers: list[tuple[str, str]] | None = None,
    body: bytes = b"",
) -> HttpResult:
    raw_path, _, raw_query = target.partition("?")
    args: dict[str, Any] = {
        "method": method,
        "raw_path": raw_path,
        "raw_query": raw_query,
        "headers": [("Host", "api.example.com"), ("User-Agent", "test/1.0"), *(headers or [])],
        "body": body,
        "client_ip": "203.0.113.9",
        "route_key": route_key(pattern, [method], method),
        "path_params": path_params,
        "request_id": "req-1",
        "time_ms": int(time.time() * 1000),
    }
    event = build_http_event_v2(**args) if version == "2.0" else build_rest_event_v1(**args)
    # The runtime decodes the payload with json and encodes the handler's return value with json.
    result = handler(json.loads(encode_event(event)), LambdaContextStub())
    return result_to_response(version, json.dumps(result).encode())


def header(response: HttpResult, name: str) -> list[str]:
    return [value for key, value in response.headers if key.lower() == name.lower()]


# --- aws-lambda-powertools event handlers -------------------------------------------------------------


def powertools_app(resolver: APIGatewayHttpResolver | APIGatewayRestResolver) -> Handler:
    app = resolver

    @app.get("/hello/<name>")
    def hello(name: str) -> dict[str, Any]:
        event = app.current_event
        if isinstance(event, APIGatewayProxyEventV2):
            tags: Any = event.query_string_parameters.get("tag")
            ip = event.request_context.http.source_ip
        else:
            tags = event.multi_value_query_string_parameters.get("tag")
            ip = event.request_context.identity.source_ip
        return {"name": name, "tags": tags, "agent": event.headers.get("user-agent"), "ip": ip}

    @app.post("/echo")
    def echo() -> Response[Any]:
        event = app.current_event
        cookies = [Cookie(name="seen", value="1"), Cookie(name="flavour", value="oat")]
        if event.is_base64_encoded:
            # A bytes body: Powertools base64-encodes it and sets isBase64Encoded.
            raw = base64.b64decode(event.body or "")
            return Response(201, "application/octet-stream", raw, cookies=cookies)
        return Response(201, content_types.APPLICATION_JSON, event.decoded_body, cookies=cookies)

    @app.get("/cookies")
    def cookies() -> dict[str, Any]:
        event = app.current_event
        if isinstance(event, APIGatewayProxyEventV2):
            return {"cookies": event.cookies}
        return {"cookies": event.headers.get("Cookie")}

    def handler(event: dict[str, Any], context: Any) -> Any:
        return app.resolve(event, context)

    return handler


@pytest.mark.parametrize(
    ("version", "resolver"),
    [("2.0", APIGatewayHttpResolver), ("1.0", APIGatewayRestResolver)],
)
def test_powertools_resolver(
    version: PayloadVersion, resolver: type[APIGatewayHttpResolver | APIGatewayRestResolver]
) -> None:
    handler = powertools_app(resolver())

    response = invoke(
        handler,
        version,
        "GET",
        "/hello/world?tag=a&tag=b",
        pattern="/hello/{name}",
        path_params={"name": "world"},
    )
    assert response.status == 200
    assert header(response, "content-type") == ["application/json"]
    expected_tags = "a,b" if version == "2.0" else ["a", "b"]
    assert json.loads(response.body) == {
        "name": "world",
        "tags": expected_tags,
        "agent": "test/1.0",
        "ip": "203.0.113.9",
    }

    response = invoke(
        handler,
        version,
        "POST",
        "/echo",
        pattern="/echo",
        headers=[("Content-Type", "application/json")],
        body=b'{"x": [1, 2]}',
    )
    assert response.status == 201
    assert json.loads(response.body) == {"x": [1, 2]}
    assert sorted(header(response, "set-cookie")) == ["flavour=oat; Secure", "seen=1; Secure"]

    binary = bytes(range(256))
    response = invoke(
        handler,
        version,
        "POST",
        "/echo",
        pattern="/echo",
        headers=[("Content-Type", "application/octet-stream")],
        body=binary,
    )
    assert response.status == 201
    assert response.body == binary
    assert header(response, "content-type") == ["application/octet-stream"]

    response = invoke(
        handler, version, "GET", "/cookies", pattern="/cookies", headers=[("Cookie", "a=1; b=2")]
    )
    expected_cookies = ["a=1", "b=2"] if version == "2.0" else "a=1; b=2"
    assert json.loads(response.body) == {"cookies": expected_cookies}

    response = invoke(handler, version, "GET", "/missing")
    assert response.status == 404


def test_powertools_http_resolver_sees_decoded_path_parameters() -> None:
    handler = powertools_app(APIGatewayHttpResolver())
    response = invoke(
        handler,
        "2.0",
        "GET",
        "/hello/J%C3%BCrgen",
        pattern="/hello/{name}",
        path_params={"name": "J%C3%BCrgen"},
    )
    assert response.status == 200
    assert json.loads(response.body)["name"] == "Jürgen"


def test_powertools_parser_models_accept_our_events() -> None:
    common: dict[str, Any] = {
        "method": "POST",
        "raw_path": "/orders/7",
        "raw_query": "expand=items&expand=customer",
        "headers": [("Host", "api.example.com"), ("Cookie", "s=1"), ("Content-Type", "application/json")],
        "body": b'{"qty": 2}',
        "client_ip": "203.0.113.9",
        "route_key": "POST /orders/{id}",
        "path_params": {"id": "7"},
        "request_id": "req-1",
        "time_ms": 1795795560123,
    }
    v2 = parse(
        event=json.loads(encode_event(build_http_event_v2(**common))), model=APIGatewayProxyEventV2Model
    )
    assert v2.routeKey == "POST /orders/{id}"
    assert v2.cookies == ["s=1"]
    assert v2.queryStringParameters == {"expand": "items,customer"}
    assert v2.requestContext.http.method == "POST"
    v1 = parse(event=json.loads(encode_event(build_rest_event_v1(**common))), model=APIGatewayProxyEventModel)
    assert v1.resource == "/orders/{id}"
    assert v1.multiValueQueryStringParameters == {"expand": ["items", "customer"]}
    assert v1.pathParameters == {"id": "7"}


# --- FastAPI behind Mangum ------------------------------------------------------------------------------


def fastapi_handler() -> Handler:
    api = FastAPI()

    @api.get("/hello/{name}")
    def hello(name: str, request: Request, tag: list[str] = Query(default=[])) -> dict[str, Any]:  # noqa: B008
        return {
            "name": name,
            "tags": tag,
            "cookies": dict(request.cookies),
            "agent": request.headers.get("user-agent"),
            "client": request.client.host if request.client else None,
        }

    @api.post("/reverse")
    async def reverse(request: Request) -> FastAPIResponse:
        body = await request.body()
        return FastAPIResponse(content=body[::-1], media_type="application/octet-stream")

    @api.post("/login", status_code=204)
    def login(response: FastAPIResponse) -> None:
        response.set_cookie("session", "abc", httponly=True)
        response.set_cookie("theme", "dark")

    return Mangum(api, lifespan="off")


@pytest.fixture
def mangum_loop() -> Iterator[asyncio.AbstractEventLoop]:
    """Mangum runs the app on asyncio.get_event_loop(), creating a loop nobody closes when none is
    set (a ResourceWarning later): give it one, and close it after the test."""
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    try:
        yield loop
    finally:
        asyncio.set_event_loop(None)
        loop.close()


@pytest.mark.parametrize("version", ["2.0", "1.0"])
@pytest.mark.usefixtures("mangum_loop")
def test_fastapi_with_mangum(version: PayloadVersion) -> None:
    handler = fastapi_handler()

    response = invoke(
        handler,
        version,
        "GET",
        "/hello/world?tag=a&tag=b+c",
        pattern="/hello/{name}",
        path_params={"name": "world"},
        headers=[("Cookie", "x=1; y=2")],
    )
    assert response.status == 200
    assert json.loads(response.body) == {
        "name": "world",
        "tags": ["a", "b c"],
        "cookies": {"x": "1", "y": "2"},
        "agent": "test/1.0",
        "client": "203.0.113.9",
    }

    binary = b"\x00\x01\x02\xfe\xff" * 10
    response = invoke(
        handler,
        version,
        "POST",
        "/reverse",
        headers=[("Content-Type", "application/octet-stream")],
        body=binary,
    )
    assert response.status == 200
    assert response.body == binary[::-1]
    assert header(response, "content-type") == ["application/octet-stream"]

    response = invoke(handler, version, "POST", "/login")
    assert response.status == 204
    assert sorted(cookie.split(";")[0] for cookie in header(response, "set-cookie")) == [
        "session=abc",
        "theme=dark",
    ]

    response = invoke(handler, version, "GET", "/nowhere")
    assert response.status == 404
    assert json.loads(response.body) == {"detail": "Not Found"}


@pytest.mark.usefixtures("mangum_loop")
def test_fastapi_with_mangum_sees_the_decoded_path_on_payload_2() -> None:
    response = invoke(
        fastapi_handler(), "2.0", "GET", "/hello/J%C3%BCrgen%20M", path_params={"name": "J%C3%BCrgen%20M"}
    )
    assert json.loads(response.body)["name"] == "Jürgen M"


# --- plain handlers -----------------------------------------------------------------------------------


def test_plain_handler_returning_a_dict_becomes_json_on_payload_2() -> None:
    def handler(event: dict[str, Any], context: Any) -> Any:
        return {
            "greeting": f"hello {event['pathParameters']['name']}",
            "left": context.get_remaining_time_in_millis() > 0,
        }

    response = invoke(
        handler, "2.0", "GET", "/hello/ann", pattern="/hello/{name}", path_params={"name": "ann"}
    )
    assert response == (
        200,
        [("Content-Type", "application/json")],
        b'{"greeting": "hello ann", "left": true}',
    )
    # Payload 1.0 requires a statusCode: the same handler is a 502 there, as on AWS.
    response = invoke(
        handler, "1.0", "GET", "/hello/ann", pattern="/hello/{name}", path_params={"name": "ann"}
    )
    assert response.status == 502


# --- queue batches and schedules ------------------------------------------------------------------------


def test_powertools_batch_processor_partial_failures() -> None:
    processor = BatchProcessor(event_type=EventType.SQS)

    def record_handler(record: SQSRecord) -> None:
        if json.loads(record.body).get("fail"):
            raise ValueError("cannot process")

    def handler(event: dict[str, Any], context: Any) -> Any:
        return process_partial_response(
            event=event, record_handler=record_handler, processor=processor, context=context
        )

    messages = [
        BatchMessage(
            message_id=f"m{i}", body=json.dumps({"n": i, "fail": i in (1, 3)}), sent_ms=1_700_000_000_000 + i
        )
        for i in range(5)
    ]
    event = json.loads(encode_event(build_sqs_batch(messages, queue="orders")))
    result = handler(event, LambdaContextStub())
    payload = json.dumps(result).encode()
    assert parse_batch_item_failures(payload, [m.message_id for m in messages]) == ["m1", "m3"]

    parsed = parse(event=event, model=SqsModel)
    assert [record.messageId for record in parsed.Records] == ["m0", "m1", "m2", "m3", "m4"]
    assert parsed.Records[0].eventSourceARN == "arn:aws:sqs:us-east-1:123456789012:orders"
    data = SQSEvent(event)
    first = next(iter(data.records))
    assert first.attributes.approximate_receive_count == "1"
    assert first.queue_url == "https://sqs.us-east-1.amazonaws.com/123456789012/orders"


def test_schedule_event_reads_as_an_eventbridge_event() -> None:
    event = json.loads(encode_event(build_schedule_event(schedule="nightly", fire_time_s=1795795560)))
    data = EventBridgeEvent(event)
    assert data.detail_type == "Scheduled Event"
    assert data.source == "aws.scheduler"
    assert data.time == "2026-11-27T16:06:00Z"
    assert data.resources == ["arn:aws:scheduler:us-east-1:123456789012:schedule/default/nightly"]
    assert data.account == "123456789012"
    assert json.loads(event["detail"]) == {}


def test_base64_request_reaches_the_handler_intact() -> None:
    seen: list[bytes] = []

    def handler(event: dict[str, Any], context: Any) -> Any:
        body = base64.b64decode(event["body"]) if event["isBase64Encoded"] else event["body"].encode()
        seen.append(body)
        return {"statusCode": 200, "body": base64.b64encode(body).decode(), "isBase64Encoded": True}

    payload = b"\x89PNG\r\n\x1a\n" + bytes(100)
    versions: tuple[PayloadVersion, ...] = ("2.0", "1.0")
    for version in versions:
        response = invoke(
            handler, version, "PUT", "/img", headers=[("Content-Type", "image/png")], body=payload
        )
        assert response.body == payload
    assert seen == [payload, payload]
