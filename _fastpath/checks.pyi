from collections.abc import Callable, Sequence
from typing import Any

from gateway._fastpath.http import FastCheck

class KeyAuthCheck(FastCheck):
    def __init__(
        self,
        header_names: Sequence[str],
        lookup: Callable[[bytes], Any],
        identity_headers: Callable[[Any], bytes],
        version: Callable[[], object] | Any,
        realm: str = "lambdagate",
    ) -> None: ...

class RateLimitCheck(FastCheck):
    allowed: int
    limited: int
    def __init__(
        self, limiters: Sequence[Any], by: str, enforce: bool = True, headers: bool = True
    ) -> None: ...

class CacheCheck(FastCheck):
    store: Any  # gateway._fastpath.cache.ResponseCache
    lock_timeout: float
    hits: int
    misses: int
    bypasses: int
    coalesced: int
    def __init__(
        self,
        store: Any,
        *,
        get: bool = True,
        head: bool = True,
        bypass_header: str | None = None,
        request_rule: Callable[[str, list[tuple[str, str]]], Any],
        new_miss: Callable[[bytes, int, list[tuple[bytes, bytes]], float, bool], Any],
        lock_timeout: float = 5.0,
    ) -> None: ...

class RemoteRateLimitCheck(FastCheck):
    def __init__(
        self,
        limiter_factory: Callable[[], Any],
        by: str,
        route: str,
        enforce: bool = True,
        headers: bool = True,
    ) -> None: ...
