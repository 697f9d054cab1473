"""The state store's interface: consumers, their credentials, subscriptions, and a version counter.

Two backends implement it with the same behaviour (tests run one suite against both):
SQLiteStore (gateway/store/embedded.py, the default) and RedisStateStore
(gateway/store/redis_state.py, when `[store] redis` is set).

Secrets never reach the store in clear: API keys arrive as sha256 hex digests (hash_api_key),
basic-auth passwords as bcrypt or argon2 hashes. Every write bumps one version counter in the
same transaction, so a worker that polls `version()` and re-reads `snapshot()` when it changed
sees each change exactly once and never half of one.
"""

from __future__ import annotations

import enum
import hashlib
import re
import uuid
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from typing import Protocol, TypeVar

import msgspec

__all__ = [
    "ACTIVE_STATES",
    "ALLOWED_TRANSITIONS",
    "ApiKeyRecord",
    "BasicAuthRecord",
    "ConflictError",
    "ConsumerRecord",
    "InvalidTransitionError",
    "JwtSubjectRecord",
    "NotFoundError",
    "StateStore",
    "StoreError",
    "StoreSnapshot",
    "SubscriptionRecord",
    "SubscriptionState",
    "check_key_hash",
    "check_name",
    "check_transition",
    "hash_api_key",
    "new_id",
]


class SubscriptionState(enum.StrEnum):
    PENDING = "pending"
    APPROVED = "approved"
    REJECTED = "rejected"
    REVOKED = "revoked"


# At most one subscription per (consumer, product) is in one of these states at a time; a rejected
# or revoked one is history, and the consumer may ask again.
ACTIVE_STATES: frozenset[SubscriptionState] = frozenset(
    {SubscriptionState.PENDING, SubscriptionState.APPROVED}
)

# to-state -> the states it may be reached from
ALLOWED_TRANSITIONS: Mapping[SubscriptionState, frozenset[SubscriptionState]] = {
    SubscriptionState.APPROVED: frozenset({SubscriptionState.PENDING}),
    SubscriptionState.REJECTED: frozenset({SubscriptionState.PENDING}),
    SubscriptionState.REVOKED: frozenset({SubscriptionState.APPROVED}),
}


class StoreError(Exception):
    """Base of the store's errors."""


class NotFoundError(StoreError):
    """The named consumer, credential or subscription does not exist."""


class ConflictError(StoreError):
    """The change collides with existing state (a duplicate name, key, username, subscription)."""


class InvalidTransitionError(ConflictError):
    """A subscription cannot move from its current state to the one asked for."""


