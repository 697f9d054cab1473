"""The master process: listen, fork workers, supervise them, reload on SIGHUP, drain on SIGTERM.

Fork safety, deliberately:

* Before any fork the master holds only the config (plain immutable objects), the listening
  sockets and a non-blocking self-pipe used as the signal wakeup fd. It never creates an event
  loop, a thread or a client connection, so a child starts from a clean, single-threaded copy.
* Signals the master handles are blocked around ``os.fork()``. Otherwise a signal arriving in
  the child before it resets its handlers would run the master's C-level handler and write
  into the master's wakeup pipe, making the master act on a signal that was never sent to it.
* The child resets those handlers (SIGHUP and SIGUSR1 to "ignore", see ``_WORKER_IGNORES``),
  detaches and closes the wakeup pipe, closes listening sockets of other generations (so a
  socket the master closes after a listen-address change really closes), then unblocks
  signals and calls ``worker_main``. It always leaves through ``os._exit``.

Supervision is one loop in the master's main thread: ``select`` on the wakeup pipe with a
timeout set by the nearest timer (a delayed restart or the stop deadline), then reap children
with ``waitpid(WNOHANG)``, then act on the signals read from the pipe.
"""

from __future__ import annotations

import contextlib
import ctypes
import importlib
import ipaddress
import os
import resource
import select
import signal
import socket
import sys
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from types import FrameType
from typing import TYPE_CHECKING

from gateway.logs import Level, log

if TYPE_CHECKING:
    from gateway.config import Config

WorkerMain = Callable[["Config", list[socket.socket], int], int]

# A worker that dies this soon after starting is crash-looping: its restart is delayed.
CRASH_LOOP_WINDOW = 1.0
BACKOFF_INITIAL = 0.1
BACKOFF_MAX = 10.0
# A worker that lived this long proves the slot healthy again: its back-off starts over.
BACKOFF_RESET_AFTER = 10.0
# Extra time, beyond the config's drain_timeout, that workers get to exit on a graceful stop.
STOP_GRACE = 5.0
# Exit code of a worker whose worker_main raised (EX_SOFTWARE).
EXIT_WORKER_CRASHED = 70

_STOP_SIGNALS = frozenset({signal.SIGTERM, signal.SIGINT, signal.SIGQUIT})
_HANDLED_SIGNALS = (
    signal.SIGCHLD,
    signal.SIGHUP,
    signal.SIGTERM,
    signal.SIGINT,
    signal.SIGQUIT,
    signal.SIGUSR1,
)
# The master owns SIGHUP (reload) and forwards SIGUSR1 to workers; a worker that has not (yet)
# installed its own handler must not be killed by either, so the child starts with them ignored.
_WORKER_IGNORES = frozenset({signal.SIGHUP, signal.SIGUSR1})


# --- listening sockets ----------------------------------------------------------------------------


def listen_backlog() -> int:
    """The kernel's accept-queue cap (somaxconn), itself capped at 65535."""
    try:
        with open("/proc/sys/net/core/somaxconn") as f:
            return min(65535, int(f.read().strip()))
    except (OSError, ValueError):
        return socket.SOMAXCONN


def create_listener(host: str, port: int) -> socket.socket:
    """A non-blocking listening TCP socket, shared by all workers of a generation.

    ``host == ""`` means every IPv4 interface (nginx's ``listen 8080``). IPv6 sockets are
    v6-only so that the same port can also be bound on IPv4 by a second listen address.
    """
    family, address = _resolve_bind_address(host, port)
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        # REUSEPORT lets a reload bind the new address while an old socket still exists,
        # and lets a second gateway instance (e.g. a binary upgrade) share the port.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind(address)
        sock.listen(listen_backlog())
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


def _resolve_bind_address(host: str, port: int) -> tuple[socket.AddressFamily, tuple[str, int]]:
    if not host:
        return socket.AF_INET, ("0.0.0.0", port)
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        family, _, _, _, sockaddr = infos[0]
        return family, (str(sockaddr[0]), port)
    family = socket.AF_INET6 if ip.version == 6 else socket.AF_INET
    return family, (host, port)


