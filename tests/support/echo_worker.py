"""Stand-in workers for the master's supervision tests (``gateway.server.run(worker_main=...)``).

``serve`` answers on the inherited listening socket with a tiny HTTP/1.0 server on plain
asyncio. It accepts one connection at a time, so while one worker is busy with a held request
the next connection goes to another worker: concurrent requests reach every worker. Paths:

* ``/``              -> JSON body {"pid", "worker_id", "workers"} (workers from the config)
* ``/hold?ms=N``     -> the same, after N ms
* ``/slow?ms=N``     -> headers and "start\\n" at once, "end\\n" after N ms (an in-flight request)

SIGTERM/SIGINT drain like the real worker: stop accepting, finish the current request, return
0. SIGUSR1 writes a JSON line {"msg": "test worker got SIGUSR1", "pid"} to stderr.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import sys
from typing import TYPE_CHECKING
from urllib.parse import parse_qs, urlsplit

if TYPE_CHECKING:
    from gateway.config import Config


def serve(config: Config, sockets: list[socket.socket], worker_id: int) -> int:
    return asyncio.run(_serve(config, sockets[0], worker_id))


def crash(config: Config, sockets: list[socket.socket], worker_id: int) -> int:
    """A worker that exits at once with code 3: a crash loop."""
    return 3


def raise_error(config: Config, sockets: list[socket.socket], worker_id: int) -> int:
    raise RuntimeError("test worker failed on purpose")


def _say(msg: str) -> None:
    sys.stderr.write(json.dumps({"msg": msg, "pid": os.getpid()}) + "\n")
    sys.stderr.flush()


async def _serve(config: Config, listener: socket.socket, worker_id: int) -> int:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    loop.add_signal_handler(signal.SIGUSR1, _say, "test worker got SIGUSR1")
    # Poll accept() instead of awaiting loop.sock_accept(): cancelling that on SIGTERM can drop a
    # connection the kernel already handed over (accepted, then lost with the cancelled task).
    while not stop.is_set():
        try:
            conn, _ = listener.accept()
        except BlockingIOError:
            await asyncio.sleep(0.002)
            continue
        conn.setblocking(False)
        with conn:
            await _handle(loop, conn, config, worker_id)
        if stop.is_set():
            break
    return 0


async def _handle(
    loop: asyncio.AbstractEventLoop, conn: socket.socket, config: Config, worker_id: int
) -> None:
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = await loop.sock_recv(conn, 4096)
        if not chunk:
            return
        head += chunk
    target = head.split(b"\r\n", 1)[0].split(b" ")[1].decode("latin-1")
    url = urlsplit(target)
    delay = int(parse_qs(url.query).get("ms", ["0"])[0]) / 1000
    body = json.dumps({"pid": os.getpid(), "worker_id": worker_id, "workers": config.server.workers})
    status_and_headers = f"HTTP/1.0 200 OK\r\nX-Worker-Pid: {os.getpid()}\r\nConnection: close\r\n\r\n"
    if url.path == "/slow":
        await loop.sock_sendall(conn, status_and_headers.encode() + b"start\n")
        await asyncio.sleep(delay)
        await loop.sock_sendall(conn, b"end\n")
        return
    if url.path == "/hold":
        await asyncio.sleep(delay)
    await loop.sock_sendall(conn, (status_and_headers + body).encode())
