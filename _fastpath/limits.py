"""Rate and concurrency limits per key: GCRA buckets in a bounded table, in-flight counters.

Written in Cython's pure-Python mode: limits.pxd makes RateLimiter and ConcurrencyLimiter cdef
classes with typed attributes and cpdef methods, so the engine can `from .limits cimport
RateLimiter` and call check() at C speed, and the same source runs interpreted in tests.

GCRA (generic cell rate algorithm) is a token bucket kept as one number per key: the theoretical
arrival time (TAT), the instant at which the key's bucket will be full again. With
interval = 1 / rate and tolerance = burst * interval, a request of `cost` tokens is allowed when

    max(TAT, now) + cost * interval - tolerance <= now

and then TAT advances by cost * interval. This admits exactly what a bucket of `burst` tokens
refilled at `rate` tokens per second admits. A key whose TAT is in the past has a full bucket,
which is the same as having no entry at all: such entries are dropped for free when the table
needs room. Only when every entry is still refilling are live entries evicted, those whose buckets
will be full soonest first (the least state is lost; an evicted key starts again with a full
bucket), so memory stays bounded under any number of distinct keys.

Time is whatever clock the caller passes as `now` (seconds, e.g. time.monotonic()); it must not
go backwards for one limiter.
"""

from __future__ import annotations

from collections.abc import Iterable

# A C Py_ssize_t when compiled (declared in limits.pxd); an `int` annotation would make Cython
# expect a Python int object instead.
Index = int

DEFAULT_MAX_KEYS = 100_000
# Decisions within this fraction of one emission interval of the boundary count as allowed, so
# rounding in the float sums (TAT accumulates many intervals) never refuses a conforming request.
_SLACK = 1e-6
# TATs sampled to choose which live entries to evict when the table is full.
_EVICTION_SAMPLES = 256


class _Bucket:
    """One key's state. A mutable box: an update writes a C double instead of a new float object."""

    def __init__(self, tat: float) -> None:
        self.tat = tat


