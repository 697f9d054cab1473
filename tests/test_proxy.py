"""The real gateway proxying to a real upstream: headers, paths, bodies, errors."""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import pytest

from tests.support.gateway_process import GatewayProcess, raw_exchange, running_gateway
from tests.support.upstream import Upstream, echo, running_upstream


@pytest.fixture(scope="module")
def upstream() -> Iterator[Upstream]:
    with running_upstream() as server:
        yield server


@pytest.fixture(scope="module")
def gateway(upstream: Upstream) -> Iterator[GatewayProcess]:
    config = f"""
[upstreams.backend]
targets = ["{upstream.addr}"]

[[routes]]
name = "api"
path = "/api/{{proxy+}}"
methods = ["GET", "POST", "PUT", "DELETE"]
upstream = "backend"
strip_prefix = "/api"

[[routes]]
name = "rewrite"
path = "/users/{{id}}/profile"
upstream = "backend"
rewrite = "/echo/people/{{id}}"

[[routes]]
name = "keep-host"
path = "/keep-host"
upstream = "backend"
preserve_host = true
rewrite = "/echo"

[[routes]]
path = "/health"
static = {{ status = 200, body = "ok" }}
"""
    with running_gateway(config) as gw:
        yield gw


def headers_of(body: dict[str, object]) -> dict[str, list[str]]:
    result: dict[str, list[str]] = {}
    for name, value in body["headers"]:  # type: ignore[attr-defined]
        result.setdefault(name.lower(), []).append(value)
    return result


def test_static_route(gateway: GatewayProcess) -> None:
    response = httpx.get(f"{gateway.url}/health")
    assert response.status_code == 200
    assert response.text == "ok"
    assert "date" in response.headers


def test_get_is_proxied_with_prefix_stripped_and_query_kept(gateway: GatewayProcess) -> None:
    response = httpx.get(f"{gateway.url}/api/echo/a/b?x=1&y=%20z")
    assert response.status_code == 200
    body = echo(response.content)
    assert body["method"] == "GET"
    assert body["path"] == "/echo/a/b?x=1&y=%20z"


def test_forwarding_headers(gateway: GatewayProcess, upstream: Upstream) -> None:
    response = httpx.get(
        f"{gateway.url}/api/echo", headers={"X-Forwarded-For": "203.0.113.9", "X-Custom": "kept"}
    )
    seen = headers_of(echo(response.content))
    assert seen["x-forwarded-for"] == ["203.0.113.9, 127.0.0.1"]
    assert seen["x-forwarded-proto"] == ["http"]
    assert seen["x-forwarded-host"] == [f"127.0.0.1:{gateway.port}"]
    assert seen["host"] == [upstream.addr]
    assert seen["x-custom"] == ["kept"]
    request_id = seen["x-request-id"][0]
    assert len(request_id) == 32
    assert response.headers["x-request-id"] == request_id


def test_request_id_is_kept_when_present(gateway: GatewayProcess) -> None:
    response = httpx.get(f"{gateway.url}/api/echo", headers={"X-Request-Id": "abc-123"})
    assert headers_of(echo(response.content))["x-request-id"] == ["abc-123"]
    assert response.headers["x-request-id"] == "abc-123"


def test_hop_by_hop_headers_are_dropped(gateway: GatewayProcess) -> None:
    request = (
        b"GET /api/echo HTTP/1.1\r\nHost: example\r\nConnection: keep-alive, X-Secret-Hop\r\n"
        b"X-Secret-Hop: 1\r\nKeep-Alive: timeout=5\r\nTE: trailers\r\nUpgrade: foo\r\n"
        b"Proxy-Connection: keep-alive\r\nX-Visible: yes\r\n\r\n"
    )
    with httpx.Client() as _:
        pass
    raw = raw_exchange(gateway.port, request, read_until_close=False)
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200")
    seen = headers_of(json.loads(body))
    for name in ("connection", "keep-alive", "te", "upgrade", "proxy-connection", "x-secret-hop"):
        assert name not in seen, name
    assert seen["x-visible"] == ["yes"]


def test_rewrite_with_path_parameters(gateway: GatewayProcess) -> None:
    response = httpx.get(f"{gateway.url}/users/42/profile?full=1")
    assert echo(response.content)["path"] == "/echo/people/42?full=1"


def test_preserve_host(gateway: GatewayProcess) -> None:
    response = httpx.get(f"{gateway.url}/keep-host", headers={"Host": "public.example.com"})
    assert headers_of(echo(response.content))["host"] == ["public.example.com"]


def test_post_body_is_forwarded(gateway: GatewayProcess) -> None:
    payload = b"x" * 100_000
    response = httpx.post(f"{gateway.url}/api/echo", content=payload)
    assert response.status_code == 200, response.text
    body = echo(response.content)
    assert body["method"] == "POST"
    assert body["body_length"] == len(payload)


def test_unknown_path_is_404_json(gateway: GatewayProcess) -> None:
    response = httpx.get(f"{gateway.url}/nowhere")
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/json"
    error = response.json()["error"]
    assert error["status"] == 404
    assert error["code"] == "not_found"


def test_wrong_method_is_405_with_allow(gateway: GatewayProcess) -> None:
    response = httpx.patch(f"{gateway.url}/api/echo")
    assert response.status_code == 405
    assert response.headers["allow"] == "DELETE, GET, HEAD, POST, PUT"
    assert response.json()["error"]["code"] == "method_not_allowed"


def test_head_request_gets_no_body(gateway: GatewayProcess) -> None:
    raw = raw_exchange(
        gateway.port, b"HEAD /api/download?size=50 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    head, _, rest = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200")
    assert b"Content-Length: 50" in head
    assert rest == b""


def test_many_requests_reuse_upstream_connections(gateway: GatewayProcess, upstream: Upstream) -> None:
    before = upstream.connections
    with httpx.Client() as client:
        for _ in range(50):
            assert client.get(f"{gateway.url}/api/echo").status_code == 200
    assert upstream.connections - before <= 2
