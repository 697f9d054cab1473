"""HTTP routes answered by functions: request -> API Gateway event -> invocation -> response.

The route is served by the engine as a Python handler (the body is buffered, as API Gateway
does); the event is built with AWS's rules (gateway.functions.events) and the result mapped
back with them. A busy function answers 503 with Retry-After (API Gateway's answer to a
throttled integration), a sandbox that cannot run 502.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from typing import Any

from gateway.functions import ids
from gateway.functions.events import (
    PayloadVersion,
    build_http_event_v2,
    build_rest_event_v1,
    encode_event,
    function_error_response,
    result_to_response,
    route_key,
)
from gateway.functions.inline_http import HTTP_V2, encode_request_parts
from gateway.functions.pool import FunctionPool, FunctionUnavailable, InvocationResult, TooManyRequests
from gateway.logs import log
from gateway.plugins import Request, Response

__all__ = ["FunctionRoute"]


class FunctionRoute:
    """The handler of one route: `await route(request, body) -> Response`."""

    def __init__(
        self,
        pool: FunctionPool,
        *,
        payload: PayloadVersion,
        path_pattern: str,
        methods: Sequence[str] | None,
    ) -> None:
        self.pool = pool
        self.payload: PayloadVersion = payload
        self.path_pattern = path_pattern
        self.methods = methods
        self._route_keys: dict[str, str] = {}  # request method -> routeKey
        # A python function's instance builds the event and maps the result (inline_http).
        inline = payload == "2.0" and pool.spec.runtime == "python"
        self._encode: Callable[..., bytes] = encode_request_parts if inline else self._encoded_event
        self._shape = HTTP_V2 if inline else ""

    def __call__(self, request: Request, body: bytes) -> asyncio.Future[Response]:
        """The response, as a future: no coroutine or task per request (the engine accepts a
        future from a route handler as it is)."""
        # Lambda's request id is a UUID; the gateway's own id still travels in X-Request-Id.
        aws_request_id = ids.request_id()
        method = request.method
        payload = self._encode(
            method=method,
            raw_path=request.path,
            raw_query=request.query,
            headers=request.headers.items(),
            body=body,
            client_ip=request.client_ip,
            route_key=self._route_key(method),
            path_params=request.path_params or None,
            request_id=aws_request_id,
            time_ms=int(time.time() * 1000),
        )
        invocation = self.pool.submit(payload, request_id=aws_request_id, log_tail=False, shape=self._shape)
        # The pool's loop: asyncio.get_running_loop() is a getpid() system call on Python 3.11.
        response: asyncio.Future[Response] = self.pool.event_loop().create_future()

        def respond(done: asyncio.Future[InvocationResult]) -> None:
            if response.done():  # the client went away (the engine cancelled the response)
                if not done.cancelled():
                    done.exception()  # seen: a refusal nobody waits for is not an error to log
                return
            try:
                response.set_result(self._response(done))
            except Exception as exc:  # the gateway's own failure: the engine answers 500
                response.set_exception(exc)

        invocation.add_done_callback(respond)
        return response

    def _encoded_event(self, **fields: Any) -> bytes:
        build = build_http_event_v2 if self.payload == "2.0" else build_rest_event_v1
        return encode_event(build(**fields))

    def _route_key(self, method: str) -> str:
        key = self._route_keys.get(method)
        if key is None:
            key = route_key(self.path_pattern, self.methods, method)
            if len(self._route_keys) < 64:  # methods are a short list; do not let clients grow it
                self._route_keys[method] = key
        return key

    def _response(self, done: asyncio.Future[InvocationResult]) -> Response:
        if done.cancelled():
            return Response.error(503, "function_unavailable", "the invocation was cancelled")
        error = done.exception()
        if isinstance(error, TooManyRequests):
            return Response.error(
                503,
                "function_busy",
                f'function "{self.pool.spec.name}" is at its concurrency limit; retry shortly',
                [("Retry-After", "1")],
            )
        if isinstance(error, FunctionUnavailable):
            log("error", "function unavailable", function=self.pool.spec.name, error=str(error))
            return Response.error(502, "function_unavailable", f'function "{self.pool.spec.name}" cannot run')
        if error is not None:
            raise error
        result = done.result()
        if result.function_error is not None:
            status, headers, payload = function_error_response(self.payload)
        elif result.http is not None:
            status, headers, payload = result.http
        else:
            status, headers, payload = result_to_response(self.payload, result.payload)
        return Response(status, payload, list(headers))