class RateLimiter:
    """GCRA limits for many keys sharing one rate and burst.

    check() returns 0 when the request is allowed (and takes its tokens) or the milliseconds
    until it would be allowed. After each check, `limit`, `remaining` and `reset_after` describe
    the key for RateLimit-* headers: the bucket size, whole requests still allowed now, and
    seconds until the bucket is full again.
    """

    def __init__(self, rate_per_second: float, burst: Index, max_keys: Index = DEFAULT_MAX_KEYS) -> None:
        if not rate_per_second > 0:
            raise ValueError(f"rate must be positive, got {rate_per_second!r}")
        if burst < 1:
            raise ValueError(f"burst must be at least 1, got {burst!r}")
        if max_keys < 1:
            raise ValueError(f"max_keys must be at least 1, got {max_keys!r}")
        self.rate = float(rate_per_second)
        self.burst = burst
        self.max_keys = max_keys
        self.interval = 1.0 / self.rate
        self.tolerance = self.interval * burst
        self._slack = self.interval * _SLACK
        self._table: dict[object, _Bucket] = {}
        self.limit = burst
        self.remaining = burst
        self.reset_after = 0.0
        self.evicted = 0  # live (still refilling) entries dropped to stay within max_keys

    def __len__(self) -> int:
        return len(self._table)

    def check(self, key: object, now: float, cost: Index = 1) -> Index:
        """0 if allowed (tokens taken), else the milliseconds to wait (>= 1); cost 0 only reads.

        A cost above the burst can never be allowed; its retry time is what an empty-handed
        caller would wait for a bucket that large, so callers should keep cost <= burst.
        """
        if cost < 0:
            raise ValueError(f"cost must not be negative, got {cost!r}")
        bucket = self._table.get(key)
        tat = now
        if bucket is not None and bucket.tat > now:
            tat = bucket.tat
        new_tat = tat + cost * self.interval
        wait = new_tat - self.tolerance - now
        if wait > self._slack:
            # Refused: nothing is taken, the key's state is reported as it stands.
            self._report(tat, now)
            wait_ms = int(wait * 1000.0)
            if wait - wait_ms * 0.001 > self._slack:
                wait_ms += 1  # round up: retrying earlier would be refused again (the slack: float noise)
            return wait_ms if wait_ms > 0 else 1
        if cost > 0:
            if bucket is not None:
                bucket.tat = new_tat
            else:
                if len(self._table) >= self.max_keys:
                    self._make_room(now)
                self._table[key] = _Bucket(new_tat)
        self._report(new_tat, now)
        return 0

    def refund(self, key: object, now: float, cost: Index = 1) -> None:
        """Give back tokens taken by an allowed check (a later limit of the same request refused).

        Exact when called with the check's `now`: TAT returns to where the check found it.
        """
        bucket = self._table.get(key)
        if bucket is None:
            return
        tat = bucket.tat - cost * self.interval
        bucket.tat = tat if tat > now else now

    def _report(self, tat: float, now: float) -> None:
        owed = tat - now  # seconds of refill until the bucket is full
        if owed < 0.0:
            owed = 0.0
        remaining = int((self.tolerance - owed) / self.interval + _SLACK)
        self.remaining = remaining if remaining > 0 else 0
        self.reset_after = owed

    def _make_room(self, now: float) -> None:
        """Bring the table down to 7/8 of max_keys: expired entries first, then the soonest full.

        Dropping in batches keeps this O(1) amortised per inserted key. Which live entries go is
        read off a sample of their TATs (no sort of the whole table, no Python call per entry);
        among equal TATs the oldest inserted go first.
        """
        table = self._table
        low_water = self.max_keys - max(1, self.max_keys // 8)
        stride = len(table) // _EVICTION_SAMPLES + 1
        doomed = []
        samples = []
        skip = 0
        for key, bucket in table.items():
            if bucket.tat <= now:
                doomed.append(key)
            elif skip:
                skip -= 1
            else:
                samples.append(bucket.tat)  # every stride-th live entry
                skip = stride - 1
        for key in doomed:
            del table[key]
        excess = len(table) - low_water
        if excess <= 0:
            return
        samples.sort()
        # The sample quantile of the share to drop: TATs at or below it are the soonest full.
        rank = (excess * len(samples) + len(table) - 1) // len(table) - 1
        threshold = samples[min(max(rank, 0), len(samples) - 1)]
        doomed = []
        for key, bucket in table.items():
            if len(doomed) >= excess:
                break
            if bucket.tat <= threshold:
                doomed.append(key)
        if len(doomed) < excess:  # the sample guessed low: make up the rest from the oldest
            for key in table:
                if len(doomed) >= excess:
                    break
                if table[key].tat > threshold:
                    doomed.append(key)
        for key in doomed:
            del table[key]
        self.evicted += len(doomed)

    def clear(self) -> None:
        self._table.clear()


class ConcurrencyLimiter:
    """At most `limit` requests in flight per key; an entry exists only while its count > 0."""

    def __init__(self, limit: Index) -> None:
        if limit < 1:
            raise ValueError(f"concurrency limit must be at least 1, got {limit!r}")
        self.limit = limit
        self._in_flight: dict[object, int] = {}

    def __len__(self) -> int:
        return len(self._in_flight)

    def acquire(self, key: object) -> bool:
        """Take a slot for the key; False (nothing taken) when all `limit` slots are in use."""
        count = self._in_flight.get(key, 0)
        if count >= self.limit:
            return False
        self._in_flight[key] = count + 1
        return True

    def release(self, key: object) -> None:
        """Give back a slot taken by acquire(); releasing a key with nothing in flight is an error."""
        count = self._in_flight.get(key, 0)
        if count <= 0:
            raise KeyError(key)
        if count == 1:
            del self._in_flight[key]
        else:
            self._in_flight[key] = count - 1

    def in_use(self, key: object) -> Index:
        return self._in_flight.get(key, 0)


def check_repeatedly(limiter: RateLimiter, key: object, now: float, step: float, times: Index) -> Index:
    """Run `times` checks of one key, `step` seconds apart; the number refused (for benchmarks)."""
    refused = 0
    for _index in range(times):
        if limiter.check(key, now, 1) != 0:
            refused += 1
        now += step
    return refused


def check_keys(limiter: RateLimiter, keys: Iterable[object], now: float) -> Index:
    """One check per key in `keys`, all at `now`; the number refused (for benchmarks)."""
    refused = 0
    for key in keys:
        if limiter.check(key, now, 1) != 0:
            refused += 1
    return refused
