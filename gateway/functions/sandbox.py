"""Sandboxed instances of a function, seen from the gateway.

Every function has one sandbox parent process (gateway.functions.python_runtime.zygote): started
with the function's scrubbed environment and cwd at its code folder, it confines itself (user,
no_new_privs, limits, network namespace) and, for runtime "python", imports the handler module
once. Instances are forks of it, so a cold start costs a fork and a connection, not an
interpreter start. For runtime "provided" the fork execs ``code/bootstrap`` after confining.

Each instance has its own Runtime API listener (a loopback port in the gateway, or, for
``network = false``, a socket the sandbox created inside its namespace and passed back), its own
output pipe and its own temp dir, and is its own process group: killing it kills what it forked.
A python instance gets its events over an invocation socket instead (see
gateway/functions/invocation_channel.py); its Runtime API listener only serves extension stubs.

Limitation: the instances of all functions run as the same unprivileged user (nobody), so
RLIMIT_NPROC counts them together and one function's instance may signal another's; a process
that leaves its process group (setsid) survives a deadline kill until its sandbox parent stops.
"""

from __future__ import annotations

import array
import asyncio
import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import msgspec

from gateway.functions.invocation_channel import InvocationChannel
from gateway.functions.logcapture import LogCapture, LogSink
from gateway.functions.runtime_api import Invocation, RuntimeApiProtocol, RuntimeChannel
from gateway.functions.spec import FunctionSpec
from gateway.logs import log

GiB = 1024**3
MiB = 1024**2

# What Lambda puts on PATH, and the language it sets.
LAMBDA_PATH = "/usr/local/bin:/usr/bin/:/bin:/opt/bin"
_MAX_MESSAGE = 1 << 20


@dataclass(frozen=True)
class SandboxLimits:
    """Resource limits of instances (memory and run time come from the FunctionSpec)."""

    open_files: int = 1024
    file_size: int = 512 * MiB  # Lambda's default /tmp size
    # RLIMIT_NPROC counts every process and thread of the sandbox user, across functions.
    processes: int = 1024
    # CPU seconds over an instance's whole life; the pool retires an instance well before.
    cpu_seconds: int = 3600
    # An exec'd runtime (provided) maps its interpreter, libraries and thread stacks on top of
    # the function's memory; the python runtime measures its own mappings at fork instead.
    address_space_allowance: int = 1 * GiB


def sandbox_user() -> tuple[int, int] | None:
    """(uid, gid) of "nobody" when the gateway runs as root; None: stay the gateway's user."""
    if os.geteuid() != 0:
        return None
    try:
        entry = pwd.getpwnam("nobody")
    except KeyError:
        return (65534, 65534)
    return (entry.pw_uid, entry.pw_gid)


def function_environment(spec: FunctionSpec, *, region: str, provisioned: bool = False) -> dict[str, str]:
    """The whole environment of an instance, minus its per-instance variables.

    Only the function's ``env`` and what Lambda itself sets: nothing of the gateway's own
    environment reaches a sandbox. Lambda's reserved names win over ``env``.
    """
    code = str(spec.code.resolve())
    environment = dict(spec.env)
    environment.update(
        AWS_LAMBDA_FUNCTION_NAME=spec.name,
        AWS_LAMBDA_FUNCTION_MEMORY_SIZE=str(spec.memory_mb),
        AWS_LAMBDA_FUNCTION_VERSION="$LATEST",
        AWS_LAMBDA_LOG_GROUP_NAME=f"/aws/lambda/{spec.name}",
        AWS_LAMBDA_INITIALIZATION_TYPE="provisioned-concurrency" if provisioned else "on-demand",
        AWS_REGION=region,
        AWS_DEFAULT_REGION=region,
        LAMBDA_TASK_ROOT=code,
        _HANDLER=spec.handler,
        TZ=":UTC",
        LANG="en_US.UTF-8",
        PATH=LAMBDA_PATH,
    )
    if spec.runtime == "python":
        environment["AWS_EXECUTION_ENV"] = f"AWS_Lambda_python{sys.version_info[0]}.{sys.version_info[1]}"
        environment["PYTHONPATH"] = code
    return environment


def runtime_paths(spec: FunctionSpec) -> list[str]:
    """What a sandbox must be able to read: the interpreter, its packages, the runtime, the code."""
    package_root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    paths = {sys.base_prefix, sys.prefix, sys.exec_prefix, package_root, str(spec.code.resolve())}
    return sorted(paths)


def log_stream_name() -> str:
    """AWS's stream name shape: 2024/05/01/[$LATEST]<32 hex>."""
    return time.strftime("%Y/%m/%d/", time.gmtime()) + "[$LATEST]" + uuid.uuid4().hex


