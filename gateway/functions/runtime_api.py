"""The Lambda Runtime API (2018-06-01), served to ONE instance on its own loopback listener.

One listener per instance means the gateway always knows which instance holds which invocation,
and so can kill exactly that one at its deadline. The instance's runtime long-polls
``GET /2018-06-01/runtime/invocation/next`` and answers with ``.../{id}/response`` or
``.../{id}/error``; ``/runtime/init/error`` reports a failed initialisation. The extensions, logs
and telemetry APIs are stubs that answer as AWS does, so clients probing them keep going.

HTTP is parsed by gateway._fastpath.parser; the connection handling is a small asyncio.Protocol
that serves one request at a time (runtime clients do not pipeline).
"""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal, cast

import msgspec

from gateway._fastpath.parser import Incomplete, ParsedRequest, ParseError, parse_request
from gateway.functions import ids
from gateway.functions.spec import MAX_RESPONSE_BYTES

API_VERSION = "2018-06-01"
_MAX_HEAD = 65536

ReplyKind = Literal["response", "error", "init_error"]


@dataclass(eq=False, slots=True)
class Invocation:
    """One invocation on its way through an instance; its channel calls ``on_reply`` with what
    the runtime answered (once)."""

    request_id: str
    payload: bytes
    function_arn: str
    timeout: float  # seconds the function may run once the runtime has the event
    trace_id: str | None = None
    client_context: str | None = None
    cognito_identity: str | None = None
    deadline_ms: int = 0  # epoch ms, set when the runtime receives the event
    delivered_at: float | None = None  # time.perf_counter() at that moment
    # "": payload is the JSON event; inline_http.HTTP_V2: an HTTP request's parts (built-in
    # python runtime only), answered with the mapped HTTP response (RuntimeReply.http).
    shape: str = ""
    on_reply: Callable[[RuntimeReply], None] | None = field(default=None, repr=False)
    replied: bool = False

    def reply(self, reply: RuntimeReply) -> None:
        """Hand the runtime's answer to whoever waits for it (the first answer only)."""
        if self.replied:
            return
        self.replied = True
        if self.on_reply is not None:
            self.on_reply(reply)


@dataclass(slots=True)  # not frozen: one is made per invocation, and frozen ones cost more to build
class RuntimeReply:
    """What the instance's runtime answered for an invocation (or at init)."""

    kind: ReplyKind
    body: bytes
    content_type: str = "application/json"
    error_type: str | None = None  # errorType of an error body (or its header)
    retire: bool = False  # the instance must not be reused (e.g. its connection was cut)
    # What the built-in runtime reports of itself with each answer (None from the Runtime API).
    max_rss_kib: int | None = None
    cpu_ms: int | None = None
    # A response to a shaped invocation: (status, headers, body) as API Gateway maps the result.
    http: tuple[int, list[tuple[str, str]], bytes] | None = None


class _ErrorType(msgspec.Struct):
    errorType: str | None = None


def error_type_of(body: bytes, header: str | None = None) -> str | None:
    """The errorType of a runtime's error document, else `header` (Lambda-Runtime-Function-Error-Type)."""
    try:
        parsed = msgspec.json.decode(body, type=_ErrorType)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return header
    return parsed.errorType or header


