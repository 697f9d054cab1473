"""Wire-level behaviour of the real gateway: pipelining, chunked bodies, 100-continue,
HTTP/1.0 clients, and requests the gateway must refuse before any upstream sees them."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator

import pytest

from tests.support.gateway_process import GatewayProcess, raw_exchange, running_gateway
from tests.support.upstream import Upstream, running_upstream


@pytest.fixture(scope="module")
def upstream() -> Iterator[Upstream]:
    with running_upstream() as server:
        yield server


@pytest.fixture(scope="module")
def gateway(upstream: Upstream) -> Iterator[GatewayProcess]:
    config = f"""
[upstreams.backend]
targets = ["{upstream.addr}"]

[[routes]]
path = "$default"
upstream = "backend"

[[routes]]
path = "/health"
static = {{ status = 200, body = "ok" }}
"""
    with running_gateway(config, server_extra='max_body_size = "1MiB"\nheader_timeout = "1s"') as gw:
        yield gw


def read_responses(sock: socket.socket, count: int, timeout: float = 5.0) -> list[tuple[bytes, bytes]]:
    """Read `count` responses (Content-Length or chunked framed) from a socket."""
    sock.settimeout(timeout)
    buffer = b""
    responses: list[tuple[bytes, bytes]] = []
    while len(responses) < count:
        while b"\r\n\r\n" not in buffer:
            data = sock.recv(65536)
            if not data:
                raise AssertionError(f"connection closed after {len(responses)} responses: {buffer!r}")
            buffer += data
        head, _, buffer = buffer.partition(b"\r\n\r\n")
        lower = head.lower()
        if b"transfer-encoding: chunked" in lower:
            body = b""
            while True:
                while b"\r\n" not in buffer:
                    buffer += sock.recv(65536)
                size_line, _, buffer = buffer.partition(b"\r\n")
                size = int(size_line.split(b";")[0], 16)
                while len(buffer) < size + 2:
                    buffer += sock.recv(65536)
                body += buffer[:size]
                buffer = buffer[size + 2 :]
                if size == 0:
                    break
        else:
            length = 0
            for line in lower.split(b"\r\n")[1:]:
                if line.startswith(b"content-length:"):
                    length = int(line.split(b":")[1])
            while len(buffer) < length:
                buffer += sock.recv(65536)
            body, buffer = buffer[:length], buffer[length:]
        responses.append((head, body))
    return responses


def test_pipelined_requests_are_answered_in_order(gateway: GatewayProcess) -> None:
    requests = (
        b"GET /slow?ms=200 HTTP/1.1\r\nHost: a\r\n\r\n"
        b"GET /health HTTP/1.1\r\nHost: a\r\n\r\n"
        b"POST /echo/3 HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello"
        b"GET /chunked?n=2 HTTP/1.1\r\nHost: a\r\n\r\n"
        b"GET /echo/5 HTTP/1.1\r\nHost: a\r\n\r\n"
    )
    with socket.create_connection(("127.0.0.1", gateway.port)) as sock:
        sock.sendall(requests)
        responses = read_responses(sock, 5)
    assert json.loads(responses[0][1])["path"] == "/slow?ms=200"
    assert responses[1][1] == b"ok"
    third = json.loads(responses[2][1])
    assert (third["path"], third["body_length"]) == ("/echo/3", 5)
    assert responses[3][1] == b"chunk-0\nchunk-1\n"
    assert json.loads(responses[4][1])["path"] == "/echo/5"


def test_chunked_request_body_reaches_upstream(gateway: GatewayProcess) -> None:
    request = (
        b"POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n"
    )
    with socket.create_connection(("127.0.0.1", gateway.port)) as sock:
        sock.sendall(request)
        [(head, body)] = read_responses(sock, 1)
    assert head.startswith(b"HTTP/1.1 200")
    assert json.loads(body)["body_length"] == 11


def test_chunked_request_split_into_tiny_writes(gateway: GatewayProcess) -> None:
    request = (
        b"POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"
    )
    with socket.create_connection(("127.0.0.1", gateway.port)) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for i in range(len(request)):
            sock.sendall(request[i : i + 1])
            time.sleep(0.001)
        [(_, body)] = read_responses(sock, 1)
    assert json.loads(body)["body_length"] == 5


def test_chunked_response_is_relayed_to_http11_client(gateway: GatewayProcess) -> None:
    raw = raw_exchange(gateway.port, b"GET /chunked?n=3 HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
    head, _, body = raw.partition(b"\r\n\r\n")
    assert b"Transfer-Encoding: chunked" in head
    assert body == b"8\r\nchunk-0\n\r\n8\r\nchunk-1\n\r\n8\r\nchunk-2\n\r\n0\r\n\r\n"


def test_chunked_response_is_unframed_for_http10_client(gateway: GatewayProcess) -> None:
    raw = raw_exchange(gateway.port, b"GET /chunked?n=3 HTTP/1.0\r\n\r\n")
    head, _, body = raw.partition(b"\r\n\r\n")
    assert b"Transfer-Encoding" not in head
    assert b"Connection: close" in head
    assert body == b"chunk-0\nchunk-1\nchunk-2\n"


def test_close_delimited_response_is_rechunked_for_http11_client(gateway: GatewayProcess) -> None:
    with socket.create_connection(("127.0.0.1", gateway.port)) as sock:
        sock.sendall(
            b"GET /close?size=70000 HTTP/1.1\r\nHost: a\r\n\r\nGET /health HTTP/1.1\r\nHost: a\r\n\r\n"
        )
        (head, body), (_, second) = read_responses(sock, 2)
    assert b"Transfer-Encoding: chunked" in head
    assert body == b"x" * 70000
    assert second == b"ok"  # the client connection stayed usable


def test_http10_keep_alive(gateway: GatewayProcess) -> None:
    with socket.create_connection(("127.0.0.1", gateway.port)) as sock:
        sock.sendall(b"GET /health HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        [(head, body)] = read_responses(sock, 1)
        assert b"Connection: keep-alive" in head
        sock.sendall(b"GET /echo HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        [(head, body)] = read_responses(sock, 1)
        assert json.loads(body)["version"] == "1.1"  # the gateway speaks 1.1 upstream


def test_expect_100_continue(gateway: GatewayProcess) -> None:
    with socket.create_connection(("127.0.0.1", gateway.port), timeout=5) as sock:
        sock.sendall(b"POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nExpect: 100-continue\r\n\r\n")
        interim = sock.recv(1024)
        assert interim == b"HTTP/1.1 100 Continue\r\n\r\n"
        sock.sendall(b"body")
        [(head, body)] = read_responses(sock, 1)
    assert head.startswith(b"HTTP/1.1 200")
    seen = json.loads(body)
    assert seen["body_length"] == 4
    assert all(name.lower() != "expect" for name, _ in seen["headers"])


def test_expect_100_continue_refused_when_too_large(gateway: GatewayProcess) -> None:
    raw = raw_exchange(
        gateway.port,
        b"POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 5000000\r\nExpect: 100-continue\r\n\r\n",
    )
    assert raw.startswith(b"HTTP/1.1 413 ")
    assert b"100 Continue" not in raw


SMUGGLING = [
    b"POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    b"POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n0\r\n\r\n",
    b"POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nContent-Length: 5\r\n\r\nabcde",
    b"POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n",
    b"POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding : chunked\r\n\r\n0\r\n\r\n",
    b"POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n",
    b"POST /echo HTTP/1.1\r\nHost: a\r\nX: y\r\n Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    b"POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: +4\r\n\r\nabcd",
    b"POST /echo HTTP/1.1\r\nHost: a\nContent-Length: 4\r\n\r\nabcd",
    b"POST /echo HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    b"POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0x4\r\nabcd\r\n0\r\n\r\n",
    b"POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nabcdXX0\r\n\r\n",
    b"GET /echo HTTP/1.1\r\nHost: a\r\nX: a\x00b\r\n\r\n",
    b"GET /echo HTTP/1.1\r\n\r\n",
    b"GET /echo HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
]


@pytest.mark.parametrize("request_bytes", SMUGGLING, ids=range(len(SMUGGLING)))
def test_ambiguous_requests_are_refused_before_the_upstream(
    gateway: GatewayProcess, upstream: Upstream, request_bytes: bytes
) -> None:
    # A valid request in the same packet after the bad one must not be processed either.
    before = upstream.requests
    raw = raw_exchange(gateway.port, request_bytes + b"GET /echo/after HTTP/1.1\r\nHost: a\r\n\r\n")
    assert raw.startswith(b"HTTP/1.1 400 "), raw
    head, _, body = raw.partition(b"\r\n\r\n")
    assert b"Connection: close" in head
    assert json.loads(body)["error"]["status"] == 400
    assert b"HTTP/1.1 200" not in raw
    time.sleep(0.05)
    assert upstream.requests == before


def test_limits(gateway: GatewayProcess, upstream: Upstream) -> None:
    before = upstream.requests
    too_long_target = b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: a\r\n\r\n"
    assert raw_exchange(gateway.port, too_long_target).startswith(b"HTTP/1.1 414 ")
    big_headers = (
        b"GET / HTTP/1.1\r\nHost: a\r\n"
        + b"".join(b"X-%d: %s\r\n" % (i, b"v" * 200) for i in range(90))
        + b"\r\n"
    )
    assert raw_exchange(gateway.port, big_headers).startswith(b"HTTP/1.1 431 ")
    many_fields = (
        b"GET / HTTP/1.1\r\nHost: a\r\n" + b"".join(b"X-%d: v\r\n" % i for i in range(120)) + b"\r\n"
    )
    assert raw_exchange(gateway.port, many_fields).startswith(b"HTTP/1.1 431 ")
    assert raw_exchange(gateway.port, b"GET / HTTP/2.0\r\nHost: a\r\n\r\n").startswith(b"HTTP/1.1 505 ")
    too_big = b"POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 2000000\r\n\r\n"
    assert raw_exchange(gateway.port, too_big).startswith(b"HTTP/1.1 413 ")
    assert upstream.requests == before


def test_chunked_body_over_the_limit_is_413(gateway: GatewayProcess) -> None:
    chunk = b"x" * 65536
    body = b"".join(b"10000\r\n" + chunk + b"\r\n" for _ in range(20)) + b"0\r\n\r\n"
    raw = raw_exchange(
        gateway.port, b"POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n" + body
    )
    assert raw.startswith(b"HTTP/1.1 413 ")


def test_slow_header_is_408(gateway: GatewayProcess) -> None:
    with socket.create_connection(("127.0.0.1", gateway.port), timeout=5) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: a\r\n")
        started = time.monotonic()
        data = sock.recv(4096)
        elapsed = time.monotonic() - started
    assert data.startswith(b"HTTP/1.1 408 ")
    assert 0.5 < elapsed < 3.0


def test_absolute_form_target_without_path(gateway: GatewayProcess) -> None:
    raw = raw_exchange(
        gateway.port, b"GET http://example.com?x=1 HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"
    )
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), raw
    assert json.loads(body)["path"] == "/?x=1"


def test_connect_is_refused(gateway: GatewayProcess, upstream: Upstream) -> None:
    before = upstream.requests
    raw = raw_exchange(gateway.port, b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n")
    assert raw.startswith(b"HTTP/1.1 501 ")
    assert upstream.requests == before


def test_half_closed_client_gets_its_response_then_the_connection_closes(gateway: GatewayProcess) -> None:
    with socket.create_connection(("127.0.0.1", gateway.port), timeout=5) as sock:
        sock.sendall(b"GET /slow?ms=100 HTTP/1.1\r\nHost: a\r\n\r\n")
        sock.shutdown(socket.SHUT_WR)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    assert data.startswith(b"HTTP/1.1 200")
    assert b"Connection: close" in data.partition(b"\r\n\r\n")[0]