class SandboxError(Exception):
    """A sandbox could not be started (its parent died, fork failed, ...)."""


@dataclass(frozen=True)
class ParentReady:
    pid: int
    init_ms: float  # the parent's preload (python: importing the handler module)
    init_error: bool  # the handler module failed to import: every instance reports it
    network_isolated: bool
    network_note: str | None


@dataclass(frozen=True)
class Spawned:
    pid: int
    api: str
    listener: socket.socket | None  # the Runtime API listener made inside the sandbox (no network)
    exited: asyncio.Future[int]  # resolves with the os.waitpid status when the instance ends


class SandboxParent:
    """The gateway's handle on a function's sandbox parent: start, spawn instances, stop.

    Each spawned instance comes with a future of its os.waitpid status (``Spawned.exited``).
    """

    def __init__(
        self,
        spec: FunctionSpec,
        *,
        region: str,
        limits: SandboxLimits,
        sink: LogSink,
        provisioned: bool = False,
    ) -> None:
        self.spec = spec
        self.region = region
        self.limits = limits
        self.sink = sink
        self.provisioned = provisioned
        self.user = sandbox_user()
        self.alive = False
        self.ready: ParentReady | None = None
        self.process: subprocess.Popen[bytes] | None = None
        self._ctl: socket.socket | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._ready_future: asyncio.Future[ParentReady] | None = None
        self._spawns: dict[int, asyncio.Future[Spawned]] = {}
        self._exits: dict[int, asyncio.Future[int]] = {}
        self._next_spawn = 0
        self._output: LogCapture | None = None

    async def start(self) -> ParentReady:
        loop = asyncio.get_running_loop()
        self._loop = loop
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        output_read, output_write = os.pipe2(os.O_CLOEXEC)
        environment = function_environment(self.spec, region=self.region, provisioned=self.provisioned)
        try:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "gateway.functions.python_runtime.zygote", str(theirs.fileno())],
                cwd=self.spec.code,
                env=environment,
                pass_fds=(theirs.fileno(),),
                stdin=subprocess.DEVNULL,
                stdout=output_write,
                stderr=output_write,
                start_new_session=True,
            )
        except OSError as exc:
            ours.close()
            os.close(output_read)
            raise SandboxError(f"cannot start the sandbox of {self.spec.name}: {exc}") from exc
        finally:
            theirs.close()
            os.close(output_write)
        self._output = LogCapture(output_read, function=self.spec.name, instance="init", sink=self.sink)
        self._output.start(loop)
        ours.setblocking(False)
        self._ctl = ours
        self.alive = True
        self._ready_future = loop.create_future()
        loop.add_reader(ours.fileno(), self._readable)
        self._send(
            {
                "op": "config",
                "runtime": self.spec.runtime,
                "handler": self.spec.handler,
                "network": self.spec.network,
                "user": list(self.user) if self.user is not None else None,
                "expose": runtime_paths(self.spec),
                "environment": sorted(environment),
                "cpus": list(self.spec.cpus) if self.spec.cpus is not None else None,
                "limits": {
                    "open_files": self.limits.open_files,
                    "file_size": self.limits.file_size,
                    "processes": self.limits.processes,
                    "cpu_seconds": self.limits.cpu_seconds,
                    "memory": self.spec.memory,
                    "address_space_allowance": self.limits.address_space_allowance,
                },
            }
        )
        try:
            self.ready = await asyncio.wait_for(asyncio.shield(self._ready_future), 30)
        except (TimeoutError, SandboxError):
            await self.close()
            raise
        if not self.spec.network and not self.ready.network_isolated:
            log(
                "warning",
                "function runs with the host network: no network namespace",
                function=self.spec.name,
                reason=self.ready.network_note,
            )
        return self.ready

    async def spawn(
        self, *, api: str | None, tmp: str, stream: str, log_fd: int, invocation_fd: int | None = None
    ) -> Spawned:
        """Fork an instance; api None asks the sandbox for a listener inside its namespace."""
        if not self.alive or self._loop is None:
            raise SandboxError(f"the sandbox of {self.spec.name} is not running")
        self._next_spawn += 1
        spawn_id = self._next_spawn
        future: asyncio.Future[Spawned] = self._loop.create_future()
        self._spawns[spawn_id] = future
        try:
            fds = [log_fd] if invocation_fd is None else [log_fd, invocation_fd]
            self._send({"op": "spawn", "id": spawn_id, "api": api, "tmp": tmp, "stream": stream}, fds)
            return await asyncio.wait_for(future, 10)
        finally:
            self._spawns.pop(spawn_id, None)

    def _send(self, message: dict[str, Any], fds: list[int] | None = None) -> None:
        assert self._ctl is not None
        data = msgspec.json.encode(message)
        try:
            if fds:
                self._ctl.sendmsg([data], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))])
            else:
                self._ctl.send(data)
        except OSError as exc:
            self._lost(f"control socket: {exc}")
            raise SandboxError(f"the sandbox of {self.spec.name} is gone: {exc}") from exc

    def _readable(self) -> None:
        assert self._ctl is not None
        while True:
            fds = array.array("i")
            try:
                data, ancillary, _flags, _addr = self._ctl.recvmsg(
                    _MAX_MESSAGE, socket.CMSG_SPACE(4 * fds.itemsize)
                )
            except BlockingIOError:
                return
            except OSError as exc:
                self._lost(str(exc))
                return
            for level, kind, payload in ancillary:
                if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                    fds.frombytes(payload[: len(payload) - (len(payload) % fds.itemsize)])
            if not data:
                self._lost("the sandbox parent exited")
                return
            self._handle(msgspec.json.decode(data), list(fds))

    def _handle(self, message: dict[str, Any], fds: list[int]) -> None:
        op = message.get("op")
        if op == "exited":
            exited = self._exits.pop(message["pid"], None)
            if exited is not None and not exited.done():
                exited.set_result(message["status"])
        elif op == "spawned":
            assert self._loop is not None
            listener = socket.socket(fileno=fds.pop(0)) if fds else None
            future = self._spawns.get(message["id"])
            exited = self._loop.create_future()
            self._exits[message["pid"]] = exited
            spawned = Spawned(message["pid"], message["api"], listener, exited)
            if future is not None and not future.done():
                future.set_result(spawned)
            else:  # nobody waits any more (timed out): do not leave the instance behind
                with contextlib.suppress(OSError):
                    os.killpg(spawned.pid, signal.SIGKILL)
                if listener is not None:
                    listener.close()
        elif op == "spawn_failed":
            future = self._spawns.get(message["id"])
            if future is not None and not future.done():
                future.set_exception(SandboxError(f"fork failed: {message['error']}"))
        elif op == "ready" and self._ready_future is not None and not self._ready_future.done():
            self._ready_future.set_result(
                ParentReady(
                    message["pid"],
                    message["init_ms"],
                    message["init_error"],
                    message["network_isolated"],
                    message["network_note"],
                )
            )
        for fd in fds:
            os.close(fd)

    def _lost(self, reason: str) -> None:
        if not self.alive:
            return
        self.alive = False
        if self._loop is not None and self._ctl is not None:
            self._loop.remove_reader(self._ctl.fileno())
        error = SandboxError(f"the sandbox of {self.spec.name} stopped: {reason}")
        if self._ready_future is not None and not self._ready_future.done():
            self._ready_future.set_exception(error)
        for future in self._spawns.values():
            if not future.done():
                future.set_exception(error)
        # Instances die with their parent (PR_SET_PDEATHSIG); nobody will report their status.
        for exited in self._exits.values():
            if not exited.done():
                exited.set_result(signal.SIGKILL)
        self._exits.clear()

    async def close(self) -> None:
        """Stop the parent; it kills every process it has before exiting."""
        self._lost("closed")
        if self._ctl is not None:
            self._ctl.close()
            self._ctl = None
        process = self.process
        if process is not None:
            deadline = time.monotonic() + 5
            while process.poll() is None and time.monotonic() < deadline:
                await asyncio.sleep(0.005)
            if process.poll() is None:
                process.kill()
                process.wait()
        if self._output is not None:
            self._output.close()


