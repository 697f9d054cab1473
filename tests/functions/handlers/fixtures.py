"""Handlers the function tests run inside sandboxes (each test names one as "fixtures.NAME")."""

from __future__ import annotations

import hashlib
import os
import resource
import socket
import stat
import sys
import time
from typing import Any


def plain(event: Any, context: Any) -> Any:
    return {"echo": event, "greeting": os.environ.get("GREETING")}


def context_fields(event: Any, context: Any) -> dict[str, Any]:
    return {
        "aws_request_id": context.aws_request_id,
        "function_name": context.function_name,
        "function_version": context.function_version,
        "memory_limit_in_mb": context.memory_limit_in_mb,
        "invoked_function_arn": context.invoked_function_arn,
        "log_group_name": context.log_group_name,
        "log_stream_name": context.log_stream_name,
        "remaining_ms": context.get_remaining_time_in_millis(),
        "client_custom": context.client_context.custom if context.client_context else None,
        "cognito_identity_id": context.identity.cognito_identity_id,
        "trace_env": os.environ.get("_X_AMZN_TRACE_ID"),
    }


def environment(event: Any, context: Any) -> dict[str, Any]:
    with open("/proc/self/status") as f:
        status = dict(line.split(":", 1) for line in f.read().splitlines() if ":" in line)
    tmp = os.environ.get("TMPDIR", "")
    with open(os.path.join(tmp, "probe"), "w") as f:
        f.write("ok")
    return {
        "environ": dict(os.environ),
        "cwd": os.getcwd(),
        "uid": os.getuid(),
        "tmp_owner": os.stat(tmp).st_uid,
        "no_new_privs": status["NoNewPrivs"].strip(),
        "pgid_is_pid": os.getpgid(0) == os.getpid(),
        "sid_is_pid": os.getsid(0) == os.getpid(),
        "limits": {
            name: resource.getrlimit(getattr(resource, name))[0]
            for name in ("RLIMIT_AS", "RLIMIT_CPU", "RLIMIT_NOFILE", "RLIMIT_NPROC", "RLIMIT_FSIZE")
        },
    }


def read_path(event: Any, context: Any) -> dict[str, Any]:
    try:
        with open(event["path"]) as f:
            return {"read": f.read(100)}
    except OSError as exc:
        return {"error": type(exc).__name__}


def connect(event: Any, context: Any) -> dict[str, Any]:
    try:
        with socket.create_connection(("127.0.0.1", event["port"]), timeout=1):
            return {"connected": True}
    except OSError as exc:
        return {"connected": False, "error": type(exc).__name__}


def fail(event: Any, context: Any) -> Any:
    print("about to fail")
    raise ValueError("something broke")


def chatty(event: Any, context: Any) -> str:
    print("line one")
    print("line two", file=sys.stderr)
    return "done"


def sleep(event: Any, context: Any) -> str:
    print(f"sleeping in pid {os.getpid()}")
    time.sleep(event.get("seconds", 30))
    return "woke"


def hog_memory(event: Any, context: Any) -> int:
    blocks = []
    for _ in range(64):
        blocks.append(bytearray(64 * 1024 * 1024))  # 4 GiB in all: far beyond any test's memory
    return len(blocks)


def crash(event: Any, context: Any) -> None:
    sys.stdout.flush()
    os._exit(event.get("status", 3))


def fork_bomb(event: Any, context: Any) -> None:
    print(f"bomb group {os.getpgid(0)}", flush=True)
    forked = 0
    while True:
        try:
            pid = os.fork()
        except OSError:
            break
        if pid == 0:
            time.sleep(60)  # every child holds a process slot
            os._exit(0)
        forked += 1
    print(f"forked {forked}", flush=True)
    time.sleep(60)


def endless_output(event: Any, context: Any) -> None:
    line = "x" * 99
    while True:
        print(line)


def affinity(event: Any, context: Any) -> list[int]:
    """The CPUs this instance may run on."""
    return sorted(os.sched_getaffinity(0))


def measure(event: Any, context: Any) -> dict[str, Any]:
    """How much of a large event arrived, and a digest of it."""
    data = event["data"]
    return {"length": len(data), "sha256": hashlib.sha256(data.encode()).hexdigest()}


def big_response(event: Any, context: Any) -> str:
    size: int = event["size"]
    return "x" * size


def scribble_on_invocation_socket(event: Any, context: Any) -> str:
    """Write garbage to every socket the instance holds (the invocation socket among them)."""
    for fd in range(3, 64):
        try:
            if stat.S_ISSOCK(os.fstat(fd).st_mode):
                os.write(fd, b"\x01\x00\x00\x00junk")
        except OSError:
            pass
    return "scribbled"
