"""Stopping background tasks for sure.

A cancellation can be lost: the Redis client (redis-py 8) catches `CancelledError` in some of its
connection-handling paths and carries on, about twice in a hundred cancellations that land
mid-command. A loop that was cancelled once and awaited would then run forever and hang a
worker's shutdown, so stopping cancels again until the task is really done.
"""

from __future__ import annotations

import asyncio
from typing import Any

from gateway.logs import log

_RECANCEL_EVERY = 0.1  # seconds between cancellations of a task that ignored the last one


async def cancel_and_wait(task: asyncio.Task[Any], *, name: str = "") -> None:
    """Cancel `task` and return once it has finished, cancelling again while it ignores it.

    An exception the task ends with (other than the cancellation) is logged, not raised: the
    caller is shutting down and has nothing better to do with it.
    """
    while not task.done():
        task.cancel()
        await asyncio.wait({task}, timeout=_RECANCEL_EVERY)
    if task.cancelled():
        return
    error = task.exception()
    if error is not None:
        label = name or task.get_name()
        log("warning", "a background task ended with an error", task=label, error=repr(error))