def listen_addresses(config: Config) -> tuple[tuple[str, int], ...]:
    """The sockets a generation listens on: server.listen, then admin.listen when configured.

    Workers receive them in this order (``sockets[0]`` the gateway, ``sockets[1]`` the admin API).
    """
    from gateway.config import parse_listen

    addresses = [parse_listen(config.server.listen)]
    admin = getattr(config, "admin", None)
    if admin is not None:
        addresses.append(parse_listen(admin.listen))
    return tuple(addresses)


def format_address(sock: socket.socket) -> str:
    """ "host:port" of a bound socket, IPv6 hosts in brackets."""
    host, port = sock.getsockname()[:2]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def raise_nofile_limit() -> None:
    """Raise RLIMIT_NOFILE's soft limit to the hard limit: 10k+ connections per worker must fit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard
    if hard == resource.RLIM_INFINITY:
        # Linux refuses an infinite soft limit; nr_open is the real ceiling.
        try:
            with open("/proc/sys/fs/nr_open") as f:
                target = int(f.read().strip())
        except (OSError, ValueError):
            return
    if soft == resource.RLIM_INFINITY or soft >= target:
        return
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    except (OSError, ValueError) as exc:
        log("warning", "could not raise the open-files limit", soft=soft, hard=hard, error=str(exc))


# --- supervision state ----------------------------------------------------------------------------


@dataclass
class Worker:
    pid: int
    slot: int
    generation: Generation
    started_at: float  # time.monotonic()


@dataclass
class Generation:
    """One config's set of workers. A reload starts a new generation and drains the old one."""

    number: int
    config: Config
    listen: tuple[tuple[str, int], ...]  # the gateway's address, then the admin API's (if any)
    sockets: list[socket.socket]
    size: int
    workers: dict[int, Worker] = field(default_factory=dict)  # slot -> live worker
    restart_at: dict[int, float] = field(default_factory=dict)  # slot -> monotonic due time
    backoff: dict[int, float] = field(default_factory=dict)  # slot -> last restart delay


def _worker_count(config: Config) -> int:
    return config.server.workers or os.cpu_count() or 1


def _describe_status(status: int) -> dict[str, object]:
    if os.WIFSIGNALED(status):
        signum = os.WTERMSIG(status)
        try:
            return {"signal": signal.Signals(signum).name}
        except ValueError:
            return {"signal": signum}
    return {"exit_code": os.waitstatus_to_exitcode(status)}


def _exited_badly(status: int) -> bool:
    return os.WIFSIGNALED(status) or os.waitstatus_to_exitcode(status) != 0


