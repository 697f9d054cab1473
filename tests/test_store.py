"""The state store: one suite, run against SQLite and against a real redis-server."""

from __future__ import annotations

import asyncio
import hashlib
import sqlite3
from collections.abc import Awaitable, Callable
from pathlib import Path

import bcrypt
import pytest

from gateway.consumers import ConsumerRegistry
from gateway.store.base import (
    ConflictError,
    InvalidTransitionError,
    NotFoundError,
    StateStore,
    SubscriptionRecord,
    SubscriptionState,
    hash_api_key,
)
from gateway.store.embedded import MIGRATIONS, SQLiteStore
from gateway.store.watch import consumer_tables
from tests.store_backends import StoreBackend, store_backend_fixture  # noqa: F401

PENDING = SubscriptionState.PENDING
APPROVED = SubscriptionState.APPROVED
REJECTED = SubscriptionState.REJECTED
REVOKED = SubscriptionState.REVOKED


def run(backend: StoreBackend, scenario: Callable[[StateStore], Awaitable[None]]) -> None:
    async def main() -> None:
        store = backend.open()
        try:
            await scenario(store)
        finally:
            await store.close()

    asyncio.run(main())


def digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


# --- consumers ---------------------------------------------------------------------------------


def test_consumer_create_get_list_update_delete(store_backend: StoreBackend) -> None:
    async def scenario(store: StateStore) -> None:
        created = await store.create_consumer("bob", groups=["partners"], metadata={"team": "b"})
        assert (created.name, created.groups, created.metadata) == ("bob", ("partners",), {"team": "b"})
        await store.create_consumer("alice")
        assert await store.get_consumer("bob") == created
        assert await store.get_consumer("nobody") is None
        assert [c.name for c in await store.list_consumers()] == ["alice", "bob"]

        updated = await store.update_consumer("bob", groups=["staff", "partners"])
        assert updated.groups == ("staff", "partners")
        assert updated.metadata == {"team": "b"}  # not given: unchanged
        updated = await store.update_consumer("bob", metadata={})
        assert (updated.groups, updated.metadata) == (("staff", "partners"), {})
        assert await store.get_consumer("bob") == updated

        assert await store.delete_consumer("bob") is True
        assert await store.delete_consumer("bob") is False
        assert await store.get_consumer("bob") is None
        assert [c.name for c in await store.list_consumers()] == ["alice"]

    run(store_backend, scenario)


def test_duplicate_consumer_and_unknown_consumer_errors(store_backend: StoreBackend) -> None:
    async def scenario(store: StateStore) -> None:
        await store.create_consumer("alice", groups=["a"])
        with pytest.raises(ConflictError, match='consumer "alice" already exists'):
            await store.create_consumer("alice")
        assert (await store.get_consumer("alice")) is not None
        assert (await store.get_consumer("alice")).groups == ("a",)  # type: ignore[union-attr]
        with pytest.raises(NotFoundError, match='no consumer named "ghost"'):
            await store.update_consumer("ghost", groups=[])
        with pytest.raises(NotFoundError, match='no consumer named "ghost"'):
            await store.add_api_key("ghost", digest("k"))
        with pytest.raises(NotFoundError):
            await store.list_api_keys("ghost")

    run(store_backend, scenario)


# --- version counter ---------------------------------------------------------------------------


def test_version_grows_with_each_write_and_not_with_reads_or_failed_writes(
    store_backend: StoreBackend,
) -> None:
    async def scenario(store: StateStore) -> None:
        start = await store.version()
        await store.create_consumer("alice")
        v1 = await store.version()
        assert v1 > start
        await store.list_consumers()
        await store.get_consumer("alice")
        await store.snapshot()
        assert await store.version() == v1
        with pytest.raises(ConflictError):
            await store.create_consumer("alice")
        assert await store.version() == v1
        assert await store.delete_api_key("alice", "no-such-id") is False
        assert await store.delete_consumer("ghost") is False
        assert await store.version() == v1
        await store.add_api_key("alice", digest("k"))
        v2 = await store.version()
        assert v2 > v1
        subscription = await store.create_subscription("alice", "billing", requested_by="admin")
        v3 = await store.version()
        assert v3 > v2
        await store.transition_subscription(subscription.id, APPROVED, actor="root")
        assert await store.version() > v3

    run(store_backend, scenario)


