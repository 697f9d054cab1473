"""The master process, run for real in a subprocess with the stand-in workers of tests/support.

Every test talks to the master over signals and sockets and watches its JSON log lines on
stderr; waits poll with deadlines instead of sleeping.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SUPPORT = Path(__file__).resolve().parent / "support"
LogLine = dict[str, object]

MASTER_CODE = """
import sys
sys.path.insert(0, sys.argv[3])
import echo_worker
from gateway.server import run
sys.exit(run(sys.argv[1], worker_main=getattr(echo_worker, sys.argv[2])))
"""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def write_config(path: Path, port: int, *, workers: int = 2, drain_timeout: str = "5s") -> Path:
    path.write_text(
        f'[server]\nlisten = "127.0.0.1:{port}"\nworkers = {workers}\naccess_log = "off"\n'
        f'drain_timeout = "{drain_timeout}"\n'
    )
    return path


class MasterProcess:
    """A running ``gateway.server.run`` with its stderr collected as lines (JSON parsed)."""

    def __init__(self, config: Path, worker: str = "serve") -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", MASTER_CODE, str(config), worker, str(SUPPORT)],
            cwd=ROOT,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            start_new_session=True,  # its own process group: teardown can kill master + workers
        )
        self.raw: list[str] = []
        self.logs: list[LogLine] = []
        self._changed = threading.Condition()
        self._reader = threading.Thread(target=self._read_stderr, daemon=True)
        self._reader.start()

    def _read_stderr(self) -> None:
        assert self.proc.stderr is not None
        for raw in self.proc.stderr:
            line = raw.decode("utf-8", "replace").rstrip("\n")
            with self._changed:
                self.raw.append(line)
                with contextlib.suppress(ValueError):
                    parsed = json.loads(line)
                    if isinstance(parsed, dict):
                        self.logs.append(parsed)
                self._changed.notify_all()

    def wait_for(
        self, predicate: Callable[[LogLine], bool], *, count: int = 1, timeout: float = 10
    ) -> list[LogLine]:
        """Wait until ``count`` log lines match; return all matches so far."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                matches = [line for line in self.logs if predicate(line)]
                if len(matches) >= count:
                    return matches
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(
                        f"timed out waiting for {count} log line(s); stderr:\n" + self.stderr()
                    )
                self._changed.wait(remaining)

    def messages(self, msg: str) -> list[LogLine]:
        with self._changed:
            return [line for line in self.logs if line.get("msg") == msg]

    def stderr(self) -> str:
        with self._changed:
            return "\n".join(self.raw)

    def started_pids(self, generation: int) -> dict[int, int]:
        """slot -> pid of the latest worker started for each slot of a generation."""
        pids: dict[int, int] = {}
        for line in self.messages("worker spawned"):
            if line["generation"] == generation:
                pids[int(str(line["slot"]))] = int(str(line["pid"]))
        return pids

    def send(self, signum: signal.Signals) -> None:
        os.kill(self.proc.pid, signum)

    def wait_exit(self, timeout: float = 15) -> int:
        code = self.proc.wait(timeout)
        self._reader.join(5)
        return code

    def cleanup(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)
        self._reader.join(5)
        assert self.proc.stderr is not None
        self.proc.stderr.close()


@pytest.fixture
def start_master() -> Iterator[Callable[..., MasterProcess]]:
    started: list[MasterProcess] = []

    def start(config: Path, worker: str = "serve") -> MasterProcess:
        master = MasterProcess(config, worker)
        started.append(master)
        return master

    yield start
    for master in started:
        master.cleanup()


def http_get(port: int, target: str = "/", timeout: float = 5) -> tuple[dict[str, str], bytes]:
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as conn:
        conn.sendall(f"GET {target} HTTP/1.0\r\nHost: test\r\n\r\n".encode())
        response = read_to_eof(conn)
    head, _, body = response.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    assert status_line == "HTTP/1.0 200 OK", response
    headers = dict(line.split(": ", 1) for line in header_lines)
    return headers, body


def read_to_eof(conn: socket.socket) -> bytes:
    chunks = []
    while chunk := conn.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)


