"""Shared helpers for the benchmark scripts in bench/.

Sections: wrk output parsing and the summary math (pure, unit-tested), config templates,
processes we start (each in its own process group, so stopping one stops its workers too),
HTTP probes, /proc readings (RSS, children, a CPU guard) and the machine description saved
with every result.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import http.client
import json
import os
import platform
import re
import resource
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import IO, Any

BENCH_DIR = Path(__file__).resolve().parent
REPO_DIR = BENCH_DIR.parent
RESULTS_DIR = BENCH_DIR / "results"
# The console script installed next to the interpreter running the benchmark (.venv/bin).
GATEWAY_BIN = Path(sys.executable).parent / "lambdagate"
DEFAULT_GATEWAY_CMD = f"{GATEWAY_BIN} run -c {{config}}"

# ----------------------------------------------------------------------------------------------
# wrk output
# ----------------------------------------------------------------------------------------------

# wrk prints times with the unit that keeps the number short (see format_time in wrk's units.c).
_TIME_UNITS_MS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3, "h": 3600e3}
_TIME = r"([\d.]+)(us|ms|s|m|h)"
PERCENTILES = ("50", "75", "90", "99")


class WrkParseError(ValueError):
    """wrk's output lacks a line every finished run prints (it failed, or is not wrk output)."""


def time_to_ms(value: str, unit: str) -> float:
    """Convert one of wrk's time figures ("65.00", "us") to milliseconds."""
    try:
        return float(value) * _TIME_UNITS_MS[unit]
    except KeyError:
        raise WrkParseError(f"unknown time unit {unit!r}") from None


@dataclass(frozen=True)
class SocketErrors:
    connect: int = 0
    read: int = 0
    write: int = 0
    timeout: int = 0

    @property
    def total(self) -> int:
        return self.connect + self.read + self.write + self.timeout


@dataclass(frozen=True)
class WrkResult:
    """The figures of one wrk run; latencies in milliseconds."""

    requests: int
    duration_s: float
    rps: float
    latency_avg_ms: float
    latency_max_ms: float
    # "50" -> p50 and so on; present when wrk ran with --latency.
    percentiles_ms: Mapping[str, float]
    non_2xx_3xx: int = 0
    socket_errors: SocketErrors = field(default_factory=SocketErrors)

    @property
    def p50_ms(self) -> float:
        return self.percentiles_ms["50"]

    @property
    def p99_ms(self) -> float:
        return self.percentiles_ms["99"]

    def problems(self) -> list[str]:
        """Why this run cannot be trusted as a throughput figure (empty when it can)."""
        found: list[str] = []
        if self.requests == 0:
            found.append("no requests completed")
        if self.non_2xx_3xx:
            found.append(f"{self.non_2xx_3xx} non-2xx/3xx responses")
        if self.socket_errors.total:
            e = self.socket_errors
            found.append(
                f"socket errors: connect {e.connect}, read {e.read}, write {e.write}, timeout {e.timeout}"
            )
        return found

    @property
    def valid(self) -> bool:
        return not self.problems()

    def as_dict(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "duration_s": self.duration_s,
            "rps": self.rps,
            "latency_avg_ms": self.latency_avg_ms,
            "latency_max_ms": self.latency_max_ms,
            "percentiles_ms": dict(self.percentiles_ms),
            "non_2xx_3xx": self.non_2xx_3xx,
            "socket_errors": {
                "connect": self.socket_errors.connect,
                "read": self.socket_errors.read,
                "write": self.socket_errors.write,
                "timeout": self.socket_errors.timeout,
            },
            "problems": self.problems(),
        }


def _search(pattern: str, text: str, what: str) -> re.Match[str]:
    match = re.search(pattern, text, re.MULTILINE)
    if match is None:
        raise WrkParseError(f"wrk output has no {what} line")
    return match


