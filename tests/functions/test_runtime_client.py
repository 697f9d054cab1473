"""The python runtime's invocation loop, in-process: trace ids without a leak, frames both ways,
context fields read anew after a fork."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import threading
import time

from gateway.functions.python_runtime import client, context, frames
from gateway.functions.python_runtime.context import LambdaContext


def resident_kib() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") // 1024


def test_setting_the_trace_id_per_invocation_does_not_leak() -> None:
    # setenv() would keep every value forever (~140 bytes each, 7 MB for these).
    before = resident_kib()
    for n in range(50_000):
        client.set_trace_id(f"Root=1-6748f6b3-{n:024x};Parent={n:016x};Sampled=0")
    assert resident_kib() - before < 2048
    assert os.environ["_X_AMZN_TRACE_ID"] == f"Root=1-6748f6b3-{49_999:024x};Parent={49_999:016x};Sampled=0"
    assert os.getenv("_X_AMZN_TRACE_ID") == os.environ["_X_AMZN_TRACE_ID"]


def read_reply(sock: socket.socket) -> tuple[int, bytes]:
    data = b""
    while (
        len(data) < frames.LENGTH.size or len(data) < frames.LENGTH.unpack_from(data)[0] + frames.LENGTH.size
    ):
        chunk = sock.recv(65536)
        assert chunk, "the runtime closed the socket"
        data += chunk
    _length, kind, _rss, _cpu = frames.REPLY_HEAD.unpack_from(data)
    return kind, data[frames.REPLY_HEAD.size :]


def test_the_loop_answers_each_frame_with_the_handlers_result_and_its_trace_id() -> None:
    gateway, instance = socket.socketpair()
    seen: list[tuple[str, str | None, int]] = []

    def handler(event: dict[str, int], context: LambdaContext) -> dict[str, int]:
        seen.append((context.aws_request_id, os.environ.get("_X_AMZN_TRACE_ID"), event["n"]))
        return {"double": event["n"] * 2}

    def serve() -> None:
        with contextlib.suppress(ConnectionError):
            client.serve(client.InvocationSocket(instance), handler, None)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        assert read_reply(gateway) == (frames.READY, b"")
        deadline = int(time.time() * 1000) + 3000
        for n in range(3):
            frame = frames.invocation_frame(
                f"req-{n}", deadline, "arn:aws:lambda:us-east-1:0:function:f", f"Root=trace-{n}", None, None,
                b'{"n": %d}' % n,
            )  # fmt: skip
            gateway.sendall(frame)
            assert read_reply(gateway) == (frames.RESPONSE, b'{"double": %d}' % (n * 2))
        assert seen == [
            ("req-0", "Root=trace-0", 0),
            ("req-1", "Root=trace-1", 1),
            ("req-2", "Root=trace-2", 2),
        ]
    finally:
        gateway.close()
        thread.join(5)
        instance.close()


def test_a_forked_instance_reads_its_own_context_fields() -> None:
    # An instance is forked from the zygote and sets its log stream name afterwards; fields
    # the parent had already read must not carry over into the child.
    os.environ["AWS_LAMBDA_LOG_STREAM_NAME"] = "parent-stream"
    context._forget_fields()  # earlier tests in this process may have read them already
    try:
        assert LambdaContext("r", 0, None, None, None).log_stream_name == "parent-stream"
        read_end, write_end = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: report what a context says after the environment changed
            try:
                os.environ["AWS_LAMBDA_LOG_STREAM_NAME"] = "child-stream"
                os.write(write_end, (LambdaContext("r", 0, None, None, None).log_stream_name or "").encode())
            finally:
                os._exit(0)
        os.close(write_end)
        with os.fdopen(read_end, "rb") as reader:
            seen = reader.read()
        os.waitpid(pid, 0)
        assert seen == b"child-stream"
        # And the parent keeps the fields it read once.
        os.environ["AWS_LAMBDA_LOG_STREAM_NAME"] = "changed-later"
        assert LambdaContext("r", 0, None, None, None).log_stream_name == "parent-stream"
    finally:
        del os.environ["AWS_LAMBDA_LOG_STREAM_NAME"]
        context._forget_fields()


def test_the_preloaded_parent_does_not_import_asyncio() -> None:
    """Every module the instances' parent imports is in each fork's page tables: asyncio alone
    (runtime_api pulled it in once) made a cold start ~0.5 ms slower."""
    probe = "import sys, gateway.functions.python_runtime.zygote; print('asyncio' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
