"""Cluster-wide rate limits: the GCRA of _fastpath/limits.py, run atomically inside Redis.

Every gateway node pointing at one Redis draws from the same buckets. One check is one EVALSHA
of CHECK_SCRIPT (loaded once; a NOSCRIPT answer after a Redis restart or SCRIPT FLUSH loads it
again), which reads and updates every limit of the request in one atomic step: a request refused
by one limit takes nothing from the others. The script reads the time from Redis itself (TIME),
so nodes with skewed clocks still agree. Each key holds one number, its theoretical arrival time
in microseconds, and expires when its bucket would be full again (an absent key is a full bucket).
Keys of one request share a hash tag, so the script also runs on Redis Cluster.

Local batching (sync_interval > 0): a node asks Redis at most once per sync_interval per key.
Between syncs it admits locally up to the `remaining` Redis reported at the last sync and refuses
once that allowance is used up; the hits it admitted are charged to Redis at the next sync
(unconditionally: they were already let through), so the long-run rate still holds.
Over-admission bound: each of N nodes may spend the same reported allowance (at most `burst`)
before seeing the others' hits, so a key can get at most (N - 1) * burst requests beyond the
exact limit per sync_interval; a single node never exceeds it. The price is under-admission: a
node that spent its allowance refuses until its next sync even if the bucket refilled meanwhile.

Store failures: a failed call (connection refused, timeout, script error) counts in
counters.store_errors, and for retry_store_after seconds the store is not asked again; meanwhile
(and for the failed call) the verdict follows on_store_error: "allow" lets requests through
unlimited, "deny" refuses them. Each such verdict counts in counters.store_fallbacks. Shadow mode
(enforce = False) computes and counts everything but never refuses.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import NoScriptError, RedisError

from gateway.ratelimit import Decision, LimitCounters, LimitSpec, StoreErrorPolicy

__all__ = ["CHECK_SCRIPT", "RedisRateLimiter", "connect"]

DEFAULT_PREFIX = "lambdagate:rl:"
DEFAULT_TIMEOUT = 0.25
DEFAULT_MAX_LOCAL_KEYS = 100_000
DEFAULT_MAX_CONNECTIONS = 16
CLIENT_NAME = "lambdagate-limits"  # shown by CLIENT LIST

# KEYS: one per limit. ARGV: cost, pending, then per limit: interval_us, tolerance_us.
# Returns {allowed, then per limit: remaining, wait_us, owed_us}. Numbers cross the Lua boundary
# as integers, so times are microseconds; TATs are stored with %.17g (tostring keeps only 14
# significant digits, too few for microsecond timestamps).
CHECK_SCRIPT = """
local cost = tonumber(ARGV[1])
local pending = tonumber(ARGV[2])
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000000 + tonumber(clock[2])
local tats = {}
local allowed = 1
for i = 1, #KEYS do
  local interval = tonumber(ARGV[1 + 2 * i])
  local tolerance = tonumber(ARGV[2 + 2 * i])
  local tat = tonumber(redis.call('GET', KEYS[i])) or now
  if tat < now then tat = now end
  tat = tat + pending * interval
  tats[i] = tat
  if tat + cost * interval - tolerance - now > interval * 1e-6 then allowed = 0 end
