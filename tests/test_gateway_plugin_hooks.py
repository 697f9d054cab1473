"""Engine hooks plugins rely on: a per-request body limit and keeping the request id internal."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator

import httpx
import pytest

from tests.support.gateway_process import GatewayProcess, running_gateway
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
name = "small"
path = "/small/{{proxy+}}"
upstream = "backend"
strip_prefix = "/small"
[routes.plugins.request-size-limit]
allowed_payload_size = "1KiB"

[[routes]]
name = "quiet-id"
path = "/quiet/{{proxy+}}"
upstream = "backend"
strip_prefix = "/quiet"
[routes.plugins.request-id]
echo_downstream = false
"""
    with running_gateway(config) as gw:
        yield gw


def chunked_post(port: int, path: str, chunks: list[bytes]) -> bytes:
    body = b"".join(b"%x\r\n%s\r\n" % (len(chunk), chunk) for chunk in chunks) + b"0\r\n\r\n"
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(f"POST {path} HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n".encode() + body)
        data = b""
        try:
            while chunk := sock.recv(65536):
                data += chunk
                if b"\r\n\r\n" in data and (b'"error"' in data or b"body_sha256" in data):
                    break
        except ConnectionResetError:
            pass
        return data


def test_request_size_limit_caps_chunked_bodies(gateway: GatewayProcess, upstream: Upstream) -> None:
    before = upstream.requests
    refused = chunked_post(gateway.port, "/small/echo", [b"x" * 600, b"y" * 600])
    assert refused.startswith(b"HTTP/1.1 413 "), refused[:200]
    body = refused.partition(b"\r\n\r\n")[2]
    assert json.loads(body)["error"]["code"] == "content_too_large"
    accepted = chunked_post(gateway.port, "/small/echo", [b"x" * 300, b"y" * 300])
    assert accepted.startswith(b"HTTP/1.1 200 ")
    assert upstream.requests == before + 1


def test_request_id_can_stay_internal(gateway: GatewayProcess) -> None:
    response = httpx.get(f"{gateway.url}/quiet/echo")
    assert response.status_code == 200
    assert "x-request-id" not in response.headers
    seen = {name.lower(): value for name, value in echo(response.content)["headers"]}
    assert len(seen["x-request-id"]) >= 16  # the upstream still gets one
