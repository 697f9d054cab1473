"""Both durable-queue backends behind one fixture, so one test suite runs against each.

`queue_backend` (import `queue_backend_fixture` into a test module) gives a QueueBackend whose
`open()` returns a new queue over the same data: a new SQLite connection to the same file, or a
new Redis client on the same key prefix. Opening twice is how tests check that messages survive
a restart. `open_queue_source()` is the same as Python source, for subprocesses.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from gateway.functions.queue import DurableQueue
from gateway.functions.queue_redis import RedisQueue
from gateway.functions.queue_sqlite import SQLiteQueue


class QueueBackend:
    def __init__(self, kind: str, *, path: Path | None = None, redis_url: str | None = None) -> None:
        self.kind = kind
        self.path = path
        self.redis_url = redis_url
        # A prefix of its own per test: the session's redis-server is shared.
        self.prefix = f"test-queue-{uuid.uuid4().hex}:"

    def open(self, *, poll_interval: float = 0.02) -> DurableQueue:
        """A new queue on this backend's data (call inside the event loop that will use it)."""
        if self.kind == "sqlite":
            assert self.path is not None
            return SQLiteQueue(self.path, poll_interval=poll_interval)
        assert self.redis_url is not None
        return RedisQueue.from_url(self.redis_url, prefix=self.prefix)

    def open_queue_source(self) -> str:
        """A Python expression that opens the same queue (for a subprocess)."""
        if self.kind == "sqlite":
            return f"SQLiteQueue({str(self.path)!r})"
        return f"RedisQueue.from_url({self.redis_url!r}, prefix={self.prefix!r})"


@pytest.fixture(name="queue_backend", params=["sqlite", "redis"])
def queue_backend_fixture(request: pytest.FixtureRequest, tmp_path: Path) -> QueueBackend:
    if request.param == "sqlite":
        return QueueBackend("sqlite", path=tmp_path / "queue.db")
    redis_url: str = request.getfixturevalue("redis_url")
    return QueueBackend("redis", redis_url=redis_url)
