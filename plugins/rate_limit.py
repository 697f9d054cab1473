"""The `rate-limit` plugin: requests per key and time, and concurrent requests per key.

    [routes.plugins.rate-limit]
    by = "consumer"          # consumer | ip | header:NAME | route
    rate = "100/s"           # also /m, /h, /d ("500/5m" too)
    burst = 200              # bucket size; default: the rate's count
    limits = [{ rate = "1000/h" }]   # more limits; a request must pass all of them
    concurrency = 10         # at most 10 requests of one key in flight

Keys: `consumer` falls back to the client IP when no consumer was identified (an anonymous
caller is still limited, per address); `header:NAME` falls back to the IP when the header is
absent; `route` is one bucket for everyone. Buckets are per route: the same consumer on two
routes draws from two buckets.

A refused request gets 429 {"error": {"code": "rate_limited", ...}} with Retry-After (whole
seconds, rounded up) and RateLimit-Limit/-Remaining/-Reset; allowed responses carry the RateLimit-*
headers of the most restrictive limit (unless headers = false). Concurrency slots are taken in the
access phase and given back in the log phase.

Without a store, limits live in this worker's memory (_fastpath/limits, GCRA, bounded key table):
with W workers a client can get up to W times the rate. With `[store] redis` (the engine passes
redis_url to the constructor) the rate limits are global across workers and nodes
(gateway/store/redis_limits: one atomic Lua script per check, optional sync_interval batching,
on_store_error policy). Concurrency limits always stay per worker.

enforce = false is shadow mode: everything is computed and counted (counters.shadow_limited), no
request is refused.
"""

from __future__ import annotations

import importlib
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated, Any, Literal

import msgspec
from msgspec import Meta

from gateway.plugins import Plugin, Request, Response, ResponseHead
from gateway.ratelimit import (
    Decision,
    KeySource,
    LimitCounters,
    LimitSpec,
    parse_key_source,
    parse_rate,
    rate_limit_headers,
    retry_after_seconds,
)
from gateway.units import parse_duration

if TYPE_CHECKING:
    from gateway.store.redis_limits import RedisRateLimiter

# Imported by name: mypy cannot follow the editable install's folder mapping to _fastpath/.
_limits: Any = importlib.import_module("gateway._fastpath.limits")

_DECISION = "rate_limit.decision"  # request.ctx keys
_SLOT = "rate_limit.slot"

# Bounds go on the inner type: msgspec cannot put `ge` on an optional.
_PositiveInt = Annotated[int, Meta(ge=1)]


class LimitConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, frozen=True):
    rate: Annotated[str, Meta(description='Sustained rate, "N/s", "N/m", "N/h" or "N/d".')]
    burst: Annotated[
        _PositiveInt | None,
        Meta(description="Requests allowed at once (bucket size); default: the rate's N."),
    ] = None

    def __post_init__(self) -> None:
        parse_rate(self.rate)


class RateLimitConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, frozen=True):
    by: Annotated[
        str,
        Meta(
            description='Whose bucket: "consumer" (client IP when no consumer was identified), "ip", '
            '"header:NAME" (client IP when the header is absent) or "route" (one bucket for all).'
        ),
    ] = "consumer"
    rate: Annotated[
        str | None, Meta(description='Sustained rate, "N/s", "N/m", "N/h" or "N/d" (e.g. "100/s").')
    ] = None
    burst: Annotated[
        _PositiveInt | None,
        Meta(description="Requests allowed at once (bucket size); default: the rate's N."),
    ] = None
    limits: Annotated[
        tuple[LimitConfig, ...],
        Meta(description="Further limits ({rate, burst}) checked with `rate`; a request must pass all."),
    ] = ()
    concurrency: Annotated[
        _PositiveInt | None,
        Meta(description="Most requests of one key in flight at once (per worker); none by default."),
    ] = None
    enforce: Annotated[
        bool, Meta(description="Refuse requests over a limit; false = shadow mode (count, never refuse).")
    ] = True
    headers: Annotated[
        bool, Meta(description="Add RateLimit-Limit/-Remaining/-Reset to allowed responses.")
    ] = True
    on_store_error: Annotated[
        Literal["allow", "deny"],
        Meta(description='When Redis fails: "allow" requests unlimited, or "deny" them (503).'),
    ] = "allow"
    sync_interval: Annotated[
        str | float,
        Meta(
            description='Redis mode: ask Redis at most once per this interval per key ("100ms", or '
            "seconds as a number), deciding locally in between (fewer round trips, bounded "
            'over-admission); "0s" = every request.',
        ),
    ] = 0.0
    max_keys: Annotated[
        int, Meta(ge=1, description="Most keys tracked in memory per worker (oldest state dropped first).")
    ] = 100_000

    def __post_init__(self) -> None:
        parse_key_source(self.by)
        if self.sync_seconds() < 0:
            raise ValueError("sync_interval must not be negative")
        if self.rate is not None:
            parse_rate(self.rate)
        elif self.burst is not None:
            raise ValueError("burst needs a rate")
        if self.rate is None and not self.limits and self.concurrency is None:
            raise ValueError("set rate, limits or concurrency")

    def sync_seconds(self) -> float:
        if isinstance(self.sync_interval, str):
            return parse_duration(self.sync_interval)
        return float(self.sync_interval)

    def limit_specs(self) -> list[LimitSpec]:
        specs = [] if self.rate is None else [LimitSpec.parse(self.rate, self.burst)]
        specs += [LimitSpec.parse(limit.rate, limit.burst) for limit in self.limits]
        return specs