def test_snapshot_holds_everything_at_its_version(store_backend: StoreBackend) -> None:
    async def scenario(store: StateStore) -> None:
        await store.create_consumer("alice", groups=["g"])
        key = await store.add_api_key("alice", digest("alice-key"))
        basic = await store.add_basic_auth("alice", "alice", "$2b$04$" + "a" * 53)
        subject = await store.add_jwt_subject("alice", "user-1")
        subscription = await store.create_subscription("alice", "billing", requested_by="alice")
        snapshot = await store.snapshot()
        assert snapshot.version == await store.version()
        assert [c.name for c in snapshot.consumers] == ["alice"]
        assert snapshot.api_keys == (key,)
        assert snapshot.basic_auth == (basic,)
        assert snapshot.jwt_subjects == (subject,)
        assert snapshot.subscriptions == (subscription,)

    run(store_backend, scenario)


# --- credentials -------------------------------------------------------------------------------


def test_api_keys_are_stored_as_digests_unique_across_consumers(store_backend: StoreBackend) -> None:
    async def scenario(store: StateStore) -> None:
        await store.create_consumer("alice")
        await store.create_consumer("bob")
        record = await store.add_api_key("alice", hash_api_key("secret-key"))
        assert record.key_sha256 == digest("secret-key")
        assert record.consumer == "alice"
        with pytest.raises(ConflictError, match="already registered"):
            await store.add_api_key("bob", hash_api_key("secret-key"))
        with pytest.raises(ValueError, match="sha256"):
            await store.add_api_key("alice", "secret-key")  # a key in clear is refused
        assert await store.list_api_keys("alice") == [record]
        assert await store.list_api_keys("bob") == []
        # Another consumer cannot delete alice's key by its id.
        assert await store.delete_api_key("bob", record.id) is False
        assert await store.delete_api_key("alice", record.id) is True
        assert await store.list_api_keys("alice") == []
        # The digest is free again.
        again = await store.add_api_key("bob", hash_api_key("secret-key"))
        assert await store.list_api_keys("bob") == [again]

    run(store_backend, scenario)


def test_basic_auth_usernames_and_jwt_subjects_are_unique(store_backend: StoreBackend) -> None:
    bcrypt_hash = "$2b$04$" + "b" * 53

    async def scenario(store: StateStore) -> None:
        await store.create_consumer("alice")
        await store.create_consumer("bob")
        basic = await store.add_basic_auth("alice", "al", bcrypt_hash)
        assert (basic.username, basic.password_hash) == ("al", bcrypt_hash)
        with pytest.raises(ConflictError, match='username "al" is already taken'):
            await store.add_basic_auth("bob", "al", bcrypt_hash)
        subject = await store.add_jwt_subject("alice", "sub-1")
        with pytest.raises(ConflictError, match='JWT subject "sub-1"'):
            await store.add_jwt_subject("bob", "sub-1")
        assert await store.list_basic_auth("alice") == [basic]
        assert await store.list_jwt_subjects("alice") == [subject]
        assert await store.list_jwt_subjects("bob") == []
        assert await store.delete_basic_auth("alice", subject.id) is False  # a jwt id, not basic-auth
        assert await store.delete_basic_auth("alice", basic.id) is True
        assert await store.delete_jwt_subject("alice", subject.id) is True
        assert await store.list_basic_auth("alice") == []
        assert await store.list_jwt_subjects("alice") == []
        await store.add_basic_auth("bob", "al", bcrypt_hash)
        await store.add_jwt_subject("bob", "sub-1")

    run(store_backend, scenario)


