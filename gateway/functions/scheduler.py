"""Fire scheduled triggers once per occurrence across every worker and every gateway node.

Each worker runs one `Scheduler` task over the same jobs. At an occurrence every worker wakes up
and tries to *claim* it, ``(job key, fire time)``, in a store they all share; the one whose claim
succeeds calls the fire callback, the others do nothing:

- `RedisClaims` (``[store] redis`` set, several nodes): ``SET <prefix>schedule_claims:<key>:<ms>
  <node> NX PX <retention>``; Redis answers exactly one SET NX per key with OK.
- `SQLiteClaims` (embedded, one machine, several worker processes): ``INSERT OR IGNORE`` into a
  table whose primary key is (schedule, fire_time); exactly one insert adds the row.
- `LocalClaims`: in memory, for a single process.

Occurrences come from `Schedule.next_fire`, a pure function of the expression, so every node
computes the same instants without coordination (rates are aligned to the Unix epoch).

Missed occurrences. When a node starts, or wakes late (a blocked loop, a suspended host), it
does not replay every occurrence it missed: only the most recent one, and only if it is at most
`grace` old (default 5 minutes). So after all nodes were down from 01:58 to 02:03, a daily
``cron(0 2 * * ? *)`` fires once at 02:03; after a day down, ``rate(5 minutes)`` fires once,
for the latest occurrence, then keeps its period. A node that starts while others are running
tries the latest occurrence too, finds it claimed, and does nothing. The same rule makes a
schedule added to the config fire at once if an occurrence fell within the last `grace`.

Claims must outlive `grace` plus the clocks' disagreement between nodes, or a late node could
claim an occurrence again after its first claim expired: the claim stores keep claims for
`retention` (default 1 hour) and the Scheduler refuses a retention that is not longer than its
grace. If the claim store cannot be reached, the occurrence stays pending and is retried every
`retry_delay` until it is older than `grace` (then it is dropped, with a warning): an
occurrence is fired at most once, never twice.

At most once, not exactly once: a node that dies between its claim and the callback loses that
occurrence. The callback should therefore only hand the event on, durably (the async-invocation
queue), and may use the event's id, a UUID derived from (key, fire time), as an idempotency key.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import sqlite3
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from os import PathLike
from typing import Protocol

import redis.asyncio as redis_asyncio

from gateway.sqlite_db import SQLiteDatabase
from gateway.tasks import cancel_and_wait

from .events import DEFAULT_ORIGIN, EventOrigin, ScheduleEvent, build_schedule_event
from .schedule import Schedule

__all__ = [
    "DEFAULT_GRACE",
    "DEFAULT_RETENTION",
    "ClaimStore",
    "FireCallback",
    "Firing",
    "LocalClaims",
    "RedisClaims",
    "SQLiteClaims",
    "ScheduledJob",
    "Scheduler",
    "default_node_id",
    "firing_event",
]

logger = logging.getLogger("lambdagate.functions.scheduler")


DEFAULT_GRACE = timedelta(minutes=5)
DEFAULT_RETENTION = timedelta(hours=1)
_ONE_MICROSECOND = timedelta(microseconds=1)


@dataclass(frozen=True)
class ScheduledJob:
    """One schedule trigger. `key` names it across nodes and restarts: claims are per (key, time)."""

    key: str
    schedule: Schedule
    function: str = ""  # handed to the callback with the firing


@dataclass(frozen=True)
class Firing:
    """One occurrence that this node won and fires."""

    job: ScheduledJob
    fire_time: datetime  # the occurrence (UTC), not the moment it ran
    fired_at: datetime  # when this node claimed it (late after a restart within the grace)
    node: str

    @property
    def event_id(self) -> str:
        """The same UUID on every node for the same occurrence (usable as an idempotency key)."""
        fire_ms = _epoch_ms(self.fire_time)
        return str(uuid.uuid5(uuid.NAMESPACE_URL, f"lambdagate:schedule:{self.job.key}:{fire_ms}"))


FireCallback = Callable[[Firing], Awaitable[None]]


def default_node_id() -> str:
    """host:pid:random, to tell claimers apart in the store (debugging only)."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def _epoch_ms(moment: datetime) -> int:
    delta = moment - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86_400 + delta.seconds) * 1000 + delta.microseconds // 1000


