"""Cluster-mode rate limits against a real redis-server: one global limit across nodes, the
NOSCRIPT fallback, key expiry, store-failure policy, shadow mode and local batching."""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import pytest
from redis.asyncio import Redis

from gateway.ratelimit import Decision, LimitSpec
from gateway.store.redis_limits import CHECK_SCRIPT_SHA, CLIENT_NAME, RedisRateLimiter, connect
from tests.support.redis_server import RedisServer

T = TypeVar("T")


def run(coro: Awaitable[T]) -> T:
    async def main() -> T:
        return await coro

    return asyncio.run(main())


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def make_limiter(url: str, *specs: LimitSpec, prefix: str, **options: Any) -> RedisRateLimiter:
    return RedisRateLimiter(connect(url, timeout=2.0), specs, prefix=prefix, **options)


@pytest.fixture
def prefix() -> str:
    return f"test:{uuid.uuid4().hex}:"


async def evalsha_calls(client: Redis) -> int:
    stats = await client.info("commandstats")
    return int(stats.get("cmdstat_evalsha", {}).get("calls", 0))


async def close(*limiters: RedisRateLimiter) -> None:
    for limiter in limiters:
        await limiter.client.aclose()


def test_limit_and_headers(redis_url: str, prefix: str) -> None:
    async def scenario() -> list[Decision]:
        limiter = make_limiter(redis_url, LimitSpec.parse("5/s"), prefix=prefix)
        try:
            return [await limiter.check("alice") for _ in range(7)]
        finally:
            await close(limiter)

    decisions = run(scenario())
    assert [d.allowed for d in decisions] == [True] * 5 + [False] * 2
    assert [d.remaining for d in decisions[:5]] == [4, 3, 2, 1, 0]
    assert all(d.limit == 5 for d in decisions)
    refused = decisions[5]
    assert refused.over_limit and not refused.store_error
    # One token per 200 ms; a few ms of the test have passed since the bucket was emptied.
    assert 0.15 < refused.retry_after <= 0.2
    assert 0.9 < refused.reset_after <= 1.0


