"""``Idempotency-Key``: the same key within a window runs once and answers every repeat with the
first result.

`Idempotency.run(scope, key, work)` runs ``work`` for the first request with a key and stores its
result for ``window`` seconds (default one hour, counted from when the first one finished, as
AWS Lambda Powertools' idempotency utility does). A repeat within the window gets the stored
result (``replayed=True``) without running anything: for a synchronous invocation that is the
first invocation's outcome, for an ``Event`` invocation the same 202 and request id, with no
second enqueue. A repeat that arrives while the first is still running waits for it.

- Scope: keys are per scope (the caller passes e.g. the function's name), so one key sent to two
  functions runs both.
- Fingerprint: a digest of what the request asked for (e.g. the payload and invocation type). A
  repeat with the same key but another fingerprint is refused with `IdempotencyConflict`
  rather than answered with a result that belongs to a different request.
- Failures: if ``work`` raises (a throttle, the gateway's own error), nothing is stored, so a
  retry with the key runs again. A function's error is a result like any other and is stored.
- Crashes: the first request holds the key for a ``lease`` (> the function's timeout); if its
  process dies, the key is free again when the lease ends and a waiting repeat runs it.

Backends: `SQLiteIdempotencyStore` (a table in a SQLite file, shared by the workers of one node)
and `RedisIdempotencyStore` (``SET NX PX``; shared by all nodes).
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
import uuid
from collections.abc import Awaitable, Callable
from os import PathLike
from typing import Generic, Protocol, TypeVar

import msgspec
import redis.asyncio as redis_asyncio

from gateway.sqlite_db import SQLiteDatabase, Synchronous

__all__ = [
    "DEFAULT_WINDOW",
    "Acquired",
    "Completed",
    "Idempotency",
    "IdempotencyConflict",
    "IdempotencyInProgress",
    "IdempotencyStore",
    "Idempotent",
    "InProgress",
    "RedisIdempotencyStore",
    "SQLiteIdempotencyStore",
]

T = TypeVar("T")

DEFAULT_WINDOW = 3600.0  # seconds a result is replayed
DEFAULT_LEASE = 960.0  # seconds the first request may run before a repeat may take over
MAX_KEY_LENGTH = 255


class IdempotencyConflict(Exception):
    """The key was used for a different request (another fingerprint) within the window."""


class IdempotencyInProgress(Exception):
    """A repeat waited longer than its wait timeout for the first request to finish."""


# --- the store interface ------------------------------------------------------------------------


class Acquired(msgspec.Struct, frozen=True):
    """The caller holds the key: run the work, then `complete` (or `release`) with this lease."""

    lease: bytes


class Completed(msgspec.Struct, frozen=True):
    result: bytes
    fingerprint: bytes


class InProgress(msgspec.Struct, frozen=True):
    fingerprint: bytes


class IdempotencyStore(Protocol):
    async def begin(self, key: str, fingerprint: bytes, lease: float) -> Acquired | Completed | InProgress:
        """Take the key for `lease` seconds if it is free (absent or expired), else say its state."""
        ...

    async def complete(self, key: str, lease: bytes, result: bytes, window: float) -> bool:
        """Store the result for `window` seconds; False if the lease was lost meanwhile."""
        ...

    async def release(self, key: str, lease: bytes) -> None:
        """Give the key up without a result (the work failed)."""
        ...

    async def close(self) -> None: ...


# --- the helper ---------------------------------------------------------------------------------


class Idempotent(msgspec.Struct, Generic[T], frozen=True):
    result: T
    replayed: bool  # True: the stored result of an earlier request with the key


class Idempotency(Generic[T]):
    """Runs work once per (scope, key) within the window; results of type `result_type` are
    stored with msgpack (msgspec Structs, dataclasses, bytes, dicts ...)."""

    def __init__(
        self,
        store: IdempotencyStore,
        result_type: type[T],
        *,
        window: float = DEFAULT_WINDOW,
        lease: float = DEFAULT_LEASE,
        wait_timeout: float | None = None,
        poll_interval: float = 0.02,
    ) -> None:
        if window <= 0 or lease <= 0:
            raise ValueError("window and lease must be positive")
        self.store = store
        self.window = window
        self.lease = lease
        self.wait_timeout = lease if wait_timeout is None else wait_timeout
        self._poll_interval = poll_interval
        self._encoder = msgspec.msgpack.Encoder()
        self._decoder = msgspec.msgpack.Decoder(result_type)

    async def run(
        self, scope: str, key: str, work: Callable[[], Awaitable[T]], *, fingerprint: bytes = b""
    ) -> Idempotent[T]:
        if not key or len(key) > MAX_KEY_LENGTH:
            raise ValueError(f"an idempotency key has 1 to {MAX_KEY_LENGTH} characters")
        store_key = f"{scope}\n{key}"  # a newline cannot occur in a header value
        deadline = time.monotonic() + self.wait_timeout
        pause = self._poll_interval
        while True:
            state = await self.store.begin(store_key, fingerprint, self.lease)
            if isinstance(state, Acquired):
                return Idempotent(await self._run_first(store_key, state.lease, work), replayed=False)
            if state.fingerprint != fingerprint:
                raise IdempotencyConflict(f"idempotency key {key!r} was used for a different request")
            if isinstance(state, Completed):
                return Idempotent(self._decoder.decode(state.result), replayed=True)
            if time.monotonic() + pause > deadline:
                raise IdempotencyInProgress(f"the request with idempotency key {key!r} is still running")
            await asyncio.sleep(pause)
            pause = min(pause * 2, 0.25)

    async def _run_first(self, store_key: str, lease: bytes, work: Callable[[], Awaitable[T]]) -> T:
        try:
            result = await work()
        except BaseException:
            # Shielded: a cancelled request must still free the key for its repeats.
            await asyncio.shield(self.store.release(store_key, lease))
            raise
        await self.store.complete(store_key, lease, self._encoder.encode(result), self.window)
        return result


# --- SQLite -------------------------------------------------------------------------------------

SCHEMA = """
CREATE TABLE IF NOT EXISTS fn_idempotency (
    key TEXT PRIMARY KEY,
    done INTEGER NOT NULL,
    lease BLOB NOT NULL,
    fingerprint BLOB NOT NULL,
    result BLOB,
    expires_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS fn_idempotency_expiry ON fn_idempotency (expires_at);
"""


class SQLiteIdempotencyStore:
    """IdempotencyStore on a SQLite file (one node: its workers share the file)."""

    def __init__(
        self,
        path: str | PathLike[str],
        *,
        synchronous: Synchronous = "NORMAL",
        clock: Callable[[], float] = time.time,
    ) -> None:
        # NORMAL: losing the last results to a power cut only means running those requests again.
        self._db = SQLiteDatabase(path, SCHEMA, synchronous=synchronous)
        self._clock = clock

    async def begin(self, key: str, fingerprint: bytes, lease: float) -> Acquired | Completed | InProgress:
        now = self._clock()

        def take(connection: sqlite3.Connection) -> Acquired | Completed | InProgress:
            row = connection.execute(
                "SELECT done, fingerprint, result FROM fn_idempotency WHERE key = ? AND expires_at > ?",
                (key, now),
            ).fetchone()
            if row is not None:
                done, stored_fingerprint, result = row
                if done:
                    return Completed(bytes(result), bytes(stored_fingerprint))
                return InProgress(bytes(stored_fingerprint))
            connection.execute("DELETE FROM fn_idempotency WHERE expires_at <= ?", (now,))
            token = uuid.uuid4().bytes
            connection.execute(
                "INSERT INTO fn_idempotency (key, done, lease, fingerprint, expires_at)"
                " VALUES (?, 0, ?, ?, ?)",
                (key, token, fingerprint, now + lease),
            )
            return Acquired(token)

        return await self._db.write(take)

    async def complete(self, key: str, lease: bytes, result: bytes, window: float) -> bool:
        expires_at = self._clock() + window

        def store(connection: sqlite3.Connection) -> bool:
            cursor = connection.execute(
                "UPDATE fn_idempotency SET done = 1, result = ?, expires_at = ?"
                " WHERE key = ? AND lease = ? AND done = 0",
                (result, expires_at, key, lease),
            )
            return cursor.rowcount > 0

        return await self._db.write(store)

    async def release(self, key: str, lease: bytes) -> None:
        await self._db.write(
            lambda connection: connection.execute(
                "DELETE FROM fn_idempotency WHERE key = ? AND lease = ? AND done = 0", (key, lease)
            )
        )

    async def close(self) -> None:
        await self._db.close()


# --- Redis --------------------------------------------------------------------------------------

# Values: b"P" + 16-byte token + fingerprint while running, b"D" + msgpack([fingerprint, result])
# when done. The running value is the lease: only its holder can replace or delete it.
_PENDING, _DONE = b"P", b"D"
_TOKEN_LENGTH = 16

# KEYS: key. ARGV: lease (the running value), new value ("" to delete), ttl ms.
_SWAP = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
if ARGV[2] == '' then redis.call('DEL', KEYS[1]) else redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3]) end
return 1
"""


class RedisIdempotencyStore:
    """IdempotencyStore on Redis (``SET NX PX``), shared by every node."""

    def __init__(
        self,
        client: redis_asyncio.Redis,
        *,
        prefix: str = "lambdagate:idempotency:",
        owns_client: bool = False,
    ) -> None:
        self._client = client
        self._prefix = prefix
        self._owns_client = owns_client
        self._swap = client.register_script(_SWAP)

    @classmethod
    def from_url(cls, url: str, *, prefix: str = "lambdagate:idempotency:") -> RedisIdempotencyStore:
        return cls(redis_asyncio.Redis.from_url(url), prefix=prefix, owns_client=True)

    async def begin(self, key: str, fingerprint: bytes, lease: float) -> Acquired | Completed | InProgress:
        redis_key = self._prefix + key
        while True:
            value = _PENDING + uuid.uuid4().bytes + fingerprint
            if await self._client.set(redis_key, value, nx=True, px=_ms(lease)):
                return Acquired(value)
            current: bytes | None = await self._client.get(redis_key)  # type: ignore[assignment]
            if current is None:
                continue  # expired between SET and GET: try again
            if current.startswith(_DONE):
                stored_fingerprint, result = msgspec.msgpack.decode(current[1:], type=tuple[bytes, bytes])
                return Completed(result, stored_fingerprint)
            return InProgress(current[1 + _TOKEN_LENGTH :])

    async def complete(self, key: str, lease: bytes, result: bytes, window: float) -> bool:
        fingerprint = lease[1 + _TOKEN_LENGTH :]
        value = _DONE + msgspec.msgpack.encode((fingerprint, result))
        return bool(await self._swap(keys=[self._prefix + key], args=[lease, value, _ms(window)]))

    async def release(self, key: str, lease: bytes) -> None:
        await self._swap(keys=[self._prefix + key], args=[lease, b"", 0])

    async def close(self) -> None:
        if self._owns_client:
            await self._client.aclose()


def _ms(seconds: float) -> int:
    return max(int(seconds * 1000), 1)
