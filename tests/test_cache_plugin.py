"""The `cache` plugin's Python phases: config, HIT/MISS/BYPASS, coalescing, purge and the Redis tier.

The engine's part (feeding the relayed body into the Fill the response phase leaves in
request.ctx[BODY_SINK_KEY]) is played here by `relay()`.
"""

from __future__ import annotations

import asyncio
import inspect
import itertools
from typing import Any

import pytest

from gateway.plugins import PluginChain, PluginConfigError, Request, Response, ResponseHead, default_registry
from gateway.plugins.cache import (
    BODY_SINK_KEY,
    CacheConfig,
    ResponseCachePlugin,
    key_material,
    normalize_host,
)

T0 = 1_700_000_000.0
_ids = itertools.count()


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


def make_plugin(
    clock: Clock | None = None, redis_url: str | None = None, **table: Any
) -> ResponseCachePlugin:
    config = default_registry().decode_config("cache", table)
    assert isinstance(config, CacheConfig)
    return ResponseCachePlugin(config, redis_url=redis_url, clock=clock or Clock())


def make_request(
    method: str = "GET", path: str = "/items", query: str = "", headers: list[tuple[str, str]] | None = None
) -> Request:
    return Request(
        method=method,
        path=path,
        query=query,
        headers=[("Host", "api.example.com:8080"), *(headers or [])],
        client_ip="127.0.0.1",
        route="items",
        request_id=f"r{next(_ids)}",
    )


def access(plugin: ResponseCachePlugin, request: Request) -> Any:
    return PluginChain([plugin]).run_access(request)


def relay(
    plugin: ResponseCachePlugin,
    request: Request,
    status: int = 200,
    headers: list[tuple[str, str]] | None = None,
    body: bytes = b"payload",
    finish: bool = True,
) -> ResponseHead:
    """What the engine does for a proxied response: response phase, body into the sink, log phase."""
    chain = PluginChain([plugin])
    head = ResponseHead(status, headers if headers is not None else [("Content-Type", "text/plain")], request)
    chain.run_response(request, head)
    sink = request.ctx.get(BODY_SINK_KEY)
    if sink is not None and finish:
        for index in range(0, len(body), 3):
            assert sink.append(body[index : index + 3])
        sink.commit(plugin.clock())
    chain.run_log(request, head)
    return head


def header(response: Response, name: str) -> str | None:
    values = [value for key, value in response.headers if key.lower() == name.lower()]
    return values[0] if values else None


# --- config --------------------------------------------------------------------------------------


def test_config_defaults_and_units() -> None:
    plugin = make_plugin()
    assert plugin.default_ttl == 60.0
    assert plugin.store.max_bytes == 64 * 1024 * 1024
    assert plugin.store.max_entry_size == 1024 * 1024
    assert plugin.methods == {"GET", "HEAD"}
    assert 200 in plugin.statuses and 206 not in plugin.statuses
    assert make_plugin(ttl="5m", memory="1MiB", max_entry_size=4096).default_ttl == 300.0
    assert make_plugin(ttl=7).default_ttl == 7.0


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ({"ttl": "soon"}, "ttl"),
        ({"memory": "lots"}, "memory"),
        ({"methods": ["GET", "POST"]}, "only GET and HEAD"),
        ({"statuses": [200, 206]}, "206"),
        ({"lock_timeout": -1}, "lock_timeout"),
        ({"colour": "blue"}, "colour"),
    ],
)
def test_invalid_config_is_refused(table: dict[str, Any], message: str) -> None:
    with pytest.raises(PluginConfigError, match=message):
        default_registry().decode_config("cache", table)


def test_registered_as_builtin() -> None:
    assert default_registry().get("cache") is ResponseCachePlugin


# --- HIT / MISS / BYPASS -----------------------------------------------------------------------------


def test_miss_then_hit_with_age() -> None:
    clock = Clock()
    plugin = make_plugin(clock)
    first = make_request()
    assert access(plugin, first) is None
    head = relay(plugin, first, headers=[("Content-Type", "text/plain"), ("Cache-Control", "max-age=30")])
    assert head.headers.get("X-Cache") == "MISS"
    clock.now += 12.5
    hit = access(plugin, make_request())
    assert isinstance(hit, Response)
    assert (hit.status, hit.body) == (200, b"payload")
    assert header(hit, "X-Cache") == "HIT"
    assert header(hit, "Age") == "12"
    assert header(hit, "Content-Type") == "text/plain"
    assert header(hit, "Content-Length") is None  # the engine writes it from the body
    clock.now += 18  # max-age=30 has passed
    assert access(plugin, make_request()) is None


