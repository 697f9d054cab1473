"""One scheduler "node" in its own process, for tests/functions/test_scheduler.py.

    python -m tests.functions.scheduler_node CLAIMS PREFIX PERIOD_MS OUT_FILE

CLAIMS is a redis:// URL or a SQLite file path. The node schedules one job every PERIOD_MS
milliseconds and appends to OUT_FILE a line "ready" once it runs, then "<fire time ms> <node>"
for every occurrence it wins, flushed at once (the test may kill it with SIGKILL at any time).
"""

from __future__ import annotations

import asyncio
import os
import sys
from datetime import timedelta

from gateway.functions.schedule import RateSchedule
from gateway.functions.scheduler import ClaimStore, Firing, RedisClaims, ScheduledJob, Scheduler, SQLiteClaims


async def main(claims_spec: str, prefix: str, period_ms: int, out_path: str) -> None:
    claims: ClaimStore
    if claims_spec.startswith("redis://"):
        claims = RedisClaims.from_url(claims_spec, prefix=prefix)
    else:
        claims = SQLiteClaims(claims_spec)
    out = open(out_path, "a", buffering=1)  # noqa: SIM115 (open for the process's whole life)
    node = f"pid{os.getpid()}"

    async def fire(firing: Firing) -> None:
        out.write(f"{round(firing.fire_time.timestamp() * 1000)} {firing.node}\n")

    job = ScheduledJob(key=f"{prefix}tick", schedule=RateSchedule(period=timedelta(milliseconds=period_ms)))
    scheduler = Scheduler([job], fire, claims, node=node)
    scheduler.start()
    out.write("ready\n")
    await asyncio.Event().wait()  # until killed


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]))
