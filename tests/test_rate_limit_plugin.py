"""The rate-limit plugin through the plugin layer: config validation, keys, 429s and headers,
several limits, shadow mode, concurrency slots, and Redis mode against a real redis-server."""

from __future__ import annotations

import asyncio
import inspect
import json
import uuid
from collections.abc import Iterable
from typing import Any

import pytest

from gateway.plugins import (
    Consumer,
    PluginChain,
    PluginConfigError,
    PluginRegistry,
    Request,
    Response,
    ResponseHead,
)
from gateway.plugins.rate_limit import PLUGIN, RateLimitConfig, RateLimitPlugin
from gateway.ratelimit import (
    KeySource,
    Rate,
    parse_key_source,
    parse_rate,
    rate_limit_headers,
    retry_after_seconds,
)
from tests.support.redis_server import free_port

REGISTRY = PluginRegistry([RateLimitPlugin])


class FakeClock:
    def __init__(self) -> None:
        self.now = 500.0

    def __call__(self) -> float:
        return self.now


def config(**table: Any) -> RateLimitConfig:
    decoded = REGISTRY.decode_config("rate-limit", table)
    assert isinstance(decoded, RateLimitConfig)
    return decoded


def plugin(clock: FakeClock | None = None, redis_url: str | None = None, **table: Any) -> RateLimitPlugin:
    return RateLimitPlugin(config(**table), redis_url=redis_url, clock=clock or FakeClock())


def request(
    client_ip: str = "10.0.0.1",
    consumer: str | None = None,
    headers: Iterable[tuple[str, str]] = (),
    route: str = "api",
) -> Request:
    req = Request(
        method="GET",
        path="/api/items",
        query="",
        headers=headers,
        client_ip=client_ip,
        route=route,
        request_id=uuid.uuid4().hex,
    )
    if consumer is not None:
        req.authenticate(Consumer(consumer))
    return req


def access(chain: PluginChain, req: Request) -> Response | None:
    result = chain.run_access(req)
    if inspect.isawaitable(result):
        raise AssertionError("local mode must answer synchronously")
    return result


def finish(chain: PluginChain, req: Request, status: int = 200) -> ResponseHead:
    head = ResponseHead(status, [("Content-Type", "text/plain")], req)
    chain.run_response(req, head)
    chain.run_log(req, head)
    return head


def body(response: Response) -> dict[str, Any]:
    decoded: dict[str, Any] = json.loads(response.body)
    return decoded


# --- helpers in gateway.ratelimit --------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("100/s", Rate(100, 1.0)),
        ("6000/m", Rate(6000, 60.0)),
        ("1000/h", Rate(1000, 3600.0)),
        ("50000/d", Rate(50000, 86400.0)),
        ("500/5m", Rate(500, 300.0)),
        (" 7 / s ", Rate(7, 1.0)),
    ],
)
def test_parse_rate(text: str, expected: Rate) -> None:
    assert parse_rate(text) == expected


@pytest.mark.parametrize("text", ["100", "100/", "/s", "0/s", "100/0s", "-1/s", "1.5/s", "100/w", "100/sec"])
def test_parse_rate_refuses(text: str) -> None:
    with pytest.raises(ValueError, match="rate"):
        parse_rate(text)


def test_rate_per_second_and_text() -> None:
    assert parse_rate("120/m").per_second == 2.0
    assert str(parse_rate("120/m")) == "120/m"
    assert str(parse_rate("5/10s")) == "5/10s"


def test_parse_key_source() -> None:
    assert parse_key_source("consumer") == KeySource("consumer")
    assert parse_key_source("header:X-Tenant") == KeySource("header", "X-Tenant")
    assert str(parse_key_source("header:X-Tenant")) == "header:X-Tenant"
    for bad in ["user", "header:", "header:bad name", "ip:x", ""]:
        with pytest.raises(ValueError, match="by"):
            parse_key_source(bad)


def test_header_values() -> None:
    assert rate_limit_headers(100, 7, 0.2) == [
        ("RateLimit-Limit", "100"),
        ("RateLimit-Remaining", "7"),
        ("RateLimit-Reset", "1"),
    ]
    assert rate_limit_headers(5, -1, 0.0)[1:] == [("RateLimit-Remaining", "0"), ("RateLimit-Reset", "0")]
    assert retry_after_seconds(0.001) == 1
    assert retry_after_seconds(2.0) == 2
    assert retry_after_seconds(2.0000001) == 3
    assert retry_after_seconds(0.0) == 1


# --- config ------------------------------------------------------------------------------------


def test_plugin_declaration() -> None:
    assert PLUGIN is RateLimitPlugin
    assert RateLimitPlugin.name == "rate-limit" and RateLimitPlugin.priority == 910
    assert RateLimitPlugin.phases() == ("access", "response", "log")


