"""The embedded durable queue: SQLite tables in WAL mode (see `gateway.functions.queue`).

A message is one row of ``fn_queue_messages`` from enqueue to ack; its state is in two columns:
``visible_at`` (when it may be claimed) and ``receipt`` (set while a consumer holds it). A claim
pushes ``visible_at`` forward by the visibility timeout, so a consumer that dies simply lets it
become claimable again. Dead letters live in ``fn_queue_dead_letters``.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from os import PathLike
from typing import Any

import msgspec

from gateway.sqlite_db import SQLiteDatabase, Synchronous

from .queue import DeadLetter, QueueDepth, QueueMessage, check_claim_arguments, new_message_id

__all__ = ["SCHEMA", "SQLiteQueue"]

SCHEMA = """
CREATE TABLE IF NOT EXISTS fn_queue_messages (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    queue TEXT NOT NULL,
    payload BLOB NOT NULL,
    attributes BLOB NOT NULL,
    enqueued_at REAL NOT NULL,
    visible_at REAL NOT NULL,
    receive_count INTEGER NOT NULL DEFAULT 0,
    failures INTEGER NOT NULL DEFAULT 0,
    receipt TEXT,
    consumer TEXT,
    received_at REAL
);
CREATE INDEX IF NOT EXISTS fn_queue_messages_ready ON fn_queue_messages (queue, visible_at);
CREATE TABLE IF NOT EXISTS fn_queue_dead_letters (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL,
    queue TEXT NOT NULL,
    payload BLOB NOT NULL,
    attributes BLOB NOT NULL,
    enqueued_at REAL NOT NULL,
    condition TEXT NOT NULL,
    error BLOB NOT NULL,
    attempts INTEGER NOT NULL,
    receive_count INTEGER NOT NULL,
    dead_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS fn_queue_dead_letters_queue ON fn_queue_dead_letters (queue, seq);
"""

POLL_INTERVAL = 0.1  # seconds between looks at the file while waiting (other processes' enqueues)

_MESSAGE_COLUMNS = "id, queue, payload, attributes, enqueued_at, receive_count, failures"
_DEAD_COLUMNS = (
    "id, queue, payload, attributes, enqueued_at, condition, error, attempts, receive_count, dead_at"
)
_encode = msgspec.json.encode
_attributes_decoder = msgspec.json.Decoder(dict[str, str])
_error_decoder = msgspec.json.Decoder(dict[str, Any])


class SQLiteQueue:
    """DurableQueue on a SQLite file; the file and tables are created on first use."""

    def __init__(
        self,
        path: str | PathLike[str],
        *,
        synchronous: Synchronous = "FULL",
        poll_interval: float = POLL_INTERVAL,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._db = SQLiteDatabase(path, SCHEMA, synchronous=synchronous)
        self._poll_interval = poll_interval
        self._clock = clock
        # Wakes this process's waiting claims at once on its own enqueues; other processes'
        # enqueues are seen by polling.
        self._wakeups: dict[str, asyncio.Event] = {}

    @property
    def path(self) -> str:
        return self._db.path

    async def close(self) -> None:
        await self._db.close()

    async def __aenter__(self) -> SQLiteQueue:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def enqueue(
        self,
        queue: str,
        payload: bytes,
        attributes: Mapping[str, str] | None = None,
        *,
        message_id: str | None = None,
        delay: float = 0.0,
    ) -> str:
        message_id = message_id or new_message_id()
        now = self._clock()
        row = (message_id, queue, payload, _encode(dict(attributes or {})), now, now + max(delay, 0.0))

        def insert(connection: sqlite3.Connection) -> None:
            connection.execute(
                "INSERT INTO fn_queue_messages (id, queue, payload, attributes, enqueued_at, visible_at)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                row,
            )

        await self._db.write(insert)
        self._wake(queue)
        return message_id

    async def claim(
        self,
        queue: str,
        consumer: str,
        *,
        count: int = 1,
        visibility_timeout: float = 30.0,
        wait: float = 0.0,
    ) -> list[QueueMessage]:
        check_claim_arguments(count, visibility_timeout, wait)
        deadline = time.monotonic() + wait
        wakeup = self._wakeups.setdefault(queue, asyncio.Event())
        while True:
            wakeup.clear()  # before looking, so an enqueue during the look is not missed
            claimed, next_visible = await self._db.read(
                lambda connection: _claim(
                    connection, queue, consumer, count, visibility_timeout, self._clock()
                )
            )
            remaining = deadline - time.monotonic()
            if claimed or remaining <= 0:
                return claimed
            pause = min(remaining, self._poll_interval)
            if next_visible is not None:
                pause = min(pause, max(next_visible - self._clock(), 0.0))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wakeup.wait(), pause)

    async def ack(self, message: QueueMessage) -> bool:
        def delete(connection: sqlite3.Connection) -> bool:
            cursor = connection.execute(
                "DELETE FROM fn_queue_messages WHERE id = ? AND receipt = ?", (message.id, message.receipt)
            )
            return cursor.rowcount > 0

        return await self._db.write(delete)

    async def retry(self, message: QueueMessage, delay: float = 0.0, *, failed: bool = True) -> bool:
        visible_at = self._clock() + max(delay, 0.0)

        def release(connection: sqlite3.Connection) -> bool:
            cursor = connection.execute(
                "UPDATE fn_queue_messages SET visible_at = ?, failures = failures + ?, receipt = NULL,"
                " consumer = NULL WHERE id = ? AND receipt = ?",
                (visible_at, int(failed), message.id, message.receipt),
            )
            return cursor.rowcount > 0

        changed = await self._db.write(release)
        if changed:
            self._wake(message.queue)
        return changed

    async def dead_letter(
        self, message: QueueMessage, *, condition: str, error: Mapping[str, Any], attempts: int
    ) -> bool:
        extra = (condition, _encode(dict(error)), attempts, self._clock(), message.id, message.receipt)

        def move(connection: sqlite3.Connection) -> bool:
            cursor = connection.execute(
                f"INSERT INTO fn_queue_dead_letters ({_DEAD_COLUMNS})"
                " SELECT id, queue, payload, attributes, enqueued_at, ?, ?, ?, receive_count, ?"
                " FROM fn_queue_messages WHERE id = ? AND receipt = ?",
                extra,
            )
            if cursor.rowcount == 0:
                return False
            connection.execute("DELETE FROM fn_queue_messages WHERE id = ?", (message.id,))
            return True

        return await self._db.write(move)

    async def dead_letters(self, queue: str, *, limit: int = 100) -> list[DeadLetter]:
        def read(connection: sqlite3.Connection) -> list[DeadLetter]:
            rows = connection.execute(
                f"SELECT {_DEAD_COLUMNS} FROM fn_queue_dead_letters WHERE queue = ? ORDER BY seq LIMIT ?",
                (queue, limit),
            ).fetchall()
            return [_dead_letter(row) for row in rows]

        return await self._db.read(read)

    async def redrive(self, queue: str, message_ids: Sequence[str] | None = None) -> int:
        now = self._clock()
        wanted = None if message_ids is None else set(message_ids)

        def move(connection: sqlite3.Connection) -> int:
            rows = connection.execute(
                "SELECT seq, id, payload, attributes FROM fn_queue_dead_letters WHERE queue = ? ORDER BY seq",
                (queue,),
            ).fetchall()
            moved = 0
            for seq, message_id, payload, attributes in rows:
                if wanted is not None and message_id not in wanted:
                    continue
                connection.execute("DELETE FROM fn_queue_dead_letters WHERE seq = ?", (seq,))
                # The id may be taken by a message redriven earlier and not yet done: keep that one.
                connection.execute(
                    "INSERT OR IGNORE INTO fn_queue_messages"
                    " (id, queue, payload, attributes, enqueued_at, visible_at) VALUES (?, ?, ?, ?, ?, ?)",
                    (message_id, queue, payload, attributes, now, now),
                )
                moved += 1
            return moved

        moved = await self._db.write(move)
        if moved:
            self._wake(queue)
        return moved

    async def depth(self, queue: str) -> QueueDepth:
        now = self._clock()

        def read(connection: sqlite3.Connection) -> QueueDepth:
            ready, in_flight, delayed = connection.execute(
                "SELECT"
                " COALESCE(SUM(visible_at <= ?), 0),"
                " COALESCE(SUM(visible_at > ? AND receipt IS NOT NULL), 0),"
                " COALESCE(SUM(visible_at > ? AND receipt IS NULL), 0)"
                " FROM fn_queue_messages WHERE queue = ?",
                (now, now, now, queue),
            ).fetchone()
            (dead,) = connection.execute(
                "SELECT COUNT(*) FROM fn_queue_dead_letters WHERE queue = ?", (queue,)
            ).fetchone()
            return QueueDepth(ready=ready, in_flight=in_flight, delayed=delayed, dead=dead)

        return await self._db.read(read)

    def _wake(self, queue: str) -> None:
        wakeup = self._wakeups.get(queue)
        if wakeup is not None:
            wakeup.set()


def _claim(
    connection: sqlite3.Connection,
    queue: str,
    consumer: str,
    count: int,
    visibility_timeout: float,
    now: float,
) -> tuple[list[QueueMessage], float | None]:
    """Claim ready messages; when there are none, also say when the next one becomes visible."""
    # A plain read first: an idle consumer polling the file must not take the write lock.
    ready = connection.execute(
        "SELECT 1 FROM fn_queue_messages WHERE queue = ? AND visible_at <= ? LIMIT 1", (queue, now)
    ).fetchone()
    if ready is None:
        (next_visible,) = connection.execute(
            "SELECT MIN(visible_at) FROM fn_queue_messages WHERE queue = ?", (queue,)
        ).fetchone()
        return [], next_visible
    connection.execute("BEGIN IMMEDIATE")
    try:
        rows = connection.execute(
            f"SELECT seq, {_MESSAGE_COLUMNS} FROM fn_queue_messages"
            " WHERE queue = ? AND visible_at <= ? ORDER BY visible_at, seq LIMIT ?",
            (queue, now, count),
        ).fetchall()
        claimed: list[QueueMessage] = []
        for seq, message_id, queue_name, payload, attributes, enqueued_at, receive_count, failures in rows:
            receipt = uuid.uuid4().hex
            connection.execute(
                "UPDATE fn_queue_messages SET visible_at = ?, receive_count = receive_count + 1,"
                " receipt = ?, consumer = ?, received_at = ? WHERE seq = ?",
                (now + visibility_timeout, receipt, consumer, now, seq),
            )
            claimed.append(
                QueueMessage(
                    id=message_id,
                    queue=queue_name,
                    payload=bytes(payload),
                    attributes=_attributes_decoder.decode(attributes),
                    enqueued_at=enqueued_at,
                    receive_count=receive_count + 1,
                    failures=failures,
                    receipt=receipt,
                    consumer=consumer,
                    received_at=now,
                )
            )
    except BaseException:
        connection.execute("ROLLBACK")
        raise
    connection.execute("COMMIT")
    return claimed, None


def _dead_letter(row: tuple[Any, ...]) -> DeadLetter:
    message_id, queue, payload, attributes, enqueued_at, condition, error, attempts, receives, dead_at = row
    return DeadLetter(
        id=message_id,
        queue=queue,
        payload=bytes(payload),
        attributes=_attributes_decoder.decode(attributes),
        enqueued_at=enqueued_at,
        condition=condition,
        error=_error_decoder.decode(error),
        attempts=attempts,
        receive_count=receives,
        dead_at=dead_at,
    )