def parse_wrk_output(text: str) -> WrkResult:
    """Parse the report wrk prints at the end of a run (with or without --latency)."""
    rps = float(_search(r"^Requests/sec:\s+([\d.]+)\s*$", text, "Requests/sec").group(1))
    totals = _search(rf"^\s*(\d+) requests in {_TIME},", text, "'N requests in T'")
    latency = _search(rf"^\s*Latency\s+{_TIME}\s+{_TIME}\s+{_TIME}", text, "thread-stats Latency")
    percentiles = {
        m.group(1): time_to_ms(m.group(2), m.group(3))
        for m in re.finditer(rf"^\s+(\d+)%\s+{_TIME}\s*$", text, re.MULTILINE)
    }
    non_2xx = re.search(r"^\s*Non-2xx or 3xx responses:\s+(\d+)\s*$", text, re.MULTILINE)
    sock = re.search(
        r"^\s*Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)\s*$", text, re.MULTILINE
    )
    return WrkResult(
        requests=int(totals.group(1)),
        duration_s=time_to_ms(totals.group(2), totals.group(3)) / 1e3,
        rps=rps,
        latency_avg_ms=time_to_ms(latency.group(1), latency.group(2)),
        latency_max_ms=time_to_ms(latency.group(5), latency.group(6)),
        percentiles_ms=percentiles,
        non_2xx_3xx=int(non_2xx.group(1)) if non_2xx else 0,
        socket_errors=SocketErrors(*(int(g) for g in sock.groups())) if sock else SocketErrors(),
    )


# ----------------------------------------------------------------------------------------------
# Summary math
# ----------------------------------------------------------------------------------------------


def median(values: Sequence[float]) -> float | None:
    """The median, or None for no values (a target whose every run was invalid)."""
    return statistics.median(values) if values else None


def pair_ratios(numerators: Sequence[float | None], denominators: Sequence[float | None]) -> list[float]:
    """Per-pair ratios numerator/denominator; a pair with a missing (invalid) side is skipped.

    Runs alternate A B A B, so the two runs of one pair saw the same machine state; the median
    of per-pair ratios is steadier than the ratio of medians when the machine drifts.
    """
    if len(numerators) != len(denominators):
        raise ValueError(f"unequal pair counts: {len(numerators)} vs {len(denominators)}")
    return [n / d for n, d in zip(numerators, denominators, strict=True) if n is not None and d]


def median_pair_ratio(
    numerators: Sequence[float | None], denominators: Sequence[float | None]
) -> float | None:
    return median(pair_ratios(numerators, denominators))


# ----------------------------------------------------------------------------------------------
# Config templates
# ----------------------------------------------------------------------------------------------

_PLACEHOLDER = re.compile(r"@([A-Z][A-Z0-9_]*)@")


def add_gateway_options(
    p: argparse.ArgumentParser, *, placeholders: str = "{config}, {port} and {workdir}", standin: bool = True
) -> None:
    """The options every harness has for the lambdagate it runs: its port when the config names
    none, the command that starts it, an nginx stand-in, the start-up wait, the work dir."""
    if standin:  # the harnesses that can run a stand-in also take a config without @PORT@
        p.add_argument(
            "--gateway-port", type=int, help="the port a --gateway-config without @PORT@ listens on"
        )
    p.add_argument(
        "--gateway-cmd",
        default=os.environ.get("LAMBDAGATE_BENCH_GATEWAY_CMD", DEFAULT_GATEWAY_CMD),
        help=f"command that runs the gateway; {placeholders} are filled in (default: %(default)s)",
    )
    if standin:
        p.add_argument(
            "--gateway-standin",
            choices=("nginx",),
            default=os.environ.get("LAMBDAGATE_BENCH_STANDIN") or None,
            help="run nginx in the lambdagate slot (to develop the harness before the gateway works)",
        )
    p.add_argument("--startup-timeout", type=float, default=30.0, help="seconds to wait for a server")
    p.add_argument("--keep-workdir", action="store_true", help="keep the temp dir with configs and logs")


def render_template(text: str, values: Mapping[str, str]) -> str:
    """Fill @NAME@ placeholders; a placeholder without a value is an error, not left behind."""
    missing = sorted({m.group(1) for m in _PLACEHOLDER.finditer(text)} - set(values))
    if missing:
        raise KeyError(f"template placeholders without a value: {', '.join(missing)}")
    return _PLACEHOLDER.sub(lambda m: values[m.group(1)], text)


