"""Queue triggers: ``[[triggers]] queue = "orders"`` delivers the queue's messages to a function in
SQS-shaped batches, as a Lambda event source mapping on SQS does.

- Batching: up to ``batch_size`` messages, waiting at most ``batch_window`` after the first one
  for more (AWS's MaximumBatchingWindowInSeconds).
- The event is SQS's ``{"Records": [...]}`` (`gateway.functions.events.build_sqs_batch`).
- Partial batch failure: a successful result ``{"batchItemFailures": [{"itemIdentifier":
  "<messageId>"}]}`` retries only those messages; the rest are deleted. AWS's rules apply (see
  `parse_batch_item_failures`): a malformed response or an unknown identifier fails the batch.
  A function error or a throttle fails the whole batch.
- A failed message becomes visible again after ``retry_delay`` (SQS: when its visibility
  timeout ends); once it has been received ``max_receive_count`` times it moves to the queue's
  dead letters (SQS's redrive policy, condition ``MaxReceiveCountExceeded``).

One `QueueTrigger` runs one batch at a time; run several (distinct consumer names, on any
node) for more throughput.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from typing import Any

import msgspec

from gateway.logs import log

from .async_invoker import Runner, default_consumer_name, error_document
from .events import (
    DEFAULT_ORIGIN,
    BatchMessage,
    EventOrigin,
    build_sqs_batch,
    encode_event,
    parse_batch_item_failures,
)
from .invoker import TooManyRequests
from .queue import DurableQueue, QueueMessage

__all__ = ["MAX_RECEIVE_COUNT_EXCEEDED", "QueueTrigger", "QueueTriggerSpec", "TriggerStats", "publish"]

MAX_RECEIVE_COUNT_EXCEEDED = "MaxReceiveCountExceeded"


class QueueTriggerSpec(msgspec.Struct, frozen=True, kw_only=True):
    """One queue trigger (the ``[[triggers]]`` entry, durations in seconds)."""

    function: str
    queue: str
    batch_size: int = 10  # AWS: 10 by default for SQS
    batch_window: float = 0.0
    max_receive_count: int | None = None  # None: retry forever, never dead-letter
    visibility_timeout: float = 30.0  # SQS's default; must exceed the function's timeout
    retry_delay: float | None = None  # None: the visibility timeout, as on SQS
    poll_wait: float = 1.0  # long-poll length of one claim (bounds how fast stop() returns)

    def __post_init__(self) -> None:
        if self.batch_size < 1 or self.batch_window < 0 or self.visibility_timeout <= 0:
            raise ValueError("batch_size must be >= 1, batch_window >= 0, visibility_timeout > 0")
        if self.max_receive_count is not None and self.max_receive_count < 1:
            raise ValueError("max_receive_count must be at least 1")


class TriggerStats(msgspec.Struct, kw_only=True):
    batches: int = 0
    succeeded: int = 0  # messages
    retried: int = 0
    dead_lettered: int = 0
    function_errors: int = 0  # batches
    throttled: int = 0  # batches


async def publish(
    queue: DurableQueue, queue_name: str, body: str, attributes: Mapping[str, str] | None = None
) -> str:
    """Send a message to a queue (SQS bodies are text); returns its message id."""
    return await queue.enqueue(queue_name, body.encode("utf-8"), attributes)


class QueueTrigger:
    """Delivers one queue's messages to one function; see the module docstring."""

    def __init__(
        self,
        queue: DurableQueue,
        spec: QueueTriggerSpec,
        run: Runner,
        *,
        consumer: str | None = None,
        origin: EventOrigin = DEFAULT_ORIGIN,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.queue = queue
        self.spec = spec
        self.consumer = consumer or default_consumer_name()
        self.stats = TriggerStats()
        self._run = run
        self._origin = origin
        self._clock = clock
        self._stopping = False
        self._claiming: asyncio.Task[list[QueueMessage]] | None = None

    async def collect_batch(self, *, wait: float) -> list[QueueMessage]:
        """Up to batch_size messages: the first within `wait`, more until batch_window has passed."""
        batch = await self._claim(self.spec.batch_size, wait)
        if not batch or self.spec.batch_window <= 0:
            return batch
        window_ends = time.monotonic() + self.spec.batch_window
        while len(batch) < self.spec.batch_size and (left := window_ends - time.monotonic()) > 0:
            batch += await self._claim(self.spec.batch_size - len(batch), left)
        return batch

    async def _claim(self, count: int, wait: float) -> list[QueueMessage]:
        self._claiming = asyncio.create_task(
            self.queue.claim(
                self.spec.queue,
                self.consumer,
                count=count,
                visibility_timeout=self.spec.visibility_timeout,
                wait=wait,
            )
        )
        try:
            return await self._claiming
        finally:
            self._claiming = None

    async def run_once(self, *, wait: float = 0.0) -> int:
        """Collect one batch and deliver it; returns how many messages it held."""
        batch = await self.collect_batch(wait=wait)
        if batch:
            await self.deliver(batch)
        return len(batch)

    async def serve(self) -> None:
        """Deliver batches until `stop`."""
        self._stopping = False
        while not self._stopping:
            try:
                await self.run_once(wait=self.spec.poll_wait)
            except asyncio.CancelledError:
                # stop() cancels a waiting claim (its messages return after the timeout).
                if not self._stopping:
                    raise
            except Exception as exc:  # the store is down: keep trying, do not spin
                log("error", "queue trigger: poll failed", queue=self.spec.queue, error=repr(exc))
                await asyncio.sleep(self.spec.poll_wait)

    async def stop(self) -> None:
        """Stop after the batch being delivered (a claim still waiting is cancelled)."""
        self._stopping = True
        if self._claiming is not None:
            self._claiming.cancel()

    async def deliver(self, batch: list[QueueMessage]) -> None:
        """Invoke the function with `batch` and settle each message by the result."""
        over = [m for m in batch if self._exhausted(m, received_again=True)]
        batch = [m for m in batch if m not in over]
        error = {"errorType": MAX_RECEIVE_COUNT_EXCEEDED, "errorMessage": "received too many times"}
        await self._dead_letter(over, error)
        if not batch:
            return
        self.stats.batches += 1
        failed, error = await self._invoke(batch)
        succeeded = [m for m in batch if m.id not in failed]
        retry = [m for m in batch if m.id in failed and not self._exhausted(m)]
        dead = [m for m in batch if m.id in failed and self._exhausted(m)]
        self.stats.succeeded += len(succeeded)
        self.stats.retried += len(retry)
        delay = self.spec.visibility_timeout if self.spec.retry_delay is None else self.spec.retry_delay
        await asyncio.gather(
            *(self.queue.ack(m) for m in succeeded), *(self.queue.retry(m, delay) for m in retry)
        )
        await self._dead_letter(dead, error)

    async def _invoke(self, batch: list[QueueMessage]) -> tuple[set[str], dict[str, Any]]:
        """Run the function; returns the ids of the messages that failed and the error."""
        every = {m.id for m in batch}
        event = build_sqs_batch(
            [_batch_message(m) for m in batch], queue=self.spec.queue, origin=self._origin
        )
        try:
            outcome = await self._run(self.spec.function, encode_event(event), None)
        except TooManyRequests as exc:
            self.stats.throttled += 1
            return every, {"errorType": "TooManyRequestsException", "errorMessage": exc.message}
        except Exception as exc:
            log(
                "error",
                "queue trigger: invocation failed in the gateway",
                queue=self.spec.queue,
                error=repr(exc),
            )
            return every, {"errorType": "ServiceException", "errorMessage": f"{type(exc).__name__}: {exc}"}
        if outcome.function_error is not None:
            self.stats.function_errors += 1
            return every, error_document(outcome)
        failed = set(parse_batch_item_failures(outcome.payload, [m.id for m in batch]))
        return failed, {
            "errorType": "BatchItemFailure",
            "errorMessage": "the function reported this message as failed",
        }

    def _exhausted(self, message: QueueMessage, *, received_again: bool = False) -> bool:
        limit = self.spec.max_receive_count
        if limit is None:
            return False
        # On arrival, a message received more often than the limit (its consumers crashed)
        # is not delivered again; after a failure, one received `limit` times is done.
        return message.receive_count > limit if received_again else message.receive_count >= limit

    async def _dead_letter(self, messages: list[QueueMessage], error: dict[str, Any]) -> None:
        for message in messages:
            self.stats.dead_lettered += 1
            await self.queue.dead_letter(
                message, condition=MAX_RECEIVE_COUNT_EXCEEDED, error=error, attempts=message.receive_count
            )


def _batch_message(message: QueueMessage) -> BatchMessage:
    return BatchMessage(
        message_id=message.id,
        body=message.payload.decode("utf-8", "replace"),
        sent_ms=int(message.enqueued_at * 1000),
        receive_count=message.receive_count,
        receipt_handle=message.receipt,
        attributes=message.attributes,
    )
