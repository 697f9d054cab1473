"""The embedded state store: one SQLite file in WAL mode, created and migrated on first use.

sqlite3 blocks, so every statement runs on one dedicated thread (which also serialises the
connection's use); the event loop only awaits. Several worker processes may open the same file:
WAL lets readers proceed while the admin API writes, and `busy_timeout` makes a writer wait for
another instead of failing.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Mapping, Sequence
from os import PathLike
from typing import Any, TypeVar

import msgspec

from gateway.sqlite_db import SQLiteDatabase

from .base import (
    ApiKeyRecord,
    BasicAuthRecord,
    ConflictError,
    ConsumerRecord,
    Credential,
    CredentialMethods,
    JwtSubjectRecord,
    NotFoundError,
    StoreSnapshot,
    SubscriptionRecord,
    SubscriptionState,
    check_transition,
    new_id,
)

__all__ = ["MIGRATIONS", "SQLiteStore"]

T = TypeVar("T")

# Append only: each entry upgrades the schema by one version, recorded in schema_migrations.
MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
    INSERT INTO meta (key, value) VALUES ('data_version', 0);
    CREATE TABLE consumers (
        name TEXT PRIMARY KEY,
        groups TEXT NOT NULL,
        metadata TEXT NOT NULL,
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL
    );
    CREATE TABLE api_keys (
        id TEXT PRIMARY KEY,
        consumer TEXT NOT NULL REFERENCES consumers (name) ON DELETE CASCADE,
        key_sha256 TEXT NOT NULL UNIQUE,
        created_at REAL NOT NULL
    );
    CREATE INDEX api_keys_consumer ON api_keys (consumer);
    CREATE TABLE basic_auth (
        id TEXT PRIMARY KEY,
        consumer TEXT NOT NULL REFERENCES consumers (name) ON DELETE CASCADE,
        username TEXT NOT NULL UNIQUE,
        password_hash TEXT NOT NULL,
        created_at REAL NOT NULL
    );
    CREATE INDEX basic_auth_consumer ON basic_auth (consumer);
    CREATE TABLE jwt_subjects (
        id TEXT PRIMARY KEY,
        consumer TEXT NOT NULL REFERENCES consumers (name) ON DELETE CASCADE,
        subject TEXT NOT NULL UNIQUE,
        created_at REAL NOT NULL
    );
    CREATE INDEX jwt_subjects_consumer ON jwt_subjects (consumer);
    -- No foreign key to consumers: consumers declared in the config file subscribe too.
    CREATE TABLE subscriptions (
        id TEXT PRIMARY KEY,
        consumer TEXT NOT NULL,
        product TEXT NOT NULL,
        state TEXT NOT NULL CHECK (state IN ('pending', 'approved', 'rejected', 'revoked')),
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL,
        requested_by TEXT NOT NULL,
        decided_by TEXT,
        reason TEXT
    );
    CREATE UNIQUE INDEX subscriptions_active ON subscriptions (consumer, product)
        WHERE state IN ('pending', 'approved');
    """,
)

_SUBSCRIPTION_COLUMNS = (
    "id, consumer, product, state, created_at, updated_at, requested_by, decided_by, reason"
)
_CREDENTIAL_TABLES = {
    ApiKeyRecord: ("api_keys", "id, consumer, key_sha256, created_at"),
    BasicAuthRecord: ("basic_auth", "id, consumer, username, password_hash, created_at"),
    JwtSubjectRecord: ("jwt_subjects", "id, consumer, subject, created_at"),
}
_json_encode = msgspec.json.encode


