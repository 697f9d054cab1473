"""Queue triggers on both queue backends: SQS-shaped batches, batch size and window, partial batch
failures, and the move to the dead letters after max_receive_count receives."""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import msgspec
import pytest

from gateway.functions.invoker import InvokeOutcome, TooManyRequests
from gateway.functions.queue import DurableQueue, QueueDepth
from gateway.functions.queue_trigger import QueueTrigger, QueueTriggerSpec, publish
from tests.functions.queue_backends import QueueBackend, queue_backend_fixture  # noqa: F401

AWS_SAMPLE = json.loads(Path("/work/shared/aws-events/sqsEvent.json").read_text())
SPEC = QueueTriggerSpec(function="worker", queue="orders", retry_delay=0.0, poll_wait=0.05)
OK = InvokeOutcome(b"null")


class Recorder:
    """A function that records its events and answers with the given results, in turn."""

    def __init__(self, *results: InvokeOutcome | Exception) -> None:
        self.events: list[dict[str, Any]] = []
        self.results = list(results)

    async def __call__(self, function: str, payload: bytes, request_id: str | None) -> InvokeOutcome:
        assert function == "worker"
        self.events.append(json.loads(payload))
        result = self.results.pop(0) if len(self.results) > 1 else (self.results or [OK])[0]
        if isinstance(result, Exception):
            raise result
        return result

    def bodies(self) -> list[list[str]]:
        return [[record["body"] for record in event["Records"]] for event in self.events]


def failures(*message_ids: str) -> InvokeOutcome:
    items = [{"itemIdentifier": message_id} for message_id in message_ids]
    return InvokeOutcome(json.dumps({"batchItemFailures": items}).encode())


def run(backend: QueueBackend, scenario: Callable[[DurableQueue], Awaitable[None]]) -> None:
    async def main() -> None:
        queue = backend.open()
        try:
            await scenario(queue)
        finally:
            await queue.close()

    asyncio.run(main())


def test_a_batch_has_the_shape_of_aws_sqs_events(queue_backend: QueueBackend) -> None:
    function = Recorder()

    async def scenario(queue: DurableQueue) -> None:
        first = await publish(queue, "orders", "Test message.", {"testAttr": "100"})
        second = await publish(queue, "orders", '{"message": "foo1"}')
        assert await QueueTrigger(queue, SPEC, function).run_once(wait=1) == 2
        (event,) = function.events
        sample = AWS_SAMPLE["Records"][0]
        for record in event["Records"]:
            assert record.keys() == sample.keys()
            assert record["attributes"].keys() == sample["attributes"].keys()
            assert (record["eventSource"], record["awsRegion"]) == ("aws:sqs", "us-east-1")
            assert record["eventSourceARN"] == "arn:aws:sqs:us-east-1:123456789012:orders"
            assert record["md5OfBody"] == hashlib.md5(record["body"].encode()).hexdigest()
            assert record["attributes"]["ApproximateReceiveCount"] == "1"
        assert [r["messageId"] for r in event["Records"]] == [first, second]
        assert function.bodies() == [["Test message.", '{"message": "foo1"}']]
        assert event["Records"][0]["messageAttributes"]["testAttr"]["stringValue"] == "100"
        assert event["Records"][1]["messageAttributes"] == {}
        assert await queue.depth("orders") == QueueDepth(ready=0, in_flight=0, delayed=0, dead=0)

    run(queue_backend, scenario)


def test_batch_size_bounds_a_batch(queue_backend: QueueBackend) -> None:
    function = Recorder()

    async def scenario(queue: DurableQueue) -> None:
        for n in range(5):
            await publish(queue, "orders", str(n))
        trigger = QueueTrigger(queue, msgspec.structs.replace(SPEC, batch_size=2), function)
        while await trigger.run_once():
            pass
        assert function.bodies() == [["0", "1"], ["2", "3"], ["4"]]

    run(queue_backend, scenario)


def test_the_batch_window_collects_messages_that_arrive_after_the_first(queue_backend: QueueBackend) -> None:
    function = Recorder()

    async def scenario(queue: DurableQueue) -> None:
        trigger = QueueTrigger(queue, msgspec.structs.replace(SPEC, batch_window=0.4), function)
        await publish(queue, "orders", "first")
        delivering = asyncio.create_task(trigger.run_once(wait=1))
        await asyncio.sleep(0.15)
        await publish(queue, "orders", "second")
        await publish(queue, "orders", "third")
        assert await delivering == 3
        assert function.bodies() == [["first", "second", "third"]]

        # A full batch goes at once, without waiting for the window to end.
        full = QueueTrigger(queue, msgspec.structs.replace(SPEC, batch_size=2, batch_window=30), function)
        await publish(queue, "orders", "a")
        await publish(queue, "orders", "b")
        assert await asyncio.wait_for(full.run_once(wait=1), 5) == 2

    run(queue_backend, scenario)