def _utc_now() -> datetime:
    return datetime.now(UTC)


# --- the event ---------------------------------------------------------------------------------------


def firing_event(
    firing: Firing, *, origin: EventOrigin = DEFAULT_ORIGIN, group: str = "default"
) -> ScheduleEvent:
    """The EventBridge Scheduler event for a firing; its id is the occurrence's stable event_id."""
    return build_schedule_event(
        schedule=firing.job.key,
        fire_time_s=int(firing.fire_time.timestamp()),
        origin=origin,
        event_id=firing.event_id,
        group=group,
    )


# --- claim stores ------------------------------------------------------------------------------------


class ClaimStore(Protocol):
    """Where workers race for an occurrence; claim() is True for exactly one caller per (key, time)."""

    @property
    def retention(self) -> timedelta: ...

    async def claim(self, key: str, fire_time: datetime, node: str) -> bool: ...

    async def close(self) -> None: ...


class LocalClaims:
    """Claims in this process's memory: enough when one worker is the only scheduler."""

    def __init__(self, *, retention: timedelta = DEFAULT_RETENTION) -> None:
        self._retention = retention
        self._claimed: dict[tuple[str, int], float] = {}

    @property
    def retention(self) -> timedelta:
        return self._retention

    async def claim(self, key: str, fire_time: datetime, node: str) -> bool:
        now = time.time()
        horizon = now - self._retention.total_seconds()
        for stale in [slot for slot, at in self._claimed.items() if at < horizon]:
            del self._claimed[stale]
        slot = (key, _epoch_ms(fire_time))
        if slot in self._claimed:
            return False
        self._claimed[slot] = now
        return True

    async def close(self) -> None:
        self._claimed.clear()


class RedisClaims:
    """Claims as Redis keys set with NX and a TTL of `retention`: one winner per key, cluster-wide."""

    def __init__(
        self,
        client: redis_asyncio.Redis,
        *,
        prefix: str = "lambdagate:",
        retention: timedelta = DEFAULT_RETENTION,
        owns_client: bool = False,
    ) -> None:
        self._client = client
        self._prefix = prefix
        self._retention = retention
        self._retention_ms = max(1, int(retention.total_seconds() * 1000))
        self._owns_client = owns_client

    @classmethod
    def from_url(
        cls, url: str, *, prefix: str = "lambdagate:", retention: timedelta = DEFAULT_RETENTION
    ) -> RedisClaims:
        # Timeouts: a claim must not hang the scheduling loop on a half-dead connection.
        client = redis_asyncio.Redis.from_url(url, socket_timeout=5.0, socket_connect_timeout=5.0)
        return cls(client, prefix=prefix, retention=retention, owns_client=True)

    @property
    def retention(self) -> timedelta:
        return self._retention

    def claim_key(self, key: str, fire_time: datetime) -> str:
        return f"{self._prefix}schedule_claims:{key}:{_epoch_ms(fire_time)}"

    async def claim(self, key: str, fire_time: datetime, node: str) -> bool:
        won = await self._client.set(self.claim_key(key, fire_time), node, nx=True, px=self._retention_ms)
        return bool(won)

    async def close(self) -> None:
        if self._owns_client:
            await self._client.aclose()


_CLAIMS_TABLE = """
CREATE TABLE IF NOT EXISTS schedule_claims (
    schedule TEXT NOT NULL,
    fire_time INTEGER NOT NULL,   -- epoch milliseconds of the occurrence
    node TEXT NOT NULL,
    claimed_at REAL NOT NULL,
    PRIMARY KEY (schedule, fire_time)
) WITHOUT ROWID
"""


