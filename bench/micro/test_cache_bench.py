"""Response cache: the cost of a hit (key hash + primary lookup + vary select + freshness + LRU touch).

The store holds 10,000 entries (1 KiB bodies), a tenth of them with a Vary variant, so the
lookups hit a realistically sized dict and LRU list.

- test_hit: one compiled find+get per benchmark round (includes pytest-benchmark's call overhead);
- test_hit_loop: lookup_repeatedly runs 1,000 hits inside the compiled module; the per-hit cost
  is mean / 1000, reported in extra_info["ns_per_hit"];
- test_serve_bytes: building the whole response (Entry.response) on top of a hit;
- test_engine_hit / test_engine_static_reference: a request through the engine to a cache hit,
  and the same request to a static route (see the section at the end).

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
    if benchmark.stats is not None:  # None with --benchmark-disable
        benchmark.extra_info["ns_per_hit"] = round(benchmark.stats.stats.mean / LOOP * 1e9, 1)


def test_hit_loop_vary(benchmark: Any, cache: Any) -> None:
    primary = cache_module.primary_material(b"GET", HOST, b"/api/v1/items/4240", QUERY)
    vary = cache_module.vary_material([b"gzip"])
    assert cache_module.lookup_repeatedly(cache, primary, vary, NOW + 1, LOOP) is not None
    entry = benchmark(cache_module.lookup_repeatedly, cache, primary, vary, NOW + 1, LOOP)
    assert entry.vary == vary
    if benchmark.stats is not None:  # None with --benchmark-disable
        benchmark.extra_info["ns_per_hit"] = round(benchmark.stats.stats.mean / LOOP * 1e9, 1)


def test_serve_bytes(benchmark: Any, cache: Any) -> None:
    entry = cache.get(cache.find(PRIMARY), b"", NOW + 1)
    date = b"Date: Tue, 14 Nov 2023 22:13:21 GMT\r\n"
    data = benchmark(entry.response, NOW + 1, date, True, False)
    assert data.startswith(b"HTTP/1.1 200 OK\r\n") and data.endswith(b"\r\n\r\n" + BODY)
    assert b"Age: 1\r\n" in data


# --- the whole engine path of a hit, in process ---------------------------------------------------
#
# A request's bytes handed to an HttpConnection (as uvloop would) until the response bytes reach
# the transport: parse, route, CacheCheck (key material, find, get), response write. The same
# request against a static route (the engine's `return 200`) is the reference; no sockets, so
# the figures are the engine's CPU cost per request only (measured: ~150 ns more for a hit, of
# ~4.3 us of CPU per request once the socket work is counted).

ENGINE_REQUEST = (
    b"GET /api/v1/items/4242?fields=name HTTP/1.1\r\nHost: api.example.com\r\nAccept: */*\r\n\r\n"
)
STATIC_REQUEST = (
    b"GET /static/v1/items/4242?fields=name HTTP/1.1\r\nHost: api.example.com\r\nAccept: */*\r\n\r\n"
)
# The engine's clock is real time: an entry stored an hour before 2e9 with a one-hour ttl stays
# fresh until 2033.
STORED_AT = 2e9 - 3600


class SinkTransport:
    """Counts what the engine writes; enough of asyncio.Transport for keep-alive exchanges."""

    def __init__(self) -> None:
        self.written = 0
        self.last = b""

    def write(self, data: bytes) -> None:
        self.written += len(data)
        self.last = data

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("127.0.0.1", 40000) if name == "peername" else default

    def is_closing(self) -> bool:
        return False

    def pause_reading(self) -> None: ...

    def resume_reading(self) -> None: ...

    def close(self) -> None: ...


@pytest.fixture(scope="module")
def engine_connection() -> Any:
    import asyncio

    from gateway._fastpath.balance import Balancer, Target
    from gateway._fastpath.http import Gateway, RouteAction
    from gateway._fastpath.proxy import UpstreamPool
    from gateway._fastpath.router import Router
    from gateway._fastpath.timers import Ticker
    from gateway.plugins import default_registry
    from gateway.plugins.cache import ResponseCachePlugin

    loop = asyncio.new_event_loop()
    ticker = Ticker(loop, 0.1)
    plugin = ResponseCachePlugin(default_registry().decode_config("cache", {"ttl": "1h"}))  # type: ignore[arg-type]
    primary = cache_module.primary_material(b"GET", HOST, b"/api/v1/items/4242", b"fields=name")
    head = cache_module.stored_head(200, b"OK", [(b"Content-Type", b"application/json")])
    fill = plugin.store.begin(
        primary, HOST, b"/api/v1/items/4242", (), b"", head, 200, 3600.0, 0.0, STORED_AT
    )
    fill.append(b'{"ok":true}')
    fill.commit(STORED_AT)
    pool = UpstreamPool("unused", loop, Balancer([Target("127.0.0.1:9")]), ticker)
    router = Router()
    router.add("/api/{proxy+}", RouteAction.proxy("cached", pool).with_fast_checks([plugin.fast_check()]))
    # The same route shape ({proxy+}), so the difference between the two is the cache alone.
    router.add("/static/{proxy+}", RouteAction.static("static", 200, b'{"ok":true}', "application/json", {}))
    gateway = Gateway(loop, router, ticker=ticker)
    connection: Any = gateway.new_connection()
    transport = SinkTransport()
    connection.connection_made(transport)
    yield connection, transport, plugin
    loop.close()


def test_engine_hit(benchmark: Any, engine_connection: Any) -> None:
    import time

    connection, transport, _ = engine_connection
    if time.time() > STORED_AT + 3600 - 60:
        pytest.fail("the fixture's entry has expired: move its stored_at")
    connection.data_received(ENGINE_REQUEST)
    assert b"X-Cache: HIT\r\n" in transport.last and transport.last.endswith(b'{"ok":true}')
    benchmark(connection.data_received, ENGINE_REQUEST)
    assert b"X-Cache: HIT\r\n" in transport.last


def test_engine_static_reference(benchmark: Any, engine_connection: Any) -> None:
    connection, transport, _ = engine_connection
    connection.data_received(STATIC_REQUEST)
    assert transport.last.startswith(b"HTTP/1.1 200 OK\r\n")
    benchmark(connection.data_received, STATIC_REQUEST)
