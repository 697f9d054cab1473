"""Cluster mode: two real gateway processes sharing one real redis-server act as one."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import ExitStack

import httpx
import pytest

from tests.support.gateway_process import GatewayProcess, running_gateway
from tests.support.upstream import Upstream, running_upstream


@pytest.fixture(scope="module")
def upstream() -> Iterator[Upstream]:
    with running_upstream() as server:
        yield server


def cluster_config(upstream: Upstream, redis_url: str, route: str, extra: str = "") -> str:
    return f"""
[store]
redis = "{redis_url}"

[consumers.alice]
keys = ["alice-key"]

[upstreams.backend]
targets = ["{upstream.addr}"]

[[routes]]
name = "{route}"
path = "/api/{{proxy+}}"
upstream = "backend"
strip_prefix = "/api"
[routes.plugins.key-auth]
[routes.plugins.rate-limit]
by = "consumer"
rate = "10/m"
burst = 10
{extra}
"""


def two_gateways(stack: ExitStack, config: str) -> tuple[GatewayProcess, GatewayProcess]:
    first = stack.enter_context(running_gateway(config))
    second = stack.enter_context(running_gateway(config))
    return first, second


@pytest.mark.parametrize("sync_interval", ["0s", "50ms"])
def test_two_gateways_enforce_one_global_limit(
    upstream: Upstream, redis_url: str, sync_interval: str
) -> None:
    # A route name unique to this test keeps its Redis keys apart from other tests'.
    route = f"api-{uuid.uuid4().hex[:8]}"
    config = cluster_config(upstream, redis_url, route, f'sync_interval = "{sync_interval}"')
    with ExitStack() as stack:
        gateways = two_gateways(stack, config)
        headers = {"apikey": "alice-key"}
        statuses = []
        with httpx.Client() as client:
            for i in range(30):
                gateway = gateways[i % 2]
                statuses.append(client.get(f"{gateway.url}/api/echo", headers=headers).status_code)
    allowed = statuses.count(200)
    assert statuses.count(429) == 30 - allowed
    if sync_interval == "0s":
        assert allowed == 10  # exact: one atomic script per check
    else:
        # batching may over-admit by at most (nodes - 1) x burst per interval
        assert 10 <= allowed <= 20


def test_redis_outage_follows_the_store_error_policy(upstream: Upstream) -> None:
    from tests.support.redis_server import RedisServer

    with RedisServer() as redis:
        route = f"api-{uuid.uuid4().hex[:8]}"
        allow = cluster_config(upstream, redis.url, route)
        deny = cluster_config(upstream, redis.url, route + "-deny", 'on_store_error = "deny"')
        with running_gateway(allow) as open_gw, running_gateway(deny) as closed_gw:
            headers = {"apikey": "alice-key"}
            assert httpx.get(f"{open_gw.url}/api/echo", headers=headers).status_code == 200
            redis.stop()
            assert httpx.get(f"{open_gw.url}/api/echo", headers=headers).status_code == 200
            refused = httpx.get(f"{closed_gw.url}/api/echo", headers=headers)
            assert refused.status_code == 503
            assert refused.json()["error"]["code"] == "rate_limit_unavailable"