def render_gateway_config(template_path: Path, explicit_port: int | None, **values: str) -> tuple[str, int]:
    """Render a lambdagate TOML template; returns (text, port it listens on).

    @PORT@ gets a free port; a config without it (a fixed scenario file) must name its port with
    `explicit_port`. Other placeholders are filled only where the file uses them.
    """
    template = template_path.read_text()
    if "@PORT@" in template:
        port = free_port()
    elif explicit_port is not None:
        port = explicit_port
    else:
        raise SystemExit(
            f"{template_path} has no @PORT@ placeholder: say where it listens with --gateway-port"
        )
    values = {"PORT": str(port), **values}
    return render_template(template, {k: v for k, v in values.items() if f"@{k}@" in template}), port


def gateway_argv(command_template: str, **values: object) -> list[str]:
    """The gateway's command line from a --gateway-cmd template ({config}, {port}, ... filled in)."""
    return shlex.split(command_template.format(**values))


def nginx_user_line() -> str:
    """nginx workers drop to `nobody` when the master is root; keep them root so they can use
    the temp dirs the master created (the directive only warns when not root, so omit it)."""
    return "user root;" if os.geteuid() == 0 else ""


def prepare_nginx_prefix(prefix: Path) -> None:
    """The directories an nginx config rendered from bench/nginx/*.conf.in writes into."""
    for sub in ("logs", "tmp"):
        (prefix / sub).mkdir(parents=True, exist_ok=True)


def nginx_command(prefix: Path, conf: Path) -> list[str]:
    return ["nginx", "-p", str(prefix), "-c", str(conf), "-g", "daemon off;"]


# ----------------------------------------------------------------------------------------------
# Processes we start
# ----------------------------------------------------------------------------------------------


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def pinned(argv: Sequence[str], cpus: str | None) -> list[str]:
    """Prefix argv with taskset; taskset execs, so the pid stays that of the program itself and
    the program's forked workers inherit the affinity."""
    return ["taskset", "-c", cpus, *argv] if cpus is not None else list(argv)


def require_tools(*names: str) -> None:
    missing = [name for name in names if shutil.which(name) is None]
    if missing:
        raise SystemExit(f"missing tools: {', '.join(missing)} (run `make sysdeps`)")


@dataclass
class ManagedProcess:
    name: str
    argv: list[str]
    popen: subprocess.Popen[bytes]
    log_path: Path

    @property
    def pid(self) -> int:
        return self.popen.pid

    def running(self) -> bool:
        return self.popen.poll() is None

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self, grace_s: float = 5.0) -> None:
        """SIGTERM the process group (the program and its workers), then SIGKILL what remains."""
        if self.popen.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.pid, signal.SIGTERM)
            try:
                self.popen.wait(grace_s)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.pid, signal.SIGKILL)
                self.popen.wait()
        # Workers that outlived their master (still in the group) must not linger either.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pid, signal.SIGKILL)


