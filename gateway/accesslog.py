"""The access log: records queued by the hot path, formatted and written in batches off it.

The worker's hot path appends one plain tuple per finished request to ``AccessLog.records``
(reading the attribute through the object on every append). A timer on the worker's loop
calls ``flush()`` every ``interval`` seconds, which re-binds ``records`` to a fresh list and
encodes the old one in one ``msgspec`` call: JSON formatting never runs per request.

Writing must not stall the event loop:

* a file is opened for append and written with plain ``os.write`` (regular files do not block
  for long);
* stdout/stderr are often pipes (docker, systemd, a log shipper) that can fill up. They are
  written without blocking and without touching the flags of the shared descriptor (setting
  O_NONBLOCK on fd 1 would also change it for the master and every other writer): a pipe or
  tty is re-opened through /proc/self/fd with its own O_NONBLOCK, a socket is written with
  MSG_DONTWAIT. What the reader has not taken stays in a bounded backlog; beyond the bound the
  oldest batches are dropped and counted, so the access log can never exhaust memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import select
import socket
import stat
import time
from collections import deque
from collections.abc import Callable

import msgspec

from gateway._fastpath.accesslog import LogLines
from gateway.logs import log

# (unix_time, request_id, route_name, method, path_with_query, status, bytes_sent,
#  upstream_target_or_None, duration_us, client_ip)
AccessRecord = tuple[float, bytes, str, bytes, bytes, int, int, str | None, int, str]

DEFAULT_MAX_BACKLOG = 16 * 1024 * 1024
# How long close() keeps trying to hand the backlog to a slow reader before giving up.
CLOSE_DRAIN_TIMEOUT = 1.0
# Drop warnings are rate-limited: one line with the running count at most this often.
DROP_WARNING_INTERVAL = 5.0

# Name -> file descriptor of the standard streams; a module constant so tests can point
# "stdout" at a pipe they control.
STREAM_FDS: dict[str, int] = {"stdout": 1, "stderr": 2}


class AccessLogLine(msgspec.Struct, rename={"bytes_sent": "bytes"}, gc=False):
    """One access-log line as written (field order is the JSON key order)."""

    time: str
    request_id: str
    route: str
    method: str
    path: str
    status: int
    bytes_sent: int
    upstream: str | None
    duration_us: int
    client: str


class _Sink:
    """Where encoded bytes go. ``write_some`` never blocks for long; it returns bytes taken."""

    def write_some(self, data: memoryview) -> int:
        raise NotImplementedError

    def wait_writable(self, timeout: float) -> bool:
        return True

    def reopen(self) -> None:
        pass

    def close(self) -> None:
        pass


class _FileSink(_Sink):
    def __init__(self, path: str) -> None:
        self._path = path
        self._fd = self._open()

    def _open(self) -> int:
        return os.open(self._path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)

    def write_some(self, data: memoryview) -> int:
        return os.write(self._fd, data)

    def reopen(self) -> None:
        # Open the new file before closing the old one: if the open fails, keep logging.
        fd = self._open()
        os.close(self._fd)
        self._fd = fd

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


class _StreamSink(_Sink):
    """stdout/stderr, written without blocking (see the module docstring)."""

    def __init__(self, fd: int) -> None:
        self._owned_fd = -1
        self._socket: socket.socket | None = None
        self._poll_fd = fd
        mode = os.fstat(fd).st_mode
        if stat.S_ISREG(mode):
            # Shared offset with other writers of the same file: write through the fd itself.
            self._write: Callable[[memoryview], int] = lambda data: os.write(fd, data)
        elif stat.S_ISSOCK(mode):
            self._socket = socket.socket(fileno=os.dup(fd))
            sock = self._socket
            self._write = lambda data: sock.send(data, socket.MSG_DONTWAIT)
        else:
            try:
                self._owned_fd = os.open(
                    f"/proc/self/fd/{fd}",
                    os.O_WRONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC,
                )
            except OSError:
                self._write = lambda data: self._write_when_ready(fd, data)
            else:
                owned = self._owned_fd
                self._poll_fd = owned
                self._write = lambda data: os.write(owned, data)

    @staticmethod
    def _write_when_ready(fd: int, data: memoryview) -> int:
        # Fallback for a blocking descriptor: a write of at most PIPE_BUF bytes to a pipe
        # that polls writable does not block.
        if not select.select([], [fd], [], 0)[1]:
            return 0
        return os.write(fd, data[: select.PIPE_BUF])

    def write_some(self, data: memoryview) -> int:
        try:
            return self._write(data)
        except BlockingIOError:
            return 0

    def wait_writable(self, timeout: float) -> bool:
        return bool(select.select([], [self._poll_fd], [], timeout)[1])

    def close(self) -> None:
        if self._owned_fd >= 0:
            os.close(self._owned_fd)
            self._owned_fd = -1
        if self._socket is not None:
            self._socket.close()
            self._socket = None


class AccessLog:
    """Batching access-log writer. ``destination``: "off", "stdout", "stderr" or a file path."""

    def __init__(self, destination: str, *, max_backlog: int = DEFAULT_MAX_BACKLOG) -> None:
        self.destination = destination
        self.enabled = destination != "off"
        self.records: list[AccessRecord] = []
        # The engine appends its lines here, already formatted in C; `records` stays for Python callers.
        self.lines = LogLines()
        self.dropped = 0  # records dropped so far (backlog bound or write errors)
        self._max_backlog = max_backlog
        self._sink: _Sink | None = None
        if self.enabled:
            fd = STREAM_FDS.get(destination)
            self._sink = _StreamSink(fd) if fd is not None else _FileSink(destination)
        # Encoded batches not yet written; the head may be partly written (up to _head_offset).
        self._backlog: deque[bytes] = deque()
        self._backlog_bytes = 0
        self._head_offset = 0
        self._encoder = msgspec.json.Encoder()
        self._cached_second = -1
        self._cached_prefix = ""
        self._unreported_drops = 0
        self._last_drop_warning = float("-inf")
        self._loop: asyncio.AbstractEventLoop | None = None
        self._interval = 0.1
        self._timer: asyncio.TimerHandle | None = None

    # -- scheduling --

    def start(self, loop: asyncio.AbstractEventLoop, interval: float = 0.1) -> None:
        """Flush every ``interval`` seconds on ``loop`` until ``close()``."""
        if not self.enabled:
            return
        self._loop = loop
        self._interval = interval
        self._timer = loop.call_later(interval, self._on_timer)

    def _on_timer(self) -> None:
        try:
            self.flush()
        except Exception as exc:  # a logging failure must not stop future flushes
            log("error", "access log flush failed", destination=self.destination, error=repr(exc))
        if self._loop is not None:
            self._timer = self._loop.call_later(self._interval, self._on_timer)

    # -- writing --

    def flush(self) -> None:
        """Encode the queued records and write as much of the backlog as the sink takes now."""
        if self._sink is None:
            self.records.clear()
            self.lines.take()
            return
        formatted = self.lines.take()
        if formatted:
            self._backlog.append(formatted)
            self._backlog_bytes += len(formatted)
        records = self.records
        if records:
            # Re-bind, do not clear: the hot path looks up ``self.records`` on every append.
            self.records = []
            batch = self.encode(records)
            self._backlog.append(batch)
            self._backlog_bytes += len(batch)
        self._write_backlog()
        self._trim_backlog()
        self._report_drops()

    def encode(self, records: list[AccessRecord]) -> bytes:
        """Newline-delimited JSON for ``records`` (one encoder call for the whole batch)."""
        lines = [
            AccessLogLine(
                self._format_time(unix_time),
                request_id.decode("latin-1"),
                route,
                method.decode("latin-1"),
                path.decode("latin-1"),
                status,
                bytes_sent,
                upstream,
                duration_us,
                client,
            )
            for (
                unix_time,
                request_id,
                route,
                method,
                path,
                status,
                bytes_sent,
                upstream,
                duration_us,
                client,
            ) in records
        ]
        return self._encoder.encode_lines(lines)

    def _format_time(self, unix_time: float) -> str:
        # Records of one flush mostly share their second: format that part once.
        second, micros = divmod(round(unix_time * 1_000_000), 1_000_000)
        if second != self._cached_second:
            self._cached_second = second
            self._cached_prefix = time.strftime("%Y-%m-%dT%H:%M:%S.", time.gmtime(second))
        return f"{self._cached_prefix}{micros:06d}Z"

    def _write_backlog(self) -> None:
        assert self._sink is not None
        while self._backlog:
            view = memoryview(self._backlog[0])[self._head_offset :]
            try:
                written = self._sink.write_some(view)
            except OSError as exc:
                # EPIPE, ENOSPC, ...: this batch cannot be written; count it and move on.
                self._drop_head()
                log("error", "access log write failed", destination=self.destination, error=str(exc))
                continue
            if written < len(view):
                self._head_offset += written
                return  # would block: the rest waits for the next flush
            self._backlog_bytes -= len(self._backlog.popleft())
            self._head_offset = 0

    def _trim_backlog(self) -> None:
        """Drop the oldest whole lines until the backlog fits its bound; never tear a line."""
        while self.backlog_bytes > self._max_backlog:
            if self._head_offset == 0:
                self._drop_head()
            elif len(self._backlog) > 1:
                dropped = self._backlog[1]
                del self._backlog[1]
                self._backlog_bytes -= len(dropped)
                self._count_drops(dropped.count(b"\n"))
            else:
                # Only a partly written batch is left: keep the rest of its current line.
                head = self._backlog[0]
                line_end = head.find(b"\n", self._head_offset) + 1
                self._count_drops(head.count(b"\n", line_end))
                self._backlog[0] = head[:line_end]
                self._backlog_bytes -= len(head) - line_end
                return

    def _drop_head(self) -> None:
        head = self._backlog.popleft()
        self._count_drops(head.count(b"\n", self._head_offset))
        self._backlog_bytes -= len(head)
        self._head_offset = 0

    @property
    def backlog_bytes(self) -> int:
        """Encoded bytes waiting for the destination to accept them."""
        return self._backlog_bytes - self._head_offset

    def _count_drops(self, lines: int) -> None:
        self.dropped += lines
        self._unreported_drops += lines

    def _report_drops(self, force: bool = False) -> None:
        if not self._unreported_drops:
            return
        now = time.monotonic()
        if not force and now - self._last_drop_warning < DROP_WARNING_INTERVAL:
            return
        log(
            "warning",
            "access log backlog full, records dropped",
            destination=self.destination,
            dropped=self._unreported_drops,
            dropped_total=self.dropped,
        )
        self._unreported_drops = 0
        self._last_drop_warning = now

    # -- lifecycle --

    def reopen(self) -> None:
        """Write what is queued, then reopen the destination (log rotation on SIGUSR1)."""
        if self._sink is None:
            return
        self.flush()
        try:
            self._sink.reopen()
        except OSError as exc:
            log("error", "access log reopen failed", destination=self.destination, error=str(exc))

    def close(self) -> None:
        """Stop the timer, write everything queued (waiting briefly for a slow reader), close."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._loop = None
        if self._sink is None:
            return
        self.flush()
        deadline = time.monotonic() + CLOSE_DRAIN_TIMEOUT
        while self._backlog:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not self._sink.wait_writable(remaining):
                break
            self._write_backlog()
        while self._backlog:
            self._drop_head()
        self._report_drops(force=True)
        with contextlib.suppress(OSError):
            self._sink.close()
        self._sink = None
        self.enabled = False
