"""A programmable upstream server for integration tests, parsed by httptools (llhttp).

Runs its own event loop in a background thread so tests can drive the gateway (a separate
process) with ordinary blocking clients. Behaviour is chosen by path:

  /echo...           JSON: method, path (as received), headers, body length and sha256
  /chunked?n=N       N chunks of "chunk-<i>\n" with Transfer-Encoding: chunked
  /close?size=N      N bytes delimited by closing the connection (no Content-Length)
  /slow?ms=N         waits N ms, then answers like /echo
  /download?size=N   N bytes with Content-Length, written as the client reads (flow controlled)
  /status/NNN        an empty response with that status
  /hang              never answers
  /drop              closes the connection without answering

Every request is counted in `requests` and every accepted connection in `connections`.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httptools


class _Exchange:
    def __init__(self) -> None:
        self.url = b""
        self.headers: list[tuple[str, str]] = []
        self.body = hashlib.sha256()
        self.body_len = 0
        self.method = ""
        self.version = ""


class UpstreamProtocol(asyncio.Protocol):
    def __init__(self, server: Upstream) -> None:
        self.server = server
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.current = _Exchange()
        self.queue: asyncio.Queue[_Exchange | None] = asyncio.Queue()
        self.writable = asyncio.Event()
        self.writable.set()
        self.worker: asyncio.Task[None] | None = None

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.server.connections += 1
        self.server.live.add(self)
        self.worker = asyncio.get_running_loop().create_task(self.respond_in_order())

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self.server.errors += 1
            assert self.transport is not None
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.server.live.discard(self)
        self.queue.put_nowait(None)

    def pause_writing(self) -> None:
        self.writable.clear()

    def resume_writing(self) -> None:
        self.writable.set()

    # httptools callbacks
    def on_message_begin(self) -> None:
        self.current = _Exchange()

    def on_url(self, url: bytes) -> None:
        self.current.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.current.headers.append((name.decode("latin-1"), value.decode("latin-1")))

    def on_headers_complete(self) -> None:
        self.current.method = self.parser.get_method().decode()
        self.current.version = self.parser.get_http_version()

    def on_body(self, body: bytes) -> None:
        self.current.body.update(body)
        self.current.body_len += len(body)

    def on_message_complete(self) -> None:
        self.server.requests += 1
        self.server.seen.append(self.current)
        self.queue.put_nowait(self.current)

    async def respond_in_order(self) -> None:
        while True:
            exchange = await self.queue.get()
            if exchange is None or self.transport is None or self.transport.is_closing():
                return
            keep_open = await self.respond(exchange)
            if not keep_open:
                self.transport.close()
                return

    async def respond(self, ex: _Exchange) -> bool:
        assert self.transport is not None
        split = urlsplit(ex.url.decode("latin-1"))
        query = {key: values[0] for key, values in parse_qs(split.query).items()}
        path = split.path
        write = self.transport.write
        if path.startswith("/slow"):
            await asyncio.sleep(int(query.get("ms", "1000")) / 1000)
        if path.startswith("/hang"):
            await asyncio.sleep(3600)
        if path.startswith("/drop"):
            return False
        if path.startswith("/status/"):
            status = int(path.rsplit("/", 1)[1])
            write(f"HTTP/1.1 {status} Status\r\nContent-Length: 0\r\n\r\n".encode())
            return True
        if path.startswith("/chunked"):
            write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Type: text/plain\r\n\r\n")
            for i in range(int(query.get("n", "3"))):
                piece = f"chunk-{i}\n".encode()
                write(b"%x\r\n%s\r\n" % (len(piece), piece))
                await asyncio.sleep(0)
            write(b"0\r\n\r\n")
            return True
        if path.startswith("/close"):
            size = int(query.get("size", "100"))
            write(b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nConnection: close\r\n\r\n")
            await self.stream(size)
            return False
        if path.startswith("/download"):
            size = int(query.get("size", "1000"))
            write(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: %d\r\n\r\n"
                % size
            )
            await self.stream(size)
            return True
        body = json.dumps(
            {
                "method": ex.method,
                "path": ex.url.decode("latin-1"),
                "version": ex.version,
                "headers": ex.headers,
                "body_length": ex.body_len,
                "body_sha256": ex.body.hexdigest(),
            }
        ).encode()
        extra = "".join(f"{k}: {v}\r\n" for k, v in self.server.response_headers)
        write(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n%s\r\n%s"
            % (len(body), extra.encode("latin-1"), body)
        )
        return not self.server.close_after_response

    async def stream(self, size: int) -> None:
        assert self.transport is not None
        block = b"x" * 65536
        left = size
        while left > 0 and not self.transport.is_closing():
            await self.writable.wait()
            piece = block if left >= len(block) else block[:left]
            self.transport.write(piece)
            left -= len(piece)


class Upstream:
    """A running upstream on 127.0.0.1:<port>."""

    def __init__(self) -> None:
        self.requests = 0
        self.connections = 0
        self.errors = 0
        self.seen: list[_Exchange] = []
        self.live: set[UpstreamProtocol] = set()
        self.response_headers: list[tuple[str, str]] = []
        self.close_after_response = False
        self.port = 0
        self.loop = asyncio.new_event_loop()
        self._server: asyncio.Server | None = None
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    @property
    def addr(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, port: int = 0) -> None:
        self._thread.start()
        future = asyncio.run_coroutine_threadsafe(self._start(port), self.loop)
        future.result(5)

    async def _start(self, port: int) -> None:
        self._server = await self.loop.create_server(lambda: UpstreamProtocol(self), "127.0.0.1", port)
        self.port = self._server.sockets[0].getsockname()[1]

    def stop_listening(self) -> None:
        """Stop accepting (connections already open stay): the target looks down to new clients."""

        async def _close() -> None:
            if self._server is not None:
                self._server.close()

        asyncio.run_coroutine_threadsafe(_close(), self.loop).result(5)

    def stop(self) -> None:
        async def _stop() -> None:
            if self._server is not None:
                self._server.close()
            for protocol in list(self.live):
                if protocol.transport is not None:
                    protocol.transport.abort()
            await asyncio.sleep(0)
            for task in asyncio.all_tasks():
                if task is not asyncio.current_task():
                    task.cancel()

        asyncio.run_coroutine_threadsafe(_stop(), self.loop).result(5)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(5)
        self.loop.close()


@contextmanager
def running_upstream() -> Iterator[Upstream]:
    upstream = Upstream()
    upstream.start()
    try:
        yield upstream
    finally:
        upstream.stop()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def echo(response_body: bytes) -> dict[str, Any]:
    """Decode an /echo response body."""
    result: dict[str, Any] = json.loads(response_body)
    return result