InstanceState = Literal["starting", "idle", "busy", "dead"]


class Instance:
    """One running instance: its process group, Runtime API, output capture and temp dir.

    ``channel`` carries its invocations: the Runtime API's for runtime "provided", the invocation
    socket's for runtime "python" (whose ``api_channel`` then only serves extension stubs).
    """

    def __init__(
        self,
        number: int,
        spec: FunctionSpec,
        channel: RuntimeChannel | InvocationChannel,
        api_channel: RuntimeChannel,
        capture: LogCapture,
        tmp: str,
    ) -> None:
        self.number = number
        self.name = f"{spec.name}-{number}"
        self.spec = spec
        self.channel = channel
        self.api_channel = api_channel
        self.capture = capture
        self.tmp = tmp
        self.pid = 0
        self.state: InstanceState = "starting"
        self.created = time.perf_counter()
        self.ready_at: float | None = None  # perf_counter() of the runtime's first poll
        self.idle_since = time.monotonic()
        self.invocations = 0
        self.max_memory = 0  # bytes, highest resident size seen
        self.exited: asyncio.Future[int] = asyncio.get_running_loop().create_future()  # replaced at spawn
        self.ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.server: asyncio.Server | None = None
        self.run: object | None = None  # the pool's record of the invocation it runs, if any

    @property
    def init_duration_ms(self) -> float | None:
        return None if self.ready_at is None else (self.ready_at - self.created) * 1000

    def kill(self) -> None:
        """SIGKILL the instance's process group (it and everything it forked)."""
        if self.pid and not self.exited.done():
            with contextlib.suppress(OSError):
                os.killpg(self.pid, signal.SIGKILL)

    def sample_memory(self) -> int:
        """Highest resident set size so far (VmHWM), in bytes; remembered past the process's end."""
        try:
            with open(f"/proc/{self.pid}/status", "rb") as f:
                for line in f:
                    if line.startswith(b"VmHWM:"):
                        self.max_memory = max(self.max_memory, int(line.split()[1]) * 1024)
                        break
        except (OSError, ValueError):
            pass
        return self.max_memory

    def cpu_seconds(self) -> float:
        try:
            with open(f"/proc/{self.pid}/stat", "rb") as f:
                fields = f.read().rpartition(b")")[2].split()
        except OSError:
            return 0.0
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    async def close(self) -> None:
        self.state = "dead"
        self.kill()
        self.channel.close()
        if self.api_channel is not self.channel:
            self.api_channel.close()
        if self.server is not None:
            self.server.close()
        if self.pid and not self.exited.done():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(self.exited), 5)
        self.capture.close()
        shutil.rmtree(self.tmp, ignore_errors=True)


