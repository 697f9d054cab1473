"""The gateway's own log messages: one JSON object per line on stderr.

Access logs are a separate stream (see ``gateway.accesslog``); this module is for the
operator-facing messages of the master and the workers (started, exited, reloaded, ...).
"""

from __future__ import annotations

import asyncio
import os
import time
from typing import Literal

import msgspec

Level = Literal["info", "warning", "error"]

_encoder = msgspec.json.Encoder()
_STDERR_FD = 2


_second_text: tuple[int, str] = (-1, "")  # the last whole second formatted, and its text


def format_utc(unix_time: float, fraction_digits: int) -> str:
    """RFC 3339 timestamp in UTC with a fixed number of fraction digits (3 = ms, 6 = us)."""
    global _second_text
    scale = 10**fraction_digits
    ticks = round(unix_time * scale)
    seconds, fraction = divmod(ticks, scale)
    cached_second, text = _second_text
    if seconds != cached_second:  # strftime once per second, not once per line
        text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))
        _second_text = (seconds, text)
    return f"{text}.{fraction:0{fraction_digits}d}Z"


def log(level: Level, msg: str, **fields: object) -> None:
    """Write one JSON line to stderr: {"time", "level", "msg", **fields}.

    Written with os.write on fd 2 so that it works unchanged in forked children and never
    sits in a Python buffer that a fork would duplicate or os._exit would lose. A logger
    must not take the process down: write errors are swallowed.
    """
    record: dict[str, object] = {"time": format_utc(time.time(), 3), "level": level, "msg": msg}
    record.update(fields)
    line = _encoder.encode(record) + b"\n"
    if _batch:
        flush_batched()  # keep the lines in the order they were logged
    _write(line)


def _write(data: bytes) -> None:
    view = memoryview(data)
    try:
        while view:
            written = os.write(_STDERR_FD, view)
            view = view[written:]
    except OSError:
        pass


# Lines of per-request logs (a function's START/END/REPORT and output) written in one event-loop
# iteration leave in one write: a write per line would cost more than the request itself.
_batch: list[bytes] = []
_batch_bytes = 0
_BATCH_BYTES = 65536


def write_batched(line: bytes) -> None:
    """Write an encoded line (ending in a newline) at the end of the event loop's current
    iteration (or once 64 KiB wait), with the other lines of that iteration.

    Without a running loop it writes at once. flush_batched() writes what is buffered (the
    worker calls it before it exits).
    """
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        _write(line)
        return
    global _batch_bytes
    if not _batch:
        loop.call_soon(flush_batched)
    _batch.append(line)
    _batch_bytes += len(line)
    if _batch_bytes >= _BATCH_BYTES:
        flush_batched()


def flush_batched() -> None:
    global _batch_bytes
    if _batch:
        data = b"".join(_batch)
        _batch.clear()
        _batch_bytes = 0
        _write(data)
