"""The scheduler: one firing per occurrence across nodes (real redis-server, shared SQLite file,
separate processes, a node killed), catch-up rules under a controlled clock, the event shape."""

from __future__ import annotations

import asyncio
import json
import signal
import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import redis.asyncio as redis_asyncio

from gateway.functions.events import EventOrigin, event_to_dict
from gateway.functions.schedule import RateSchedule, parse_schedule
from gateway.functions.scheduler import (
    ClaimStore,
    Firing,
    LocalClaims,
    RedisClaims,
    ScheduledJob,
    Scheduler,
    SQLiteClaims,
    firing_event,
)
from tests.support.redis_server import RedisServer

REPO = Path(__file__).resolve().parents[2]
SAMPLE_EVENT = Path("/work/shared/aws-events/eventBridgeSchedulerEvent.json")


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def unique_prefix() -> str:
    return f"test-scheduler-{uuid.uuid4().hex[:8]}:"


async def wait_until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.01)


async def wait_for_count(fired: list[Firing], count: int) -> None:
    await wait_until(lambda: len(fired) == count)


class FakeClock:
    """Wall-clock time that only moves when the test says so (schedulers poll it every 10 ms)."""

    def __init__(self, start: datetime) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now


def recorder() -> tuple[list[Firing], Callable[[Firing], Awaitable[None]]]:
    fired: list[Firing] = []

    async def fire(firing: Firing) -> None:
        fired.append(firing)

    return fired, fire


