"""The gateway's end of a python instance's invocation socket (see python_runtime/frames.py).

It plays the part the Runtime API plays for other runtimes, with the same contract towards the
pool: ``assign`` an invocation; ``on_first_poll`` fires when the instance is initialised and
waits for events; ``on_delivered`` when the instance has the event (its run-time clock starts);
the instance's answer goes to ``invocation.reply`` (at once, from data_received). One invocation at a
time; an invocation assigned before the instance is ready waits here until it is.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import cast

import msgspec

from gateway.functions import ids
from gateway.functions.inline_http import decode_http_reply
from gateway.functions.python_runtime import frames
from gateway.functions.runtime_api import Invocation, RuntimeReply, error_type_of
from gateway.functions.spec import MAX_RESPONSE_BYTES

_KINDS = {
    frames.RESPONSE: "response",
    frames.RESPONSE_HTTP: "response",
    frames.ERROR: "error",
    frames.INIT_ERROR: "init_error",
}


class InvocationChannel(asyncio.Protocol):
    """One instance's invocation socket, as an asyncio protocol of the worker's loop."""

    def __init__(
        self,
        *,
        on_first_poll: Callable[[], None] | None = None,
        on_delivered: Callable[[Invocation], None] | None = None,
    ) -> None:
        self.on_first_poll = on_first_poll
        self.on_delivered = on_delivered
        self.polled = False  # the instance said READY
        self.pending: Invocation | None = None  # assigned, not yet sent (instance not ready)
        self.running: Invocation | None = None  # sent, no answer yet
        self.init_error: RuntimeReply | None = None
        self.transport: asyncio.Transport | None = None
        self._buffer = bytearray()

    # -- towards the pool ---------------------------------------------------------------------

    def assign(self, invocation: Invocation) -> None:
        if self.pending is not None or self.running is not None:
            raise RuntimeError("the instance already holds an invocation")
        if self.init_error is not None:  # it failed to initialise before any invocation came
            invocation.reply(self.init_error)
            return
        if self.polled:
            self._send(invocation)
        else:
            self.pending = invocation

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def _send(self, invocation: Invocation) -> None:
        invocation.delivered_at = time.perf_counter()
        invocation.deadline_ms = int(time.time() * 1000 + invocation.timeout * 1000)
        self.running = invocation
        if self.transport is not None:
            self.transport.write(
                frames.invocation_frame(
                    invocation.request_id,
                    invocation.deadline_ms,
                    invocation.function_arn,
                    invocation.trace_id or ids.trace_id(),
                    invocation.client_context,
                    invocation.cognito_identity,
                    invocation.payload,
                    invocation.shape,
                )
            )
        if self.on_delivered is not None:
            self.on_delivered(invocation)

    # -- asyncio.Protocol ---------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, but have its methods.
        self.transport = cast(asyncio.Transport, transport)

    def connection_lost(self, exc: Exception | None) -> None:
        # The instance is gone; the pool learns it from the process's exit status.
        self.transport = None

    def data_received(self, data: bytes) -> None:
        buffer = self._buffer
        if not buffer and len(data) >= frames.REPLY_HEAD.size:
            # The usual case: exactly one whole reply in one read.
            length = frames.LENGTH.unpack_from(data)[0] + frames.LENGTH.size
            if len(data) == length:
                self._reply(data)
                return
        buffer += data
        while len(buffer) >= frames.LENGTH.size:
            length = frames.LENGTH.unpack_from(buffer)[0] + frames.LENGTH.size
            if length < frames.REPLY_HEAD.size:  # user code can write to the socket too
                self._protocol_error(f"a frame of {length} bytes")
                return
            if length - frames.REPLY_HEAD.size > MAX_RESPONSE_BYTES:
                self._too_large()
                return
            if len(buffer) < length:
                return
            frame = bytes(buffer[:length])
            del buffer[:length]
            self._reply(frame)

    def _reply(self, frame: bytes) -> None:
        _length, kind, max_rss_kib, cpu_ms = frames.REPLY_HEAD.unpack_from(frame)
        body = frame[frames.REPLY_HEAD.size :]
        if kind == frames.READY:
            self.polled = True
            if self.on_first_poll is not None:
                self.on_first_poll()
            pending, self.pending = self.pending, None
            if pending is not None:
                self._send(pending)
            return
        reply_kind = _KINDS.get(kind)
        if reply_kind is None:
            self._protocol_error(f"unknown frame kind {kind}")
            return
        if reply_kind == "response" and len(body) > MAX_RESPONSE_BYTES:
            self._too_large()
            return
        error_type = None if reply_kind == "response" else (error_type_of(body) or "Runtime.Unknown")
        http = None
        if kind == frames.RESPONSE_HTTP:
            try:
                http = decode_http_reply(body)
            except (msgspec.DecodeError, msgspec.ValidationError):
                self._protocol_error("an HTTP response frame that does not decode")
                return
            body = b""
        reply = RuntimeReply(
            reply_kind,  # type: ignore[arg-type]
            body,
            error_type=error_type,
            max_rss_kib=max_rss_kib,
            cpu_ms=cpu_ms,
            http=http,
        )
        if reply_kind == "init_error":
            self.init_error = reply
            invocation, self.running, self.pending = self.running or self.pending, None, None
            if invocation is None:
                self.close()  # the runtime waits for this before it exits
        else:
            invocation, self.running = self.running, None
        if invocation is not None:
            invocation.reply(reply)

    def _too_large(self) -> None:
        # As AWS fails it: the invocation gets Function.ResponseSizeTooLarge, the instance goes.
        message = f"Response payload size exceeded maximum allowed payload size ({MAX_RESPONSE_BYTES} bytes)."
        self._fail_running("Function.ResponseSizeTooLarge", message)

    def _protocol_error(self, message: str) -> None:
        self._fail_running("Runtime.Unknown", f"the instance broke the invocation protocol: {message}")

    def _fail_running(self, error_type: str, message: str) -> None:
        invocation, self.running = self.running, None
        body = msgspec.json.encode({"errorMessage": message, "errorType": error_type})
        self._buffer.clear()
        if invocation is not None:
            invocation.reply(RuntimeReply("error", body, error_type=error_type, retire=True))
        self.close()