class Master:
    """Owns the listening sockets and the worker processes. Run it with ``supervise()``."""

    def __init__(self, config_path: str, config: Config, worker_main: WorkerMain) -> None:
        self._config_path = config_path
        self._worker_main = worker_main
        self._initial_config = config
        self._current: Generation | None = None
        self._draining: list[Generation] = []
        self._by_pid: dict[int, Worker] = {}
        self._generation_counter = 0
        self._stopping = False
        self._stop_deadline = 0.0
        self._killed = False
        self._kill_deadline = 0.0
        self._wakeup_r = -1
        self._wakeup_w = -1
        self._pid = os.getpid()

    # -- lifecycle --

    def supervise(self) -> int:
        """Start the first generation and supervise until stopped. Returns the exit code."""
        config = self._initial_config
        listen = listen_addresses(config)
        try:
            sockets = [create_listener(*address) for address in listen]
        except OSError as exc:
            log("error", "cannot listen", listen=config.server.listen, error=str(exc))
            return 1
        with self._signals_installed():
            generation = self._new_generation(config, listen, sockets)
            self._current = generation
            self._spawn_generation(generation)
            log(
                "info",
                "listening",
                listen=format_address(sockets[0]),
                workers=generation.size,
                pid=os.getpid(),
            )
            try:
                self._loop()
            except BaseException:
                # A bug in the master must not leave workers without a supervisor:
                # let them drain and exit (they would also get SIGTERM on our death).
                log("error", "master failed, stopping workers", error=traceback.format_exc())
                self._signal_workers(list(self._by_pid.values()), signal.SIGTERM)
                raise
        for sock in self._live_sockets():
            sock.close()
        log("info", "stopped", pid=os.getpid())
        return 0

    @contextlib.contextmanager
    def _signals_installed(self) -> Iterator[None]:
        self._wakeup_r, self._wakeup_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        previous = {signum: signal.signal(signum, _note_signal) for signum in _HANDLED_SIGNALS}
        previous_wakeup = signal.set_wakeup_fd(self._wakeup_w, warn_on_full_buffer=False)
        try:
            yield
        finally:
            signal.set_wakeup_fd(previous_wakeup)
            for signum, handler in previous.items():
                signal.signal(signum, handler)
            os.close(self._wakeup_r)
            os.close(self._wakeup_w)
            self._wakeup_r = self._wakeup_w = -1

    def _loop(self) -> None:
        while True:
            self._wait(self._next_timeout())
            for signum in self._read_signals():
                self._on_signal(signum)
            self._reap()
            if self._stopping:
                if not self._by_pid:
                    return
                now = time.monotonic()
                if not self._killed and now >= self._stop_deadline:
                    log("warning", "workers did not stop in time, killing", pids=sorted(self._by_pid))
                    self._kill_all()
                elif self._killed and now >= self._kill_deadline:
                    # Only a process stuck in the kernel survives SIGKILL this long; do not hang.
                    log("error", "workers survived SIGKILL, giving up", pids=sorted(self._by_pid))
                    return
            else:
                self._restart_due_slots()

    def _next_timeout(self) -> float | None:
        now = time.monotonic()
        if self._stopping:
            # After SIGKILL, poll: the children are gone within milliseconds.
            return 0.05 if self._killed else max(0.0, self._stop_deadline - now)
        due = list(self._current.restart_at.values()) if self._current else []
        return max(0.0, min(due) - now) if due else None

    def _wait(self, timeout: float | None) -> None:
        # select is restarted after a signal (PEP 475), and the signal's wakeup byte then
        # makes the pipe readable, so no signal is slept through.
        select.select([self._wakeup_r], [], [], timeout)

    def _read_signals(self) -> list[int]:
        received = bytearray()
        while True:
            try:
                chunk = os.read(self._wakeup_r, 4096)
            except BlockingIOError:
                break
            if not chunk:
                break
            received += chunk
        return list(received)

    # -- signals --

    def _on_signal(self, signum: int) -> None:
        if signum == signal.SIGCHLD:
            return  # reaping happens on every loop turn
        if signum in _STOP_SIGNALS:
            self._on_stop_signal(signal.Signals(signum))
        elif signum == signal.SIGHUP:
            if self._stopping:
                log("warning", "reload ignored: stopping")
            else:
                self._reload()
        elif signum == signal.SIGUSR1:
            log("info", "forwarding SIGUSR1 to workers", pids=sorted(self._by_pid))
            self._signal_workers(list(self._by_pid.values()), signal.SIGUSR1)

    def _on_stop_signal(self, signum: signal.Signals) -> None:
        if self._stopping:
            if not self._killed:
                log("warning", "second stop signal, killing workers", signal=signum.name)
                self._kill_all()
            return
        self._stopping = True
        generations = self._live_generations()
        drain = max((g.config.server.drain_timeout for g in generations), default=0.0)
        self._stop_deadline = time.monotonic() + drain + STOP_GRACE
        for generation in generations:
            generation.restart_at.clear()
        log("info", "stopping", signal=signum.name, workers=len(self._by_pid), drain_timeout=drain)
        self._signal_workers(list(self._by_pid.values()), signal.SIGTERM)

    def _kill_all(self) -> None:
        self._killed = True
        self._kill_deadline = time.monotonic() + STOP_GRACE
        self._signal_workers(list(self._by_pid.values()), signal.SIGKILL)

    @staticmethod
    def _signal_workers(workers: list[Worker], signum: signal.Signals) -> None:
        for worker in workers:
            with contextlib.suppress(ProcessLookupError):
                os.kill(worker.pid, signum)

    # -- reload --

    def _reload(self) -> None:
        from gateway.config import ConfigError, load_config

        assert self._current is not None
        try:
            config = load_config(self._config_path)
        except ConfigError as exc:
            for line in exc.errors:
                log("error", "reload failed: invalid config", path=self._config_path, error=line)
            log("warning", "keeping the running config", generation=self._current.number)
            return
        except OSError as exc:
            log("error", "reload failed: cannot read config", path=self._config_path, error=str(exc))
            return
        listen = listen_addresses(config)
        sockets = self._sockets_for(listen)
        if sockets is None:
            try:
                sockets = [create_listener(*address) for address in listen]
            except OSError as exc:
                log("error", "reload failed: cannot listen", listen=config.server.listen, error=str(exc))
                return
        old = self._current
        old.restart_at.clear()
        # Listed as draining before the fork, so that new workers close the old sockets.
        self._draining.append(old)
        new = self._new_generation(config, listen, sockets)
        self._current = new
        self._spawn_generation(new)
        self._signal_workers(list(old.workers.values()), signal.SIGTERM)
        log(
            "info",
            "reloaded",
            generation=new.number,
            workers=new.size,
            listen=format_address(sockets[0]),
            draining_generation=old.number,
        )
        self._retire_drained()

    def _sockets_for(self, listen: tuple[tuple[str, int], ...]) -> list[socket.socket] | None:
        """Reuse a live generation's sockets for an unchanged address: one accept queue, no drops."""
        for generation in self._live_generations():
            if generation.listen == listen:
                return generation.sockets
        return None

    def _retire_drained(self) -> None:
        for generation in [g for g in self._draining if not g.workers]:
            self._draining.remove(generation)
            log("info", "generation drained", generation=generation.number)
            in_use = {id(sock) for sock in self._live_sockets()}
            for sock in generation.sockets:
                if id(sock) not in in_use:
                    address = format_address(sock)
                    sock.close()
                    log("info", "closed listener", listen=address)

    def _live_generations(self) -> list[Generation]:
        current = [self._current] if self._current else []
        return current + self._draining

    def _live_sockets(self) -> list[socket.socket]:
        return [sock for generation in self._live_generations() for sock in generation.sockets]

    # -- workers --

    def _new_generation(
        self, config: Config, listen: tuple[tuple[str, int], ...], sockets: list[socket.socket]
    ) -> Generation:
        self._generation_counter += 1
        return Generation(
            number=self._generation_counter,
            config=config,
            listen=listen,
            sockets=sockets,
            size=_worker_count(config),
        )

    def _spawn_generation(self, generation: Generation) -> None:
        for slot in range(generation.size):
            self._spawn(generation, slot)

    def _spawn(self, generation: Generation, slot: int) -> None:
        # Anything buffered would be written twice (by master and child) after the fork.
        sys.stdout.flush()
        sys.stderr.flush()
        blocked = signal.pthread_sigmask(signal.SIG_BLOCK, _HANDLED_SIGNALS)
        try:
            pid = os.fork()
            if pid == 0:
                self._run_child(generation, slot)  # never returns
        except OSError as exc:
            # EAGAIN/ENOMEM: out of processes or memory. Retry later with the crash back-off.
            log("error", "cannot fork a worker", slot=slot, generation=generation.number, error=str(exc))
            self._schedule_restart(generation, slot, lived=0.0)
            return
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
        worker = Worker(pid=pid, slot=slot, generation=generation, started_at=time.monotonic())
        generation.workers[slot] = worker
        self._by_pid[pid] = worker
        log("info", "worker spawned", pid=pid, slot=slot, generation=generation.number)

    def _run_child(self, generation: Generation, slot: int) -> None:
        code = EXIT_WORKER_CRASHED
        try:
            self._prepare_child(generation, slot)
            code = self._worker_main(generation.config, generation.sockets, slot)
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        except BaseException:
            traceback.print_exc()
            code = EXIT_WORKER_CRASHED
        finally:
            with contextlib.suppress(BaseException):
                sys.stdout.flush()
                sys.stderr.flush()
            os._exit(code)

    def _prepare_child(self, generation: Generation, slot: int) -> None:
        _stop_with_parent(self._pid)
        signal.set_wakeup_fd(-1)
        for signum in _HANDLED_SIGNALS:
            signal.signal(signum, signal.SIG_IGN if signum in _WORKER_IGNORES else signal.SIG_DFL)
        os.close(self._wakeup_r)
        os.close(self._wakeup_w)
        mine = {id(sock) for sock in generation.sockets}
        for sock in self._live_sockets():
            if id(sock) not in mine:
                sock.close()
        signal.pthread_sigmask(signal.SIG_SETMASK, set())
        _set_process_title(f"lambdagate: worker {slot} (generation {generation.number})")

    def _reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            worker = self._by_pid.pop(pid, None)
            if worker is not None:
                self._on_worker_exit(worker, status)

    def _on_worker_exit(self, worker: Worker, status: int) -> None:
        generation = worker.generation
        if generation.workers.get(worker.slot) is worker:
            del generation.workers[worker.slot]
        lived = time.monotonic() - worker.started_at
        fields: dict[str, object] = {
            "pid": worker.pid,
            "slot": worker.slot,
            "generation": generation.number,
            "lived_s": round(lived, 3),
            **_describe_status(status),
        }
        expected = self._stopping or generation is not self._current
        if expected:
            level: Level = "warning" if _exited_badly(status) else "info"
            log(level, "worker exited", **fields)
            self._retire_drained()
            return
        log("error" if _exited_badly(status) else "warning", "worker exited unexpectedly", **fields)
        self._schedule_restart(generation, worker.slot, lived)

    def _schedule_restart(self, generation: Generation, slot: int, lived: float) -> None:
        previous = generation.backoff.get(slot, 0.0)
        if lived >= BACKOFF_RESET_AFTER:
            previous = 0.0
        if lived < CRASH_LOOP_WINDOW:
            delay = min(BACKOFF_MAX, previous * 2) if previous else BACKOFF_INITIAL
            log(
                "warning",
                "worker crash loop, delaying restart",
                slot=slot,
                generation=generation.number,
                delay_s=delay,
            )
        else:
            delay = 0.0
        # Between the crash-loop window and the reset age the level is kept, not raised.
        generation.backoff[slot] = delay or previous
        generation.restart_at[slot] = time.monotonic() + delay

    def _restart_due_slots(self) -> None:
        generation = self._current
        if generation is None:
            return
        now = time.monotonic()
        for slot, when in sorted(generation.restart_at.items()):
            if when <= now:
                del generation.restart_at[slot]
                self._spawn(generation, slot)


