"""Upstream target selection: round robin, least connections, consistent hashing; passive health.

Written in Cython's pure-Python mode: balance.pxd makes Target and Balancer cdef classes with
typed attributes, so the proxy (Cython or Python) reads and updates a target's counters without
attribute lookups, and the same source runs interpreted in tests.

Passive health: report_failure() counts consecutive failures; at max_fails the target is ejected
for fail_timeout seconds. When the ejection ends the target is tried again, but its count is only
reset by a success, so one more failure ejects it again at once (half-open).
"""

from __future__ import annotations

from bisect import bisect_right

from xxhash import xxh64_intdigest

POLICIES: tuple[str, ...] = ("round_robin", "least_conn", "hash")
# Virtual nodes per target on the hash ring: enough that 4-10 targets get near-equal shares.
RING_REPLICAS = 160

# A C Py_ssize_t when compiled (declared in balance.pxd); an `int` annotation would make Cython
# expect a Python int object instead.
Index = int

_ROUND_ROBIN = 0
_LEAST_CONN = 1
_HASH = 2


def parse_addr(addr: str) -> tuple[str, int]:
    """Split "host:port" or "[ipv6]:port" into (host, port); ValueError when it is neither."""
    if not isinstance(addr, str):
        raise ValueError(f"upstream address must be a string, got {type(addr).__name__}")
    if addr.startswith("["):
        close = addr.find("]")
        if close < 0 or addr[close + 1 : close + 2] != ":":
            raise ValueError(f"upstream address {addr!r} must look like '[::1]:8080'")
        host = addr[1:close]
        port_text = addr[close + 2 :]
        if not host or ":" not in host:
            raise ValueError(f"upstream address {addr!r}: brackets are only for IPv6 addresses")
    else:
        host, sep, port_text = addr.rpartition(":")
        if not sep or not host:
            raise ValueError(f"upstream address {addr!r} must look like 'host:port'")
        if ":" in host:
            raise ValueError(f"upstream address {addr!r}: write IPv6 addresses in brackets, '[::1]:8080'")
    if any(ch.isspace() or ch in "[]/@" for ch in host):
        raise ValueError(f"upstream address {addr!r}: invalid host {host!r}")
    if not (port_text.isascii() and port_text.isdigit()) or not 0 < int(port_text) < 65536:
        raise ValueError(f"upstream address {addr!r}: port must be 1-65535")
    return host, int(port_text)


class Target:
    """One upstream address and its live state (in-flight count, passive and active health)."""

    def __init__(self, addr: str) -> None:
        host, port = parse_addr(addr)
        self.addr = addr
        self.host = host
        self.port = port
        # Maintained by the proxy: +1 when a request starts on this target, -1 when it ends.
        self.in_flight = 0
        self.consecutive_failures = 0
        # Monotonic time until which passive health keeps it out (0 = not ejected).
        self.down_until = 0.0
        # Active health-check state; stays True when no active check is configured.
        self.healthy = True

    def available(self, now: float) -> bool:
        """Healthy and not ejected at monotonic time `now`."""
        return self.healthy and now >= self.down_until

    def __repr__(self) -> str:
        return (
            f"Target({self.addr!r}, in_flight={self.in_flight}, failures={self.consecutive_failures}, "
            f"down_until={self.down_until}, healthy={self.healthy})"
        )


class Balancer:
    """Picks a target per request among a fixed list (a new config builds a new Balancer)."""

    def __init__(
        self,
        targets: list[Target],
        policy: str = "round_robin",
        max_fails: int = 3,
        fail_timeout: float = 10.0,
    ) -> None:
        if policy not in POLICIES:
            raise ValueError(f"unknown balancing policy {policy!r}; expected one of {', '.join(POLICIES)}")
        if max_fails < 0:
            raise ValueError(f"max_fails must be >= 0 (0 disables ejection), got {max_fails}")
        if fail_timeout < 0:
            raise ValueError(f"fail_timeout must be >= 0, got {fail_timeout}")
        for target in targets:
            if not isinstance(target, Target):
                raise TypeError(f"targets must be Target objects, got {type(target).__name__}")
        self.targets: list[Target] = list(targets)
        self.policy = policy
        self.max_fails = max_fails
        self.fail_timeout = fail_timeout
        self._policy_code = POLICIES.index(policy)
        self._next = 0  # round-robin cursor: index where the next scan starts
        self._ring_points: list[int] = []
        self._ring_owners: list[Target] = []
        if self._policy_code == _HASH:
            self._build_ring()

    def _build_ring(self) -> None:
        # Ties between points (vanishingly rare) are broken by target order, so the ring is
        # the same in every worker and every process.
        points = sorted(
            (xxh64_intdigest(f"{target.addr}#{replica}".encode()), index)
            for index, target in enumerate(self.targets)
            for replica in range(RING_REPLICAS)
        )
        self._ring_points = [point for point, _ in points]
        self._ring_owners = [self.targets[index] for _, index in points]

    def pick(self, now: float, hash_key: bytes | None = None, exclude: Target | None = None) -> Target | None:
        """The target for the next request, or None when none is available.

        exclude: a target to avoid (the one that just failed, when retrying elsewhere).
        hash_key: the consistent-hashing key (hash policy only; without one, round robin).
        """
        if self._policy_code == _HASH and hash_key is not None:
            return self._by_hash(now, hash_key, exclude)
        if self._policy_code == _LEAST_CONN:
            return self._least_conn(now, exclude)
        return self._round_robin(now, exclude)

    def _round_robin(self, now: float, exclude: Target | None) -> Target | None:
        count = len(self.targets)
        index = self._next
        for _ in range(count):
            if index >= count:
                index = 0
            target: Target = self.targets[index]
            index += 1
            if target is not exclude and target.available(now):
                self._next = index
                return target
        return None

    def _least_conn(self, now: float, exclude: Target | None) -> Target | None:
        # Scan from the round-robin cursor so that, among equally loaded targets, the one the
        # rotation reaches first wins and the load spreads.
        count = len(self.targets)
        index = self._next
        best: Target | None = None
        best_index = 0
        for _ in range(count):
            if index >= count:
                index = 0
            target: Target = self.targets[index]
            if (
                target is not exclude
                and target.available(now)
                and (best is None or target.in_flight < best.in_flight)
            ):
                best = target
                best_index = index
            index += 1
        if best is not None:
            self._next = best_index + 1
        return best

    def _by_hash(self, now: float, hash_key: bytes, exclude: Target | None) -> Target | None:
        points_count = len(self._ring_points)
        if points_count == 0:
            return None
        index = bisect_right(self._ring_points, xxh64_intdigest(hash_key))
        # The owner is the first point clockwise; if it can't take the request, keep walking
        # clockwise to the next target that can (so only the unavailable target's keys move).
        for _ in range(points_count):
            if index >= points_count:
                index = 0
            target: Target = self._ring_owners[index]
            if target is not exclude and target.available(now):
                return target
            index += 1
        return None

    def report_success(self, target: Target) -> None:
        """A request on `target` succeeded: its failure streak is over."""
        target.consecutive_failures = 0

    def report_failure(self, target: Target, now: float) -> None:
        """A request on `target` failed (connect error, timeout, 5xx as configured)."""
        target.consecutive_failures += 1
        if self.max_fails and target.consecutive_failures >= self.max_fails:
            target.down_until = now + self.fail_timeout
