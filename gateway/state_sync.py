"""Per-worker view of the shared state store: consumers and subscriptions, kept in sync.

Each worker opens the store after the fork, follows its version counter (a cheap poll once a
second) and, when it moves, refreshes the subscription snapshot and the consumers created
through the admin API, in place, so plugins holding these objects see the change. Consumers
declared in the config file are never touched here.
"""

from __future__ import annotations

import asyncio
from typing import Any

from gateway.config import Config
from gateway.consumers import ConsumerError, ConsumerRegistry
from gateway.logs import log
from gateway.store.base import StateStore, StoreSnapshot
from gateway.store.watch import consumer_tables, follow_store
from gateway.subscriptions import SubscriptionSnapshot
from gateway.tasks import cancel_and_wait

__all__ = ["StateSync", "needs_store", "open_store"]


def needs_store(config: Config) -> bool:
    """Whether this config uses shared state (an admin API, approval products, or Redis)."""
    return (
        config.admin is not None
        or config.store.redis is not None
        or any(product.subscription == "approval" for product in config.products.values())
    )


def open_store(config: Config) -> StateStore:
    """The configured store; call after the fork (a SQLite store owns a thread)."""
    if config.store.redis is not None:
        from gateway.store.redis_state import RedisStateStore

        return RedisStateStore.from_url(config.store.redis)
    from gateway.store.embedded import SQLiteStore

    return SQLiteStore(config.store.path)


class StateSync:
    """Follows one store for one worker; `version` counts the changes applied."""

    def __init__(
        self, store: StateStore, consumers: ConsumerRegistry, subscriptions: SubscriptionSnapshot
    ) -> None:
        self.store = store
        self.consumers = consumers
        self.subscriptions = subscriptions
        self.version = 0
        self._from_store: set[str] = set()
        self._task: asyncio.Task[None] | None = None

    def start(self, loop: asyncio.AbstractEventLoop, interval: float = 1.0) -> None:
        self._task = loop.create_task(follow_store(self.store, self.apply, interval=interval))

    async def close(self) -> None:
        if self._task is not None:
            await cancel_and_wait(self._task)
        await self.store.close()

    def apply(self, snapshot: StoreSnapshot) -> None:
        self.subscriptions.refresh_from(snapshot)
        tables: dict[str, dict[str, Any]] = consumer_tables(snapshot)
        for name in self._from_store - tables.keys():
            self.consumers.remove(name)
        for name, table in tables.items():
            try:
                self.consumers.add(name, table, replace=True)
            except ConsumerError as exc:
                log("warning", "stored consumer not loaded", consumer=name, error=str(exc))
                continue
        self._from_store = set(tables)
        self.version += 1
