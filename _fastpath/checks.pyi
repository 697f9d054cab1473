from collections.abc import Callable, Sequence
from typing import Any

from gateway._fastpath.http import FastCheck

class KeyAuthCheck(FastCheck):
    def __init__(
        self,
        header_names: Sequence[str],
        lookup: Callable[[bytes], Any],
        identity_headers: Callable[[Any], bytes],
        version: Callable[[], object],
        realm: str = "lambdagate",
    ) -> None: ...

class RateLimitCheck(FastCheck):
    allowed: int
    limited: int
    def __init__(
        self, limiters: Sequence[Any], by: str, enforce: bool = True, headers: bool = True
    ) -> None: ...
