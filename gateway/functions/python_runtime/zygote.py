"""The sandbox parent of one function: confined once, then forks an instance per request.

Started by the gateway as ``python -m gateway.functions.python_runtime.zygote CONTROL_FD`` with the
function's scrubbed environment and cwd at the code folder. Over the control socket (AF_UNIX
SOCK_SEQPACKET, JSON messages, file descriptors passed with SCM_RIGHTS):

  gateway -> parent   {"op": "config", ...}                first message: how to confine, what to run
  parent -> gateway   {"op": "ready", ...}                 confined; the handler module is imported
  gateway -> parent   {"op": "spawn", "id", "api", "tmp", "stream"} + [log pipe write end,
                      and for runtime "python" the instance's end of its invocation socket]
  parent -> gateway   {"op": "spawned", "id", "pid", "api"} (+ [Runtime API listener] without network)
  parent -> gateway   {"op": "spawn_failed", "id", "error"}
  parent -> gateway   {"op": "exited", "pid", "status"}    an instance ended (os.waitpid status)

The parent applies what is safe before fork: its network namespace (function-wide), the
unprivileged user, no_new_privs, open-file, file-size and process limits, child-subreaper. Each
instance (a fork) then takes its own session and process group, its log pipe as stdout/stderr,
its temp dir, and its address-space and CPU limits, before any user code of the invocation runs.
When the control socket closes, the parent kills every process it has and exits.
"""

from __future__ import annotations

import array
import contextlib
import gc
import importlib
import json
import os
import resource
import select
import signal
import socket
import sys
import tempfile
import time
import traceback
from typing import Any

from gateway.functions.python_runtime import client, confine

MAX_MESSAGE = 1 << 20


def send(ctl: socket.socket, message: dict[str, Any], fds: list[int] | None = None) -> None:
    data = json.dumps(message).encode()
    if fds:
        ctl.sendmsg([data], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))])
    else:
        ctl.send(data)


def receive(ctl: socket.socket) -> tuple[dict[str, Any] | None, list[int]]:
    fds = array.array("i")
    data, ancillary, _flags, _addr = ctl.recvmsg(MAX_MESSAGE, socket.CMSG_SPACE(4 * fds.itemsize))
    for level, kind, payload in ancillary:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.frombytes(payload[: len(payload) - (len(payload) % fds.itemsize)])
    if not data:
        return None, list(fds)
    return json.loads(data), list(fds)


def import_handler(handler_name: str) -> tuple[client.Handler | None, dict[str, Any] | None]:
    """module.function -> the function, or the init error AWS's Python runtime would report."""
    module_name, _, function_name = handler_name.rpartition(".")
    if not module_name or not function_name:
        return None, _init_error(
            "Runtime.MalformedHandlerName",
            f"Bad handler '{handler_name}': not enough values to unpack (expected 2, got 1)",
        )
    try:
        module = importlib.import_module(module_name.replace("/", "."))
    except SyntaxError as exc:
        return None, _init_error(
            "Runtime.UserCodeSyntaxError", f"Syntax error in module '{module_name}': {exc}"
        )
    except ImportError as exc:
        return None, _init_error(
            "Runtime.ImportModuleError", f"Unable to import module '{module_name}': {exc}"
        )
    except Exception as exc:
        return None, client.error_payload(exc, None)
    function = getattr(module, function_name, None)
    if function is None:
        return None, _init_error(
            "Runtime.HandlerNotFound", f"Handler '{function_name}' missing on module '{module_name}'"
        )
    return function, None


def _init_error(error_type: str, message: str) -> dict[str, Any]:
    # AWS reports import-time errors without a request id and without the runtime's own frames.
    return {"errorMessage": message, "errorType": error_type, "stackTrace": []}