class ProcessSet:
    """Every process a benchmark starts; leaving the `with` block stops them all, whatever the
    reason (normal end, error, Ctrl-C, SIGTERM/SIGHUP turned into SystemExit)."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.processes: list[ManagedProcess] = []
        self._previous_handlers: dict[int, Any] = {}

    def __enter__(self) -> ProcessSet:
        for signum in (signal.SIGTERM, signal.SIGHUP):
            self._previous_handlers[signum] = signal.signal(signum, self._exit_on_signal)
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop_all()
        for signum, handler in self._previous_handlers.items():
            signal.signal(signum, handler)

    @staticmethod
    def _exit_on_signal(signum: int, frame: FrameType | None) -> None:
        raise SystemExit(128 + signum)

    def start(self, name: str, argv: Sequence[str], cpus: str | None = None) -> ManagedProcess:
        log_path = self.log_dir / f"{name}.log"
        full_argv = pinned(argv, cpus)
        with log_path.open("wb") as log:
            # A new session makes the pid a process-group id, so stop() reaches forked workers.
            popen = subprocess.Popen(
                full_argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        process = ManagedProcess(name, full_argv, popen, log_path)
        self.processes.append(process)
        return process

    def stop_all(self) -> None:
        for process in reversed(self.processes):
            process.stop()
        self.processes.clear()


# ----------------------------------------------------------------------------------------------
# HTTP probes
# ----------------------------------------------------------------------------------------------


def http_get(
    port: int,
    path: str = "/",
    host: str = "127.0.0.1",
    timeout_s: float = 5.0,
    headers: Mapping[str, str] | None = None,
) -> tuple[int, bytes]:
    """One GET over a fresh connection: (status, body)."""
    conn = http.client.HTTPConnection(host, port, timeout=timeout_s)
    try:
        conn.request("GET", path, headers=dict(headers or {}))
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def wait_for_http(process: ManagedProcess, port: int, path: str = "/", timeout_s: float = 30.0) -> None:
    """Wait until the server answers anything over HTTP; fail early if it exits."""
    deadline = time.monotonic() + timeout_s
    while True:
        if not process.running():
            raise RuntimeError(
                f"{process.name} exited with {process.popen.returncode} before answering on port {port}; "
                f"log tail:\n{process.log_tail()}"
            )
        try:
            http_get(port, path, timeout_s=1.0)
            return
        except (OSError, http.client.HTTPException):
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"{process.name} did not answer on port {port} within {timeout_s:.0f} s; "
                    f"log tail:\n{process.log_tail()}"
                ) from None
            time.sleep(0.1)


# ----------------------------------------------------------------------------------------------
# /proc readings
# ----------------------------------------------------------------------------------------------

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class ProcStat:
    pid: int
    ppid: int
    name: str
    # utime + stime, in clock ticks.
    own_ticks: int
    # cutime + cstime: the CPU of children this process has waited for. A long-lived parent (make,
    # pytest) carries its short-lived children's CPU this way, but the whole of it, including
    # what a child used before a measurement began.
    reaped_ticks: int

    @property
    def ticks(self) -> int:
        return self.own_ticks + self.reaped_ticks


def read_proc_stat(pid: int) -> ProcStat | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name is in parentheses and may itself contain spaces or parentheses.
    close = text.rfind(")")
    name = text[text.find("(") + 1 : close]
    fields = text[close + 2 :].split()
    own = int(fields[11]) + int(fields[12])
    reaped = int(fields[13]) + int(fields[14])
    return ProcStat(pid, int(fields[1]), name, own, reaped)


def process_table() -> dict[int, ProcStat]:
    table: dict[int, ProcStat] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (stat := read_proc_stat(int(entry))) is not None:
            table[stat.pid] = stat
    return table


def descendants(table: Mapping[int, ProcStat], roots: Sequence[int]) -> set[int]:
    """The roots and every process below them in the table."""
    children: dict[int, list[int]] = {}
    for stat in table.values():
        children.setdefault(stat.ppid, []).append(stat.pid)
    found: set[int] = set()
    pending = list(roots)
    while pending:
        pid = pending.pop()
        if pid not in found:
            found.add(pid)
            pending.extend(children.get(pid, ()))
    return found


def child_pids(pid: int) -> list[int]:
    return sorted(stat.pid for stat in process_table().values() if stat.ppid == pid)


def tree_affinity(pid: int) -> dict[int, list[int]]:
    """CPUs each process of a tree may run on: evidence that forked workers kept the pinning."""
    found: dict[int, list[int]] = {}
    for member in sorted(descendants(process_table(), [pid])):
        with contextlib.suppress(OSError):
            found[member] = sorted(os.sched_getaffinity(member))
    return found


def vm_rss_kb(pid: int) -> int:
    """Resident set size of one process (VmRSS from /proc/<pid>/status), in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid} (a zombie or kernel thread?)")


