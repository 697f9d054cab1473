"""The response cache inside the engine: compiled hits, stored misses, coalescing, purge.

Routes are built from real `cache` plugin instances: one whose check compiles (the CacheCheck
reads the plugin's store), one where the plugin runs in the Python chain (the engine tees the
body into the Fill its response phase leaves), and one with a small entry limit.
"""

from __future__ import annotations

import asyncio
import importlib
import itertools
import socket
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest

from gateway._fastpath.balance import Balancer, Target
from gateway._fastpath.http import RouteAction
from gateway._fastpath.proxy import UpstreamPool
from gateway.plugins import PluginChain, default_registry
from gateway.plugins.cache import CacheConfig, ResponseCachePlugin
from tests.support.engine import EngineThread, running_engine
from tests.support.upstream import Upstream, running_upstream

# Imported by name: mypy cannot follow the editable install's folder mapping to _fastpath/.
cache_module: Any = importlib.import_module("gateway._fastpath.cache")
_unique = itertools.count()


def make_plugin(**table: Any) -> ResponseCachePlugin:
    config = default_registry().decode_config("cache", table)
    assert isinstance(config, CacheConfig)
    return ResponseCachePlugin(config)


class Routes:
    compiled = make_plugin(ttl="60s", bypass_header="X-No-Cache", lock_timeout="3s")
    python = make_plugin(ttl="60s")
    small = make_plugin(ttl="60s", max_entry_size=2048)


@pytest.fixture(scope="module")
def upstream() -> Iterator[Upstream]:
    with running_upstream() as server:
        yield server


@pytest.fixture(scope="module")
def engine(upstream: Upstream) -> Iterator[EngineThread]:
    def routes(loop: asyncio.AbstractEventLoop, ticker: Any) -> list[tuple[str, Any]]:
        pool = UpstreamPool("backend", loop, Balancer([Target(upstream.addr)]), ticker)
        check = Routes.compiled.fast_check()
        assert check is not None
        compiled = RouteAction.proxy("compiled", pool, "/c").with_fast_checks([check])
        python = RouteAction.proxy("python", pool, "/p").with_plugins(PluginChain([Routes.python]))
        small = RouteAction.proxy("small", pool, "/s").with_fast_checks([Routes.small.fast_check()])
        return [("/c/{proxy+}", compiled), ("/p/{proxy+}", python), ("/s/{proxy+}", small)]

    with running_engine(routes) as running:
        yield running


@pytest.fixture
def client(engine: EngineThread) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=engine.url, timeout=10) as http:
        yield http


@pytest.fixture
def response_headers(upstream: Upstream) -> Iterator[list[tuple[str, str]]]:
    """Extra headers the upstream's /echo answers carry during one test."""
    upstream.response_headers = []
    try:
        yield upstream.response_headers
    finally:
        upstream.response_headers = []


def unique(path: str) -> str:
    separator = "&" if "?" in path else "?"
    return f"{path}{separator}u={next(_unique)}"


def test_hit_after_miss_is_the_stored_response_without_the_upstream(
    client: httpx.Client, upstream: Upstream
) -> None:
    path = unique("/c/echo")
    before = upstream.requests
    miss = client.get(path)
    assert miss.status_code == 200
    assert miss.headers["x-cache"] == "MISS"
    assert "age" not in miss.headers
    assert upstream.requests == before + 1
    hit = client.get(path)
    assert hit.status_code == 200
    assert hit.headers["x-cache"] == "HIT"
    # The echo body names the per-request X-Request-Id: equal bodies mean a stored response.
    assert hit.content == miss.content
    assert hit.headers["content-type"] == "application/json"
    assert int(hit.headers["content-length"]) == len(miss.content)
    assert int(hit.headers["age"]) >= 0
    assert "date" in hit.headers
    assert upstream.requests == before + 1  # the upstream never saw the hit


def test_age_grows(client: httpx.Client) -> None:
    path = unique("/c/echo")
    assert client.get(path).headers["x-cache"] == "MISS"
    assert client.get(path).headers["age"] == "0"
    time.sleep(1.1)
    later = client.get(path)
    assert later.headers["x-cache"] == "HIT"
    assert int(later.headers["age"]) >= 1


