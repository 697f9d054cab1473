"""Active health checks: a periodic GET per target, flipping Target.healthy on thresholds.

Runs as ordinary asyncio tasks, off the request path; the balancer only reads the flag.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from typing import Protocol

from gateway.config import HealthCheck
from gateway.logs import log


class CheckedTarget(Protocol):
    addr: str
    host: str
    port: int
    healthy: bool


class HealthChecker:
    """Checks every target of one upstream every `interval`."""

    def __init__(self, upstream: str, targets: Sequence[CheckedTarget], check: HealthCheck) -> None:
        self.upstream = upstream
        self.targets = targets
        self.check = check
        self._tasks: list[asyncio.Task[None]] = []

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._tasks = [loop.create_task(self._watch(target)) for target in self.targets]

    def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        self._tasks = []

    async def _watch(self, target: CheckedTarget) -> None:
        successes = failures = 0
        while True:
            ok, detail = await probe(target.host, target.port, self.check)
            if ok:
                successes, failures = successes + 1, 0
                if not target.healthy and successes >= self.check.healthy_threshold:
                    target.healthy = True
                    log("info", "target healthy", upstream=self.upstream, target=target.addr)
            else:
                successes, failures = 0, failures + 1
                if target.healthy and failures >= self.check.unhealthy_threshold:
                    target.healthy = False
                    log(
                        "warning",
                        "target unhealthy",
                        upstream=self.upstream,
                        target=target.addr,
                        reason=detail,
                    )
            await asyncio.sleep(self.check.interval)


def status_ok(status: int, expected: list[int]) -> bool:
    return status in expected if expected else 200 <= status < 400


async def probe(host: str, port: int, check: HealthCheck) -> tuple[bool, str]:
    """One check: (passed, reason when it did not)."""
    writer: asyncio.StreamWriter | None = None
    try:
        async with asyncio.timeout(check.timeout):
            reader, writer = await asyncio.open_connection(host, port)
            host_header = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
            writer.write(
                f"GET {check.path} HTTP/1.1\r\nHost: {host_header}\r\nUser-Agent: lambdagate-health\r\n"
                "Connection: close\r\n\r\n".encode("latin-1")
            )
            status_line = await reader.readline()
    except TimeoutError:
        return False, "timeout"
    except OSError as exc:
        return False, exc.strerror or type(exc).__name__
    finally:
        if writer is not None:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()
    parts = status_line.split(b" ", 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or not parts[1].isdigit():
        return False, "invalid response"
    status = int(parts[1])
    if not status_ok(status, check.expect_status):
        return False, f"status {status}"
    return True, ""