def _note_signal(signum: int, frame: FrameType | None) -> None:
    """Python-level handler; the signal number reaches the loop through the wakeup fd."""


_PR_SET_PDEATHSIG = 1


def _stop_with_parent(master_pid: int) -> None:
    """Ask Linux to SIGTERM this worker when the master dies, e.g. of SIGKILL or OOM.

    An orphaned worker would keep serving the old config on the shared port (SO_REUSEPORT lets a
    new master bind beside it), unsupervised. Elsewhere than Linux this is skipped.
    """
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    except (OSError, AttributeError):
        return
    if os.getppid() != master_pid:  # the master died before prctl took effect
        raise SystemExit(0)


def _set_process_title(title: str) -> None:
    # setproctitle is optional, not a dependency: use it when the operator installed it.
    try:
        module = importlib.import_module("setproctitle")
    except ImportError:
        return
    module.setproctitle(title)


def _write_pid_file() -> str | None:
    path = os.environ.get("LAMBDAGATE_PID_FILE")
    if not path:
        return None
    with open(path, "w") as f:
        f.write(f"{os.getpid()}\n")
    return path


def run(config_path: str, *, worker_main: WorkerMain | None = None) -> int:
    """Run the gateway master until it is stopped; returns the process exit code.

    ``worker_main`` runs one worker in the forked child (default: ``gateway.worker.serve``);
    tests inject a simple one.
    """
    from gateway.config import ConfigError, load_config

    try:
        config = load_config(config_path)
    except ConfigError as exc:
        for line in exc.errors:
            print(line, file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"{config_path}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    if worker_main is None:
        from gateway.worker import serve

        worker_main = serve
    raise_nofile_limit()
    _set_process_title("lambdagate: master")
    pid_file = _write_pid_file()
    try:
        return Master(config_path, config, worker_main).supervise()
    finally:
        if pid_file:
            with contextlib.suppress(OSError):
                os.unlink(pid_file)


__all__ = ["Master", "create_listener", "listen_backlog", "raise_nofile_limit", "run"]