def test_only_the_reported_batch_item_failures_are_retried(queue_backend: QueueBackend) -> None:
    async def scenario(queue: DurableQueue) -> None:
        ids = [await publish(queue, "orders", body) for body in ("a", "b", "c")]
        function = Recorder(failures(ids[1]), OK)
        trigger = QueueTrigger(queue, SPEC, function)
        assert await trigger.run_once() == 3
        assert await trigger.run_once() == 1
        assert function.bodies() == [["a", "b", "c"], ["b"]]
        assert function.events[1]["Records"][0]["attributes"]["ApproximateReceiveCount"] == "2"
        assert await trigger.run_once() == 0
        assert (trigger.stats.succeeded, trigger.stats.retried) == (3, 1)

    run(queue_backend, scenario)


@pytest.mark.parametrize(
    "result",
    [
        InvokeOutcome(b'{"errorType": "E", "errorMessage": "m"}', function_error="Unhandled"),
        TooManyRequests(),
        failures("not-in-this-batch"),
        InvokeOutcome(b'{"batchItemFailures": [{"itemIdentifier": ""}]}'),
        InvokeOutcome(b'{"batchItemFailures": "nonsense"}'),
    ],
    ids=["function-error", "throttle", "unknown-identifier", "empty-identifier", "malformed"],
)
def test_these_results_fail_the_whole_batch(
    queue_backend: QueueBackend, result: InvokeOutcome | Exception
) -> None:
    async def scenario(queue: DurableQueue) -> None:
        for body in ("a", "b"):
            await publish(queue, "orders", body)
        function = Recorder(result, OK)
        trigger = QueueTrigger(queue, SPEC, function)
        assert await trigger.run_once() == 2
        assert await trigger.run_once() == 2
        # Like standard SQS, retried messages come back in no particular order.
        assert [sorted(bodies) for bodies in function.bodies()] == [["a", "b"], ["a", "b"]]

    run(queue_backend, scenario)


def test_a_message_moves_to_the_dead_letters_after_max_receive_count(queue_backend: QueueBackend) -> None:
    error = InvokeOutcome(b'{"errorType": "KeyError", "errorMessage": "sku"}', function_error="Unhandled")

    async def scenario(queue: DurableQueue) -> None:
        poison = await publish(queue, "orders", "poison", {"k": "v"})
        fine = await publish(queue, "orders", "fine")

        async def function(name: str, payload: bytes, request_id: str | None) -> InvokeOutcome:
            records = json.loads(payload)["Records"]
            if any(r["body"] == "poison" for r in records):
                return error if len(records) == 1 else failures(poison)
            return OK

        trigger = QueueTrigger(queue, msgspec.structs.replace(SPEC, max_receive_count=3), function)
        while await trigger.run_once():
            pass
        (dead,) = await queue.dead_letters("orders")
        assert (dead.id, dead.payload, dead.attributes) == (poison, b"poison", {"k": "v"})
        assert (dead.condition, dead.attempts, dead.receive_count) == ("MaxReceiveCountExceeded", 3, 3)
        assert dead.error == {"errorType": "KeyError", "errorMessage": "sku"}
        assert fine != poison
        assert await queue.depth("orders") == QueueDepth(ready=0, in_flight=0, delayed=0, dead=1)

    run(queue_backend, scenario)


def test_a_message_received_too_often_by_crashed_consumers_is_not_delivered_again(
    queue_backend: QueueBackend,
) -> None:
    function = Recorder()

    async def scenario(queue: DurableQueue) -> None:
        await publish(queue, "orders", "crashes its consumers")
        for _ in range(2):  # two consumers took it and died without settling it
            assert await queue.claim("orders", "crashed", visibility_timeout=0.1)
            await asyncio.sleep(0.15)
        spec = msgspec.structs.replace(SPEC, max_receive_count=2, visibility_timeout=0.1)
        assert await QueueTrigger(queue, spec, function).run_once() == 1
        assert function.events == []
        (dead,) = await queue.dead_letters("orders")
        assert (dead.condition, dead.receive_count) == ("MaxReceiveCountExceeded", 3)

    run(queue_backend, scenario)


def test_serve_delivers_until_stopped(queue_backend: QueueBackend) -> None:
    function = Recorder()

    async def scenario(queue: DurableQueue) -> None:
        trigger = QueueTrigger(queue, SPEC, function)
        serving = asyncio.create_task(trigger.serve())
        await publish(queue, "orders", "one")
        for _ in range(200):
            if function.events:
                break
            await asyncio.sleep(0.02)
        await trigger.stop()
        await asyncio.wait_for(serving, 5)
        assert function.bodies() == [["one"]]

    run(queue_backend, scenario)


def test_spec_is_validated() -> None:
    with pytest.raises(ValueError):
        QueueTriggerSpec(function="f", queue="q", batch_size=0)
    with pytest.raises(ValueError):
        QueueTriggerSpec(function="f", queue="q", max_receive_count=0)