def test_head_is_served_from_the_get_entry(client: httpx.Client, upstream: Upstream) -> None:
    path = unique("/c/echo")
    head_miss = client.head(path)
    assert head_miss.headers["x-cache"] == "BYPASS"  # a HEAD response has no body to store
    stored = client.get(path)
    assert stored.headers["x-cache"] == "MISS"
    before = upstream.requests
    head = client.head(path)
    assert head.headers["x-cache"] == "HIT"
    assert head.content == b""
    assert int(head.headers["content-length"]) == len(stored.content)
    assert upstream.requests == before


def test_vary_keeps_variants_apart(
    client: httpx.Client, upstream: Upstream, response_headers: list[tuple[str, str]]
) -> None:
    response_headers.append(("Vary", "Accept-Language"))
    path = unique("/c/echo")
    en = client.get(path, headers={"Accept-Language": "en"})
    de = client.get(path, headers={"Accept-Language": "de"})
    assert (en.headers["x-cache"], de.headers["x-cache"]) == ("MISS", "MISS")
    before = upstream.requests
    en_again = client.get(path, headers={"Accept-Language": "en"})
    de_again = client.get(path, headers={"Accept-Language": "de"})
    assert (en_again.headers["x-cache"], de_again.headers["x-cache"]) == ("HIT", "HIT")
    assert en_again.content == en.content and de_again.content == de.content
    assert en.content != de.content
    assert client.get(path).headers["x-cache"] == "MISS"  # no Accept-Language: a third variant
    assert upstream.requests == before + 1


@pytest.mark.parametrize(
    "header",
    [("Cache-Control", "no-store"), ("Cache-Control", "private, max-age=60"), ("Set-Cookie", "session=1")],
)
def test_responses_a_shared_cache_must_not_store(
    client: httpx.Client, upstream: Upstream, response_headers: list[tuple[str, str]], header: tuple[str, str]
) -> None:
    response_headers.append(header)
    path = unique("/c/echo")
    before = upstream.requests
    first = client.get(path)
    second = client.get(path)
    assert (first.headers["x-cache"], second.headers["x-cache"]) == ("BYPASS", "BYPASS")
    assert upstream.requests == before + 2


def test_max_age_from_the_upstream_wins(
    client: httpx.Client, upstream: Upstream, response_headers: list[tuple[str, str]]
) -> None:
    response_headers.append(("Cache-Control", "max-age=1"))
    path = unique("/c/echo")
    client.get(path)
    assert client.get(path).headers["x-cache"] == "HIT"
    time.sleep(1.1)
    assert client.get(path).headers["x-cache"] == "MISS"  # stale after one second


def test_chunked_response_is_stored_dechunked(client: httpx.Client, upstream: Upstream) -> None:
    path = unique("/c/chunked?n=5")
    miss = client.get(path)
    assert miss.headers["x-cache"] == "MISS"
    assert miss.headers["transfer-encoding"] == "chunked"
    before = upstream.requests
    hit = client.get(path)
    assert hit.headers["x-cache"] == "HIT"
    assert "transfer-encoding" not in hit.headers
    assert hit.content == b"".join(b"chunk-%d\n" % i for i in range(5))
    assert int(hit.headers["content-length"]) == len(hit.content)
    assert upstream.requests == before


def test_request_directives_and_bypass(client: httpx.Client, upstream: Upstream) -> None:
    path = unique("/c/echo")
    stored = client.get(path)
    before = upstream.requests
    bypassed = client.get(path, headers={"X-No-Cache": "1"})
    assert bypassed.headers["x-cache"] == "BYPASS"
    refreshed = client.get(path, headers={"Cache-Control": "no-cache"})
    assert refreshed.headers["x-cache"] == "MISS"
    assert refreshed.content != stored.content
    assert upstream.requests == before + 2
    hit = client.get(path)
    assert hit.headers["x-cache"] == "HIT"
    assert hit.content == refreshed.content  # the refreshed response replaced the stored one
    assert client.get(path, headers={"Cache-Control": "max-age=3600"}).headers["x-cache"] == "HIT"
    post = client.post(path, content=b"x")
    assert post.headers["x-cache"] == "BYPASS"
    only = client.get(unique("/c/echo"), headers={"Cache-Control": "only-if-cached"})
    assert only.status_code == 504