def test_issue_example_config() -> None:
    decoded = config(by="consumer", rate="100/s", burst=200)
    assert [(s.rate, s.burst) for s in decoded.limit_specs()] == [(Rate(100, 1.0), 200)]
    defaults = config(rate="10/m")
    assert defaults.by == "consumer" and defaults.enforce and defaults.on_store_error == "allow"
    assert [s.burst for s in defaults.limit_specs()] == [10]  # burst defaults to the count


def test_several_limits_config() -> None:
    decoded = config(rate="10/s", limits=[{"rate": "1000/h"}, {"rate": "5000/d", "burst": 50}])
    assert [(str(s.rate), s.burst) for s in decoded.limit_specs()] == [
        ("10/s", 10),
        ("1000/h", 1000),
        ("5000/d", 50),
    ]


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ({"rate": "100/x"}, "rate"),
        ({"rate": "10/s", "by": "user"}, "by"),
        ({"burst": 5}, "burst needs a rate"),
        ({}, "set rate, limits or concurrency"),
        ({"rate": "10/s", "burst": 0}, "burst"),
        ({"rate": "10/s", "bursts": 5}, "bursts"),
        ({"rate": "10/s", "on_store_error": "maybe"}, "on_store_error"),
        ({"rate": "10/s", "sync_interval": -1}, "sync_interval"),
        ({"limits": [{"rate": "1/q"}]}, "rate"),
        ({"concurrency": 0}, "concurrency"),
    ],
)
def test_invalid_config(table: dict[str, Any], message: str) -> None:
    with pytest.raises(PluginConfigError, match=message):
        REGISTRY.decode_config("rate-limit", table)


# --- local mode --------------------------------------------------------------------------------


def test_refusal_is_a_429_with_headers() -> None:
    clock = FakeClock()
    chain = PluginChain([plugin(clock, rate="2/s", burst=3)])
    for expected_remaining in ("2", "1", "0"):
        req = request()
        assert access(chain, req) is None
        head = finish(chain, req)
        assert head.headers.get("RateLimit-Limit") == "3"
        assert head.headers.get("RateLimit-Remaining") == expected_remaining
    assert head.headers.get("RateLimit-Reset") == "2"  # 3 tokens at 2/s: full in 1.5 s, rounded up
    refused = access(chain, request())
    assert refused is not None and refused.status == 429
    assert body(refused) == {
        "error": {"status": 429, "code": "rate_limited", "message": "rate limit exceeded; retry in 1 s"}
    }
    headers = dict(refused.headers)
    assert headers["Retry-After"] == "1"
    assert headers["RateLimit-Limit"] == "3" and headers["RateLimit-Remaining"] == "0"
    assert headers["Content-Type"] == "application/json"
    clock.now += 0.5  # one token back
    assert access(chain, request()) is None
    assert access(chain, request()) is not None


def test_keys_by_consumer_fall_back_to_ip() -> None:
    chain = PluginChain([plugin(rate="1/m")])
    assert access(chain, request(consumer="alice", client_ip="10.0.0.1")) is None
    assert access(chain, request(consumer="alice", client_ip="10.0.0.2")) is not None  # same consumer
    assert access(chain, request(consumer="bob", client_ip="10.0.0.1")) is None
    assert access(chain, request(client_ip="10.0.0.1")) is None  # anonymous: by address
    assert access(chain, request(client_ip="10.0.0.1")) is not None
    assert access(chain, request(client_ip="10.0.0.3")) is None
    # A consumer named like an address does not share the address's bucket.
    assert access(chain, request(consumer="10.0.0.3")) is None


def test_keys_by_ip_header_and_route() -> None:
    by_ip = PluginChain([plugin(by="ip", rate="1/m")])
    assert access(by_ip, request(consumer="alice", client_ip="10.0.0.1")) is None
    assert access(by_ip, request(consumer="bob", client_ip="10.0.0.1")) is not None

    by_header = PluginChain([plugin(by="header:X-Tenant", rate="1/m")])
    assert access(by_header, request(headers=[("x-tenant", "t1")], client_ip="1.1.1.1")) is None
    assert access(by_header, request(headers=[("X-Tenant", "t1")], client_ip="2.2.2.2")) is not None
    assert access(by_header, request(headers=[("X-Tenant", "t2")], client_ip="2.2.2.2")) is None
    assert access(by_header, request(client_ip="2.2.2.2")) is None  # no header: by address
    assert access(by_header, request(client_ip="2.2.2.2")) is not None

    by_route = PluginChain([plugin(by="route", rate="2/m")])
    assert access(by_route, request(client_ip="1.1.1.1")) is None
    assert access(by_route, request(client_ip="2.2.2.2", consumer="x")) is None
    assert access(by_route, request(client_ip="3.3.3.3")) is not None


