"""The gateway's own log messages: one JSON object per line on stderr.

Access logs are a separate stream (see ``gateway.accesslog``); this module is for the
operator-facing messages of the master and the workers (started, exited, reloaded, ...).
"""

from __future__ import annotations

import os
import time
from typing import Literal

import msgspec

Level = Literal["info", "warning", "error"]

_encoder = msgspec.json.Encoder()
_STDERR_FD = 2


def format_utc(unix_time: float, fraction_digits: int) -> str:
    """RFC 3339 timestamp in UTC with a fixed number of fraction digits (3 = ms, 6 = us)."""
    scale = 10**fraction_digits
    ticks = round(unix_time * scale)
    seconds, fraction = divmod(ticks, scale)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{fraction:0{fraction_digits}d}Z"


def log(level: Level, msg: str, **fields: object) -> None:
    """Write one JSON line to stderr: {"time", "level", "msg", **fields}.

    Written with os.write on fd 2 so that it works unchanged in forked children and never
    sits in a Python buffer that a fork would duplicate or os._exit would lose. A logger
    must not take the process down: write errors are swallowed.
    """
    record: dict[str, object] = {"time": format_utc(time.time(), 3), "level": level, "msg": msg}
    record.update(fields)
    line = _encoder.encode(record) + b"\n"
    view = memoryview(line)
    try:
        while view:
            written = os.write(_STDERR_FD, view)
            view = view[written:]
    except OSError:
        pass