def _is_kernel_thread(stat: ProcStat) -> bool:
    return stat.pid == 2 or stat.ppid == 2


@dataclass(frozen=True)
class CpuTimes:
    """Per-CPU counters from /proc/stat, in clock ticks."""

    busy: Mapping[str, int]
    total: Mapping[str, int]
    steal: Mapping[str, int]


def read_cpu_times() -> CpuTimes:
    busy: dict[str, int] = {}
    total: dict[str, int] = {}
    steal: dict[str, int] = {}
    for line in Path("/proc/stat").read_text().splitlines():
        if not line.startswith("cpu"):
            continue
        name, *raw = line.split()
        values = [int(v) for v in raw[:8]] + [0] * max(0, 8 - len(raw))
        idle = values[3] + values[4]
        total[name] = sum(values)
        steal[name] = values[7]
        busy[name] = total[name] - idle - values[7]
    return CpuTimes(busy, total, steal)


def busy_percent(before: CpuTimes, after: CpuTimes, cpu: str) -> float:
    spent = after.total[cpu] - before.total[cpu]
    return 100.0 * (after.busy[cpu] - before.busy[cpu]) / spent if spent else 0.0


@dataclass(frozen=True)
class CpuReport:
    """What the machine did while one measured command ran."""

    seconds: float
    foreign_cpu_s: float
    # The part of foreign_cpu_s from children that foreign processes reaped during the window.
    foreign_reaped_cpu_s: float
    foreign_top: list[tuple[str, float]]
    kernel_threads_cpu_s: float
    ours_cpu_s: float
    # Busy time of all CPUs together (user, system, irq, softirq; not idle, iowait or steal).
    machine_busy_cpu_s: float
    roots_cpu_s: dict[str, float]
    busy_pct: dict[str, float]
    steal_pct: dict[str, float]
    idle_wait_busy_pct: float | None

    def as_dict(self) -> dict[str, Any]:
        return {
            "seconds": round(self.seconds, 3),
            "foreign_cpu_s": round(self.foreign_cpu_s, 3),
            "foreign_reaped_cpu_s": round(self.foreign_reaped_cpu_s, 3),
            "foreign_top": [[name, round(s, 3)] for name, s in self.foreign_top],
            "kernel_threads_cpu_s": round(self.kernel_threads_cpu_s, 3),
            "ours_cpu_s": round(self.ours_cpu_s, 3),
            "machine_busy_cpu_s": round(self.machine_busy_cpu_s, 3),
            "roots_cpu_s": {k: round(v, 3) for k, v in self.roots_cpu_s.items()},
            "busy_pct": {k: round(v, 1) for k, v in self.busy_pct.items()},
            "steal_pct": {k: round(v, 1) for k, v in self.steal_pct.items()},
            "idle_wait_busy_pct": self.idle_wait_busy_pct,
        }


def bounded_foreign_ticks(own: int, reaped: int, unexplained: int) -> int:
    """Foreign CPU during a window: what foreign processes used themselves, plus what their
    children that ended in the window used, the latter capped by the machine's busy time that
    neither our processes, nor kernel threads, nor the foreign processes themselves explain
    (a reaped child's figure covers its whole life, which may have begun long before)."""
    return own + min(reaped, max(0, unexplained - own))


