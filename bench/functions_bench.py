#!/usr/bin/env python3
"""Issue 4's latency figures for functions behind HTTP routes: cold start and warm overhead.

Layout on the 2-core machine: CPU 0 runs lambdagate (one worker; the function's sandbox parent
and its instances are the worker's children and inherit the pinning), CPU 1 runs this script,
the client. The client is a minimal keep-alive HTTP/1.1 client on a raw socket (one prebuilt
request, responses read by Content-Length), so that its own cost stays in the tens of µs.

1. Cold start (bar: p50 <= 15 ms). The python hello function of the issue's example
   (examples/functions/hello, payload 2.0) with provisioned = 0 and idle_timeout = 100ms: after
   each request the client waits --cold-gap seconds, until the pool has reaped the instance
   and no instance of the function is left (checked in /proc: no process of the sandbox user
   below the gateway but the preloaded parent), then sends GET /hello/cold-N. The time from
   send to the last byte of the response is one cold start: no instance -> fork from the
   preloaded parent -> invocation socket -> handler -> response. Every response is verified to be a
   cold start by the gateway's REPORT log line for its request id (it has "Init Duration" only
   on an instance's first invocation) and by the instance name, new each time.
2. Warm overhead (bar: p50 <= 250 µs). Sequential keep-alive requests, alternating a static
   route (200 "ok" answered by the gateway itself) and a trivial function route (a warm,
   provisioned instance returning its request id). Per function request, the gateway's
   overhead is its end-to-end latency minus the handler's own time, the REPORT line's Duration
   for that request id (as on Lambda, Duration runs from the runtime receiving the event to the
   gateway receiving its response, so it includes the runtime client's loop in the sandbox).
   Also reported: function route minus static route (p50 against p50), which charges the
   function path with everything beyond a route the gateway answers itself.

    .venv/bin/python bench/functions_bench.py                   # both, 50 cold starts
    .venv/bin/python bench/functions_bench.py --cold 20 --warm 500

Throughput of a trivial function route against nginx is measured by bench/proxy_vs_nginx.py
with --gateway-config bench/scenarios/function_route.toml.in.
"""

from __future__ import annotations

import argparse
import json
import os
import pwd
import shlex
import shutil
import socket
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# Run as a script (`python bench/functions_bench.py`), the repository root is not on sys.path.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import (
    BENCH_DIR,
    REPO_DIR,
    CpuGuard,
    CpuReport,
    ManagedProcess,
    ProcessSet,
    add_gateway_options,
    descendants,
    free_port,
    gateway_argv,
    machine_info,
    print_flush,
    process_table,
    render_template,
    require_tools,
    save_results,
    tree_affinity,
    wait_for_http,
)

SUT_CPU = "0"  # the gateway, its sandbox parent and instances
CLIENT_CPU = "1"  # this script
HELLO_CODE = REPO_DIR / "examples" / "functions" / "hello"
TRIVIAL_CODE = BENCH_DIR / "functions" / "trivial"
COLD_IDLE_TIMEOUT_S = 0.1
COLD_BAR_P50_MS = 15.0
WARM_BAR_P50_US = 250.0

CONFIG_TEMPLATE = """\
# Rendered by bench/functions_bench.py.
[server]
listen = "127.0.0.1:@PORT@"
workers = 1
access_log = "off"

[store]
path = "@WORKDIR@/state.db"

# Cold starts: no instance is kept (provisioned = 0) and an idle one is reaped after 100 ms.
[functions.hello]
code = "@HELLO_CODE@"
handler = "app.handler"
runtime = "python"
timeout = "3s"
memory = "128MiB"
concurrency = 8
provisioned = 0
idle_timeout = "@COLD_IDLE_TIMEOUT@"
env = { GREETING = "hello" }

# Warm invocations: one provisioned instance, never reaped during the run.
[functions.trivial]
code = "@TRIVIAL_CODE@"
handler = "app.request_id"
runtime = "python"
timeout = "3s"
memory = "128MiB"
concurrency = 1
provisioned = 1
idle_timeout = "10m"

[[routes]]
path = "/hello/{name}"
methods = ["GET", "POST"]
function = "hello"
payload = "2.0"

[[routes]]
path = "/trivial"
function = "trivial"
payload = "2.0"

[[routes]]
path = "/static"
[routes.static]
status = 200
body = "ok"
"""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cold", type=int, default=50, help="cold starts to measure (default 50; 0 = skip)")
    p.add_argument(
        "--cold-gap",
        type=float,
        default=0.4,
        help="seconds to wait after a cold start before the next (default 0.4; the instance is "
        "reaped 100-150 ms after its invocation)",
    )
    p.add_argument("--warm", type=int, default=3000, help="measured warm pairs (default 3000; 0 = skip)")
    p.add_argument("--warm-warmup", type=int, default=300, help="discarded warm pairs first (default 300)")
    add_gateway_options(p, standin=False)
    p.add_argument(
        "--idle-wait", type=float, default=30.0, help="max seconds to wait for a quiet machine per phase"
    )
    args = p.parse_args(argv)
    if args.cold < 0 or args.warm < 0 or args.warm_warmup < 0 or args.cold_gap <= COLD_IDLE_TIMEOUT_S:
        p.error("counts must be at least 0 and --cold-gap longer than the idle timeout (0.1 s)")
    return args