class ConsumerRecord(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    groups: tuple[str, ...] = ()
    metadata: dict[str, str] = msgspec.field(default_factory=dict)
    created_at: float
    updated_at: float


class ApiKeyRecord(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    consumer: str
    key_sha256: str  # lowercase hex digest of the key; the key itself is never stored
    created_at: float


class BasicAuthRecord(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    consumer: str
    username: str
    password_hash: str  # bcrypt ($2b$...) or argon2 ($argon2id$...)
    created_at: float


class JwtSubjectRecord(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    consumer: str
    subject: str
    created_at: float


class SubscriptionRecord(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    consumer: str
    product: str
    state: SubscriptionState
    created_at: float
    updated_at: float
    requested_by: str
    decided_by: str | None = None  # who approved, rejected or revoked it
    reason: str | None = None  # why (given with the request or the decision)


class StoreSnapshot(msgspec.Struct, frozen=True, kw_only=True):
    """Everything a worker needs, read consistently at one version."""

    version: int
    consumers: tuple[ConsumerRecord, ...]
    api_keys: tuple[ApiKeyRecord, ...]
    basic_auth: tuple[BasicAuthRecord, ...]
    jwt_subjects: tuple[JwtSubjectRecord, ...]
    subscriptions: tuple[SubscriptionRecord, ...]


class StateStore(Protocol):
    """The async store interface shared by the SQLite and Redis backends.

    Reads of a missing consumer return None / False; writes that need one raise NotFoundError.
    Deleting a consumer deletes its credentials and subscriptions.
    """

    async def version(self) -> int:
        """A counter that grows with every change; cheap enough to poll every second."""
        ...

    async def snapshot(self) -> StoreSnapshot: ...

    # consumers
    async def create_consumer(
        self, name: str, *, groups: Sequence[str] = (), metadata: Mapping[str, str] | None = None
    ) -> ConsumerRecord: ...

    async def get_consumer(self, name: str) -> ConsumerRecord | None: ...

    async def list_consumers(self) -> list[ConsumerRecord]: ...

    async def update_consumer(
        self, name: str, *, groups: Sequence[str] | None = None, metadata: Mapping[str, str] | None = None
    ) -> ConsumerRecord: ...

    async def delete_consumer(self, name: str) -> bool: ...

    # credentials
    async def add_api_key(self, consumer: str, key_sha256: str) -> ApiKeyRecord: ...

    async def list_api_keys(self, consumer: str) -> list[ApiKeyRecord]: ...

    async def delete_api_key(self, consumer: str, key_id: str) -> bool: ...

    async def add_basic_auth(self, consumer: str, username: str, password_hash: str) -> BasicAuthRecord: ...

    async def list_basic_auth(self, consumer: str) -> list[BasicAuthRecord]: ...

    async def delete_basic_auth(self, consumer: str, credential_id: str) -> bool: ...

    async def add_jwt_subject(self, consumer: str, subject: str) -> JwtSubjectRecord: ...

    async def list_jwt_subjects(self, consumer: str) -> list[JwtSubjectRecord]: ...

    async def delete_jwt_subject(self, consumer: str, credential_id: str) -> bool: ...

    # subscriptions
    async def create_subscription(
        self,
        consumer: str,
        product: str,
        *,
        requested_by: str,
        reason: str | None = None,
        state: SubscriptionState = SubscriptionState.PENDING,
    ) -> SubscriptionRecord:
        """A new subscription; ConflictError while the pair has a pending or approved one."""
        ...

    async def get_subscription(self, subscription_id: str) -> SubscriptionRecord | None: ...

    async def list_subscriptions(
        self,
        *,
        state: SubscriptionState | None = None,
        consumer: str | None = None,
        product: str | None = None,
    ) -> list[SubscriptionRecord]: ...

    async def transition_subscription(
        self, subscription_id: str, to_state: SubscriptionState, *, actor: str, reason: str | None = None
    ) -> SubscriptionRecord:
        """Move along ALLOWED_TRANSITIONS; NotFoundError, or InvalidTransitionError naming both states."""
        ...

    async def close(self) -> None: ...


def hash_api_key(key: str) -> str:
    """The form an API key is stored and looked up in: the sha256 hex digest of its UTF-8 bytes."""
    return hashlib.sha256(key.encode()).hexdigest()


def new_id() -> str:
    return uuid.uuid4().hex


# The same alphabet as consumer names in the config file (gateway.consumers).
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._~-]{0,127}")


def check_name(kind: str, value: str) -> str:
    """Consumer names travel in headers (X-Consumer-Id) and URLs: keep them to a safe alphabet."""
    if not _NAME.fullmatch(value):
        raise ValueError(
            f"invalid {kind} {value!r}: use 1-128 letters, digits and . _ ~ -"
            " (starting with a letter or digit)"
        )
    return value


def check_transition(record: SubscriptionRecord, to_state: SubscriptionState) -> None:
    if record.state not in ALLOWED_TRANSITIONS[to_state]:
        allowed = " or ".join(sorted(ALLOWED_TRANSITIONS[to_state]))
        raise InvalidTransitionError(
            f"subscription {record.id} is {record.state}; only a {allowed} subscription can become {to_state}"
        )


_SHA256_HEX = re.compile(r"[0-9a-f]{64}")


def check_key_hash(key_sha256: str) -> str:
    if not _SHA256_HEX.fullmatch(key_sha256):
        raise ValueError("an API key is stored as its sha256 digest: 64 lowercase hex digits")
    return key_sha256


Credential = TypeVar("Credential", ApiKeyRecord, BasicAuthRecord, JwtSubjectRecord)


class CredentialMethods(ABC):
    """The credential operations of a StateStore, the same on every backend: each backend
    supplies how one credential record is added, listed and deleted."""

    _clock: Callable[[], float]

    async def add_api_key(self, consumer: str, key_sha256: str) -> ApiKeyRecord:
        check_key_hash(key_sha256)
        record = ApiKeyRecord(id=new_id(), consumer=consumer, key_sha256=key_sha256, created_at=self._clock())
        return await self._add_credential(record, "this API key is already registered")

    async def list_api_keys(self, consumer: str) -> list[ApiKeyRecord]:
        return await self._list_credentials(ApiKeyRecord, consumer)

    async def delete_api_key(self, consumer: str, key_id: str) -> bool:
        return await self._delete_credential(ApiKeyRecord, consumer, key_id)

    async def add_basic_auth(self, consumer: str, username: str, password_hash: str) -> BasicAuthRecord:
        record = BasicAuthRecord(
            id=new_id(),
            consumer=consumer,
            username=username,
            password_hash=password_hash,
            created_at=self._clock(),
        )
        return await self._add_credential(record, f'basic-auth username "{username}" is already taken')

    async def list_basic_auth(self, consumer: str) -> list[BasicAuthRecord]:
        return await self._list_credentials(BasicAuthRecord, consumer)

    async def delete_basic_auth(self, consumer: str, credential_id: str) -> bool:
        return await self._delete_credential(BasicAuthRecord, consumer, credential_id)

    async def add_jwt_subject(self, consumer: str, subject: str) -> JwtSubjectRecord:
        record = JwtSubjectRecord(id=new_id(), consumer=consumer, subject=subject, created_at=self._clock())
        return await self._add_credential(record, f'JWT subject "{subject}" already belongs to a consumer')

    async def list_jwt_subjects(self, consumer: str) -> list[JwtSubjectRecord]:
        return await self._list_credentials(JwtSubjectRecord, consumer)

    async def delete_jwt_subject(self, consumer: str, credential_id: str) -> bool:
        return await self._delete_credential(JwtSubjectRecord, consumer, credential_id)

    @abstractmethod
    async def _add_credential(self, record: Credential, duplicate_message: str) -> Credential:
        """Store `record` (its consumer must exist); ConflictError(duplicate_message) if its
        unique value (key hash, username, subject) is taken."""

    @abstractmethod
    async def _list_credentials(self, kind: type[Credential], consumer: str) -> list[Credential]:
        """The consumer's records of `kind`, oldest first; NotFoundError for no such consumer."""

    @abstractmethod
    async def _delete_credential(self, kind: type[Credential], consumer: str, credential_id: str) -> bool:
        """Delete one record of `kind` of the consumer; False if there was none."""