def test_two_nodes_enforce_one_global_limit(redis_url: str, prefix: str) -> None:
    """Two limiter instances with their own connections, in two threads with their own event loops
    (two gateway nodes), fire concurrent checks for one key: exactly `burst` get through."""
    spec = LimitSpec.parse("30/h", burst=25)  # refill is negligible during the test
    allowed: list[int] = []
    lock = threading.Lock()
    start = threading.Barrier(2)

    def node() -> None:
        async def scenario() -> int:
            limiter = make_limiter(redis_url, spec, prefix=prefix)
            try:
                await limiter.client.ping()
                start.wait()
                decisions = await asyncio.gather(*(limiter.check("shared") for _ in range(60)))
                return sum(d.allowed for d in decisions)
            finally:
                await close(limiter)

        count = run(scenario())
        with lock:
            allowed.append(count)

    threads = [threading.Thread(target=node) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert len(allowed) == 2
    assert sum(allowed) == 25  # (how the 25 split between the nodes depends on scheduling)


def test_alternating_nodes_draw_from_one_bucket(redis_url: str, prefix: str) -> None:
    """Two nodes (two clients) taking turns on one key: both are served, from one shared bucket."""
    spec = LimitSpec.parse("30/h", burst=25)

    async def scenario() -> tuple[int, int]:
        first = make_limiter(redis_url, spec, prefix=prefix)
        second = make_limiter(redis_url, spec, prefix=prefix)
        try:
            counts = [0, 0]
            for turn in range(60):
                node = (first, second)[turn % 2]
                counts[turn % 2] += (await node.check("shared")).allowed
            return counts[0], counts[1]
        finally:
            await close(first, second)

    first_count, second_count = run(scenario())
    assert (first_count, second_count) == (13, 12)


def test_concurrent_checks_share_a_bounded_pool(prefix: str) -> None:
    with RedisServer() as server:

        async def scenario() -> None:
            limiter = RedisRateLimiter(
                connect(server.url, timeout=2.0, max_connections=4), [LimitSpec.parse("100/h")], prefix=prefix
            )
            observer = Redis.from_url(server.url)
            try:
                decisions = await asyncio.gather(*(limiter.check(f"k{i % 7}") for i in range(300)))
                assert sum(d.allowed for d in decisions) == 300
                clients = await observer.client_list()
                assert 1 <= sum(c["name"] == CLIENT_NAME for c in clients) <= 4
            finally:
                await close(limiter)
                await observer.aclose()

        run(scenario())


def test_a_refusing_limit_takes_nothing_from_the_others(redis_url: str, prefix: str) -> None:
    async def scenario() -> None:
        generous = LimitSpec.parse("100/h", burst=10)
        strict = LimitSpec.parse("2/h")
        both = make_limiter(redis_url, generous, strict, prefix=prefix)
        generous_only = make_limiter(redis_url, generous, prefix=prefix)
        try:
            results = [await both.check("k") for _ in range(5)]
            assert [r.allowed for r in results] == [True, True, False, False, False]
            # The strict limit binds: its numbers are reported.
            assert results[1].limit == 2 and results[1].remaining == 0
            assert results[2].limit == 2 and results[2].retry_after > 1000
            # Same Redis keys for the first limit: 2 of its 10 were taken, not 5.
            assert (await generous_only.check("k")).remaining == 7
        finally:
            await close(both, generous_only)

    run(scenario())


def test_noscript_fallback_and_key_expiry(redis_url: str, prefix: str) -> None:
    async def scenario() -> None:
        limiter = make_limiter(redis_url, LimitSpec.parse("10/s"), prefix=prefix)
        try:
            await limiter.client.script_flush()
            assert (await limiter.check("k")).allowed
            assert (await limiter.client.script_exists(CHECK_SCRIPT_SHA)) == [True]
            (key,) = limiter.redis_keys("k")
            assert key == f"{prefix}{{k}}:0"
            ttl_ms = await limiter.client.pttl(key)
            assert 0 < ttl_ms <= 101  # full again after one interval (100 ms), then gone
            await asyncio.sleep(0.2)
            assert await limiter.client.exists(key) == 0
            assert limiter.counters.store_errors == 0
        finally:
            await close(limiter)

    run(scenario())


def test_shadow_mode_counts_without_refusing(redis_url: str, prefix: str) -> None:
    async def scenario() -> None:
        limiter = make_limiter(redis_url, LimitSpec.parse("3/h"), prefix=prefix, enforce=False)
        try:
            decisions = [await limiter.check("k") for _ in range(5)]
            assert all(d.allowed for d in decisions)
            assert [d.over_limit for d in decisions] == [False] * 3 + [True] * 2
            assert limiter.counters.as_dict() == {
                "allowed": 3,
                "limited": 0,
                "shadow_limited": 2,
                "store_errors": 0,
                "store_fallbacks": 0,
            }
        finally:
            await close(limiter)

    run(scenario())


@pytest.mark.parametrize("policy", ["allow", "deny"])
def test_store_failure_follows_the_policy(prefix: str, policy: str) -> None:
    clock = FakeClock()
    with RedisServer() as server:

        async def scenario() -> None:
            limiter = make_limiter(
                server.url,
                LimitSpec.parse("2/h"),
                prefix=prefix,
                on_store_error=policy,
                retry_store_after=5.0,
                clock=clock,
            )
            try:
                assert (await limiter.check("k")).allowed
                server.stop()
                failed = await limiter.check("k")
                assert failed.store_error and failed.allowed == (policy == "allow")
                assert not failed.over_limit
                assert limiter.counters.store_errors == 1
                # While the store is considered down it is not asked: no new error, no delay.
                clock.now += 1.0
                again = await limiter.check("k")
                assert again.store_error and again.allowed == (policy == "allow")
                assert limiter.counters.store_errors == 1
                assert limiter.counters.store_fallbacks == 2
                # Back up, and the back-off has passed: Redis decides again, with its old state
                # gone (no persistence): a fresh bucket of 2.
                server.start()
                clock.now += 5.0
                back = [await limiter.check("k") for _ in range(3)]
                assert [d.allowed for d in back] == [True, True, False]
                assert not any(d.store_error for d in back)
                assert limiter.counters.store_errors == 1
            finally:
                await close(limiter)

        run(scenario())


def test_timeouts_are_store_errors(prefix: str) -> None:
    """A Redis that accepts connections but never answers (SIGSTOP) costs one timeout, then the
    policy answers at once."""
    with RedisServer() as server:

        async def scenario() -> None:
            limiter = RedisRateLimiter(
                connect(server.url, timeout=0.2),
                [LimitSpec.parse("5/s")],
                prefix=prefix,
                on_store_error="deny",
            )
            try:
                assert (await limiter.check("k")).allowed
                assert server.process is not None
                server.process.send_signal(19)  # SIGSTOP
                try:
                    decision = await asyncio.wait_for(limiter.check("k"), 5)
                    assert decision.store_error and not decision.allowed
                    assert limiter.counters.store_errors == 1
                finally:
                    server.process.send_signal(18)  # SIGCONT
            finally:
                await close(limiter)

        run(scenario())


def test_batching_cuts_round_trips(redis_url: str, prefix: str) -> None:
    clock = FakeClock()

    async def scenario() -> None:
        spec = LimitSpec.parse("1000/h", burst=200)
        batched = make_limiter(redis_url, spec, prefix=prefix, sync_interval=1.0, clock=clock)
        exact = make_limiter(redis_url, spec, prefix=prefix)
        try:
            await batched.check("warm-up")  # loads the script
            before = await evalsha_calls(exact.client)
            decisions = [await batched.check("k") for _ in range(100)]
            assert all(d.allowed for d in decisions)
            assert [d.remaining for d in decisions[:3]] == [199, 198, 197]
            assert await evalsha_calls(exact.client) - before == 1, "one sync for 100 checks"
            # Redis has only seen the first hit so far ...
            assert (await exact.check("k", 0)).remaining == 199
            # ... the other 99 are charged at the next sync, with this request.
            clock.now += 1.0
            assert (await batched.check("k")).remaining == 99
            assert (await exact.check("k", 0)).remaining == 99
            assert await evalsha_calls(exact.client) - before == 4
        finally:
            await close(batched, exact)

    run(scenario())


def test_batching_refuses_locally_once_the_allowance_is_spent(redis_url: str, prefix: str) -> None:
    clock = FakeClock()

    async def scenario() -> None:
        spec = LimitSpec.parse("10/h")
        node_a = make_limiter(redis_url, spec, prefix=prefix, sync_interval=0.5, clock=clock)
        node_b = make_limiter(redis_url, spec, prefix=prefix, sync_interval=0.5, clock=clock)
        try:
            a = [await node_a.check("k") for _ in range(30)]
            assert sum(d.allowed for d in a) == 10
            assert a[10].over_limit and a[10].retry_after >= 0.5
            # Node B syncs first: Redis has seen one hit of A's (the others are pending), so
            # B may take up to 9: the documented over-admission, at most (nodes - 1) * burst.
            b = [await node_b.check("k") for _ in range(30)]
            assert sum(d.allowed for d in b) == 9
            assert node_a.counters.limited == 20 and node_b.counters.limited == 21
            # A's next sync charges its 9 pending hits; everyone is refused for the rest of the hour.
            clock.now += 0.5
            assert not (await node_a.check("k")).allowed
            clock.now += 0.5
            assert not (await node_b.check("k")).allowed
            assert (await node_b.check("k", 0)).remaining == 0
        finally:
            await close(node_a, node_b)

    run(scenario())


def test_concurrent_checks_of_one_key_share_one_sync(redis_url: str, prefix: str) -> None:
    async def scenario() -> None:
        limiter = make_limiter(redis_url, LimitSpec.parse("50/h"), prefix=prefix, sync_interval=10.0)
        try:
            await limiter.check("warm-up")
            before = await evalsha_calls(limiter.client)
            decisions = await asyncio.gather(*(limiter.check("k") for _ in range(80)))
            assert sum(d.allowed for d in decisions) == 50
            assert await evalsha_calls(limiter.client) - before == 1
        finally:
            await close(limiter)

    run(scenario())


def test_flush_charges_pending_hits(redis_url: str, prefix: str) -> None:
    async def scenario() -> None:
        spec = LimitSpec.parse("100/h")
        batched = make_limiter(redis_url, spec, prefix=prefix, sync_interval=60.0)
        exact = make_limiter(redis_url, spec, prefix=prefix)
        try:
            for _ in range(30):
                await batched.check("k")
            assert (await exact.check("k", 0)).remaining == 99
            await batched.flush()
            assert (await exact.check("k", 0)).remaining == 70
            await batched.flush()  # nothing pending: nothing charged twice
            assert (await exact.check("k", 0)).remaining == 70
        finally:
            await close(batched, exact)

    run(scenario())


def test_local_key_table_is_bounded(redis_url: str, prefix: str) -> None:
    async def scenario() -> None:
        limiter = make_limiter(
            redis_url, LimitSpec.parse("5/h"), prefix=prefix, sync_interval=60.0, max_local_keys=10
        )
        try:
            for index in range(30):
                assert (await limiter.check(f"ip-{index}")).allowed
            assert len(limiter._local) == 10
            # Keys beyond the table are still limited, by Redis directly.
            assert sum([(await limiter.check("ip-29")).allowed for _ in range(6)]) == 4
        finally:
            await close(limiter)

    run(scenario())


def test_invalid_configuration(redis_url: str) -> None:
    client = connect(redis_url)
    spec = LimitSpec.parse("1/s")
    bad: list[Callable[[], object]] = [
        lambda: RedisRateLimiter(client, []),
        lambda: RedisRateLimiter(client, [spec], on_store_error="maybe"),  # type: ignore[arg-type]
        lambda: RedisRateLimiter(client, [spec], sync_interval=-1),
    ]
    for make in bad:
        with pytest.raises(ValueError):
            make()


def test_check_nowait_decides_locally_between_syncs(redis_url: str, prefix: str) -> None:
    clock = FakeClock()

    async def scenario() -> None:
        spec = LimitSpec.parse("1000/h", burst=5)
        batched = make_limiter(redis_url, spec, prefix=prefix, sync_interval=1.0, clock=clock)
        exact = make_limiter(redis_url, spec, prefix=prefix)
        try:
            assert batched.check_nowait("k") is None  # never synced: the caller must await check()
            assert (await batched.check("k")).allowed
            before = await evalsha_calls(exact.client)
            local = [batched.check_nowait("k") for _ in range(6)]
            assert all(d is not None for d in local)
            assert [d.allowed for d in local if d is not None] == [True] * 4 + [False] * 2
            assert await evalsha_calls(exact.client) == before, "decided without a round trip"
            clock.now += 1.0
            assert batched.check_nowait("k") is None  # a sync is due
            unbatched = make_limiter(redis_url, spec, prefix=prefix)
            assert unbatched.check_nowait("k") is None  # without batching there is no local state
            await close(unbatched)
        finally:
            await close(batched, exact)

    run(scenario())
