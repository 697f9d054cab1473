"""AWS event builders: shapes against AWS's samples, request edge cases, result mapping, batch failures."""

from __future__ import annotations

import base64
import hashlib
import json
import re
from pathlib import Path
from typing import Any
from urllib.parse import quote

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.functions.events import (
    BatchMessage,
    EventOrigin,
    HttpEventV2,
    HttpResult,
    RestEventV1,
    build_http_event_v2,
    build_rest_event_v1,
    build_schedule_event,
    build_sqs_batch,
    encode_event,
    event_to_dict,
    format_request_time,
    function_error_response,
    parse_batch_item_failures,
    result_to_response,
    result_to_response_v1,
    result_to_response_v2,
    route_key,
    with_forwarded_headers,
)

SAMPLES = Path("/work/shared/aws-events")
TIME_MS = 1795795560123  # 27/Nov/2026:16:06:00.123 UTC
HTTP_API_ERROR = HttpResult(
    500, [("Content-Type", "application/json")], b'{"message":"Internal Server Error"}'
)
REST_API_ERROR = HttpResult(
    502, [("Content-Type", "application/json")], b'{"message": "Internal server error"}'
)


def load_sample(name: str) -> dict[str, Any]:
    sample: dict[str, Any] = json.loads((SAMPLES / name).read_text())
    return sample


def shape(value: Any) -> Any:
    """The structure of a JSON value: keys and nesting kept, scalars replaced by their type's name."""
    if isinstance(value, dict):
        return {key: shape(item) for key, item in value.items()}
    if isinstance(value, list):
        return [shape(item) for item in value[:1]]
    return type(value).__name__


def drop(tree: dict[str, Any], *paths: str) -> dict[str, Any]:
    """A copy of tree without the dotted paths (each must exist, so a stale exception fails)."""
    tree = json.loads(json.dumps(tree))
    for path in paths:
        *parents, leaf = path.split(".")
        node = tree
        for part in parents:
            node = node[part]
        del node[leaf]
    return tree


def v2(**overrides: Any) -> dict[str, Any]:
    args: dict[str, Any] = {
        "method": "GET",
        "raw_path": "/",
        "raw_query": "",
        "headers": [("Host", "api.example.com")],
        "body": b"",
        "client_ip": "203.0.113.9",
        "route_key": "$default",
        "path_params": None,
        "request_id": "req-1",
        "time_ms": TIME_MS,
    }
    args.update(overrides)
    return event_to_dict(build_http_event_v2(**args))


def v1(**overrides: Any) -> dict[str, Any]:
    args: dict[str, Any] = {
        "method": "GET",
        "raw_path": "/",
        "raw_query": "",
        "headers": [("Host", "api.example.com")],
        "body": b"",
        "client_ip": "203.0.113.9",
        "route_key": "$default",
        "path_params": None,
        "request_id": "req-1",
        "time_ms": TIME_MS,
    }
    args.update(overrides)
    return event_to_dict(build_rest_event_v1(**args))


# --- shapes against AWS's samples ------------------------------------------------------------------


def sample_request_v2() -> dict[str, Any]:
    """The request behind apiGatewayProxyV2Event.json, built with our builder."""
    sample = load_sample("apiGatewayProxyV2Event.json")
    return v2(
        method="POST",
        raw_path="/my/path",
        raw_query="parameter1=value1&parameter1=value2&parameter2=value",
        headers=[
            ("Header1", "value1"),
            ("header2", "value1"),
            ("Cookie", "cookie1; cookie2"),
            ("HEADER2", "value2"),
            # The sample's body is JSON text yet it sends no Content-Type; without one, HTTP APIs
            # base64-encode the body (see test_bodies_text_or_base64).
            ("Content-Type", "application/json"),
        ],
        body=sample["body"].encode(),
        client_ip="192.168.0.1/32",
        path_params={"parameter1": "value1"},
        request_id="id",
        time_ms=sample["requestContext"]["timeEpoch"],
        origin=EventOrigin(account_id="123456789012", api_id="api-id"),
        authorizer=sample["requestContext"]["authorizer"],
        stage_variables=sample["stageVariables"],
    )


