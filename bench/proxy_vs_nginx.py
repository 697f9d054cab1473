#!/usr/bin/env python3
"""lambdagate vs nginx as a plain keep-alive reverse proxy, measured with wrk.

Layout on the 2-core machine: CPU 0 runs the proxy under test (one worker), CPU 1 runs the
nginx upstream (`return 200 "ok"`) and wrk. Both proxies hold a keep-alive pool of 64 to the
upstream. After a correctness check and one discarded warm-up per proxy, wrk runs alternately
nginx, lambdagate, nginx, lambdagate, ... so each pair sees the same machine state; a run during
which other processes used CPU is redone (at most twice) and marked disturbed.

    .venv/bin/python bench/proxy_vs_nginx.py --pairs 3 --duration 10
    .venv/bin/python bench/proxy_vs_nginx.py --gateway-standin nginx --pairs 1 --duration 2  # harness check
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# Run as a script (`python bench/proxy_vs_nginx.py`), the repository root is not on sys.path.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import (
    BENCH_DIR,
    CpuGuard,
    CpuReport,
    ManagedProcess,
    ProcessSet,
    WrkParseError,
    WrkResult,
    add_gateway_options,
    compare,
    free_port,
    gateway_argv,
    http_get,
    machine_info,
    median,
    nginx_command,
    nginx_user_line,
    parse_wrk_output,
    prepare_nginx_prefix,
    print_flush,
    render_gateway_config,
    render_template,
    require_tools,
    save_results,
    summarize_target,
    tcp_active_opens,
    tree_affinity,
    wait_for_http,
)

SUT_CPU = "0"  # the proxy under test
CLIENT_CPU = "1"  # the upstream and wrk
UPSTREAM_BODY = b"ok"
TARGET_ORDER = ("nginx", "lambdagate")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pairs", type=int, default=3, help="measured nginx/lambdagate pairs (default 3)")
    p.add_argument("--duration", type=int, default=10, help="seconds per measured run (default 10)")
    p.add_argument("--warmup", type=int, default=3, help="seconds of the discarded warm-up per target")
    p.add_argument("--connections", type=int, default=64, help="wrk keep-alive connections (default 64)")
    p.add_argument("--path", default="/", help="request path (default /)")
    p.add_argument(
        "--header",
        action="append",
        default=[],
        help='request header for every request, "Name: value" (repeatable), e.g. an API key',
    )
    p.add_argument(
        "--redis",
        action="store_true",
        help="start a redis-server (on the client CPU) and fill @REDIS_URL@ in the gateway config",
    )
    p.add_argument(
        "--nginx-template",
        default="proxy.conf.in",
        help="bench/nginx template of the reference (default proxy.conf.in = proxy_pass; "
        "upstream.conf.in = nginx answering return 200 itself, the reference for cache hits)",
    )
    p.add_argument("--only", choices=TARGET_ORDER, help="measure one target only (no ratios)")
    p.add_argument(
        "--gateway-config",
        type=Path,
        help="TOML to run lambdagate with instead of bench/lambdagate.toml.in; @PORT@ and @UPSTREAM_PORT@ "
        "in it are filled in (without @PORT@, give --gateway-port)",
    )
    add_gateway_options(p, placeholders="{config}, {port}, {upstream_port} and {workdir}")
    p.add_argument(
        "--foreign-max",
        type=float,
        help="CPU-seconds other processes may use during a run before it is redone "
        "(default 5%% of --duration)",
    )
    p.add_argument("--redos", type=int, default=2, help="redos of a disturbed run (default 2)")
    p.add_argument(
        "--idle-wait", type=float, default=20.0, help="max seconds to wait for a quiet machine per run"
    )
    p.add_argument("--keep-running", action="store_true", help="leave the servers up until Ctrl-C (debug)")
    args = p.parse_args(argv)
    if args.pairs < 1 or args.duration < 1 or args.connections < 1 or args.warmup < 0:
        p.error("--pairs, --duration and --connections must be at least 1, --warmup at least 0")
    if args.foreign_max is None:
        args.foreign_max = 0.05 * args.duration
    return args


# ----------------------------------------------------------------------------------------------
# Servers
# ----------------------------------------------------------------------------------------------


@dataclass
class Server:
    name: str
    port: int
    process: ManagedProcess
    config_path: Path
    config_text: str


def wait_for_redis(port: int, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
                sock.sendall(b"PING\r\n")
                if sock.recv(64).startswith(b"+PONG"):
                    return
        except OSError:
            pass
        time.sleep(0.05)
    raise SystemExit(f"redis-server did not answer on port {port}")


def parse_headers(headers: Sequence[str]) -> dict[str, str]:
    """["Name: value", ...] -> {"Name": "value"}."""
    result: dict[str, str] = {}
    for header in headers:
        name, sep, value = header.partition(":")
        if not sep or not name.strip():
            raise SystemExit(f"--header wants 'Name: value', got {header!r}")
        result[name.strip()] = value.strip()
    return result


def start_nginx(
    procs: ProcessSet, workdir: Path, name: str, template: str, cpus: str, **values: str
) -> Server:
    prefix = workdir / name
    prepare_nginx_prefix(prefix)
    port = free_port()
    text = render_template(
        (BENCH_DIR / "nginx" / template).read_text(),
        {"PREFIX": str(prefix), "PORT": str(port), "USER_LINE": nginx_user_line(), **values},
    )
    conf = prefix / "nginx.conf"
    conf.write_text(text)
    process = procs.start(name, nginx_command(prefix, conf), cpus=cpus)
    return Server(name, port, process, conf, text)


def start_lambdagate(
    procs: ProcessSet, workdir: Path, args: argparse.Namespace, upstream_port: int
) -> Server:
    if args.gateway_standin == "nginx":
        return start_nginx(
            procs, workdir, "lambdagate", "proxy.conf.in", SUT_CPU, UPSTREAM_PORT=str(upstream_port)
        )
    text, port = render_gateway_config(
        args.gateway_config or BENCH_DIR / "lambdagate.toml.in",
        args.gateway_port,
        UPSTREAM_PORT=str(upstream_port),
        WORKDIR=str(workdir),
        REDIS_URL=getattr(args, "redis_url", ""),
    )
    config = workdir / "lambdagate.toml"
    config.write_text(text)
    argv = gateway_argv(
        args.gateway_cmd, config=config, port=port, upstream_port=upstream_port, workdir=workdir
    )
    process = procs.start("lambdagate", argv, cpus=SUT_CPU)
    return Server("lambdagate", port, process, config, text)


def check_answers(server: Server, path: str, headers: Sequence[str] = ()) -> None:
    """Correctness before timing: the proxy must relay the upstream's 200 and its body."""
    status, body = http_get(server.port, path, headers=parse_headers(headers))
    if status != 200 or body != UPSTREAM_BODY:
        raise SystemExit(
            f"CORRECTNESS CHECK FAILED: {server.name} answered {status} {body[:200]!r} for GET {path}, "
            f"expected 200 {UPSTREAM_BODY!r}; log tail:\n{server.process.log_tail()}"
        )
    print_flush(f"check {server.name}: GET {path} -> {status} {body!r}")


