"""Large bodies stream through the gateway with flat memory (1 GiB each way)."""

from __future__ import annotations

import hashlib
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.gateway_process import GatewayProcess, running_gateway
from tests.support.upstream import Upstream, running_upstream

GIB = 1 << 30
RSS_LIMIT = 120 * 1024 * 1024  # a 1 GiB body held in memory would blow far past this

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def upstream() -> Iterator[Upstream]:
    with running_upstream() as server:
        yield server


@pytest.fixture(scope="module")
def gateway(upstream: Upstream) -> Iterator[GatewayProcess]:
    config = (
        f'[upstreams.backend]\ntargets = ["{upstream.addr}"]\n'
        '[[routes]]\npath = "$default"\nupstream = "backend"\n'
    )
    with running_gateway(config, server_extra='max_body_size = "2GiB"') as gw:
        yield gw


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


class PeakRss:
    """Samples the worker's RSS in the background while a transfer runs."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, rss_bytes(self.pid))
            time.sleep(0.05)

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def test_one_gib_download_with_flat_memory(gateway: GatewayProcess) -> None:
    [worker] = gateway.worker_pids()
    with PeakRss(worker) as rss, socket.create_connection(("127.0.0.1", gateway.port)) as sock:
        sock.sendall(f"GET /download?size={GIB} HTTP/1.1\r\nHost: a\r\n\r\n".encode())
        received = 0
        head = b""
        while b"\r\n\r\n" not in head:
            head += sock.recv(65536)
        head, _, rest = head.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200")
        assert f"Content-Length: {GIB}".encode() in head
        received = len(rest)
        while received < GIB:
            data = sock.recv(1 << 20)
            assert data, f"closed after {received} bytes"
            received += len(data)
    assert received == GIB
    assert rss.peak < RSS_LIMIT, f"worker RSS peaked at {rss.peak / 2**20:.0f} MiB"


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_one_gib_upload_with_flat_memory(gateway: GatewayProcess, chunked: bool) -> None:
    [worker] = gateway.worker_pids()
    block = bytes(range(256)) * 256  # 64 KiB
    digest = hashlib.sha256()
    with PeakRss(worker) as rss, socket.create_connection(("127.0.0.1", gateway.port)) as sock:
        if chunked:
            sock.sendall(b"POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n")
        else:
            sock.sendall(f"POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: {GIB}\r\n\r\n".encode())
        sent = 0
        while sent < GIB:
            sock.sendall(b"10000\r\n" + block + b"\r\n" if chunked else block)
            digest.update(block)
            sent += len(block)
        if chunked:
            sock.sendall(b"0\r\n\r\n")
        response = b""
        while b"body_sha256" not in response or not response.endswith(b"}"):
            data = sock.recv(65536)
            assert data
            response += data
    assert response.startswith(b"HTTP/1.1 200")
    assert f'"body_length": {GIB}'.encode() in response
    assert digest.hexdigest().encode() in response
    assert rss.peak < RSS_LIMIT, f"worker RSS peaked at {rss.peak / 2**20:.0f} MiB"
