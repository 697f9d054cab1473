import asyncio
from collections.abc import Callable
from typing import Any

from gateway._fastpath.proxy import ProxyClient, UpstreamPool
from gateway._fastpath.timers import Ticker

BODY_SINK_KEY: str  # request.ctx key of a Fill the relay tees the upstream body into

def reason_phrase(status: int) -> str: ...
def refresh_date() -> None: ...
def error_body(status: int, code: str, message: str) -> bytes: ...

class FastCheck: ...

class RouteAction:
    name: str
    kind: int
    pool: UpstreamPool | None
    chain: Any
    handler: Any
    def with_fast_checks(
        self, checks: Any, drop_headers: Any = (), fallback_chains: Any = None
    ) -> RouteAction: ...
    def with_plugins(self, chain: Any) -> RouteAction: ...
    @staticmethod
    def python_handler(name: str, handler: Callable[[Any, bytes], Any]) -> RouteAction: ...
    @staticmethod
    def static(
        name: str, status: int, body: bytes, content_type: str, headers: dict[str, str]
    ) -> RouteAction: ...
    @staticmethod
    def proxy(
        name: str,
        pool: UpstreamPool,
        strip_prefix: str | None = None,
        rewrite_parts: list[bytes | str] | None = None,
        preserve_host: bool = False,
    ) -> RouteAction: ...

class Gateway:
    loop: asyncio.AbstractEventLoop
    router: Any
    access_log: Any
    ticker: Ticker
    connections: set[HttpConnection]
    draining: bool
    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        router: Any,
        *,
        host_routing: bool = False,
        max_target: int = 8192,
        max_head: int = 16384,
        max_fields: int = 100,
        max_body: int = ...,
        header_timeout: float = 10.0,
        body_timeout: float = 60.0,
        send_timeout: float = 60.0,
        keepalive_timeout: float = 75.0,
        keepalive_requests: int = 0,
        access_log: Any = None,
        ticker: Ticker | None = None,
    ) -> None: ...
    def new_connection(self) -> asyncio.Protocol: ...  # duck-typed protocol (a cdef class)
    def drain(self) -> asyncio.Future[None]: ...
    def abort_all(self) -> None: ...

class HttpConnection(ProxyClient): ...
