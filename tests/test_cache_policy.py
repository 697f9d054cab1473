"""RFC 9111 shared-cache rules: the conformance table in tests/conformance/cache_rfc9111.toml, plus
the directive parser, date forms and age arithmetic by example."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import pytest

from gateway.cache_policy import (
    DEFAULT_STATUSES,
    MAX_DELTA_SECONDS,
    RequestRule,
    corrected_initial_age,
    current_age,
    decide_response,
    parse_cache_control,
    parse_http_date,
    request_rule,
    vary_names,
)

TABLE = Path(__file__).resolve().parent / "conformance" / "cache_rfc9111.toml"
CASES: dict[str, Any] = tomllib.loads(TABLE.read_text())
RESPONSE_TIME = 1_700_000_000.0  # Tue, 14 Nov 2023 22:13:20 GMT


def _pairs(case: dict[str, Any], key: str) -> list[tuple[str, str]]:
    return [(name, value) for name, value in case.get(key, [])]


def test_table_is_substantial() -> None:
    assert len(CASES["response"]) >= 40
    assert len(CASES["request"]) >= 8
    names = [case["name"] for case in CASES["response"] + CASES["request"]]
    assert len(names) == len(set(names)), "case names must be unique"


@pytest.mark.parametrize("case", CASES["response"], ids=lambda case: case["name"])
def test_response_case(case: dict[str, Any]) -> None:
    decision = decide_response(
        case.get("method", "GET"),
        _pairs(case, "request"),
        case.get("status", 200),
        _pairs(case, "response"),
        default_ttl=float(case.get("default_ttl", 60)),
        statuses=case.get("statuses", DEFAULT_STATUSES),
        request_time=float(case.get("request_time", RESPONSE_TIME)),
        response_time=RESPONSE_TIME,
    )
    assert decision.storable is case["expect_storable"], decision.reason
    if decision.storable:
        assert decision.reason == ""
    else:
        assert decision.reason, "a refusal must say why"
        assert case.get("expect_reason", "") in decision.reason
    if "expect_ttl" in case:
        assert decision.ttl == pytest.approx(case["expect_ttl"])
    if "expect_explicit" in case:
        assert decision.explicit is case["expect_explicit"]
    if "expect_initial_age" in case:
        assert decision.initial_age == pytest.approx(case["expect_initial_age"])
    if "expect_vary" in case:
        assert decision.vary == tuple(case["expect_vary"])


@pytest.mark.parametrize("case", CASES["request"], ids=lambda case: case["name"])
def test_request_case(case: dict[str, Any]) -> None:
    rule = request_rule(case.get("method", "GET"), _pairs(case, "request"))
    assert rule.lookup is case["expect_lookup"]
    assert rule.store is case["expect_store"]
    assert (not rule.reason) is (rule.lookup and rule.store)
    if "expect_max_age" in case:
        assert rule.max_age == case["expect_max_age"]
    assert rule.only_if_cached is case.get("expect_only_if_cached", False)
    assert rule.min_fresh == case.get("expect_min_fresh", 0)


def test_request_rule_respects_configured_methods() -> None:
    assert not request_rule("HEAD", [], methods=("GET",)).lookup
    assert request_rule("HEAD", [], methods=("GET", "HEAD")).lookup
    # Even if configured, methods with side effects are never cached.
    assert not request_rule("POST", [], methods=("GET", "POST")).lookup


def test_rule_accepts_by_age_and_min_fresh() -> None:
    plain = RequestRule(True, True, "")
    assert plain.accepts(59, 60)
    assert not plain.accepts(60, 60)
    limited = RequestRule(True, True, "", max_age=10)
    assert limited.accepts(10, 60)
    assert not limited.accepts(11, 60)
    picky = RequestRule(True, True, "", min_fresh=20)
    assert picky.accepts(39, 60)
    assert not picky.accepts(40, 60)


def test_parse_cache_control() -> None:
    assert parse_cache_control(['public, Max-Age="30", private="a, b"', "no-transform"]) == {
        "public": None,
        "max-age": "30",
        "private": "a, b",
        "no-transform": None,
    }
    assert parse_cache_control(['x="a\\"b"']) == {"x": 'a"b'}
    assert parse_cache_control([" , ,"]) == {}
    # A repeat with the same value is harmless; a different one is invalid (not either value).
    assert parse_cache_control(["max-age=5, max-age=5"])["max-age"] == "5"
    assert parse_cache_control(["max-age=5", "max-age=6"])["max-age"] not in ("5", "6")


@pytest.mark.parametrize(
    "text",
    ["Tue, 14 Nov 2023 22:13:20 GMT", "Tuesday, 14-Nov-23 22:13:20 GMT", "Tue Nov 14 22:13:20 2023"],
)
def test_http_date_forms(text: str) -> None:
    # RFC 9110 §5.6.7: IMF-fixdate, and the obsolete RFC 850 and asctime forms.
    assert parse_http_date(text) == RESPONSE_TIME


@pytest.mark.parametrize("text", ["0", "", "yesterday", "Tue, 99 Nov 2023 22:13:20 GMT", None])
def test_invalid_http_dates(text: str | None) -> None:
    assert parse_http_date(text) is None


def test_age_arithmetic() -> None:
    assert corrected_initial_age(None, None, 100.0, 100.0) == 0
    assert corrected_initial_age("7", None, 100.0, 100.0) == 7
    assert corrected_initial_age("bogus", None, 98.0, 100.0) == 2
    assert current_age(7.0, 100.0, 100.4) == 7
    assert current_age(7.0, 100.0, 130.9) == 37
    assert current_age(0.0, 100.0, 99.0) == 0  # a clock step back never gives a negative Age
    assert MAX_DELTA_SECONDS == 2**31


def test_vary_names() -> None:
    assert vary_names([("Content-Type", "x")]) == ()
    assert vary_names([("VARY", " Accept ,, accept-encoding ")]) == ("accept", "accept-encoding")
    assert vary_names([("Vary", "*")]) is None
