"""Rate-limit vocabulary shared by the local (Cython) and Redis limiters and the rate-limit plugin.

- parse_rate("100/s") -> Rate(count=100, period=1.0); periods s, m, h, d, optionally with a
  multiplier ("500/5m");
- LimitSpec: one rate and its burst (bucket size);
- KeySource: whose bucket a request draws from (consumer, client IP, a header, the route);
- Decision: a limiter's verdict plus what the RateLimit-* headers report;
- LimitCounters: the fixed set of counters every limiter keeps;
- header builders: RateLimit-Limit/-Remaining/-Reset (draft-ietf-httpapi-ratelimit-headers, values
  in whole seconds) and Retry-After (whole seconds, rounded up).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from gateway.plugins import Request

__all__ = [
    "Decision",
    "KeySource",
    "LimitCounters",
    "LimitSpec",
    "Rate",
    "StoreErrorPolicy",
    "parse_key_source",
    "parse_rate",
    "rate_limit_headers",
    "retry_after_seconds",
]

StoreErrorPolicy = Literal["allow", "deny"]

PERIOD_SECONDS: dict[str, float] = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_RATE = re.compile(r"\s*(\d+)\s*/\s*(\d*)\s*([smhd])\s*")


@dataclass(frozen=True, slots=True)
class Rate:
    """`count` requests per `period` seconds."""

    count: int
    period: float

    @property
    def per_second(self) -> float:
        return self.count / self.period

    def __str__(self) -> str:
        for unit, seconds in PERIOD_SECONDS.items():
            if self.period == seconds:
                return f"{self.count}/{unit}"
        return f"{self.count}/{self.period:g}s"


def parse_rate(text: str) -> Rate:
    """Parse "100/s", "6000/m", "1000/h", "50000/d" or "500/5m"; ValueError otherwise."""
    match = _RATE.fullmatch(text)
    if match is None:
        raise ValueError(f"rate {text!r} must look like '100/s' (periods: s, m, h, d)")
    count = int(match.group(1))
    multiplier = int(match.group(2) or "1")
    if count < 1 or multiplier < 1:
        raise ValueError(f"rate {text!r}: count and period must be positive")
    return Rate(count, multiplier * PERIOD_SECONDS[match.group(3)])


@dataclass(frozen=True, slots=True)
class LimitSpec:
    """One limit: a sustained rate and the bucket size (requests allowed at once)."""

    rate: Rate
    burst: int

    def __post_init__(self) -> None:
        if self.burst < 1:
            raise ValueError(f"burst must be at least 1, got {self.burst}")

    @classmethod
    def parse(cls, rate: str, burst: int | None = None) -> LimitSpec:
        """Burst defaults to the rate's count ("100/s" -> 100 at once, then 100 per second)."""
        parsed = parse_rate(rate)
        return cls(parsed, parsed.count if burst is None else burst)


# --- whose bucket ---------------------------------------------------------------------------------

KeyKind = Literal["consumer", "ip", "header", "route"]


@dataclass(frozen=True, slots=True)
class KeySource:
    """Where a request's limit key comes from.

    consumer   the authenticated consumer; requests without one (no auth plugin ran, or it let an
               anonymous caller through) fall back to the client IP, so they are still limited
    ip         the client address
    header     a request header's value (e.g. a tenant id set by a trusted proxy); requests
               without the header fall back to the client IP
    route      one bucket for the whole route, shared by every caller

    Keys carry a kind prefix ("c:", "ip:", "h:", "r") so a consumer named like an address, or a
    header value equal to a consumer name, never shares a bucket with it.
    """

    kind: KeyKind
    header: str = ""

    def key_for(self, request: Request) -> str:
        if self.kind == "consumer":
            consumer = request.consumer
            if consumer is not None:
                return "c:" + consumer.name
        elif self.kind == "header":
            value = request.headers.get(self.header)
            if value:
                return "h:" + value
        elif self.kind == "route":
            return "r"
        return "ip:" + request.client_ip

    def __str__(self) -> str:
        return f"header:{self.header}" if self.kind == "header" else self.kind


def parse_key_source(text: str) -> KeySource:
    """Parse "consumer", "ip", "route" or "header:NAME"; ValueError otherwise."""
    if text in ("consumer", "ip", "route"):
        return KeySource(text)  # type: ignore[arg-type]  # narrowed by the membership test
    kind, sep, name = text.partition(":")
    if kind == "header" and sep:
        name = name.strip()
        if name and all(c.isalnum() or c in "!#$%&'*+-.^_`|~" for c in name):
            return KeySource("header", name)
        raise ValueError(f"by = {text!r}: {name!r} is not a header name")
    raise ValueError(f"by = {text!r} must be one of consumer, ip, route, header:NAME")


# --- verdicts, counters, headers ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Decision:
    """A limiter's verdict for one request.

    allowed      let the request through (False only when enforcing and over a limit, or when the
                 store failed under on_store_error = "deny")
    over_limit   a limit was exceeded (True with allowed=True in shadow mode)
    store_error  the verdict came from the on_store_error policy, not from the store
    limit, remaining, reset_after   the most restrictive limit's bucket size, requests left and
                 seconds until full (for the RateLimit-* headers)
    retry_after  seconds until the request would be allowed (0 when it is)
    """

    allowed: bool
    over_limit: bool
    limit: int
    remaining: int
    reset_after: float
    retry_after: float = 0.0
    store_error: bool = False


@dataclass(slots=True)
class LimitCounters:
    """Counters a limiter keeps for metrics (monotonic; read them, never reset them)."""

    allowed: int = 0  # requests let through under their limits
    limited: int = 0  # requests refused for being over a limit
    shadow_limited: int = 0  # requests over a limit let through because enforce = false
    store_errors: int = 0  # store calls that failed (connection, timeout, script error)
    store_fallbacks: int = 0  # decisions made by on_store_error because the store was unavailable

    def record(self, decision: Decision) -> None:
        if decision.over_limit:
            if decision.allowed:
                self.shadow_limited += 1
            else:
                self.limited += 1
        else:
            self.allowed += 1

    def as_dict(self) -> dict[str, int]:
        return {
            "allowed": self.allowed,
            "limited": self.limited,
            "shadow_limited": self.shadow_limited,
            "store_errors": self.store_errors,
            "store_fallbacks": self.store_fallbacks,
        }


def whole_seconds(seconds: float) -> int:
    """Seconds rounded up to a whole number (a client waiting that long is never early)."""
    return max(0, math.ceil(seconds - 1e-9))


def retry_after_seconds(retry_after: float) -> int:
    """Retry-After in whole seconds, rounded up, at least 1 for a refused request."""
    return max(1, whole_seconds(retry_after))


def rate_limit_headers(limit: int, remaining: int, reset_after: float) -> list[tuple[str, str]]:
    return [
        ("RateLimit-Limit", str(limit)),
        ("RateLimit-Remaining", str(max(0, remaining))),
        ("RateLimit-Reset", str(whole_seconds(reset_after))),
    ]