def test_deleting_a_consumer_deletes_its_credentials_and_subscriptions(store_backend: StoreBackend) -> None:
    async def scenario(store: StateStore) -> None:
        await store.create_consumer("alice")
        await store.create_consumer("bob")
        await store.add_api_key("alice", digest("a"))
        await store.add_basic_auth("alice", "alice", "$2b$04$" + "c" * 53)
        await store.add_jwt_subject("alice", "alice-sub")
        await store.create_subscription("alice", "billing", requested_by="admin")
        kept = await store.create_subscription("bob", "billing", requested_by="admin")
        assert await store.delete_consumer("alice") is True
        snapshot = await store.snapshot()
        assert (snapshot.api_keys, snapshot.basic_auth, snapshot.jwt_subjects) == ((), (), ())
        assert snapshot.subscriptions == (kept,)
        # A new consumer of the same name starts clean and may reuse the credentials.
        await store.create_consumer("alice")
        assert await store.list_api_keys("alice") == []
        await store.add_api_key("alice", digest("a"))
        await store.add_basic_auth("alice", "alice", "$2b$04$" + "c" * 53)
        await store.add_jwt_subject("alice", "alice-sub")
        await store.create_subscription("alice", "billing", requested_by="admin")

    run(store_backend, scenario)


# --- subscriptions -----------------------------------------------------------------------------


def test_subscription_lifecycle_records_who_and_why(store_backend: StoreBackend) -> None:
    async def scenario(store: StateStore) -> None:
        requested = await store.create_subscription(
            "alice", "billing", requested_by="alice", reason="invoices"
        )
        assert (requested.state, requested.requested_by, requested.decided_by) == (PENDING, "alice", None)
        assert requested.reason == "invoices"
        approved = await store.transition_subscription(requested.id, APPROVED, actor="root", reason="ok")
        assert (approved.state, approved.decided_by, approved.reason) == (APPROVED, "root", "ok")
        assert approved.created_at == requested.created_at
        assert approved.updated_at >= requested.updated_at
        assert await store.get_subscription(requested.id) == approved
        revoked = await store.transition_subscription(requested.id, REVOKED, actor="sec", reason="abuse")
        assert (revoked.state, revoked.decided_by, revoked.reason) == (REVOKED, "sec", "abuse")

    run(store_backend, scenario)


@pytest.mark.parametrize(
    ("path", "to_state"),
    [
        ((), REVOKED),  # pending cannot be revoked (reject it)
        ((APPROVED,), APPROVED),
        ((APPROVED,), REJECTED),
        ((REJECTED,), APPROVED),
        ((REJECTED,), REVOKED),
        ((APPROVED, REVOKED), APPROVED),
    ],
)
def test_invalid_transitions_are_refused(
    store_backend: StoreBackend, path: tuple[SubscriptionState, ...], to_state: SubscriptionState
) -> None:
    async def scenario(store: StateStore) -> None:
        record = await store.create_subscription("alice", "billing", requested_by="admin")
        for state in path:
            record = await store.transition_subscription(record.id, state, actor="admin")
        version = await store.version()
        with pytest.raises(
            InvalidTransitionError, match=f"is {record.state}; only a .* can become {to_state}"
        ):
            await store.transition_subscription(record.id, to_state, actor="admin")
        assert await store.get_subscription(record.id) == record
        assert await store.version() == version

    run(store_backend, scenario)


def test_one_active_subscription_per_consumer_and_product(store_backend: StoreBackend) -> None:
    async def scenario(store: StateStore) -> None:
        first = await store.create_subscription("alice", "billing", requested_by="admin")
        with pytest.raises(ConflictError, match="already has a pending or approved subscription"):
            await store.create_subscription("alice", "billing", requested_by="admin")
        await store.create_subscription("alice", "search", requested_by="admin")  # another product
        await store.create_subscription("bob", "billing", requested_by="admin")  # another consumer
        await store.transition_subscription(first.id, APPROVED, actor="admin")
        with pytest.raises(ConflictError):
            await store.create_subscription("alice", "billing", requested_by="admin")
        await store.transition_subscription(first.id, REVOKED, actor="admin")
        # Revoked is history: alice may ask again, and the old record stays.
        second = await store.create_subscription("alice", "billing", requested_by="alice")
        await store.transition_subscription(second.id, REJECTED, actor="admin")
        third = await store.create_subscription("alice", "billing", requested_by="alice")
        states = [s.state for s in await store.list_subscriptions(consumer="alice", product="billing")]
        assert sorted(states) == sorted([REVOKED, REJECTED, PENDING])
        assert third.state is PENDING

    run(store_backend, scenario)


