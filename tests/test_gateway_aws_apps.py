"""Handlers written for AWS, run unchanged in the gateway's sandboxes behind HTTP routes.

One real gateway process for the module serves three functions whose code is copied, as is, from
tests/functions/handlers/: an aws-lambda-powertools API with the HTTP API resolver (payload 2.0)
and the REST API resolver (payload 1.0), and a FastAPI app behind Mangum on both payloads. The
tests only talk HTTP to the gateway, so they hold whatever the worker <-> instance path becomes.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.gateway_process import running_gateway

HANDLERS = Path(__file__).resolve().parent / "functions" / "handlers"

# What the FastAPI app answers on /greeting and /pixel (tests/functions/handlers/fastapi_mangum).
GREETING = "Grüße aus Köln — 東京 ✓"
PIXEL = b"\x89PNG\r\n\x1a\n" + bytes(range(256))


def world_readable_copy(source: Path) -> Path:
    """A copy of a handler folder the sandbox's user (nobody) can read; pytest's temp dirs are
    private to root."""
    target = Path(tempfile.mkdtemp(prefix="lambdagate-fn-"))
    shutil.copytree(source, target, dirs_exist_ok=True, ignore=shutil.ignore_patterns("__pycache__"))
    for folder, _, files in os.walk(target):
        os.chmod(folder, 0o755)
        for name in files:
            os.chmod(os.path.join(folder, name), 0o644)
    return target


@pytest.fixture(scope="module")
def client() -> Iterator[httpx.Client]:
    powertools = world_readable_copy(HANDLERS / "powertools_api")
    fastapi = world_readable_copy(HANDLERS / "fastapi_mangum")
    config = f"""
[functions.pt_http]
code = "{powertools}"
handler = "powertools_api.http_handler"

[functions.pt_rest]
code = "{powertools}"
handler = "powertools_api.rest_handler"

[functions.fastapi]
code = "{fastapi}"
handler = "fastapi_mangum.handler"

[[routes]]
path = "/pt/{{proxy+}}"
function = "pt_http"
payload = "2.0"

[[routes]]
path = "/ptrest/{{proxy+}}"
function = "pt_rest"
payload = "1.0"

[[routes]]
path = "/fastapi/v2/{{proxy+}}"
function = "fastapi"
payload = "2.0"

