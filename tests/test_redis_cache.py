"""The shared Redis cache tier against a real redis-server (tests/conftest.py's `redis_url`)."""

from __future__ import annotations

import asyncio
import importlib
import itertools
from collections.abc import Awaitable, Callable
from typing import Any

import redis.asyncio as redis_asyncio

from gateway.store.redis_cache import RedisCacheTier, _lex_end

cache_module: Any = importlib.import_module("gateway._fastpath.cache")

NOW = 1_700_000_000.0
HOST = b"api.example.com"
_prefixes = itertools.count()


def run(redis_url: str, body: Callable[[RedisCacheTier, redis_asyncio.Redis], Awaitable[None]]) -> None:
    async def main() -> None:
        client = redis_asyncio.Redis.from_url(redis_url)
        tier = RedisCacheTier(client, prefix=f"test:{{cache{next(_prefixes)}}}:")
        try:
            await body(tier, client)
        finally:
            await client.aclose()

    asyncio.run(main())


def commit(
    cache: Any,
    path: bytes,
    body: bytes,
    *,
    vary_names: tuple[bytes, ...] = (),
    value: bytes | None = None,
    ttl: float = 60.0,
    host: bytes = HOST,
    now: float = NOW,
) -> Any:
    primary = cache_module.primary_material(b"GET", host, path, b"")
    vary = cache_module.vary_material([value]) if vary_names else b""
    head = cache_module.stored_head(200, b"OK", [(b"Content-Type", b"text/plain")])
    fill = cache.begin(primary, host, path, vary_names, vary, head, 200, ttl, 0.0, now)
    fill.append(body)
    return fill.commit(now)


def primary(path: bytes, host: bytes = HOST) -> bytes:
    material: bytes = cache_module.primary_material(b"GET", host, path, b"")
    return material


def no_headers(name: bytes) -> bytes | None:
    return None


def test_entry_committed_on_one_node_is_a_hit_on_another(redis_url: str) -> None:
    async def body(tier: RedisCacheTier, client: redis_asyncio.Redis) -> None:
        node_a = cache_module.ResponseCache(1 << 20, 1 << 16)
        node_b = cache_module.ResponseCache(1 << 20, 1 << 16)
        writes: list[Any] = []
        node_a.on_store = writes.append
        entry = commit(node_a, b"/shared", b"payload")
        assert writes == [entry]
        await tier.set(entry, NOW + 1)
        assert await tier.get(primary(b"/other"), no_headers, NOW + 2) is None
        copied = await tier.get_into(node_b, primary(b"/shared"), no_headers, NOW + 10)
        assert copied is not None
        assert (copied.head, copied.body, copied.stored_at) == (entry.head, entry.body, NOW)
        # It ages from the original store time on every node, and is now a local hit on B.
        assert node_b.lookup(primary(b"/shared"), no_headers, NOW + 10).age(NOW + 10) == 10
        # The Redis key expires with the entry.
        ttl_ms = await client.pttl(tier._entry_key(primary(b"/shared")))
        assert 58_000 <= ttl_ms <= 59_000

    run(redis_url, body)


def test_stale_records_are_misses(redis_url: str) -> None:
    async def body(tier: RedisCacheTier, client: redis_asyncio.Redis) -> None:
        cache = cache_module.ResponseCache(1 << 20, 1 << 16)
        entry = commit(cache, b"/short", b"x", ttl=5.0)
        await tier.set(entry, NOW)
        assert await tier.get(primary(b"/short"), no_headers, NOW + 4.9) is not None
        assert await tier.get(primary(b"/short"), no_headers, NOW + 5.0) is None
        await tier.set(entry, NOW + 6)  # already expired: not written
        assert await client.exists(tier._entry_key(primary(b"/missing"))) == 0

    run(redis_url, body)


def test_vary_variants_in_redis(redis_url: str) -> None:
    async def body(tier: RedisCacheTier, client: redis_asyncio.Redis) -> None:
        cache = cache_module.ResponseCache(1 << 20, 1 << 16)
        names = (b"accept-encoding",)
        await tier.set(commit(cache, b"/v", b"zipped", vary_names=names, value=b"gzip"), NOW)
        await tier.set(commit(cache, b"/v", b"plain", vary_names=names, value=None), NOW)
        gzip = {b"accept-encoding": b"gzip"}.get
        record = await tier.get(primary(b"/v"), gzip, NOW)
        assert record is not None and record.body == b"zipped"
        record = await tier.get(primary(b"/v"), no_headers, NOW)
        assert record is not None and record.body == b"plain"
        assert await tier.get(primary(b"/v"), {b"accept-encoding": b"br"}.get, NOW) is None
        other = cache_module.ResponseCache(1 << 20, 1 << 16)
        copied = await tier.get_into(other, primary(b"/v"), gzip, NOW)
        assert copied.vary_names == names
        assert other.lookup(primary(b"/v"), gzip, NOW).body == b"zipped"
        # A new Vary list replaces the old variants.
        await tier.set(commit(cache, b"/v", b"en", vary_names=(b"accept-language",), value=b"en"), NOW)
        assert await tier.get(primary(b"/v"), gzip, NOW) is None
        assert await client.hlen(tier._entry_key(primary(b"/v"))) == 2  # "v" + one variant

    run(redis_url, body)


def test_purge_by_resource_and_prefix(redis_url: str) -> None:
    async def body(tier: RedisCacheTier, client: redis_asyncio.Redis) -> None:
        cache = cache_module.ResponseCache(1 << 20, 1 << 16)
        for path in [b"/api/users", b"/api/users/1", b"/api/orders", b"/apix"]:
            await tier.set(commit(cache, path, b"x"), NOW)
        await tier.set(commit(cache, b"/api/users/2", b"x", host=b"other.example.com"), NOW)
        assert await tier.purge_prefix(b"/api/users/", HOST) == 1
        assert await tier.get(primary(b"/api/users/2", b"other.example.com"), no_headers, NOW) is not None
        assert await tier.purge_prefix(b"/api/us") == 2
        assert await tier.get(primary(b"/api/users"), no_headers, NOW) is None
        assert await tier.get(primary(b"/api/orders"), no_headers, NOW) is not None
        assert await tier.purge(primary(b"/apix")) == 1
        assert await tier.purge(primary(b"/apix")) == 0
        assert await tier.purge_prefix(b"") == 1
        assert await client.zcard(tier._paths) == 0

    run(redis_url, body)


def test_expired_index_members_are_cleaned_on_store(redis_url: str) -> None:
    async def body(tier: RedisCacheTier, client: redis_asyncio.Redis) -> None:
        cache = cache_module.ResponseCache(1 << 20, 1 << 16)
        await tier.set(commit(cache, b"/old", b"x", ttl=5.0), NOW)
        assert await client.zcard(tier._paths) == 1
        await tier.set(commit(cache, b"/new", b"x", now=NOW + 10), NOW + 10)
        members = await client.zrange(tier._paths, 0, -1)
        assert len(members) == 1
        assert isinstance(members[0], bytes) and members[0].startswith(b"/new\0")

    run(redis_url, body)


def test_lex_range_end() -> None:
    assert _lex_end(b"/api") == b"(/apj"
    assert _lex_end(b"/a\xff") == b"(/b"
    assert _lex_end(b"") == b"+"