def test_v2_event_matches_the_aws_sample_key_for_key() -> None:
    sample = load_sample("apiGatewayProxyV2Event.json")
    ours = sample_request_v2()
    # Differences, each for a reason: the sample's mTLS certificate (lambdagate has no mTLS here),
    # the domain (ours comes from the Host header, the sample has none), the user agent (the
    # sample sends no User-Agent header yet reports one), and the time text (the sample's
    # time and timeEpoch disagree: 1583348638390 is 04/Mar/2020, checked below).
    assert ours["headers"] == sample["headers"] | {"content-type": "application/json"}
    ours = drop(ours, "headers.content-type")
    assert shape(ours) == shape(drop(sample, "requestContext.authentication"))
    expected = drop(
        sample,
        "requestContext.authentication",
        "requestContext.domainName",
        "requestContext.domainPrefix",
        "requestContext.http.userAgent",
        "requestContext.time",
    )
    assert (
        drop(
            ours,
            "requestContext.domainName",
            "requestContext.domainPrefix",
            "requestContext.http.userAgent",
            "requestContext.time",
        )
        == expected
    )
    assert ours["requestContext"]["time"] == "04/Mar/2020:19:03:58 +0000"


def test_v2_event_omits_what_aws_omits() -> None:
    event = v2()
    for absent in ("cookies", "queryStringParameters", "pathParameters", "stageVariables", "body"):
        assert absent not in event
    assert "authorizer" not in event["requestContext"]
    assert event["isBase64Encoded"] is False
    assert event["rawQueryString"] == ""
    assert event["requestContext"]["http"]["userAgent"] == ""


def sample_request_v1() -> dict[str, Any]:
    sample = load_sample("apiGatewayProxyEvent.json")
    return v1(
        method="GET",
        raw_path="/my/path",
        raw_query="parameter1=value1&parameter1=value2&parameter2=value",
        headers=[
            ("header1", "value1"),
            ("header2", "value1"),
            ("header2", "value2"),
            ("User-Agent", "user-agent"),
            ("Content-Type", "text/plain"),  # the sample's text body is sent as text: see the body tests
        ],
        body=sample["body"].encode(),
        client_ip="192.168.0.1/32",
        route_key="GET /my/path",
        request_id="id=",
        time_ms=sample["requestContext"]["requestTimeEpoch"],
        origin=EventOrigin(api_id="id"),
        authorizer=sample["requestContext"]["authorizer"],
    )


def test_v1_event_matches_the_aws_sample_key_for_key() -> None:
    sample = load_sample("apiGatewayProxyEvent.json")
    ours = sample_request_v1()
    # The sample's mTLS certificate is left out; real events carry identity.cognitoAmr, which the
    # sample lacks; resourceId is an id string in real events (null in the sample).
    # Header maps are compared by value in test_v1_event_values_follow_aws.
    sample_shape = shape(drop(sample, "requestContext.identity.clientCert", "headers", "multiValueHeaders"))
    ours = drop(ours, "headers", "multiValueHeaders")
    sample_shape["requestContext"]["identity"]["cognitoAmr"] = "NoneType"
    sample_shape["requestContext"]["resourceId"] = "str"
    assert shape(ours) == sample_shape


def test_v1_event_values_follow_aws() -> None:
    sample = load_sample("apiGatewayProxyEvent.json")
    ours = sample_request_v1()
    for key in ("version", "resource", "path", "httpMethod", "pathParameters", "stageVariables", "body"):
        assert ours[key] == sample[key], key
    assert ours["isBase64Encoded"] is False  # text/plain sample body: see the Content-Type tests
    assert ours["multiValueQueryStringParameters"] == sample["multiValueQueryStringParameters"]
    # A repeated name keeps its last value in the single-value maps (the sample itself is
    # inconsistent for parameter1: it shows the first).
    assert ours["queryStringParameters"] == {"parameter1": "value2", "parameter2": "value"}
    assert ours["headers"] == {
        "header1": "value1",
        "header2": "value2",
        "User-Agent": "user-agent",
        "Content-Type": "text/plain",
    }
    assert (
        {type(value) for value in sample["headers"].values()}
        == {type(v) for v in ours["headers"].values()}
        == {str}
    )
    assert ours["multiValueHeaders"]["header2"] == sample["multiValueHeaders"]["header2"]
    context, sample_context = ours["requestContext"], sample["requestContext"]
    for key in ("accountId", "apiId", "httpMethod", "path", "protocol", "requestId", "requestTime"):
        assert context[key] == sample_context[key], key
    assert context["requestTimeEpoch"] == sample_context["requestTimeEpoch"]
    assert context["identity"]["sourceIp"] == "192.168.0.1/32"
    assert context["identity"]["userAgent"] == "user-agent"
    assert context["resourcePath"] == "/my/path"
    assert context["stage"] == "$default"


def test_v1_event_nulls_what_aws_nulls() -> None:
    event = v1(headers=[])
    for null in (
        "headers",
        "multiValueHeaders",
        "queryStringParameters",
        "multiValueQueryStringParameters",
        "pathParameters",
        "stageVariables",
        "body",
    ):
        assert null in event and event[null] is None, null
    assert "authorizer" not in event["requestContext"]
    assert event["requestContext"]["identity"]["userAgent"] is None
    assert event["resource"] == "$default"
    assert event["requestContext"]["resourcePath"] == "$default"


