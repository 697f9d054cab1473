"""Compiled fast checks (key-auth, rate-limit) inside the engine, with and without Python plugins."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import httpx
import msgspec
import pytest

from gateway._fastpath.balance import Balancer, Target
from gateway._fastpath.checks import KeyAuthCheck, RateLimitCheck
from gateway._fastpath.http import RouteAction
from gateway._fastpath.limits import RateLimiter
from gateway._fastpath.proxy import UpstreamPool
from gateway.plugins import Consumer, Plugin, PluginChain, Request, Response
from tests.support.engine import EngineThread, running_engine
from tests.support.upstream import Upstream, echo, running_upstream

CONSUMERS = {b"alice-key": Consumer("alice", ("partners", "staff")), b"bob-key": Consumer("bob")}


def identity(consumer: Consumer) -> bytes:
    lines = f"X-Consumer-Id: {consumer.name}\r\n"
    if consumer.groups:
        lines += f"X-Consumer-Groups: {', '.join(consumer.groups)}\r\n"
    return lines.encode()


class Empty(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    pass


class WhoAmI(Plugin):
    name = "whoami"
    version = "1"
    priority = 1
    Config = Empty

    def access(self, request: Request) -> Response | None:
        assert request.consumer is not None
        request.headers.set("X-Seen-Consumer", request.consumer.name)
        return None


@pytest.fixture(scope="module")
def upstream() -> Iterator[Upstream]:
    with running_upstream() as server:
        yield server


@pytest.fixture(scope="module")
def engine(upstream: Upstream) -> Iterator[EngineThread]:
    def routes(loop: asyncio.AbstractEventLoop, ticker: Any) -> list[tuple[str, Any]]:
        pool = UpstreamPool("backend", loop, Balancer([Target(upstream.addr)]), ticker)
        drop = ("apikey", "x-consumer-id", "x-consumer-groups")

        def key_auth() -> KeyAuthCheck:
            return KeyAuthCheck(["apikey"], CONSUMERS.get, identity, lambda: 1)

        limited = RouteAction.proxy("limited", pool).with_fast_checks(
            [key_auth(), RateLimitCheck([RateLimiter(1.0, 3)], "consumer")], drop
        )
        with_python = (
            RouteAction.proxy("with-python", pool)
            .with_fast_checks([key_auth()], drop)
            .with_plugins(PluginChain([WhoAmI(Empty())]))
        )
        by_ip = RouteAction.proxy("by-ip", pool).with_fast_checks(
            [RateLimitCheck([RateLimiter(1.0, 2)], "ip")]
        )
        return [("/limited/{proxy+}", limited), ("/python/{proxy+}", with_python), ("/by-ip", by_ip)]

    with running_engine(routes) as running:
        yield running


def test_missing_and_wrong_keys_are_401(engine: EngineThread, upstream: Upstream) -> None:
    before = upstream.requests
    missing = httpx.get(f"{engine.url}/limited/echo")
    assert missing.status_code == 401
    assert missing.headers["www-authenticate"] == 'Key realm="lambdagate"'
    assert missing.json()["error"]["message"] == "No API key found in request"
    wrong = httpx.get(f"{engine.url}/limited/echo", headers={"apikey": "nope"})
    assert wrong.status_code == 401
    assert wrong.json()["error"]["message"] == "Invalid authentication credentials"
    assert upstream.requests == before


def test_identity_is_forwarded_and_credentials_and_spoofs_dropped(engine: EngineThread) -> None:
    response = httpx.get(
        f"{engine.url}/python/echo",
        headers={"apikey": "alice-key", "X-Consumer-Id": "mallory", "X-Consumer-Groups": "admins"},
    )
    assert response.status_code == 200
    seen: dict[str, list[str]] = {}
    for name, value in echo(response.content)["headers"]:
        seen.setdefault(name.lower(), []).append(value)
    assert seen["x-consumer-id"] == ["alice"]
    assert seen["x-consumer-groups"] == ["partners, staff"]
    assert seen["x-seen-consumer"] == ["alice"]  # the Python plugin saw the fast check's consumer
    assert "apikey" not in seen


def test_rate_limit_per_consumer(engine: EngineThread) -> None:
    with httpx.Client() as client:
        statuses = [
            client.get(f"{engine.url}/limited/echo", headers={"apikey": "bob-key"}).status_code
            for _ in range(5)
        ]
        assert statuses[:3] == [200, 200, 200]
        assert statuses[3:] == [429, 429]
        refused = client.get(f"{engine.url}/limited/echo", headers={"apikey": "bob-key"})
        assert refused.status_code == 429
        assert refused.json()["error"]["code"] == "rate_limited"
        assert int(refused.headers["retry-after"]) >= 1
        assert refused.headers["ratelimit-limit"] == "3"
        assert refused.headers["ratelimit-remaining"] == "0"
        assert int(refused.headers["ratelimit-reset"]) >= 1
        # another consumer has its own bucket
        assert client.get(f"{engine.url}/limited/echo", headers={"apikey": "alice-key"}).status_code == 200


def test_rate_limit_by_ip(engine: EngineThread) -> None:
    with httpx.Client() as client:
        statuses = [client.get(f"{engine.url}/by-ip").status_code for _ in range(4)]
    assert statuses.count(429) == 2
