"""Run the wire-level conformance tables in tests/conformance against the compiled parser."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import pytest

from gateway._fastpath.parser import (
    Incomplete,
    ParsedRequest,
    ParsedResponse,
    ParseError,
    parse_request,
    parse_requests,
    parse_response,
)

TABLES = Path(__file__).parent / "conformance"


def load_cases(name: str) -> list[dict[str, Any]]:
    with (TABLES / name).open("rb") as f:
        cases: list[dict[str, Any]] = tomllib.load(f)["case"]
    names = [case["name"] for case in cases]
    duplicates = {n for n in names if names.count(n) > 1}
    assert not duplicates, f"duplicate case names in {name}: {duplicates}"
    return cases


def wire(text: str) -> bytes:
    # The tables are text; latin-1 maps each code point below 256 to the byte of the same value.
    return text.encode("latin-1")


def pairs(rows: list[list[str]]) -> list[tuple[bytes, bytes]]:
    return [(wire(name), wire(value)) for name, value in rows]


REQUEST_CASES = load_cases("requests.toml")
RESPONSE_CASES = load_cases("responses.toml")

# Fields compared as-is (bytes fields are given as text in the table).
BYTES_FIELDS = ("method", "target", "path", "body")
PLAIN_FIELDS = (
    "version",
    "keep_alive",
    "expect_continue",
    "upgrade",
    "connection_tokens",
    "body_kind",
    "consumed",
)


def check_request_fields(req: ParsedRequest, case: dict[str, Any]) -> None:
    for field in BYTES_FIELDS:
        if field in case:
            assert getattr(req, field) == wire(case[field]), field
    for field in PLAIN_FIELDS:
        if field in case:
            assert getattr(req, field) == case[field], field
    if "query" in case:
        assert req.query == (None if case["query"] is False else wire(case["query"]))
    if "headers" in case:
        assert req.headers == pairs(case["headers"])
    if "trailers" in case:
        assert req.trailers == pairs(case["trailers"])


def parse_case(case: dict[str, Any]) -> list[ParsedRequest]:
    limits = {key: case[key] for key in ("max_target", "max_head", "max_fields") if key in case}
    data = wire(case["request"])
    if "pipelined" in case:
        return parse_requests(data, **limits)
    return [parse_request(data, **limits)]


@pytest.mark.parametrize("case", REQUEST_CASES, ids=[c["name"] for c in REQUEST_CASES])
def test_request_case(case: dict[str, Any]) -> None:
    outcome = case["outcome"]
    if outcome == "error":
        with pytest.raises(ParseError) as excinfo:
            parse_case(case)
        assert (excinfo.value.status, excinfo.value.code) == (case["status"], case["code"])
        assert excinfo.value.message and excinfo.value.message[0].isupper()
    elif outcome == "incomplete":
        with pytest.raises(Incomplete):
            parse_case(case)
    else:
        assert outcome == "ok"
        requests = parse_case(case)
        assert len(requests) == case.get("pipelined", 1)
        check_request_fields(requests[0], case)
        if "targets" in case:
            assert [r.target for r in requests] == [wire(t) for t in case["targets"]]
        if "bodies" in case:
            assert [r.body for r in requests] == [wire(b) for b in case["bodies"]]
        assert sum(r.consumed for r in requests) == len(wire(case["request"]))


def check_response_fields(resp: ParsedResponse, case: dict[str, Any]) -> None:
    for field in ("reason", "body"):
        if field in case:
            assert getattr(resp, field) == wire(case[field]), field
    for field in ("status", "version", "keep_alive", "upgrade", "body_kind", "consumed", "content_length"):
        if field in case:
            assert getattr(resp, field) == case[field], field
    if "headers" in case:
        assert resp.headers == pairs(case["headers"])
    if "trailers" in case:
        assert resp.trailers == pairs(case["trailers"])


@pytest.mark.parametrize("case", RESPONSE_CASES, ids=[c["name"] for c in RESPONSE_CASES])
def test_response_case(case: dict[str, Any]) -> None:
    data = wire(case["response"])
    request_was_head = case.get("request_was_head", False)
    outcome = case["outcome"]
    if outcome == "error":
        with pytest.raises(ParseError) as excinfo:
            parse_response(data, request_was_head=request_was_head)
        # A broken upstream response is always answered with 502 Bad Gateway.
        assert (excinfo.value.status, excinfo.value.code) == (502, case["code"])
    elif outcome == "incomplete":
        with pytest.raises(Incomplete):
            parse_response(data, request_was_head=request_was_head)
    else:
        assert outcome == "ok"
        check_response_fields(parse_response(data, request_was_head=request_was_head), case)


def test_table_is_large_and_covers_every_outcome() -> None:
    outcomes = {c["outcome"] for c in REQUEST_CASES}
    assert outcomes == {"ok", "error", "incomplete"}
    assert len(REQUEST_CASES) >= 100
    codes = {c["code"] for c in REQUEST_CASES if c["outcome"] == "error"}
    assert {
        "content_length_with_transfer_encoding",
        "duplicate_content_length",
        "obs_fold",
        "bare_lf",
    } <= codes


def test_every_error_names_its_status_and_code() -> None:
    for case in REQUEST_CASES:
        if case["outcome"] == "error":
            assert case["status"] in (400, 414, 431, 501, 505), case["name"]
            assert case["code"].replace("_", "").isalnum() and case["code"].islower(), case["name"]


# --- every byte value in every position of a word ---------------------------------------------
# The scanner checks values and targets eight bytes at a time; these sweeps make sure the word
# check and the byte-by-byte rule agree for every byte at every offset within a word.

VALUE_OK = {0x09, 0x20} | set(range(0x21, 0x7F)) | set(range(0x80, 0x100))
TARGET_OK = set(range(0x21, 0x7F)) - {ord("#")}


@pytest.mark.parametrize("offset", range(17))
def test_every_byte_in_a_field_value(offset: int) -> None:
    for byte in range(256):
        value = b"v" * (offset + 1) + bytes([byte]) + b"w" * 20  # no leading OWS to trim
        data = b"GET / HTTP/1.1\r\nHost: a\r\nX-Long: " + value + b"\r\n\r\n"
        if byte in VALUE_OK:
            assert parse_request(data).headers[1] == (b"X-Long", value), byte
        else:
            with pytest.raises(ParseError):
                parse_request(data)


@pytest.mark.parametrize("offset", range(17))
def test_every_byte_in_a_target(offset: int) -> None:
    for byte in range(256):
        target = b"/" + b"t" * offset + bytes([byte]) + b"u" * 20
        data = b"GET " + target + b" HTTP/1.1\r\nHost: a\r\n\r\n"
        if byte in TARGET_OK:
            assert parse_request(data).target == target, byte
        else:
            with pytest.raises(ParseError):
                parse_request(data)