def test_sqs_batch_matches_the_aws_sample() -> None:
    sample = load_sample("sqsEvent.json")
    records = sample["Records"]
    messages = [
        BatchMessage(
            message_id=record["messageId"],
            receipt_handle=record["receiptHandle"],
            body=record["body"],
            sent_ms=int(record["attributes"]["SentTimestamp"]),
            first_receive_ms=int(record["attributes"]["ApproximateFirstReceiveTimestamp"]),
            receive_count=int(record["attributes"]["ApproximateReceiveCount"]),
        )
        for record in records
    ]
    batch = event_to_dict(
        build_sqs_batch(
            messages,
            queue="my-queue",
            origin=EventOrigin(account_id="123456789012", region="us-east-2"),
            sender_id="AIDAIENQZJOLO23YVJ4VO",
        )
    )
    # Records[0] of the sample has a message attribute; compare the attribute-free record exactly.
    assert batch["Records"][1] | {"md5OfBody": records[1]["md5OfBody"]} == records[1]
    first = drop(batch["Records"][0], "md5OfBody")
    assert first == drop(records[0], "md5OfBody", "messageAttributes") | {"messageAttributes": {}}
    # The sample's digests are placeholders (both records show the same one); ours are real.
    assert (
        batch["Records"][0]["md5OfBody"]
        == hashlib.md5(b"Test message.").hexdigest()
        == records[0]["md5OfBody"]
    )
    assert batch["Records"][1]["md5OfBody"] == hashlib.md5(records[1]["body"].encode()).hexdigest()


def test_sqs_message_attributes_have_lambdas_shape() -> None:
    batch = event_to_dict(
        build_sqs_batch([BatchMessage("m", "b", 5, attributes={"kind": "order"})], queue="q")
    )
    attribute = batch["Records"][0]["messageAttributes"]["kind"]
    assert attribute == {
        "stringValue": "order",
        "dataType": "String",
        "stringListValues": [],
        "binaryListValues": [],
    }
    sample_attribute = load_sample("sqsEvent.json")["Records"][0]["messageAttributes"]["testAttr"]
    assert {"stringValue", "dataType"} <= attribute.keys() & sample_attribute.keys()
    record = batch["Records"][0]
    assert record["receiptHandle"] == "m"  # defaults to the message id
    assert record["attributes"]["ApproximateFirstReceiveTimestamp"] == "5"  # defaults to sent time


def test_sqs_shape_is_the_samples() -> None:
    sample = load_sample("sqsEvent.json")
    batch = event_to_dict(build_sqs_batch([BatchMessage("m", "b", 1)], queue="q"))
    assert batch.keys() == sample.keys() == {"Records"}
    # The sample's second record has no message attributes, like ours.
    assert shape(batch["Records"][0]) == shape(sample["Records"][1])
    assert shape(batch["Records"][0]) == shape(sample["Records"][0]) | {"messageAttributes": {}}


def test_schedule_event_matches_the_aws_sample() -> None:
    sample = load_sample("eventBridgeSchedulerEvent.json")
    event = event_to_dict(
        build_schedule_event(
            schedule="aaaaa",
            fire_time_s=1740067380,  # 2025-02-20T16:03:00Z
            origin=EventOrigin(account_id="533568316194", region="us-east-1"),
            event_id="d167b752-343a-4b28-afd6-d4de056319e8",
        )
    )
    assert shape(event) == shape(sample)
    # The sample's resource ARN names another account than its `account`; ours are consistent.
    assert drop(event, "resources") == drop(sample, "resources")
    assert event["resources"] == ["arn:aws:scheduler:us-east-1:533568316194:schedule/default/aaaaa"]


def test_schedule_event_ids_are_unique_uuids() -> None:
    first = build_schedule_event(schedule="s", fire_time_s=0)
    second = build_schedule_event(schedule="s", fire_time_s=0)
    assert first.id != second.id
    assert re.fullmatch(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[0-9a-f]{4}-[0-9a-f]{12}", first.id)
    assert first.time == "1970-01-01T00:00:00Z"


# --- request edge cases ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw_query", "single_v2", "multi_v1"),
    [
        ("a=1", {"a": "1"}, {"a": ["1"]}),
        ("a=1&a=2&a=3", {"a": "1,2,3"}, {"a": ["1", "2", "3"]}),
        ("flag", {"flag": ""}, {"flag": [""]}),
        ("flag=", {"flag": ""}, {"flag": [""]}),
        ("a=x+y&b=x%20y&c=%2B", {"a": "x y", "b": "x y", "c": "+"}, {"a": ["x y"], "b": ["x y"], "c": ["+"]}),
        ("a%5B0%5D=%E2%9C%93", {"a[0]": "✓"}, {"a[0]": ["✓"]}),
        ("a=1&&b=2&", {"a": "1", "b": "2"}, {"a": ["1"], "b": ["2"]}),
        ("a=b=c", {"a": "b=c"}, {"a": ["b=c"]}),
        ("a=%zz", {"a": "%zz"}, {"a": ["%zz"]}),
        ("a=1,2&a=3", {"a": "1,2,3"}, {"a": ["1,2", "3"]}),
    ],
)
def test_query_strings(raw_query: str, single_v2: dict[str, str], multi_v1: dict[str, list[str]]) -> None:
    event2 = v2(raw_query=raw_query)
    assert event2["rawQueryString"] == raw_query
    assert event2["queryStringParameters"] == single_v2
    event1 = v1(raw_query=raw_query)
    assert event1["multiValueQueryStringParameters"] == multi_v1
    assert event1["queryStringParameters"] == {key: values[-1] for key, values in multi_v1.items()}


