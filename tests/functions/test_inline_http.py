"""HTTP routes of python functions, event built and result mapped in the instance: differential
against the JSON path (the event as JSON decoding gives it; the result as its JSON maps)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.functions.events import build_http_event_v2, encode_event, result_to_response_v2
from gateway.functions.inline_http import (
    decode_http_reply,
    encode_request_parts,
    event_from_parts,
    http_reply,
)
from gateway.functions.python_runtime.client import _Tagged, encode_result
from gateway.functions.spec import MAX_RESPONSE_BYTES

header_names = st.sampled_from(["Host", "Cookie", "Content-Type", "User-Agent", "X-A", "x-a", "Accept"])
latin1 = st.characters(min_codepoint=32, max_codepoint=255, exclude_characters="\x7f")
header_values = st.text(latin1, max_size=20)
requests = st.fixed_dictionaries(
    {
        "method": st.sampled_from(["GET", "POST", "DELETE"]),
        "raw_path": st.sampled_from(["/", "/hello/bob", "/a%20b/%E2%82%AC", "/x/y%2Fz"]),
        "raw_query": st.sampled_from(["", "a=1", "a=1&a=2&b", "q=%20x+y&=&z=%ZZ"]),
        "headers": st.lists(st.tuples(header_names, header_values), max_size=6),
        "body": st.binary(max_size=40) | st.text(max_size=20).map(str.encode),
        "client_ip": st.sampled_from(["127.0.0.1", "::1"]),
        "route_key": st.sampled_from(["$default", "GET /hello/{name}"]),
        "path_params": st.none()
        | st.dictionaries(st.sampled_from(["name", "id"]), st.text(max_size=8), max_size=2),
        "request_id": st.uuids().map(str),
        "time_ms": st.integers(0, 4_102_444_800_000),
    }
)


@settings(max_examples=300, deadline=None)
@given(requests)
def test_the_event_built_in_the_instance_is_the_json_events_decoding(fields: dict[str, Any]) -> None:
    expected = json.loads(encode_event(build_http_event_v2(**fields)))
    assert event_from_parts(encode_request_parts(**fields)) == expected


numbers = st.integers(-(2**53), 2**53) | st.floats(allow_nan=False)
json_scalars = st.none() | st.booleans() | numbers | st.text()
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
)
plain_responses = st.fixed_dictionaries(
    {"statusCode": st.integers(0, 700)},
    optional={
        "headers": st.dictionaries(st.text(max_size=8), st.text(max_size=8) | st.integers(), max_size=3),
        "cookies": st.lists(st.text(max_size=10), max_size=2),
        "body": st.none() | st.text(max_size=30) | st.sampled_from(["aGVsbG8=", "not base64!"]) | json_values,
        "isBase64Encoded": st.none() | st.booleans(),
        "other": json_values,
    },
)
odd_results = st.sampled_from([{"statusCode": "201"}, {"statusCode": True}, "\ud800", {"statusCode": 200.0}])
results = plain_responses | json_values | odd_results


def _mapped_as_json(result: Any) -> tuple[int, list[tuple[str, str]], bytes]:
    status, headers, body = result_to_response_v2(encode_result(result))
    return status, headers, body


@settings(max_examples=500, deadline=None)
@given(results)
def test_a_result_mapped_in_the_instance_is_its_json_mapped(result: Any) -> None:
    reply = http_reply(result, encode_result)
    assert reply is not None
    assert tuple(decode_http_reply(reply)) == _mapped_as_json(result)


def test_a_result_that_is_not_json_is_the_runtimes_marshal_error() -> None:
    with pytest.raises(_Tagged) as caught:
        http_reply({"statusCode": 200, "body": {1, 2}}, encode_result)
    assert caught.value.error_type == "Runtime.MarshalError"
    with pytest.raises(_Tagged):
        http_reply({"statusCode": 200, "body": "ok", "extra": object()}, encode_result)


def test_a_result_larger_than_a_response_may_be_is_left_to_the_json_path() -> None:
    # The caller sends the JSON as it is, and the gateway refuses it (Function.ResponseSizeTooLarge).
    big = {"statusCode": 200, "body": "x" * (MAX_RESPONSE_BYTES + 1)}
    assert http_reply(big, encode_result) is None
    escaped = {"statusCode": 200, "headers": {"x": "\0" * (MAX_RESPONSE_BYTES // 5)}}
    assert http_reply(escaped, encode_result) is None