class SQLiteStore(CredentialMethods):
    """StateStore on a SQLite file (``[store] path``); the file is created on first use."""

    def __init__(self, path: str | PathLike[str], *, clock: Callable[[], float] = time.time) -> None:
        self.path = str(path)
        self._clock = clock
        self._db = SQLiteDatabase(path, _setup, synchronous="NORMAL", name="store")

    # --- plumbing ----------------------------------------------------------------------------

    async def _run(self, work: Callable[[sqlite3.Connection], T]) -> T:
        return await self._db.read(work)

    def _write(self, work: Callable[[sqlite3.Connection], T]) -> Callable[[sqlite3.Connection], T]:
        """Wrap `work` in one transaction that also bumps the version counter if it changed rows."""

        def transaction(connection: sqlite3.Connection) -> T:
            connection.execute("BEGIN IMMEDIATE")
            try:
                changes_before = connection.total_changes
                result = work(connection)
                # A write that changed nothing (deleting a missing row) must not make workers reload.
                if connection.total_changes != changes_before:
                    connection.execute("UPDATE meta SET value = value + 1 WHERE key = 'data_version'")
            except BaseException:
                connection.execute("ROLLBACK")
                raise
            connection.execute("COMMIT")
            return result

        return transaction

    async def close(self) -> None:
        await self._db.close()

    async def __aenter__(self) -> SQLiteStore:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    # --- version and snapshot ----------------------------------------------------------------

    async def version(self) -> int:
        return await self._run(_read_version)

    async def snapshot(self) -> StoreSnapshot:
        def read(connection: sqlite3.Connection) -> StoreSnapshot:
            # One read transaction: WAL gives it a consistent view of a single version.
            connection.execute("BEGIN")
            try:
                return StoreSnapshot(
                    version=_read_version(connection),
                    consumers=tuple(_consumers(connection, "ORDER BY name", ())),
                    api_keys=tuple(_credentials(connection, ApiKeyRecord, None)),
                    basic_auth=tuple(_credentials(connection, BasicAuthRecord, None)),
                    jwt_subjects=tuple(_credentials(connection, JwtSubjectRecord, None)),
                    subscriptions=tuple(_subscriptions(connection, "", ())),
                )
            finally:
                connection.execute("COMMIT")

        return await self._run(read)

    # --- consumers ---------------------------------------------------------------------------

    async def create_consumer(
        self, name: str, *, groups: Sequence[str] = (), metadata: Mapping[str, str] | None = None
    ) -> ConsumerRecord:
        now = self._clock()
        record = ConsumerRecord(
            name=name, groups=tuple(groups), metadata=dict(metadata or {}), created_at=now, updated_at=now
        )

        def insert(connection: sqlite3.Connection) -> ConsumerRecord:
            try:
                connection.execute(
                    "INSERT INTO consumers (name, groups, metadata, created_at, updated_at)"
                    " VALUES (?, ?, ?, ?, ?)",
                    (name, _json_encode(record.groups), _json_encode(record.metadata), now, now),
                )
            except sqlite3.IntegrityError:
                raise ConflictError(f'consumer "{name}" already exists') from None
            return record

        return await self._run(self._write(insert))

    async def get_consumer(self, name: str) -> ConsumerRecord | None:
        def read(connection: sqlite3.Connection) -> ConsumerRecord | None:
            found = _consumers(connection, "WHERE name = ?", (name,))
            return found[0] if found else None

        return await self._run(read)

    async def list_consumers(self) -> list[ConsumerRecord]:
        return await self._run(lambda connection: _consumers(connection, "ORDER BY name", ()))

    async def update_consumer(
        self, name: str, *, groups: Sequence[str] | None = None, metadata: Mapping[str, str] | None = None
    ) -> ConsumerRecord:
        now = self._clock()

        def update(connection: sqlite3.Connection) -> ConsumerRecord:
            found = _consumers(connection, "WHERE name = ?", (name,))
            if not found:
                raise NotFoundError(f'no consumer named "{name}"')
            record = msgspec.structs.replace(
                found[0],
                groups=found[0].groups if groups is None else tuple(groups),
                metadata=found[0].metadata if metadata is None else dict(metadata),
                updated_at=now,
            )
            connection.execute(
                "UPDATE consumers SET groups = ?, metadata = ?, updated_at = ? WHERE name = ?",
                (_json_encode(record.groups), _json_encode(record.metadata), now, name),
            )
            return record

        return await self._run(self._write(update))

    async def delete_consumer(self, name: str) -> bool:
        def delete(connection: sqlite3.Connection) -> bool:
            # Credentials go by ON DELETE CASCADE; subscriptions have no foreign key.
            deleted = connection.execute("DELETE FROM consumers WHERE name = ?", (name,)).rowcount > 0
            if deleted:
                connection.execute("DELETE FROM subscriptions WHERE consumer = ?", (name,))
            return deleted

        return await self._run(self._write(delete))

    # --- credentials -------------------------------------------------------------------------

    async def _add_credential(self, record: Credential, duplicate_message: str) -> Credential:
        table, columns = _CREDENTIAL_TABLES[type(record)]
        values = msgspec.structs.astuple(record)

        def insert(connection: sqlite3.Connection) -> Credential:
            _require_consumer(connection, record.consumer)
            try:
                connection.execute(
                    f"INSERT INTO {table} ({columns}) VALUES ({', '.join('?' * len(values))})", values
                )
            except sqlite3.IntegrityError:
                raise ConflictError(duplicate_message) from None
            return record

        return await self._run(self._write(insert))

    async def _list_credentials(self, kind: type[Credential], consumer: str) -> list[Credential]:
        def read(connection: sqlite3.Connection) -> list[Credential]:
            _require_consumer(connection, consumer)
            return _credentials(connection, kind, consumer)

        return await self._run(read)

    async def _delete_credential(self, kind: type[Credential], consumer: str, credential_id: str) -> bool:
        table, _ = _CREDENTIAL_TABLES[kind]

        def delete(connection: sqlite3.Connection) -> bool:
            _require_consumer(connection, consumer)
            cursor = connection.execute(
                f"DELETE FROM {table} WHERE id = ? AND consumer = ?", (credential_id, consumer)
            )
            return cursor.rowcount > 0

        return await self._run(self._write(delete))

    # --- subscriptions -----------------------------------------------------------------------

    async def create_subscription(
        self,
        consumer: str,
        product: str,
        *,
        requested_by: str,
        reason: str | None = None,
        state: SubscriptionState = SubscriptionState.PENDING,
    ) -> SubscriptionRecord:
        now = self._clock()
        record = SubscriptionRecord(
            id=new_id(),
            consumer=consumer,
            product=product,
            state=state,
            created_at=now,
            updated_at=now,
            requested_by=requested_by,
            decided_by=None if state is SubscriptionState.PENDING else requested_by,
            reason=reason,
        )

        def insert(connection: sqlite3.Connection) -> SubscriptionRecord:
            try:
                connection.execute(
                    f"INSERT INTO subscriptions ({_SUBSCRIPTION_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    msgspec.structs.astuple(record),
                )
            except sqlite3.IntegrityError:
                raise ConflictError(
                    f'consumer "{consumer}" already has a pending or approved subscription'
                    f' to product "{product}"'
                ) from None
            return record

        return await self._run(self._write(insert))

    async def get_subscription(self, subscription_id: str) -> SubscriptionRecord | None:
        def read(connection: sqlite3.Connection) -> SubscriptionRecord | None:
            found = _subscriptions(connection, "WHERE id = ?", (subscription_id,))
            return found[0] if found else None

        return await self._run(read)

    async def list_subscriptions(
        self,
        *,
        state: SubscriptionState | None = None,
        consumer: str | None = None,
        product: str | None = None,
    ) -> list[SubscriptionRecord]:
        conditions: list[str] = []
        parameters: list[str] = []
        for column, value in (("state", state), ("consumer", consumer), ("product", product)):
            if value is not None:
                conditions.append(f"{column} = ?")
                parameters.append(str(value))
        where = f"WHERE {' AND '.join(conditions)}" if conditions else ""
        return await self._run(lambda connection: _subscriptions(connection, where, tuple(parameters)))

    async def transition_subscription(
        self, subscription_id: str, to_state: SubscriptionState, *, actor: str, reason: str | None = None
    ) -> SubscriptionRecord:
        now = self._clock()

        def update(connection: sqlite3.Connection) -> SubscriptionRecord:
            found = _subscriptions(connection, "WHERE id = ?", (subscription_id,))
            if not found:
                raise NotFoundError(f'no subscription with id "{subscription_id}"')
            check_transition(found[0], to_state)
            record = msgspec.structs.replace(
                found[0], state=to_state, updated_at=now, decided_by=actor, reason=reason
            )
            connection.execute(
                "UPDATE subscriptions SET state = ?, updated_at = ?, decided_by = ?, reason = ? WHERE id = ?",
                (record.state, now, actor, reason, subscription_id),
            )
            return record

        return await self._run(self._write(update))