class SQLiteClaims:
    """Claims as rows of a table keyed by (schedule, fire_time) in a SQLite file shared by workers.

    Rows older than `retention` are deleted by the claims themselves, so the table stays as small
    as the schedules' recent past.
    """

    def __init__(self, path: str | PathLike[str], *, retention: timedelta = DEFAULT_RETENTION) -> None:
        self.path = str(path)
        self._retention = retention
        self._db = SQLiteDatabase(path, _CLAIMS_TABLE, synchronous="NORMAL", name="claim store")

    @property
    def retention(self) -> timedelta:
        return self._retention

    async def claim(self, key: str, fire_time: datetime, node: str) -> bool:
        fire_ms = _epoch_ms(fire_time)
        horizon_ms = _epoch_ms(_utc_now() - self._retention)

        def insert(connection: sqlite3.Connection) -> bool:
            connection.execute("DELETE FROM schedule_claims WHERE fire_time < ?", (horizon_ms,))
            inserted = connection.execute(
                "INSERT OR IGNORE INTO schedule_claims (schedule, fire_time, node, claimed_at)"
                " VALUES (?, ?, ?, ?)",
                (key, fire_ms, node, time.time()),
            ).rowcount
            return bool(inserted == 1)

        return await self._db.write(insert)

    async def close(self) -> None:
        await self._db.close()


# --- the scheduler -----------------------------------------------------------------------------------


@dataclass
class _JobState:
    job: ScheduledJob
    pending: datetime | None  # the next occurrence this node has not dealt with yet
    retry_at: datetime | None = None  # set after the claim store failed