def test_query_string_of_only_separators_is_no_query() -> None:
    assert "queryStringParameters" not in v2(raw_query="&&")
    assert v1(raw_query="&&")["queryStringParameters"] is None


@pytest.mark.parametrize(
    ("cookie_headers", "cookies"),
    [
        (["a=1"], ["a=1"]),
        (["a=1; b=2"], ["a=1", "b=2"]),
        (["a=1;b=2"], ["a=1", "b=2"]),
        (["a=1", "b=2; c=3"], ["a=1", "b=2", "c=3"]),
        (["a=1; ; b=2;"], ["a=1", "b=2"]),
        (["session=x=y; theme=dark"], ["session=x=y", "theme=dark"]),
    ],
)
def test_cookies(cookie_headers: list[str], cookies: list[str]) -> None:
    headers = [("Host", "h"), *(("Cookie", value) for value in cookie_headers)]
    event2 = v2(headers=headers)
    assert event2["cookies"] == cookies
    assert "cookie" not in event2["headers"]
    event1 = v1(headers=headers)
    assert event1["multiValueHeaders"]["Cookie"] == cookie_headers  # REST keeps Cookie as a header


def test_empty_cookie_header_gives_no_cookies() -> None:
    event = v2(headers=[("Cookie", "")])
    assert "cookies" not in event
    assert event["headers"] == {}


def test_headers_v2_lower_cased_and_joined_with_commas() -> None:
    event = v2(
        headers=[
            ("Host", "api.example.com"),
            ("X-Multi", "a"),
            ("x-multi", "b, c"),
            ("Accept", "*/*"),
            ("X-MULTI", ""),
            ("User-Agent", "curl/8"),
        ]
    )
    assert event["headers"] == {
        "host": "api.example.com",
        "x-multi": "a,b, c,",
        "accept": "*/*",
        "user-agent": "curl/8",
    }
    assert event["requestContext"]["http"]["userAgent"] == "curl/8"


def test_headers_v1_keep_the_clients_spelling() -> None:
    event = v1(
        headers=[("Host", "h"), ("X-Multi", "a"), ("X-Multi", "b"), ("x-multi", "c"), ("user-agent", "ua")]
    )
    assert event["headers"] == {"Host": "h", "X-Multi": "b", "x-multi": "c", "user-agent": "ua"}
    assert event["multiValueHeaders"] == {
        "Host": ["h"],
        "X-Multi": ["a", "b"],
        "x-multi": ["c"],
        "user-agent": ["ua"],
    }
    assert event["requestContext"]["identity"]["userAgent"] == "ua"


@pytest.mark.parametrize(
    ("host", "domain_name", "domain_prefix"),
    [
        ("api.example.com", "api.example.com", "api"),
        ("api.example.com:8443", "api.example.com", "api"),
        ("localhost:8080", "localhost", "localhost"),
        ("[::1]:8080", "[::1]", "[::1]"),
        ("[::1]", "[::1]", "[::1]"),
        (None, "localhost", "localhost"),
    ],
)
def test_domain_name_from_host(host: str | None, domain_name: str, domain_prefix: str) -> None:
    headers = [] if host is None else [("Host", host)]
    for event in (v2(headers=headers), v1(headers=headers)):
        assert event["requestContext"]["domainName"] == domain_name
        assert event["requestContext"]["domainPrefix"] == domain_prefix