def _setup(connection: sqlite3.Connection) -> None:
    connection.execute("PRAGMA foreign_keys = ON")
    _migrate(connection)


def _migrate(connection: sqlite3.Connection) -> None:
    connection.execute("BEGIN IMMEDIATE")
    try:
        connection.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations"
            " (version INTEGER PRIMARY KEY, applied_at REAL NOT NULL)"
        )
        (current,) = connection.execute("SELECT coalesce(max(version), 0) FROM schema_migrations").fetchone()
        if current > len(MIGRATIONS):
            raise RuntimeError(
                f"the store file has schema version {current}, newer than this gateway's {len(MIGRATIONS)}"
            )
        for version in range(current + 1, len(MIGRATIONS) + 1):
            for statement in _statements(MIGRATIONS[version - 1]):
                connection.execute(statement)
            connection.execute(
                "INSERT INTO schema_migrations (version, applied_at) VALUES (?, ?)", (version, time.time())
            )
    except BaseException:
        connection.execute("ROLLBACK")
        raise
    connection.execute("COMMIT")


def _statements(script: str) -> list[str]:
    # executescript() would commit the surrounding transaction; run the statements one by one.
    lines = [line for line in script.splitlines() if not line.strip().startswith("--")]
    return [statement.strip() for statement in "\n".join(lines).split(";") if statement.strip()]