def test_default_ttl_applies_without_explicit_freshness() -> None:
    clock = Clock()
    plugin = make_plugin(clock, ttl="10s")
    request = make_request()
    access(plugin, request)
    relay(plugin, request)
    clock.now += 9.9
    assert isinstance(access(plugin, make_request()), Response)
    clock.now += 0.1
    assert access(plugin, make_request()) is None


def test_key_covers_host_path_and_query() -> None:
    plugin = make_plugin()
    request = make_request(query="page=1")
    access(plugin, request)
    relay(plugin, request)
    assert isinstance(access(plugin, make_request(query="page=1")), Response)
    assert access(plugin, make_request(query="page=2")) is None
    assert access(plugin, make_request(path="/items/")) is None
    other_host = make_request(query="page=1")
    other_host.headers.set("Host", "other.example.com")
    assert access(plugin, other_host) is None


def test_head_is_served_from_get_and_not_stored() -> None:
    plugin = make_plugin()
    head_request = make_request("HEAD")
    assert access(plugin, head_request) is None
    assert relay(plugin, head_request).headers.get("X-Cache") == "BYPASS"
    assert len(plugin.store) == 0
    get_request = make_request()
    access(plugin, get_request)
    relay(plugin, get_request)
    hit = access(plugin, make_request("HEAD"))
    assert isinstance(hit, Response) and hit.body == b"payload"


@pytest.mark.parametrize(
    ("request_headers", "response_headers"),
    [
        ([], [("Set-Cookie", "session=1")]),
        ([], [("Cache-Control", "private")]),
        ([], [("Cache-Control", "no-store")]),
        ([("Authorization", "Bearer x")], [("Cache-Control", "max-age=60")]),
        ([], [("Vary", "*")]),
    ],
)
def test_uncacheable_responses_bypass(
    request_headers: list[tuple[str, str]], response_headers: list[tuple[str, str]]
) -> None:
    plugin = make_plugin()
    request = make_request(headers=request_headers)
    assert access(plugin, request) is None
    assert relay(plugin, request, headers=response_headers).headers.get("X-Cache") == "BYPASS"
    assert BODY_SINK_KEY not in request.ctx
    assert len(plugin.store) == 0


def test_uncacheable_status_and_method_bypass() -> None:
    plugin = make_plugin()
    request = make_request()
    access(plugin, request)
    assert relay(plugin, request, status=500).headers.get("X-Cache") == "BYPASS"
    post = make_request("POST")
    assert access(plugin, post) is None
    assert relay(plugin, post).headers.get("X-Cache") == "BYPASS"
    assert len(plugin.store) == 0


def test_no_cache_request_refreshes_the_entry() -> None:
    plugin = make_plugin()
    request = make_request()
    access(plugin, request)
    relay(plugin, request, body=b"old")
    refresh = make_request(headers=[("Cache-Control", "no-cache")])
    assert access(plugin, refresh) is None
    relay(plugin, refresh, body=b"new")
    hit = access(plugin, make_request())
    assert isinstance(hit, Response) and hit.body == b"new"


def test_request_max_age_limits_what_is_served() -> None:
    clock = Clock()
    plugin = make_plugin(clock)
    request = make_request()
    access(plugin, request)
    relay(plugin, request)
    clock.now += 20
    assert access(plugin, make_request(headers=[("Cache-Control", "max-age=10")])) is None


def test_only_if_cached_miss_is_504() -> None:
    plugin = make_plugin()
    result = access(plugin, make_request(headers=[("Cache-Control", "only-if-cached")]))
    assert isinstance(result, Response) and result.status == 504


def test_bypass_header() -> None:
    plugin = make_plugin(bypass_header="X-No-Cache")
    request = make_request()
    access(plugin, request)
    relay(plugin, request)
    skipped = make_request(headers=[("X-No-Cache", "1")])
    assert access(plugin, skipped) is None
    assert relay(plugin, skipped).headers.get("X-Cache") == "BYPASS"


def test_vary_and_configured_vary_headers() -> None:
    plugin = make_plugin(vary_headers=["X-Tenant"])

    def fetch(headers: list[tuple[str, str]], body: bytes) -> bytes:
        request = make_request(headers=headers)
        answer = access(plugin, request)
        if isinstance(answer, Response):
            return answer.body
        assert answer is None
        relay(plugin, request, headers=[("Vary", "Accept-Encoding")], body=body)
        return b"upstream:" + body

    gzip_a = [("Accept-Encoding", "gzip"), ("X-Tenant", "a")]
    assert fetch(gzip_a, b"1") == b"upstream:1"
    assert fetch(gzip_a, b"2") == b"1"
    assert fetch([("Accept-Encoding", "gzip"), ("X-Tenant", "b")], b"3") == b"upstream:3"
    assert fetch([("X-Tenant", "a")], b"4") == b"upstream:4"
    assert fetch([("X-Tenant", "a")], b"5") == b"4"
    assert fetch(gzip_a, b"6") == b"1"
    assert plugin.store.find(key_material("api.example.com/items")).vary_names == (
        b"accept-encoding",
        b"x-tenant",
    )