class RuntimeChannel:
    """The Runtime API state of one instance: at most one invocation at a time.

    The pool calls ``assign``; the runtime's long poll receives it (``on_delivered`` fires, with
    the deadline set); its response or error goes to ``invocation.reply``. ``on_first_poll``
    fires when the runtime first asks for work (its initialisation is over).
    """

    def __init__(
        self,
        *,
        function_name: str,
        handler: str,
        on_first_poll: Callable[[], None] | None = None,
        on_delivered: Callable[[Invocation], None] | None = None,
    ) -> None:
        self.function_name = function_name
        self.handler = handler
        self.on_first_poll = on_first_poll
        self.on_delivered = on_delivered
        self.polled = False
        self.pending: Invocation | None = None  # assigned, not yet delivered
        self.running: Invocation | None = None  # delivered, no answer yet
        self.last_answered: str | None = None
        self.init_error: RuntimeReply | None = None
        self.closed = asyncio.get_running_loop().create_future()
        self._polls: deque[asyncio.Future[Invocation]] = deque()
        self.transports: set[asyncio.Transport] = set()  # open connections, closed with the channel

    def assign(self, invocation: Invocation) -> None:
        if self.pending is not None or self.running is not None:
            raise RuntimeError("the instance already holds an invocation")
        self.pending = invocation
        self._hand_over()

    def poll(self) -> asyncio.Future[Invocation]:
        future: asyncio.Future[Invocation] = asyncio.get_running_loop().create_future()
        self._polls.append(future)
        if not self.polled:
            self.polled = True
            if self.on_first_poll is not None:
                self.on_first_poll()
        self._hand_over()
        return future

    def _hand_over(self) -> None:
        while self.pending is not None and self._polls:
            future = self._polls.popleft()
            if future.done():
                continue
            invocation, self.pending = self.pending, None
            invocation.delivered_at = time.perf_counter()
            invocation.deadline_ms = int(time.time() * 1000 + invocation.timeout * 1000)
            self.running = invocation
            future.set_result(invocation)
            if self.on_delivered is not None:
                self.on_delivered(invocation)

    def answer(self, request_id: str, reply: RuntimeReply) -> tuple[int, bytes]:
        """A response or error for request_id: (HTTP status, JSON body) for the runtime."""
        invocation = self.running
        if invocation is None or invocation.request_id != request_id:
            if request_id == self.last_answered:
                target = "InvocationResponse" if reply.kind == "response" else "InvocationErrorResponse"
                return 403, _error_body(
                    "InvalidStateTransition",
                    f"State transition from RuntimeResponseSent to {target} failed for runtime. "
                    "Error: State transition is not allowed",
                )
            return 400, _error_body("InvalidRequestID", "Invalid request ID")
        self.running = None
        self.last_answered = request_id
        # After the 202 is written: what the pool does with the reply may close this connection.
        asyncio.get_running_loop().call_soon(invocation.reply, reply)
        return 202, ACCEPTED

    def report_init_error(self, reply: RuntimeReply) -> tuple[int, bytes]:
        if self.init_error is not None or self.last_answered is not None:
            return 403, _error_body(
                "InvalidStateTransition",
                "State transition from Ready to InitError failed for runtime. "
                "Error: State transition is not allowed",
            )
        self.init_error = reply
        # The invocation waiting for this instance (pending or already delivered) fails with it.
        invocation = self.running or self.pending
        self.running = self.pending = None
        if invocation is not None:
            asyncio.get_running_loop().call_soon(invocation.reply, reply)
        return 202, ACCEPTED

    def close(self) -> None:
        if not self.closed.done():
            self.closed.set_result(None)
        while self._polls:
            self._polls.popleft().cancel()
        # After the callbacks of `closed` (extensions get their SHUTDOWN event written first).
        asyncio.get_running_loop().call_soon(self._close_transports)

    def _close_transports(self) -> None:
        for transport in list(self.transports):
            transport.close()
        self.transports.clear()


ACCEPTED = b'{"status":"OK"}'


def _error_body(error_type: str, message: str) -> bytes:
    return msgspec.json.encode({"errorMessage": message, "errorType": error_type})


_REASONS = {
    200: "OK",
    202: "Accepted",
    400: "Bad Request",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    413: "Request Entity Too Large",
    500: "Internal Server Error",
}
_CONTENT_LENGTH = re.compile(rb"\r\ncontent-length:[ \t]*(\d+)", re.IGNORECASE)
_INVOCATION_PATH = re.compile(r"^/2018-06-01/runtime/invocation/([^/]+)/(response|error)$")


def _response(
    status: int,
    body: bytes,
    headers: list[tuple[str, str]] | None = None,
    content_type: str = "application/json",
) -> bytes:
    lines = [f"HTTP/1.1 {status} {_REASONS.get(status, 'Unknown')}", f"Content-Type: {content_type}"]
    if headers:
        lines.extend(f"{name}: {value}" for name, value in headers)
    lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def _header(request: ParsedRequest, name: bytes) -> str | None:
    for key, value in request.headers:
        if key.lower() == name:
            return value.decode("latin-1")
    return None


