"""Durable queues for asynchronous work: ``Event`` invocations and ``[[triggers]] queue = ...``.

Two backends behind one interface, `DurableQueue`:

- `gateway.functions.queue_sqlite.SQLiteQueue`: embedded, one SQLite file in WAL mode; a message
  is on disk before ``enqueue`` returns, so it survives a restart or ``kill -9``.
- `gateway.functions.queue_redis.RedisQueue`: Redis Streams with one consumer group per queue,
  so any gateway node can take any message; messages of a consumer that died are taken over
  (XAUTOCLAIM) once their visibility timeout has passed.

Delivery is at least once, SQS-style. ``claim`` hides a message from other consumers for a
visibility timeout and counts the delivery (``receive_count``). The consumer then settles it
with exactly one of ``ack`` (done: deleted), ``retry`` (visible again after a delay) or
``dead_letter`` (moved to the queue's dead-letter list with the error and the attempt count).
A consumer that dies without settling leaves the message to reappear after the timeout. Every
settle names the delivery by its ``receipt``: a consumer whose timeout expired (so the message
went to someone else) settles nothing and gets False.

Dead letters are listed with ``dead_letters`` and moved back with ``redrive``: a redriven
message starts afresh (receive and failure counts 0, ``enqueued_at`` now, so the maximum event
age of async invocations counts from the redrive) under its original id.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

import msgspec

__all__ = [
    "DeadLetter",
    "DurableQueue",
    "QueueDepth",
    "QueueMessage",
    "new_message_id",
]


class QueueMessage(msgspec.Struct, frozen=True, kw_only=True):
    """One delivery of a message, as ``claim`` hands it out.

    id:            the message's id (stable across deliveries, retries and redrives).
    payload:       the bytes given to ``enqueue``.
    attributes:    the string attributes given to ``enqueue`` (SQS ``messageAttributes``).
    enqueued_at:   epoch seconds of the enqueue (or the redrive).
    receive_count: deliveries so far, this one included (SQS ``ApproximateReceiveCount``).
    failures:      the ``retry(..., failed=True)`` calls so far: failed attempts, as opposed to
                   throttles and crashed consumers, which are redelivered without counting.
    receipt:       names this delivery for ack/retry/dead_letter.
    consumer:      who claimed it.
    received_at:   epoch seconds of this delivery.
    """

    id: str
    queue: str
    payload: bytes
    attributes: dict[str, str]
    enqueued_at: float
    receive_count: int
    failures: int
    receipt: str
    consumer: str
    received_at: float


class DeadLetter(msgspec.Struct, frozen=True, kw_only=True):
    """A message that was given up on: the original event, why, and after how many attempts.

    condition: why: ``RetriesExhausted``, ``EventAgeExceeded`` (AWS's destination conditions for
               async invocations) or ``MaxReceiveCountExceeded`` (a queue trigger's redrive policy).
    error:     the last error document, ``{"errorType", "errorMessage", ...}`` as the function or
               the gateway reported it.
    """

    id: str
    queue: str
    payload: bytes
    attributes: dict[str, str]
    enqueued_at: float
    condition: str
    error: dict[str, Any]
    attempts: int
    receive_count: int
    dead_at: float


class QueueDepth(msgspec.Struct, frozen=True, kw_only=True):
    """How many messages a queue holds, by state (for metrics and the admin API).

    ready: claimable now; in_flight: claimed, not settled (includes ones whose consumer died and
    whose timeout has not yet passed); delayed: waiting for a retry delay; dead: dead letters.
    """

    ready: int
    in_flight: int
    delayed: int
    dead: int


class DurableQueue(Protocol):
    """The durable queue interface; see the module docstring for the delivery semantics."""

    async def enqueue(
        self,
        queue: str,
        payload: bytes,
        attributes: Mapping[str, str] | None = None,
        *,
        message_id: str | None = None,
        delay: float = 0.0,
    ) -> str:
        """Store a message durably and return its id (``message_id`` if given: it must be new).

        delay: seconds before the message becomes claimable.
        """
        ...

    async def claim(
        self,
        queue: str,
        consumer: str,
        *,
        count: int = 1,
        visibility_timeout: float = 30.0,
        wait: float = 0.0,
    ) -> list[QueueMessage]:
        """Take up to `count` ready messages for `visibility_timeout` seconds.

        Consumers of one queue should use one visibility timeout (it is per queue in the
        config): on Redis the claimer's timeout decides when another consumer's unsettled
        message is taken over (XAUTOCLAIM's minimum idle time).

        wait: when none is ready, wait up to this many seconds for one (long polling); the
              result may then hold fewer than `count`.
        """
        ...

    async def ack(self, message: QueueMessage) -> bool:
        """Done with it: delete the message. False if this delivery no longer holds it."""
        ...

    async def retry(self, message: QueueMessage, delay: float = 0.0, *, failed: bool = True) -> bool:
        """Make the message claimable again after `delay` seconds.

        failed: count this attempt in ``failures`` (False for throttles: AWS retries those
                without spending the retry budget).
        """
        ...

    async def dead_letter(
        self, message: QueueMessage, *, condition: str, error: Mapping[str, Any], attempts: int
    ) -> bool:
        """Move the message to the queue's dead letters. False if this delivery no longer holds it."""
        ...

    async def dead_letters(self, queue: str, *, limit: int = 100) -> list[DeadLetter]:
        """The queue's dead letters, oldest first."""
        ...

    async def redrive(self, queue: str, message_ids: Sequence[str] | None = None) -> int:
        """Move dead letters (the named ones, or all) back onto the queue; returns how many moved."""
        ...

    async def depth(self, queue: str) -> QueueDepth: ...

    async def close(self) -> None: ...


def new_message_id() -> str:
    # A UUID, as SQS message ids and Lambda request ids are: an async invocation's message id
    # is also its request id.
    return str(uuid.uuid4())


def check_claim_arguments(count: int, visibility_timeout: float, wait: float) -> None:
    if count < 1:
        raise ValueError("count must be at least 1")
    if visibility_timeout <= 0:
        raise ValueError("visibility_timeout must be positive")
    if wait < 0:
        raise ValueError("wait must not be negative")
