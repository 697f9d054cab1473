"""The instances of one function: scale from zero to ``concurrency`` on demand, keep
``provisioned`` warm, reap idle ones, queue and throttle beyond concurrency, and turn what
happened to an invocation into AWS's result (response, function error, timeout, crash, OOM).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import math
import os
import signal
import time
from collections import deque
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

import msgspec

from gateway.functions import ids
from gateway.functions.logcapture import (
    LogLine,
    LogSink,
    billed_duration_ms,
    end_line,
    report_line,
    start_line,
    timestamp,
)
from gateway.functions.runtime_api import Invocation, RuntimeReply
from gateway.functions.sandbox import Instance, SandboxError, SandboxLimits, SandboxParent, start_instance
from gateway.functions.spec import FunctionSpec, MiB
from gateway.logs import format_utc, log, write_batched
from gateway.tasks import cancel_and_wait

# Error types a runtime reports when the sandbox ran out of memory (ours, and a Python
# MemoryError from AWS's client): the instance is replaced, as Lambda replaces an OOM-killed one.
OUT_OF_MEMORY_TYPES = frozenset({"Runtime.OutOfMemory", "MemoryError"})
UNHANDLED = "Unhandled"

ResultStatus = Literal["success", "error", "timeout"]
T = TypeVar("T")
# How late past its deadline an invocation may be stopped (the deadline sweep's period).
DEADLINE_RESOLUTION = 0.01


class TooManyRequests(Exception):
    """Every instance is busy and the wait for one ran out (or the queue is full)."""

    def __init__(
        self, function: str, reason: str = "ReservedFunctionConcurrentInvocationLimitExceeded"
    ) -> None:
        super().__init__("Rate Exceeded.")
        self.function = function
        self.reason = reason


class FunctionUnavailable(Exception):
    """The function's sandbox cannot run (it cannot start, or the pool is closed)."""


@dataclass(slots=True)
class InvocationResult:
    """What an invocation produced, with everything the Invoke API and HTTP routes report."""

    request_id: str
    payload: bytes  # the response, or the error document when function_error is set
    function_error: str | None  # "Unhandled" on failure: the X-Amz-Function-Error value
    error_type: str | None
    status: ResultStatus
    log_tail: bytes  # the end (4 KB) of START ... END, REPORT, for X-Amz-Log-Type: Tail
    duration_ms: float
    billed_duration_ms: int
    init_duration_ms: float | None  # set on a cold start
    max_memory_mb: int
    content_type: str = "application/json"
    # The HTTP response a shaped invocation was answered with (then payload is empty).
    http: tuple[int, list[tuple[str, str]], bytes] | None = None

    def error(self) -> dict[str, object] | None:
        """The decoded error document ({errorType, errorMessage, stackTrace, ...}), if failed."""
        if self.function_error is None:
            return None
        try:
            decoded = msgspec.json.decode(self.payload)
        except msgspec.DecodeError:
            return {"errorType": self.error_type, "errorMessage": self.payload.decode("utf-8", "replace")}
        return decoded if isinstance(decoded, dict) else {"errorType": self.error_type}


@dataclass(frozen=True)
class PoolMetrics:
    function: str
    invocations: int
    errors: int
    throttles: int
    timeouts: int
    cold_starts: int
    duration_ms_total: float
    duration_ms_max: float
    init_duration_ms_total: float
    max_memory_mb: int
    instances: int  # concurrent instances, starting or running
    busy: int
    idle: int
    waiting: int  # invocations queued for an instance
    last_error: str | None


class _FunctionLogRecord(msgspec.Struct):
    """A function's log line as the gateway's own log has it (same keys as gateway.logs.log)."""

    time: str
    level: str
    msg: str
    function: str
    instance: str
    request_id: str | None


_encode_record = msgspec.json.Encoder().encode


def default_sink(line: LogLine) -> None:
    """Function output and START/END/REPORT go to the gateway's log, a few lines per write."""
    record = _FunctionLogRecord(
        format_utc(line.time, 3), "info", line.message, line.function, line.instance, line.request_id
    )
    write_batched(_encode_record(record) + b"\n")


