"""The response cache end to end: the real gateway process, a loopback upstream and the admin API."""

from __future__ import annotations

import itertools
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from tests.support.gateway_process import GatewayProcess, running_gateway
from tests.support.upstream import Upstream, echo, free_port, running_upstream

TOKEN = "admin-secret-token"
_unique = itertools.count()


def cache_config(upstream: Upstream, admin_port: int, db: Path) -> str:
    return f"""
[store]
path = "{db}"

[admin]
listen = "127.0.0.1:{admin_port}"
token = "{TOKEN}"

[consumers.alice]
keys = ["alice-key"]

[consumers.bob]
keys = ["bob-key"]

[upstreams.backend]
targets = ["{upstream.addr}"]

[[routes]]
name = "authed-cache"
path = "/authed/{{proxy+}}"
upstream = "backend"
strip_prefix = "/authed"
[routes.plugins.key-auth]
[routes.plugins.cache]
ttl = "60s"

[[routes]]
name = "cached"
path = "/cached/{{proxy+}}"
upstream = "backend"
strip_prefix = "/cached"
[routes.plugins.cache]
ttl = "60s"

[[routes]]
name = "cors-then-cache"
path = "/cors/{{proxy+}}"
upstream = "backend"
strip_prefix = "/cors"
[routes.plugins.cors]
origins = ["https://app.example.com"]
[routes.plugins.cache]
ttl = "60s"
"""


@pytest.fixture(scope="module")
def upstream() -> Iterator[Upstream]:
    with running_upstream() as server:
        yield server


@pytest.fixture(scope="module")
def gateway(upstream: Upstream) -> Iterator[tuple[GatewayProcess, str]]:
    admin_port = free_port()
    with tempfile.TemporaryDirectory(prefix="lambdagate-cache-") as tmp:
        config = cache_config(upstream, admin_port, Path(tmp) / "state.db")
        with running_gateway(config) as gw:
            yield gw, f"http://127.0.0.1:{admin_port}"


@pytest.fixture
def client(gateway: tuple[GatewayProcess, str]) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=gateway[0].url, timeout=10) as http:
        yield http


def unique(path: str) -> str:
    return f"{path}{'&' if '?' in path else '?'}u={next(_unique)}"


def purge(admin_base: str, **body: str) -> int:
    response = httpx.post(
        f"{admin_base}/cache/purge", json=body, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=5
    )
    assert response.status_code == 200, response.text
    purged: int = response.json()["purged"]
    return purged


def test_miss_then_hit_without_the_upstream(client: httpx.Client, upstream: Upstream) -> None:
    path = unique("/cached/echo")
    before = upstream.requests
    miss = client.get(path)
    assert miss.headers["x-cache"] == "MISS"
    hit = client.get(path)
    assert hit.headers["x-cache"] == "HIT"
    assert hit.content == miss.content
    assert "age" in hit.headers and "date" in hit.headers
    assert upstream.requests == before + 1
    head = client.head(path)
    assert head.headers["x-cache"] == "HIT" and head.content == b""
    assert int(head.headers["content-length"]) == len(miss.content)
    time.sleep(1.1)
    assert int(client.get(path).headers["age"]) >= 1
    assert upstream.requests == before + 1


def test_chunked_upstream_is_served_with_content_length(client: httpx.Client, upstream: Upstream) -> None:
    path = unique("/cached/chunked?n=4")
    assert client.get(path).headers["x-cache"] == "MISS"
    before = upstream.requests
    hit = client.get(path)
    assert hit.headers["x-cache"] == "HIT"
    assert hit.content == b"chunk-0\nchunk-1\nchunk-2\nchunk-3\n"
    assert hit.headers["content-length"] == str(len(hit.content))
    assert upstream.requests == before


def test_vary_and_uncacheable_responses(client: httpx.Client, upstream: Upstream) -> None:
    upstream.response_headers = [("Vary", "Accept")]
    try:
        path = unique("/cached/echo")
        assert client.get(path, headers={"Accept": "text/html"}).headers["x-cache"] == "MISS"
        assert client.get(path, headers={"Accept": "application/json"}).headers["x-cache"] == "MISS"
        assert client.get(path, headers={"Accept": "text/html"}).headers["x-cache"] == "HIT"
        upstream.response_headers = [("Set-Cookie", "id=1")]
        path = unique("/cached/echo")
        assert client.get(path).headers["x-cache"] == "BYPASS"
        assert client.get(path).headers["x-cache"] == "BYPASS"
    finally:
        upstream.response_headers = []


