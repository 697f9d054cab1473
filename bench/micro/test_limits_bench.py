"""Rate-limit checks: the compiled GCRA table, the concurrency limiter and the plugin's access phase.

Measurements:
- test_check_loop_<case>: check_repeatedly runs 1,000 checks of one key inside the compiled module
  (the cost the engine pays when it calls RateLimiter.check from C); per-check cost is mean / 1000
  in extra_info["ns_per_check"]. Target: well under 1 us.
- test_check_call: one check per round through a Python call (adds the call overhead).
- test_check_many_keys: 1,000 distinct keys per round into a table held at max_keys, so inserts
  keep paying for eviction (the many-client-addresses case).
- test_concurrency_acquire_release: one acquire + release pair.
- test_plugin_access_local: the rate-limit plugin's access phase in local mode, through the
  plugin chain, for one request (what a Python-plugin route pays today).

Run: make bench-micro, or .venv/bin/pytest bench/micro/test_limits_bench.py --benchmark-only
"""

from __future__ import annotations

import importlib
from typing import Any

import pytest

from gateway.plugins import PluginChain, PluginRegistry, Request
from gateway.plugins.rate_limit import RateLimitPlugin

# Imported by name: mypy cannot follow the editable install's folder mapping to _fastpath/.
limits = importlib.import_module("gateway._fastpath.limits")

LOOP = 1_000


@pytest.fixture(scope="module", autouse=True)
def compiled() -> None:
    assert str(limits.__file__).endswith(".so"), "benchmark the compiled limiter (build it first)"


# case -> (rate per second, burst, seconds between checks, refusals expected per LOOP checks)
CASES: dict[str, tuple[float, int, float, int]] = {
    # A generous limit: every check is allowed and updates the bucket.
    "allowed": (1e9, 10**9, 0.0, 0),
    # An exhausted bucket: every check is refused (the fast-path 429 case).
    "refused": (1.0, 1, 0.0, LOOP),
}


@pytest.mark.parametrize("case", list(CASES))
def test_check_loop(benchmark: Any, case: str) -> None:
    rate, burst, step, refused = CASES[case]
    limiter = limits.RateLimiter(rate, burst)
    if case == "refused":
        assert limiter.check(b"client", 0.0) == 0  # spend the only token
    assert limits.check_repeatedly(limiter, b"client", 0.0, step, LOOP) == refused
    result = benchmark(limits.check_repeatedly, limiter, b"client", 0.0, step, LOOP)
    assert result == refused
    benchmark.extra_info["checks_per_round"] = LOOP
    benchmark.extra_info["ns_per_check"] = round(benchmark.stats.stats.mean / LOOP * 1e9, 1)


def test_check_call(benchmark: Any) -> None:
    limiter = limits.RateLimiter(1e9, 10**9)
    assert limiter.check(b"client", 1.0) == 0
    assert benchmark(limiter.check, b"client", 1.0) == 0


def test_check_many_keys(benchmark: Any) -> None:
    # A slow refill keeps every entry live, so the table stays full and evicts as it goes.
    limiter = limits.RateLimiter(0.001, 10, max_keys=10_000)
    rounds, warmup = 200, 20
    # Keys built before timing: one fresh batch of 1,000 client addresses per round.
    batches = iter(
        [[f"10.{b % 256}.{i // 256}.{i % 256}:{b}" for i in range(LOOP)] for b in range(rounds + warmup + 1)]
    )

    def one_batch() -> int:
        refused: int = limits.check_keys(limiter, next(batches), 1.0)
        return refused

    assert one_batch() == 0
    benchmark.pedantic(one_batch, rounds=rounds, iterations=1, warmup_rounds=warmup)
    assert len(limiter) <= 10_000
    assert limiter.evicted > 0
    benchmark.extra_info["checks_per_round"] = LOOP
    benchmark.extra_info["ns_per_check"] = round(benchmark.stats.stats.mean / LOOP * 1e9, 1)


def test_concurrency_acquire_release(benchmark: Any) -> None:
    limiter = limits.ConcurrencyLimiter(100)

    def pair() -> bool:
        taken: bool = limiter.acquire(b"client")
        limiter.release(b"client")
        return taken

    assert benchmark(pair) is True
    assert limiter.in_use(b"client") == 0


def test_plugin_access_local(benchmark: Any) -> None:
    registry = PluginRegistry([RateLimitPlugin])
    config = registry.decode_config("rate-limit", {"by": "ip", "rate": "1000000000/s"})
    chain = PluginChain([RateLimitPlugin(config)])  # type: ignore[arg-type]
    request = Request(
        method="GET", path="/", query="", headers=[], client_ip="10.0.0.1", route="r", request_id="1"
    )
    assert chain.run_access(request) is None
    assert benchmark(chain.run_access, request) is None
