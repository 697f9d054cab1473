"""The Runtime API loop of a python instance: next -> handler(event, context) -> response | error.

One keep-alive connection to the instance's Runtime API, opened once: a sandbox without a network
(its own namespace) keeps using the connection it opened before the namespace was entered.
Errors are reported as AWS's Python runtime reports them (errorMessage, errorType, requestId,
stackTrace) and logged as "[ERROR] Type: message" with the traceback.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import sys
import traceback
from collections.abc import Callable
from decimal import Decimal
from typing import Any

from gateway.functions.python_runtime.context import LambdaContext

Handler = Callable[[Any, LambdaContext], Any]

API = "/2018-06-01/runtime"
# The error type the gateway reads as "the instance ran out of memory" (it then kills the instance).
OUT_OF_MEMORY = "Runtime.OutOfMemory"


class RuntimeConnection:
    """Minimal HTTP/1.1 client for the Runtime API: the server always sends Content-Length."""

    def __init__(self, sock: socket.socket, host: str) -> None:
        self.sock = sock
        self.host = host.encode()
        self.buffer = b""

    @classmethod
    def open(cls, address: str) -> RuntimeConnection:
        host, _, port = address.rpartition(":")
        sock = socket.create_connection((host, int(port)))
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return cls(sock, address)

    def request(
        self, method: str, path: str, body: bytes = b"", headers: tuple[tuple[str, str], ...] = ()
    ) -> tuple[int, dict[str, str], bytes]:
        head = [f"{method} {path} HTTP/1.1", f"Host: {self.host.decode()}"]
        head.extend(f"{name}: {value}" for name, value in headers)
        if method != "GET":
            head.append(f"Content-Length: {len(body)}")
        self.sock.sendall(("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body)
        return self._read_response()

    def _fill(self) -> None:
        chunk = self.sock.recv(262144)
        if not chunk:
            raise ConnectionError("the Runtime API closed the connection")
        self.buffer += chunk

    def _read_response(self) -> tuple[int, dict[str, str], bytes]:
        while (end := self.buffer.find(b"\r\n\r\n")) < 0:
            self._fill()
        lines = self.buffer[:end].decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        headers: dict[str, str] = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        length = int(headers.get("content-length", "0"))
        start = end + 4
        while len(self.buffer) < start + length:
            self._fill()
        body = self.buffer[start : start + length]
        self.buffer = self.buffer[start + length :]
        return status, headers, body


def _json_default(value: object) -> object:
    # AWS's marshaller turns Decimal (DynamoDB numbers) into JSON numbers.
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


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


def post_error(conn: RuntimeConnection, path: str, payload: dict[str, Any]) -> None:
    body = json.dumps(payload).encode()
    conn.request(
        "POST",
        path,
        body,
        (("Content-Type", "application/json"), ("Lambda-Runtime-Function-Error-Type", payload["errorType"])),
    )


def serve(conn: RuntimeConnection, handler: Handler | None, init_error: dict[str, Any] | None) -> None:
    """Answer invocations until the connection goes; an init error is reported once, then exit."""
    if handler is None:
        assert init_error is not None
        log_error(init_error)
        post_error(conn, f"{API}/init/error", init_error)
        os._exit(1)
    while True:
        _status, headers, body = conn.request("GET", f"{API}/invocation/next")
        request_id = headers["lambda-runtime-aws-request-id"]
        trace_id = headers.get("lambda-runtime-trace-id")
        if trace_id:
            os.environ["_X_AMZN_TRACE_ID"] = trace_id
        else:
            os.environ.pop("_X_AMZN_TRACE_ID", None)
        context = LambdaContext(
            request_id,
            int(headers.get("lambda-runtime-deadline-ms", "0")),
            headers.get("lambda-runtime-invoked-function-arn"),
            headers.get("lambda-runtime-client-context"),
            headers.get("lambda-runtime-cognito-identity"),
            headers.get("lambda-runtime-aws-tenant-id"),
        )
        path = f"{API}/invocation/{request_id}"
        try:
            try:
                event = json.loads(body) if body else None
            except ValueError as exc:
                raise _Tagged("Runtime.UnmarshalError", f"Unable to unmarshal input: {exc}") from None
            result = handler(event, context)
            try:
                response = json.dumps(result, default=_json_default).encode()
            except (TypeError, ValueError) as exc:
                raise _Tagged("Runtime.MarshalError", f"Unable to marshal response: {exc}") from None
        except MemoryError as exc:
            # The sandbox is out of memory: report it and go, so the gateway replaces this instance.
            sys.stdout.flush()
            payload = error_payload(exc, request_id, OUT_OF_MEMORY)
            payload["stackTrace"] = []
            post_error(conn, f"{path}/error", payload)
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
            post_error(conn, f"{path}/error", payload)
        except Exception as exc:
            payload = error_payload(exc, request_id)
            _flush()
            log_error(payload)
            post_error(conn, f"{path}/error", payload)
        else:
            # Output written during the invocation must be in the pipe before the response: the
            # gateway drains the pipe when the response arrives to attribute it to this request.
            _flush()
            conn.request("POST", f"{path}/response", response, (("Content-Type", "application/json"),))


class _Tagged(Exception):
    def __init__(self, error_type: str, message: str) -> None:
        super().__init__(message)
        self.error_type = error_type
        self.message = message


def _flush() -> None:
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):
            stream.flush()