class Scheduler:
    """One worker's scheduling task; see the module docstring for the rules it keeps."""

    def __init__(
        self,
        jobs: Iterable[ScheduledJob],
        fire: FireCallback,
        claims: ClaimStore,
        *,
        grace: timedelta = DEFAULT_GRACE,
        node: str | None = None,
        clock: Callable[[], datetime] = _utc_now,
        retry_delay: timedelta = timedelta(seconds=1),
        max_sleep: float = 30.0,
    ) -> None:
        if claims.retention <= grace:
            raise ValueError(
                f"claims must be kept longer than the grace period ({claims.retention} <= {grace}),"
                " or an occurrence could be claimed twice"
            )
        self.node = node if node is not None else default_node_id()
        self._jobs = _unique(jobs)
        self._fire = fire
        self._claims = claims
        self._grace = grace
        self._clock = clock
        self._retry_delay = retry_delay
        # Sleeps are capped so a wall-clock step (NTP, a resumed VM) is noticed within this long.
        self._max_sleep = max_sleep
        self._states: dict[str, _JobState] = {}
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._firings: set[asyncio.Task[None]] = set()

    @property
    def jobs(self) -> tuple[ScheduledJob, ...]:
        return tuple(self._jobs.values())

    def start(self) -> None:
        """Run the scheduling loop as a task on the running event loop."""
        if self._task is not None:
            raise RuntimeError("the scheduler is already running")
        self._stopping = False
        self._task = asyncio.get_running_loop().create_task(self.run(), name="lambdagate-scheduler")

    async def stop(self, timeout: float = 5.0) -> None:
        """Stop scheduling; wait up to `timeout` seconds for callbacks in flight, then cancel them."""
        task, self._task = self._task, None
        if task is not None:
            self._stopping = True
            self._wakeup.set()
            # Let a claim in flight finish and its firing start: cancelled midway, an occurrence
            # could stay claimed in the store (so no other node fires it) and never fire here.
            await asyncio.wait({task}, timeout=timeout)
            await cancel_and_wait(task)
        if self._firings:
            _, late = await asyncio.wait(self._firings, timeout=timeout)
            for firing in late:
                firing.cancel()
            if late:
                await asyncio.wait(late)

    def replace_jobs(self, jobs: Iterable[ScheduledJob]) -> None:
        """Swap the job set (a config reload). Unchanged jobs keep their place; new ones start at
        their next occurrence (this node was up, so there is nothing to catch up on)."""
        self._jobs = _unique(jobs)
        if self._task is None:
            return
        now = self._clock()
        kept: dict[str, _JobState] = {}
        for key, job in self._jobs.items():
            state = self._states.get(key)
            if state is not None and state.job.schedule.expression == job.schedule.expression:
                state.job = job
                kept[key] = state
            else:
                kept[key] = _JobState(job, job.schedule.next_fire(now))
        self._states = kept
        self._wakeup.set()

    async def run(self) -> None:
        """The loop: sleep until the next occurrence of any job, claim it, fire it if won."""
        now = self._clock()
        self._states = {key: _JobState(job, self._due(job.schedule, now)) for key, job in self._jobs.items()}
        while not self._stopping:
            self._wakeup.clear()
            now = self._clock()
            for state in list(self._states.values()):
                if self._stopping:
                    return
                await self._handle(state, now)
            wakes = [wake for state in self._states.values() if (wake := _wake_time(state)) is not None]
            delay = self._max_sleep
            if wakes:
                delay = min(delay, max(0.0, (min(wakes) - self._clock()).total_seconds()))
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self._wakeup.wait()

    def _due(self, schedule: Schedule, now: datetime) -> datetime | None:
        """The most recent occurrence in [now - grace, now], else the first one after now."""
        candidate = schedule.next_fire(now - self._grace - _ONE_MICROSECOND)
        if candidate is None or candidate > now:
            return candidate
        while (following := schedule.next_fire(candidate)) is not None and following <= now:
            candidate = following
        return candidate

    async def _handle(self, state: _JobState, now: datetime) -> None:
        occurrence = state.pending
        if occurrence is None or occurrence > now:
            return
        if state.retry_at is not None and state.retry_at > now:
            return
        schedule = state.job.schedule
        following = schedule.next_fire(occurrence)
        if now - occurrence > self._grace or (following is not None and following <= now):
            # Late (a restart, a blocked loop, a store outage): only the latest occurrence counts.
            latest = self._due(schedule, now)
            if latest is None or latest > now:
                logger.warning(
                    "schedule %s: occurrence %s is more than %s old, skipped",
                    state.job.key,
                    occurrence.isoformat(),
                    self._grace,
                )
                state.pending, state.retry_at = latest, None
                return
            if latest != occurrence:
                logger.info("schedule %s: skipped to the latest occurrence %s", state.job.key, latest)
            occurrence = latest
        try:
            won = await self._claims.claim(state.job.key, occurrence, self.node)
        except Exception as exc:  # the store is down: keep the occurrence and try again shortly
            logger.warning("schedule %s: cannot claim %s (%s), retrying", state.job.key, occurrence, exc)
            state.pending, state.retry_at = occurrence, now + self._retry_delay
            return
        state.pending, state.retry_at = schedule.next_fire(occurrence), None
        if won:
            firing = Firing(job=state.job, fire_time=occurrence, fired_at=now, node=self.node)
            task = asyncio.get_running_loop().create_task(self._run_callback(firing))
            self._firings.add(task)
            task.add_done_callback(self._firings.discard)

    async def _run_callback(self, firing: Firing) -> None:
        try:
            await self._fire(firing)
        except Exception:
            logger.exception("schedule %s: the callback for %s failed", firing.job.key, firing.fire_time)


def _wake_time(state: _JobState) -> datetime | None:
    if state.pending is None:
        return None
    if state.retry_at is not None and state.retry_at > state.pending:
        return state.retry_at
    return state.pending


def _unique(jobs: Iterable[ScheduledJob]) -> dict[str, ScheduledJob]:
    by_key: dict[str, ScheduledJob] = {}
    for job in jobs:
        if job.key in by_key:
            raise ValueError(f'two scheduled jobs share the key "{job.key}"')
        by_key[job.key] = job
    return by_key