def _read_version(connection: sqlite3.Connection) -> int:
    row = connection.execute("SELECT value FROM meta WHERE key = 'data_version'").fetchone()
    return int(row[0])


def _require_consumer(connection: sqlite3.Connection, name: str) -> None:
    if connection.execute("SELECT 1 FROM consumers WHERE name = ?", (name,)).fetchone() is None:
        raise NotFoundError(f'no consumer named "{name}"')


def _consumers(
    connection: sqlite3.Connection, clause: str, parameters: tuple[Any, ...]
) -> list[ConsumerRecord]:
    rows = connection.execute(
        f"SELECT name, groups, metadata, created_at, updated_at FROM consumers {clause}", parameters
    )
    return [
        ConsumerRecord(
            name=name,
            groups=tuple(msgspec.json.decode(groups, type=list[str])),
            metadata=msgspec.json.decode(metadata, type=dict[str, str]),
            created_at=created_at,
            updated_at=updated_at,
        )
        for name, groups, metadata, created_at, updated_at in rows
    ]


def _credentials(
    connection: sqlite3.Connection, kind: type[Credential], consumer: str | None
) -> list[Credential]:
    table, columns = _CREDENTIAL_TABLES[kind]
    names = [column.strip() for column in columns.split(",")]
    if consumer is None:
        rows = connection.execute(f"SELECT {columns} FROM {table} ORDER BY created_at, id")
    else:
        rows = connection.execute(
            f"SELECT {columns} FROM {table} WHERE consumer = ? ORDER BY created_at, id", (consumer,)
        )
    return [kind(**dict(zip(names, row, strict=True))) for row in rows]


def _subscriptions(
    connection: sqlite3.Connection, where: str, parameters: tuple[Any, ...]
) -> list[SubscriptionRecord]:
    rows = connection.execute(
        f"SELECT {_SUBSCRIPTION_COLUMNS} FROM subscriptions {where} ORDER BY created_at, id", parameters
    )
    names = [column.strip() for column in _SUBSCRIPTION_COLUMNS.split(",")]
    records = []
    for row in rows:
        fields = dict(zip(names, row, strict=True))
        fields["state"] = SubscriptionState(fields["state"])
        records.append(SubscriptionRecord(**fields))
    return records
