"""One worker process: a uvloop event loop serving the shared listening sockets.

The master forks workers after it has bound the sockets; everything with threads, loops or
connections is created here, after the fork.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket

import uvloop

from gateway.app import build_runtime
from gateway.config import Config
from gateway.logs import log


def serve(config: Config, sockets: list[socket.socket], worker_id: int) -> int:
    """Serve until SIGTERM/SIGINT/SIGQUIT, then drain within server.drain_timeout; returns 0."""
    loop = uvloop.new_event_loop()
    asyncio.set_event_loop(loop)
    try:
        return loop.run_until_complete(_serve(loop, config, sockets, worker_id))
    finally:
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()


async def _serve(
    loop: asyncio.AbstractEventLoop, config: Config, sockets: list[socket.socket], worker_id: int
) -> int:
    runtime = build_runtime(config, loop)
    gateway = runtime.gateway
    servers = [
        await loop.create_server(gateway.new_connection, sock=sock, backlog=sock_backlog(sock))
        for sock in sockets
    ]
    stop = loop.create_future()

    def request_stop(signum: int) -> None:
        if not stop.done():
            stop.set_result(signum)

    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT):
        loop.add_signal_handler(signum, request_stop, signum)
    loop.add_signal_handler(signal.SIGUSR1, runtime.access_log.reopen)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)  # the master reloads; workers are replaced
    runtime.start(loop)
    log("info", "worker started", worker=worker_id, routes=len(config.routes))

    signum = await stop
    for server in servers:
        server.close()
    drained = gateway.drain()
    try:
        await asyncio.wait_for(asyncio.shield(drained), timeout=config.server.drain_timeout)
    except TimeoutError:
        log(
            "warning",
            "drain timeout: closing connections still open",
            worker=worker_id,
            connections=len(gateway.connections),
        )
        gateway.abort_all()
    for server in servers:
        with contextlib.suppress(Exception):
            await server.wait_closed()
    runtime.close()
    log("info", "worker stopped", worker=worker_id, signal=signal.Signals(signum).name)
    return 0


def sock_backlog(sock: socket.socket) -> int:
    # The listening socket was set up by the master; this only matters if uvloop re-listens.
    return 4096