@pytest.mark.parametrize(
    ("content_type", "body", "text"),
    [
        ("application/json", b'{"a": 1}', True),
        ("application/json; charset=utf-8", '{"a": "\u00e9"}'.encode(), True),
        ("text/plain", b"hello", True),
        ("TEXT/HTML; charset=UTF-8", b"<p>hi</p>", True),
        ("application/xml", b"<a/>", True),
        ("application/javascript", b"f()", True),
        ("application/x-www-form-urlencoded", b"a=1&b=2", False),
        ("application/octet-stream", b"\x00\x01\xff", False),
        ("image/png", b"\x89PNG\r\n", False),
        ("application/vnd.api+json", b"{}", False),
        (None, b"hello", False),
        ("text/plain", b"\xff\xfe not utf-8", False),
    ],
)
def test_bodies_text_or_base64(content_type: str | None, body: bytes, text: bool) -> None:
    headers = [("Host", "h")] if content_type is None else [("Host", "h"), ("Content-Type", content_type)]
    for event in (
        v2(method="POST", headers=headers, body=body),
        v1(method="POST", headers=headers, body=body),
    ):
        assert event["isBase64Encoded"] is (not text)
        if text:
            assert event["body"] == body.decode()
        else:
            assert base64.b64decode(event["body"], validate=True) == body


def test_empty_body() -> None:
    event2 = v2(method="POST", headers=[("Content-Type", "application/octet-stream")], body=b"")
    assert "body" not in event2 and event2["isBase64Encoded"] is False
    event1 = v1(method="POST", headers=[("Content-Type", "application/octet-stream")], body=b"")
    assert event1["body"] is None and event1["isBase64Encoded"] is False


def test_paths_and_path_parameters() -> None:
    params = {"name": "J%C3%BCrgen%20M", "rest": "a%2Fb+c"}
    event2 = v2(
        raw_path="/users/J%C3%BCrgen%20M/a%2Fb+c", route_key="GET /users/{name}/{rest+}", path_params=params
    )
    # HTTP APIs hand over the path percent-decoded; REST APIs as sent. Both decode parameters.
    assert event2["rawPath"] == "/users/Jürgen M/a/b+c"
    assert event2["requestContext"]["http"]["path"] == "/users/Jürgen M/a/b+c"
    assert event2["pathParameters"] == {"name": "Jürgen M", "rest": "a/b+c"}
    assert event2["routeKey"] == event2["requestContext"]["routeKey"] == "GET /users/{name}/{rest+}"
    event1 = v1(
        raw_path="/users/J%C3%BCrgen%20M/a%2Fb+c", route_key="GET /users/{name}/{rest+}", path_params=params
    )
    assert event1["path"] == event1["requestContext"]["path"] == "/users/J%C3%BCrgen%20M/a%2Fb+c"
    assert event1["pathParameters"] == {"name": "Jürgen M", "rest": "a/b+c"}
    assert event1["resource"] == "/users/{name}/{rest+}"


def test_empty_path_params_are_absent() -> None:
    assert "pathParameters" not in v2(path_params={})
    assert v1(path_params={})["pathParameters"] is None


def test_request_context_v2() -> None:
    event = v2(
        method="DELETE",
        raw_path="/x",
        headers=[("Host", "api.example.com"), ("User-Agent", "ua")],
        request_id="abc",
        stage="prod",
        origin=EventOrigin(account_id="999", api_id="myapi"),
        authorizer={"lambda": {"consumer": "alice"}},
    )
    assert event["requestContext"] == {
        "accountId": "999",
        "apiId": "myapi",
        "domainName": "api.example.com",
        "domainPrefix": "api",
        "http": {
            "method": "DELETE",
            "path": "/x",
            "protocol": "HTTP/1.1",
            "sourceIp": "203.0.113.9",
            "userAgent": "ua",
        },
        "requestId": "abc",
        "routeKey": "$default",
        "stage": "prod",
        "time": "27/Nov/2026:16:06:00 +0000",
        "timeEpoch": TIME_MS,
        "authorizer": {"lambda": {"consumer": "alice"}},
    }


def test_stage_variables() -> None:
    assert v2(stage_variables={"env": "prod"})["stageVariables"] == {"env": "prod"}
    assert v1(stage_variables={"env": "prod"})["stageVariables"] == {"env": "prod"}


@pytest.mark.parametrize(
    ("time_ms", "text"),
    [
        (0, "01/Jan/1970:00:00:00 +0000"),
        (1583349317135, "04/Mar/2020:19:15:17 +0000"),
        (TIME_MS, "27/Nov/2026:16:06:00 +0000"),
        (1735689599999, "31/Dec/2024:23:59:59 +0000"),
    ],
)
def test_request_time_format(time_ms: int, text: str) -> None:
    assert format_request_time(time_ms) == text


@pytest.mark.parametrize(
    ("pattern", "methods", "method", "key"),
    [
        ("/hello/{name}", ["GET", "POST"], "post", "POST /hello/{name}"),
        ("/hello/{name}", ["GET"], "GET", "GET /hello/{name}"),
        ("/any", None, "PUT", "ANY /any"),
        ("/any", [], "PUT", "ANY /any"),
        ("$default", ["GET"], "GET", "$default"),
    ],
)
def test_route_key(pattern: str, methods: list[str] | None, method: str, key: str) -> None:
    assert route_key(pattern, methods, method) == key