def test_too_large_bodies_are_not_stored() -> None:
    plugin = make_plugin(max_entry_size=100)
    request = make_request()
    access(plugin, request)
    head = ResponseHead(200, [], request)
    PluginChain([plugin]).run_response(request, head)
    sink = request.ctx[BODY_SINK_KEY]
    assert not sink.append(b"x" * 200)
    PluginChain([plugin]).run_log(request, head)
    assert len(plugin.store) == 0


# --- coalescing --------------------------------------------------------------------------------------


def test_concurrent_misses_wait_for_the_leader() -> None:
    async def main() -> None:
        plugin = make_plugin()
        leader = make_request()
        assert access(plugin, leader) is None
        waiting = [access(plugin, make_request()) for _ in range(3)]
        assert all(inspect.isawaitable(result) for result in waiting)
        tasks = [asyncio.ensure_future(result) for result in waiting]
        await asyncio.sleep(0)
        assert not any(task.done() for task in tasks)
        relay(plugin, leader, body=b"once")
        answers = await asyncio.gather(*tasks)
        assert all(isinstance(answer, Response) and answer.body == b"once" for answer in answers)

    asyncio.run(main())


def test_waiters_go_upstream_when_the_leader_stores_nothing() -> None:
    async def main() -> None:
        plugin = make_plugin()
        leader = make_request()
        access(plugin, leader)
        follower = make_request()
        pending = asyncio.ensure_future(access(plugin, follower))
        await asyncio.sleep(0)
        relay(plugin, leader, headers=[("Cache-Control", "no-store")])
        assert await pending is None  # proceeds to the upstream itself
        # An aborted relay (client gone, upstream reset) does the same.
        second_leader = make_request()
        access(plugin, second_leader)
        pending = asyncio.ensure_future(access(plugin, make_request()))
        await asyncio.sleep(0)
        relay(plugin, second_leader, finish=False)
        assert await pending is None
        assert len(plugin.store) == 0

    asyncio.run(main())


def test_waiters_give_up_after_lock_timeout() -> None:
    async def main() -> None:
        plugin = make_plugin(lock_timeout="20ms")
        access(plugin, make_request())  # a leader that never answers
        assert await access(plugin, make_request()) is None

    asyncio.run(main())


# --- purge and helpers ---------------------------------------------------------------------------


def test_purge_by_key_hex_and_prefix() -> None:
    async def main() -> None:
        plugin = make_plugin()
        for path, query in [("/items", ""), ("/items/1", "x=1"), ("/other", "")]:
            request = make_request(path=path, query=query)
            access(plugin, request)
            relay(plugin, request)
        assert await plugin.purge(key="api.example.com/items/1?x=1") == 1
        assert await plugin.purge(key="GET https://api.example.com/items/1?x=1") == 0
        assert await plugin.purge(prefix="/it") == 1
        key = plugin.store.find(key_material("api.example.com/other")).key
        assert await plugin.purge(key=f"{key:016x}") == 1
        assert await plugin.purge() == 0
        assert len(plugin.store) == 0

    asyncio.run(main())


def test_normalize_host() -> None:
    assert normalize_host("API.Example.com:8080") == b"api.example.com"
    assert normalize_host("[::1]:443") == b"[::1]"
    assert normalize_host(None) == b""


# --- Redis tier --------------------------------------------------------------------------------------


def test_redis_tier_shares_entries_between_nodes(redis_url: str) -> None:
    async def main() -> None:
        clock = Clock()
        node_a = make_plugin(clock, redis_url=redis_url, redis=True)
        node_b = make_plugin(clock, redis_url=redis_url, redis=True)
        try:
            path = f"/shared/{next(_ids)}"
            request = make_request(path=path)
            first = access(node_a, request)
            assert inspect.isawaitable(first) and await first is None  # redis asked, nothing there
            relay(node_a, request, body=b"from-a")
            await asyncio.gather(*node_a._writes)
            clock.now += 3
            answer = access(node_b, make_request(path=path))
            assert inspect.isawaitable(answer)
            hit = await answer
            assert isinstance(hit, Response) and hit.body == b"from-a"
            assert header(hit, "Age") == "3"
            assert len(node_b.store) == 1  # copied into B's local store
            assert await node_b.purge(prefix="/shared/") == 2  # B's local copy + the Redis resource
            assert (
                await node_a.tier.get(key_material(f"api.example.com{path}"), lambda name: None, clock.now)
                is None
            )
        finally:
            await node_a.close()
            await node_b.close()

    asyncio.run(main())


def test_redis_flag_without_a_store_stays_local() -> None:
    assert make_plugin(redis=True).tier is None
