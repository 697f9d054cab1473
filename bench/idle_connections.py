#!/usr/bin/env python3
"""Memory of one lambdagate worker holding 10,000 idle keep-alive connections (target: < 60 MiB).

Starts lambdagate with one worker and a static GET /health route, opens the connections (each
sends one request, reads the answer and then stays open and idle), and reads the worker's VmRSS
before and after. The gateway runs on CPU 0, this client on CPU 1.

    .venv/bin/python bench/idle_connections.py
    .venv/bin/python bench/idle_connections.py --gateway-standin nginx --connections 2000  # harness check
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shlex
import shutil
import socket
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# Run as a script (`python bench/idle_connections.py`), the repository root is not on sys.path.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import (
    BENCH_DIR,
    ManagedProcess,
    ProcessSet,
    add_gateway_options,
    child_pids,
    free_port,
    gateway_argv,
    http_get,
    machine_info,
    nginx_command,
    nginx_user_line,
    prepare_nginx_prefix,
    print_flush,
    raised_nofile_limit,
    render_gateway_config,
    render_template,
    require_tools,
    save_results,
    vm_rss_kb,
    wait_for_http,
)

SERVER_CPU = 0
CLIENT_CPU = 1
HEALTH_PATH = "/health"
EXPECTED_BODY = b"ok"
# Descriptors beyond the connections themselves (stdio, the event loop, logs, a probe).
SPARE_FDS = 256


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--connections", type=int, default=10_000, help="idle connections to hold (default 10000)")
    p.add_argument("--limit-mib", type=float, default=60.0, help="worker RSS target in MiB (default 60)")
    p.add_argument("--concurrency", type=int, default=200, help="connections being opened at once")
    p.add_argument("--connect-timeout", type=float, default=15.0, help="seconds for one connect + request")
    p.add_argument("--settle", type=float, default=2.0, help="seconds idle before reading RSS (default 2)")
    p.add_argument(
        "--gateway-config",
        type=Path,
        help="TOML to run lambdagate with instead of bench/lambdagate-idle.toml.in (@PORT@ filled in; "
        "without it give --gateway-port); it must answer GET /health with 200 ok",
    )
    add_gateway_options(p)
    args = p.parse_args(argv)
    if args.connections < 1 or args.concurrency < 1:
        p.error("--connections and --concurrency must be at least 1")
    return args


# ----------------------------------------------------------------------------------------------
# The gateway
# ----------------------------------------------------------------------------------------------


@dataclass
class Gateway:
    port: int
    process: ManagedProcess
    config_text: str


def start_gateway(args: argparse.Namespace, workdir: Path, procs: ProcessSet, nofile: int) -> Gateway:
    cpus = str(SERVER_CPU)
    if args.gateway_standin == "nginx":
        prefix = workdir / "nginx"
        prepare_nginx_prefix(prefix)
        port = free_port()
        # Twice the room: nginx starts closing idle keep-alive connections ("worker_connections
        # are not enough, reusing connections") before its connection table is completely full.
        text = render_template(
            (BENCH_DIR / "nginx" / "static.conf.in").read_text(),
            {
                "PREFIX": str(prefix),
                "PORT": str(port),
                "USER_LINE": nginx_user_line(),
                "NOFILE": str(2 * nofile),
            },
        )
        conf = prefix / "nginx.conf"
        conf.write_text(text)
        return Gateway(port, procs.start("gateway", nginx_command(prefix, conf), cpus=cpus), text)
    text, port = render_gateway_config(
        args.gateway_config or BENCH_DIR / "lambdagate-idle.toml.in", args.gateway_port
    )
    config = workdir / "lambdagate.toml"
    config.write_text(text)
    argv = gateway_argv(args.gateway_cmd, config=config, port=port, workdir=workdir)
    return Gateway(port, procs.start("gateway", argv, cpus=cpus), text)


def find_worker(master: ManagedProcess, timeout_s: float = 10.0) -> tuple[int, list[int]]:
    """The worker process (the master's child) and all children seen; the master itself if it
    never forks one (then its RSS is what serves the connections)."""
    deadline = time.monotonic() + timeout_s
    while True:
        children = child_pids(master.pid)
        if children or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    if not children:
        print_flush(
            f"note: {master.name} (pid {master.pid}) has no child process; measuring the master itself"
        )
        return master.pid, []
    if len(children) > 1:
        print_flush(f"note: {len(children)} children of the master ({children}); measuring the largest")
    return max(children, key=vm_rss_kb), children


# ----------------------------------------------------------------------------------------------
# The idle connections
# ----------------------------------------------------------------------------------------------

REQUEST = (
    f"GET {HEALTH_PATH} HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: lambdagate-idle-bench\r\n\r\n".encode()
)


class BadResponse(Exception):
    pass


def complete_response(data: bytes) -> tuple[int, bytes] | None:
    """(status, body) once `data` holds a whole Content-Length-framed response, else None."""
    head_end = data.find(b"\r\n\r\n")
    if head_end < 0:
        return None
    lines = data[:head_end].split(b"\r\n")
    parts = lines[0].split(b" ", 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or not parts[1].isdigit():
        raise BadResponse(f"bad status line {lines[0][:100]!r}")
    length: int | None = None
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip())
    if length is None:
        raise BadResponse("response without Content-Length")
    body = data[head_end + 4 :]
    return (int(parts[1]), body[:length]) if len(body) >= length else None


async def open_idle_connection(port: int) -> socket.socket:
    loop = asyncio.get_running_loop()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setblocking(False)
    try:
        await loop.sock_connect(sock, ("127.0.0.1", port))
        await loop.sock_sendall(sock, REQUEST)
        data = b""
        while (answer := complete_response(data)) is None:
            chunk = await loop.sock_recv(sock, 4096)
            if not chunk:
                raise BadResponse("connection closed before the response was complete")
            data += chunk
        status, body = answer
        if status != 200 or body != EXPECTED_BODY:
            raise BadResponse(f"GET {HEALTH_PATH} answered {status} {body[:100]!r}")
        return sock
    except BaseException:
        sock.close()
        raise


@dataclass
class Opened:
    sockets: list[socket.socket]
    seconds: float
    errors: dict[str, int] = field(default_factory=dict)

    @property
    def failed(self) -> int:
        return sum(self.errors.values())


async def open_idle_connections(port: int, count: int, concurrency: int, timeout_s: float) -> Opened:
    # Bounded so the listen backlog never overflows (an overflow shows up as slow SYN retries).
    gate = asyncio.Semaphore(concurrency)

    async def one() -> socket.socket:
        async with gate:
            return await asyncio.wait_for(open_idle_connection(port), timeout_s)

    started = time.monotonic()
    outcomes = await asyncio.gather(*(one() for _ in range(count)), return_exceptions=True)
    opened = Opened([], time.monotonic() - started)
    for outcome in outcomes:
        if isinstance(outcome, socket.socket):
            opened.sockets.append(outcome)
        elif isinstance(outcome, BaseException):
            kind = f"{type(outcome).__name__}: {outcome}"[:120]
            opened.errors[kind] = opened.errors.get(kind, 0) + 1
    return opened


def count_still_open(sockets: list[socket.socket]) -> tuple[int, int, int]:
    """(idle, closed by the server, with unexpected bytes) without consuming anything."""
    idle = closed = unexpected = 0
    for sock in sockets:
        try:
            peeked = sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
        except BlockingIOError:
            idle += 1
            continue
        except OSError:
            closed += 1
            continue
        if peeked:
            unexpected += 1
        else:
            closed += 1
    return idle, closed, unexpected


def timed_probe(port: int) -> dict[str, Any]:
    """A fresh request while the idle connections are held: the worker still serves."""
    started = time.perf_counter()
    try:
        status, body = http_get(port, HEALTH_PATH)
    except OSError as exc:
        return {"ok": False, "error": str(exc)}
    ms = 1e3 * (time.perf_counter() - started)
    return {"ok": status == 200 and body == EXPECTED_BODY, "status": status, "ms": round(ms, 3)}


# ----------------------------------------------------------------------------------------------


def mib(kib: int) -> float:
    return kib / 1024


def measure(args: argparse.Namespace, workdir: Path, procs: ProcessSet, nofile: int) -> dict[str, Any]:
    gateway = start_gateway(args, workdir, procs, nofile)
    wait_for_http(gateway.process, gateway.port, HEALTH_PATH, args.startup_timeout)
    status, body = http_get(gateway.port, HEALTH_PATH)
    if status != 200 or body != EXPECTED_BODY:
        raise SystemExit(f"CHECK FAILED: GET {HEALTH_PATH} answered {status} {body[:200]!r}, expected 200 ok")
    worker, children = find_worker(gateway.process)
    time.sleep(0.5)
    baseline_kib = vm_rss_kb(worker)
    master_baseline_kib = vm_rss_kb(gateway.process.pid)
    print_flush(f"worker pid {worker}: baseline RSS {mib(baseline_kib):.1f} MiB; opening {args.connections}")

    opened = asyncio.run(
        open_idle_connections(gateway.port, args.connections, args.concurrency, args.connect_timeout)
    )
    try:
        print_flush(
            f"opened {len(opened.sockets)} connections in {opened.seconds:.1f} s ({opened.failed} failed); "
            f"idling {args.settle:.0f} s"
        )
        for kind, n in sorted(opened.errors.items(), key=lambda kv: -kv[1])[:5]:
            print_flush(f"  !!! {n} x {kind}")
        time.sleep(args.settle)
        loaded_kib = vm_rss_kb(worker)
        master_loaded_kib = vm_rss_kb(gateway.process.pid)
        idle, closed, unexpected = count_still_open(opened.sockets)
        probe = timed_probe(gateway.port)
    finally:
        for sock in opened.sockets:
            sock.close()

    per_conn = 1024 * (loaded_kib - baseline_kib) / max(1, len(opened.sockets))
    problems: list[str] = []
    if opened.failed:
        problems.append(f"{opened.failed} connections failed")
    if idle != len(opened.sockets):
        problems.append(
            f"only {idle} of {len(opened.sockets)} stayed open ({closed} closed, {unexpected} spoke)"
        )
    if not probe["ok"]:
        problems.append(f"a fresh request while idle failed: {probe}")
    within = mib(loaded_kib) < args.limit_mib
    if not within:
        problems.append(f"worker RSS {mib(loaded_kib):.1f} MiB is not under {args.limit_mib:.0f} MiB")
    return {
        "connections_requested": args.connections,
        "connections_opened": len(opened.sockets),
        "connections_failed": opened.failed,
        "connect_errors": opened.errors,
        "open_seconds": round(opened.seconds, 3),
        "still_open": idle,
        "closed_by_server": closed,
        "unexpected_bytes": unexpected,
        "worker_pid": worker,
        "children_of_master": children,
        "worker_rss_baseline_kib": baseline_kib,
        "worker_rss_loaded_kib": loaded_kib,
        "worker_rss_growth_bytes_per_connection": round(per_conn, 1),
        "master_rss_baseline_kib": master_baseline_kib,
        "master_rss_loaded_kib": master_loaded_kib,
        "limit_mib": args.limit_mib,
        "within_limit": within,
        "probe_while_idle": probe,
        "problems": problems,
        "gateway_argv": gateway.process.argv,
        "gateway_config": gateway.config_text,
        "gateway_log_tail": gateway.process.log_tail(),
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    require_tools("taskset", *(["nginx"] if args.gateway_standin == "nginx" else []))
    # The client's connections count against this process's descriptors; the gateway raises its
    # own limit, and inherits this one (a stand-in nginx is told its limit in the config).
    nofile = args.connections + SPARE_FDS
    with contextlib.suppress(OSError):
        os.sched_setaffinity(0, {CLIENT_CPU})
    workdir = Path(tempfile.mkdtemp(prefix="lambdagate-idle-"))
    succeeded = False
    try:
        with raised_nofile_limit(nofile), ProcessSet(workdir) as procs:
            figures = measure(args, workdir, procs, nofile)
        data = {
            "benchmark": "idle_connections",
            "command_line": shlex.join([sys.executable, *sys.argv]),
            "settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
            "machine": machine_info(),
            "gateway_standin": args.gateway_standin,
            "valid": not figures["problems"],
            **figures,
        }
        path = save_results("idle", data)
        base, loaded = figures["worker_rss_baseline_kib"], figures["worker_rss_loaded_kib"]
        verdict = "OK" if figures["within_limit"] else "OVER"
        print_flush(
            f"worker RSS: {mib(base):.1f} MiB baseline -> {mib(loaded):.1f} MiB with "
            f"{figures['still_open']} idle connections "
            f"({figures['worker_rss_growth_bytes_per_connection']:.0f} bytes per connection); "
            f"target < {args.limit_mib:.0f} MiB: {verdict}"
        )
        print_flush(f"fresh request while idle: {figures['probe_while_idle']}")
        print_flush(f"results: {path}")
        if args.gateway_standin:
            print_flush(f"NOTE: a stand-in ({args.gateway_standin}) ran instead of lambdagate")
        for problem in figures["problems"]:
            print_flush(f"!!! {problem}")
        succeeded = not figures["problems"]
        return 0 if succeeded else 1
    except RuntimeError as exc:  # a server that would not start or answer: already explained
        print_flush(f"!!! {exc}")
        return 1
    except KeyboardInterrupt:  # the servers are already stopped by ProcessSet
        print_flush("interrupted")
        return 130
    finally:
        if succeeded and not args.keep_workdir:
            shutil.rmtree(workdir, ignore_errors=True)
        else:
            print_flush(f"config and gateway log kept in {workdir}")


if __name__ == "__main__":
    sys.exit(main())
