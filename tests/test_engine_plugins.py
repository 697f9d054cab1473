"""Plugin phases and Python handlers inside the Cython engine (in-process engine, real sockets)."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import Iterator
from typing import Any

import httpx
import msgspec
import pytest

from gateway._fastpath.balance import Balancer, Target
from gateway._fastpath.http import RouteAction
from gateway._fastpath.proxy import UpstreamPool
from gateway.plugins import Plugin, PluginChain, Request, Response, ResponseHead
from tests.support.engine import EngineThread, running_engine
from tests.support.upstream import Upstream, echo, running_upstream


class Empty(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    pass


class Gate(Plugin):
    """Refuses requests without X-Pass; tags passing ones; records log calls."""

    name = "gate"
    version = "1"
    priority = 100
    Config = Empty
    logged: list[tuple[str, int, int]] = []

    def access(self, request: Request) -> Response | None:
        if request.headers.get("x-pass") != "yes":
            return Response.error(401, "unauthorized", "say the word", [("WWW-Authenticate", "Word")])
        request.headers.set("X-Gate", "passed")
        request.headers.remove("x-pass")
        return None

    def response(self, request: Request, response: ResponseHead) -> None:
        response.headers.set("X-Gate-Response", str(response.status))

    def log(self, request: Request, response: ResponseHead) -> None:
        Gate.logged.append((request.path, response.status, response.bytes_sent))


class SlowGate(Plugin):
    name = "slow-gate"
    version = "1"
    priority = 50
    Config = Empty

    async def _check(self, request: Request) -> Response | None:
        await asyncio.sleep(0.05)
        request.headers.set("X-Slow", "checked")
        return None

    def access(self, request: Request) -> Any:
        return self._check(request)


class Rewriter(Plugin):
    name = "rewriter"
    version = "1"
    priority = 10
    Config = Empty

    def rewrite(self, request: Request) -> None:
        request.path = "/echo/rewritten"
        request.query = "by=plugin"


class Broken(Plugin):
    name = "broken"
    version = "1"
    priority = 1
    Config = Empty

    def access(self, request: Request) -> Response | None:
        raise RuntimeError("boom")


class BrokenResponse(Plugin):
    name = "broken-response"
    version = "1"
    priority = 1
    Config = Empty

    def response(self, request: Request, response: ResponseHead) -> None:
        raise RuntimeError("boom in response")


class WrongPhase(Plugin):
    name = "wrong-phase"
    version = "1"
    priority = 1
    Config = Empty

    def response(self, request: Request, response: ResponseHead) -> None:
        request.headers.set("X-Too-Late", "1")  # PhaseError: the request has gone upstream


async def hello_handler(request: Request, body: bytes) -> Response:
    return Response.json(200, {"method": request.method, "path": request.path, "body": body.decode()})


@pytest.fixture(scope="module")
def upstream() -> Iterator[Upstream]:
    with running_upstream() as server:
        yield server


@pytest.fixture(scope="module")
def engine(upstream: Upstream) -> Iterator[EngineThread]:
    def routes(loop: asyncio.AbstractEventLoop, ticker: Any) -> list[tuple[str, Any]]:
        pool = UpstreamPool("backend", loop, Balancer([Target(upstream.addr)]), ticker)

        def proxy(name: str, *plugins: Plugin) -> RouteAction:
            return RouteAction.proxy(name, pool).with_plugins(PluginChain(plugins))

        return [
            ("/gated/{proxy+}", proxy("gated", Gate(Empty()), SlowGate(Empty()))),
            ("/rewrite", proxy("rewrite", Rewriter(Empty()))),
            ("/broken", proxy("broken", Broken(Empty()))),
            ("/broken-response", proxy("broken-response", BrokenResponse(Empty()))),
            ("/wrong-phase", proxy("wrong-phase", WrongPhase(Empty()))),
            ("/plain", RouteAction.proxy("plain", pool).with_plugins(PluginChain([]))),
            (
                "/static",
                RouteAction.static("static", 200, b"hi", "text/plain", {}).with_plugins(
                    PluginChain([Gate(Empty())])
                ),
            ),
            ("/handler", RouteAction.python_handler("handler", hello_handler)),
        ]

    with running_engine(routes) as running:
        yield running


def test_access_plugin_refuses(engine: EngineThread, upstream: Upstream) -> None:
    before = upstream.requests
    response = httpx.get(f"{engine.url}/gated/echo")
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Word"
    assert response.json()["error"]["code"] == "unauthorized"
    assert response.headers["x-gate-response"] == "401"  # the response phase saw the plugin's answer
    assert upstream.requests == before


def test_access_rewrite_response_and_log_phases(engine: EngineThread) -> None:
    Gate.logged.clear()
    response = httpx.get(f"{engine.url}/gated/echo?q=1", headers={"X-Pass": "yes"})
    assert response.status_code == 200
    seen = {name.lower(): value for name, value in echo(response.content)["headers"]}
    assert seen["x-gate"] == "passed"
    assert seen["x-slow"] == "checked"  # the async plugin ran before proxying
    assert "x-pass" not in seen
    assert echo(response.content)["path"] == "/gated/echo?q=1"
    assert response.headers["x-gate-response"] == "200"
    assert response.headers["x-request-id"] == seen["x-request-id"]
    assert Gate.logged and Gate.logged[-1][:2] == ("/gated/echo", 200)
    assert Gate.logged[-1][2] > 0


def test_async_plugin_with_request_body_and_expect_continue(engine: EngineThread) -> None:
    with socket.create_connection(("127.0.0.1", engine.port), timeout=5) as sock:
        sock.sendall(
            b"POST /gated/echo HTTP/1.1\r\nHost: a\r\nX-Pass: yes\r\nContent-Length: 5\r\n"
            b"Expect: 100-continue\r\n\r\n"
        )
        assert sock.recv(100) == b"HTTP/1.1 100 Continue\r\n\r\n"
        sock.sendall(b"hello")
        data = b""
        while b'"body_sha256"' not in data:
            data += sock.recv(65536)
    assert b'"body_length": 5' in data


def test_refusal_skips_the_body_and_keeps_the_connection(engine: EngineThread) -> None:
    with httpx.Client() as client:
        refused = client.post(f"{engine.url}/gated/echo", content=b"x" * 300_000)
        assert refused.status_code == 401
        ok = client.get(f"{engine.url}/gated/echo", headers={"X-Pass": "yes"})
        assert ok.status_code == 200


def test_rewrite_phase_changes_path_and_query(engine: EngineThread) -> None:
    response = httpx.get(f"{engine.url}/rewrite?x=1")
    assert echo(response.content)["path"] == "/echo/rewritten?by=plugin"


@pytest.mark.parametrize("path", ["/broken", "/broken-response", "/wrong-phase"])
def test_plugin_exception_is_500_with_request_id(engine: EngineThread, path: str) -> None:
    response = httpx.get(f"{engine.url}{path}")
    assert response.status_code == 500
    error = response.json()["error"]
    assert error["code"] == "plugin_error"
    assert response.headers["x-request-id"] in error["message"]
    assert httpx.get(f"{engine.url}/plain/").status_code in (200, 404)  # the engine keeps serving


def test_empty_chain_stays_on_the_fast_path(engine: EngineThread) -> None:
    assert httpx.get(f"{engine.url}/plain").status_code == 200


def test_static_route_with_plugins(engine: EngineThread) -> None:
    assert httpx.get(f"{engine.url}/static").status_code == 401
    response = httpx.get(f"{engine.url}/static", headers={"X-Pass": "yes"})
    assert response.status_code == 200
    assert response.text == "hi"
    assert response.headers["x-gate-response"] == "200"


def test_python_handler_gets_the_whole_body(engine: EngineThread) -> None:
    response = httpx.post(f"{engine.url}/handler", content=b"a" * 400_000)
    assert response.status_code == 200
    body = response.json()
    assert body["method"] == "POST"
    assert len(body["body"]) == 400_000
    assert json.loads(httpx.get(f"{engine.url}/handler").content)["body"] == ""