# ----------------------------------------------------------------------------------------------
# wrk runs
# ----------------------------------------------------------------------------------------------


@dataclass
class Run:
    target: str
    pair: int
    attempt: int
    wrk_argv: list[str]
    wrk_exit: int
    wrk_output: str
    result: WrkResult | None
    cpu: CpuReport
    tcp_active_opens: int
    disturbed: bool
    problems: list[str] = field(default_factory=list)

    @property
    def valid(self) -> bool:
        return self.result is not None and not self.problems

    @property
    def sut_cpu_us_per_request(self) -> float | None:
        sut = self.cpu.roots_cpu_s.get("sut")
        if self.result is None or not self.result.requests or sut is None:
            return None
        return 1e6 * sut / self.result.requests

    def as_dict(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "pair": self.pair,
            "attempt": self.attempt,
            "valid": self.valid,
            "disturbed": self.disturbed,
            "problems": self.problems,
            "wrk": self.result.as_dict() if self.result else None,
            "wrk_exit": self.wrk_exit,
            "wrk_argv": self.wrk_argv,
            "wrk_output": self.wrk_output,
            "sut_cpu_us_per_request": self.sut_cpu_us_per_request,
            "cpu_guard": self.cpu.as_dict(),
            "tcp_active_opens": self.tcp_active_opens,
        }


