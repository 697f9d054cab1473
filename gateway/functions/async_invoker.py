"""Asynchronous (``Event``) invocations with AWS's semantics, on a `DurableQueue`.

An ``Event`` invocation is accepted (HTTP 202) once `submit` has stored it durably in the
function's queue (``async:<function>``); its message id is the invocation's request id. An
`AsyncInvoker` per function (on any node: the queue hands each event to one consumer) takes
events off the queue and runs them through an injected `Runner`, then decides as AWS does:

- success: the event is done (acknowledged).
- function error (``InvokeOutcome.function_error`` set): retried up to ``max_retries`` times (AWS:
  0-2, default 2), waiting ``retry_delays[n]`` before retry n+1 (AWS waits 1 min, then 2 min).
  After the last retry fails, the event goes to the queue's dead letters with condition
  ``RetriesExhausted``, the function's error document and the attempt count.
- throttle (`TooManyRequests`) or the gateway's own failure (any other exception): retried
  with exponential back-off from ``throttle_delay`` up to ``throttle_delay_max`` (AWS: 1 s to
  5 min) without spending the retry budget, as AWS does for 429s and 500s.
- an event older than ``max_event_age`` (AWS: up to 6 h, the default) is not run again: it
  goes to the dead letters with condition ``EventAgeExceeded`` (also when the next retry
  would only be due after that age).

A consumer that dies mid-event leaves it to be redelivered after ``visibility_timeout``, which
must therefore exceed the function's timeout. Delivery is at least once, as on AWS.
"""

from __future__ import annotations

import asyncio
import enum
import os
import socket
import time
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec

from gateway.logs import log

from .invoker import InvokeOutcome, TooManyRequests
from .queue import DurableQueue, QueueMessage, new_message_id

__all__ = [
    "AsyncInvoker",
    "AsyncPolicy",
    "AsyncStats",
    "Decision",
    "Settlement",
    "async_queue_name",
    "decide",
    "default_consumer_name",
    "error_document",
]

Runner = Callable[[str, bytes, str | None], Awaitable[InvokeOutcome]]
"""Runs one invocation of a function: ``run(function_name, payload, request_id) ->
InvokeOutcome``; raises `TooManyRequests` when throttled. ``request_id`` None: a new one."""

RETRIES_EXHAUSTED = "RetriesExhausted"
EVENT_AGE_EXCEEDED = "EventAgeExceeded"


class AsyncPolicy(msgspec.Struct, frozen=True, kw_only=True):
    """How one function's async events are retried (AWS's names in brackets)."""

    max_retries: int = 2  # [MaximumRetryAttempts] 0..2 on AWS
    retry_delays: tuple[float, ...] = (60.0, 120.0)  # seconds before retry 1, 2, ...; the last repeats
    max_event_age: float = 6 * 3600.0  # [MaximumEventAgeInSeconds] seconds
    throttle_delay: float = 1.0  # first back-off after a throttle or a gateway failure; doubles
    throttle_delay_max: float = 300.0
    visibility_timeout: float = 960.0  # > the function's timeout (15 min at most) + start-up
    concurrency: int = 1  # events this consumer runs at once
    poll_wait: float = 1.0  # long-poll length of one claim (bounds how fast stop() returns)

    def __post_init__(self) -> None:
        if self.max_retries < 0 or not self.retry_delays or min(self.retry_delays) < 0:
            raise ValueError("max_retries must be >= 0 and retry_delays non-empty and >= 0")
        if self.concurrency < 1 or self.visibility_timeout <= 0 or self.max_event_age <= 0:
            raise ValueError("concurrency, visibility_timeout and max_event_age must be positive")


class Settlement(enum.Enum):
    ACK = "ack"
    RETRY = "retry"
    DEAD_LETTER = "dead_letter"


class Decision(msgspec.Struct, frozen=True, kw_only=True):
    """What to do with an event after an attempt (or before it, when it is too old)."""

    settlement: Settlement
    delay: float = 0.0  # RETRY: seconds before the next attempt
    failed: bool = False  # RETRY: the attempt counts against the retry budget
    condition: str = ""  # DEAD_LETTER: RetriesExhausted | EventAgeExceeded
    error: dict[str, Any] = msgspec.field(default_factory=dict)
    attempts: int = 0  # DEAD_LETTER: invocations that ran