class CpuGuard:
    """Tells whether processes that are not ours used CPU while a measurement ran.

    "Ours" is this process and everything below it (the servers and wrk). Foreign time is
    summed per process over those alive at the end (new ones count in full), plus the bounded
    time of their children that ended meanwhile (see bounded_foreign_ticks). Kernel threads are
    reported apart: under loopback load they do our softirq work.
    """

    def __init__(self, roots: Mapping[str, int] | None = None) -> None:
        self.me = os.getpid()
        self.roots = dict(roots or {})
        self._start: tuple[float, CpuTimes, dict[int, ProcStat]] | None = None
        self._idle_wait_busy_pct: float | None = None

    def wait_until_idle(self, max_wait_s: float, busy_pct_of_one_core: float = 10.0) -> float:
        """Sample the machine for 1 s at a time until it is nearly idle or max_wait_s passes;
        returns the last sample's busy time in percent of one core."""
        deadline = time.monotonic() + max_wait_s
        cores = max(1, len([c for c in read_cpu_times().total if c != "cpu"]))
        while True:
            before = read_cpu_times()
            time.sleep(1.0)
            busy = busy_percent(before, read_cpu_times(), "cpu") * cores
            if busy < busy_pct_of_one_core or time.monotonic() >= deadline:
                self._idle_wait_busy_pct = round(busy, 1)
                return busy

    def start(self) -> None:
        self._start = (time.monotonic(), read_cpu_times(), process_table())

    def stop(self) -> CpuReport:
        if self._start is None:
            raise RuntimeError("CpuGuard.stop() without start()")
        t0, cpu0, procs0 = self._start
        t1, cpu1, procs1 = time.monotonic(), read_cpu_times(), process_table()
        ours = descendants(procs0, [self.me]) | descendants(procs1, [self.me])

        def delta(pid: int) -> tuple[int, int]:
            """(own, reaped) ticks spent since start; a process born meanwhile counts in full."""
            before = procs0.get(pid)
            now = procs1[pid]
            if before is None:
                return now.own_ticks, now.reaped_ticks
            return now.own_ticks - before.own_ticks, now.reaped_ticks - before.reaped_ticks

        foreign: dict[str, float] = {}
        foreign_own = foreign_reaped = kernel_ticks = ours_ticks = 0
        for pid, stat in procs1.items():
            own, reaped = delta(pid)
            if pid in ours:
                ours_ticks += own + reaped
            elif _is_kernel_thread(stat):
                kernel_ticks += own + reaped
            else:
                foreign_own += own
                foreign_reaped += reaped
                if own > 0:
                    foreign[f"{stat.name}[{pid}]"] = own / CLOCK_TICKS
        busy_ticks = cpu1.busy["cpu"] - cpu0.busy["cpu"]
        foreign_ticks = bounded_foreign_ticks(
            foreign_own, foreign_reaped, busy_ticks - ours_ticks - kernel_ticks
        )
        roots_cpu = {
            name: sum(sum(delta(pid)) for pid in descendants(procs1, [root]) if pid in procs1) / CLOCK_TICKS
            for name, root in self.roots.items()
        }
        cpus = sorted(cpu1.total)
        return CpuReport(
            seconds=t1 - t0,
            foreign_cpu_s=foreign_ticks / CLOCK_TICKS,
            foreign_reaped_cpu_s=(foreign_ticks - foreign_own) / CLOCK_TICKS,
            foreign_top=sorted(foreign.items(), key=lambda kv: -kv[1])[:5],
            kernel_threads_cpu_s=kernel_ticks / CLOCK_TICKS,
            ours_cpu_s=ours_ticks / CLOCK_TICKS,
            machine_busy_cpu_s=busy_ticks / CLOCK_TICKS,
            roots_cpu_s=roots_cpu,
            busy_pct={cpu: busy_percent(cpu0, cpu1, cpu) for cpu in cpus},
            steal_pct={
                cpu: 100.0 * (cpu1.steal[cpu] - cpu0.steal[cpu]) / max(1, cpu1.total[cpu] - cpu0.total[cpu])
                for cpu in cpus
            },
            idle_wait_busy_pct=self._idle_wait_busy_pct,
        )


def tcp_active_opens() -> int:
    """System-wide count of TCP connects so far (a proxy that reuses upstream connections adds
    none during a measured run beyond wrk's own)."""
    rows = [
        line.split() for line in Path("/proc/net/snmp").read_text().splitlines() if line.startswith("Tcp:")
    ]
    return int(rows[1][rows[0].index("ActiveOpens")])


# ----------------------------------------------------------------------------------------------
# Machine description and results
# ----------------------------------------------------------------------------------------------