def test_list_subscriptions_filters(store_backend: StoreBackend) -> None:
    async def scenario(store: StateStore) -> None:
        a = await store.create_subscription("alice", "billing", requested_by="admin")
        b = await store.create_subscription("bob", "billing", requested_by="admin")
        c = await store.create_subscription("bob", "search", requested_by="admin")
        b = await store.transition_subscription(b.id, APPROVED, actor="admin")

        def ids(records: list[SubscriptionRecord]) -> set[str]:
            return {r.id for r in records}

        assert ids(await store.list_subscriptions()) == {a.id, b.id, c.id}
        assert ids(await store.list_subscriptions(state=PENDING)) == {a.id, c.id}
        assert ids(await store.list_subscriptions(state=APPROVED)) == {b.id}
        assert ids(await store.list_subscriptions(consumer="bob")) == {b.id, c.id}
        assert ids(await store.list_subscriptions(product="billing", state=PENDING)) == {a.id}
        assert await store.list_subscriptions(state=REVOKED) == []
        assert await store.get_subscription("nope") is None
        with pytest.raises(NotFoundError, match='no subscription with id "nope"'):
            await store.transition_subscription("nope", APPROVED, actor="admin")

    run(store_backend, scenario)


def test_subscription_created_already_decided(store_backend: StoreBackend) -> None:
    async def scenario(store: StateStore) -> None:
        record = await store.create_subscription("alice", "open-api", requested_by="auto", state=APPROVED)
        assert (record.state, record.decided_by) == (APPROVED, "auto")
        with pytest.raises(ConflictError):
            await store.create_subscription("alice", "open-api", requested_by="auto")

    run(store_backend, scenario)


# --- persistence -------------------------------------------------------------------------------


def test_changes_survive_reopening(store_backend: StoreBackend) -> None:
    async def main() -> None:
        store = store_backend.open()
        await store.create_consumer("alice", groups=["g"], metadata={"tier": "gold"})
        key = await store.add_api_key("alice", digest("k"))
        subscription = await store.create_subscription("alice", "billing", requested_by="admin")
        subscription = await store.transition_subscription(subscription.id, APPROVED, actor="root")
        before = await store.snapshot()
        await store.close()

        reopened = store_backend.open()
        try:
            after = await reopened.snapshot()
            assert after == before
            assert await reopened.version() == before.version
            assert await reopened.list_api_keys("alice") == [key]
            assert await reopened.get_subscription(subscription.id) == subscription
            # It keeps working from where it was.
            await reopened.create_consumer("bob")
            assert await reopened.version() > before.version
        finally:
            await reopened.close()

    asyncio.run(main())


def test_two_stores_on_the_same_data_see_each_others_changes(store_backend: StoreBackend) -> None:
    async def main() -> None:
        writer, reader = store_backend.open(), store_backend.open()
        try:
            seen = await reader.version()
            await writer.create_consumer("alice")
            assert await reader.version() > seen
            assert [c.name for c in (await reader.snapshot()).consumers] == ["alice"]
        finally:
            await writer.close()
            await reader.close()

    asyncio.run(main())


# --- SQLite specifics --------------------------------------------------------------------------


