"""Helpers for the sandbox and pool tests: specs on tests/functions/handlers, pools on uvloop."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import AsyncIterator, Coroutine
from contextlib import asynccontextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any, TypeVar

import uvloop

from gateway.functions.logcapture import LogLine
from gateway.functions.pool import FunctionPool, InvocationResult
from gateway.functions.sandbox import SandboxLimits
from gateway.functions.spec import FunctionSpec

HANDLERS = Path(__file__).parent / "handlers"
T = TypeVar("T")


def run(coro: Coroutine[Any, Any, T]) -> T:
    """Run on uvloop, as the workers do."""
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(coro)


def spec(handler: str, **changes: Any) -> FunctionSpec:
    """A function on tests/functions/handlers: "name" is fixtures.name, "module.name" as given."""
    qualified = handler if "." in handler else f"fixtures.{handler}"
    base = FunctionSpec(name="fixture", code=HANDLERS, handler=qualified, timeout=5.0)
    return replace(base, **changes)


def provided_spec(handler: str, **changes: Any) -> FunctionSpec:
    """AWS's awslambdaric as the bootstrap of a "provided" function."""
    env = {"TEST_PYTHON": sys.executable, **changes.pop("env", {})}
    return spec(handler, runtime="provided", env=env, **changes)


class Sink:
    """Collects the log lines of instances."""

    def __init__(self) -> None:
        self.lines: list[LogLine] = []

    def __call__(self, line: LogLine) -> None:
        self.lines.append(line)

    def messages(self, request_id: str | None) -> list[str]:
        return [line.message for line in self.lines if line.request_id == request_id]


@asynccontextmanager
async def started_pool(
    function: FunctionSpec, *, limits: SandboxLimits | None = None, **options: Any
) -> AsyncIterator[FunctionPool]:
    pool = FunctionPool(function, limits=limits, sink=options.pop("sink", Sink()), **options)
    await pool.start()
    try:
        yield pool
    finally:
        await pool.close()


def decoded(result: InvocationResult) -> Any:
    return json.loads(result.payload)