class Parent:
    def __init__(self, ctl: socket.socket, config: dict[str, Any]) -> None:
        self.ctl = ctl
        self.config = config
        self.instances: set[int] = set()
        self.handler: client.Handler | None = None
        self.init_error: dict[str, Any] | None = None
        self.wakeup_read, self.wakeup_write = os.pipe()

    def confine(self) -> dict[str, Any]:
        """Confinement that is safe before fork; returns facts for the "ready" message."""
        network_note = None
        if not self.config["network"]:
            network_note = confine.enter_private_network()
        confine.prctl(confine.PR_SET_CHILD_SUBREAPER, 1)  # orphans of instances come back here
        if self.config.get("cpus"):
            os.sched_setaffinity(0, self.config["cpus"])  # instances inherit it
        user = self.config.get("user")
        covered: list[str] = []
        if user is not None:
            covered = confine.expose_paths(self.config["expose"], user[0], user[1])
            confine.drop_privileges(user[0], user[1])
        confine.die_with_parent()
        confine.set_no_new_privs()
        # Another function's instances run as the same user: keep /proc/<pid>/environ and
        # ptrace out of their reach (an exec'd bootstrap becomes dumpable again).
        confine.prctl(confine.PR_SET_DUMPABLE, 0)
        limits = self.config["limits"]
        confine.set_limit(resource.RLIMIT_NOFILE, limits["open_files"])
        confine.set_limit(resource.RLIMIT_FSIZE, limits["file_size"])
        confine.set_limit(resource.RLIMIT_NPROC, limits["processes"])
        return {
            "network_isolated": not self.config["network"] and network_note is None,
            "network_note": network_note,
            "covered": covered,
        }

    def preload(self) -> float:
        # Exactly the environment the gateway gave: the interpreter's own additions go (Python
        # sets LC_CTYPE when it coerces a C locale, PEP 538).
        given = set(self.config["environment"])
        for name in [name for name in os.environ if name not in given]:
            del os.environ[name]
        started = time.perf_counter()
        if self.config["runtime"] == "python":
            sys.path.insert(0, os.getcwd())
            self.handler, self.init_error = import_handler(self.config["handler"])
            gc.collect()
            gc.freeze()  # keep the imported objects' pages shared with the forked instances
        return (time.perf_counter() - started) * 1000

    def run(self) -> None:
        os.set_blocking(self.wakeup_write, False)
        signal.set_wakeup_fd(self.wakeup_write)
        signal.signal(signal.SIGCHLD, lambda _signum, _frame: None)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        while True:
            readable, _, _ = select.select([self.ctl.fileno(), self.wakeup_read], [], [])
            if self.wakeup_read in readable:
                os.read(self.wakeup_read, 4096)
                self.reap()
            if self.ctl.fileno() in readable:
                message, fds = receive(self.ctl)
                if message is None:
                    self.shutdown()
                    return
                if message.get("op") == "spawn":
                    self.spawn(message, fds)
                else:
                    for fd in fds:
                        os.close(fd)

    def reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            if pid in self.instances:
                self.instances.discard(pid)
                send(self.ctl, {"op": "exited", "pid": pid, "status": status})

    def spawn(self, message: dict[str, Any], fds: list[int]) -> None:
        log_fd = fds[0]
        invocation_fd = fds[1] if len(fds) > 1 and self.config["runtime"] == "python" else None
        for extra in fds[1 if invocation_fd is None else 2 :]:
            os.close(extra)
        listener: socket.socket | None = None
        api = message.get("api")
        try:
            if api is None:
                # No network: the Runtime API listener must live in this namespace; the gateway
                # accepts on it through the descriptor passed back.
                listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                listener.bind(("127.0.0.1", 0))
                listener.listen(16)
                api = f"127.0.0.1:{listener.getsockname()[1]}"
            sys.stdout.flush()
            sys.stderr.flush()
            pid = os.fork()
        except OSError as exc:
            os.close(log_fd)
            if invocation_fd is not None:
                os.close(invocation_fd)
            if listener is not None:
                listener.close()
            send(self.ctl, {"op": "spawn_failed", "id": message["id"], "error": str(exc)})
            return
        if pid == 0:
            try:
                if listener is not None:
                    listener.close()
                self.become_instance(message, log_fd, invocation_fd, api)
            except BaseException:
                with contextlib.suppress(BaseException):
                    traceback.print_exc()
                    sys.stderr.flush()
            os._exit(127)
        os.close(log_fd)
        if invocation_fd is not None:
            os.close(invocation_fd)
        self.instances.add(pid)
        reply = {"op": "spawned", "id": message["id"], "pid": pid, "api": api}
        send(self.ctl, reply, [listener.fileno()] if listener is not None else None)
        if listener is not None:
            listener.close()

    def become_instance(
        self, message: dict[str, Any], log_fd: int, invocation_fd: int | None, api: str
    ) -> None:
        signal.set_wakeup_fd(-1)
        for signum in (signal.SIGCHLD, signal.SIGTERM, signal.SIGINT, signal.SIGPIPE):
            signal.signal(signum, signal.SIG_DFL)
        self.ctl.close()
        os.close(self.wakeup_read)
        os.close(self.wakeup_write)
        os.setsid()  # its own process group: the gateway kills exactly this group at the deadline
        confine.die_with_parent()
        os.dup2(log_fd, 1)
        os.dup2(log_fd, 2)
        os.close(log_fd)
        os.environ["AWS_LAMBDA_RUNTIME_API"] = api
        os.environ["TMPDIR"] = message["tmp"]
        os.environ["AWS_LAMBDA_LOG_STREAM_NAME"] = message["stream"]
        tempfile.tempdir = None
        limits = self.config["limits"]
        confine.set_limit(resource.RLIMIT_CPU, limits["cpu_seconds"])
        if self.config["runtime"] == "provided":
            confine.set_limit(resource.RLIMIT_AS, limits["memory"] + limits["address_space_allowance"])
            bootstrap = os.path.join(os.getcwd(), "bootstrap")
            os.execve(bootstrap, [bootstrap], dict(os.environ))
        # The runtime's own mappings are there already; the function's memory comes on top.
        confine.set_limit(resource.RLIMIT_AS, confine.address_space_in_use() + limits["memory"])
        sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]
        sys.stderr.reconfigure(line_buffering=True)  # type: ignore[union-attr]
        if invocation_fd is None:
            raise RuntimeError("no invocation socket was passed for this instance")
        invocations = socket.socket(fileno=invocation_fd)
        invocations.setblocking(True)
        client.serve(client.InvocationSocket(invocations), self.handler, self.init_error)

    def shutdown(self) -> None:
        """Kill every process this parent has (instances, and orphans it adopted as subreaper)."""
        for pid in list(self.instances):
            with contextlib.suppress(OSError):
                os.killpg(pid, signal.SIGKILL)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            children = _children_of(os.getpid())
            for pid in children:
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGKILL)
            try:
                while os.waitpid(-1, os.WNOHANG)[0] > 0:
                    pass
            except ChildProcessError:
                return
            time.sleep(0.01)


def _children_of(parent: int) -> list[int]:
    children = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        if int(stat.rpartition(")")[2].split()[1]) == parent:
            children.append(int(entry))
    return children


def main() -> None:
    ctl = socket.socket(fileno=int(sys.argv[1]))
    config, _fds = receive(ctl)
    if config is None:
        return
    parent = Parent(ctl, config)
    facts = parent.confine()
    init_ms = parent.preload()
    send(
        ctl,
        {
            "op": "ready",
            "pid": os.getpid(),
            "init_ms": init_ms,
            "init_error": parent.init_error is not None,
            **facts,
        },
    )
    parent.run()


if __name__ == "__main__":
    main()