async def start_instance(
    parent: SandboxParent,
    number: int,
    *,
    sink: LogSink,
    on_delivered: Callable[[Instance, Any], None],
    max_log_bytes: int = 262144,
) -> Instance:
    """Fork a new instance from the parent and serve its Runtime API; returns once forked
    (``instance.ready`` resolves at the runtime's first poll)."""
    spec = parent.spec
    loop = asyncio.get_running_loop()
    tmp = tempfile.mkdtemp(prefix=f"lambdagate-{spec.name}-")
    if parent.user is not None:
        os.chown(tmp, parent.user[0], parent.user[1])
    log_read, log_write = os.pipe2(os.O_CLOEXEC)
    capture = LogCapture(
        log_read,
        function=spec.name,
        instance=f"{spec.name}-{number}",
        sink=sink,
        max_bytes=max_log_bytes,
        platform_logs=spec.platform_logs,
    )
    instance: Instance | None = None

    def first_poll() -> None:
        assert instance is not None
        instance.ready_at = time.perf_counter()
        if not instance.ready.done():
            instance.ready.set_result(None)

    def delivered(invocation: Invocation) -> None:
        assert instance is not None
        on_delivered(instance, invocation)

    api_channel = RuntimeChannel(function_name=spec.name, handler=spec.handler)
    channel: RuntimeChannel | InvocationChannel
    ours: socket.socket | None = None
    theirs: socket.socket | None = None
    if spec.runtime == "python":
        channel = InvocationChannel(on_first_poll=first_poll, on_delivered=delivered)
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    else:
        api_channel.on_first_poll = first_poll
        api_channel.on_delivered = delivered
        channel = api_channel
    instance = Instance(number, spec, channel, api_channel, capture, tmp)
    listener: socket.socket | None = None
    try:
        api: str | None = None
        if spec.network:
            listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            listener.bind(("127.0.0.1", 0))
            listener.listen(16)
            api = f"127.0.0.1:{listener.getsockname()[1]}"
        try:
            spawned = await parent.spawn(
                api=api,
                tmp=tmp,
                stream=log_stream_name(),
                log_fd=log_write,
                invocation_fd=theirs.fileno() if theirs is not None else None,
            )
        finally:
            os.close(log_write)
            if theirs is not None:
                theirs.close()
        instance.pid = spawned.pid
        instance.exited = spawned.exited
        if spawned.listener is not None:
            listener = spawned.listener
        assert listener is not None
        listener.setblocking(False)
        instance.server = await loop.create_server(lambda: RuntimeApiProtocol(api_channel), sock=listener)
        if isinstance(channel, InvocationChannel):
            assert ours is not None
            ours.setblocking(False)
            await loop.create_unix_connection(lambda: channel, sock=ours)
            ours = None  # the transport owns it now
        capture.start(loop)
    except BaseException:
        if listener is not None and instance.server is None:
            listener.close()
        if ours is not None:
            ours.close()
        await instance.close()
        raise
    return instance