def test_concurrent_misses_make_one_upstream_request(
    gateway: tuple[GatewayProcess, str], upstream: Upstream
) -> None:
    path = unique("/cached/slow?ms=500")
    before = upstream.requests

    def fetch(_: int) -> httpx.Response:
        with httpx.Client(base_url=gateway[0].url, timeout=10) as own:
            return own.get(path)

    with ThreadPoolExecutor(8) as pool:
        responses = list(pool.map(fetch, range(8)))
    assert upstream.requests == before + 1
    assert len({response.content for response in responses}) == 1
    assert sorted(response.headers["x-cache"] for response in responses) == ["HIT"] * 7 + ["MISS"]


def test_admin_purge_then_miss(gateway: tuple[GatewayProcess, str], client: httpx.Client) -> None:
    _, admin_base = gateway
    path = unique("/cached/echo")
    client.get(path)
    assert client.get(path).headers["x-cache"] == "HIT"
    assert purge(admin_base, prefix="/cached/echo") >= 1
    assert client.get(path).headers["x-cache"] == "MISS"
    assert client.get(path).headers["x-cache"] == "HIT"
    host = "127.0.0.1"
    assert purge(admin_base, key=f"{host}{path}") == 1
    assert client.get(path).headers["x-cache"] == "MISS"


def test_python_path_when_the_check_cannot_compile(client: httpx.Client, upstream: Upstream) -> None:
    # cors runs before cache and has no compiled form: the plugin's Python phases answer.
    path = unique("/cors/echo")
    origin = {"Origin": "https://app.example.com"}
    miss = client.get(path, headers=origin)
    assert miss.headers["x-cache"] == "MISS"
    assert miss.headers["access-control-allow-origin"] == "https://app.example.com"
    before = upstream.requests
    hit = client.get(path, headers=origin)
    assert hit.headers["x-cache"] == "HIT"
    assert hit.content == miss.content
    assert upstream.requests == before


def _worker_of(response: httpx.Response) -> str:
    """The worker that fetched this body: its X-Request-Id prefix, as echoed by the upstream."""
    headers = {name.lower(): value for name, value in echo(response.content)["headers"]}
    request_id: str = headers["x-request-id"]
    return request_id[:20]


def test_admin_purge_reaches_every_worker(upstream: Upstream, tmp_path: Path) -> None:
    port, admin_port = free_port(), free_port()
    text = f'[server]\nlisten = "127.0.0.1:{port}"\nworkers = 2\naccess_log = "off"\n' + cache_config(
        upstream, admin_port, tmp_path / "state.db"
    )
    gateway = GatewayProcess(text, port, tmp_path)
    gateway.start()
    try:
        wait_for_admin(admin_port)
        path = unique("/cached/echo")
        bodies: dict[str, bytes] = {}
        for _ in range(40):  # fresh connections spread over both workers (SO_REUSEPORT)
            response = httpx.get(gateway.url + path, timeout=5)
            bodies.setdefault(_worker_of(response), response.content)
            if len(bodies) == 2:
                break
        assert len(bodies) == 2, "requests never reached the second worker"
        purge(f"http://127.0.0.1:{admin_port}", prefix="/cached/")
        refreshed: set[str] = set()
        deadline = time.monotonic() + 5
        while len(refreshed) < 2 and time.monotonic() < deadline:
            response = httpx.get(gateway.url + path, timeout=5)
            if response.content != bodies[_worker_of(response)]:
                refreshed.add(_worker_of(response))
            time.sleep(0.05)
        assert refreshed == set(bodies), "a worker kept serving the purged entry"
    finally:
        gateway.stop()


def wait_for_admin(port: int) -> None:
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            httpx.get(f"http://127.0.0.1:{port}/status", timeout=1)
            return
        except httpx.TransportError:
            time.sleep(0.05)


def test_authenticated_callers_do_not_share_entries(client: httpx.Client, upstream: Upstream) -> None:
    path = unique("/authed/echo")
    before = upstream.requests
    alice = client.get(path, headers={"apikey": "alice-key"})
    assert alice.headers["x-cache"] == "MISS"
    assert client.get(path, headers={"apikey": "alice-key"}).headers["x-cache"] == "HIT"
    bob = client.get(path, headers={"apikey": "bob-key"})
    assert bob.headers["x-cache"] == "MISS"  # alice's entry is hers
    seen = {name.lower(): value for name, value in bob.json()["headers"]}
    assert seen["x-consumer-id"] == "bob"
    assert upstream.requests - before == 2
    assert client.get(path).status_code == 401  # and a hit never skips authentication
