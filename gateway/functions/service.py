"""One worker's functions as the Invoke API sees them: an Invoker over the function pools.

- RequestResponse runs on the worker's pool for the function.
- Event is queued durably (SQLite next to the state file, or Redis Streams with [store] redis)
  and answered 202 at once; this worker's AsyncInvoker consumers run queued events with AWS's
  retry, maximum-age and dead-letter rules. Any worker (any node, with Redis) may run an event.
- Idempotency-Key: the same key within the window runs once; repeats get the first outcome.
- [[triggers]]: schedules fire once per occurrence across workers and nodes (a claim in Redis or
  in a SQLite file the workers share) by queueing the event like an Event invocation; queue
  triggers consume their queue in SQS-shaped batches.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping
from typing import Any

from gateway.config import Config
from gateway.functions.async_invoker import AsyncInvoker, AsyncPolicy
from gateway.functions.events import encode_event
from gateway.functions.idempotency import Idempotency, RedisIdempotencyStore, SQLiteIdempotencyStore
from gateway.functions.invoker import InvocationType, InvokeOutcome, LogType, TooManyRequests
from gateway.functions.pool import FunctionPool, FunctionUnavailable
from gateway.functions.pool import TooManyRequests as PoolBusy
from gateway.functions.queue import DurableQueue
from gateway.functions.queue_trigger import QueueTrigger, QueueTriggerSpec, publish
from gateway.functions.schedule import parse_schedule
from gateway.functions.scheduler import (
    Firing,
    RedisClaims,
    ScheduledJob,
    Scheduler,
    SQLiteClaims,
    firing_event,
)
from gateway.tasks import cancel_and_wait

__all__ = ["FunctionService"]


class FunctionService:
    """The Invoker (gateway.functions.invoker) of one worker, and its async consumers."""

    def __init__(self, config: Config, pools: Mapping[str, FunctionPool]) -> None:
        self.config = config
        self.pools = pools
        self.queue: DurableQueue | None = None
        self.consumers: dict[str, AsyncInvoker] = {}
        self.idempotency: Idempotency[InvokeOutcome] | None = None
        self.queue_triggers: list[QueueTrigger] = []
        self.scheduler: Scheduler | None = None
        self._tasks: list[asyncio.Task[Any]] = []

    # -- lifecycle ----------------------------------------------------------------------------

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        if not self.pools:
            return
        store = self.config.store
        if store.redis is not None:
            from gateway.functions.queue_redis import RedisQueue

            self.queue = RedisQueue.from_url(store.redis)
            idempotency_store: Any = RedisIdempotencyStore.from_url(store.redis)
        else:
            from gateway.functions.queue_sqlite import SQLiteQueue

            self.queue = SQLiteQueue(store.path + ".functions")
            idempotency_store = SQLiteIdempotencyStore(store.path + ".idempotency")
        self.idempotency = Idempotency(idempotency_store, InvokeOutcome)
        for name in self.pools:
            function = self.config.functions[name]
            policy = AsyncPolicy(
                max_retries=function.retries,
                max_event_age=function.max_event_age,
                # An event whose worker died mid-run is taken up again after this; the margin
                # covers an instance's start (milliseconds) with room to spare.
                visibility_timeout=function.timeout + 10.0,
            )
            consumer = AsyncInvoker(self.queue, name, self._run_event, policy=policy)
            self.consumers[name] = consumer
            self._tasks.append(loop.create_task(consumer.serve()))
        self._start_triggers(loop)

    def _start_triggers(self, loop: asyncio.AbstractEventLoop) -> None:
        assert self.queue is not None
        jobs: list[ScheduledJob] = []
        for trigger in self.config.triggers:
            if trigger.function not in self.pools:
                continue
            if trigger.schedule is not None:
                # The key names the occurrence on every node and across restarts.
                key = f"{trigger.function}:{trigger.schedule}"
                schedule = parse_schedule(trigger.schedule, allow_seconds=True)
                jobs.append(ScheduledJob(key, schedule, trigger.function))
            elif trigger.queue is not None:
                function = self.config.functions[trigger.function]
                spec = QueueTriggerSpec(
                    function=trigger.function,
                    queue=trigger.queue,
                    batch_size=trigger.batch_size,
                    batch_window=trigger.batch_window,
                    max_receive_count=trigger.max_receive_count,
                    visibility_timeout=function.timeout + 30.0,
                )
                queue_trigger = QueueTrigger(self.queue, spec, self._run_event)
                self.queue_triggers.append(queue_trigger)
                self._tasks.append(loop.create_task(queue_trigger.serve()))
        if jobs:
            store = self.config.store
            claims: Any = (
                RedisClaims.from_url(store.redis)
                if store.redis is not None
                else SQLiteClaims(store.path + ".schedules")
            )
            self.scheduler = Scheduler(jobs, self._fire, claims)
            self.scheduler.start()

    async def _fire(self, firing: Firing) -> None:
        """A schedule's occurrence: queued as an Event invocation under its stable event id, so a
        repeat of the same occurrence cannot run it twice."""
        consumer = self.consumers.get(firing.job.function)
        if consumer is not None:
            await consumer.submit(encode_event(firing_event(firing)), request_id=firing.event_id)

    async def publish(self, queue: str, body: str, attributes: Mapping[str, str] | None = None) -> str:
        """Send a message to a trigger queue (the admin API's POST /queues/{name}/messages)."""
        if self.queue is None:
            raise FunctionUnavailable("this gateway runs no functions")
        return await publish(self.queue, queue, body, attributes)

    async def close(self) -> None:
        if self.scheduler is not None:
            with contextlib.suppress(Exception):
                await self.scheduler.stop()
        for queue_trigger in self.queue_triggers:
            with contextlib.suppress(Exception):
                await queue_trigger.stop()
        for consumer in self.consumers.values():
            with contextlib.suppress(Exception):
                await consumer.stop(timeout=5.0)
        for task in self._tasks:
            await cancel_and_wait(task)
        if self.queue is not None:
            with contextlib.suppress(Exception):
                await self.queue.close()

    # -- Invoker ------------------------------------------------------------------------------

    def exists(self, name: str) -> bool:
        return name in self.pools

    async def invoke(
        self,
        name: str,
        payload: bytes,
        *,
        invocation_type: InvocationType,
        request_id: str,
        log_type: LogType,
        client_context: str | None,
        idempotency_key: str | None,
    ) -> InvokeOutcome:
        async def work() -> InvokeOutcome:
            if invocation_type is InvocationType.EVENT:
                consumer = self.consumers.get(name)
                if consumer is None:
                    raise FunctionUnavailable(f"function {name!r} has no async consumer")
                await consumer.submit(payload, request_id=request_id)
                return InvokeOutcome(payload=b"")
            return await self._run(name, payload, request_id=request_id, client_context=client_context)

        if idempotency_key and self.idempotency is not None:
            scope = f"{name}:{invocation_type.value}"
            outcome = await self.idempotency.run(scope, idempotency_key, work, fingerprint=payload)
            return outcome.result
        return await work()

    async def _run(
        self, name: str, payload: bytes, *, request_id: str | None, client_context: str | None
    ) -> InvokeOutcome:
        pool = self.pools[name]
        try:
            result = await pool.invoke(payload, request_id=request_id, client_context=client_context)
        except PoolBusy as exc:
            raise TooManyRequests() from exc
        return InvokeOutcome(
            payload=result.payload, function_error=result.function_error, log_tail=result.log_tail
        )

    async def _run_event(self, name: str, payload: bytes, request_id: str | None) -> InvokeOutcome:
        return await self._run(name, payload, request_id=request_id, client_context=None)
