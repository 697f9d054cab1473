"""The invocation loop of a python instance: frame -> handler(event, context) -> frame.

Events come over the instance's invocation socket (gateway.functions.python_runtime.frames), not
HTTP: the socket is inherited at fork, so a sandbox without a network (its own namespace) has it
too. Errors are reported as AWS's Python runtime reports them (errorMessage, errorType, requestId,
stackTrace) and logged as "[ERROR] Type: message" with the traceback.
"""

from __future__ import annotations

import contextlib
import json
import os
import resource
import select
import socket
import sys
import traceback
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import msgspec

from gateway.functions import inline_http
from gateway.functions.python_runtime import frames
from gateway.functions.python_runtime.context import LambdaContext

Handler = Callable[[Any, LambdaContext], Any]

# The error type the gateway reads as "the instance ran out of memory" (it then kills the instance).
OUT_OF_MEMORY = "Runtime.OutOfMemory"
_RECV_SIZE = 65536


class InvocationSocket:
    """The instance's end of its invocation socket (blocking: the instance has nothing else to do)."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        # One receive buffer for the instance's life. A new bytes object per recv() of this size
        # is memory mapped and unmapped by malloc every time, and the page faults that brings
        # cost more than the rest of a trivial invocation.
        self._receive = bytearray(_RECV_SIZE)
        self._received = memoryview(self._receive)
        self.buffer = b""  # what has been received and not yet returned as a frame
        # Wait for events in poll(), not in a blocking recv(). A reader asleep in recv() on a Unix
        # stream socket shares the socket's wait queue with writers, so every time the gateway
        # reads a reply (freeing its buffer) the kernel wakes it for nothing: a cross-CPU wake-up
        # and two context switches per invocation. poll() waits for POLLIN only.
        self._poll = select.poll()
        self._poll.register(sock.fileno(), select.POLLIN)

    def read_frame(self) -> bytes:
        """The next frame from the gateway, without its length prefix."""
        while len(self.buffer) < frames.LENGTH.size:
            self._fill()
        (length,) = frames.LENGTH.unpack_from(self.buffer)
        end = frames.LENGTH.size + length
        if len(self.buffer) >= end:
            frame, self.buffer = self.buffer[frames.LENGTH.size : end], self.buffer[end:]
            return frame
        # A large event: receive the rest straight into a buffer of its size.
        frame_buffer = bytearray(length)
        have = len(self.buffer) - frames.LENGTH.size
        frame_buffer[:have] = self.buffer[frames.LENGTH.size :]
        self.buffer = b""
        view = memoryview(frame_buffer)
        while have < length:
            received = self.sock.recv_into(view[have:])
            if received == 0:
                raise ConnectionError("the gateway closed the invocation socket")
            have += received
        return bytes(frame_buffer)

    def _fill(self) -> None:
        self._poll.poll()
        received = self.sock.recv_into(self._receive)
        if received == 0:
            raise ConnectionError("the gateway closed the invocation socket")
        self.buffer += self._received[:received]

    def send_last(self, kind: int, body: bytes) -> None:
        """Send a final frame and wait (a little) for the gateway to take it before the process
        ends: otherwise the gateway may learn of the exit before it reads the frame and report
        a bare Runtime.ExitError. The gateway kills the instance once it has read it."""
        self.send(kind, body)
        self.sock.settimeout(2.0)
        with contextlib.suppress(OSError):
            while self.sock.recv_into(self._receive):
                pass

    def send(self, kind: int, body: bytes) -> None:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        cpu_ms = int((usage.ru_utime + usage.ru_stime) * 1000)
        self.sock.sendall(frames.reply_frame(kind, usage.ru_maxrss, cpu_ms, body))


def decode_event(body: bytes) -> Any:
    """The event as Python's json module reads it; msgspec first (several times faster), json for
    what msgspec refuses (NaN, Infinity) and for the error message."""
    if not body:
        return None
    try:
        return msgspec.json.decode(body)
    except msgspec.DecodeError:
        pass
    try:
        return json.loads(body)
    except ValueError as exc:
        raise _Tagged("Runtime.UnmarshalError", f"Unable to unmarshal input: {exc}") from None


def encode_result(result: Any) -> bytes:
    """The handler's result as JSON, as AWS's runtime writes it (Decimal as a number). Python's
    json, not msgspec: msgspec would also take sets, datetimes and dataclasses, which AWS's
    runtime refuses, and a handler must not work here only to fail on Lambda."""
    try:
        return _result_encoder.encode(result).encode()
    except (TypeError, ValueError) as exc:
        raise _Tagged("Runtime.MarshalError", f"Unable to marshal response: {exc}") from None


def _json_default(value: object) -> object:
    # AWS's marshaller turns Decimal (DynamoDB numbers) into JSON numbers.
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


# json.dumps(result, default=_json_default) builds this encoder anew on every call.
_result_encoder = json.JSONEncoder(default=_json_default)


def error_payload(
    exc: BaseException, request_id: str | None, error_type: str | None = None
) -> dict[str, Any]:
    frames = traceback.extract_tb(exc.__traceback__)
    return {
        "errorMessage": str(exc),
        "errorType": error_type or type(exc).__name__,
        "requestId": request_id or "",
        "stackTrace": traceback.format_list(frames),
    }


def log_error(payload: dict[str, Any]) -> None:
    """AWS's Python runtime logs one "[ERROR] Type: message" record with the traceback."""
    trace = "".join(payload["stackTrace"])
    sys.stderr.write(
        f"[ERROR] {payload['errorType']}: {payload['errorMessage']}\n"
        f"Traceback (most recent call last):\n{trace}"
    )
    sys.stderr.flush()