def test_sqlite_file_is_created_on_first_use_in_wal_mode_with_migrations(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "state.db"
    path.parent.mkdir()

    async def main() -> None:
        store = SQLiteStore(path)
        assert not path.exists()  # nothing happens until the store is used
        assert await store.version() == 0
        await store.close()

    asyncio.run(main())
    with sqlite3.connect(path) as connection:
        assert connection.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        versions = [row[0] for row in connection.execute("SELECT version FROM schema_migrations")]
    connection.close()
    assert versions == list(range(1, len(MIGRATIONS) + 1))


def test_sqlite_refuses_a_file_from_a_newer_gateway(tmp_path: Path) -> None:
    path = tmp_path / "state.db"

    async def touch() -> None:
        store = SQLiteStore(path)
        await store.version()
        await store.close()

    asyncio.run(touch())
    connection = sqlite3.connect(path)
    with connection:
        connection.execute("INSERT INTO schema_migrations (version, applied_at) VALUES (99, 0)")
    connection.close()

    async def reopen() -> None:
        store = SQLiteStore(path)
        try:
            with pytest.raises(RuntimeError, match="schema version 99, newer than"):
                await store.version()
        finally:
            await store.close()

    asyncio.run(reopen())


def test_sqlite_store_refuses_use_after_close(tmp_path: Path) -> None:
    async def main() -> None:
        store = SQLiteStore(tmp_path / "state.db")
        await store.create_consumer("alice")
        await store.close()
        await store.close()  # idempotent
        with pytest.raises(RuntimeError, match="closed"):
            await store.version()

    asyncio.run(main())


def test_concurrent_requests_for_one_pair_make_one_subscription(store_backend: StoreBackend) -> None:
    """Two gateways (two store clients) racing: the unique-active rule holds across them."""

    async def main() -> None:
        stores = [store_backend.open(), store_backend.open()]
        try:

            async def attempt(index: int) -> bool:
                try:
                    await stores[index % 2].create_subscription("alice", "billing", requested_by=f"r{index}")
                except ConflictError:
                    return False
                return True

            outcomes = await asyncio.gather(*(attempt(i) for i in range(12)))
            assert outcomes.count(True) == 1
            (only,) = await stores[0].list_subscriptions()
            assert only.state is PENDING
            # Likewise for competing decisions: exactly one approval wins.
            decisions = await asyncio.gather(
                *(stores[i % 2].transition_subscription(only.id, APPROVED, actor=f"a{i}") for i in range(6)),
                return_exceptions=True,
            )
            assert sum(not isinstance(d, BaseException) for d in decisions) == 1
            assert all(
                isinstance(d, InvalidTransitionError) for d in decisions if isinstance(d, BaseException)
            )
        finally:
            for store in stores:
                await store.close()

    asyncio.run(main())


def test_consumer_tables_load_into_the_consumer_registry(store_backend: StoreBackend) -> None:
    """What the admin API stored authenticates through the same code as config-file consumers."""
    password_hash = bcrypt.hashpw(b"pw", bcrypt.gensalt(rounds=4)).decode()

    async def scenario(store: StateStore) -> None:
        await store.create_consumer("alice", groups=["partners"], metadata={"tier": "gold"})
        await store.create_consumer("bob")
        await store.add_api_key("alice", hash_api_key("alice-key"))
        await store.add_basic_auth("alice", "al", password_hash)
        await store.add_jwt_subject("bob", "bob-sub")
        tables = consumer_tables(await store.snapshot())
        assert tables["alice"] == {
            "keys": [f"sha256:{digest('alice-key')}"],
            "basic_auth": [{"username": "al", "password": password_hash}],
            "jwt_subjects": [],
            "groups": ["partners"],
            "metadata": {"tier": "gold"},
        }
        registry = ConsumerRegistry()
        for name, table in tables.items():
            registry.add(name, table)
        alice = registry.by_api_key("alice-key")
        assert alice is not None and (alice.name, alice.groups) == ("alice", ("partners",))
        assert registry.by_api_key("other-key") is None
        by_password = registry.by_basic_auth("al", b"pw")
        assert by_password is not None and by_password.name == "alice"
        by_subject = registry.by_jwt_subject("bob-sub")
        assert by_subject is not None and by_subject.name == "bob"

    run(store_backend, scenario)
