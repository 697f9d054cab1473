"""Response cache: the cost of a hit (key hash + primary lookup + vary select + freshness + LRU touch).

The store holds 10,000 entries (1 KiB bodies), a tenth of them with a Vary variant, so the
lookups hit a realistically sized dict and LRU list.

- test_hit: one compiled find+get per benchmark round (includes pytest-benchmark's call overhead);
- test_hit_loop: lookup_repeatedly runs 1,000 hits inside the compiled module; the per-hit cost
  is mean / 1000, reported in extra_info["ns_per_hit"];
- test_serve_bytes: building the whole response (Entry.response) on top of a hit.

Run: make bench-micro, or .venv/bin/pytest bench/micro/test_cache_bench.py --benchmark-only
"""

from __future__ import annotations

import importlib
from typing import Any

import pytest

# Imported by name: mypy cannot follow the editable install's folder mapping to _fastpath/.
cache_module: Any = importlib.import_module("gateway._fastpath.cache")

LOOP = 1_000
ENTRIES = 10_000
NOW = 1_700_000_000.0
HOST = b"api.example.com"
BODY = b"x" * 1024
PATH = b"/api/v1/items/4242"
QUERY = b"fields=name,price&page=1"


@pytest.fixture(scope="module")
def cache() -> Any:
    assert str(cache_module.__file__).endswith(".so"), "benchmark the compiled store (build it first)"
    store = cache_module.ResponseCache(64 << 20, 1 << 20)
    head = cache_module.stored_head(200, b"OK", [(b"Content-Type", b"application/json"), (b"ETag", b'"v1"')])
    for index in range(ENTRIES):
        path = b"/api/v1/items/%d" % index
        varies = index % 10 == 0
        names = (b"accept-encoding",) if varies else ()
        primary = cache_module.primary_material(b"GET", HOST, path, QUERY)
        for value in [b"gzip", b"br"] if varies else [None]:
            vary = cache_module.vary_material([value]) if varies else b""
            fill = store.begin(primary, HOST, path, names, vary, head, 200, 3600.0, 0.0, NOW)
            fill.append(BODY)
            assert fill.commit(NOW) is not None
    return store


PRIMARY = cache_module.primary_material(b"GET", HOST, PATH, QUERY)


def test_hit(benchmark: Any, cache: Any) -> None:
    def hit() -> Any:
        variants = cache.find(PRIMARY)
        return cache.get(variants, b"", NOW + 1)

    assert hit().body == BODY
    entry = benchmark(hit)
    assert entry.body == BODY


def test_hit_loop(benchmark: Any, cache: Any) -> None:
    assert cache_module.lookup_repeatedly(cache, PRIMARY, b"", NOW + 1, LOOP).body == BODY
    entry = benchmark(cache_module.lookup_repeatedly, cache, PRIMARY, b"", NOW + 1, LOOP)
    assert entry.body == BODY
    benchmark.extra_info["hits_per_round"] = LOOP
    benchmark.extra_info["ns_per_hit"] = round(benchmark.stats.stats.mean / LOOP * 1e9, 1)


def test_hit_loop_vary(benchmark: Any, cache: Any) -> None:
    primary = cache_module.primary_material(b"GET", HOST, b"/api/v1/items/4240", QUERY)
    vary = cache_module.vary_material([b"gzip"])
    assert cache_module.lookup_repeatedly(cache, primary, vary, NOW + 1, LOOP) is not None
    entry = benchmark(cache_module.lookup_repeatedly, cache, primary, vary, NOW + 1, LOOP)
    assert entry.vary == vary
    benchmark.extra_info["ns_per_hit"] = round(benchmark.stats.stats.mean / LOOP * 1e9, 1)


def test_serve_bytes(benchmark: Any, cache: Any) -> None:
    entry = cache.get(cache.find(PRIMARY), b"", NOW + 1)
    date = b"Date: Tue, 14 Nov 2023 22:13:21 GMT\r\n"
    data = benchmark(entry.response, NOW + 1, date, True, False)
    assert data.startswith(b"HTTP/1.1 200 OK\r\n") and data.endswith(b"\r\n\r\n" + BODY)
    assert b"Age: 1\r\n" in data
