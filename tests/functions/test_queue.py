"""The durable queue: one suite, run against SQLite and against a real redis-server."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Awaitable, Callable

import pytest

from gateway.functions.queue import DurableQueue, QueueDepth
from tests.functions.queue_backends import QueueBackend, queue_backend_fixture  # noqa: F401


def run(backend: QueueBackend, scenario: Callable[[DurableQueue], Awaitable[None]]) -> None:
    async def main() -> None:
        queue = backend.open()
        try:
            await scenario(queue)
        finally:
            await queue.close()

    asyncio.run(main())


def test_enqueue_claim_ack(queue_backend: QueueBackend) -> None:
    async def scenario(queue: DurableQueue) -> None:
        first = await queue.enqueue("orders", b'{"n": 1}', {"kind": "order"})
        second = await queue.enqueue("orders", b'{"n": 2}', message_id="my-own-id")
        await queue.enqueue("other", b"elsewhere")
        assert second == "my-own-id"
        assert await queue.depth("orders") == QueueDepth(ready=2, in_flight=0, delayed=0, dead=0)

        claimed = await queue.claim("orders", "c1", count=10)
        assert [(m.id, m.payload, m.attributes) for m in claimed] == [
            (first, b'{"n": 1}', {"kind": "order"}),
            ("my-own-id", b'{"n": 2}', {}),
        ]
        assert all(m.receive_count == 1 and m.failures == 0 and m.consumer == "c1" for m in claimed)
        assert await queue.depth("orders") == QueueDepth(ready=0, in_flight=2, delayed=0, dead=0)
        assert await queue.claim("orders", "c2", count=10) == []

        assert await queue.ack(claimed[0]) is True
        assert await queue.ack(claimed[0]) is False  # already gone
        assert await queue.ack(claimed[1]) is True
        assert await queue.depth("orders") == QueueDepth(ready=0, in_flight=0, delayed=0, dead=0)
        assert [m.payload for m in await queue.claim("other", "c1")] == [b"elsewhere"]

    run(queue_backend, scenario)


def test_count_limits_a_claim(queue_backend: QueueBackend) -> None:
    async def scenario(queue: DurableQueue) -> None:
        ids = [await queue.enqueue("orders", str(n).encode()) for n in range(5)]
        first = await queue.claim("orders", "c1", count=3)
        second = await queue.claim("orders", "c1", count=3)
        assert [m.id for m in first + second] == ids
        assert (len(first), len(second)) == (3, 2)
        with pytest.raises(ValueError):
            await queue.claim("orders", "c1", count=0)

    run(queue_backend, scenario)


def test_unsettled_message_returns_after_visibility_timeout(queue_backend: QueueBackend) -> None:
    """A consumer that dies holding a message: another one gets it once the timeout has passed."""

    async def scenario(queue: DurableQueue) -> None:
        message_id = await queue.enqueue("orders", b"x")
        (held,) = await queue.claim("orders", "dies", visibility_timeout=0.2)
        assert await queue.claim("orders", "survivor", visibility_timeout=0.2) == []
        await asyncio.sleep(0.3)
        (again,) = await queue.claim("orders", "survivor", visibility_timeout=0.2)
        assert (again.id, again.payload, again.receive_count, again.consumer) == (
            message_id,
            b"x",
            2,
            "survivor",
        )
        # The first delivery is stale: it can settle nothing.
        assert await queue.ack(held) is False
        assert await queue.retry(held) is False
        assert await queue.dead_letter(held, condition="RetriesExhausted", error={}, attempts=1) is False
        assert await queue.ack(again) is True
        assert await queue.claim("orders", "survivor") == []

    run(queue_backend, scenario)


def test_retry_after_delay_counts_failures_but_not_throttles(queue_backend: QueueBackend) -> None:
    async def scenario(queue: DurableQueue) -> None:
        await queue.enqueue("orders", b"x", {"a": "1"})
        (first,) = await queue.claim("orders", "c1")
        assert await queue.retry(first, 0.3) is True
        assert await queue.depth("orders") == QueueDepth(ready=0, in_flight=0, delayed=1, dead=0)
        assert await queue.claim("orders", "c1") == []
        await asyncio.sleep(0.4)
        (second,) = await queue.claim("orders", "c1")
        assert (second.receive_count, second.failures, second.attributes) == (2, 1, {"a": "1"})
        assert second.enqueued_at == first.enqueued_at  # the event's age runs on across retries
        assert await queue.retry(second, failed=False) is True
        (third,) = await queue.claim("orders", "c1")
        assert (third.receive_count, third.failures) == (3, 1)
        assert await queue.ack(third) is True

    run(queue_backend, scenario)


def test_delayed_enqueue(queue_backend: QueueBackend) -> None:
    async def scenario(queue: DurableQueue) -> None:
        await queue.enqueue("orders", b"later", delay=0.3)
        await queue.enqueue("orders", b"now")
        assert [m.payload for m in await queue.claim("orders", "c1", count=5)] == [b"now"]
        # A waiting claim wakes when the delayed message is due, not at the end of its wait.
        loop = asyncio.get_running_loop()
        started = loop.time()
        (later,) = await queue.claim("orders", "c1", wait=5)
        assert later.payload == b"later"
        assert loop.time() - started < 4

    run(queue_backend, scenario)


def test_dead_letters_keep_the_event_error_and_attempts_and_redrive(queue_backend: QueueBackend) -> None:
    async def scenario(queue: DurableQueue) -> None:
        for n in range(3):
            await queue.enqueue("orders", f"event {n}".encode(), {"n": str(n)}, message_id=f"m{n}")
        claimed = await queue.claim("orders", "c1", count=3)
        error = {"errorType": "ValueError", "errorMessage": "bad order", "stackTrace": ["line 1"]}
        for message in claimed:
            assert await queue.dead_letter(message, condition="RetriesExhausted", error=error, attempts=3)
        assert await queue.depth("orders") == QueueDepth(ready=0, in_flight=0, delayed=0, dead=3)
        assert await queue.claim("orders", "c1", count=3) == []

        dead = await queue.dead_letters("orders")
        assert [(d.id, d.payload, d.attributes) for d in dead] == [
            ("m0", b"event 0", {"n": "0"}),
            ("m1", b"event 1", {"n": "1"}),
            ("m2", b"event 2", {"n": "2"}),
        ]
        assert all(
            (d.queue, d.condition, d.error, d.attempts, d.receive_count)
            == ("orders", "RetriesExhausted", error, 3, 1)
            for d in dead
        )
        assert len(await queue.dead_letters("orders", limit=2)) == 2
        assert await queue.dead_letters("other") == []

        assert await queue.redrive("orders", ["m1", "unknown"]) == 1
        (back,) = await queue.claim("orders", "c1", count=3)
        assert (back.id, back.payload, back.attributes, back.receive_count, back.failures) == (
            "m1",
            b"event 1",
            {"n": "1"},
            1,
            0,
        )
        assert [d.id for d in await queue.dead_letters("orders")] == ["m0", "m2"]
        assert await queue.redrive("orders") == 2
        assert await queue.redrive("orders") == 0
        assert sorted(m.id for m in await queue.claim("orders", "c1", count=3)) == ["m0", "m2"]

    run(queue_backend, scenario)


def test_messages_survive_reopening(queue_backend: QueueBackend) -> None:
    async def produce() -> None:
        queue = queue_backend.open()
        await queue.enqueue("orders", b"kept", {"k": "v"}, message_id="persisted")
        await queue.enqueue("orders", b"retried")
        (retried,) = [
            m
            for m in await queue.claim("orders", "c1", count=2, visibility_timeout=0.1)
            if m.payload == b"retried"
        ]
        await queue.retry(retried)
        await queue.close()

    async def consume() -> None:
        queue = queue_backend.open()
        try:
            await asyncio.sleep(0.15)  # "kept" was claimed by c1, which is gone: it comes back
            found = {m.payload: m for m in await queue.claim("orders", "c2", count=5, visibility_timeout=0.1)}
            assert sorted(found) == [b"kept", b"retried"]
            assert (found[b"kept"].id, found[b"kept"].attributes, found[b"kept"].receive_count) == (
                "persisted",
                {"k": "v"},
                2,
            )
            assert (found[b"retried"].receive_count, found[b"retried"].failures) == (2, 1)
        finally:
            await queue.close()

    asyncio.run(produce())
    asyncio.run(consume())


def test_waiting_claim_sees_another_producers_message(queue_backend: QueueBackend) -> None:
    async def scenario(consumer_queue: DurableQueue) -> None:
        producer = queue_backend.open()
        try:
            waiting = asyncio.create_task(consumer_queue.claim("orders", "c1", count=5, wait=5))
            await asyncio.sleep(0.1)
            assert not waiting.done()
            await producer.enqueue("orders", b"hello")
            claimed = await asyncio.wait_for(waiting, 3)
            assert [m.payload for m in claimed] == [b"hello"]
            assert await consumer_queue.claim("orders", "c1", wait=0.1) == []
        finally:
            await producer.close()

    run(queue_backend, scenario)


def test_concurrent_consumers_get_each_message_once(queue_backend: QueueBackend) -> None:
    async def scenario(queue: DurableQueue) -> None:
        others = [queue_backend.open() for _ in range(2)]
        try:
            ids = {await queue.enqueue("orders", str(n).encode()) for n in range(60)}
            seen: list[str] = []

            async def consume(consumer_queue: DurableQueue, name: str) -> None:
                while batch := await consumer_queue.claim("orders", name, count=4, visibility_timeout=30):
                    for message in batch:
                        seen.append(message.id)
                        assert await consumer_queue.ack(message)

            await asyncio.gather(*(consume(q, f"c{i}") for i, q in enumerate([queue, *others])))
            assert sorted(seen) == sorted(ids)
        finally:
            for other in others:
                await other.close()

    run(queue_backend, scenario)


PRODUCER = """
import asyncio, sys
from gateway.functions.queue_redis import RedisQueue
from gateway.functions.queue_sqlite import SQLiteQueue