# ----------------------------------------------------------------------------------------------
# Figures (pure)
# ----------------------------------------------------------------------------------------------


def percentile(values: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile (a value that was measured, never an interpolation)."""
    if not values:
        raise ValueError("percentile of no values")
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * pct // 100))
    return ordered[int(rank) - 1]


def distribution(values: Sequence[float]) -> dict[str, float]:
    return {
        "n": len(values),
        "min": min(values),
        "p50": percentile(values, 50),
        "p90": percentile(values, 90),
        "p99": percentile(values, 99),
        "max": max(values),
    }


@dataclass(frozen=True)
class Report:
    """One invocation's REPORT line, as the gateway logged it."""

    request_id: str
    instance: str
    duration_ms: float
    init_duration_ms: float | None


def parse_report(message: str) -> tuple[float, float | None]:
    """(Duration, Init Duration or None) in ms from AWS's tab-separated REPORT line."""
    fields: dict[str, str] = {}
    for part in message.split("\t")[1:]:
        key, sep, value = part.partition(": ")
        if sep:
            fields[key.strip()] = value.strip()
    if "Duration" not in fields:
        raise ValueError(f"REPORT line without Duration: {message!r}")

    def ms(value: str) -> float:
        number, _, unit = value.partition(" ")
        if unit != "ms":
            raise ValueError(f"unexpected unit in {value!r}")
        return float(number)

    init = fields.get("Init Duration")
    return ms(fields["Duration"]), ms(init) if init is not None else None


def read_reports(log_path: Path) -> dict[str, Report]:
    """Every REPORT line of the gateway's JSON log, by request id."""
    reports: dict[str, Report] = {}
    for line in log_path.read_text(errors="replace").splitlines():
        if '"REPORT RequestId: ' not in line:
            continue
        record = json.loads(line)
        duration, init = parse_report(record["msg"])
        reports[record["request_id"]] = Report(record["request_id"], record["instance"], duration, init)
    return reports


# ----------------------------------------------------------------------------------------------
# Client
# ----------------------------------------------------------------------------------------------


class KeepAliveClient:
    """HTTP/1.1 GETs over one connection; responses must carry Content-Length."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buffer = b""

    def close(self) -> None:
        self.sock.close()

    @staticmethod
    def request_bytes(path: str) -> bytes:
        return f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: functions-bench\r\n\r\n".encode()

    def exchange(self, request: bytes) -> tuple[int, bytes, int]:
        """Send a prebuilt request; (status, body, nanoseconds from send to the body's last byte)."""
        started = time.perf_counter_ns()
        self.sock.sendall(request)
        while b"\r\n\r\n" not in self.buffer:
            self.buffer += self._recv()
        head, _, rest = self.buffer.partition(b"\r\n\r\n")
        length = -1
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        if length < 0:
            raise RuntimeError(f"response without Content-Length: {head[:300]!r}")
        while len(rest) < length:
            rest += self._recv()
        elapsed = time.perf_counter_ns() - started
        self.buffer = rest[length:]
        status = int(head.split(b" ", 2)[1])
        return status, rest[:length], elapsed

    def _recv(self) -> bytes:
        data = self.sock.recv(65536)
        if not data:
            raise RuntimeError("the gateway closed the connection")
        return data


# ----------------------------------------------------------------------------------------------
# Gateway
# ----------------------------------------------------------------------------------------------


def sandbox_uid() -> int:
    """The user instances run as when the gateway is root (gateway.functions.sandbox)."""
    return pwd.getpwnam("nobody").pw_uid if os.geteuid() == 0 else os.geteuid()


def process_uid(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("Uid:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def function_name_of(pid: int) -> str | None:
    """AWS_LAMBDA_FUNCTION_NAME from a process's initial environment (sandboxes get it at start)."""
    try:
        environ = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return None
    for entry in environ.split(b"\0"):
        if entry.startswith(b"AWS_LAMBDA_FUNCTION_NAME="):
            return entry.partition(b"=")[2].decode()
    return None


def instance_processes(gateway_pid: int, uid: int, function: str) -> list[int]:
    """Instances of one function: processes of the sandbox user below another such process (the
    function's preloaded parent forks them), with the function's name in their environment."""
    table = process_table()
    sandboxed = {pid for pid in descendants(table, [gateway_pid]) if process_uid(pid) == uid}
    return sorted(
        pid for pid in sandboxed if table[pid].ppid in sandboxed and function_name_of(pid) == function
    )


def start_gateway(
    procs: ProcessSet, workdir: Path, args: argparse.Namespace
) -> tuple[ManagedProcess, int, str]:
    port = free_port()
    text = render_template(
        CONFIG_TEMPLATE,
        {
            "PORT": str(port),
            "WORKDIR": str(workdir),
            "HELLO_CODE": str(HELLO_CODE),
            "TRIVIAL_CODE": str(TRIVIAL_CODE),
            "COLD_IDLE_TIMEOUT": f"{int(COLD_IDLE_TIMEOUT_S * 1000)}ms",
        },
    )
    config = workdir / "lambdagate.toml"
    config.write_text(text)
    argv = gateway_argv(args.gateway_cmd, config=config, port=port, workdir=workdir)
    process = procs.start("lambdagate", argv, cpus=SUT_CPU)
    wait_for_http(process, port, "/static", args.startup_timeout)
    return process, port, text


def check_code_readable(folder: Path) -> None:
    """The sandbox user must reach the code: every folder up to it searchable by others."""
    for part in (folder, *folder.parents):
        if not part.stat().st_mode & 0o001:
            raise SystemExit(f"{part} is not searchable by other users: the sandbox cannot read {folder}")


def wait_for_reports(log_path: Path, request_ids: Sequence[str], timeout_s: float = 5.0) -> dict[str, Report]:
    deadline = time.monotonic() + timeout_s
    while True:
        reports = read_reports(log_path)
        missing = [rid for rid in request_ids if rid not in reports]
        if not missing:
            return reports
        if time.monotonic() >= deadline:
            raise RuntimeError(f"{len(missing)} request ids without a REPORT line, e.g. {missing[0]}")
        time.sleep(0.1)


# ----------------------------------------------------------------------------------------------
# Phases
# ----------------------------------------------------------------------------------------------


def quiet_phase(
    args: argparse.Namespace, roots: Mapping[str, int], work: Callable[[], dict[str, Any]]
) -> dict[str, Any]:
    """Run one phase once the machine is quiet; record its load and other processes' CPU."""
    guard = CpuGuard(roots=roots)
    busy = guard.wait_until_idle(args.idle_wait)
    load = os.getloadavg()
    guard.start()
    result = work()
    cpu: CpuReport = guard.stop()
    result["machine"] = {
        "busy_pct_of_one_core_before": round(busy, 1),
        "loadavg_before": [round(v, 2) for v in load],
        "cpu_guard": cpu.as_dict(),
    }
    return result


def cold_starts(args: argparse.Namespace, gateway: ManagedProcess, port: int) -> dict[str, Any]:
    uid = sandbox_uid()
    client = KeepAliveClient(port)
    latencies_ms: list[float] = []
    request_ids: list[str] = []
    waited_for_reap = 0
    try:
        for n in range(args.cold):
            time.sleep(args.cold_gap)
            # The preloaded parent stays up (that is the design); its instances must be gone.
            deadline = time.monotonic() + 5.0
            while instance_processes(gateway.pid, uid, "hello"):
                if time.monotonic() >= deadline:
                    raise RuntimeError(f"cold start {n}: an instance of hello is still alive")
                waited_for_reap += 1
                time.sleep(0.05)
            status, body, elapsed_ns = client.exchange(KeepAliveClient.request_bytes(f"/hello/cold-{n}"))
            decoded = json.loads(body)
            if status != 200 or decoded.get("message") != f"hello, cold-{n}!":
                raise RuntimeError(f"cold start {n}: unexpected answer {status} {body[:200]!r}")
            latencies_ms.append(elapsed_ns / 1e6)
            request_ids.append(decoded["request_id"])
    finally:
        client.close()
    reports = wait_for_reports(gateway.log_path, request_ids)
    matched = [reports[rid] for rid in request_ids]
    not_cold = [r.request_id for r in matched if r.init_duration_ms is None]
    instances = [r.instance for r in matched]
    if not_cold or len(set(instances)) != len(instances):
        raise RuntimeError(
            f"not every request was a cold start: {len(not_cold)} without Init Duration, "
            f"{len(instances) - len(set(instances))} on a reused instance"
        )
    init_ms = [r.init_duration_ms for r in matched if r.init_duration_ms is not None]
    return {
        "method": (
            "provisioned = 0, idle_timeout = 100ms; before each request wait --cold-gap s and until no "
            "instance process is left; every response's REPORT line has Init Duration and a new instance"
        ),
        "requests": len(latencies_ms),
        "end_to_end_ms": distribution(latencies_ms),
        "init_duration_ms": distribution(init_ms),
        "handler_duration_ms": distribution([r.duration_ms for r in matched]),
        "extra_waits_for_reaping": waited_for_reap,
        "latencies_ms": [round(v, 4) for v in latencies_ms],
        "instances": instances,
    }


def warm_overhead(args: argparse.Namespace, gateway: ManagedProcess, port: int) -> dict[str, Any]:
    client = KeepAliveClient(port)
    static_request = KeepAliveClient.request_bytes("/static")
    function_request = KeepAliveClient.request_bytes("/trivial")
    static_us: list[float] = []
    function_us: list[float] = []
    request_ids: list[str] = []
    try:
        for i in range(args.warm_warmup + args.warm):
            status, body, static_ns = client.exchange(static_request)
            if status != 200 or body != b"ok":
                raise RuntimeError(f"static route answered {status} {body[:200]!r}")
            status, body, function_ns = client.exchange(function_request)
            if status != 200 or len(body) != 36:
                raise RuntimeError(f"function route answered {status} {body[:200]!r}")
            if i >= args.warm_warmup:
                static_us.append(static_ns / 1e3)
                function_us.append(function_ns / 1e3)
                request_ids.append(body.decode())
    finally:
        client.close()
    reports = wait_for_reports(gateway.log_path, request_ids)
    handler_us = [reports[rid].duration_ms * 1e3 for rid in request_ids]
    cold = sum(reports[rid].init_duration_ms is not None for rid in request_ids)
    overhead_us = [total - handler for total, handler in zip(function_us, handler_us, strict=True)]
    return {
        "method": (
            "alternating sequential keep-alive GETs of a static route and a trivial function route "
            "(one provisioned instance); overhead = end-to-end latency - REPORT Duration, per request"
        ),
        "requests": len(function_us),
        "cold_starts_among_measured": cold,
        "function_end_to_end_us": distribution(function_us),
        "handler_duration_us": distribution(handler_us),
        "overhead_us": distribution(overhead_us),
        "static_end_to_end_us": distribution(static_us),
        "function_minus_static_p50_us": percentile(function_us, 50) - percentile(static_us, 50),
    }


# ----------------------------------------------------------------------------------------------
# Main
# ----------------------------------------------------------------------------------------------


def verdict(value: float, bar: float) -> str:
    return "meets the bar" if value <= bar else "MISSES THE BAR"


def summary_lines(results: Mapping[str, Any]) -> list[str]:
    lines: list[str] = []
    if "cold" in results:
        c = results["cold"]
        e2e, init = c["end_to_end_ms"], c["init_duration_ms"]
        lines.append(
            f"cold start, {c['requests']} requests: end-to-end p50 {e2e['p50']:.2f} ms, "
            f"p90 {e2e['p90']:.2f} ms, min {e2e['min']:.2f}, max {e2e['max']:.2f}  "
            f"({verdict(e2e['p50'], COLD_BAR_P50_MS)}: p50 <= {COLD_BAR_P50_MS:g} ms); "
            f"Init Duration p50 {init['p50']:.2f} ms, p90 {init['p90']:.2f} ms"
        )
    if "warm" in results:
        w = results["warm"]
        o, f, h, s = (
            w["overhead_us"],
            w["function_end_to_end_us"],
            w["handler_duration_us"],
            w["static_end_to_end_us"],
        )
        lines.append(
            f"warm, {w['requests']} requests: overhead (end-to-end - Duration) p50 {o['p50']:.0f} us, "
            f"p90 {o['p90']:.0f} us  ({verdict(o['p50'], WARM_BAR_P50_US)}: p50 <= {WARM_BAR_P50_US:g} us)"
        )
        lines.append(
            f"  function route end-to-end p50 {f['p50']:.0f} us (p99 {f['p99']:.0f}); handler Duration p50 "
            f"{h['p50']:.0f} us; static route p50 {s['p50']:.0f} us; function - static p50 "
            f"{w['function_minus_static_p50_us']:.0f} us"
        )
    for phase in ("cold", "warm"):
        if phase in results:
            m = results[phase]["machine"]
            lines.append(
                f"  {phase} phase: load average {m['loadavg_before'][0]:.2f} before, other processes used "
                f"{m['cpu_guard']['foreign_cpu_s']:.2f} CPU-s in {m['cpu_guard']['seconds']:.1f} s"
            )
    return lines


def benchmark(args: argparse.Namespace, workdir: Path, procs: ProcessSet) -> Path:
    check_code_readable(HELLO_CODE)
    check_code_readable(TRIVIAL_CODE)
    gateway, port, config_text = start_gateway(procs, workdir, args)
    affinity = tree_affinity(gateway.pid)
    print_flush("lambdagate: " + ", ".join(f"pid {pid} on CPU {cpus}" for pid, cpus in affinity.items()))
    print_flush(
        f"gateway (and its sandboxes) on CPU {SUT_CPU}, client on CPU {CLIENT_CPU}; work dir {workdir}"
    )
    roots = {"gateway": gateway.pid}
    results: dict[str, Any] = {}
    if args.cold:
        results["cold"] = quiet_phase(args, roots, lambda: cold_starts(args, gateway, port))
    if args.warm:
        results["warm"] = quiet_phase(args, roots, lambda: warm_overhead(args, gateway, port))
    if not gateway.running():
        raise RuntimeError(f"the gateway exited during the run; log tail:\n{gateway.log_tail()}")
    lines = summary_lines(results)
    print_flush()
    print_flush("\n".join(lines))
    data: dict[str, Any] = {
        "benchmark": "functions",
        "command_line": shlex.join([sys.executable, *sys.argv]),
        "settings": vars(args),
        "machine": machine_info(),
        "pinning": {"gateway_and_sandboxes": f"CPU {SUT_CPU}", "client": f"CPU {CLIENT_CPU}"},
        "gateway": {"argv": gateway.argv, "cpu_affinity": affinity, "config": config_text},
        "bars": {"cold_p50_ms": COLD_BAR_P50_MS, "warm_overhead_p50_us": WARM_BAR_P50_US},
        "summary": lines,
        "results": results,
    }
    return save_results("functions", data)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    require_tools("taskset")
    allowed = os.sched_getaffinity(0)
    if not {int(SUT_CPU), int(CLIENT_CPU)} <= allowed:
        raise SystemExit(f"needs CPUs {SUT_CPU} and {CLIENT_CPU}; this process may use {sorted(allowed)}")
    os.sched_setaffinity(0, {int(CLIENT_CPU)})
    workdir = Path(tempfile.mkdtemp(prefix="lambdagate-fnbench-"))
    succeeded = False
    try:
        with ProcessSet(workdir) as procs:
            path = benchmark(args, workdir, procs)
            succeeded = True
            print_flush(f"results: {path}")
            return 0
    except RuntimeError as exc:
        print_flush(f"!!! {exc}")
        return 1
    except KeyboardInterrupt:
        print_flush("interrupted")
        return 130
    finally:
        if succeeded and not args.keep_workdir:
            shutil.rmtree(workdir, ignore_errors=True)
        else:
            print_flush(f"config and gateway log kept in {workdir}")


if __name__ == "__main__":
    sys.exit(main())