class RateLimitPlugin(Plugin):
    name = "rate-limit"
    version = "1.0.0"
    priority = 910  # as in Kong: after authentication plugins (Kong: key-auth 1250), so the consumer is known
    Config = RateLimitConfig

    def __init__(
        self,
        config: RateLimitConfig,
        *,
        redis_url: str | None = None,
        route: str = "",
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(config)
        self.route = route  # the route's name, as Request.route shows it (keys Redis state)
        self.config: RateLimitConfig = config
        self.key_source: KeySource = parse_key_source(config.by)
        self.specs = config.limit_specs()
        self.redis_url = redis_url
        self.clock = clock
        self.counters = LimitCounters()
        self._local: tuple[Any, ...] = ()
        self._redis: RedisRateLimiter | None = None  # created in the worker's loop on first use
        if redis_url is None:
            self._local = tuple(
                _limits.RateLimiter(spec.rate.per_second, spec.burst, config.max_keys) for spec in self.specs
            )
        self._concurrency: Any = (
            None if config.concurrency is None else _limits.ConcurrencyLimiter(config.concurrency)
        )

    # --- phases ---------------------------------------------------------------------------------

    def access(self, request: Request) -> Response | Any:
        key = self.key_source.key_for(request)
        if self._concurrency is not None:
            if self._concurrency.acquire(key):
                request.ctx[_SLOT] = key
            elif self.config.enforce:
                self.counters.limited += 1
                return self._too_many_concurrent()
            else:
                self.counters.shadow_limited += 1
        if not self.specs:
            return None
        if self.redis_url is not None:
            decided = self._redis_limiter().check_nowait(f"{request.route}|{key}")
            if decided is not None:  # batching: decided locally, no coroutine for this request
                return self._apply(request, decided)
            return self._access_redis(request, key)
        return self._apply(request, self._check_local(key))

    async def _access_redis(self, request: Request, key: str) -> Response | None:
        decision = await self._redis_limiter().check(f"{request.route}|{key}")
        return self._apply(request, decision)

    def response(self, request: Request, response: ResponseHead) -> None:
        decision: Decision | None = request.ctx.get(_DECISION)
        if decision is None or not self.config.headers or decision.store_error:
            return
        for name, value in rate_limit_headers(decision.limit, decision.remaining, decision.reset_after):
            response.headers.set(name, value)

    def log(self, request: Request, response: ResponseHead) -> None:
        key = request.ctx.pop(_SLOT, None)
        if key is not None and self._concurrency is not None:
            self._concurrency.release(key)

    # --- compiled fast path (gateway.route_plugins asks for it) ---------------------------------

    def fast_check(self) -> Any:
        """The compiled equivalent of access() in local mode without a concurrency limit.

        It counts against this plugin's own buckets, so both paths share one state.
        """
        if self._concurrency is not None or not self.specs:
            return None
        if self.redis_url is not None:
            # Redis mode compiles only with batching: between syncs a key is decided locally, and
            # a request whose key is due for a sync falls back to access() (which awaits it).
            if self.config.sync_seconds() <= 0 or not self.route:
                return None
            from gateway._fastpath.checks import RemoteRateLimitCheck

            return RemoteRateLimitCheck(
                self._redis_limiter, self.config.by, self.route, self.config.enforce, self.config.headers
            )
        from gateway._fastpath.checks import RateLimitCheck

        self._compiled = RateLimitCheck(self._local, self.config.by, self.config.enforce, self.config.headers)
        return self._compiled

    # --- admin API ------------------------------------------------------------------------------

    def state(self, key: str) -> dict[str, Any]:
        """What the admin API shows for a key as this plugin forms it ("c:alice", "ip:10.0.0.1",
        "h:<value>", "r"): each limit's standing (read without taking a token) and the counters."""
        counters = self.counters.as_dict()
        compiled = getattr(self, "_compiled", None)
        if compiled is not None:
            counters["allowed"] += compiled.allowed
            counters["limited"] += compiled.limited
        limits: list[dict[str, Any]] = []
        now = self.clock()
        for spec, limiter in zip(self.specs, self._local, strict=False):
            limiter.check(key, now, 0)  # cost 0: reads the bucket, records nothing
            limits.append(
                {
                    "rate": f"{spec.rate.count}/{spec.rate.period:g}s",
                    "burst": spec.burst,
                    "remaining": max(0, limiter.remaining),
                    "reset_after": round(limiter.reset_after, 3),
                }
            )
        return {
            "route": self.route,
            "key": key,
            "mode": "redis" if self.redis_url is not None else "local",
            "limits": limits,
            "counters": counters,
        }

    # --- decisions ------------------------------------------------------------------------------

    def _check_local(self, key: str) -> Decision:
        now = self.clock()
        limiters = self._local
        for index, limiter in enumerate(limiters):
            wait_ms = limiter.check(key, now)
            if wait_ms:
                # Refused: give back what the earlier limits took, as if nothing had been asked.
                for earlier in limiters[:index]:
                    earlier.refund(key, now)
                decision = Decision(
                    allowed=not self.config.enforce,
                    over_limit=True,
                    limit=limiter.limit,
                    remaining=limiter.remaining,
                    reset_after=limiter.reset_after,
                    retry_after=wait_ms / 1000.0,
                )
                self.counters.record(decision)
                return decision
        binding = limiters[0]
        for limiter in limiters[1:]:
            if limiter.remaining < binding.remaining:
                binding = limiter
        decision = Decision(
            allowed=True,
            over_limit=False,
            limit=binding.limit,
            remaining=binding.remaining,
            reset_after=binding.reset_after,
        )
        self.counters.record(decision)
        return decision

    def _apply(self, request: Request, decision: Decision) -> Response | None:
        if decision.allowed:
            request.ctx[_DECISION] = decision
            return None
        self._release_slot(request)
        if decision.store_error:
            return Response.error(
                503,
                "rate_limit_unavailable",
                "the rate-limit store is unavailable",
                [("Retry-After", str(retry_after_seconds(decision.retry_after)))],
            )
        return Response.error(
            429,
            "rate_limited",
            f"rate limit exceeded; retry in {retry_after_seconds(decision.retry_after)} s",
            [
                ("Retry-After", str(retry_after_seconds(decision.retry_after))),
                *rate_limit_headers(decision.limit, decision.remaining, decision.reset_after),
            ],
        )

    def _too_many_concurrent(self) -> Response:
        return Response.error(
            429,
            "rate_limited",
            f"too many concurrent requests (at most {self.config.concurrency})",
            [("Retry-After", "1")],
        )

    def _release_slot(self, request: Request) -> None:
        key = request.ctx.pop(_SLOT, None)
        if key is not None and self._concurrency is not None:
            self._concurrency.release(key)

    # --- Redis mode -----------------------------------------------------------------------------

    def _redis_limiter(self) -> RedisRateLimiter:
        if self._redis is None:
            # Imported here: the redis client is only needed (and only installed) for cluster mode.
            from gateway.store.redis_limits import RedisRateLimiter, connect

            assert self.redis_url is not None
            self._redis = RedisRateLimiter(
                connect(self.redis_url),
                self.specs,
                enforce=self.config.enforce,
                on_store_error=self.config.on_store_error,
                sync_interval=self.config.sync_seconds(),
                max_local_keys=self.config.max_keys,
                clock=self.clock,
            )
            # One set of counters whichever mode: the Redis limiter's are the plugin's.
            self._redis.counters = self.counters
        return self._redis

    async def aclose(self) -> None:
        """Report locally batched hits to Redis and close the client (worker shutdown)."""
        if self._redis is not None:
            redis, self._redis = self._redis, None
            await redis.flush()
            await redis.client.aclose()


PLUGIN = RateLimitPlugin