_environ_data: dict[bytes, bytes] | None = getattr(os.environ, "_data", None)


def set_trace_id(trace_id: str) -> None:
    """os.environ["_X_AMZN_TRACE_ID"] = trace_id, as AWS's runtime sets it, for Python code.

    Not through setenv(): glibc keeps every value ever set in a private tree and never frees it,
    about 140 bytes per invocation, so an instance would grow by tens of MB over a few hundred
    thousand invocations until its memory limit retired it. Python code (the X-Ray SDK,
    Powertools) reads os.environ; the C-level environment keeps the value the instance started
    with.
    """
    if _environ_data is None:  # not CPython's os.environ: the plain way
        os.environ["_X_AMZN_TRACE_ID"] = trace_id
    else:
        _environ_data[b"_X_AMZN_TRACE_ID"] = trace_id.encode()


def send_error(channel: InvocationSocket, kind: int, payload: dict[str, Any]) -> None:
    channel.send(kind, json.dumps(payload).encode())


def serve(channel: InvocationSocket, handler: Handler | None, init_error: dict[str, Any] | None) -> None:
    """Answer invocations until the socket goes; an init error is reported once, then exit."""
    if handler is None:
        assert init_error is not None
        log_error(init_error)
        channel.send_last(frames.INIT_ERROR, json.dumps(init_error).encode())
        os._exit(1)
    channel.send(frames.READY, b"")
    while True:
        frame = channel.read_frame()
        (header_length,) = frames.HEADER_LENGTH.unpack_from(frame)
        body_start = frames.HEADER_LENGTH.size + header_length
        header = frame[frames.HEADER_LENGTH.size : body_start].decode().split(frames.SEPARATOR)
        request_id, deadline_ms, function_arn, trace_id, client_context, cognito_identity, shape = header
        body = frame[body_start:]
        set_trace_id(trace_id)
        context = LambdaContext(
            request_id, int(deadline_ms), function_arn, client_context or None, cognito_identity or None
        )
        kind = frames.RESPONSE
        try:
            if shape:  # an HTTP route's request: the event is built here, the result mapped here
                event = inline_http.event_from_parts(body)
                result = handler(event, context)
                mapped = inline_http.http_reply(result, encode_result)
                if mapped is None:  # too large a response: as JSON, for the gateway to refuse
                    response = encode_result(result)
                else:
                    response, kind = mapped, frames.RESPONSE_HTTP
            else:
                event = decode_event(body)
                result = handler(event, context)
                response = encode_result(result)
        except MemoryError as exc:
            # The sandbox is out of memory: report it and go, so the gateway replaces this instance.
            sys.stdout.flush()
            payload = error_payload(exc, request_id, OUT_OF_MEMORY)
            payload["stackTrace"] = []
            channel.send_last(frames.ERROR, json.dumps(payload).encode())
            os._exit(1)
        except _Tagged as exc:
            payload = {
                "errorMessage": exc.message,
                "errorType": exc.error_type,
                "requestId": request_id,
                "stackTrace": [],
            }
            _flush()
            log_error(payload)
            send_error(channel, frames.ERROR, payload)
        except Exception as exc:
            payload = error_payload(exc, request_id)
            _flush()
            log_error(payload)
            send_error(channel, frames.ERROR, payload)
        else:
            # Output written during the invocation must be in the pipe before the response: the
            # gateway drains the pipe when the response arrives to attribute it to this request.
            _flush()
            channel.send(kind, response)


class _Tagged(Exception):
    def __init__(self, error_type: str, message: str) -> None:
        super().__init__(message)
        self.error_type = error_type
        self.message = message


def _flush() -> None:
    for stream in (sys.stdout, sys.stderr):
        try:  # noqa: SIM105 (contextlib.suppress costs more; this runs twice per invocation)
            stream.flush()
        except (OSError, ValueError):
            pass