class RuntimeApiProtocol(asyncio.Protocol):
    """One connection from an instance's runtime (or one of its extensions)."""

    def __init__(self, channel: RuntimeChannel) -> None:
        self.channel = channel
        self.buffer = bytearray()
        self.need = 0  # bytes the next request needs before it is worth parsing again
        self.waiting: asyncio.Future[object] | None = None
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, but have its methods.
        self.transport = cast(asyncio.Transport, transport)
        if self.channel.closed.done():
            transport.close()
            return
        self.channel.transports.add(self.transport)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.waiting is not None and not self.waiting.done():
            self.waiting.cancel()
        if self.transport is not None:
            self.channel.transports.discard(self.transport)
        self.transport = None

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if self.waiting is None:
            self._process()

    def _write(self, data: bytes) -> None:
        if self.transport is not None:
            self.transport.write(data)

    def _close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def _process(self) -> None:
        while self.buffer and self.waiting is None and self.transport is not None:
            if len(self.buffer) < self.need:
                return
            try:
                request = parse_request(bytes(self.buffer), max_head=_MAX_HEAD)
            except Incomplete:
                self._expect_more()
                return
            except ParseError as exc:
                self._write(_response(exc.status, _error_body("InvalidRequest", exc.message)))
                self._close()
                return
            del self.buffer[: request.consumed]
            self.need = 0
            self._dispatch(request)

    def _expect_more(self) -> None:
        head_end = self.buffer.find(b"\r\n\r\n")
        if head_end < 0:
            if len(self.buffer) > _MAX_HEAD:
                self._write(_response(431, _error_body("InvalidRequest", "request head too large")))
                self._close()
            return
        match = _CONTENT_LENGTH.search(self.buffer, 0, head_end + 2)
        if match is None:
            return  # chunked: parse again as bytes arrive
        length = int(match.group(1))
        if length > MAX_RESPONSE_BYTES:
            self._refuse_too_large()
            return
        self.need = head_end + 4 + length

    def _refuse_too_large(self) -> None:
        # The runtime gets AWS's 413; the invocation fails as AWS fails it; the connection goes.
        message = f"Response payload size exceeded maximum allowed payload size ({MAX_RESPONSE_BYTES} bytes)."
        invocation = self.channel.running
        if invocation is not None:
            error = _error_body("Function.ResponseSizeTooLarge", message)
            self.channel.answer(
                invocation.request_id,
                RuntimeReply("error", error, error_type="Function.ResponseSizeTooLarge", retire=True),
            )
        self._write(
            _response(
                413,
                _error_body(
                    "RequestEntityTooLarge",
                    f"Exceeded maximum allowed payload size ({MAX_RESPONSE_BYTES} bytes).",
                ),
            )
        )
        self._close()

    def _dispatch(self, request: ParsedRequest) -> None:
        method = request.method.decode("latin-1")
        path = request.path.decode("latin-1")
        if path == "/2018-06-01/runtime/invocation/next":
            if method != "GET":
                self._write(_response(405, _error_body("MethodNotAllowed", "Method not allowed")))
                return
            self._long_poll()
            return
        match = _INVOCATION_PATH.match(path)
        if match is not None and method == "POST":
            if len(request.body) > MAX_RESPONSE_BYTES:
                self._refuse_too_large()
                return
            kind: ReplyKind = "response" if match.group(2) == "response" else "error"
            content_type = _header(request, b"content-type") or "application/json"
            error_type = None
            if kind == "error":
                error_type = error_type_of(
                    request.body, _header(request, b"lambda-runtime-function-error-type")
                )
            status, body = self.channel.answer(
                match.group(1), RuntimeReply(kind, request.body, content_type, error_type)
            )
            self._write(_response(status, body))
            return
        if path == "/2018-06-01/runtime/init/error" and method == "POST":
            error_type = error_type_of(request.body, _header(request, b"lambda-runtime-function-error-type"))
            status, body = self.channel.report_init_error(
                RuntimeReply("init_error", request.body, error_type=error_type or "Runtime.Unknown")
            )
            self._write(_response(status, body))
            return
        self._stub(method, path)

    def _long_poll(self) -> None:
        future = self.channel.poll()
        self.waiting = future  # type: ignore[assignment]

        def delivered(done: asyncio.Future[Invocation]) -> None:
            self.waiting = None
            if done.cancelled():
                self._close()
                return
            invocation = done.result()
            headers = [
                ("Lambda-Runtime-Aws-Request-Id", invocation.request_id),
                ("Lambda-Runtime-Deadline-Ms", str(invocation.deadline_ms)),
                ("Lambda-Runtime-Invoked-Function-Arn", invocation.function_arn),
                ("Lambda-Runtime-Trace-Id", invocation.trace_id or ids.trace_id()),
            ]
            if invocation.client_context:
                headers.append(("Lambda-Runtime-Client-Context", invocation.client_context))
            if invocation.cognito_identity:
                headers.append(("Lambda-Runtime-Cognito-Identity", invocation.cognito_identity))
            self._write(_response(200, invocation.payload, headers))
            self._process()

        future.add_done_callback(delivered)

    def _stub(self, method: str, path: str) -> None:
        """Extensions, Logs and Telemetry APIs: accepted, nothing is ever sent to them."""
        if path == "/2020-01-01/extension/register" and method == "POST":
            body = msgspec.json.encode(
                {
                    "functionName": self.channel.function_name,
                    "functionVersion": "$LATEST",
                    "handler": self.channel.handler,
                }
            )
            self._write(_response(200, body, [("Lambda-Extension-Identifier", str(uuid.uuid4()))]))
        elif path == "/2020-01-01/extension/event/next" and method == "GET":
            # No events for extensions; SHUTDOWN when the instance goes.
            self.waiting = self.channel.closed

            def shutdown(done: asyncio.Future[None]) -> None:
                self.waiting = None
                event = {
                    "eventType": "SHUTDOWN",
                    "shutdownReason": "spindown",
                    "deadlineMs": int(time.time() * 1000) + 2000,
                }
                self._write(_response(200, msgspec.json.encode(event)))
                self._close()

            self.channel.closed.add_done_callback(shutdown)
        elif (
            path in ("/2020-01-01/extension/init/error", "/2020-01-01/extension/exit/error")
            and method == "POST"
        ):
            self._write(_response(202, ACCEPTED))
        elif path in ("/2020-08-15/logs", "/2022-07-01/telemetry") and method == "PUT":
            self._write(_response(200, b"OK", content_type="text/plain"))
        else:
            self._write(_response(404, _error_body("InvalidRequest", f"no such endpoint: {method} {path}")))
