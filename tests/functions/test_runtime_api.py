"""The Lambda Runtime API one instance sees, spoken to over a real socket."""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

from gateway._fastpath.parser import Incomplete, ParsedResponse, parse_response
from gateway.functions.runtime_api import (
    Invocation,
    RuntimeApiProtocol,
    RuntimeChannel,
    RuntimeReply,
)
from gateway.functions.spec import MAX_RESPONSE_BYTES
from tests.functions.sandbox_support import run

NEXT = "/2018-06-01/runtime/invocation/next"


class Client:
    """One runtime connection: raw bytes out, parsed responses in."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.buffer = b""

    async def send(self, data: bytes, *, pieces: int = 1) -> None:
        step = max(1, len(data) // pieces)
        for start in range(0, len(data), step):
            self.writer.write(data[start : start + step])
            await self.writer.drain()
            if pieces > 1:
                await asyncio.sleep(0.001)

    async def request(
        self, method: str, path: str, body: bytes = b"", headers: tuple[str, ...] = (), pieces: int = 1
    ) -> ParsedResponse:
        head = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1:9001", *headers]
        if method != "GET":
            head.append(f"Content-Length: {len(body)}")
        await self.send(("\r\n".join(head) + "\r\n\r\n").encode() + body, pieces=pieces)
        return await self.response()

    async def response(self) -> ParsedResponse:
        while True:
            try:
                response = parse_response(self.buffer)
            except Incomplete:
                chunk = await self.reader.read(65536)
                assert chunk, "connection closed"
                self.buffer += chunk
                continue
            self.buffer = self.buffer[response.consumed :]
            return response

    async def closed(self) -> bool:
        return await asyncio.wait_for(self.reader.read(1), 2) == b""


def header(response: ParsedResponse, name: str) -> str | None:
    for key, value in response.headers:
        if key.decode().lower() == name.lower():
            return value.decode()
    return None


class Events:
    def __init__(self) -> None:
        self.first_polls = 0
        self.delivered: list[Invocation] = []


@asynccontextmanager
async def served(
    events: Events | None = None,
) -> AsyncIterator[tuple[RuntimeChannel, Callable[[], Awaitable[Client]]]]:
    events = events or Events()

    def first_poll() -> None:
        events.first_polls += 1

    channel = RuntimeChannel(
        function_name="fn",
        handler="app.handler",
        on_first_poll=first_poll,
        on_delivered=events.delivered.append,
    )
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: RuntimeApiProtocol(channel), "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    clients: list[Client] = []

    async def connect() -> Client:
        client = Client(*await asyncio.open_connection("127.0.0.1", port))
        clients.append(client)
        return client

    try:
        yield channel, connect
    finally:
        channel.close()
        for client in clients:
            client.writer.close()
            await client.writer.wait_closed()
        server.close()
        await server.wait_closed()


def invocation(request_id: str = "req-1", **fields: object) -> Invocation:
    item = Invocation(
        request_id=request_id,
        payload=b'{"hello": "world"}',
        function_arn="arn:aws:lambda:us-east-1:000000000000:function:fn",
        timeout=3.0,
        **fields,  # type: ignore[arg-type]
    )
    future: asyncio.Future[RuntimeReply] = asyncio.get_running_loop().create_future()
    item.on_reply = future.set_result
    _outcomes[id(item)] = future
    return item


_outcomes: dict[int, asyncio.Future[RuntimeReply]] = {}


def outcome(item: Invocation) -> asyncio.Future[RuntimeReply]:
    """The future the test's invocation resolves with the runtime's reply."""
    return _outcomes[id(item)]


def test_next_long_polls_and_carries_lambdas_headers() -> None:
    async def main() -> None:
        events = Events()
        async with served(events) as (channel, connect):
            client = await connect()
            poll = asyncio.ensure_future(client.request("GET", NEXT))
            await asyncio.sleep(0.05)
            assert not poll.done() and events.first_polls == 1  # waiting for work
            item = invocation(
                client_context='{"custom": {"a": 1}}', cognito_identity='{"cognitoIdentityId": "x"}'
            )
            before = time.time() * 1000
            channel.assign(item)
            response = await poll
            assert response.status == 200
            assert response.body == b'{"hello": "world"}'
            assert header(response, "Lambda-Runtime-Aws-Request-Id") == "req-1"
            deadline = int(header(response, "Lambda-Runtime-Deadline-Ms") or 0)
            assert before + 2900 <= deadline <= time.time() * 1000 + 3000
            assert header(response, "Lambda-Runtime-Invoked-Function-Arn") == item.function_arn
            trace = header(response, "Lambda-Runtime-Trace-Id") or ""
            assert re.fullmatch(r"Root=1-[0-9a-f]{8}-[0-9a-f]{24};Parent=[0-9a-f]{16};Sampled=0", trace)
            assert header(response, "Lambda-Runtime-Client-Context") == '{"custom": {"a": 1}}'
            assert header(response, "Lambda-Runtime-Cognito-Identity") == '{"cognitoIdentityId": "x"}'
            assert events.delivered == [item] and item.deadline_ms == deadline

    run(main())


def test_optional_headers_are_absent_and_given_trace_is_kept() -> None:
    async def main() -> None:
        async with served() as (channel, connect):
            client = await connect()
            channel.assign(invocation(trace_id="Root=1-5759e988-bd862e3fe1be46a994272793;Sampled=1"))
            response = await client.request("GET", NEXT)
            assert (
                header(response, "Lambda-Runtime-Trace-Id")
                == "Root=1-5759e988-bd862e3fe1be46a994272793;Sampled=1"
            )
            assert header(response, "Lambda-Runtime-Client-Context") is None
            assert header(response, "Lambda-Runtime-Cognito-Identity") is None

    run(main())


def test_response_is_accepted_once() -> None:
    async def main() -> None:
        async with served() as (channel, connect):
            client = await connect()
            item = invocation()
            channel.assign(item)
            await client.request("GET", NEXT)
            path = "/2018-06-01/runtime/invocation/req-1/response"
            accepted = await client.request(
                "POST", path, b'"result"', ("Content-Type: text/plain",), pieces=7
            )
            assert accepted.status == 202 and json.loads(accepted.body) == {"status": "OK"}
            await outcome(item)
            assert outcome(item).result() == RuntimeReply("response", b'"result"', "text/plain")
            again = await client.request("POST", path, b'"result"')
            assert again.status == 403
            assert json.loads(again.body)["errorType"] == "InvalidStateTransition"
            unknown = await client.request("POST", "/2018-06-01/runtime/invocation/nope/response", b"{}")
            assert unknown.status == 400
            assert json.loads(unknown.body) == {
                "errorMessage": "Invalid request ID",
                "errorType": "InvalidRequestID",
            }

    run(main())


def test_error_report_carries_the_error_type() -> None:
    async def main() -> None:
        async with served() as (channel, connect):
            client = await connect()
            item = invocation()
            channel.assign(item)
            await client.request("GET", NEXT)
            body = json.dumps({"errorMessage": "boom", "errorType": "KeyError", "stackTrace": []}).encode()
            response = await client.request(
                "POST",
                "/2018-06-01/runtime/invocation/req-1/error",
                body,
                ("Lambda-Runtime-Function-Error-Type: Unhandled",),
            )
            assert response.status == 202
            await outcome(item)
            reply = outcome(item).result()
            assert reply.kind == "error" and reply.body == body and reply.error_type == "KeyError"
            # A body that is not JSON: the header names the error.
            second = invocation("req-2")
            channel.assign(second)
            await client.request("GET", NEXT)
            await client.request(
                "POST",
                "/2018-06-01/runtime/invocation/req-2/error",
                b"not json",
                ("Lambda-Runtime-Function-Error-Type: Runtime.Crash",),
            )
            assert outcome(second).result().error_type == "Runtime.Crash"

    run(main())


def test_init_error_fails_the_waiting_invocation() -> None:
    async def main() -> None:
        async with served() as (channel, connect):
            client = await connect()
            item = invocation()
            channel.assign(item)
            body = json.dumps(
                {"errorMessage": "Unable to import module 'app'", "errorType": "Runtime.ImportModuleError"}
            )
            response = await client.request("POST", "/2018-06-01/runtime/init/error", body.encode())
            assert response.status == 202
            await outcome(item)
            reply = outcome(item).result()
            assert reply.kind == "init_error" and reply.error_type == "Runtime.ImportModuleError"
            twice = await client.request("POST", "/2018-06-01/runtime/init/error", body.encode())
            assert twice.status == 403

    run(main())


def test_oversized_response_is_refused_as_aws_does() -> None:
    async def main() -> None:
        async with served() as (channel, connect):
            client = await connect()
            item = invocation()
            channel.assign(item)
            await client.request("GET", NEXT)
            head = (
                "POST /2018-06-01/runtime/invocation/req-1/response HTTP/1.1\r\nHost: x\r\n"
                f"Content-Length: {MAX_RESPONSE_BYTES + 1}\r\n\r\n"
            )
            await client.send(head.encode() + b"x" * 1000)
            response = await client.response()
            assert response.status == 413
            assert json.loads(response.body)["errorType"] == "RequestEntityTooLarge"
            await outcome(item)
            reply = outcome(item).result()
            assert reply.error_type == "Function.ResponseSizeTooLarge" and reply.retire
            assert await client.closed()

    run(main())


def test_large_response_in_many_pieces() -> None:
    async def main() -> None:
        async with served() as (channel, connect):
            client = await connect()
            item = invocation()
            channel.assign(item)
            await client.request("GET", NEXT)
            body = b"[" + b"1," * 500_000 + b"1]"
            response = await client.request(
                "POST", "/2018-06-01/runtime/invocation/req-1/response", body, pieces=50
            )
            assert response.status == 202
            assert outcome(item).result().body == body

    run(main())


def test_extension_logs_and_telemetry_stubs() -> None:
    async def main() -> None:
        async with served() as (channel, connect):
            client = await connect()
            registered = await client.request(
                "POST",
                "/2020-01-01/extension/register",
                b'{"events": ["INVOKE", "SHUTDOWN"]}',
                ("Lambda-Extension-Name: probe",),
            )
            assert registered.status == 200
            assert re.fullmatch(r"[0-9a-f-]{36}", header(registered, "Lambda-Extension-Identifier") or "")
            assert json.loads(registered.body) == {
                "functionName": "fn",
                "functionVersion": "$LATEST",
                "handler": "app.handler",
            }
            for path in ("/2020-08-15/logs", "/2022-07-01/telemetry"):
                subscribed = await client.request("PUT", path, b'{"destination": {}}')
                assert subscribed.status == 200
            failed = await client.request("POST", "/2020-01-01/extension/init/error", b"{}")
            assert failed.status == 202
            unknown = await client.request("GET", "/2018-06-01/runtime/nothing")
            assert unknown.status == 404 and "errorType" in json.loads(unknown.body)
            wrong = await client.request("POST", NEXT, b"")
            assert wrong.status == 405
            extension = await connect()
            event = asyncio.ensure_future(extension.request("GET", "/2020-01-01/extension/event/next"))
            await asyncio.sleep(0.05)
            assert not event.done()
            channel.close()
            shutdown = await event
            assert json.loads(shutdown.body)["eventType"] == "SHUTDOWN"

    run(main())


def test_malformed_request_gets_400_and_the_connection_closes() -> None:
    async def main() -> None:
        async with served() as (_channel, connect):
            client = await connect()
            await client.send(b"GET /2018-06-01/runtime/invocation/next HTTP/1.1\r\nHost : x\r\n\r\n")
            response = await client.response()
            assert response.status == 400
            assert await client.closed()

    run(main())


def test_closing_the_channel_ends_a_long_poll() -> None:
    async def main() -> None:
        async with served() as (channel, connect):
            client = await connect()
            await client.send(f"GET {NEXT} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            await asyncio.sleep(0.05)
            channel.close()
            assert await client.closed()

    run(main())
