"""Async (Event) invocations: AWS's retry rules, then the same scenarios on both queue backends."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Awaitable, Callable

import msgspec
import pytest

from gateway.functions.async_invoker import (
    AsyncInvoker,
    AsyncPolicy,
    Decision,
    Settlement,
    async_queue_name,
    decide,
)
from gateway.functions.invoker import InvokeOutcome, TooManyRequests
from gateway.functions.queue import DurableQueue, QueueDepth, QueueMessage
from tests.functions.queue_backends import QueueBackend, queue_backend_fixture  # noqa: F401

ERROR = InvokeOutcome(b'{"errorType": "ValueError", "errorMessage": "boom"}', function_error="Unhandled")
OK = InvokeOutcome(b'"done"')


def delivery(*, receive_count: int = 1, failures: int = 0, enqueued_at: float = 1000.0) -> QueueMessage:
    return QueueMessage(
        id="m",
        queue="async:f",
        payload=b"{}",
        attributes={},
        enqueued_at=enqueued_at,
        receive_count=receive_count,
        failures=failures,
        receipt="r",
        consumer="c",
        received_at=enqueued_at,
    )


# --- the rules -----------------------------------------------------------------------------------

POLICY = AsyncPolicy()  # AWS's defaults: 2 retries after 1 and 2 minutes, 6 hours, 1 s..5 min


def test_success_is_acknowledged() -> None:
    assert decide(delivery(), POLICY, 1000.0, outcome=OK) == Decision(settlement=Settlement.ACK)


def test_function_errors_are_retried_twice_after_one_then_two_minutes_then_dead_lettered() -> None:
    error = {"errorType": "ValueError", "errorMessage": "boom"}
    first = decide(delivery(), POLICY, 1000.0, outcome=ERROR)
    assert first == Decision(settlement=Settlement.RETRY, delay=60.0, failed=True, error=error)
    second = decide(delivery(receive_count=2, failures=1), POLICY, 1060.0, outcome=ERROR)
    assert (second.settlement, second.delay, second.failed) == (Settlement.RETRY, 120.0, True)
    third = decide(delivery(receive_count=3, failures=2), POLICY, 1180.0, outcome=ERROR)
    assert third == Decision(
        settlement=Settlement.DEAD_LETTER, condition="RetriesExhausted", error=error, attempts=3
    )
    no_retries = AsyncPolicy(max_retries=0)
    assert decide(delivery(), no_retries, 1000.0, outcome=ERROR).settlement is Settlement.DEAD_LETTER


def test_an_error_that_is_not_json_becomes_an_error_document() -> None:
    outcome = InvokeOutcome(b"Segmentation fault", function_error="Unhandled")
    decision = decide(delivery(), POLICY, 1000.0, outcome=outcome)
    assert decision.error == {"errorType": "Unhandled", "errorMessage": "Segmentation fault"}


def test_throttles_back_off_exponentially_without_spending_retries() -> None:
    throttle = TooManyRequests()
    delays = [
        decide(delivery(receive_count=n, failures=1), POLICY, 1000.0, throttle=throttle).delay
        for n in range(2, 14)
    ]
    assert delays == [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 300.0, 300.0, 300.0]
    decision = decide(delivery(receive_count=2, failures=2), POLICY, 1000.0, throttle=throttle)
    assert (decision.settlement, decision.failed) == (Settlement.RETRY, False)
    assert decision.error["errorType"] == "TooManyRequestsException"
    gateway_failure = decide(delivery(), POLICY, 1000.0, throttle=RuntimeError("pool gone"))
    assert gateway_failure.error == {
        "errorType": "ServiceException",
        "errorMessage": "RuntimeError: pool gone",
    }


def test_a_retry_due_after_the_maximum_event_age_is_dead_lettered_instead() -> None:
    policy = AsyncPolicy(max_event_age=100.0)
    early = decide(delivery(enqueued_at=1000.0), policy, 1050.0, outcome=ERROR)  # retry due at 1110
    assert early.settlement is Settlement.DEAD_LETTER
    assert (early.condition, early.attempts) == ("EventAgeExceeded", 1)
    throttled = decide(delivery(enqueued_at=1000.0), policy, 1099.5, throttle=TooManyRequests())
    assert (throttled.settlement, throttled.condition, throttled.attempts) == (
        Settlement.DEAD_LETTER,
        "EventAgeExceeded",
        0,
    )


def test_policy_is_validated() -> None:
    with pytest.raises(ValueError):
        AsyncPolicy(retry_delays=())
    with pytest.raises(ValueError):
        AsyncPolicy(concurrency=0)


# --- on the queues -------------------------------------------------------------------------------

FAST = AsyncPolicy(
    retry_delays=(0.05, 0.1),
    throttle_delay=0.02,
    throttle_delay_max=0.05,
    visibility_timeout=30.0,
    poll_wait=0.05,
)


async def wait_until(condition: Callable[[], Awaitable[bool]], timeout: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not await condition():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.02)


def serving(
    backend: QueueBackend,
    run: Callable[[str, bytes, str | None], Awaitable[InvokeOutcome]],
    scenario: Callable[[AsyncInvoker, DurableQueue], Awaitable[None]],
    policy: AsyncPolicy = FAST,
) -> None:
    async def main() -> None:
        queue = backend.open()
        invoker = AsyncInvoker(queue, "f", run, policy=policy, consumer="node-1")
        serve = asyncio.create_task(invoker.serve())
        try:
            await scenario(invoker, queue)
        finally:
            await invoker.stop()
            await asyncio.wait_for(serve, 5)
            await queue.close()

    asyncio.run(main())


async def drained(queue: DurableQueue) -> bool:
    depth = await queue.depth(async_queue_name("f"))
    return depth.ready + depth.in_flight + depth.delayed == 0


def test_an_event_runs_once(queue_backend: QueueBackend) -> None:
    calls: list[tuple[str, bytes, str | None]] = []

    async def run(function: str, payload: bytes, request_id: str | None) -> InvokeOutcome:
        calls.append((function, payload, request_id))
        return OK

    async def scenario(invoker: AsyncInvoker, queue: DurableQueue) -> None:
        request_id = await invoker.submit(b'{"n": 1}', request_id="req-1")
        assert request_id == "req-1"
        await wait_until(lambda: drained(queue))
        assert calls == [("f", b'{"n": 1}', "req-1")]  # it runs under the id the caller got
        assert invoker.stats.succeeded == 1
        assert await queue.dead_letters(async_queue_name("f")) == []

    serving(queue_backend, run, scenario)


def test_a_failing_event_runs_three_times_then_lands_in_the_dead_letters(queue_backend: QueueBackend) -> None:
    times: list[float] = []
    ids: set[str | None] = set()

    async def run(function: str, payload: bytes, request_id: str | None) -> InvokeOutcome:
        times.append(asyncio.get_running_loop().time())
        ids.add(request_id)
        return ERROR

    async def scenario(invoker: AsyncInvoker, queue: DurableQueue) -> None:
        request_id = await invoker.submit(b'{"order": 7}')
        await wait_until(lambda: drained(queue))
        (dead,) = await queue.dead_letters(async_queue_name("f"))
        assert (dead.id, dead.payload, dead.condition, dead.attempts) == (
            request_id,
            b'{"order": 7}',
            "RetriesExhausted",
            3,
        )
        assert dead.error == {"errorType": "ValueError", "errorMessage": "boom"}
        assert len(times) == 3 and ids == {request_id}  # every retry under the same request id
        assert times[1] - times[0] >= 0.045 and times[2] - times[1] >= 0.095  # the back-off schedule
        assert (invoker.stats.function_errors, invoker.stats.dead_lettered) == (3, 1)

        # Re-driven, it runs again (and fails again, three more times).
        assert await queue.redrive(async_queue_name("f")) == 1
        await wait_until(lambda: drained(queue))
        assert len(times) == 6
        assert len(await queue.dead_letters(async_queue_name("f"))) == 1

    serving(queue_backend, run, scenario)


def test_throttles_are_retried_beyond_the_retry_budget(queue_backend: QueueBackend) -> None:
    attempts: list[bytes] = []

    async def run(function: str, payload: bytes, request_id: str | None) -> InvokeOutcome:
        attempts.append(payload)
        if len(attempts) <= 4:
            raise TooManyRequests()
        return OK

    async def scenario(invoker: AsyncInvoker, queue: DurableQueue) -> None:
        await invoker.submit(b"{}")
        await wait_until(lambda: drained(queue))
        assert len(attempts) == 5
        assert (invoker.stats.throttled, invoker.stats.succeeded) == (4, 1)
        assert await queue.dead_letters(async_queue_name("f")) == []

    serving(queue_backend, run, scenario, msgspec.structs.replace(FAST, max_retries=0))


def test_an_event_past_its_maximum_age_is_dead_lettered(queue_backend: QueueBackend) -> None:
    runs: list[bytes] = []

    async def run(function: str, payload: bytes, request_id: str | None) -> InvokeOutcome:
        runs.append(payload)
        return ERROR

    async def scenario(invoker: AsyncInvoker, queue: DurableQueue) -> None:
        await invoker.submit(b"{}")
        await wait_until(lambda: drained(queue))
        (dead,) = await queue.dead_letters(async_queue_name("f"))
        assert (dead.condition, dead.attempts, len(runs)) == ("EventAgeExceeded", 1, 1)

    policy = msgspec.structs.replace(FAST, max_event_age=0.2, retry_delays=(0.5,))
    serving(queue_backend, run, scenario, policy)


def test_concurrency_bounds_the_events_running_at_once(queue_backend: QueueBackend) -> None:
    running = 0
    most = 0
    done = 0

    async def run(function: str, payload: bytes, request_id: str | None) -> InvokeOutcome:
        nonlocal running, most, done
        running += 1
        most = max(most, running)
        await asyncio.sleep(0.05)
        running -= 1
        done += 1
        return OK

    async def scenario(invoker: AsyncInvoker, queue: DurableQueue) -> None:
        for n in range(9):
            await invoker.submit(str(n).encode())
        await wait_until(lambda: drained(queue))
        assert (done, most) == (9, 3)

    serving(queue_backend, run, scenario, msgspec.structs.replace(FAST, concurrency=3))


def test_stop_finishes_the_running_event_and_claims_no_more(queue_backend: QueueBackend) -> None:
    started: list[bytes] = []
    finished: list[bytes] = []

    async def run(function: str, payload: bytes, request_id: str | None) -> InvokeOutcome:
        started.append(payload)
        await asyncio.sleep(0.2)
        finished.append(payload)
        return OK

    async def main() -> None:
        queue = queue_backend.open()
        try:
            invoker = AsyncInvoker(queue, "f", run, policy=FAST, consumer="node-1")
            await invoker.submit(b"1")
            await invoker.submit(b"2")
            serve = asyncio.create_task(invoker.serve())
            await wait_until(lambda: _true_when(bool(started)))
            await invoker.stop()
            await asyncio.wait_for(serve, 5)
            assert started == finished == [b"1"]
            depth = await queue.depth(async_queue_name("f"))
            assert (depth.ready, depth.in_flight) == (1, 0)
        finally:
            await queue.close()

    asyncio.run(main())


async def _true_when(value: bool) -> bool:
    return value


CONSUMER = """
import asyncio
from gateway.functions.async_invoker import AsyncInvoker, AsyncPolicy
from gateway.functions.queue_redis import RedisQueue
from gateway.functions.queue_sqlite import SQLiteQueue

