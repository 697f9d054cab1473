"""One SQLite file used from asyncio: a dedicated thread, WAL, explicit write transactions.

Shared by the state store (gateway.store.embedded), the functions' durable queue, the
idempotency store and the schedules' claims. sqlite3 blocks, so every statement runs on one
thread per `SQLiteDatabase` (which also serialises the connection's use); the event loop only
awaits. Several processes may open the same file: WAL lets readers proceed while one writes, and
``busy_timeout`` makes a writer wait for another instead of failing.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from os import PathLike
from typing import Literal, TypeVar

__all__ = ["SQLiteDatabase", "Synchronous"]

T = TypeVar("T")
Synchronous = Literal["FULL", "NORMAL"]

SETUP_TIMEOUT = 10.0  # seconds a new connection keeps retrying a locked setup


Setup = str | Callable[[sqlite3.Connection], None]


class SQLiteDatabase:
    """A lazily opened connection on its own thread; `setup` (a SQL script, or a function such
    as a migration runner) runs once per connection, after the pragmas."""

    def __init__(
        self,
        path: str | PathLike[str],
        setup: Setup,
        *,
        synchronous: Synchronous = "FULL",
        name: str = "database",
    ) -> None:
        self.path = str(path)
        self._setup = setup
        self._name = name
        # FULL: a commit is on disk before it returns, so "accepted" survives a power cut too;
        # NORMAL survives a killed process (the WAL is in the OS cache) but not a power cut.
        self._synchronous = synchronous
        self._connection: sqlite3.Connection | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._closed = False

    async def read(self, work: Callable[[sqlite3.Connection], T]) -> T:
        """Run `work` on the database thread (autocommit: each statement sees committed data)."""
        if self._closed:
            raise RuntimeError(f"the {self._name} is closed")
        if self._executor is None:
            self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="lambdagate-sqlite")
        return await asyncio.get_running_loop().run_in_executor(self._executor, self._call, work)

    async def write(self, work: Callable[[sqlite3.Connection], T]) -> T:
        """Run `work` in one BEGIN IMMEDIATE transaction, rolled back if it raises."""

        def transaction(connection: sqlite3.Connection) -> T:
            connection.execute("BEGIN IMMEDIATE")
            try:
                result = work(connection)
            except BaseException:
                connection.execute("ROLLBACK")
                raise
            connection.execute("COMMIT")
            return result

        return await self.read(transaction)

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        executor, self._executor = self._executor, None
        if executor is None:
            return

        def close_connection() -> None:
            if self._connection is not None:
                self._connection.close()
                self._connection = None

        await asyncio.get_running_loop().run_in_executor(executor, close_connection)
        executor.shutdown(wait=True)

    def _call(self, work: Callable[[sqlite3.Connection], T]) -> T:
        if self._connection is None:
            self._connection = self._connect()
        return work(self._connection)

    def _connect(self) -> sqlite3.Connection:
        # Switching to WAL and creating tables take locks that SQLite's busy handler does not
        # always wait for when several processes start at once, so the setup is retried.
        deadline = time.monotonic() + SETUP_TIMEOUT
        delay = 0.01
        while True:
            try:
                return self._connect_once()
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) and "busy" not in str(exc):
                    raise
                if time.monotonic() + delay > deadline:
                    raise
                time.sleep(delay)
                delay = min(delay * 2, 0.2)

    def _connect_once(self) -> sqlite3.Connection:
        # isolation_level=None: transactions are explicit (BEGIN IMMEDIATE in write()).
        connection = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        try:
            connection.execute("PRAGMA busy_timeout = 5000")
            connection.execute("PRAGMA journal_mode = WAL")
            connection.execute(f"PRAGMA synchronous = {self._synchronous}")
            if isinstance(self._setup, str):
                connection.executescript(self._setup)
            else:
                self._setup(connection)
        except BaseException:
            connection.close()
            raise
        return connection