class AsyncStats(msgspec.Struct, kw_only=True):
    """Counters since start, for metrics."""

    succeeded: int = 0
    function_errors: int = 0
    throttled: int = 0
    system_errors: int = 0
    retried: int = 0
    dead_lettered: int = 0


def async_queue_name(function: str) -> str:
    """The queue holding a function's ``Event`` invocations."""
    return f"async:{function}"


def default_consumer_name() -> str:
    """Unique per process and host: queue deliveries belong to a named consumer."""
    return f"{socket.gethostname()}:{os.getpid()}"


def decide(
    message: QueueMessage,
    policy: AsyncPolicy,
    now: float,
    *,
    outcome: InvokeOutcome | None = None,
    throttle: BaseException | None = None,
) -> Decision:
    """AWS's retry rules for one attempt: `outcome` if the function ran, else `throttle` (what
    stopped it from running: a `TooManyRequests` or the gateway's own exception)."""
    deadline = message.enqueued_at + policy.max_event_age
    ran_and_failed = outcome is not None and outcome.function_error is not None
    attempts = message.failures + int(ran_and_failed)
    if outcome is not None and outcome.function_error is None:
        return Decision(settlement=Settlement.ACK)
    if outcome is not None:
        error = error_document(outcome)
        if attempts > policy.max_retries:
            return _dead(RETRIES_EXHAUSTED, error, attempts)
        delay = policy.retry_delays[min(attempts - 1, len(policy.retry_delays) - 1)]
        failed = True
    else:
        error = _throttle_document(throttle)
        # Deliveries that did not count as failures: throttles, gateway errors, lost consumers.
        backoffs = max(message.receive_count - message.failures, 1)
        delay = min(policy.throttle_delay * 2 ** min(backoffs - 1, 30), policy.throttle_delay_max)
        failed = False
    if now + delay > deadline:
        return _dead(EVENT_AGE_EXCEEDED, error, attempts)
    return Decision(settlement=Settlement.RETRY, delay=delay, failed=failed, error=error)


def _dead(condition: str, error: dict[str, Any], attempts: int) -> Decision:
    return Decision(settlement=Settlement.DEAD_LETTER, condition=condition, error=error, attempts=attempts)


def error_document(outcome: InvokeOutcome) -> dict[str, Any]:
    """A failed outcome's error document (``{"errorType", "errorMessage", ...}``), made up when
    the payload is not a JSON object."""
    try:
        document = msgspec.json.decode(outcome.payload)
    except msgspec.DecodeError:
        document = None
    if isinstance(document, dict):
        return document
    return {
        "errorType": outcome.function_error or "Unhandled",
        "errorMessage": outcome.payload.decode("utf-8", "replace"),
    }


def _throttle_document(exc: BaseException | None) -> dict[str, Any]:
    if isinstance(exc, TooManyRequests):
        return {
            "errorType": "TooManyRequestsException",
            "errorMessage": exc.message,
            "Reason": str(exc.reason),
        }
    return {"errorType": "ServiceException", "errorMessage": f"{type(exc).__name__}: {exc}"}