end
local result = {allowed}
for i = 1, #KEYS do
  local interval = tonumber(ARGV[1 + 2 * i])
  local tolerance = tonumber(ARGV[2 + 2 * i])
  local tat = tats[i]
  local wait = tat + cost * interval - tolerance - now
  if allowed == 1 then
    tat = tat + cost * interval
    wait = 0
  end
  if tat > now and (pending > 0 or (allowed == 1 and cost > 0)) then
    redis.call('SET', KEYS[i], string.format('%.17g', tat), 'PX', math.ceil((tat - now) / 1000) + 1)
  end
  local remaining = math.floor((tolerance - (tat - now)) / interval + 1e-6)
  if remaining < 0 then remaining = 0 end
  if wait < 0 then wait = 0 end
  result[#result + 1] = remaining
  result[#result + 1] = math.ceil(wait)
  result[#result + 1] = math.ceil(tat - now)
end
return result
"""
CHECK_SCRIPT_SHA = hashlib.sha1(CHECK_SCRIPT.encode()).hexdigest()


def connect(
    url: str, *, timeout: float = DEFAULT_TIMEOUT, max_connections: int = DEFAULT_MAX_CONNECTIONS
) -> Redis:
    """A client for limits: short timeouts and no retries, so a broken store costs a request
    at most `timeout` before the on_store_error policy answers (and then nothing for a while).

    The pool is bounded and blocking: a burst of concurrent checks queues for one of
    `max_connections` connections (at most `timeout`) instead of opening one connection each.
    """
    pool = BlockingConnectionPool.from_url(
        url,
        max_connections=max_connections,
        timeout=timeout,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        retry=Retry(NoBackoff(), 0),
        client_name=CLIENT_NAME,
    )
    return Redis.from_pool(pool)  # the client owns the pool: aclose() closes both


@dataclass(frozen=True, slots=True)
class _StoreVerdict:
    """The script's answer: allowed, and (remaining, wait, owed) per limit in limit order."""

    allowed: bool
    remaining: tuple[int, ...]
    wait: tuple[float, ...]  # seconds until this limit would allow the request
    owed: tuple[float, ...]  # seconds until this limit's bucket is full


class _LocalKey:
    """A key's state between syncs (batching mode)."""

    __slots__ = ("allowance", "inflight", "pending", "synced_at", "verdict")

    def __init__(self) -> None:
        self.synced_at = float("-inf")
        self.allowance = 0  # hits this node may still admit before its next sync
        self.pending = 0  # hits admitted locally that Redis has not been charged for
        self.verdict: _StoreVerdict | None = None
        self.inflight: asyncio.Future[None] | None = None


class RedisRateLimiter:
    """All limits of one rule (e.g. a route's rate-limit plugin), checked together in Redis."""

    def __init__(
        self,
        client: Redis,
        limits: Sequence[LimitSpec],
        *,
        prefix: str = DEFAULT_PREFIX,
        enforce: bool = True,
        on_store_error: StoreErrorPolicy = "allow",
        sync_interval: float = 0.0,
        retry_store_after: float = 1.0,
        max_local_keys: int = DEFAULT_MAX_LOCAL_KEYS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not limits:
            raise ValueError("at least one limit is needed")
        if on_store_error not in ("allow", "deny"):
            raise ValueError(f"on_store_error must be 'allow' or 'deny', got {on_store_error!r}")
        if sync_interval < 0 or retry_store_after < 0:
            raise ValueError("sync_interval and retry_store_after must not be negative")
        self.client = client
        self.limits = tuple(limits)
        self.prefix = prefix
        self.enforce = enforce
        self.on_store_error: StoreErrorPolicy = on_store_error
        self.sync_interval = sync_interval
        self.retry_store_after = retry_store_after
        self.max_local_keys = max_local_keys
        self.clock = clock
        self.counters = LimitCounters()
        self._intervals = tuple(spec.rate.period / spec.rate.count for spec in self.limits)
        limit_args: list[str] = []
        for spec, interval in zip(self.limits, self._intervals, strict=True):
            limit_args += [repr(interval * 1e6), repr(interval * spec.burst * 1e6)]
        self._limit_args = tuple(limit_args)
        self._local: dict[str, _LocalKey] = {}
        self._store_down_until = float("-inf")

    # --- public ---------------------------------------------------------------------------------

    async def check(self, key: str, cost: int = 1) -> Decision:
        """Take `cost` tokens from every limit of `key`, or none if any limit refuses."""
        if cost < 0:
            raise ValueError(f"cost must not be negative, got {cost}")
        if self.sync_interval > 0:
            decision = await self._check_batched(key, cost)
        else:
            verdict = await self._call_store(key, cost, 0)
            decision = self._fallback() if verdict is None else self._decide(verdict, cost)
        self.counters.record(decision)
        return decision

    def check_nowait(self, key: str, cost: int = 1) -> Decision | None:
        """The decision without any I/O when the local batch state can give it, else None.

        In batching mode a key synced less than `sync_interval` ago is decided from its local
        allowance, exactly as check() would; callers avoid a coroutine per request that way and
        only await check() when a sync is due (once per key and interval).
        """
        if self.sync_interval <= 0 or cost < 0:
            return None
        entry = self._local.get(key)
        if entry is None or entry.inflight is not None or entry.verdict is None:
            return None
        now = self.clock()
        if now - entry.synced_at >= self.sync_interval:
            return None
        decision = self._decide_locally(entry, cost, now)
        self.counters.record(decision)
        return decision

    async def flush(self) -> None:
        """Charge Redis for every locally admitted hit not yet reported (e.g. before shutdown)."""
        for key, entry in list(self._local.items()):
            if entry.pending and entry.inflight is None:
                pending, entry.pending = entry.pending, 0
                if await self._call_store(key, 0, pending) is None:
                    entry.pending += pending

    def redis_keys(self, key: str) -> list[str]:
        # One hash tag per request key: all its limits live in one Redis Cluster slot.
        return [f"{self.prefix}{{{key}}}:{index}" for index in range(len(self.limits))]

    # --- store ----------------------------------------------------------------------------------

    async def _call_store(self, key: str, cost: int, pending: int) -> _StoreVerdict | None:
        """The script's verdict, or None when the store is (or was recently) unavailable."""
        if self.clock() < self._store_down_until:
            return None
        keys = self.redis_keys(key)
        args: tuple[str | int, ...] = (cost, pending, *self._limit_args)
        try:
            try:
                raw = await self.client.evalsha(CHECK_SCRIPT_SHA, len(keys), *keys, *args)
            except NoScriptError:
                await self.client.script_load(CHECK_SCRIPT)
                raw = await self.client.evalsha(CHECK_SCRIPT_SHA, len(keys), *keys, *args)
        except (RedisError, OSError):
            self.counters.store_errors += 1
            self._store_down_until = self.clock() + self.retry_store_after
            return None
        values = [int(value) for value in raw]
        return _StoreVerdict(
            allowed=values[0] == 1,
            remaining=tuple(values[1::3]),
            wait=tuple(value / 1e6 for value in values[2::3]),
            owed=tuple(value / 1e6 for value in values[3::3]),
        )

    def _decide(self, verdict: _StoreVerdict, cost: int) -> Decision:
        # Report the limit that binds: the refusing one with the longest wait, else the one with
        # the fewest requests left.
        if verdict.allowed:
            index = min(range(len(self.limits)), key=lambda i: (verdict.remaining[i], -verdict.owed[i]))
        else:
            index = max(range(len(self.limits)), key=lambda i: verdict.wait[i])
        return Decision(
            allowed=verdict.allowed or not self.enforce,
            over_limit=not verdict.allowed,
            limit=self.limits[index].burst,
            remaining=verdict.remaining[index],
            reset_after=verdict.owed[index],
            retry_after=verdict.wait[index],
        )

    def _fallback(self) -> Decision:
        self.counters.store_fallbacks += 1
        burst = min(spec.burst for spec in self.limits)
        allow = self.on_store_error == "allow" or not self.enforce
        return Decision(
            allowed=allow,
            over_limit=False,
            limit=burst,
            remaining=burst if allow else 0,
            reset_after=0.0,
            retry_after=0.0 if allow else self.retry_store_after,
            store_error=True,
        )

    # --- local batching -------------------------------------------------------------------------

    async def _check_batched(self, key: str, cost: int) -> Decision:
        entry = self._local.get(key)
        if entry is None:
            entry = self._new_local_key(key)
            if entry is None:  # table full of live keys: ask Redis directly, remember nothing
                verdict = await self._call_store(key, cost, 0)
                return self._fallback() if verdict is None else self._decide(verdict, cost)
        while entry.inflight is not None:  # one sync per key at a time; others wait for it
            await asyncio.shield(entry.inflight)
        now = self.clock()
        if now - entry.synced_at < self.sync_interval and entry.verdict is not None:
            return self._decide_locally(entry, cost, now)
        return await self._sync(key, entry, cost)

    def _new_local_key(self, key: str) -> _LocalKey | None:
        if len(self._local) >= self.max_local_keys:
            horizon = self.clock() - self.sync_interval
            stale = [
                name
                for name, entry in self._local.items()
                if entry.synced_at < horizon and not entry.pending and entry.inflight is None
            ]
            for name in stale:
                del self._local[name]
            if len(self._local) >= self.max_local_keys:
                return None
        entry = self._local[key] = _LocalKey()
        return entry

    async def _sync(self, key: str, entry: _LocalKey, cost: int) -> Decision:
        pending, entry.pending = entry.pending, 0
        entry.inflight = asyncio.get_running_loop().create_future()
        try:
            verdict = await self._call_store(key, cost, pending)
        finally:
            entry.inflight.set_result(None)
            entry.inflight = None
        if verdict is None:
            entry.pending += pending  # charge them at the next successful sync
            return self._fallback()
        entry.synced_at = self.clock()
        entry.verdict = verdict
        entry.allowance = min(verdict.remaining)
        return self._decide(verdict, cost)

    def _decide_locally(self, entry: _LocalKey, cost: int, now: float) -> Decision:
        verdict = entry.verdict
        assert verdict is not None
        elapsed = now - entry.synced_at
        if entry.allowance >= cost:
            entry.allowance -= cost
            entry.pending += cost
            index = min(range(len(self.limits)), key=lambda i: verdict.remaining[i])
            return Decision(
                allowed=True,
                over_limit=False,
                limit=self.limits[index].burst,
                remaining=entry.allowance,
                reset_after=max(0.0, verdict.owed[index] - elapsed) + entry.pending * self._intervals[index],
            )
        # Out of allowance: refuse until the next sync. The wait is estimated from the last
        # verdict plus what was admitted since; never shorter than the time to the next sync.
        waits = [
            (entry.pending + cost - verdict.remaining[i]) * self._intervals[i] - elapsed
            for i in range(len(self.limits))
        ]
        index = max(range(len(self.limits)), key=lambda i: waits[i])
        retry_after = max(waits[index], entry.synced_at + self.sync_interval - now, 0.0)
        return Decision(
            allowed=not self.enforce,
            over_limit=True,
            limit=self.limits[index].burst,
            remaining=0,
            reset_after=max(0.0, verdict.owed[index] - elapsed) + entry.pending * self._intervals[index],
            retry_after=retry_after,
        )
