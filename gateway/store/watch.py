"""Follow a state store from a worker: poll its version, re-read a snapshot when it changed.

A worker calls `follow_store` once as a task; `on_change` gets every new snapshot (the first
one at once). A store that fails is logged and retried on the next tick while the worker keeps
serving from the last snapshot it had.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from gateway.logs import log

from .base import StateStore, StoreSnapshot

__all__ = ["consumer_tables", "follow_store", "poll_once"]


async def poll_once(
    store: StateStore, on_change: Callable[[StoreSnapshot], None], last_version: int | None
) -> int | None:
    """One tick: returns the version now applied (unchanged when the store did not move)."""
    version = await store.version()
    if version == last_version:
        return last_version
    snapshot = await store.snapshot()
    on_change(snapshot)
    return snapshot.version


async def follow_store(
    store: StateStore, on_change: Callable[[StoreSnapshot], None], *, interval: float = 1.0
) -> None:
    """Poll forever (cancel the task to stop)."""
    last_version: int | None = None
    failing = False
    while True:
        try:
            last_version = await poll_once(store, on_change, last_version)
            if failing:
                log("info", "state store reachable again", version=last_version)
                failing = False
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            # Report a failure once per outage, not once per tick.
            if not failing:
                log("error", "state store poll failed", error=f"{type(exc).__name__}: {exc}")
                failing = True
        await asyncio.sleep(interval)


def consumer_tables(snapshot: StoreSnapshot) -> dict[str, dict[str, Any]]:
    """The snapshot's consumers in the shape of `[consumers.NAME]` tables.

    Keys appear as "sha256:<hex>" (the store has no key in clear) and basic-auth passwords as
    their hashes, so the result feeds the same code that loads consumers from the config file
    (gateway.consumers.ConsumerRegistry.add).
    """
    tables: dict[str, dict[str, Any]] = {
        consumer.name: {
            "keys": [],
            "basic_auth": [],
            "jwt_subjects": [],
            "groups": list(consumer.groups),
            "metadata": dict(consumer.metadata),
        }
        for consumer in snapshot.consumers
    }
    for key in snapshot.api_keys:
        if key.consumer in tables:
            tables[key.consumer]["keys"].append(f"sha256:{key.key_sha256}")
    for basic in snapshot.basic_auth:
        if basic.consumer in tables:
            tables[basic.consumer]["basic_auth"].append(
                {"username": basic.username, "password": basic.password_hash}
            )
    for subject in snapshot.jwt_subjects:
        if subject.consumer in tables:
            tables[subject.consumer]["jwt_subjects"].append(subject.subject)
    return tables
