"""Upstream faults as the client sees them: 502/504 JSON, retries, passive and active health."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator

import httpx
import pytest

from tests.support.gateway_process import running_gateway
from tests.support.upstream import Upstream, free_port, running_upstream


@pytest.fixture
def upstream() -> Iterator[Upstream]:
    with running_upstream() as server:
        yield server


def upstream_config(targets: list[str], extra: str = "", route_extra: str = "") -> str:
    quoted = ", ".join(f'"{t}"' for t in targets)
    return f"""
[upstreams.backend]
targets = [{quoted}]
{extra}

[[routes]]
path = "$default"
upstream = "backend"
{route_extra}
"""


def test_unreachable_upstream_is_502_json() -> None:
    with running_gateway(upstream_config([f"127.0.0.1:{free_port()}"])) as gw:
        response = httpx.get(f"{gw.url}/echo")
        assert response.status_code == 502
        error = response.json()["error"]
        assert error["status"] == 502
        assert error["code"] == "upstream_unreachable"
        assert "backend" in error["message"]
        # ... and the gateway keeps serving
        assert httpx.get(f"{gw.url}/echo").status_code == 502


def test_slow_upstream_is_504(upstream: Upstream) -> None:
    config = upstream_config([upstream.addr], 'read_timeout = "300ms"')
    with running_gateway(config) as gw:
        started = time.monotonic()
        response = httpx.get(f"{gw.url}/slow?ms=3000", timeout=10)
        elapsed = time.monotonic() - started
        assert response.status_code == 504
        assert response.json()["error"]["code"] == "upstream_timeout"
        assert elapsed < 2.0
        assert httpx.get(f"{gw.url}/echo").status_code == 200


def test_connect_timeout_is_502() -> None:
    # A listener whose accept queue is full drops further SYNs: the connect hangs.
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    fillers = []
    for _ in range(4):
        filler = socket.socket()
        filler.setblocking(False)
        filler.connect_ex(("127.0.0.1", port))
        fillers.append(filler)
    time.sleep(0.2)
    try:
        config = upstream_config([f"127.0.0.1:{port}"], 'connect_timeout = "300ms"\nretries = 0')
        with running_gateway(config) as gw:
            started = time.monotonic()
            response = httpx.get(f"{gw.url}/echo", timeout=10)
            elapsed = time.monotonic() - started
            assert response.status_code == 502
            assert response.json()["error"]["code"] == "upstream_connect_timeout"
            assert elapsed < 2.0
    finally:
        for filler in fillers:
            filler.close()
        listener.close()


def test_upstream_closing_mid_response_closes_the_client(upstream: Upstream) -> None:
    with running_gateway(upstream_config([upstream.addr])) as gw:
        response = httpx.get(f"{gw.url}/drop")
        assert response.status_code == 502
        assert response.json()["error"]["code"] == "upstream_closed"


def test_connect_failure_is_retried_on_another_target(upstream: Upstream) -> None:
    dead = f"127.0.0.1:{free_port()}"
    config = upstream_config([dead, upstream.addr], "max_fails = 0")
    with running_gateway(config) as gw, httpx.Client() as client:
        for _ in range(20):
            # POST too: nothing reached the dead target, so retrying cannot duplicate anything
            assert client.get(f"{gw.url}/echo").status_code == 200
            assert client.post(f"{gw.url}/echo", content=b"data").status_code == 200


def test_passive_health_ejects_a_failing_target(upstream: Upstream) -> None:
    dead_port = free_port()
    config = upstream_config(
        [f"127.0.0.1:{dead_port}", upstream.addr], 'max_fails = 1\nfail_timeout = "30s"\nretries = 0'
    )
    with running_gateway(config) as gw, httpx.Client() as client:
        statuses = [client.get(f"{gw.url}/echo").status_code for _ in range(20)]
    # the dead target fails once, then it is out of the rotation
    assert statuses.count(502) == 1
    assert statuses.count(200) == 19


def test_active_health_checks_take_a_target_out_and_back(upstream: Upstream) -> None:
    with running_upstream() as second:
        config = upstream_config(
            [upstream.addr, second.addr],
            '[upstreams.backend.health]\npath = "/status/200"\ninterval = "100ms"\n'
            "healthy_threshold = 1\nunhealthy_threshold = 1",
        )
        with running_gateway(config) as gw, httpx.Client() as client:
            time.sleep(0.3)
            second.stop_listening()
            time.sleep(0.6)
            before = second.requests
            for _ in range(10):
                assert client.get(f"{gw.url}/echo").status_code == 200
            assert second.requests == before


def test_stale_keepalive_connection_is_replayed(upstream: Upstream) -> None:
    # The upstream closes every connection right after its response, without saying so.
    upstream.close_after_response = True
    with running_gateway(upstream_config([upstream.addr], "max_fails = 0")) as gw, httpx.Client() as client:
        for _ in range(10):
            assert client.get(f"{gw.url}/echo").status_code == 200
            time.sleep(0.02)


def test_hash_balancing_is_sticky(upstream: Upstream) -> None:
    with running_upstream() as second:
        config = upstream_config([upstream.addr, second.addr], 'balance = "hash"\nhash_on = "header:X-User"')
        with running_gateway(config) as gw, httpx.Client() as client:
            for user in ("alice", "bob", "carol", "dave"):
                before = (upstream.requests, second.requests)
                for _ in range(5):
                    client.get(f"{gw.url}/echo", headers={"X-User": user})
                moved = (upstream.requests - before[0], second.requests - before[1])
                assert sorted(moved) == [0, 5]


def test_slow_reader_does_not_count_as_a_slow_upstream(upstream: Upstream) -> None:
    # The client stops reading for longer than read_timeout: the upstream is paused, not timed out.
    size = 64 * 1024 * 1024
    config = upstream_config([upstream.addr], 'read_timeout = "300ms"')
    with running_gateway(config) as gw, socket.create_connection(("127.0.0.1", gw.port)) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        sock.sendall(f"GET /download?size={size} HTTP/1.1\r\nHost: a\r\n\r\n".encode())
        time.sleep(1.5)
        received = 0
        while received < size:
            data = sock.recv(1 << 20)
            assert data, f"closed after {received} bytes"
            received += len(data)
    assert received > size  # the body and the head


def test_client_that_never_reads_is_dropped_after_send_timeout(upstream: Upstream) -> None:
    config = upstream_config([upstream.addr])
    with running_gateway(config, server_extra='send_timeout = "500ms"') as gw:
        sock = socket.create_connection(("127.0.0.1", gw.port))
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        sock.sendall(b"GET /download?size=200000000 HTTP/1.1\r\nHost: a\r\n\r\n")
        time.sleep(2.0)
        sock.settimeout(5)
        received = 0
        try:
            while True:
                data = sock.recv(1 << 20)
                if not data:
                    break
                received += len(data)
        except ConnectionResetError:
            pass
        sock.close()
        assert received < 200_000_000
        assert httpx.get(f"{gw.url}/echo").status_code == 200  # and it keeps serving