def test_forwarded_headers_like_api_gateway() -> None:
    headers = with_forwarded_headers(
        [
            ("Host", "h"),
            ("X-Forwarded-For", "10.0.0.1"),
            ("X-Forwarded-Proto", "http"),
            ("x-forwarded-port", "1"),
        ],
        "203.0.113.9",
        "https",
        443,
    )
    assert headers == [
        ("Host", "h"),
        ("X-Forwarded-For", "10.0.0.1, 203.0.113.9"),
        ("X-Forwarded-Port", "443"),
        ("X-Forwarded-Proto", "https"),
    ]
    assert with_forwarded_headers([], "1.2.3.4", "http", 80)[0] == ("X-Forwarded-For", "1.2.3.4")


def test_encode_event_is_the_dicts_json() -> None:
    event = build_http_event_v2(
        method="GET",
        raw_path="/",
        raw_query="a=1",
        headers=[("Cookie", "a=1")],
        body=b"x",
        client_ip="1.2.3.4",
        route_key="$default",
        path_params=None,
        request_id="r",
        time_ms=0,
    )
    assert isinstance(event, HttpEventV2)
    assert json.loads(encode_event(event)) == event_to_dict(event)
    rest = build_rest_event_v1(
        method="GET",
        raw_path="/",
        raw_query="",
        headers=[],
        body=b"",
        client_ip="1.2.3.4",
        route_key="$default",
        path_params=None,
        request_id="r",
        time_ms=0,
    )
    assert isinstance(rest, RestEventV1)
    assert json.loads(encode_event(rest)) == event_to_dict(rest)


header_names = st.text(alphabet="abcXYZ-", min_size=1, max_size=6)
header_values = st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=8)
query_text = st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x2FF), max_size=6)


@settings(max_examples=300, deadline=None)
@given(
    headers=st.lists(st.tuples(header_names, header_values), max_size=8),
    query=st.lists(st.tuples(query_text.filter(bool), query_text), max_size=6),
)
def test_headers_and_query_properties(headers: list[tuple[str, str]], query: list[tuple[str, str]]) -> None:
    raw_query = "&".join(f"{quote(k, safe='')}={quote(v, safe='')}" for k, v in query)
    event2 = v2(headers=headers, raw_query=raw_query)
    event1 = v1(headers=headers, raw_query=raw_query)
    for name in {n.lower() for n, _ in headers}:
        assert event2["headers"][name] == ",".join(v for n, v in headers if n.lower() == name)
    for name in {n for n, _ in headers}:
        values = [v for n, v in headers if n == name]
        assert event1["multiValueHeaders"][name] == values
        assert event1["headers"][name] == values[-1]
    for key in {k for k, _ in query}:
        values = [v for k, v in query if k == key]
        assert event2["queryStringParameters"][key] == ",".join(values)
        assert event1["multiValueQueryStringParameters"][key] == values


# --- results back to HTTP: payload 2.0 ---------------------------------------------------------------


def payload(value: Any) -> bytes:
    """A result as the Python runtime serializes it (json.dumps: with spaces)."""
    return json.dumps(value).encode()


