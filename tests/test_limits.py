"""GCRA rate limiter and concurrency limiter (_fastpath/limits), compiled and interpreted.

The rate limiter is checked against a reference token bucket written here with exact fractions:
same verdicts and `remaining` over random arrival sequences, never more than `burst` at one
instant, the long-run rate, and retry-after times that are right to the millisecond.
"""

from __future__ import annotations

import importlib
import importlib.util
import math
from fractions import Fraction
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

SOURCE = Path(__file__).resolve().parent.parent / "_fastpath" / "limits.py"
# Imported by name: mypy cannot follow the editable install's folder mapping to _fastpath/.
compiled_limits = importlib.import_module("gateway._fastpath.limits")


def _load_interpreted() -> ModuleType:
    spec = importlib.util.spec_from_file_location("lambdagate_limits_interpreted", SOURCE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


interpreted_limits = _load_interpreted()
IMPLS = {"compiled": compiled_limits, "interpreted": interpreted_limits}


@pytest.fixture(params=list(IMPLS))
def impl(request: pytest.FixtureRequest) -> Any:
    return IMPLS[request.param]


def test_compiled_module_is_really_compiled() -> None:
    assert str(compiled_limits.__file__).endswith(".so")
    assert type(compiled_limits.check_repeatedly).__name__ != "function"
    assert type(interpreted_limits.check_repeatedly).__name__ == "function"
    # cdef class attributes are not settable from Python unless declared public.
    with pytest.raises(AttributeError):
        compiled_limits.RateLimiter(1, 1).remaining = 5


class TokenBucket:
    """The reference model: a bucket of `burst` tokens refilled continuously at `rate` per second."""

    def __init__(self, rate: Fraction, burst: int) -> None:
        self.rate = rate
        self.burst = burst
        self.tokens: dict[str, Fraction] = {}
        self.last: dict[str, Fraction] = {}

    def check(self, key: str, now: Fraction, cost: int) -> tuple[bool, int, Fraction]:
        """(allowed, whole tokens left, seconds to wait when refused)."""
        tokens = self.tokens.get(key, Fraction(self.burst))
        if key in self.last:
            tokens = min(Fraction(self.burst), tokens + (now - self.last[key]) * self.rate)
        self.last[key] = now
        if tokens >= cost:
            tokens -= cost
            self.tokens[key] = tokens
            return True, math.floor(tokens), Fraction(0)
        self.tokens[key] = tokens
        return False, math.floor(tokens), (cost - tokens) / self.rate


# Arrivals on a millisecond grid with integer rates: a model verdict is never closer to the
# boundary than 1/1000 of a token, far beyond float rounding, so verdicts must agree exactly.
arrivals = st.lists(
    st.tuples(st.integers(0, 400), st.sampled_from(["a", "b", "c"]), st.integers(1, 3)),
    min_size=1,
    max_size=120,
)


@settings(max_examples=300, deadline=None)
@given(
    rate=st.sampled_from([1, 3, 7, 10, 100, 1000]),
    burst=st.integers(1, 12),
    steps=arrivals,
    start_ms=st.integers(0, 10**9),
)
def test_matches_reference_token_bucket(
    rate: int, burst: int, steps: list[tuple[int, str, int]], start_ms: int
) -> None:
    for module in IMPLS.values():
        limiter = module.RateLimiter(rate, burst)
        model = TokenBucket(Fraction(rate), burst)
        now_ms = start_ms
        for gap_ms, key, cost in steps:
            now_ms += gap_ms
            wait_ms = limiter.check(key, now_ms / 1000.0, cost)
            allowed, remaining, wait = model.check(key, Fraction(now_ms, 1000), cost)
            assert (wait_ms == 0) == allowed, (module.__name__, now_ms, key, cost)
            assert limiter.remaining == remaining
            assert limiter.limit == burst
            if not allowed and cost <= burst:
                # Rounded up to the millisecond: never early, at most 1 ms late.
                assert wait * 1000 <= wait_ms < wait * 1000 + 1
            # Seconds until full: the model's missing tokens at the refill rate.
            missing = burst - model.tokens[key]
            assert limiter.reset_after == pytest.approx(float(missing / rate), abs=1e-9)


@settings(max_examples=200, deadline=None)
@given(rate=st.sampled_from([0.5, 1.0, 10.0, 250.0]), burst=st.integers(1, 50), attempts=st.integers(1, 120))
def test_never_more_than_burst_at_once(rate: float, burst: int, attempts: int) -> None:
    for module in IMPLS.values():
        limiter = module.RateLimiter(rate, burst)
        allowed = sum(limiter.check(b"k", 1000.0) == 0 for _ in range(attempts))
        assert allowed == min(burst, attempts)


@pytest.mark.parametrize(("rate", "burst"), [(10.0, 1), (10.0, 20), (3.0, 5), (1000.0, 100)])
def test_long_run_rate(impl: Any, rate: float, burst: int) -> None:
    """Hammered far above its rate for 60 s, a key gets burst + rate * 60 requests (+-1)."""
    limiter = impl.RateLimiter(rate, burst)
    step = 1.0 / (rate * 7)  # seven attempts per token
    allowed = 0
    for index in range(int(60 / step) + 1):
        allowed += limiter.check("k", 50.0 + index * step) == 0
    assert abs(allowed - (burst + rate * 60)) <= 1


def test_retry_after_is_exact(impl: Any) -> None:
    limiter = impl.RateLimiter(2.0, 2)  # one token per 500 ms
    assert limiter.check("k", 10.0) == 0
    assert limiter.check("k", 10.0) == 0
    assert limiter.remaining == 0
    assert limiter.reset_after == pytest.approx(1.0)
    wait_ms = limiter.check("k", 10.1)
    assert wait_ms == 400
    assert limiter.remaining == 0
    assert limiter.check("k", 10.1 + (wait_ms - 1) / 1000) > 0
    assert limiter.check("k", 10.1 + wait_ms / 1000) == 0


def test_cost_zero_reads_without_taking_or_storing(impl: Any) -> None:
    limiter = impl.RateLimiter(1.0, 3)
    assert limiter.check("fresh", 5.0, 0) == 0
    assert limiter.remaining == 3 and limiter.reset_after == 0.0
    assert len(limiter) == 0
    limiter.check("k", 5.0)
    assert limiter.check("k", 5.0, 0) == 0
    assert limiter.remaining == 2
    assert limiter.check("k", 5.0, 0) == 0
    assert limiter.remaining == 2


def test_cost_above_burst_is_never_allowed(impl: Any) -> None:
    limiter = impl.RateLimiter(10.0, 2)
    assert limiter.check("k", 0.0, 3) > 0
    assert limiter.check("k", 1000.0, 3) > 0
    assert limiter.check("k", 1000.0, 2) == 0


def test_refund_restores_the_bucket(impl: Any) -> None:
    limiter = impl.RateLimiter(1.0, 2)
    assert limiter.check("k", 7.0) == 0
    assert limiter.check("k", 7.0) == 0
    assert limiter.check("k", 7.0) > 0
    limiter.refund("k", 7.0)
    assert limiter.check("k", 7.0) == 0
    assert limiter.check("k", 7.0) > 0
    limiter.refund("k", 7.0)
    limiter.refund("k", 7.0)
    limiter.refund("k", 7.0)  # more than was taken: the bucket is full, not fuller
    assert sum(limiter.check("k", 7.0) == 0 for _ in range(5)) == 2
    limiter.refund("unknown", 7.0)


def test_keys_are_independent_and_typed_by_value(impl: Any) -> None:
    limiter = impl.RateLimiter(1.0, 1)
    assert limiter.check(b"a", 0.0) == 0
    assert limiter.check(b"a", 0.0) > 0
    assert limiter.check(b"b", 0.0) == 0
    assert limiter.check("a", 0.0) == 0  # str and bytes keys are different keys


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((0, 1), "rate"),
        ((-1.0, 1), "rate"),
        ((float("nan"), 1), "rate"),
        ((1, 0), "burst"),
        ((1, 1, 0), "max_keys"),
    ],
)
def test_invalid_arguments(impl: Any, args: tuple[Any, ...], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        impl.RateLimiter(*args)


def test_negative_cost_is_refused(impl: Any) -> None:
    with pytest.raises(ValueError, match="cost"):
        impl.RateLimiter(1, 1).check("k", 0.0, -1)


# --- bounded memory ----------------------------------------------------------------------------


def test_table_stays_bounded_under_many_keys(impl: Any) -> None:
    limiter = impl.RateLimiter(0.001, 5, max_keys=1000)  # slow refill: every entry stays live
    for index in range(20_000):
        limiter.check(f"ip-{index}", 1.0)
        assert len(limiter) <= 1000
    assert limiter.evicted >= 19_000 - 1000


def test_expired_entries_go_first(impl: Any) -> None:
    limiter = impl.RateLimiter(1.0, 100, max_keys=100)
    # Ten heavy users empty their buckets (100 s to refill), then a flood of one-off keys whose
    # buckets refill within 1 s: at most ~50 of them are live at any moment.
    for user in range(10):
        assert limiter.check(f"user-{user}", 0.0, 100) == 0
    for index in range(5000):
        limiter.check(f"flood-{index}", 1.0 + index * 0.0195)
        assert len(limiter) <= 100
    assert limiter.evicted == 0  # room was always made from expired entries, nothing live went
    for user in range(10):
        assert limiter.check(f"user-{user}", 98.5, 0) == 0
        assert limiter.remaining == 98, "a heavy user's state survived the flood"


def test_live_eviction_drops_the_soonest_full(impl: Any) -> None:
    limiter = impl.RateLimiter(1.0, 100, max_keys=8)
    for key in range(8):
        for _ in range(key + 1):  # key k owes k + 1 seconds of refill
            limiter.check(key, 0.0)
    limiter.check("new", 0.0)  # table full: 1 of 8 (1/8 of the table) must go, the least indebted
    assert len(limiter) == 8
    assert limiter.evicted == 1
    assert limiter.check(0, 0.0, 0) == 0 and limiter.remaining == 100  # key 0 was dropped: full
    assert limiter.check(7, 0.0, 0) == 0 and limiter.remaining == 92


def test_equal_states_evict_the_oldest_and_only_what_is_needed(impl: Any) -> None:
    limiter = impl.RateLimiter(0.01, 5, max_keys=800)
    for index in range(800):
        limiter.check(index, 3.0)  # identical TATs everywhere
    limiter.check("new", 3.0)
    assert len(limiter) == 701  # down to 7/8 of 800, plus the new key
    assert limiter.evicted == 100
    assert limiter.check(99, 3.0, 0) == 0 and limiter.remaining == 5  # among the oldest: dropped
    assert limiter.check(100, 3.0, 0) == 0 and limiter.remaining == 4  # kept


@settings(max_examples=100, deadline=None)
@given(
    max_keys=st.integers(1, 40),
    steps=st.lists(st.tuples(st.integers(0, 60), st.integers(0, 2000)), min_size=1, max_size=300),
)
def test_table_never_exceeds_max_keys(max_keys: int, steps: list[tuple[int, int]]) -> None:
    for module in IMPLS.values():
        limiter = module.RateLimiter(2.0, 3, max_keys=max_keys)
        now = 0.0
        seen: set[int] = set()
        for key, gap_ms in steps:
            now += gap_ms / 1000
            wait_ms = limiter.check(key, now)
            assert wait_ms == 0 or key in seen  # a new key always has a full bucket
            seen.add(key)
            assert len(limiter) <= max_keys


# --- concurrency -------------------------------------------------------------------------------


def test_concurrency_limit(impl: Any) -> None:
    limiter = impl.ConcurrencyLimiter(2)
    assert limiter.acquire("k") and limiter.acquire("k")
    assert not limiter.acquire("k")
    assert limiter.in_use("k") == 2
    assert limiter.acquire("other")
    limiter.release("k")
    assert limiter.in_use("k") == 1
    assert limiter.acquire("k")
    limiter.release("k")
    limiter.release("k")
    assert limiter.in_use("k") == 0
    limiter.release("other")
    assert len(limiter) == 0  # no entry outlives its last request
    with pytest.raises(KeyError):
        limiter.release("k")
    with pytest.raises(ValueError, match="at least 1"):
        impl.ConcurrencyLimiter(0)


@settings(max_examples=200, deadline=None)
@given(limit=st.integers(1, 4), ops=st.lists(st.tuples(st.booleans(), st.sampled_from("xyz")), max_size=80))
def test_concurrency_matches_a_counter_model(limit: int, ops: list[tuple[bool, str]]) -> None:
    for module in IMPLS.values():
        limiter = module.ConcurrencyLimiter(limit)
        model: dict[str, int] = {}
        for take, key in ops:
            if take:
                expected = model.get(key, 0) < limit
                assert limiter.acquire(key) == expected
                if expected:
                    model[key] = model.get(key, 0) + 1
            elif model.get(key, 0):
                limiter.release(key)
                model[key] -= 1
            assert limiter.in_use(key) == model.get(key, 0)
        assert len(limiter) == sum(1 for count in model.values() if count)


def test_check_repeatedly_counts_refusals(impl: Any) -> None:
    limiter = impl.RateLimiter(10.0, 5)
    # 100 checks 10 ms apart (1 s): 5 at once + 10 refilled -> 85 refused (within one of it).
    refused = impl.check_repeatedly(limiter, b"k", 0.0, 0.01, 100)
    assert abs(refused - 85) <= 1