def _command_output(argv: Sequence[str], all_lines: bool = False) -> str:
    try:
        done = subprocess.run(list(argv), capture_output=True, text=True, timeout=20, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"unavailable ({exc})"
    lines = [line.strip() for line in (done.stdout + done.stderr).strip().splitlines()]
    if not lines or done.returncode != 0:
        return f"unavailable (exit {done.returncode}: {' '.join(lines)[:200]})"
    return "; ".join(lines) if all_lines else lines[0]


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def lambdagate_version() -> str:
    """`lambdagate version` (lambdagate and its runtime) plus the commit the tree is at."""
    reported = _command_output([str(GATEWAY_BIN), "version"], all_lines=True)
    commit = _command_output(["git", "-C", str(REPO_DIR), "describe", "--always", "--dirty"])
    return f"{reported} (git {commit})"


def machine_info() -> dict[str, Any]:
    return {
        "date": dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "kernel": platform.release(),
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "python": sys.version.split()[0],
        "nginx": _command_output(["nginx", "-v"]),
        "wrk": _command_output(["wrk", "-v"]),
        "lambdagate": lambdagate_version(),
    }


def save_results(kind: str, data: Mapping[str, Any], directory: Path = RESULTS_DIR) -> Path:
    """Write bench/results/<YYYYmmdd-HHMMSS>-<kind>.json and return its path."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{dt.datetime.now().strftime('%Y%m%d-%H%M%S')}-{kind}.json"
    path.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n")
    return path


@contextlib.contextmanager
def raised_nofile_limit(needed: int) -> Iterator[int]:
    """Raise this process's RLIMIT_NOFILE soft limit (and the hard one, if root and needed) to at
    least `needed`; restores the old limits afterwards. Yields the soft limit in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    new_hard = hard if hard == resource.RLIM_INFINITY or hard >= needed else needed
    new_soft = needed if soft != resource.RLIM_INFINITY and soft < needed else soft
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (new_soft, new_hard))
    except (ValueError, OSError) as exc:
        raise SystemExit(
            f"cannot raise RLIMIT_NOFILE to {needed} (soft {soft}, hard {hard}): {exc}"
        ) from None
    try:
        yield new_soft
    finally:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def print_flush(*parts: object, file: IO[str] | None = None) -> None:
    print(*parts, file=file or sys.stdout, flush=True)


# ----------------------------------------------------------------------------------------------
# Per-target summaries (pure; the runs of a target in pair order, None for a run that failed)
# ----------------------------------------------------------------------------------------------


def usable(result: WrkResult | None) -> WrkResult | None:
    """The run if it counts, None if it is missing or invalid (errors, non-2xx responses)."""
    return result if result is not None and result.valid else None


@dataclass(frozen=True)
class TargetSummary:
    rps_runs: list[float | None]
    rps_median: float | None
    p50_median_ms: float | None
    p99_median_ms: float | None
    valid_runs: int
    invalid_runs: int


def summarize_target(results: Sequence[WrkResult | None]) -> TargetSummary:
    counted = [r for r in map(usable, results) if r is not None]
    return TargetSummary(
        rps_runs=[r.rps if r is not None else None for r in map(usable, results)],
        rps_median=median([r.rps for r in counted]),
        p50_median_ms=median([r.p50_ms for r in counted]),
        p99_median_ms=median([r.p99_ms for r in counted]),
        valid_runs=len(counted),
        invalid_runs=len(results) - len(counted),
    )


@dataclass(frozen=True)
class Comparison:
    """candidate/reference over runs taken in pairs; rps above 1 and p99 below 1 favour the candidate."""

    rps_pair_ratios: list[float]
    rps_ratio: float | None
    p99_pair_ratios: list[float]
    p99_ratio: float | None


def compare(candidate: Sequence[WrkResult | None], reference: Sequence[WrkResult | None]) -> Comparison:
    cand = [usable(r) for r in candidate]
    ref = [usable(r) for r in reference]
    rps = pair_ratios([r.rps if r else None for r in cand], [r.rps if r else None for r in ref])
    p99 = pair_ratios([r.p99_ms if r else None for r in cand], [r.p99_ms if r else None for r in ref])
    return Comparison(rps, median(rps), p99, median(p99))
