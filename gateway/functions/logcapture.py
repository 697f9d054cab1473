"""The output of instances: one pipe per instance (stdout and stderr together, as CloudWatch
shows them), cut into lines tagged with the request id they belong to, bounded per invocation,
and the AWS-formatted log of an invocation (START, output, END, REPORT) whose tail
``X-Amz-Log-Type: Tail`` returns.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import math
import os
import termios
import time
from array import array
from collections.abc import Callable
from typing import NamedTuple

TAIL_BYTES = 4096
_READ_SIZE = 65536
_MAX_LINE = 65536  # a longer run without a newline is cut into lines of this size
_pending_bytes = array("i", [0])  # FIONREAD's answer (the worker is single-threaded)


class LogLine(NamedTuple):  # a tuple: several per invocation, made on the hot path
    """One line of function output, as handed to the log sink."""

    function: str
    instance: str
    request_id: str | None  # None: written outside an invocation (init, between invocations)
    message: str
    time: float


LogSink = Callable[[LogLine], None]


class LogCapture:
    """Reads one instance's output pipe on the event loop and attributes it to invocations.

    Per invocation at most ``max_bytes`` reach the sink (the rest is counted and reported once);
    only the last TAIL_BYTES of the invocation's log are kept for the tail.
    """

    def __init__(
        self,
        fd: int,
        *,
        function: str,
        instance: str,
        sink: LogSink,
        max_bytes: int = 262144,
        platform_logs: bool = True,
    ) -> None:
        os.set_blocking(fd, False)
        self.fd = fd
        self.function = function
        self.instance = instance
        self.sink = sink
        self.max_bytes = max_bytes
        self.platform_logs = platform_logs  # False: START/END/REPORT go to the tail only
        self.request_id: str | None = None
        self.partial = b""
        self.seen = 0
        self.dropped = 0
        self.tail = bytearray()
        self.loop: asyncio.AbstractEventLoop | None = None
        self.open = True

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        loop.add_reader(self.fd, self._readable)

    def begin(self, request_id: str | None) -> None:
        """Output from now on belongs to request_id. (Not drained first: a read per invocation
        costs more than it is worth; what an idle instance writes is read as it arrives.)"""
        self._flush_partial()
        self.request_id = request_id
        self.seen = self.dropped = 0
        self.tail = bytearray()

    def note(self, text: str, *, platform: bool = False) -> None:
        """A line the gateway writes into the invocation's log: a platform line (START, END,
        REPORT) or an error (timeout, crash)."""
        self._flush_partial()
        self._keep_tail(text.encode() + b"\n")
        if self.platform_logs or not platform:
            self.sink(LogLine(self.function, self.instance, self.request_id, text, time.time()))

    def finish(self) -> bytes:
        """Close the invocation's log (drain() first to take in what the pipe holds); returns
        what the tail holds of it."""
        self._flush_partial()
        if self.dropped:
            self.sink(
                LogLine(
                    self.function,
                    self.instance,
                    self.request_id,
                    f"[lambdagate] {self.dropped} bytes of output dropped",
                    time.time(),
                )
            )
            self.dropped = 0
        return bytes(self.tail[-TAIL_BYTES:]) if self.tail else b""

    def drain(self) -> None:
        """Read what is in the pipe now: output written before a response is attributed to it.

        Asks the pipe how much it holds first (FIONREAD): most invocations write nothing, and a
        read that finds nothing costs a raised BlockingIOError on top of the system call."""
        while self.open:
            try:
                fcntl.ioctl(self.fd, termios.FIONREAD, _pending_bytes, True)
            except OSError:
                return
            if _pending_bytes[0] <= 0 or not self._read_once():
                return

    def close(self) -> None:
        self.drain()
        self._flush_partial()
        self._eof()

    def _readable(self) -> None:
        self._read_once()

    def _read_once(self) -> bool:
        """One read from the pipe; False when it held nothing (or ended)."""
        try:
            chunk = os.read(self.fd, _READ_SIZE)
        except BlockingIOError:
            return False
        except OSError:
            chunk = b""
        if not chunk:
            self._eof()
            return False
        self._feed(chunk)
        return True

    def _eof(self) -> None:
        if not self.open:
            return
        self.open = False
        if self.loop is not None:
            self.loop.remove_reader(self.fd)
        with contextlib.suppress(OSError):
            os.close(self.fd)

    def _feed(self, chunk: bytes) -> None:
        if self.seen >= self.max_bytes:
            # Over the budget: only the count and the tail move (the tail stays the newest bytes).
            self.dropped += len(chunk)
            self._keep_tail(chunk)
            return
        self.seen += len(chunk)
        data = self.partial + chunk
        lines = data.split(b"\n")
        self.partial = lines.pop()
        while len(self.partial) > _MAX_LINE:
            lines.append(self.partial[:_MAX_LINE])
            self.partial = self.partial[_MAX_LINE:]
        now = time.time()
        for line in lines:
            self._emit(line, now)

    def _emit(self, line: bytes, now: float) -> None:
        self._keep_tail(line + b"\n")
        message = line.decode("utf-8", "replace").rstrip("\r")
        self.sink(LogLine(self.function, self.instance, self.request_id, message, now))

    def _flush_partial(self) -> None:
        if self.partial:
            line, self.partial = self.partial, b""
            self._emit(line, time.time())

    def _keep_tail(self, data: bytes) -> None:
        self.tail += data
        if len(self.tail) > 2 * TAIL_BYTES:
            del self.tail[: len(self.tail) - TAIL_BYTES]


def start_line(request_id: str, version: str = "$LATEST") -> str:
    return f"START RequestId: {request_id} Version: {version}"


def end_line(request_id: str) -> str:
    return f"END RequestId: {request_id}"


def report_line(
    request_id: str,
    *,
    duration_ms: float,
    memory_mb: int,
    max_memory_mb: int,
    init_duration_ms: float | None = None,
    status: str | None = None,
    error_type: str | None = None,
) -> str:
    """AWS's REPORT line: tab-separated "Key: value unit" fields, a tab at the end."""
    fields = [
        f"REPORT RequestId: {request_id}",
        f"Duration: {duration_ms:.2f} ms",
        f"Billed Duration: {billed_duration_ms(duration_ms)} ms",
        f"Memory Size: {memory_mb} MB",
        f"Max Memory Used: {max_memory_mb} MB",
    ]
    if init_duration_ms is not None:
        fields.append(f"Init Duration: {init_duration_ms:.2f} ms")
    if status is not None:
        fields.append(f"Status: {status}")
    if error_type is not None:
        fields.append(f"Error Type: {error_type}")
    return "\t".join(fields) + "\t"


def billed_duration_ms(duration_ms: float) -> int:
    """Lambda bills by the millisecond, rounded up."""
    return max(1, math.ceil(duration_ms))


def timestamp(now: float | None = None) -> str:
    now = time.time() if now is None else now
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now * 1000) % 1000:03d}Z"
