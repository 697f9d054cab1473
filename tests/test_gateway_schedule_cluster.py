"""A schedule shared by two real gateway processes through one Redis fires each occurrence once.

Both gateways run the same function with the same `rate(1 second)` trigger and `[store] redis`;
they differ only in their ports and in GATEWAY_NODE, an `env` variable the function reports. The
function (tests/functions/handlers/schedule_recorder) leaves one file per invocation in a shared
folder, named uniquely, so an occurrence that runs twice leaves two files. One gateway is stopped
with SIGTERM half way through; the other must carry the schedule alone.

A file names the gateway that *ran* the occurrence, not the one that claimed it: a firing queues
an Event invocation on the function's Redis stream, and whichever gateway's consumer is first in
line runs it (in practice one consumer keeps winning, since it re-blocks right after each run).
So the test asserts once-per-occurrence across the cluster, not a share per gateway.

The stop is sent half a period after an occurrence, as tests/functions/test_scheduler.py stops a
node: a scheduler cancelled while its claim is in flight can have won the claim in Redis without
queueing the event, and then nobody runs that occurrence (a narrow race of the stop itself, not
what this test is about).
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import httpx
import pytest

from tests.support.gateway_process import GatewayProcess, running_gateway

RECORDER = Path(__file__).resolve().parent / "functions" / "handlers" / "schedule_recorder"
# A full second, as in tests/functions/test_scheduler.py: a loaded machine's event-loop stalls
# stay well below it, so no occurrence is skipped for lateness.
PERIOD_S = 1


@dataclass(frozen=True)
class Run:
    """One invocation of the scheduled function, as its file tells it."""

    fire_time: int  # the occurrence, epoch seconds (the event's `time`)
    event_id: str
    gateway: str


@pytest.fixture
def folders() -> Iterator[tuple[Path, Path]]:
    """The function's code (readable by the sandbox's user, nobody) and the folder it writes to."""
    code = Path(tempfile.mkdtemp(prefix="lambdagate-fn-"))
    code.chmod(0o755)
    for source in RECORDER.glob("*.py"):
        shutil.copy(source, code / source.name)
        (code / source.name).chmod(0o644)
    out = Path(tempfile.mkdtemp(prefix="lambdagate-out-"))
    out.chmod(0o777)
    try:
        yield code, out
    finally:
        shutil.rmtree(code, ignore_errors=True)
        shutil.rmtree(out, ignore_errors=True)


def gateway_config(*, redis_url: str, function: str, code: Path, out: Path, node: str) -> str:
    return f"""
[store]
redis = "{redis_url}"

[functions.{function}]
code = "{code}"
handler = "schedule_recorder.handler"
timeout = "2s"
env = {{ GATEWAY_NODE = "{node}", RECORD_DIR = "{out}" }}

[[triggers]]
function = "{function}"
schedule = "rate(1 second)"

[[routes]]
path = "/health"
static = {{ status = 200, body = "ok" }}
"""


def wait_for(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def serving(gateway: GatewayProcess) -> bool:
    """The worker answers requests, so its functions (and their scheduler) have started."""
    try:
        return httpx.get(f"{gateway.url}/health", timeout=2).status_code == 200
    except httpx.TransportError:
        return False


def read_runs(out: Path) -> list[Run]:
    runs = []
    for path in out.glob("*.json"):
        record = json.loads(path.read_text())
        assert record["detail_type"] == "Scheduled Event"
        fire_time = datetime.fromisoformat(record["time"]).timestamp()
        runs.append(Run(int(fire_time), record["id"], record["gateway"]))
    return runs


def occurrences(low: float, high: float) -> set[int]:
    """The schedule's occurrences (multiples of the period since the epoch) within [low, high]."""
    first = int(low) // PERIOD_S * PERIOD_S
    return {t for t in range(first, int(high) + 1, PERIOD_S) if low <= t <= high}


def test_two_gateways_fire_each_occurrence_once_and_the_survivor_carries_on(
    redis_url: str, folders: tuple[Path, Path]
) -> None:
    code, out = folders
    # A function name of its own: the schedule's claims and the function's queue are keyed by it,
    # and this Redis is shared with the rest of the session.
    function = f"tick_{uuid.uuid4().hex[:8]}"

    def config(node: str) -> str:
        return gateway_config(redis_url=redis_url, function=function, code=code, out=out, node=node)

    with ExitStack() as stack:
        first = stack.enter_context(running_gateway(config("first")))
        wait_for(lambda: serving(first), 15, "the first gateway's worker")
        second = stack.enter_context(running_gateway(config("second")))
        wait_for(lambda: serving(second), 15, "the second gateway's worker")
        started = time.time()
        time.sleep(4.5)
        # SIGTERM half a period after an occurrence: no claim in flight (see the module docstring).
        time.sleep((PERIOD_S / 2 - time.time() % PERIOD_S) % PERIOD_S)
        assert first.stop() == 0  # a graceful stop
        stopped = time.time()
        time.sleep(4.5)
        ended = time.time()
        # Every occurrence in the window, bar the edges, was fired: wait for its run to land (a
        # run starts a few ms after its occurrence; the deadline is for a slow machine).
        expected = occurrences(started + PERIOD_S, ended - PERIOD_S)
        assert len(expected) >= 6
        wait_for(lambda: expected <= {run.fire_time for run in read_runs(out)}, 15, f"runs of {expected}")
        assert second.proc is not None and second.proc.poll() is None, "the second gateway died"
        time.sleep(0.5)  # a duplicate of the latest occurrences would land by now

    runs = read_runs(out)
    counts = Counter(run.fire_time for run in runs)
    duplicates = sorted((run.fire_time, run.gateway) for run in runs if counts[run.fire_time] > 1)
    assert not duplicates, f"occurrences run more than once: {duplicates}"
    # One stable event id per occurrence, as the same occurrence fired twice would share it.
    assert len({run.event_id for run in runs}) == len(runs)
    missing = sorted(expected - set(counts))
    assert not missing, f"occurrences never run: {missing}"

    by_first = [run.fire_time for run in runs if run.gateway == "first"]
    by_second = [run.fire_time for run in runs if run.gateway == "second"]
    assert by_first and all(t <= stopped for t in by_first)
    after_stop = [t for t in by_second if t > stopped]
    assert len(after_stop) >= 3, f"the second gateway stopped firing: {sorted(by_second)}"
