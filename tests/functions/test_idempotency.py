"""Idempotency-Key: one suite against the SQLite store and a real redis-server."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from gateway.functions.idempotency import (
    Acquired,
    Idempotency,
    IdempotencyConflict,
    IdempotencyInProgress,
    IdempotencyStore,
    Idempotent,
    RedisIdempotencyStore,
    SQLiteIdempotencyStore,
)
from gateway.functions.invoker import InvokeOutcome


class Backend:
    def __init__(self, kind: str, path: Path, redis_url: str | None) -> None:
        self.kind = kind
        self.path = path
        self.redis_url = redis_url
        self.prefix = f"test-idem-{uuid.uuid4().hex}:"

    def open(self) -> IdempotencyStore:
        if self.kind == "sqlite":
            return SQLiteIdempotencyStore(self.path)
        assert self.redis_url is not None
        return RedisIdempotencyStore.from_url(self.redis_url, prefix=self.prefix)


@pytest.fixture(params=["sqlite", "redis"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    redis_url = request.getfixturevalue("redis_url") if request.param == "redis" else None
    return Backend(request.param, tmp_path / "idempotency.db", redis_url)


def run(backend: Backend, scenario: Callable[[IdempotencyStore], Awaitable[None]]) -> None:
    async def main() -> None:
        store = backend.open()
        try:
            await scenario(store)
        finally:
            await store.close()

    asyncio.run(main())


class Counter:
    """Work that counts its runs and answers with the run number."""

    def __init__(self, delay: float = 0.0) -> None:
        self.runs = 0
        self.delay = delay

    async def __call__(self) -> bytes:
        self.runs += 1
        number = self.runs
        await asyncio.sleep(self.delay)
        return b"run %d" % number


def test_a_key_runs_once_and_repeats_get_the_first_result(backend: Backend) -> None:
    async def scenario(store: IdempotencyStore) -> None:
        calls = Idempotency(store, bytes)
        work = Counter()
        assert await calls.run("f", "key-1", work) == Idempotent(b"run 1", replayed=False)
        assert await calls.run("f", "key-1", work) == Idempotent(b"run 1", replayed=True)
        assert await calls.run("f", "key-2", work) == Idempotent(b"run 2", replayed=False)
        assert await calls.run("g", "key-1", work) == Idempotent(b"run 3", replayed=False)  # another scope
        assert work.runs == 3

    run(backend, scenario)


def test_concurrent_duplicates_wait_for_the_first(backend: Backend) -> None:
    async def scenario(store: IdempotencyStore) -> None:
        # Two stores on the same data: two workers (or two nodes) receiving the same request.
        other = backend.open()
        try:
            work = Counter(delay=0.2)
            results = await asyncio.gather(
                *(Idempotency(s, bytes).run("f", "same", work) for s in [store, other] * 3)
            )
            assert work.runs == 1
            assert {r.result for r in results} == {b"run 1"}
            assert sorted(r.replayed for r in results) == [False, True, True, True, True, True]
        finally:
            await other.close()

    run(backend, scenario)


def test_a_failed_first_attempt_stores_nothing(backend: Backend) -> None:
    async def scenario(store: IdempotencyStore) -> None:
        calls = Idempotency(store, bytes)

        async def fails() -> bytes:
            raise RuntimeError("throttled")

        with pytest.raises(RuntimeError):
            await calls.run("f", "k", fails)
        assert await calls.run("f", "k", Counter()) == Idempotent(b"run 1", replayed=False)

    run(backend, scenario)


def test_a_waiting_repeat_runs_the_work_when_the_first_fails(backend: Backend) -> None:
    async def scenario(store: IdempotencyStore) -> None:
        calls = Idempotency(store, bytes)

        async def fails_slowly() -> bytes:
            await asyncio.sleep(0.1)
            raise RuntimeError("gateway failure")

        first = asyncio.create_task(calls.run("f", "k", fails_slowly))
        await asyncio.sleep(0.02)
        repeat = await calls.run("f", "k", Counter())
        assert repeat == Idempotent(b"run 1", replayed=False)
        with pytest.raises(RuntimeError):
            await first

    run(backend, scenario)


def test_results_expire_after_the_window(backend: Backend) -> None:
    async def scenario(store: IdempotencyStore) -> None:
        calls = Idempotency(store, bytes, window=0.2)
        work = Counter()
        await calls.run("f", "k", work)
        assert (await calls.run("f", "k", work)).replayed
        await asyncio.sleep(0.3)
        assert await calls.run("f", "k", work) == Idempotent(b"run 2", replayed=False)

    run(backend, scenario)


def test_a_key_reused_for_another_request_is_refused(backend: Backend) -> None:
    async def scenario(store: IdempotencyStore) -> None:
        calls = Idempotency(store, bytes)
        await calls.run("f", "k", Counter(), fingerprint=b"payload A")
        with pytest.raises(IdempotencyConflict):
            await calls.run("f", "k", Counter(), fingerprint=b"payload B")
        assert (await calls.run("f", "k", Counter(), fingerprint=b"payload A")).replayed

    run(backend, scenario)


def test_a_key_held_by_a_dead_process_is_taken_over_after_its_lease(backend: Backend) -> None:
    async def scenario(store: IdempotencyStore) -> None:
        # A process took the key and died before finishing.
        state = await store.begin("f\nk", b"", 0.3)
        assert isinstance(state, Acquired)
        impatient = Idempotency(store, bytes, wait_timeout=0.05)
        with pytest.raises(IdempotencyInProgress):
            await impatient.run("f", "k", Counter())
        patient = Idempotency(store, bytes, lease=5, wait_timeout=3)
        assert await patient.run("f", "k", Counter()) == Idempotent(b"run 1", replayed=False)
        # The dead process's lease cannot overwrite the result.
        assert await store.complete("f\nk", state.lease, b"late", 60) is False
        assert await patient.run("f", "k", Counter()) == Idempotent(b"run 1", replayed=True)

    run(backend, scenario)


def test_invoke_outcomes_round_trip(backend: Backend) -> None:
    async def scenario(store: IdempotencyStore) -> None:
        calls = Idempotency(store, InvokeOutcome)
        outcome = InvokeOutcome(b'{"errorMessage": "x"}', function_error="Unhandled", log_tail=b"START\n")

        async def invoke() -> InvokeOutcome:
            return outcome

        assert (await calls.run("f", "k", invoke)).result == outcome
        replay = await calls.run("f", "k", invoke)
        assert (replay.result, replay.replayed) == (outcome, True)

    run(backend, scenario)


def test_keys_are_validated(tmp_path: Path) -> None:
    async def scenario() -> None:
        store = SQLiteIdempotencyStore(tmp_path / "i.db")
        try:
            with pytest.raises(ValueError):
                await Idempotency(store, bytes).run("f", "", Counter())
            with pytest.raises(ValueError):
                await Idempotency(store, bytes).run("f", "k" * 256, Counter())
        finally:
            await store.close()

    asyncio.run(scenario())
