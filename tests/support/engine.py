"""Run the Cython engine in-process (its own uvloop loop in a thread) with hand-built routes.

For engine tests that need route actions no config can express yet, or direct access to the
objects; end-to-end behaviour is tested through the real `lambdagate run` process elsewhere.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import uvloop

from gateway._fastpath.http import Gateway, RouteAction
from gateway._fastpath.router import Router
from gateway._fastpath.timers import Ticker


class EngineThread:
    def __init__(
        self, build_routes: Callable[[asyncio.AbstractEventLoop, Ticker], list[tuple[str, Any]]]
    ) -> None:
        self.loop = uvloop.new_event_loop()
        self.port = 0
        self._build = build_routes
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._server: asyncio.AbstractServer | None = None
        self.gateway: Gateway | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_until_complete(self._start())
        self._ready.set()
        self.loop.run_forever()

    async def _start(self) -> None:
        ticker = Ticker(self.loop, 0.1)
        router = Router()
        for pattern, action in self._build(self.loop, ticker):
            router.add(pattern, action)
        self.gateway = Gateway(self.loop, router, ticker=ticker)
        ticker.start()
        server: Any = await self.loop.create_server(self.gateway.new_connection, "127.0.0.1", 0)
        self._server = server
        self.port = server.sockets[0].getsockname()[1]

    def start(self) -> None:
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("engine did not start")

    def stop(self) -> None:
        async def _stop() -> None:
            if self._server is not None:
                self._server.close()
            if self.gateway is not None:
                self.gateway.abort_all()

        asyncio.run_coroutine_threadsafe(_stop(), self.loop).result(5)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(5)


@contextmanager
def running_engine(
    build_routes: Callable[[asyncio.AbstractEventLoop, Ticker], list[tuple[str, Any]]],
) -> Iterator[EngineThread]:
    engine = EngineThread(build_routes)
    engine.start()
    try:
        yield engine
    finally:
        engine.stop()


__all__ = ["EngineThread", "RouteAction", "running_engine"]