class AsyncInvoker:
    """Runs one function's queued ``Event`` invocations; see the module docstring."""

    def __init__(
        self,
        queue: DurableQueue,
        function: str,
        run: Runner,
        *,
        policy: AsyncPolicy | None = None,
        consumer: str | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.queue = queue
        self.function = function
        self.queue_name = async_queue_name(function)
        self.policy = policy or AsyncPolicy()
        self.consumer = consumer or default_consumer_name()
        self.stats = AsyncStats()
        self._run = run
        self._clock = clock
        self._in_flight: set[asyncio.Task[None]] = set()
        self._slots = asyncio.Semaphore(self.policy.concurrency)
        self._stopping = False
        self._claiming: asyncio.Task[list[QueueMessage]] | None = None

    async def submit(self, payload: bytes, *, request_id: str | None = None) -> str:
        """Queue one ``Event`` invocation durably; returns its request id (the message id)."""
        request_id = request_id or new_message_id()
        return await self.queue.enqueue(
            self.queue_name, payload, {"function": self.function}, message_id=request_id
        )

    async def run_once(self, *, wait: float = 0.0) -> int:
        """Claim what is ready (up to ``concurrency`` events), run it to the end; returns how many."""
        messages = await self.queue.claim(
            self.queue_name,
            self.consumer,
            count=self.policy.concurrency,
            visibility_timeout=self.policy.visibility_timeout,
            wait=wait,
        )
        await asyncio.gather(*(self.process(message) for message in messages))
        return len(messages)

    async def serve(self) -> None:
        """Keep up to ``concurrency`` events running until `stop`."""
        self._stopping = False
        while not self._stopping:
            await self._slots.acquire()
            if self._stopping:  # stop() came while every slot was busy
                self._slots.release()
                break
            free = 1
            while free < self.policy.concurrency and not self._slots.locked():
                await self._slots.acquire()
                free += 1
            try:
                self._claiming = asyncio.create_task(
                    self.queue.claim(
                        self.queue_name,
                        self.consumer,
                        count=free,
                        visibility_timeout=self.policy.visibility_timeout,
                        wait=self.policy.poll_wait,
                    )
                )
                messages = await self._claiming
            except asyncio.CancelledError:
                if not self._stopping:
                    raise
                messages = []
            except Exception as exc:  # the store is down: keep trying, do not spin
                log("error", "async invoker: claim failed", function=self.function, error=repr(exc))
                messages = []
                await asyncio.sleep(self.policy.poll_wait)
            finally:
                self._claiming = None
            for message in messages:
                task = asyncio.create_task(self._process_in_slot(message))
                self._in_flight.add(task)
                task.add_done_callback(self._in_flight.discard)
                free -= 1
            for _ in range(free):
                self._slots.release()

    async def stop(self, timeout: float = 30.0) -> None:
        """Stop claiming and let running events finish (within `timeout`; unfinished ones are
        redelivered after the visibility timeout)."""
        self._stopping = True
        if self._claiming is not None:
            # A claim cancelled midway may have taken messages: they come back after the timeout.
            self._claiming.cancel()
        if self._in_flight:
            _, pending = await asyncio.wait(set(self._in_flight), timeout=timeout)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending)

    async def _process_in_slot(self, message: QueueMessage) -> None:
        try:
            await self.process(message)
        finally:
            self._slots.release()

    async def process(self, message: QueueMessage) -> None:
        """One attempt at one event, then settle it as `decide` says."""
        if self._clock() - message.enqueued_at > self.policy.max_event_age:
            error = {"errorType": EVENT_AGE_EXCEEDED, "errorMessage": "the event is older than max_event_age"}
            decision = _dead(EVENT_AGE_EXCEEDED, error, message.failures)
        else:
            decision = await self._attempt(message)
        await self._settle(message, decision)

    async def _attempt(self, message: QueueMessage) -> Decision:
        try:
            # As on Lambda, every attempt runs under the request id the Event invocation answered
            # with (the message id), so the function's logs and retries can be matched to it.
            outcome = await self._run(self.function, message.payload, message.id)
        except TooManyRequests as exc:
            self.stats.throttled += 1
            return decide(message, self.policy, self._clock(), throttle=exc)
        except Exception as exc:
            self.stats.system_errors += 1
            log(
                "error",
                "async invocation failed in the gateway",
                function=self.function,
                request_id=message.id,
                error=repr(exc),
            )
            return decide(message, self.policy, self._clock(), throttle=exc)
        if outcome.function_error is None:
            self.stats.succeeded += 1
        else:
            self.stats.function_errors += 1
        return decide(message, self.policy, self._clock(), outcome=outcome)

    async def _settle(self, message: QueueMessage, decision: Decision) -> None:
        if decision.settlement is Settlement.ACK:
            settled = await self.queue.ack(message)
        elif decision.settlement is Settlement.RETRY:
            self.stats.retried += 1
            settled = await self.queue.retry(message, decision.delay, failed=decision.failed)
        else:
            self.stats.dead_lettered += 1
            settled = await self.queue.dead_letter(
                message, condition=decision.condition, error=decision.error, attempts=decision.attempts
            )
            log(
                "warning",
                "async invocation dead-lettered",
                function=self.function,
                request_id=message.id,
                condition=decision.condition,
                attempts=decision.attempts,
            )
        if not settled:
            # Our visibility timeout ran out and another consumer took the event: it is theirs.
            log(
                "warning",
                "async invocation outlived its visibility timeout",
                function=self.function,
                request_id=message.id,
            )