[[routes]]
path = "/fastapi/v1/{{proxy+}}"
function = "fastapi"
payload = "1.0"
"""
    try:
        with running_gateway(config) as gateway, httpx.Client(base_url=gateway.url, timeout=15) as http:
            yield http
    finally:
        shutil.rmtree(powertools, ignore_errors=True)
        shutil.rmtree(fastapi, ignore_errors=True)


def set_cookies(response: httpx.Response) -> dict[str, str]:
    """Set-Cookie headers by cookie name (each header kept whole, attributes included)."""
    return {value.split("=", 1)[0]: value for value in response.headers.get_list("set-cookie")}


# --- aws-lambda-powertools, APIGatewayHttpResolver (payload 2.0) ---------------------------------------


def test_powertools_http_path_and_query_parameters(client: httpx.Client) -> None:
    response = client.get(
        "/pt/items/42",
        params=[("verbose", "yes"), ("tag", "a"), ("tag", "b c")],
        headers={"User-Agent": "t/1"},
    )
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    assert response.json() == {
        "item": "42",
        "verbose": "yes",
        "tags": "a,b c",
        "route_key": "ANY /pt/{proxy+}",
        "agent": "t/1",
        "function": "pt_http",
    }


def test_powertools_http_json_body(client: httpx.Client) -> None:
    order = {"customer": "ann", "lines": [{"price": 3, "quantity": 2}, {"price": 10, "quantity": 1}]}
    response = client.post("/pt/orders", json=order)
    assert response.status_code == 201, response.text
    assert response.headers["location"] == "/pt/orders/ann-1"
    assert response.json() == {"customer": "ann", "total": 16}


def test_powertools_http_cookies_and_custom_status(client: httpx.Client) -> None:
    response = client.post("/pt/session")
    assert response.status_code == 202, response.text
    assert response.text == "session opened"
    assert response.headers["content-type"] == "text/plain"
    assert response.headers["x-session-state"] == "open"
    # Payload 2.0 returns cookies in `cookies`: one Set-Cookie header each, attributes intact.
    assert set_cookies(response) == {
        "session": "session=s3cr3t; Path=/; HttpOnly; Secure",
        "theme": "theme=dark",
    }

    echoed = client.get("/pt/whoami", headers={"Cookie": "a=1; b=2"})
    assert echoed.json() == {"cookies": ["a=1", "b=2"], "source_ip": "127.0.0.1"}


def test_powertools_http_unknown_path_is_the_resolvers_404(client: httpx.Client) -> None:
    response = client.get("/pt/nowhere")
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/json"
    assert response.json() == {"statusCode": 404, "message": "Not found"}
    # A method the resolver has no route for, on a known path, is the resolver's answer too.
    assert client.delete("/pt/orders").status_code == 404


# --- aws-lambda-powertools, APIGatewayRestResolver (payload 1.0) ---------------------------------------


def test_powertools_rest_path_and_multi_value_query(client: httpx.Client) -> None:
    response = client.get("/ptrest/items/7", params=[("tag", "x"), ("tag", "y")])
    assert response.status_code == 200, response.text
    assert response.json() == {
        "item": "7",
        "tags": ["x", "y"],
        "resource": "/ptrest/{proxy+}",
        "method": "GET",
    }


def test_powertools_rest_json_body_headers_and_cookie(client: httpx.Client) -> None:
    response = client.post("/ptrest/echo", json={"n": [1, 2, 3], "s": "ü"})
    assert response.status_code == 201, response.text
    assert response.headers["x-echo"] == "yes"
    assert response.json() == {"echo": {"n": [1, 2, 3], "s": "ü"}}
    # Payload 1.0 carries cookies as multiValueHeaders Set-Cookie.
    assert set_cookies(response) == {"seen": "seen=1; Secure"}
    assert client.get("/ptrest/nowhere").status_code == 404


# --- FastAPI behind Mangum, payload 2.0 and 1.0 -------------------------------------------------------

PAYLOADS = pytest.mark.parametrize("version", ["2.0", "1.0"])


def prefix(version: str) -> str:
    return "/fastapi/v2" if version == "2.0" else "/fastapi/v1"


@PAYLOADS
def test_fastapi_sees_the_payload_the_route_names(client: httpx.Client, version: str) -> None:
    response = client.get(f"{prefix(version)}/whoami")
    assert response.status_code == 200, response.text
    assert response.json() == {"payload": version, "has_raw_path": version == "2.0"}


@PAYLOADS
def test_fastapi_path_query_headers_and_cookies(client: httpx.Client, version: str) -> None:
    response = client.get(
        f"{prefix(version)}/items/5",
        params=[("q", "a b&c"), ("tag", "x"), ("tag", "y")],
        headers={"X-Client-Tag": "blue", "Cookie": "k=v; z=9"},
    )
    assert response.status_code == 200, response.text
    assert response.json() == {
        "item_id": 5,
        "q": "a b&c",
        "tags": ["x", "y"],
        "cookies": {"k": "v", "z": "9"},
        "client_tag": "blue",
        "client": "127.0.0.1",
    }
    invalid = client.get(f"{prefix(version)}/items/not-a-number")
    assert invalid.status_code == 422
    assert invalid.json()["detail"][0]["loc"] == ["path", "item_id"]


@PAYLOADS
def test_fastapi_json_body_status_header_and_cookie(client: httpx.Client, version: str) -> None:
    response = client.post(f"{prefix(version)}/orders", json={"sku": "tea-1", "quantity": 3})
    assert response.status_code == 201, response.text
    assert response.json() == {"sku": "tea-1", "quantity": 3}
    assert response.headers["location"] == "/orders/tea-1"
    assert set_cookies(response) == {"last_order": "last_order=tea-1; HttpOnly; Path=/; SameSite=lax"}

    rejected = client.post(f"{prefix(version)}/orders", json={"sku": "tea-1", "quantity": 0})
    assert rejected.status_code == 422
    assert rejected.json()["detail"][0]["loc"] == ["body", "quantity"]


@PAYLOADS
def test_fastapi_error_status_with_header(client: httpx.Client, version: str) -> None:
    response = client.get(f"{prefix(version)}/teapot")
    assert response.status_code == 418
    assert response.headers["x-reason"] == "short and stout"
    assert response.json() == {"detail": "I'm a teapot"}
    missing = client.get(f"{prefix(version)}/nowhere")
    assert missing.status_code == 404
    assert missing.json() == {"detail": "Not Found"}


@PAYLOADS
def test_fastapi_non_ascii_and_binary_bodies(client: httpx.Client, version: str) -> None:
    text = client.get(f"{prefix(version)}/greeting")
    assert text.status_code == 200
    assert text.headers["content-type"] == "text/plain; charset=utf-8"
    assert text.content == GREETING.encode()

    image = client.get(f"{prefix(version)}/pixel")
    assert image.status_code == 200
    assert image.headers["content-type"] == "image/png"
    assert image.content == PIXEL

    payload = bytes(range(256)) * 4
    reversed_body = client.post(
        f"{prefix(version)}/reverse", content=payload, headers={"Content-Type": "application/octet-stream"}
    )
    assert reversed_body.status_code == 200
    assert reversed_body.content == payload[::-1]


def test_fastapi_sees_the_decoded_non_ascii_path_on_payload_2(client: httpx.Client) -> None:
    response = client.get("/fastapi/v2/users/J%C3%BCrgen%20M")
    assert response.status_code == 200, response.text
    assert response.json() == {"name": "Jürgen M"}
