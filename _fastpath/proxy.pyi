import asyncio

from gateway._fastpath.balance import Balancer
from gateway._fastpath.timers import Ticker, Watched

class ProxyClient(Watched): ...

class UpstreamPool:
    name: str
    connect_timeout: float
    read_timeout: float
    retries: int
    balancer: Balancer
    def __init__(
        self,
        name: str,
        loop: asyncio.AbstractEventLoop,
        balancer: Balancer,
        ticker: Ticker,
        *,
        keepalive: int = 64,
        connect_timeout: float = 1.0,
        read_timeout: float = 30.0,
        keepalive_timeout: float = 60.0,
        retries: int = 1,
        hash_on: str | None = None,
    ) -> None: ...
    def close(self) -> None: ...

class UpstreamConnection(Watched): ...