@pytest.mark.parametrize(
    ("result", "expected"),
    [
        # No statusCode: 200, application/json, the payload as returned (a string stays JSON-quoted).
        ("hello", (200, [("Content-Type", "application/json")], b'"hello"')),
        ({"message": "hi"}, (200, [("Content-Type", "application/json")], b'{"message": "hi"}')),
        (
            {"body": "x", "headers": {"a": "b"}},
            (200, [("Content-Type", "application/json")], b'{"body": "x", "headers": {"a": "b"}}'),
        ),
        ([1, 2], (200, [("Content-Type", "application/json")], b"[1, 2]")),
        (42, (200, [("Content-Type", "application/json")], b"42")),
        (None, (200, [("Content-Type", "application/json")], b"null")),
        (True, (200, [("Content-Type", "application/json")], b"true")),
        # Structured results.
        ({"statusCode": 204}, (204, [], b"")),
        ({"statusCode": 201, "body": "made"}, (201, [], b"made")),
        ({"statusCode": "404", "body": "nope"}, (404, [], b"nope")),
        (
            {
                "statusCode": 200,
                "headers": {"Content-Type": "text/plain", "X-N": 5, "X-F": 1.5, "X-B": True},
                "body": "t",
            },
            (200, [("Content-Type", "text/plain"), ("X-N", "5"), ("X-F", "1.5"), ("X-B", "true")], b"t"),
        ),
        (
            {
                "statusCode": 200,
                "cookies": ["a=1; Path=/", "b=2; HttpOnly"],
                "headers": {"Set-Cookie": "c=3"},
            },
            (
                200,
                [("Set-Cookie", "c=3"), ("Set-Cookie", "a=1; Path=/"), ("Set-Cookie", "b=2; HttpOnly")],
                b"",
            ),
        ),
        (
            {"statusCode": 200, "body": base64.b64encode(b"\x00\xffbin").decode(), "isBase64Encoded": True},
            (200, [], b"\x00\xffbin"),
        ),
        ({"statusCode": 200, "body": "aGk=", "isBase64Encoded": False}, (200, [], b"aGk=")),
        ({"statusCode": 200, "body": "\u00e9"}, (200, [], "\u00e9".encode())),
        ({"statusCode": 200, "body": {"a": 1}}, (200, [], b'{"a":1}')),
        ({"statusCode": 200, "body": None, "headers": None, "cookies": None}, (200, [], b"")),
        ({"statusCode": 200, "multiValueHeaders": {"x": ["1", "2"]}, "extra": 1}, (200, [], b"")),
        # Malformed: API Gateway's 500.
        ({"statusCode": None}, HTTP_API_ERROR),
        ({"statusCode": "abc"}, HTTP_API_ERROR),
        ({"statusCode": 99}, HTTP_API_ERROR),
        ({"statusCode": 600}, HTTP_API_ERROR),
        ({"statusCode": 200.5}, HTTP_API_ERROR),
        ({"statusCode": 200, "headers": {"a": {"b": 1}}}, HTTP_API_ERROR),
        ({"statusCode": 200, "headers": ["a"]}, HTTP_API_ERROR),
        ({"statusCode": 200, "cookies": "a=1"}, HTTP_API_ERROR),
        ({"statusCode": 200, "body": "not base64!", "isBase64Encoded": True}, HTTP_API_ERROR),
        ({"statusCode": 200, "isBase64Encoded": "yes"}, HTTP_API_ERROR),
    ],
)
def test_result_to_response_v2(result: Any, expected: tuple[int, list[tuple[str, str]], bytes]) -> None:
    assert result_to_response_v2(payload(result)) == expected


@pytest.mark.parametrize("raw", [b"", b"not json", b"{", b'{"statusCode": 200'])
def test_result_v2_that_is_not_json(raw: bytes) -> None:
    assert result_to_response_v2(raw) == HTTP_API_ERROR


def test_result_v2_keeps_the_payload_bytes() -> None:
    raw = b'{ "a" :  1 }'
    assert result_to_response_v2(raw).body == raw


# --- results back to HTTP: payload 1.0 ---------------------------------------------------------------

JSON_TYPE = ("Content-Type", "application/json")


@pytest.mark.parametrize(
    ("result", "expected"),
    [
        ({"statusCode": 200, "body": "ok"}, (200, [JSON_TYPE], b"ok")),
        ({"statusCode": "201"}, (201, [JSON_TYPE], b"")),
        (
            {"statusCode": 200, "body": None, "headers": None, "multiValueHeaders": None},
            (200, [JSON_TYPE], b""),
        ),
        (
            {"statusCode": 200, "headers": {"Content-Type": "text/html", "X-A": "1"}, "body": "<p>"},
            (200, [("Content-Type", "text/html"), ("X-A", "1")], b"<p>"),
        ),
        (
            {"statusCode": 302, "multiValueHeaders": {"Set-Cookie": ["a=1", "b=2"], "Location": ["/x"]}},
            (302, [("Set-Cookie", "a=1"), ("Set-Cookie", "b=2"), ("Location", "/x"), JSON_TYPE], b""),
        ),
        (
            # multiValueHeaders win for a name in both (case-insensitively); headers fill in the rest.
            {
                "statusCode": 200,
                "headers": {"x-a": "single", "X-B": "b", "content-type": "text/plain"},
                "multiValueHeaders": {"X-A": ["m1", "m2"]},
            },
            (200, [("X-B", "b"), ("content-type", "text/plain"), ("X-A", "m1"), ("X-A", "m2")], b""),
        ),
        (
            {"statusCode": 200, "headers": {"X-N": 7}, "multiValueHeaders": {"X-M": [1, False]}},
            (200, [("X-N", "7"), ("X-M", "1"), ("X-M", "false"), JSON_TYPE], b""),
        ),
        (
            {"statusCode": 200, "body": base64.b64encode(b"\x89PNG").decode(), "isBase64Encoded": True},
            (200, [JSON_TYPE], b"\x89PNG"),
        ),
        # Malformed: REST API's 502.
        ({"body": "no status"}, REST_API_ERROR),
        ("hello", REST_API_ERROR),
        ([1], REST_API_ERROR),
        (None, REST_API_ERROR),
        ({"statusCode": 200, "body": {"a": 1}}, REST_API_ERROR),
        ({"statusCode": 200, "body": 5}, REST_API_ERROR),
        ({"statusCode": 200, "cookies": ["a=1"]}, REST_API_ERROR),
        ({"statusCode": 200, "unexpected": True}, REST_API_ERROR),
        ({"statusCode": 1000}, REST_API_ERROR),
        ({"statusCode": "2OO"}, REST_API_ERROR),
        ({"statusCode": 200, "multiValueHeaders": {"a": "b"}}, REST_API_ERROR),
        ({"statusCode": 200, "body": "%%%", "isBase64Encoded": True}, REST_API_ERROR),
    ],
)
def test_result_to_response_v1(result: Any, expected: tuple[int, list[tuple[str, str]], bytes]) -> None:
    assert result_to_response_v1(payload(result)) == expected


