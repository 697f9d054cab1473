"""Subscriptions to API products: the approval workflow and the snapshot workers enforce.

Routes belong to a product (``route.product = "billing"``); a product's policy is
``subscription = "open"`` (anyone authenticated may call) or ``"approval"`` (a consumer needs an
approved subscription). The workflow on the admin side:

    request -> pending -> approved | rejected;  approved -> revoked

Workers never ask the store per request: they hold a SubscriptionSnapshot (a dict of effective
states) that `refresh_from` replaces whole whenever the store's version changes.
"""

from __future__ import annotations

import enum
from collections.abc import Awaitable, Callable, Iterable, Mapping

from gateway.store.base import (
    ACTIVE_STATES,
    NotFoundError,
    StateStore,
    StoreSnapshot,
    SubscriptionRecord,
    SubscriptionState,
)

__all__ = [
    "ProductPolicy",
    "SubscriptionSnapshot",
    "SubscriptionWorkflow",
    "UnknownProductError",
    "denial_message",
    "effective_states",
]


class ProductPolicy(enum.StrEnum):
    OPEN = "open"
    APPROVAL = "approval"


class UnknownProductError(NotFoundError):
    """A subscription names a product the config does not declare."""


def effective_states(records: Iterable[SubscriptionRecord]) -> dict[tuple[str, str], SubscriptionState]:
    """(consumer, product) -> the state that decides access.

    The pending or approved subscription when there is one (there is at most one); otherwise
    the most recently decided one, so a caller can be told "rejected" or "revoked".
    """
    chosen: dict[tuple[str, str], SubscriptionRecord] = {}
    for record in records:
        pair = (record.consumer, record.product)
        current = chosen.get(pair)
        if current is None or _outranks(record, current):
            chosen[pair] = record
    return {pair: record.state for pair, record in chosen.items()}


def _outranks(candidate: SubscriptionRecord, current: SubscriptionRecord) -> bool:
    candidate_active = candidate.state in ACTIVE_STATES
    current_active = current.state in ACTIVE_STATES
    if candidate_active != current_active:
        return candidate_active
    return (candidate.updated_at, candidate.id) > (current.updated_at, current.id)


class SubscriptionSnapshot:
    """Effective subscription states as of one store version; read per request, replaced whole."""

    __slots__ = ("_states", "version")

    def __init__(
        self, states: Mapping[tuple[str, str], SubscriptionState] | None = None, version: int = -1
    ) -> None:
        self._states: Mapping[tuple[str, str], SubscriptionState] = dict(states or {})
        self.version = version

    def state(self, consumer: str, product: str) -> SubscriptionState | None:
        return self._states.get((consumer, product))

    def is_approved(self, consumer: str, product: str) -> bool:
        return self._states.get((consumer, product)) is SubscriptionState.APPROVED

    def replace(self, records: Iterable[SubscriptionRecord], version: int) -> None:
        # Build first, then swap one reference: a request never sees half a refresh.
        self._states = effective_states(records)
        self.version = version

    def refresh_from(self, snapshot: StoreSnapshot) -> bool:
        """Adopt a store snapshot's subscriptions unless this one is already at that version."""
        if snapshot.version == self.version:
            return False
        self.replace(snapshot.subscriptions, snapshot.version)
        return True

    def __len__(self) -> int:
        return len(self._states)


class SubscriptionWorkflow:
    """Requests and decisions, checked against the configured products and known consumers.

    `products` is read on every call (the config may be reloaded); `consumer_exists` covers
    consumers of the store and of the config file.
    """

    def __init__(
        self,
        store: StateStore,
        *,
        products: Callable[[], Mapping[str, ProductPolicy]],
        consumer_exists: Callable[[str], Awaitable[bool]],
    ) -> None:
        self._store = store
        self._products = products
        self._consumer_exists = consumer_exists

    async def request(
        self, consumer: str, product: str, *, actor: str, reason: str | None = None
    ) -> SubscriptionRecord:
        """A new subscription: pending for an "approval" product, approved at once for an "open" one."""
        policy = self._products().get(product)
        if policy is None:
            known = ", ".join(f'"{name}"' for name in sorted(self._products())) or "none"
            raise UnknownProductError(f'no product named "{product}" (configured: {known})')
        if not await self._consumer_exists(consumer):
            raise NotFoundError(f'no consumer named "{consumer}"')
        state = SubscriptionState.PENDING if policy is ProductPolicy.APPROVAL else SubscriptionState.APPROVED
        return await self._store.create_subscription(
            consumer, product, requested_by=actor, reason=reason, state=state
        )

    async def approve(
        self, subscription_id: str, *, actor: str, reason: str | None = None
    ) -> SubscriptionRecord:
        return await self._store.transition_subscription(
            subscription_id, SubscriptionState.APPROVED, actor=actor, reason=reason
        )

    async def reject(
        self, subscription_id: str, *, actor: str, reason: str | None = None
    ) -> SubscriptionRecord:
        return await self._store.transition_subscription(
            subscription_id, SubscriptionState.REJECTED, actor=actor, reason=reason
        )

    async def revoke(
        self, subscription_id: str, *, actor: str, reason: str | None = None
    ) -> SubscriptionRecord:
        return await self._store.transition_subscription(
            subscription_id, SubscriptionState.REVOKED, actor=actor, reason=reason
        )


def denial_message(consumer: str, product: str, state: SubscriptionState | None) -> str:
    """What a caller without an approved subscription is told (403 subscription_required)."""
    if state is SubscriptionState.PENDING:
        return f'the subscription of consumer "{consumer}" to product "{product}" is pending approval'
    if state is SubscriptionState.REJECTED:
        return f'the subscription of consumer "{consumer}" to product "{product}" was rejected'
    if state is SubscriptionState.REVOKED:
        return f'the subscription of consumer "{consumer}" to product "{product}" was revoked'
    return f'consumer "{consumer}" has no approved subscription to product "{product}"'