async def main():
    queue = {open_queue}
    n = 0
    while True:
        message_id = await queue.enqueue("orders", b"event %d" % n, {{"n": str(n)}})
        # Printed only once enqueue has returned: each id printed was accepted.
        print(message_id, flush=True)
        n += 1

asyncio.run(main())
"""


def test_accepted_messages_survive_kill_9_of_the_producer(queue_backend: QueueBackend) -> None:
    code = textwrap.dedent(PRODUCER.format(open_queue=queue_backend.open_queue_source()))
    process = subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, cwd=os.getcwd(), start_new_session=True
    )
    accepted: list[str] = []
    try:
        assert process.stdout is not None
        while len(accepted) < 30:
            line = process.stdout.readline()
            assert line, f"producer exited with {process.wait()}"
            accepted.append(line.decode().strip())
        os.kill(process.pid, signal.SIGKILL)
        rest = process.stdout.read()  # ids it printed before it died were accepted too
        accepted += rest.decode().split()
    finally:
        process.kill()
        process.wait()
        if process.stdout is not None:
            process.stdout.close()
    assert process.returncode == -signal.SIGKILL

    async def scenario(queue: DurableQueue) -> None:
        found: set[str] = set()
        while batch := await queue.claim("orders", "after-crash", count=100):
            found.update(m.id for m in batch)
        assert set(accepted) <= found

    run(queue_backend, scenario)