def test_several_limits_report_the_binding_one_and_refusals_take_nothing() -> None:
    clock = FakeClock()
    rate_limit = plugin(clock, rate="10/s", burst=5, limits=[{"rate": "3/m"}])
    chain = PluginChain([rate_limit])
    req = request()
    assert access(chain, req) is None
    head = finish(chain, req)
    assert head.headers.get("RateLimit-Limit") == "3"  # the per-minute limit has fewer left
    assert head.headers.get("RateLimit-Remaining") == "2"
    assert access(chain, request()) is None
    assert access(chain, request()) is None
    refused = access(chain, request())
    assert refused is not None and dict(refused.headers)["Retry-After"] == "20"
    # The per-second limit gave back the refused request's token: 5 - 3 taken = 2 left.
    fast = rate_limit._local[0]
    assert fast.check("ip:10.0.0.1", clock.now, 0) == 0 and fast.remaining == 2
    assert rate_limit.counters.as_dict()["limited"] == 1
    assert rate_limit.counters.as_dict()["allowed"] == 3


def test_shadow_mode_counts_without_refusing() -> None:
    rate_limit = plugin(rate="2/h", enforce=False)
    chain = PluginChain([rate_limit])
    for _ in range(5):
        req = request()
        assert access(chain, req) is None
        finish(chain, req)
    assert rate_limit.counters.allowed == 2
    assert rate_limit.counters.shadow_limited == 3
    assert rate_limit.counters.limited == 0


def test_headers_can_be_turned_off() -> None:
    chain = PluginChain([plugin(rate="2/h", headers=False)])
    req = request()
    assert access(chain, req) is None
    assert "RateLimit-Limit" not in finish(chain, req).headers


def test_concurrency_slots_are_released_in_the_log_phase() -> None:
    rate_limit = plugin(concurrency=2)
    chain = PluginChain([rate_limit])
    first, second = request(consumer="alice"), request(consumer="alice")
    assert access(chain, first) is None and access(chain, second) is None
    refused = access(chain, request(consumer="alice"))
    assert refused is not None and refused.status == 429
    assert body(refused)["error"]["message"] == "too many concurrent requests (at most 2)"
    bob = request(consumer="bob")
    assert access(chain, bob) is None  # bob has slots of his own
    finish(chain, bob)
    finish(chain, first)
    third = request(consumer="alice")
    assert access(chain, third) is None
    finish(chain, second)
    finish(chain, third)
    assert rate_limit._concurrency.in_use("c:alice") == 0


def test_a_rate_refusal_gives_the_concurrency_slot_back() -> None:
    rate_limit = plugin(rate="1/h", concurrency=5)
    chain = PluginChain([rate_limit])
    ok = request()
    assert access(chain, ok) is None
    assert access(chain, request()) is not None
    assert rate_limit._concurrency.in_use("ip:10.0.0.1") == 1  # only the admitted request holds one
    finish(chain, ok)
    assert rate_limit._concurrency.in_use("ip:10.0.0.1") == 0


# --- Redis mode --------------------------------------------------------------------------------


async def access_async(chain: PluginChain, req: Request) -> Response | None:
    result = chain.run_access(req)
    assert inspect.isawaitable(result), "Redis mode answers through an awaitable"
    return await result


def test_redis_mode_is_one_limit_for_two_nodes(redis_url: str) -> None:
    route = f"route-{uuid.uuid4().hex}"

    async def scenario() -> None:
        node_a = plugin(redis_url=redis_url, rate="3/h")
        node_b = plugin(redis_url=redis_url, rate="3/h")
        chains = [PluginChain([node_a]), PluginChain([node_b])]
        try:
            results = [await access_async(chains[i % 2], request(route=route)) for i in range(5)]
            assert [r is None for r in results] == [True, True, True, False, False]
            refused = results[3]
            assert refused is not None and refused.status == 429
            assert int(dict(refused.headers)["Retry-After"]) > 1000
            req = request(route=f"{route}-other")  # buckets are per route
            assert await access_async(chains[0], req) is None
            head = finish(chains[0], req)
            assert head.headers.get("RateLimit-Remaining") == "2"
            assert node_a.counters.limited + node_b.counters.limited == 2
        finally:
            await node_a.aclose()
            await node_b.aclose()

    asyncio.run(scenario())


@pytest.mark.parametrize("policy", ["allow", "deny"])
def test_redis_unreachable_follows_the_policy(policy: str) -> None:
    dead_url = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there

    async def scenario() -> None:
        rate_limit = plugin(redis_url=dead_url, rate="1/h", on_store_error=policy)
        chain = PluginChain([rate_limit])
        try:
            for _ in range(3):
                req = request()
                result = await access_async(chain, req)
                if policy == "allow":
                    assert result is None
                    assert "RateLimit-Limit" not in finish(chain, req).headers
                else:
                    assert result is not None and result.status == 503
                    assert body(result)["error"]["code"] == "rate_limit_unavailable"
                    assert dict(result.headers)["Retry-After"] == "1"
            assert rate_limit.counters.store_errors == 1  # then the store is left alone for a while
            assert rate_limit.counters.store_fallbacks == 3
        finally:
            await rate_limit.aclose()

    asyncio.run(scenario())