def wrk_argv(
    port: int, path: str, duration_s: int, connections: int, headers: Sequence[str] = ()
) -> list[str]:
    extra = [arg for header in headers for arg in ("-H", header)]
    return [
        "taskset", "-c", CLIENT_CPU, "wrk", "-t1", f"-c{connections}", f"-d{duration_s}s",
        "--timeout", "2s", "--latency", *extra, f"http://127.0.0.1:{port}{path}",
    ]  # fmt: skip


def run_wrk(argv: list[str], duration_s: int) -> tuple[int, str]:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=duration_s + 60, check=False)
    except subprocess.TimeoutExpired as exc:
        return -1, f"wrk did not finish in time: {exc}"
    return done.returncode, done.stdout + done.stderr


def measure(
    args: argparse.Namespace, server: Server, upstream: Server, pair: int, attempt: int, duration_s: int
) -> Run:
    roots = {"sut": server.process.pid, "upstream": upstream.process.pid, **getattr(args, "extra_roots", {})}
    guard = CpuGuard(roots=roots)
    guard.wait_until_idle(args.idle_wait)
    argv = wrk_argv(server.port, args.path, duration_s, args.connections, args.header)
    opens_before = tcp_active_opens()
    guard.start()
    exit_code, output = run_wrk(argv, duration_s)
    cpu = guard.stop()
    opens = tcp_active_opens() - opens_before
    problems: list[str] = []
    result: WrkResult | None = None
    try:
        result = parse_wrk_output(output)
        problems.extend(result.problems())
    except WrkParseError as exc:
        problems.append(f"unparsable wrk output ({exc})")
    if exit_code != 0:
        problems.append(f"wrk exited with {exit_code}")
    for proc in (server.process, upstream.process):
        if not proc.running():
            problems.append(f"{proc.name} exited with {proc.popen.returncode} during the run")
    disturbed = cpu.foreign_cpu_s > args.foreign_max
    return Run(server.name, pair, attempt, argv, exit_code, output, result, cpu, opens, disturbed, problems)


def describe(run: Run) -> str:
    if run.result is None:
        return "no result"
    r = run.result
    cpu = run.sut_cpu_us_per_request
    return (
        f"{r.rps:10,.0f} req/s  p50 {r.p50_ms:6.3f} ms  p99 {r.p99_ms:6.3f} ms  "
        f"proxy CPU {fmt(cpu, '.1f')} us/req  foreign CPU {run.cpu.foreign_cpu_s:.2f} s"
    )


def measured_run(args: argparse.Namespace, server: Server, upstream: Server, pair: int) -> list[Run]:
    """One measured run; a disturbed one is redone up to --redos times. Returns every attempt,
    the one that counts last."""
    attempts: list[Run] = []
    for attempt in range(1, args.redos + 2):
        run = measure(args, server, upstream, pair, attempt, args.duration)
        attempts.append(run)
        print_flush(f"  pair {pair} {server.name:<10} {describe(run)}")
        if run.problems:
            print_flush(f"  !!! INVALID RUN ({server.name}, pair {pair}): {'; '.join(run.problems)}")
        if not run.disturbed:
            break
        top = ", ".join(f"{name} {s:.2f}s" for name, s in run.cpu.foreign_top)
        if run.cpu.foreign_reaped_cpu_s:
            top += f", ended children {run.cpu.foreign_reaped_cpu_s:.2f}s"
        more = "redoing" if attempt <= args.redos else "keeping it, marked disturbed"
        print_flush(f"  disturbed: other processes used {run.cpu.foreign_cpu_s:.2f} CPU-s ({top}); {more}")
    return attempts