def describe_exit(status: int) -> str:
    """os.waitpid status as Lambda words it ("exit status 3", "signal: killed")."""
    if os.WIFSIGNALED(status):
        signum = os.WTERMSIG(status)
        name = signal.strsignal(signum) or f"signal {signum}"
        return f"signal: {name.lower()}"
    return f"exit status {os.WEXITSTATUS(status)}"


def _error_document(error_type: str, message: str) -> bytes:
    return msgspec.json.encode({"errorType": error_type, "errorMessage": message})


class FunctionPool:
    """Instances of one function in this worker.

    ``invoke`` takes an idle instance (the most recently used, so that others go idle and are
    reaped), or starts one while fewer than ``concurrency`` exist, or waits at most
    ``queue_timeout`` in a queue of at most ``max_queue`` invocations, else raises
    TooManyRequests.
    """

    def __init__(
        self,
        spec: FunctionSpec,
        *,
        region: str = "us-east-1",
        account_id: str = "000000000000",
        limits: SandboxLimits | None = None,
        max_queue: int = 100,
        queue_timeout: float = 5.0,
        init_timeout: float = 10.0,
        sink: LogSink = default_sink,
        max_log_bytes: int = 262144,
    ) -> None:
        self.spec = spec
        self.region = region
        self.arn = spec.arn(region, account_id)
        self.limits = limits or SandboxLimits()
        self.max_queue = max_queue
        self.queue_timeout = queue_timeout
        self.init_timeout = init_timeout
        self.sink = sink
        self.max_log_bytes = max_log_bytes
        self.parent: SandboxParent | None = None
        self.instances: set[Instance] = set()
        self.idle: list[Instance] = []
        self.starting = 0
        self.closed = False
        self._waiters: deque[_Queued] = deque()  # invocations waiting for an instance, oldest first
        self._launching = 0  # tasks about to start an instance (see _launch)
        self._parent_lock = asyncio.Lock()
        self._numbers = 0
        self._reaper: asyncio.Task[None] | None = None
        # Invocations in flight, by id(invocation): request ids need not be unique (a redelivered
        # async event may run again while its first attempt still does).
        self._runs: dict[int, _Run] = {}
        self._sweeper: asyncio.TimerHandle | None = None  # the next deadline sweep, while any run
        self._background: set[asyncio.Task[None]] = set()
        self._loop: asyncio.AbstractEventLoop | None = None  # see event_loop
        # metrics
        self.invocations = self.errors = self.throttles = self.timeouts = self.cold_starts = 0
        self.duration_total = self.duration_max = self.init_total = 0.0
        self.max_memory_mb = 0
        self.last_error: str | None = None

    def event_loop(self) -> asyncio.AbstractEventLoop:
        """The worker's running loop, looked up once. Python 3.11's asyncio.get_running_loop()
        makes a getpid() system call every time (to notice a fork): the pool asked three times
        per invocation, the HTTP route once more. The pool is used from one loop for its life."""
        loop = self._loop
        if loop is None:
            loop = self._loop = asyncio.get_running_loop()
        return loop

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        """Start the sandbox parent and the provisioned instances; reap idle ones from now on."""
        await self._ensure_parent()
        await self._top_up()
        interval = max(0.05, min(1.0, self.spec.idle_timeout / 4))
        self._reaper = asyncio.get_running_loop().create_task(self._reap_forever(interval))

    async def close(self) -> None:
        self.closed = True
        if self._reaper is not None:
            await cancel_and_wait(self._reaper)
        while self._waiters:
            queued = self._waiters.popleft()
            if not queued.result.done():
                queued.result.set_exception(
                    FunctionUnavailable(f"function {self.spec.name} is shutting down")
                )
        for instance in list(self.instances):
            instance.kill()
        # Killed instances settle their invocations (exit) as their exit statuses come in.
        in_flight = [run.result for run in self._runs.values()]
        if in_flight:
            await asyncio.wait(in_flight, timeout=5.0)
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        await asyncio.gather(*(instance.close() for instance in list(self.instances)))
        self.instances.clear()
        self.idle.clear()
        if self._background:
            await asyncio.gather(*self._background, return_exceptions=True)
        if self.parent is not None:
            await self.parent.close()

    async def _ensure_parent(self) -> SandboxParent:
        async with self._parent_lock:
            if self.parent is not None and self.parent.alive:
                return self.parent
            if self.closed:
                raise FunctionUnavailable(f"function {self.spec.name} is shut down")
            if self.parent is not None:
                await self.parent.close()
            parent = SandboxParent(
                self.spec,
                region=self.region,
                limits=self.limits,
                sink=self.sink,
                provisioned=self.spec.provisioned > 0,
            )
            try:
                await parent.start()
            except (SandboxError, TimeoutError) as exc:
                raise FunctionUnavailable(str(exc)) from exc
            self.parent = parent
            return parent

    async def _new_instance(self) -> Instance:
        """Start an instance (counted in `starting` until it exists)."""
        self.starting += 1
        try:
            parent = await self._ensure_parent()
            self._numbers += 1
            try:
                instance = await start_instance(
                    parent,
                    self._numbers,
                    sink=self.sink,
                    on_delivered=self._delivered,
                    max_log_bytes=self.max_log_bytes,
                )
            except (SandboxError, TimeoutError, OSError) as exc:
                raise FunctionUnavailable(f"cannot start an instance of {self.spec.name}: {exc}") from exc
        finally:
            self.starting -= 1
        self.instances.add(instance)
        instance.exited.add_done_callback(lambda _f: self._exited(instance))
        return instance

    def _exited(self, instance: Instance) -> None:
        """The instance's process ended: settle what it was running, or drop it if idle."""
        run = instance.run
        if isinstance(run, _Run):
            self._settle(run, "exit")
        if instance.state == "idle" and instance in self.instances:
            self.idle.remove(instance)
            self._discard(instance)

    def _discard(self, instance: Instance) -> None:
        """The instance is gone or must go: close it in the background, free its slot."""
        self.instances.discard(instance)
        if instance in self.idle:
            self.idle.remove(instance)
        instance.state = "dead"
        instance.kill()
        task = asyncio.get_running_loop().create_task(instance.close())
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        self._hand_over(None)  # a waiter may start an instance in the freed slot

    async def _top_up(self) -> None:
        """Keep `provisioned` instances (idle and ready)."""
        missing = self.spec.provisioned - len(self.instances) - self.starting
        if missing <= 0 or self.closed:
            return
        results = await asyncio.gather(
            *(self._new_instance() for _ in range(missing)), return_exceptions=True
        )
        for result in results:
            if isinstance(result, Instance):
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(asyncio.shield(result.ready), self.init_timeout)
                self._release(result)
            elif isinstance(result, BaseException):
                log(
                    "warning",
                    "provisioned instance failed to start",
                    function=self.spec.name,
                    error=str(result),
                )

    async def _reap_forever(self, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            now = time.monotonic()
            surplus = len(self.instances) - self.spec.provisioned
            # Oldest idle first: the idle list is in release order.
            for instance in list(self.idle):
                if surplus <= 0:
                    break
                if now - instance.idle_since >= self.spec.idle_timeout:
                    self._discard(instance)
                    surplus -= 1
            try:
                await self._top_up()
            except FunctionUnavailable as exc:
                log("warning", "cannot keep provisioned instances", function=self.spec.name, error=str(exc))

    # -- acquiring instances -----------------------------------------------------------------

    def _hand_over(self, instance: Instance | None) -> bool:
        """Give a released instance (or, with None, a freed slot) to the oldest waiting
        invocation; False when none waits."""
        while self._waiters:
            queued = self._waiters.popleft()
            if queued.result.done():
                continue  # withdrawn by its caller, or it waited too long
            if instance is not None:
                self._begin(instance, queued.invocation, queued.platform_lines, queued.result)
            else:
                task = self._launch(functools.partial(self._start_for, queued))
                self._background.add(task)  # a reference while it runs; close() waits for it
                task.add_done_callback(self._background.discard)
            return True
        return False

    def _release(self, instance: Instance) -> None:
        if instance.state == "dead" or instance.exited.done() or self.closed:
            self._discard(instance)
            return
        if self._hand_over(instance):
            return
        instance.state = "idle"
        instance.idle_since = time.monotonic()
        self.idle.append(instance)

    def _launch(self, start: Callable[[_Launch], Coroutine[Any, Any, T]]) -> asyncio.Task[T]:
        """Run `start(launch)` (which begins by starting an instance) as a task, holding its slot
        from now on: the room check in submit must see it before the task has run a single step."""
        launch = _Launch(self)
        task = asyncio.get_running_loop().create_task(start(launch))
        # A task cancelled before its first step never runs its body: give the slot back then.
        task.add_done_callback(launch.over)
        return task

    async def _start_for(self, queued: _Queued, launch: _Launch) -> None:
        """Start an instance in a freed slot for a waiting invocation."""
        launch.begun()
        try:
            instance = await self._new_instance()
        except FunctionUnavailable as exc:
            if not queued.result.done():
                queued.result.set_exception(exc)
            return
        if queued.result.done():
            self._release(instance)  # its caller went away meanwhile: the next one gets it
        else:
            self._begin(instance, queued.invocation, queued.platform_lines, queued.result)

    # -- invoking ----------------------------------------------------------------------------

    async def invoke(
        self,
        payload: bytes,
        *,
        request_id: str | None = None,
        client_context: str | None = None,
        cognito_identity: str | None = None,
        trace_id: str | None = None,
        timeout: float | None = None,
        queue_timeout: float | None = None,
    ) -> InvocationResult:
        """Run the function on payload (a JSON document). ``timeout`` shortens the function's
        own run time limit; ``queue_timeout`` overrides how long to wait for a free instance."""
        return await self.submit(
            payload,
            request_id=request_id,
            client_context=client_context,
            cognito_identity=cognito_identity,
            trace_id=trace_id,
            timeout=timeout,
            queue_timeout=queue_timeout,
        )

    def submit(
        self,
        payload: bytes,
        *,
        request_id: str | None = None,
        client_context: str | None = None,
        cognito_identity: str | None = None,
        trace_id: str | None = None,
        timeout: float | None = None,
        queue_timeout: float | None = None,
        log_tail: bool = True,
        shape: str = "",
    ) -> asyncio.Future[InvocationResult]:
        """Start an invocation; the future resolves with its result (or TooManyRequests,
        FunctionUnavailable). With an idle instance at hand this starts it at once, with no task.

        ``shape``: what the payload is, for the built-in python runtime (Invocation.shape).

        ``log_tail=False``: the caller will not read the result's log_tail (an HTTP route), so
        with platform logs off (system_log_level WARN) START/END/REPORT are not even made.

        The invocation runs to its end even if the caller stops waiting (as on Lambda): the
        instance is handed back only once its runtime is free again. Cancelling the future
        while it waits for an instance withdraws the request.
        """
        invocation = Invocation(
            request_id or ids.request_id(),
            payload,
            self.arn,
            self.spec.timeout if timeout is None else min(timeout, self.spec.timeout),
            trace_id,
            client_context,
            cognito_identity,
            shape=shape,
        )
        platform_lines = log_tail or self.spec.platform_logs
        loop = self.event_loop()
        while self.idle and not self.closed:
            instance = self.idle.pop()
            if not instance.exited.done():
                return self._begin(instance, invocation, platform_lines)
            self._discard(instance)
        refused: asyncio.Future[InvocationResult] = loop.create_future()
        if self.closed:
            refused.set_exception(FunctionUnavailable(f"function {self.spec.name} is shut down"))
            return refused
        if len(self.instances) + self.starting + self._launching < self.spec.concurrency:
            return self._launch(functools.partial(self._start_and_run, invocation, platform_lines))
        if len(self._waiters) >= self.max_queue:
            # Withdrawn entries stay until someone passes them; drop them before judging.
            self._waiters = deque(queued for queued in self._waiters if not queued.result.done())
        if len(self._waiters) >= self.max_queue:
            self.throttles += 1
            refused.set_exception(TooManyRequests(self.spec.name))
            return refused
        # Every instance is busy: wait in line (no task; _hand_over starts it, the deadline
        # sweep refuses it once it has waited queue_timeout).
        wait = self.queue_timeout if queue_timeout is None else queue_timeout
        queued = _Queued(invocation, platform_lines, loop.time() + wait, loop.create_future())
        self._waiters.append(queued)
        self._arm_sweeper()
        return queued.result

    async def _start_and_run(
        self, invocation: Invocation, platform_lines: bool, launch: _Launch
    ) -> InvocationResult:
        launch.begun()
        instance = await self._new_instance()
        return await self._begin(instance, invocation, platform_lines)

    def _begin(
        self,
        instance: Instance,
        invocation: Invocation,
        platform_lines: bool = True,
        result: asyncio.Future[InvocationResult] | None = None,
    ) -> asyncio.Future[InvocationResult]:
        """Hand the invocation to the instance; whichever comes first of its answer, its exit
        and its deadline settles it (_settle), which resolves `result` (a new future if None)."""
        loop = self.event_loop()
        if result is None:
            result = loop.create_future()
        run = _Run(instance, invocation, cold=instance.invocations == 0, result=result)
        run.platform_lines = platform_lines
        instance.state = "busy"
        instance.invocations += 1
        invocation.on_reply = run.on_reply
        self._runs[id(invocation)] = run
        capture = instance.capture
        capture.begin(invocation.request_id)
        if platform_lines:
            capture.note(start_line(invocation.request_id), platform=True)
        if instance.ready_at is None:
            self._set_deadline(run, self.init_timeout, "init")
        # One exit callback per instance (_exited) settles whatever it runs, not one per run.
        instance.run = run
        run.pool = self
        if instance.exited.done():  # it ended before this run began: _exited has been and gone
            loop.call_soon(self._settle, run, "exit")
        try:
            instance.channel.assign(invocation)
        except BaseException:
            self._settle(run, "exit")
            raise
        return run.result

    def _delivered(self, instance: Instance, invocation: Invocation) -> None:
        """The runtime has the event: the run-time clock starts (Lambda-Runtime-Deadline-Ms)."""
        run = self._runs.get(id(invocation))
        if run is None or run.settled:
            return
        self._set_deadline(run, invocation.timeout, "timeout")

    def _set_deadline(self, run: _Run, seconds: float, why: str) -> None:
        """Settle `run` as `why` ("timeout", "init") if it is still running `seconds` from now.

        One sweep of the invocations in flight every DEADLINE_RESOLUTION rather than a timer per
        invocation: a timer armed and cancelled per request costs more than the sweeps.
        """
        run.deadline = self.event_loop().time() + seconds
        run.expiry = why
        self._arm_sweeper()

    def _arm_sweeper(self) -> None:
        if self._sweeper is None:
            self._sweeper = self.event_loop().call_later(DEADLINE_RESOLUTION, self._sweep_deadlines)

    def _sweep_deadlines(self) -> None:
        """Settle invocations past their deadline; refuse waiting ones past their queue timeout."""
        loop = self.event_loop()
        now = loop.time()
        for run in [run for run in self._runs.values() if run.deadline <= now]:
            self._settle(run, run.expiry)
        if self._waiters:
            for queued in self._waiters:
                if not queued.result.done() and queued.deadline <= now:
                    self.throttles += 1
                    queued.result.set_exception(TooManyRequests(self.spec.name))
            self._waiters = deque(queued for queued in self._waiters if not queued.result.done())
        busy = self._runs or self._waiters
        self._sweeper = loop.call_later(DEADLINE_RESOLUTION, self._sweep_deadlines) if busy else None

    def _settle(self, run: _Run, why: str) -> None:
        """The invocation is over (why: "reply", "exit", "timeout" or "init"): make its result,
        write its log lines, hand the instance back."""
        if run.settled:
            return
        run.settled = True
        instance, invocation = run.instance, run.invocation
        # invocation -> on_reply (a bound method of run) -> run -> invocation is a cycle only the
        # cyclic collector would free, with the result and its future hanging from it.
        invocation.on_reply = None
        if instance.run is run:
            instance.run = None
        self._runs.pop(id(invocation), None)
        try:
            result = self._result(run, why)
        except BaseException as exc:
            instance.state = "dead"
            self._release(instance)
            if not run.result.done():
                run.result.set_exception(exc)
            raise
        self._release(instance)
        self._count(result)
        if not run.result.done():
            run.result.set_result(result)

    def _result(self, run: _Run, why: str) -> InvocationResult:
        instance, invocation, cold = run.instance, run.invocation, run.cold
        now = time.perf_counter()
        duration_ms = 0.0 if invocation.delivered_at is None else (now - invocation.delivered_at) * 1000
        reply = run.reply
        if reply is not None and reply.max_rss_kib is not None:
            # The built-in runtime reports its own peak size and CPU time: no /proc reads.
            memory = instance.max_memory = max(instance.max_memory, reply.max_rss_kib * 1024)
            cpu_seconds = (reply.cpu_ms or 0) / 1000
        else:
            memory = instance.sample_memory()
            cpu_seconds = -1.0  # read below, only if the instance is to be reused
        request_id = invocation.request_id
        status: ResultStatus = "success"
        error_type: str | None = None
        payload = b""
        content_type = "application/json"
        http = None
        notes: list[str] = []  # what the gateway writes into the invocation's log
        if reply is not None and reply.kind == "response":
            payload, content_type, http = reply.body, reply.content_type, reply.http
            if reply.retire:
                instance.state = "dead"
        elif reply is not None and reply.error_type in OUT_OF_MEMORY_TYPES:
            status, error_type = "error", "Runtime.OutOfMemory"
            payload = _error_document(
                error_type, f"RequestId: {request_id} Error: Runtime exited with error: signal: killed"
            )
            instance.state = "dead"
            instance.kill()
            notes.append(
                f"RequestId: {request_id} Error: Runtime exited with error: signal: killed\n{error_type}"
            )
        elif reply is not None:
            status, error_type, payload = "error", reply.error_type or "Runtime.Unknown", reply.body
            if reply.kind == "init_error" or reply.retire:
                instance.state = "dead"
                instance.kill()
        elif why in ("timeout", "init"):
            # Deadline: kill exactly the instance holding this invocation.
            instance.state = "dead"
            instance.kill()
            limit = invocation.timeout if why == "timeout" else self.init_timeout
            duration_ms = limit * 1000
            status, error_type = "timeout", "Sandbox.Timedout"
            payload = _error_document(
                error_type, f"RequestId: {request_id} Error: Task timed out after {limit:.2f} seconds"
            )
            notes.append(f"{timestamp()} {request_id} Task timed out after {limit:.2f} seconds")
        else:
            instance.state = "dead"
            exit_status = instance.exited.result() if instance.exited.done() else 0
            reason = (
                "Runtime exited without providing a reason"
                if exit_status == 0
                else f"Runtime exited with error: {describe_exit(exit_status)}"
            )
            status, error_type = "error", "Runtime.ExitError"
            payload = _error_document(error_type, f"RequestId: {request_id} Error: {reason}")
            notes.append(f"RequestId: {request_id} Error: {reason}\n{error_type}")
        if instance.state != "dead":
            if cpu_seconds < 0:
                cpu_seconds = instance.cpu_seconds()
            if cpu_seconds > 0.8 * self.limits.cpu_seconds or memory > self.spec.memory:
                instance.state = "dead"  # retire it before a limit kills it in an invocation
        init_ms = instance.init_duration_ms if cold else None
        max_memory_mb = max(1, -(-memory // MiB))
        # What the instance wrote before it answered (or was killed) is in the pipe by now.
        capture = instance.capture
        capture.drain()
        for note in notes:
            capture.note(note)
        if run.platform_lines:
            capture.note(end_line(request_id), platform=True)
            capture.note(
                report_line(
                    request_id,
                    duration_ms=duration_ms,
                    memory_mb=self.spec.memory_mb,
                    max_memory_mb=max_memory_mb,
                    init_duration_ms=init_ms,
                    status=None if status == "success" else status,
                    error_type=error_type if status == "error" else None,
                ),
                platform=True,
            )
        tail = capture.finish()
        capture.begin(None)
        return InvocationResult(
            request_id=request_id,
            payload=payload,
            function_error=None if status == "success" else UNHANDLED,
            error_type=error_type,
            status=status,
            log_tail=tail,
            duration_ms=duration_ms,
            billed_duration_ms=billed_duration_ms(duration_ms),
            init_duration_ms=init_ms,
            max_memory_mb=max_memory_mb,
            content_type=content_type,
            http=http,
        )

    def _count(self, result: InvocationResult) -> None:
        self.invocations += 1
        self.duration_total += result.duration_ms
        self.duration_max = max(self.duration_max, result.duration_ms)
        self.max_memory_mb = max(self.max_memory_mb, result.max_memory_mb)
        if result.init_duration_ms is not None:
            self.cold_starts += 1
            self.init_total += result.init_duration_ms
        if result.status != "success":
            self.errors += 1
            self.last_error = result.error_type
        if result.status == "timeout":
            self.timeouts += 1

    def snapshot(self) -> PoolMetrics:
        busy = sum(1 for instance in self.instances if instance.state == "busy")
        return PoolMetrics(
            function=self.spec.name,
            invocations=self.invocations,
            errors=self.errors,
            throttles=self.throttles,
            timeouts=self.timeouts,
            cold_starts=self.cold_starts,
            duration_ms_total=self.duration_total,
            duration_ms_max=self.duration_max,
            init_duration_ms_total=self.init_total,
            max_memory_mb=self.max_memory_mb,
            instances=len(self.instances) + self.starting,
            busy=busy,
            idle=len(self.idle),
            waiting=sum(1 for queued in self._waiters if not queued.result.done()),
            last_error=self.last_error,
        )


class _Launch:
    """A slot held for an instance a task is about to start (FunctionPool._launch)."""

    __slots__ = ("pending", "pool")

    def __init__(self, pool: FunctionPool) -> None:
        self.pool = pool
        self.pending = True
        pool._launching += 1

    def begun(self) -> None:
        """The task is starting its instance: `starting` counts it from here."""
        if self.pending:
            self.pending = False
            self.pool._launching -= 1

    def over(self, _task: asyncio.Task[Any]) -> None:
        """The task is done; if it never began, its slot goes to whoever waits."""
        if self.pending:
            self.begun()
            self.pool._hand_over(None)


@dataclass(slots=True)
class _Queued:
    """An invocation waiting for a free instance."""

    invocation: Invocation
    platform_lines: bool
    deadline: float  # loop.time() after which it is refused (TooManyRequests)
    result: asyncio.Future[InvocationResult]


class _Run:
    """One invocation in flight on one instance, until _settle."""

    __slots__ = (
        "cold", "deadline", "expiry", "instance", "invocation", "platform_lines", "pool", "reply", "result",
        "settled",
    )  # fmt: skip

    def __init__(
        self,
        instance: Instance,
        invocation: Invocation,
        *,
        cold: bool,
        result: asyncio.Future[InvocationResult],
    ) -> None:
        self.instance = instance
        self.invocation = invocation
        self.cold = cold
        self.result = result
        self.settled = False
        self.deadline = math.inf  # loop.time() at which it is stopped (_set_deadline)
        self.expiry = "timeout"  # how: "timeout" (the function's) or "init" (the instance's)
        self.pool: FunctionPool | None = None
        self.reply: RuntimeReply | None = None
        self.platform_lines = True  # START/END/REPORT are made (for the log or the tail)

    def on_reply(self, reply: RuntimeReply) -> None:
        self.reply = reply
        if self.pool is not None:
            self.pool._settle(self, "reply")
