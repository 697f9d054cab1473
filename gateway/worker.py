"""One worker process: a uvloop event loop serving the shared listening sockets.

The master forks workers after it has bound the sockets; everything with threads, loops or
connections is created here, after the fork.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import signal
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec
import uvloop

from gateway._fastpath.http import Gateway, RouteAction
from gateway._fastpath.router import Router
from gateway.app import Runtime, build_runtime
from gateway.cache_purge import CachePurger
from gateway.config import Config
from gateway.functions.service import FunctionService
from gateway.logs import flush_batched, log
from gateway.plugins import Request, Response
from gateway.server import listen_backlog
from gateway.state_sync import StateSync, needs_store, open_store


def serve(config: Config, sockets: list[socket.socket], worker_id: int) -> int:
    """Serve until SIGTERM/SIGINT/SIGQUIT, then drain within server.drain_timeout; returns 0."""
    loop = uvloop.new_event_loop()
    asyncio.set_event_loop(loop)
    try:
        return loop.run_until_complete(_serve(loop, config, sockets, worker_id))
    finally:
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()
        flush_batched()


# Young-generation collections every this many net allocations (CPython's default is 700).
_GC_THRESHOLD = 20_000


def settle_garbage_collector() -> None:
    """Keep the cyclic garbage collector off the request path.

    What the worker has built by now (config, routes, plugins, modules) lives as long as the
    worker: frozen, later collections do not walk it. Requests allocate many short-lived,
    acyclic objects that reference counting frees; at the default threshold the collector
    ran every few requests and took ~7 % of a busy function route's CPU.
    """
    gc.collect()
    gc.freeze()
    _, second, third = gc.get_threshold()
    gc.set_threshold(_GC_THRESHOLD, second, third)


async def _serve(
    loop: asyncio.AbstractEventLoop, config: Config, sockets: list[socket.socket], worker_id: int
) -> int:
    runtime = build_runtime(config, loop)
    gateway = runtime.gateway
    functions = FunctionService(config, runtime.functions)
    functions.start(loop)  # before any listener: an Event accepted must find its queue
    sync: StateSync | None = None
    if needs_store(config):
        sync = StateSync(open_store(config), runtime.consumers, runtime.subscriptions)
        sync.start(loop)
    # uvloop listen()s again with this backlog: keep the master's (somaxconn) rather than its 100.
    backlog = listen_backlog()
    servers = [await loop.create_server(gateway.new_connection, sock=sockets[0], backlog=backlog)]
    admin_gateway = None
    purger: CachePurger | None = None
    if config.admin is not None and sync is not None and len(sockets) > 1:
        purger = cache_purger(config, runtime)
        if purger is not None:
            purger.start(loop)
        admin_gateway = build_admin_gateway(loop, config, runtime, sync, purger, functions)
        servers.append(
            await loop.create_server(admin_gateway.new_connection, sock=sockets[1], backlog=backlog)
        )
    stop = loop.create_future()

    def request_stop(signum: int) -> None:
        if not stop.done():
            stop.set_result(signum)

    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT):
        loop.add_signal_handler(signum, request_stop, signum)
    loop.add_signal_handler(signal.SIGUSR1, runtime.access_log.reopen)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)  # the master reloads; workers are replaced
    runtime.start(loop)
    await runtime.start_functions()
    settle_garbage_collector()
    log("info", "worker started", worker=worker_id, routes=len(config.routes))

    signum = await stop
    for server in servers:
        server.close()
    gateways = [gateway] if admin_gateway is None else [gateway, admin_gateway]
    drained = asyncio.gather(*(g.drain() for g in gateways))
    try:
        await asyncio.wait_for(asyncio.shield(drained), timeout=config.server.drain_timeout)
    except TimeoutError:
        log(
            "warning",
            "drain timeout: closing connections still open",
            worker=worker_id,
            connections=sum(len(g.connections) for g in gateways),
        )
        for g in gateways:
            g.abort_all()
    for server in servers:
        with contextlib.suppress(Exception):
            await server.wait_closed()
    runtime.close()
    await functions.close()
    await runtime.aclose()
    if purger is not None:
        await purger.close()
    if sync is not None:
        await sync.close()
    log("info", "worker stopped", worker=worker_id, signal=signal.Signals(signum).name)
    return 0


def cache_purger(config: Config, runtime: Runtime) -> CachePurger | None:
    """The admin purge of this worker's cache stores; with several workers, relayed to the others
    through a journal next to the SQLite state file (see gateway.cache_purge)."""
    journal = Path(config.store.path + ".purges") if config.server.workers != 1 else None
    return CachePurger.for_plugins(runtime.plugins, journal)


def rate_limit_state_reader(runtime: Runtime) -> Callable[[str, str], dict[str, Any]] | None:
    """GET /rate-limits/{route}/{key}: the route's rate-limit plugin reports on the key."""
    from gateway.plugins.rate_limit import RateLimitPlugin

    limited = {plugin.route: plugin for plugin in runtime.plugins if isinstance(plugin, RateLimitPlugin)}
    if not limited:
        return None

    def read(route: str, key: str) -> dict[str, Any]:
        plugin = limited.get(route)
        if plugin is None:
            raise KeyError(f'no rate limit on route "{route}"')
        return plugin.state(key)

    return read


def build_admin_gateway(
    loop: asyncio.AbstractEventLoop,
    config: Config,
    runtime: Runtime,
    sync: StateSync,
    purger: CachePurger | None = None,
    functions: FunctionService | None = None,
) -> Gateway:
    """The admin API on its own listener, served by the same engine as a Python handler route."""
    from gateway.admin import AdminApp

    assert config.admin is not None
    app = AdminApp(
        store=sync.store,
        token=config.admin.token,
        config_view=lambda: msgspec.to_builtins(config),
        purge_cache=purger,
        rate_limit_state=rate_limit_state_reader(runtime),
    )

    async def handle(request: Request, body: bytes) -> Response:
        return await app.handle(request.method, request.path, request.query, request.headers.items(), body)

    router = Router()
    router.add("$default", RouteAction.python_handler("admin", handle))
    if functions is not None and config.functions:
        # AWS's Lambda Invoke API (boto3's lambda client with endpoint_url=<admin listener>).
        from gateway.functions.invoke_api import InvokeApp

        invoke_app = InvokeApp(functions, dict(config.admin.aws_keys), config.admin.token)

        async def invoke(request: Request, body: bytes) -> Response:
            return await invoke_app.handle(
                request.method, request.path, request.query, request.headers.items(), body
            )

        router.add("/2015-03-31/functions/{name}/invocations", RouteAction.python_handler("invoke", invoke))
        from gateway.functions.admin_routes import function_admin_routes

        for pattern, handler in function_admin_routes(functions, config.admin.token):
            router.add(pattern, RouteAction.python_handler("admin-functions", handler))
    return Gateway(loop, router, access_log=runtime.access_log, ticker=runtime.ticker)