# ----------------------------------------------------------------------------------------------
# Report
# ----------------------------------------------------------------------------------------------


def fmt(value: float | None, spec: str) -> str:
    return "n/a" if value is None else format(value, spec)


def report(counted: dict[str, list[Run]]) -> tuple[list[str], dict[str, Any]]:
    lines = [
        f"{'target':<12} {'rps median':>11}  {'rps per run':<28} {'p50 ms':>7} {'p99 ms':>7} "
        f"{'CPU us/req':>10}  notes"
    ]
    summary: dict[str, Any] = {}
    for name, runs in counted.items():
        s = summarize_target([run.result if run.valid else None for run in runs])
        cpu = median([c for run in runs if run.valid and (c := run.sut_cpu_us_per_request) is not None])
        notes = []
        if s.invalid_runs:
            notes.append(f"{s.invalid_runs} INVALID")
        if disturbed := sum(run.disturbed for run in runs):
            notes.append(f"{disturbed} disturbed")
        per_run = " / ".join(fmt(v, ",.0f") for v in s.rps_runs)
        lines.append(
            f"{name:<12} {fmt(s.rps_median, ',.0f'):>11}  {per_run:<28} {fmt(s.p50_median_ms, '.3f'):>7} "
            f"{fmt(s.p99_median_ms, '.3f'):>7} {fmt(cpu, '.1f'):>10}  {', '.join(notes)}"
        )
        summary[name] = {
            "rps_median": s.rps_median,
            "rps_runs": s.rps_runs,
            "p50_median_ms": s.p50_median_ms,
            "p99_median_ms": s.p99_median_ms,
            "cpu_us_per_request_median": cpu,
            "valid_runs": s.valid_runs,
            "invalid_runs": s.invalid_runs,
            "disturbed_runs": disturbed,
        }
    if set(TARGET_ORDER) <= counted.keys():
        ratio = compare(
            [run.result if run.valid else None for run in counted["lambdagate"]],
            [run.result if run.valid else None for run in counted["nginx"]],
        )
        pairs_rps = " ".join(f"{r:.3f}" for r in ratio.rps_pair_ratios)
        pairs_p99 = " ".join(f"{r:.3f}" for r in ratio.p99_pair_ratios)
        lines.append(
            f"lambdagate/nginx: rps x{fmt(ratio.rps_ratio, '.3f')} (per pair: {pairs_rps or 'none'}), "
            f"p99 x{fmt(ratio.p99_ratio, '.3f')} (per pair: {pairs_p99 or 'none'})"
        )
        summary["lambdagate/nginx"] = {
            "rps_ratio_median_of_pairs": ratio.rps_ratio,
            "rps_pair_ratios": ratio.rps_pair_ratios,
            "p99_ratio_median_of_pairs": ratio.p99_ratio,
            "p99_pair_ratios": ratio.p99_pair_ratios,
        }
    return lines, summary


def check_cpus() -> None:
    allowed = os.sched_getaffinity(0)
    if not {int(SUT_CPU), int(CLIENT_CPU)} <= allowed:
        raise SystemExit(f"needs CPUs {SUT_CPU} and {CLIENT_CPU}; this process may use {sorted(allowed)}")
    # The harness itself (checks, /proc scans) stays off the core under test.
    os.sched_setaffinity(0, {int(CLIENT_CPU)})


