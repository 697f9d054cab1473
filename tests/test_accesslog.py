"""The access-log writer: line format, batching, destinations, rotation, bounded backlog."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway import accesslog
from gateway.accesslog import AccessLog, AccessRecord


def record(
    *,
    unix_time: float = 1_700_000_000.123456,
    request_id: bytes = b"req-1",
    route: str = "api",
    method: bytes = b"GET",
    path: bytes = b"/api/x?y=1",
    status: int = 200,
    bytes_sent: int = 1234,
    upstream: str | None = "127.0.0.1:9000",
    duration_us: int = 512,
    client: str = "127.0.0.1",
) -> AccessRecord:
    return (unix_time, request_id, route, method, path, status, bytes_sent, upstream, duration_us, client)


def read_lines(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_bytes().splitlines()]


@pytest.fixture
def pipe() -> Iterator[tuple[int, int]]:
    read_fd, write_fd = os.pipe()
    yield read_fd, write_fd
    for fd in (read_fd, write_fd):
        with contextlib.suppress(OSError):
            os.close(fd)


def drain_pipe(read_fd: int) -> bytes:
    os.set_blocking(read_fd, False)
    chunks = []
    while True:
        try:
            chunk = os.read(read_fd, 1 << 16)
        except BlockingIOError:
            break
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks)


def test_line_has_every_field_in_order(tmp_path: Path) -> None:
    target = tmp_path / "access.log"
    log = AccessLog(str(target))
    log.records.append(record())
    log.flush()
    log.close()
    raw = target.read_bytes()
    assert raw.endswith(b"\n") and raw.count(b"\n") == 1
    line = json.loads(raw)
    assert list(line) == [
        "time",
        "request_id",
        "route",
        "method",
        "path",
        "status",
        "bytes",
        "upstream",
        "duration_us",
        "client",
    ]
    assert line == {
        "time": "2023-11-14T22:13:20.123456Z",
        "request_id": "req-1",
        "route": "api",
        "method": "GET",
        "path": "/api/x?y=1",
        "status": 200,
        "bytes": 1234,
        "upstream": "127.0.0.1:9000",
        "duration_us": 512,
        "client": "127.0.0.1",
    }


@pytest.mark.parametrize(
    ("unix_time", "expected"),
    [
        (0.0, "1970-01-01T00:00:00.000000Z"),
        (1_700_000_000.0, "2023-11-14T22:13:20.000000Z"),
        (1_700_000_000.9999996, "2023-11-14T22:13:21.000000Z"),  # rounding carries into seconds
        (1_700_000_059.000001, "2023-11-14T22:14:19.000001Z"),
    ],
)
def test_time_is_rfc3339_utc_with_microseconds(unix_time: float, expected: str) -> None:
    log = AccessLog("off")
    (line,) = log.encode([record(unix_time=unix_time)]).splitlines()
    assert json.loads(line)["time"] == expected


def test_second_cache_does_not_leak_between_records() -> None:
    log = AccessLog("off")
    times = [1_700_000_000.5, 1_700_000_001.25, 1_700_000_000.75]
    lines = [
        json.loads(line)["time"] for line in log.encode([record(unix_time=t) for t in times]).splitlines()
    ]
    assert lines == [
        "2023-11-14T22:13:20.500000Z",
        "2023-11-14T22:13:21.250000Z",
        "2023-11-14T22:13:20.750000Z",
    ]


def test_odd_bytes_are_decoded_as_latin1_and_escaped() -> None:
    log = AccessLog("off")
    odd = record(
        request_id=b"\x00id\xff",
        method=b"G\xe9T",
        path=b'/caf\xe9?q="x"\n\x7f\x80',
        upstream=None,
    )
    (raw,) = log.encode([odd]).splitlines()
    line = json.loads(raw)
    assert line["request_id"] == "\x00id\xff"
    assert line["method"] == "G\xe9T"
    assert line["path"] == '/caf\xe9?q="x"\n\x7f\x80'
    assert line["upstream"] is None
    assert b"\n" not in raw  # the newline inside the path is escaped, one record stays one line


def test_records_are_written_only_on_flush_as_one_batch(tmp_path: Path) -> None:
    target = tmp_path / "access.log"
    log = AccessLog(str(target))
    queued = log.records
    for status in (200, 404, 503):
        log.records.append(record(status=status))
    assert target.read_bytes() == b""
    log.flush()
    assert [line["status"] for line in read_lines(target)] == [200, 404, 503]
    # The hot path's list is replaced, not cleared: a new empty list for the next batch.
    assert log.records == [] and log.records is not queued
    assert len(queued) == 3
    log.flush()  # nothing new: nothing written
    assert len(read_lines(target)) == 3
    log.close()


def test_off_writes_nothing_and_creates_nothing(tmp_path: Path) -> None:
    log = AccessLog("off")
    assert not log.enabled
    log.records.append(record())
    log.flush()
    assert log.records == []

    async def scenario() -> None:
        log.start(asyncio.get_running_loop(), 0.001)
        await asyncio.sleep(0.02)

    asyncio.run(scenario())
    log.reopen()
    log.close()
    assert list(tmp_path.iterdir()) == []


def test_file_is_created_or_appended(tmp_path: Path) -> None:
    target = tmp_path / "access.log"
    target.write_bytes(b'{"existing":true}\n')
    log = AccessLog(str(target))
    assert log.enabled
    log.records.append(record())
    log.close()
    lines = read_lines(target)
    assert lines[0] == {"existing": True}
    assert lines[1]["request_id"] == "req-1"

    fresh = tmp_path / "new.log"
    other = AccessLog(str(fresh))
    other.records.append(record(request_id=b"req-2"))
    other.close()
    assert [line["request_id"] for line in read_lines(fresh)] == ["req-2"]


def test_missing_directory_is_an_error_at_construction(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        AccessLog(str(tmp_path / "missing" / "access.log"))


def test_reopen_follows_log_rotation(tmp_path: Path) -> None:
    target = tmp_path / "access.log"
    rotated = tmp_path / "access.log.1"
    log = AccessLog(str(target))
    log.records.append(record(request_id=b"before"))
    log.flush()
    target.rename(rotated)
    log.records.append(record(request_id=b"queued-during-rotation"))
    log.reopen()
    log.records.append(record(request_id=b"after"))
    log.close()
    # What was queued before the reopen still belongs to the old file.
    assert [line["request_id"] for line in read_lines(rotated)] == ["before", "queued-during-rotation"]
    assert [line["request_id"] for line in read_lines(target)] == ["after"]


def test_start_flushes_on_the_loop_and_close_stops_it(tmp_path: Path) -> None:
    target = tmp_path / "access.log"
    log = AccessLog(str(target))

    async def scenario() -> None:
        log.start(asyncio.get_running_loop(), interval=0.01)
        log.records.append(record(request_id=b"a"))
        deadline = time.monotonic() + 5
        while not target.read_bytes() and time.monotonic() < deadline:
            await asyncio.sleep(0.005)
        log.records.append(record(request_id=b"b"))
        while target.read_bytes().count(b"\n") < 2 and time.monotonic() < deadline:
            await asyncio.sleep(0.005)
        log.close()
        log.records.append(record(request_id=b"after-close"))
        await asyncio.sleep(0.05)  # the timer is gone: nothing more is written

    asyncio.run(scenario())
    assert [line["request_id"] for line in read_lines(target)] == ["a", "b"]


def test_stdout_pipe_never_blocks_and_backlog_is_bounded(
    pipe: tuple[int, int], monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    read_fd, write_fd = pipe
    monkeypatch.setitem(accesslog.STREAM_FDS, "stdout", write_fd)
    log = AccessLog("stdout", max_backlog=256 * 1024)
    batch = [record(path=b"/" + b"x" * 200) for _ in range(1000)]  # ~ 400 KiB per flush
    for _ in range(20):  # ~ 8 MiB offered to a 64 KiB pipe nobody reads
        log.records.extend(batch)
        log.flush()  # would hang the test (timeout) if it blocked
    assert log.dropped > 0
    assert log.backlog_bytes <= 256 * 1024
    assert os.get_blocking(write_fd)  # the shared descriptor's flags are untouched

    warnings = [json.loads(line) for line in capfd.readouterr().err.splitlines()]
    assert any(w["msg"] == "access log backlog full, records dropped" and w["dropped"] > 0 for w in warnings)

    # The reader catches up: everything not dropped arrives as whole lines.
    received = drain_pipe(read_fd)
    while log.backlog_bytes:
        log.flush()
        received += drain_pipe(read_fd)
    lines = received.splitlines()
    assert received.endswith(b"\n")
    assert all(json.loads(line)["path"] == "/" + "x" * 200 for line in lines)
    assert len(lines) + log.dropped == 20 * 1000
    log.close()


def test_close_waits_for_a_slow_reader(pipe: tuple[int, int], monkeypatch: pytest.MonkeyPatch) -> None:
    read_fd, write_fd = pipe
    monkeypatch.setitem(accesslog.STREAM_FDS, "stderr", write_fd)
    log = AccessLog("stderr")
    log.records.extend(record() for _ in range(2000))  # more than the pipe holds
    log.flush()
    assert log.backlog_bytes > 0

    received = bytearray()

    def slow_reader() -> None:
        deadline = time.monotonic() + 5
        while received.count(b"\n") < 2000 and time.monotonic() < deadline:
            time.sleep(0.01)
            received.extend(drain_pipe(read_fd))

    reader = threading.Thread(target=slow_reader)
    reader.start()
    log.close()
    reader.join()
    assert log.dropped == 0
    assert len(received.splitlines()) == 2000


def test_a_vanished_reader_counts_drops_instead_of_raising(
    pipe: tuple[int, int], monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    read_fd, write_fd = pipe
    monkeypatch.setitem(accesslog.STREAM_FDS, "stdout", write_fd)
    log = AccessLog("stdout")
    os.close(read_fd)  # EPIPE from now on (Python ignores SIGPIPE)
    log.records.extend(record() for _ in range(3))
    log.flush()
    log.records.append(record())
    log.close()
    assert log.dropped == 4
    errors = [json.loads(line) for line in capfd.readouterr().err.splitlines()]
    assert [e["msg"] for e in errors if e["level"] == "error"] == ["access log write failed"] * 2


def test_socket_stdout_is_written_without_blocking(monkeypatch: pytest.MonkeyPatch) -> None:
    # systemd connects stdout to a unix stream socket (the journal).
    ours, theirs = socket.socketpair()
    with ours, theirs:
        monkeypatch.setitem(accesslog.STREAM_FDS, "stdout", ours.fileno())
        log = AccessLog("stdout", max_backlog=64 * 1024)
        for _ in range(50):
            log.records.extend(record() for _ in range(500))
            log.flush()
        assert log.dropped > 0
        assert ours.getblocking()
        theirs.setblocking(False)
        received = b""
        while True:
            try:
                received += theirs.recv(1 << 20)
            except BlockingIOError:
                if not log.backlog_bytes:
                    break
                log.flush()
        log.close()
    assert len(received.splitlines()) + log.dropped == 50 * 500