def answering_pids(port: int, expected: set[int], timeout: float = 10) -> set[int]:
    """Pids answering on ``port``, collected until all of ``expected`` were seen (or timeout).

    Each round sends as many concurrent held requests as there are expected workers; a test
    worker takes one connection at a time, so a round spreads over idle workers.
    """
    seen: set[int] = set()
    deadline = time.monotonic() + timeout
    while not expected <= seen and time.monotonic() < deadline:
        conns = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in expected]
        try:
            for conn in conns:
                conn.sendall(b"GET /hold?ms=50 HTTP/1.0\r\n\r\n")
            for conn in conns:
                body = read_to_eof(conn).partition(b"\r\n\r\n")[2]
                seen.add(json.loads(body)["pid"])
        finally:
            for conn in conns:
                conn.close()
    return seen


def pid_gone(pid: int, timeout: float = 10) -> bool:
    """True once ``pid`` has exited (a zombie not yet reaped by its new parent counts as exited)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (FileNotFoundError, ProcessLookupError):
            return True
        if state in ("Z", "X"):
            return True
        time.sleep(0.02)
    return False


def log_time(line: LogLine) -> float:
    return datetime.fromisoformat(str(line["time"]).replace("Z", "+00:00")).timestamp()


def is_msg(msg: str, **fields: object) -> Callable[[LogLine], bool]:
    return lambda line: line.get("msg") == msg and all(line.get(k) == v for k, v in fields.items())


# --- tests --------------------------------------------------------------------------------------


def test_listens_and_every_worker_answers(tmp_path: Path, start_master: Callable[..., MasterProcess]) -> None:
    port = free_port()
    master = start_master(write_config(tmp_path / "gateway.toml", port, workers=2))
    (listening,) = master.wait_for(is_msg("listening"))
    assert listening["level"] == "info"
    assert listening["listen"] == f"127.0.0.1:{port}"
    assert listening["workers"] == 2
    assert listening["pid"] == master.proc.pid
    assert str(listening["time"]).endswith("Z") and len(str(listening["time"])) == len(
        "2024-01-01T00:00:00.000Z"
    )

    limits = Path(f"/proc/{master.proc.pid}/limits").read_text().splitlines()
    (open_files,) = [line.split()[3:5] for line in limits if line.startswith("Max open files")]
    assert open_files[0] == open_files[1]  # soft limit raised to the hard limit

    workers = master.started_pids(generation=1)
    assert sorted(workers) == [0, 1]
    assert master.proc.pid not in workers.values()
    assert answering_pids(port, set(workers.values())) == set(workers.values())
    headers, body = http_get(port)
    assert int(headers["X-Worker-Pid"]) in workers.values()
    assert json.loads(body)["workers"] == 2

    master.send(signal.SIGTERM)
    assert master.wait_exit() == 0
    assert master.messages("stopped")
    with pytest.raises(ConnectionRefusedError):
        http_get(port)


def test_killed_worker_is_respawned_in_its_slot(
    tmp_path: Path, start_master: Callable[..., MasterProcess]
) -> None:
    port = free_port()
    master = start_master(write_config(tmp_path / "gateway.toml", port, workers=2))
    master.wait_for(is_msg("listening"))
    before = master.started_pids(generation=1)
    victim = before[1]
    assert answering_pids(port, set(before.values())) == set(before.values())
    # Past the crash-loop window, a death is restarted at once (no back-off).
    (victim_started,) = master.wait_for(is_msg("worker spawned", pid=victim))
    time.sleep(max(0.0, log_time(victim_started) + 1.1 - time.time()))

    os.kill(victim, signal.SIGKILL)
    (exited,) = master.wait_for(is_msg("worker exited unexpectedly", pid=victim))
    assert exited["level"] == "error"
    assert exited["slot"] == 1 and exited["signal"] == "SIGKILL"
    master.wait_for(is_msg("worker spawned", slot=1), count=2)
    after = master.started_pids(generation=1)
    assert after[0] == before[0] and after[1] != victim
    assert answering_pids(port, set(after.values())) == set(after.values())
    assert not master.messages("worker crash loop, delaying restart")

    master.send(signal.SIGTERM)
    assert master.wait_exit() == 0


def test_crash_loop_restarts_are_delayed_exponentially(
    tmp_path: Path, start_master: Callable[..., MasterProcess]
) -> None:
    port = free_port()
    master = start_master(write_config(tmp_path / "gateway.toml", port, workers=1), worker="crash")
    delays = master.wait_for(is_msg("worker crash loop, delaying restart"), count=4)
    assert [line["delay_s"] for line in delays[:4]] == [0.1, 0.2, 0.4, 0.8]
    exits = master.messages("worker exited unexpectedly")
    assert all(line["exit_code"] == 3 and line["slot"] == 0 for line in exits)

    # Each restart really waited its delay: compare each delay line with the next start.
    starts = master.messages("worker spawned")
    for delay_line, next_start in zip(delays[:3], starts[1:4], strict=True):
        waited = log_time(next_start) - log_time(delay_line)
        assert waited >= float(str(delay_line["delay_s"])) - 0.002  # log times have ms precision

    master.send(signal.SIGTERM)  # a pending delayed restart must not hold up the stop
    assert master.wait_exit() == 0


def test_worker_exception_exits_70_with_traceback(
    tmp_path: Path, start_master: Callable[..., MasterProcess]
) -> None:
    port = free_port()
    master = start_master(write_config(tmp_path / "gateway.toml", port, workers=1), worker="raise_error")
    (exited, *_) = master.wait_for(is_msg("worker exited unexpectedly"))
    assert exited["exit_code"] == 70
    assert "RuntimeError: test worker failed on purpose" in master.stderr()
    master.send(signal.SIGINT)
    assert master.wait_exit() == 0


def test_sighup_with_a_valid_config_starts_a_new_generation(
    tmp_path: Path, start_master: Callable[..., MasterProcess]
) -> None:
    port = free_port()
    config = write_config(tmp_path / "gateway.toml", port, workers=2)
    master = start_master(config)
    master.wait_for(is_msg("listening"))
    old = set(master.started_pids(generation=1).values())
    assert answering_pids(port, old) == old

    write_config(config, port, workers=3)
    master.send(signal.SIGHUP)
    (reloaded,) = master.wait_for(is_msg("reloaded"))
    assert reloaded["generation"] == 2 and reloaded["workers"] == 3
    new = set(master.started_pids(generation=2).values())
    assert len(new) == 3 and not new & old

    # The old generation drains and exits; those exits are not restarts.
    master.wait_for(is_msg("worker exited", generation=1), count=2)
    master.wait_for(is_msg("generation drained", generation=1))
    assert all(pid_gone(pid) for pid in old)
    assert not master.messages("worker exited unexpectedly")
    assert answering_pids(port, new) == new
    assert json.loads(http_get(port)[1])["workers"] == 3

    master.send(signal.SIGTERM)
    assert master.wait_exit() == 0


def test_reload_drops_no_connection(tmp_path: Path, start_master: Callable[..., MasterProcess]) -> None:
    port = free_port()
    config = write_config(tmp_path / "gateway.toml", port, workers=2)
    master = start_master(config)
    master.wait_for(is_msg("listening"))
    failures: list[BaseException] = []
    answered: set[int] = set()
    done = threading.Event()

    def client() -> None:
        while not done.is_set():
            try:
                headers, _ = http_get(port)
                answered.add(int(headers["X-Worker-Pid"]))
            except BaseException as exc:
                failures.append(exc)

    thread = threading.Thread(target=client)
    thread.start()
    try:
        for generation in (2, 3, 4):
            master.send(signal.SIGHUP)
            master.wait_for(is_msg("reloaded", generation=generation))
            master.wait_for(is_msg("generation drained", generation=generation - 1))
    finally:
        done.set()
        thread.join(10)
    assert failures == []
    assert answered & set(master.started_pids(generation=4).values())
    assert len(master.messages("closed listener")) == 0  # same address: one socket throughout

    master.send(signal.SIGTERM)
    assert master.wait_exit() == 0


def test_sighup_with_a_new_listen_address_moves_the_socket(
    tmp_path: Path, start_master: Callable[..., MasterProcess]
) -> None:
    old_port, new_port = free_port(), free_port()
    config = write_config(tmp_path / "gateway.toml", old_port, workers=1)
    master = start_master(config)
    master.wait_for(is_msg("listening"))
    http_get(old_port)

    write_config(config, new_port, workers=1)
    master.send(signal.SIGHUP)
    (reloaded,) = master.wait_for(is_msg("reloaded"))
    assert reloaded["listen"] == f"127.0.0.1:{new_port}"
    http_get(new_port)
    master.wait_for(is_msg("closed listener", listen=f"127.0.0.1:{old_port}"))
    with pytest.raises(ConnectionRefusedError):
        http_get(old_port)

    master.send(signal.SIGTERM)
    assert master.wait_exit() == 0


def test_sighup_with_a_broken_config_keeps_the_old_workers(
    tmp_path: Path, start_master: Callable[..., MasterProcess]
) -> None:
    port = free_port()
    config = write_config(tmp_path / "gateway.toml", port, workers=2)
    master = start_master(config)
    master.wait_for(is_msg("listening"))
    workers = set(master.started_pids(generation=1).values())

    config.write_text(f'[server]\nlisten = "127.0.0.1:{port}"\nworkers = -1\nno_such_key = 1\n')
    master.send(signal.SIGHUP)
    errors = master.wait_for(is_msg("reload failed: invalid config"), count=2)
    assert all(line["level"] == "error" for line in errors)
    reported = " ".join(str(line["error"]) for line in errors)
    assert "server.workers" in reported and "no_such_key" in reported
    master.wait_for(is_msg("keeping the running config"))

    assert not master.messages("reloaded")
    assert master.proc.poll() is None
    assert answering_pids(port, workers) == workers

    master.send(signal.SIGTERM)
    assert master.wait_exit() == 0


def test_sigterm_lets_an_in_flight_request_finish(
    tmp_path: Path, start_master: Callable[..., MasterProcess]
) -> None:
    port = free_port()
    master = start_master(write_config(tmp_path / "gateway.toml", port, workers=2))
    master.wait_for(is_msg("listening"))
    # Both workers serving (signal handlers installed; before that SIGTERM kills, by design).
    workers = set(master.started_pids(generation=1).values())
    assert answering_pids(port, workers) == workers
    with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
        conn.sendall(b"GET /slow?ms=700 HTTP/1.0\r\n\r\n")
        first = b""
        while b"start\n" not in first:
            chunk = conn.recv(4096)
            assert chunk, first
            first += chunk
        master.send(signal.SIGTERM)  # the request is now in flight
        rest = read_to_eof(conn)
    assert (first + rest).endswith(b"start\nend\n")
    assert master.wait_exit() == 0
    stopping = master.messages("stopping")
    assert stopping and stopping[0]["signal"] == "SIGTERM"
    assert not master.messages("workers did not stop in time, killing")
    exits = master.messages("worker exited")
    assert len(exits) == 2 and all(line["exit_code"] == 0 for line in exits)


def test_second_stop_signal_kills_workers_at_once(
    tmp_path: Path, start_master: Callable[..., MasterProcess]
) -> None:
    port = free_port()
    master = start_master(write_config(tmp_path / "gateway.toml", port, workers=1, drain_timeout="60s"))
    master.wait_for(is_msg("listening"))
    with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
        conn.sendall(b"GET /slow?ms=60000 HTTP/1.0\r\n\r\n")
        assert conn.recv(4096)
        master.send(signal.SIGQUIT)  # graceful, like SIGTERM
        master.wait_for(is_msg("stopping", signal="SIGQUIT"))
        master.send(signal.SIGINT)
        master.wait_for(is_msg("second stop signal, killing workers"))
        assert master.wait_exit(timeout=10) == 0
    (exited,) = master.messages("worker exited")
    assert exited["signal"] == "SIGKILL"


def test_sigusr1_is_forwarded_to_every_worker(
    tmp_path: Path, start_master: Callable[..., MasterProcess]
) -> None:
    port = free_port()
    master = start_master(write_config(tmp_path / "gateway.toml", port, workers=2))
    master.wait_for(is_msg("listening"))
    workers = set(master.started_pids(generation=1).values())
    assert answering_pids(port, workers) == workers  # both have installed their handlers
    master.send(signal.SIGUSR1)
    got = master.wait_for(is_msg("test worker got SIGUSR1"), count=2)
    assert {line["pid"] for line in got} == workers
    master.send(signal.SIGTERM)
    assert master.wait_exit() == 0


def test_workers_stop_when_the_master_is_killed(
    tmp_path: Path, start_master: Callable[..., MasterProcess]
) -> None:
    port = free_port()
    master = start_master(write_config(tmp_path / "gateway.toml", port, workers=2))
    master.wait_for(is_msg("listening"))
    workers = set(master.started_pids(generation=1).values())
    assert answering_pids(port, workers) == workers
    master.send(signal.SIGKILL)
    assert master.wait_exit() == -signal.SIGKILL
    # No unsupervised worker keeps serving the port.
    assert all(pid_gone(pid) for pid in workers)


def test_config_error_at_start_exits_1_with_every_error_line(tmp_path: Path) -> None:
    config = tmp_path / "gateway.toml"
    config.write_text('[server]\nlisten = "127.0.0.1:0"\nworkers = -1\n')
    result = subprocess.run(
        [sys.executable, "-c", MASTER_CODE, str(config), "serve", str(SUPPORT)],
        cwd=ROOT,
        capture_output=True,
        timeout=30,
    )
    assert result.returncode == 1
    lines = result.stderr.decode().splitlines()
    assert len(lines) == 2
    assert all(line.startswith(f"{config}: ") for line in lines)
    assert any("server.listen" in line for line in lines)
    assert any("server.workers" in line for line in lines)


# --- pieces of the master, in process ------------------------------------------------------------


def test_crash_back_off_doubles_caps_and_resets() -> None:
    from gateway.config import parse_config
    from gateway.server import Generation, Master

    config = parse_config('[server]\nlisten = "127.0.0.1:1"\naccess_log = "off"\n')
    master = Master("unused.toml", config, worker_main=lambda config, sockets, worker_id: 0)
    generation = Generation(number=1, config=config, listen=(("127.0.0.1", 1),), sockets=[], size=1)

    def restart_delay(lived: float) -> float:
        before = time.monotonic()
        master._schedule_restart(generation, 0, lived)
        return round(generation.restart_at.pop(0) - before, 1)

    assert [restart_delay(0.01) for _ in range(9)] == [0.1, 0.2, 0.4, 0.8, 1.6, 3.2, 6.4, 10.0, 10.0]
    assert restart_delay(5.0) == 0.0  # lived past the crash window: restarted at once ...
    assert restart_delay(0.01) == 10.0  # ... but a slot that keeps failing stays backed off
    assert restart_delay(10.0) == 0.0  # lived 10 s: healthy again
    assert restart_delay(0.01) == 0.1


def test_listener_options(tmp_path: Path) -> None:
    from gateway.server import create_listener, format_address, listen_backlog

    somaxconn = int(Path("/proc/sys/net/core/somaxconn").read_text())
    assert listen_backlog() == min(65535, somaxconn)
    port = free_port()
    with create_listener("127.0.0.1", port) as v4:
        assert v4.family == socket.AF_INET and not v4.getblocking()
        assert v4.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT) == 1
        assert v4.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR) == 1
        assert format_address(v4) == f"127.0.0.1:{port}"
        # REUSEPORT: a second listener on the same port (a reload's new socket) can coexist.
        with create_listener("127.0.0.1", port):
            pass
    with create_listener("", port) as anywhere:
        assert format_address(anywhere) == f"0.0.0.0:{port}"
    if socket.has_ipv6:
        try:
            v6 = create_listener("::1", port)
        except OSError:  # IPv6 disabled in this environment: nothing more to check
            return
        with v6:
            assert v6.family == socket.AF_INET6
            assert format_address(v6) == f"[::1]:{port}"