def benchmark(args: argparse.Namespace, workdir: Path, procs: ProcessSet) -> int:
    targets = [args.only] if args.only else list(TARGET_ORDER)
    upstream = start_nginx(procs, workdir, "upstream", "upstream.conf.in", CLIENT_CPU)
    wait_for_http(upstream.process, upstream.port, args.path, args.startup_timeout)
    if args.redis:
        redis_port = free_port()
        redis = procs.start(
            "redis",
            ["redis-server", "--port", str(redis_port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(workdir)],
            cpus=CLIENT_CPU,
        )  # fmt: skip
        wait_for_redis(redis_port, args.startup_timeout)
        args.redis_url = f"redis://127.0.0.1:{redis_port}/0"
        args.extra_roots = {"redis": redis.popen.pid}
    servers: dict[str, Server] = {}
    for name in targets:
        if name == "nginx":
            servers[name] = start_nginx(
                procs, workdir, "nginx", args.nginx_template, SUT_CPU, UPSTREAM_PORT=str(upstream.port)
            )
        else:
            servers[name] = start_lambdagate(procs, workdir, args, upstream.port)
    for server in servers.values():
        wait_for_http(server.process, server.port, args.path, args.startup_timeout)
    for server in (upstream, *servers.values()):
        check_answers(server, args.path, args.header)
    # Read now that every server has forked its workers.
    affinity = {s.name: tree_affinity(s.process.pid) for s in (upstream, *servers.values())}
    for name, pids in affinity.items():
        print_flush(f"{name}: " + ", ".join(f"pid {pid} on CPU {cpus}" for pid, cpus in pids.items()))

    print_flush(
        f"{args.pairs} pairs x {args.duration} s, wrk -t1 -c{args.connections} --latency; "
        f"proxies on CPU {SUT_CPU}, upstream + wrk on CPU {CLIENT_CPU}; work dir {workdir}"
    )
    warmups: dict[str, dict[str, Any]] = {}
    if args.warmup:
        for name, server in servers.items():
            run = measure(args, server, upstream, 0, 1, args.warmup)
            warmups[name] = run.as_dict()
            print_flush(f"  warm-up {name:<10} {describe(run)} (discarded)")
            if run.problems:
                print_flush(f"  !!! warm-up of {name} had problems: {'; '.join(run.problems)}")

    counted: dict[str, list[Run]] = {name: [] for name in servers}
    every_attempt: list[Run] = []
    for pair in range(1, args.pairs + 1):
        for name, server in servers.items():
            attempts = measured_run(args, server, upstream, pair)
            every_attempt.extend(attempts)
            counted[name].append(attempts[-1])

    lines, summary = report(counted)
    print_flush()
    print_flush("\n".join(lines))
    invalid = [run for runs in counted.values() for run in runs if not run.valid]
    data: dict[str, Any] = {
        "benchmark": "proxy_vs_nginx",
        "command_line": shlex.join([sys.executable, *sys.argv]),
        "settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "machine": machine_info(),
        "pinning": {"system_under_test": f"CPU {SUT_CPU}", "upstream_and_wrk": f"CPU {CLIENT_CPU}"},
        "servers": {
            s.name: {
                "argv": s.process.argv,
                "cpu_affinity": affinity[s.name],
                "port": s.port,
                "config": s.config_text,
                "log_tail": s.process.log_tail(),
            }
            for s in (upstream, *servers.values())
        },
        "gateway_standin": args.gateway_standin,
        "valid": not invalid,
        "summary": summary,
        "warmups": warmups,
        "runs": [run.as_dict() for run in every_attempt],
    }
    path = save_results("proxy", data)
    print_flush(f"results: {path}")
    if args.gateway_standin:
        print_flush(f"NOTE: the lambdagate slot ran a stand-in ({args.gateway_standin}), not lambdagate")
    if invalid:
        print_flush(f"!!! {len(invalid)} INVALID RUN(S): the figures above exclude them; see {path}")
    if args.keep_running:
        wait_for_ctrl_c(upstream, servers)
    return 1 if invalid else 0


def wait_for_ctrl_c(upstream: Server, servers: dict[str, Server]) -> None:
    for s in (upstream, *servers.values()):
        print_flush(f"{s.name}: http://127.0.0.1:{s.port}/ pid {s.process.pid} config {s.config_path}")
    print_flush("--keep-running: servers stay up until Ctrl-C")
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        print_flush()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    require_tools("nginx", "wrk", "taskset")
    check_cpus()
    workdir = Path(tempfile.mkdtemp(prefix="lambdagate-bench-"))
    succeeded = False
    try:
        with ProcessSet(workdir) as procs:
            status = benchmark(args, workdir, procs)
            succeeded = status == 0
            return status
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
            print_flush(f"configs and server logs kept in {workdir}")


if __name__ == "__main__":
    sys.exit(main())