def test_concurrent_misses_fetch_once(client: httpx.Client, upstream: Upstream, engine: EngineThread) -> None:
    path = unique("/c/slow?ms=400")
    before = upstream.requests

    def fetch(_: int) -> httpx.Response:
        with httpx.Client(base_url=engine.url, timeout=10) as own:
            return own.get(path)

    with ThreadPoolExecutor(6) as pool:
        responses = list(pool.map(fetch, range(6)))
    assert upstream.requests == before + 1
    assert all(response.status_code == 200 for response in responses)
    assert len({response.content for response in responses}) == 1
    verdicts = sorted(response.headers["x-cache"] for response in responses)
    assert verdicts == ["HIT"] * 5 + ["MISS"]
    resource, _, query = path.partition("?")
    key = cache_module.primary_key(
        cache_module.primary_material(b"GET", b"127.0.0.1", resource.encode(), query.encode())
    )
    assert not Routes.compiled.store.in_flight(key)  # the leader's fetch ended with its commit


def test_waiters_go_upstream_when_nothing_is_stored(
    upstream: Upstream, engine: EngineThread, response_headers: list[tuple[str, str]]
) -> None:
    response_headers.append(("Cache-Control", "no-store"))
    path = unique("/c/slow?ms=300")
    before = upstream.requests

    def fetch(_: int) -> httpx.Response:
        with httpx.Client(base_url=engine.url, timeout=10) as own:
            return own.get(path)

    with ThreadPoolExecutor(4) as pool:
        responses = list(pool.map(fetch, range(4)))
    assert all(response.status_code == 200 for response in responses)
    assert upstream.requests == before + 4
    assert {response.headers["x-cache"] for response in responses} == {"BYPASS"}


def test_too_large_responses_are_relayed_but_not_stored(client: httpx.Client, upstream: Upstream) -> None:
    path = unique("/s/download?size=100000")
    before = upstream.requests
    first = client.get(path)
    assert len(first.content) == 100000
    assert first.headers["x-cache"] == "MISS"  # decided at the head; the body then outgrew the limit
    second = client.get(path)
    assert len(second.content) == 100000
    assert second.headers["x-cache"] == "MISS"
    assert upstream.requests == before + 2


def test_upstream_error_statuses_are_not_stored(client: httpx.Client, upstream: Upstream) -> None:
    path = unique("/c/status/503")
    before = upstream.requests
    assert client.get(path).headers["x-cache"] == "BYPASS"
    assert client.get(path).status_code == 503
    assert upstream.requests == before + 2


def test_python_phase_plugin_stores_through_the_engine(client: httpx.Client, upstream: Upstream) -> None:
    path = unique("/p/chunked?n=3")
    miss = client.get(path)
    assert miss.headers["x-cache"] == "MISS"
    before = upstream.requests
    hit = client.get(path)
    assert hit.headers["x-cache"] == "HIT"
    assert hit.content == miss.content == b"chunk-0\nchunk-1\nchunk-2\n"
    assert upstream.requests == before


def test_purge_then_miss(client: httpx.Client, engine: EngineThread) -> None:
    path = unique("/c/echo")
    client.get(path)
    assert client.get(path).headers["x-cache"] == "HIT"
    purged = asyncio.run_coroutine_threadsafe(Routes.compiled.purge(prefix="/c/echo"), engine.loop).result(5)
    assert purged >= 1
    assert client.get(path).headers["x-cache"] == "MISS"


def test_pipelined_requests_after_a_hit(engine: EngineThread, client: httpx.Client) -> None:
    path = unique("/c/echo")
    body = client.get(path).content
    request = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode()  # the key ignores the port
    with socket.create_connection(("127.0.0.1", engine.port), timeout=5) as sock:
        sock.sendall(request * 3)
        data = b""
        while data.count(body) < 3:
            chunk = sock.recv(65536)
            assert chunk, "connection closed early"
            data += chunk
    assert data.count(b"X-Cache: HIT\r\n") == 3
