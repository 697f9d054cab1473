"""Functions behind HTTP routes, through the real gateway process (issue 4's example config)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.gateway_process import GatewayProcess, running_gateway

ROOT = Path(__file__).resolve().parent.parent
HELLO = ROOT / "examples" / "functions" / "hello"


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    broken = tmp_path_factory.mktemp("broken")
    (broken / "app.py").write_text("def handler(event, context):\n    raise ValueError('no luck')\n")
    config = f"""
[functions.hello]
code = "{HELLO}"
handler = "app.handler"
runtime = "python"
timeout = "3s"
memory = "128MiB"
concurrency = 8
provisioned = 1
idle_timeout = "10m"
env = {{ GREETING = "hello" }}

[functions.broken]
code = "{broken}"
handler = "app.handler"

[[routes]]
path = "/hello/{{name}}"
methods = ["GET", "POST"]
function = "hello"
payload = "2.0"

[[routes]]
path = "/rest/hello/{{name}}"
function = "hello"
payload = "1.0"

[[routes]]
path = "/broken"
function = "broken"
"""
    with running_gateway(config) as gw:
        yield gw


def test_http_api_event_reaches_the_function(gateway: GatewayProcess) -> None:
    response = httpx.get(f"{gateway.url}/hello/world", timeout=10)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["message"] == "hello, world!"
    assert len(body["request_id"]) == 36  # Lambda's request ids are UUIDs
    posted = httpx.post(f"{gateway.url}/hello/there", content=b'{"x": 1}', timeout=10)
    assert posted.json()["message"] == "hello, there!"


def test_rest_api_payload(gateway: GatewayProcess) -> None:
    response = httpx.get(f"{gateway.url}/rest/hello/rest", timeout=10)
    assert response.status_code == 200
    assert response.json()["message"] == "hello, rest!"


def test_function_error_is_api_gateways_500(gateway: GatewayProcess) -> None:
    response = httpx.get(f"{gateway.url}/broken", timeout=10)
    assert response.status_code == 500
    assert response.json() == {"message": "Internal Server Error"}
    assert httpx.get(f"{gateway.url}/hello/again", timeout=10).status_code == 200  # still serving
