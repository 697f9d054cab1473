"""The state store on Redis, for gateways that share one Redis (``[store] redis = "redis://..."``).

Layout under a key prefix (default ``lambdagate:``), values are JSON-encoded records:

    version                              counter, INCR'd in the same MULTI as every change
    consumers                            hash  name -> ConsumerRecord
    credentials:{kind}                   hash  id -> ApiKeyRecord | BasicAuthRecord | JwtSubjectRecord
    credential_index:{kind}              hash  key_sha256 | username | subject -> id (uniqueness)
    consumer_credentials:{name}          set   "{kind}:{id}" (for listing and cascading deletes)
    subscriptions                        hash  id -> SubscriptionRecord
    subscription_active                  hash  "[consumer, product]" -> id of the pending/approved one
    consumer_subscriptions:{name}        set   subscription ids

Writes are optimistic transactions: WATCH the keys a check reads, check in Python, then
MULTI/EXEC the changes plus the version bump; a concurrent writer makes EXEC fail and the
whole check runs again.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, TypeVar

import msgspec
import redis.asyncio as redis_asyncio
from redis.exceptions import WatchError

from .base import (
    ACTIVE_STATES,
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

__all__ = ["RedisStateStore"]

T = TypeVar("T")
Command = tuple[Any, ...]

# record type -> (kind used in key names, the field that must be unique across consumers)
_CREDENTIAL_KINDS: dict[type[Any], tuple[str, str]] = {
    ApiKeyRecord: ("api_keys", "key_sha256"),
    BasicAuthRecord: ("basic_auth", "username"),
    JwtSubjectRecord: ("jwt_subjects", "subject"),
}
_encode = msgspec.json.encode


class RedisStateStore(CredentialMethods):
    """StateStore on Redis; see the module docstring for the key layout."""

    def __init__(
        self,
        client: redis_asyncio.Redis,
        *,
        prefix: str = "lambdagate:",
        owns_client: bool = False,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._client = client
        self._prefix = prefix
        self._owns_client = owns_client
        self._clock = clock
        self._version_key = f"{prefix}version"
        self._consumers_key = f"{prefix}consumers"
        self._subscriptions_key = f"{prefix}subscriptions"
        self._active_key = f"{prefix}subscription_active"

    @classmethod
    def from_url(
        cls, url: str, *, prefix: str = "lambdagate:", clock: Callable[[], float] = time.time
    ) -> RedisStateStore:
        client = redis_asyncio.Redis.from_url(url)
        return cls(client, prefix=prefix, owns_client=True, clock=clock)

    async def close(self) -> None:
        if self._owns_client:
            await self._client.aclose()

    async def __aenter__(self) -> RedisStateStore:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    # --- keys and plumbing -------------------------------------------------------------------

    def _credentials_key(self, kind: str) -> str:
        return f"{self._prefix}credentials:{kind}"

    def _index_key(self, kind: str) -> str:
        return f"{self._prefix}credential_index:{kind}"

    def _consumer_credentials_key(self, name: str) -> str:
        return f"{self._prefix}consumer_credentials:{name}"

    def _consumer_subscriptions_key(self, name: str) -> str:
        return f"{self._prefix}consumer_subscriptions:{name}"

    async def _transact(self, plan: Callable[[Any], Awaitable[tuple[T, list[Command]]]], *watches: str) -> T:
        """Run `plan` (reads + checks, on a watching pipeline) and apply its writes atomically."""
        async with self._client.pipeline(transaction=True) as pipe:
            while True:
                try:
                    await pipe.watch(*watches)
                    result, writes = await plan(pipe)
                    if not writes:
                        await pipe.unwatch()  # type: ignore[no-untyped-call]
                        return result
                    pipe.multi()  # type: ignore[no-untyped-call]
                    for command in writes:
                        pipe.execute_command(*command)
                    pipe.execute_command("INCR", self._version_key)
                    await pipe.execute()
                    return result
                except WatchError:
                    continue

    # --- version and snapshot ----------------------------------------------------------------

    async def version(self) -> int:
        value = await self._client.get(self._version_key)
        return int(value) if value is not None else 0

    async def snapshot(self) -> StoreSnapshot:
        async with self._client.pipeline(transaction=True) as pipe:
            pipe.get(self._version_key)
            pipe.hgetall(self._consumers_key)
            for kind, _ in _CREDENTIAL_KINDS.values():
                pipe.hgetall(self._credentials_key(kind))
            pipe.hgetall(self._subscriptions_key)
            version, consumers, api_keys, basic_auth, jwt_subjects, subscriptions = await pipe.execute()
        return StoreSnapshot(
            version=int(version) if version is not None else 0,
            consumers=tuple(sorted(_decode_all(consumers, ConsumerRecord), key=lambda c: c.name)),
            api_keys=tuple(_by_creation(_decode_all(api_keys, ApiKeyRecord))),
            basic_auth=tuple(_by_creation(_decode_all(basic_auth, BasicAuthRecord))),
            jwt_subjects=tuple(_by_creation(_decode_all(jwt_subjects, JwtSubjectRecord))),
            subscriptions=tuple(_by_creation(_decode_all(subscriptions, SubscriptionRecord))),
        )

    # --- consumers ---------------------------------------------------------------------------

    async def create_consumer(
        self, name: str, *, groups: Sequence[str] = (), metadata: Mapping[str, str] | None = None
    ) -> ConsumerRecord:
        now = self._clock()
        record = ConsumerRecord(
            name=name, groups=tuple(groups), metadata=dict(metadata or {}), created_at=now, updated_at=now
        )

        async def plan(pipe: Any) -> tuple[ConsumerRecord, list[Command]]:
            if await pipe.hexists(self._consumers_key, name):
                raise ConflictError(f'consumer "{name}" already exists')
            return record, [("HSET", self._consumers_key, name, _encode(record))]

        return await self._transact(plan, self._consumers_key)

    async def get_consumer(self, name: str) -> ConsumerRecord | None:
        raw = await self._client.hget(self._consumers_key, name)
        return None if raw is None else msgspec.json.decode(raw, type=ConsumerRecord)

    async def list_consumers(self) -> list[ConsumerRecord]:
        raw = await self._client.hgetall(self._consumers_key)
        return sorted(_decode_all(raw, ConsumerRecord), key=lambda c: c.name)

    async def update_consumer(
        self, name: str, *, groups: Sequence[str] | None = None, metadata: Mapping[str, str] | None = None
    ) -> ConsumerRecord:
        now = self._clock()

        async def plan(pipe: Any) -> tuple[ConsumerRecord, list[Command]]:
            current = await self._read_consumer(pipe, name)
            record = msgspec.structs.replace(
                current,
                groups=current.groups if groups is None else tuple(groups),
                metadata=current.metadata if metadata is None else dict(metadata),
                updated_at=now,
            )
            return record, [("HSET", self._consumers_key, name, _encode(record))]

        return await self._transact(plan, self._consumers_key)

    async def delete_consumer(self, name: str) -> bool:
        credentials_key = self._consumer_credentials_key(name)
        subscriptions_key = self._consumer_subscriptions_key(name)

        async def plan(pipe: Any) -> tuple[bool, list[Command]]:
            if not await pipe.hexists(self._consumers_key, name):
                return False, []
            writes: list[Command] = [("HDEL", self._consumers_key, name), ("DEL", credentials_key)]
            for member in await pipe.smembers(credentials_key):
                kind, _, credential_id = _text(member).partition(":")
                raw = await pipe.hget(self._credentials_key(kind), credential_id)
                if raw is not None:
                    writes += self._credential_removal(kind, credential_id, raw)
            writes += await self._subscription_removals(pipe, name)
            writes.append(("DEL", subscriptions_key))
            return True, writes

        watched = [self._consumers_key, credentials_key, subscriptions_key, self._subscriptions_key]
        watched += [self._credentials_key(kind) for kind, _ in _CREDENTIAL_KINDS.values()]
        return await self._transact(plan, *watched)

    async def _read_consumer(self, pipe: Any, name: str) -> ConsumerRecord:
        raw = await pipe.hget(self._consumers_key, name)
        if raw is None:
            raise NotFoundError(f'no consumer named "{name}"')
        return msgspec.json.decode(raw, type=ConsumerRecord)

    def _credential_removal(self, kind: str, credential_id: str, raw: bytes | str) -> list[Command]:
        record_type = next(t for t, (k, _) in _CREDENTIAL_KINDS.items() if k == kind)
        unique_field = _CREDENTIAL_KINDS[record_type][1]
        record = msgspec.json.decode(raw, type=record_type)
        return [
            ("HDEL", self._credentials_key(kind), credential_id),
            ("HDEL", self._index_key(kind), getattr(record, unique_field)),
        ]

    async def _subscription_removals(self, pipe: Any, consumer: str) -> list[Command]:
        writes: list[Command] = []
        for member in await pipe.smembers(self._consumer_subscriptions_key(consumer)):
            subscription_id = _text(member)
            raw = await pipe.hget(self._subscriptions_key, subscription_id)
            writes.append(("HDEL", self._subscriptions_key, subscription_id))
            if raw is not None:
                record = msgspec.json.decode(raw, type=SubscriptionRecord)
                if record.state in ACTIVE_STATES:
                    writes.append(("HDEL", self._active_key, _pair(record.consumer, record.product)))
        return writes

    # --- credentials -------------------------------------------------------------------------

    async def _add_credential(self, record: Credential, duplicate_message: str) -> Credential:
        kind, unique_field = _CREDENTIAL_KINDS[type(record)]
        unique_value = getattr(record, unique_field)
        index_key = self._index_key(kind)

        async def plan(pipe: Any) -> tuple[Credential, list[Command]]:
            await self._read_consumer(pipe, record.consumer)
            if await pipe.hexists(index_key, unique_value):
                raise ConflictError(duplicate_message)
            return record, [
                ("HSET", self._credentials_key(kind), record.id, _encode(record)),
                ("HSET", index_key, unique_value, record.id),
                ("SADD", self._consumer_credentials_key(record.consumer), f"{kind}:{record.id}"),
            ]

        return await self._transact(plan, self._consumers_key, index_key)

    async def _list_credentials(self, record_type: type[Credential], consumer: str) -> list[Credential]:
        kind, _ = _CREDENTIAL_KINDS[record_type]
        if await self.get_consumer(consumer) is None:
            raise NotFoundError(f'no consumer named "{consumer}"')
        members = await self._client.smembers(self._consumer_credentials_key(consumer))
        ids = [
            credential_id for k, _, credential_id in (_text(m).partition(":") for m in members) if k == kind
        ]
        if not ids:
            return []
        raw = await self._client.hmget(self._credentials_key(kind), ids)
        return _by_creation([msgspec.json.decode(r, type=record_type) for r in raw if r is not None])

    async def _delete_credential(
        self, record_type: type[Credential], consumer: str, credential_id: str
    ) -> bool:
        kind, _ = _CREDENTIAL_KINDS[record_type]
        credentials_key = self._credentials_key(kind)

        async def plan(pipe: Any) -> tuple[bool, list[Command]]:
            await self._read_consumer(pipe, consumer)
            raw = await pipe.hget(credentials_key, credential_id)
            if raw is None or msgspec.json.decode(raw, type=record_type).consumer != consumer:
                return False, []
            writes = self._credential_removal(kind, credential_id, raw)
            writes.append(("SREM", self._consumer_credentials_key(consumer), f"{kind}:{credential_id}"))
            return True, writes

        return await self._transact(plan, self._consumers_key, credentials_key)

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
        pair = _pair(consumer, product)

        async def plan(pipe: Any) -> tuple[SubscriptionRecord, list[Command]]:
            writes: list[Command] = [
                ("HSET", self._subscriptions_key, record.id, _encode(record)),
                ("SADD", self._consumer_subscriptions_key(consumer), record.id),
            ]
            if record.state in ACTIVE_STATES:
                if await pipe.hexists(self._active_key, pair):
                    raise ConflictError(
                        f'consumer "{consumer}" already has a pending or approved subscription'
                        f' to product "{product}"'
                    )
                writes.append(("HSET", self._active_key, pair, record.id))
            return record, writes

        return await self._transact(plan, self._active_key)

    async def get_subscription(self, subscription_id: str) -> SubscriptionRecord | None:
        raw = await self._client.hget(self._subscriptions_key, subscription_id)
        return None if raw is None else msgspec.json.decode(raw, type=SubscriptionRecord)

    async def list_subscriptions(
        self,
        *,
        state: SubscriptionState | None = None,
        consumer: str | None = None,
        product: str | None = None,
    ) -> list[SubscriptionRecord]:
        raw = await self._client.hgetall(self._subscriptions_key)
        return _by_creation(
            [
                record
                for record in _decode_all(raw, SubscriptionRecord)
                if (state is None or record.state == state)
                and (consumer is None or record.consumer == consumer)
                and (product is None or record.product == product)
            ]
        )

    async def transition_subscription(
        self, subscription_id: str, to_state: SubscriptionState, *, actor: str, reason: str | None = None
    ) -> SubscriptionRecord:
        now = self._clock()

        async def plan(pipe: Any) -> tuple[SubscriptionRecord, list[Command]]:
            raw = await pipe.hget(self._subscriptions_key, subscription_id)
            if raw is None:
                raise NotFoundError(f'no subscription with id "{subscription_id}"')
            current = msgspec.json.decode(raw, type=SubscriptionRecord)
            check_transition(current, to_state)
            record = msgspec.structs.replace(
                current, state=to_state, updated_at=now, decided_by=actor, reason=reason
            )
            writes: list[Command] = [("HSET", self._subscriptions_key, subscription_id, _encode(record))]
            if to_state not in ACTIVE_STATES:
                writes.append(("HDEL", self._active_key, _pair(record.consumer, record.product)))
            return record, writes

        return await self._transact(plan, self._subscriptions_key, self._active_key)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _pair(consumer: str, product: str) -> bytes:
    return _encode([consumer, product])


def _decode_all(raw: Mapping[Any, bytes | str], record_type: type[T]) -> list[T]:
    return [msgspec.json.decode(value, type=record_type) for value in raw.values()]


def _by_creation(records: list[T]) -> list[T]:
    # The same order as the SQLite store: creation time, then id.
    return sorted(records, key=lambda record: (getattr(record, "created_at"), getattr(record, "id")))  # noqa: B009