async def run(function, payload, request_id):
    print("running", payload.decode(), flush=True)
    await asyncio.sleep(3600)  # killed in here

async def main():
    invoker = AsyncInvoker({open_queue}, "f", run, consumer="doomed",
                           policy=AsyncPolicy(visibility_timeout=0.5, poll_wait=0.05))
    await invoker.serve()

asyncio.run(main())
"""


def test_an_event_whose_consumer_is_killed_runs_elsewhere(queue_backend: QueueBackend) -> None:
    """kill -9 of the node running an event: nothing lost, another node runs it."""

    async def submit() -> str:
        queue = queue_backend.open()
        try:
            return await AsyncInvoker(queue, "f", _never).submit(b'{"important": true}')
        finally:
            await queue.close()

    request_id = asyncio.run(submit())
    code = textwrap.dedent(CONSUMER.format(open_queue=queue_backend.open_queue_source()))
    process = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, cwd=os.getcwd())
    try:
        assert process.stdout is not None
        assert process.stdout.readline() == b'running {"important": true}\n'
    finally:
        os.kill(process.pid, signal.SIGKILL)
        process.wait()
        if process.stdout is not None:
            process.stdout.close()

    ran: list[bytes] = []

    async def run(function: str, payload: bytes, request_id: str | None) -> InvokeOutcome:
        ran.append(payload)
        return OK

    async def scenario(invoker: AsyncInvoker, queue: DurableQueue) -> None:
        await wait_until(lambda: drained(queue))
        assert ran == [b'{"important": true}']
        assert await queue.depth(async_queue_name("f")) == QueueDepth(ready=0, in_flight=0, delayed=0, dead=0)
        assert request_id

    serving(queue_backend, run, scenario, msgspec.structs.replace(FAST, visibility_timeout=0.5))


async def _never(function: str, payload: bytes, request_id: str | None) -> InvokeOutcome:
    raise AssertionError("not run here")
