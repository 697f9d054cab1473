"""Both state-store backends behind one fixture, so one test suite runs against each.

The fixture `store_backend` (import `store_backend_fixture` into a test module) gives a
StoreBackend whose `open()` returns a new store over the same data: a new SQLite connection to
the same file, or a new Redis client on the same key prefix. Opening twice is how tests check
that changes survive a restart.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from gateway.store.base import StateStore
from gateway.store.embedded import SQLiteStore
from gateway.store.redis_state import RedisStateStore


class StoreBackend:
    def __init__(self, kind: str, *, path: Path | None = None, redis_url: str | None = None) -> None:
        self.kind = kind
        self.path = path
        self.redis_url = redis_url
        # A prefix of its own per test: the session's redis-server is shared.
        self.prefix = f"test-{uuid.uuid4().hex}:"

    def open(self) -> StateStore:
        """A new store on this backend's data (call inside the event loop that will use it)."""
        if self.kind == "sqlite":
            assert self.path is not None
            return SQLiteStore(self.path)
        assert self.redis_url is not None
        return RedisStateStore.from_url(self.redis_url, prefix=self.prefix)


@pytest.fixture(name="store_backend", params=["sqlite", "redis"])
def store_backend_fixture(request: pytest.FixtureRequest, tmp_path: Path) -> StoreBackend:
    if request.param == "sqlite":
        return StoreBackend("sqlite", path=tmp_path / "state.db")
    redis_url: str = request.getfixturevalue("redis_url")
    return StoreBackend("redis", redis_url=redis_url)