def test_result_v1_that_is_not_json() -> None:
    assert result_to_response_v1(b"{nope") == REST_API_ERROR


def test_result_dispatch_and_function_errors() -> None:
    assert result_to_response("2.0", b'"x"') == (200, [JSON_TYPE], b'"x"')
    assert result_to_response("1.0", b'"x"') == REST_API_ERROR
    assert function_error_response("2.0") == HTTP_API_ERROR
    assert function_error_response("1.0") == REST_API_ERROR
    assert json.loads(HTTP_API_ERROR.body) == {"message": "Internal Server Error"}
    assert json.loads(REST_API_ERROR.body) == {"message": "Internal server error"}


def test_error_results_are_not_shared_mutable_lists() -> None:
    first = result_to_response_v2(b"nope")
    first.headers.append(("X", "y"))
    # A caller appending headers to one error response must not change the next one.
    assert result_to_response_v2(b"nope") == HTTP_API_ERROR


@settings(max_examples=300, deadline=None)
@given(
    status=st.integers(100, 599),
    headers=st.dictionaries(header_names, header_values, max_size=5),
    cookies=st.lists(header_values, max_size=3),
    body=st.binary(max_size=64),
)
def test_structured_results_round_trip(
    status: int, headers: dict[str, str], cookies: list[str], body: bytes
) -> None:
    result = {
        "statusCode": status,
        "headers": headers,
        "cookies": cookies,
        "body": base64.b64encode(body).decode(),
        "isBase64Encoded": True,
    }
    response = result_to_response_v2(msgspec.json.encode(result))
    assert response == (status, [*headers.items(), *(("Set-Cookie", c) for c in cookies)], body)
    rest = {key: value for key, value in result.items() if key != "cookies"}
    response1 = result_to_response_v1(msgspec.json.encode(rest))
    assert response1.status == status and response1.body == body


# --- partial batch responses --------------------------------------------------------------------------

IDS = ["m1", "m2", "m3"]


@pytest.mark.parametrize(
    ("raw", "failed"),
    [
        (None, []),
        (b"", []),
        (b"null", []),
        (b"{}", []),
        (b'"done"', []),
        (b"[]", []),
        (b'{"batchItemFailures": []}', []),
        (b'{"batchItemFailures": null}', []),
        (b'{"batchItemFailures": [{"itemIdentifier": "m2"}]}', ["m2"]),
        (b'{"batchItemFailures": [{"itemIdentifier": "m3"}, {"itemIdentifier": "m1"}]}', ["m1", "m3"]),
        (b'{"batchItemFailures": [{"itemIdentifier": "m2"}, {"itemIdentifier": "m2"}]}', ["m2"]),
        (b'{"batchItemFailures": [{"itemIdentifier": "m2", "extra": 1}], "other": 2}', ["m2"]),
        # Complete failures.
        (b"not json", IDS),
        (b'{"batchItemFailures": [{"itemIdentifier": ""}]}', IDS),
        (b'{"batchItemFailures": [{"itemIdentifier": null}]}', IDS),
        (b'{"batchItemFailures": [{"id": "m1"}]}', IDS),
        (b'{"batchItemFailures": [{"itemIdentifier": "unknown"}]}', IDS),
        (b'{"batchItemFailures": [{"itemIdentifier": "m1"}, {"itemIdentifier": "zzz"}]}', IDS),
        (b'{"batchItemFailures": [{"itemIdentifier": 1}]}', IDS),
        (b'{"batchItemFailures": "m1"}', IDS),
        (b'{"batchItemFailures": ["m1"]}', IDS),
    ],
)
def test_parse_batch_item_failures(raw: bytes | None, failed: list[str]) -> None:
    assert parse_batch_item_failures(raw, IDS) == failed