def assert_once_per_period(fire_ms: list[int], period_ms: int, window_ms: tuple[float, float]) -> None:
    """No occurrence twice; every occurrence inside the window present."""
    assert len(fire_ms) == len(set(fire_ms)), f"occurrences fired twice: {sorted(fire_ms)}"
    assert all(ms % period_ms == 0 for ms in fire_ms)
    low, high = window_ms
    expected = {
        ms for ms in range(int(low) // period_ms * period_ms, int(high), period_ms) if low <= ms <= high
    }
    assert len(expected) >= 3
    missing = sorted(expected - set(fire_ms))
    assert not missing, f"occurrences never fired: {missing} (fired: {sorted(fire_ms)})"


# --- claim stores ----------------------------------------------------------------------------------


def test_redis_claims_one_winner_per_occurrence(redis_url: str) -> None:
    async def main() -> None:
        prefix = unique_prefix()
        nodes = [
            RedisClaims.from_url(redis_url, prefix=prefix, retention=timedelta(seconds=30)) for _ in range(3)
        ]
        try:
            occurrences = [utc("2024-01-01T00:00") + timedelta(minutes=n) for n in range(10)]
            results = await asyncio.gather(
                *(node.claim("job", when, f"n{i}") for when in occurrences for i, node in enumerate(nodes))
            )
            per_occurrence = [results[i : i + 3] for i in range(0, len(results), 3)]
            assert all(sum(winners) == 1 for winners in per_occurrence)
            assert await nodes[0].claim("other-job", occurrences[0], "n0")  # keys are per job
            client = redis_asyncio.Redis.from_url(redis_url)
            ttl = await client.pttl(nodes[0].claim_key("job", occurrences[0]))
            await client.aclose()
            assert 25_000 < ttl <= 30_000
        finally:
            for node in nodes:
                await node.close()

    asyncio.run(main())


def test_sqlite_claims_one_winner_and_old_rows_pruned(tmp_path: Path) -> None:
    path = tmp_path / "claims.db"

    async def main() -> None:
        first, second = SQLiteClaims(path), SQLiteClaims(path, retention=timedelta(minutes=10))
        try:
            now = datetime.now(UTC).replace(microsecond=0)
            occurrences = [now + timedelta(seconds=n) for n in range(10)]
            results = await asyncio.gather(
                *(store.claim("job", when, name) for when in occurrences for name, store in
                  (("a", first), ("b", second)))
            )  # fmt: skip
            assert all(results[i] != results[i + 1] for i in range(0, len(results), 2))
            # An old row goes away with the next claim of anyone.
            assert await second.claim("job", now - timedelta(hours=2), "b")
            assert await second.claim("job", now + timedelta(minutes=1), "b")
        finally:
            await first.close()
            await second.close()

    asyncio.run(main())
    with sqlite3.connect(path) as connection:
        rows = connection.execute("SELECT count(*), min(fire_time) FROM schedule_claims").fetchone()
    assert rows[0] == 11
    assert rows[1] >= (time.time() - 60) * 1000


def test_local_claims() -> None:
    async def main() -> None:
        claims = LocalClaims()
        when = utc("2024-01-01T00:00")
        assert await claims.claim("job", when, "a")
        assert not await claims.claim("job", when, "b")
        assert await claims.claim("job", when + timedelta(minutes=1), "b")

    asyncio.run(main())


def test_retention_must_exceed_grace() -> None:
    with pytest.raises(ValueError, match="longer than the grace period"):
        Scheduler([], recorder()[1], LocalClaims(retention=timedelta(minutes=5)), grace=timedelta(minutes=5))


def test_job_keys_are_unique() -> None:
    job = ScheduledJob("same", parse_schedule("rate(1 minute)"))
    with pytest.raises(ValueError, match='share the key "same"'):
        Scheduler([job, job], recorder()[1], LocalClaims())


# --- catch-up and lateness under a controlled clock ------------------------------------------------


def run_with_clock(
    start: str,
    jobs: list[ScheduledJob],
    scenario: Callable[[FakeClock, list[Firing], Scheduler], Awaitable[None]],
    *,
    claims: ClaimStore | None = None,
    grace: timedelta = timedelta(minutes=5),
) -> None:
    async def main() -> None:
        clock = FakeClock(utc(start))
        fired, fire = recorder()
        scheduler = Scheduler(
            jobs, fire, claims or LocalClaims(), grace=grace, clock=clock, node="n1", max_sleep=0.01
        )
        scheduler.start()
        try:
            await scenario(clock, fired, scheduler)
        finally:
            await scheduler.stop()

    asyncio.run(main())


HOURLY = ScheduledJob("hourly", parse_schedule("rate(1 hour)"), function="f")
MINUTELY = ScheduledJob("minutely", parse_schedule("rate(1 minute)"), function="f")


def test_fires_each_occurrence_as_the_clock_reaches_it() -> None:
    async def scenario(clock: FakeClock, fired: list[Firing], scheduler: Scheduler) -> None:
        await asyncio.sleep(0.05)
        assert fired == []  # 09:30 -> nothing within the grace of 5 minutes
        for count, hour in enumerate((10, 11, 12), start=1):
            clock.now = utc(f"2024-01-01T{hour}:00:00")
            await wait_for_count(fired, count)
        clock.now = utc("2024-01-01T12:59:59.999")
        await asyncio.sleep(0.05)
        assert [firing.fire_time for firing in fired] == [utc(f"2024-01-01T{h}:00") for h in (10, 11, 12)]
        assert all(firing.job is HOURLY and firing.node == "n1" for firing in fired)

    run_with_clock("2024-01-01T09:30", [HOURLY], scenario)


def test_start_within_grace_fires_the_latest_missed_occurrence_once() -> None:
    async def scenario(clock: FakeClock, fired: list[Firing], scheduler: Scheduler) -> None:
        await wait_until(lambda: len(fired) == 2)
        await asyncio.sleep(0.05)
        # rate(1 minute) missed 09:58 ... 10:02: only 10:02; the hourly 10:00 is within grace too
        assert sorted((f.job.key, f.fire_time, f.fired_at) for f in fired) == [
            ("hourly", utc("2024-01-01T10:00"), utc("2024-01-01T10:02:30")),
            ("minutely", utc("2024-01-01T10:02"), utc("2024-01-01T10:02:30")),
        ]

    run_with_clock("2024-01-01T10:02:30", [HOURLY, MINUTELY], scenario)


def test_start_after_grace_does_not_fire_the_missed_occurrence() -> None:
    async def scenario(clock: FakeClock, fired: list[Firing], scheduler: Scheduler) -> None:
        await asyncio.sleep(0.1)
        assert fired == []
        clock.now = utc("2024-01-01T11:00")
        await wait_until(lambda: len(fired) == 1)
        assert fired[0].fire_time == utc("2024-01-01T11:00")

    run_with_clock("2024-01-01T10:05:01", [HOURLY], scenario)


def test_a_late_loop_fires_only_the_latest_occurrence() -> None:
    async def scenario(clock: FakeClock, fired: list[Firing], scheduler: Scheduler) -> None:
        clock.now = utc("2024-01-01T10:00:10")
        await wait_until(lambda: len(fired) == 1)
        clock.now = utc("2024-01-01T10:03:30")  # 10:01, 10:02, 10:03 all due at once
        await wait_until(lambda: len(fired) == 2)
        clock.now = utc("2024-01-01T10:20:00")  # 10:04 ... 10:20, the last one exactly now
        await wait_until(lambda: len(fired) == 3)
        await asyncio.sleep(0.05)
        assert [f.fire_time for f in fired] == [
            utc("2024-01-01T10:00"),
            utc("2024-01-01T10:03"),
            utc("2024-01-01T10:20"),
        ]

    # 09:59 is 40 s old at the start, beyond the grace: the first firing is 10:00
    run_with_clock("2024-01-01T09:59:40", [MINUTELY], scenario, grace=timedelta(seconds=30))


def test_an_occurrence_claimed_elsewhere_is_not_fired() -> None:
    claims = LocalClaims()

    async def scenario(clock: FakeClock, fired: list[Firing], scheduler: Scheduler) -> None:
        assert await claims.claim("hourly", utc("2024-01-01T11:00"), "another node")
        clock.now = utc("2024-01-01T11:00:01")
        await asyncio.sleep(0.1)
        clock.now = utc("2024-01-01T12:00:00")
        await wait_until(lambda: len(fired) == 1)
        assert fired[0].fire_time == utc("2024-01-01T12:00")

    run_with_clock("2024-01-01T10:30", [HOURLY], scenario, claims=claims)


def test_replace_jobs_keeps_unchanged_jobs_and_adds_new_ones_without_catch_up() -> None:
    async def scenario(clock: FakeClock, fired: list[Firing], scheduler: Scheduler) -> None:
        await asyncio.sleep(0.05)
        daily = ScheduledJob("daily", parse_schedule("cron(0 10 * * ? *)"))
        scheduler.replace_jobs([HOURLY, daily])  # 10:00 today is past: no catch-up for a new job
        assert {job.key for job in scheduler.jobs} == {"hourly", "daily"}
        clock.now = utc("2024-01-01T11:00")
        await wait_until(lambda: len(fired) == 1)
        scheduler.replace_jobs([daily])
        clock.now = utc("2024-01-02T10:00")
        await wait_until(lambda: len(fired) == 2)
        await asyncio.sleep(0.05)
        assert [(f.job.key, f.fire_time) for f in fired] == [
            ("hourly", utc("2024-01-01T11:00")),
            ("daily", utc("2024-01-02T10:00")),
        ]

    run_with_clock("2024-01-01T10:02", [HOURLY], scenario, grace=timedelta(seconds=30))


def test_a_failing_callback_does_not_stop_the_schedule() -> None:
    async def main() -> None:
        fired: list[datetime] = []

        async def fire(firing: Firing) -> None:
            fired.append(firing.fire_time)
            if len(fired) == 1:
                raise RuntimeError("the function could not be queued")

        job = ScheduledJob("fast", RateSchedule(period=timedelta(milliseconds=100)))
        scheduler = Scheduler([job], fire, LocalClaims())
        scheduler.start()
        await wait_until(lambda: len(fired) >= 3)
        await scheduler.stop()

    asyncio.run(main())


def test_claims_retry_while_redis_is_down_and_fire_once_it_is_back() -> None:
    with RedisServer() as server:
        server.stop()

        async def main() -> None:
            claims = RedisClaims.from_url(server.url, prefix=unique_prefix())
            clock = FakeClock(utc("2024-01-01T10:00:05"))
            fired, fire = recorder()
            scheduler = Scheduler(
                [HOURLY], fire, claims, clock=clock, retry_delay=timedelta(0), max_sleep=0.02
            )
            scheduler.start()
            try:
                await asyncio.sleep(0.3)  # claims fail: nothing fires, the occurrence stays pending
                assert fired == []
                await asyncio.to_thread(server.start)
                await wait_until(lambda: len(fired) == 1, timeout=10)
                await asyncio.sleep(0.1)
                assert [f.fire_time for f in fired] == [utc("2024-01-01T10:00")]
            finally:
                await scheduler.stop()
                await claims.close()

        asyncio.run(main())


# --- several nodes for real --------------------------------------------------------------------------


# A full second: under a loaded CI machine an event loop can stall for a few hundred ms, and a
# stall longer than a period skips occurrences by design (only the latest missed one fires).
PERIOD_MS = 1000


def test_two_nodes_sharing_redis_fire_once_per_period(redis_url: str) -> None:
    async def main() -> None:
        prefix = unique_prefix()
        fired, fire = recorder()
        job = ScheduledJob("tick", RateSchedule(period=timedelta(milliseconds=PERIOD_MS)))
        claims = [RedisClaims.from_url(redis_url, prefix=prefix) for _ in range(2)]
        nodes = [Scheduler([job], fire, store, node=name) for store, name in zip(claims, "ab", strict=True)]
        for node in nodes:
            node.start()
        started = time.time() * 1000
        await asyncio.sleep(4.5)
        await nodes[0].stop()  # node a goes away; b keeps the schedule
        stopped = time.time() * 1000
        await asyncio.sleep(2.5)
        ended = time.time() * 1000
        await nodes[1].stop()
        for store in claims:
            await store.close()
        fire_ms = [round(f.fire_time.timestamp() * 1000) for f in fired]
        assert_once_per_period(fire_ms, PERIOD_MS, (started + PERIOD_MS, ended - PERIOD_MS))
        assert any(f.node == "b" and f.fire_time.timestamp() * 1000 > stopped for f in fired)

    asyncio.run(main())


def test_two_schedulers_sharing_a_sqlite_file_fire_once_per_period(tmp_path: Path) -> None:
    async def main() -> None:
        fired, fire = recorder()
        job = ScheduledJob("tick", RateSchedule(period=timedelta(milliseconds=PERIOD_MS)))
        claims = [SQLiteClaims(tmp_path / "claims.db") for _ in range(2)]
        nodes = [Scheduler([job], fire, store, node=name) for store, name in zip(claims, "ab", strict=True)]
        for node in nodes:
            node.start()
        started = time.time() * 1000
        await asyncio.sleep(5.5)
        ended = time.time() * 1000
        for node in nodes:
            await node.stop()
        for store in claims:
            await store.close()
        fire_ms = [round(f.fire_time.timestamp() * 1000) for f in fired]
        assert_once_per_period(fire_ms, PERIOD_MS, (started + PERIOD_MS, ended - PERIOD_MS))

    asyncio.run(main())


class NodeProcess:
    def __init__(self, claims: str, prefix: str, out: Path) -> None:
        self.out = out
        command = [
            sys.executable,
            "-m",
            "tests.functions.scheduler_node",
            claims,
            prefix,
            str(PERIOD_MS),
            str(out),
        ]
        self.process = subprocess.Popen(command, cwd=REPO, stdin=subprocess.DEVNULL)

    def lines(self) -> list[str]:
        return self.out.read_text().splitlines() if self.out.exists() else []

    def fires(self) -> list[int]:
        return [int(line.split()[0]) for line in self.lines() if line != "ready"]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(10)


@pytest.fixture(params=["sqlite", "redis"])
def claims_target(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "redis":
        yield request.getfixturevalue("redis_url")
    else:
        yield str(tmp_path / "claims.db")


def test_processes_fire_once_per_period_and_survive_a_killed_node(claims_target: str, tmp_path: Path) -> None:
    prefix = unique_prefix()
    nodes = [NodeProcess(claims_target, prefix, tmp_path / f"node{i}.txt") for i in range(2)]
    try:
        deadline = time.monotonic() + 30
        while not all("ready" in node.lines() for node in nodes):
            assert all(node.process.poll() is None for node in nodes), "a node exited"
            assert time.monotonic() < deadline, "the nodes did not start"
            time.sleep(0.02)
        started = time.time() * 1000
        time.sleep(3.0)
        # Kill (SIGKILL) the node that won the latest occurrence, half a period after an occurrence,
        # so no claim is in flight: the survivor must carry on without a gap.
        latest = max(nodes, key=lambda node: max(node.fires(), default=0))
        time.sleep((PERIOD_MS / 2 - time.time() * 1000 % PERIOD_MS) % PERIOD_MS / 1000)
        latest.process.send_signal(signal.SIGKILL)
        latest.process.wait(10)
        killed = time.time() * 1000
        time.sleep(4.5)
        ended = time.time() * 1000
        survivor = next(node for node in nodes if node is not latest)
        assert survivor.process.poll() is None
    finally:
        for node in nodes:
            node.stop()
    fire_ms = nodes[0].fires() + nodes[1].fires()
    assert_once_per_period(fire_ms, PERIOD_MS, (started + PERIOD_MS, ended - PERIOD_MS))
    assert len([ms for ms in survivor.fires() if ms > killed]) >= 3
    assert all(ms < killed for ms in latest.fires())


# --- the event ---------------------------------------------------------------------------------------


def test_firing_event_has_the_scheduler_event_shape() -> None:
    sample = json.loads(SAMPLE_EVENT.read_text())
    job = ScheduledJob("nightly", parse_schedule("cron(0 2 * * ? *)"), function="hello")
    firing = Firing(
        job=job, fire_time=utc("2025-02-20T16:03:00"), fired_at=utc("2025-02-20T16:03:01"), node="a"
    )
    event = event_to_dict(
        firing_event(firing, origin=EventOrigin(account_id="123456789012", region="eu-west-1"))
    )
    assert set(event) == set(sample)
    assert {key: event[key] for key in ("version", "detail-type", "source", "detail")} == {
        key: sample[key] for key in ("version", "detail-type", "source", "detail")
    }
    assert event["time"] == "2025-02-20T16:03:00Z"
    assert event["region"] == "eu-west-1"
    assert event["account"] == "123456789012"
    assert event["resources"] == ["arn:aws:scheduler:eu-west-1:123456789012:schedule/default/nightly"]
    # The id is the same on every node for the same occurrence, and differs between occurrences.
    twin = Firing(job=job, fire_time=firing.fire_time, fired_at=utc("2025-02-20T16:04:00"), node="b")
    later = Firing(job=job, fire_time=utc("2025-02-21T02:00"), fired_at=utc("2025-02-21T02:00"), node="a")
    assert event["id"] == firing.event_id == twin.event_id != later.event_id
    assert str(uuid.UUID(event["id"])) == event["id"]


def test_stopping_during_a_claim_still_fires_the_claimed_occurrence() -> None:
    """A claim written to the store must not be lost to a stop: no other node can take it."""

    class SlowClaims(LocalClaims):
        async def claim(self, key: str, fire_time: datetime, node: str) -> bool:
            won = await super().claim(key, fire_time, node)
            claimed.set()
            await asyncio.sleep(0.05)  # the store's answer is on its way back
            return won

    claimed: asyncio.Event

    async def main() -> None:
        nonlocal claimed
        claimed = asyncio.Event()
        fired, fire = recorder()
        clock = FakeClock(utc("2024-01-01T10:00:01"))
        scheduler = Scheduler([HOURLY], fire, SlowClaims(), clock=clock, max_sleep=0.01)
        scheduler.start()
        await asyncio.wait_for(claimed.wait(), 5)
        await scheduler.stop()
        assert [f.fire_time for f in fired] == [utc("2024-01-01T10:00")]

    asyncio.run(main())
