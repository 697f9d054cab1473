"""Issue 3 end to end: the real gateway with consumers, auth, limits, the admin API and subscriptions."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.gateway_process import GatewayProcess, running_gateway
from tests.support.upstream import Upstream, echo, free_port, running_upstream

TOKEN = "admin-secret-token"


@pytest.fixture(scope="module")
def upstream() -> Iterator[Upstream]:
    with running_upstream() as server:
        yield server


def policy_config(upstream: Upstream, admin_port: int, db: Path) -> str:
    return f"""
[store]
path = "{db}"

[admin]
listen = "127.0.0.1:{admin_port}"
token = "{TOKEN}"

[consumers.alice]
keys = ["alice-key"]
groups = ["partners"]

[consumers.bob]
keys = ["bob-key"]

[products.billing]
subscription = "approval"

[upstreams.backend]
targets = ["{upstream.addr}"]

[[routes]]
name = "api"
path = "/api/{{proxy+}}"
upstream = "backend"
strip_prefix = "/api"
[routes.plugins.key-auth]
[routes.plugins.rate-limit]
by = "consumer"
rate = "5/m"
burst = 3

[[routes]]
name = "billing"
path = "/billing/{{proxy+}}"
upstream = "backend"
strip_prefix = "/billing"
product = "billing"
[routes.plugins.key-auth]
"""


@pytest.fixture
def gateway(upstream: Upstream, tmp_path: Path) -> Iterator[tuple[GatewayProcess, str]]:
    admin_port = free_port()
    with running_gateway(policy_config(upstream, admin_port, tmp_path / "state.db")) as gw:
        yield gw, f"http://127.0.0.1:{admin_port}"


def admin(base: str, method: str, path: str, json: object | None = None) -> httpx.Response:
    return httpx.request(method, f"{base}{path}", json=json, headers={"Authorization": f"Bearer {TOKEN}"})


def error_message(response: httpx.Response) -> str:
    message: str = response.json()["error"]["message"]
    return message


def eventually(check: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.1)
    raise AssertionError("the condition was not met in time")


def test_key_auth_and_rate_limit(gateway: tuple[GatewayProcess, str]) -> None:
    gw, _ = gateway
    with httpx.Client() as client:
        assert client.get(f"{gw.url}/api/echo").status_code == 401
        assert client.get(f"{gw.url}/api/echo", headers={"apikey": "wrong"}).status_code == 401
        response = client.get(f"{gw.url}/api/echo", headers={"apikey": "alice-key", "X-Consumer-Id": "eve"})
        assert response.status_code == 200
        seen = {name.lower(): value for name, value in echo(response.content)["headers"]}
        assert seen["x-consumer-id"] == "alice"
        assert seen["x-consumer-groups"] == "partners"
        assert "apikey" not in seen
        alice = {"apikey": "alice-key"}
        statuses = [client.get(f"{gw.url}/api/echo", headers=alice).status_code for _ in range(4)]
        assert statuses == [200, 200, 429, 429]
        limited = client.get(f"{gw.url}/api/echo", headers={"apikey": "alice-key"})
        assert limited.json()["error"]["code"] == "rate_limited"
        assert "retry-after" in limited.headers
        # bob has his own bucket
        assert client.get(f"{gw.url}/api/echo", headers={"apikey": "bob-key"}).status_code == 200


def test_admin_api_creates_a_consumer_that_works_and_survives_a_restart(
    gateway: tuple[GatewayProcess, str],
) -> None:
    gw, base = gateway
    assert httpx.get(f"{base}/consumers").status_code == 401
    assert admin(base, "POST", "/consumers", {"name": "carol", "groups": ["staff"]}).status_code == 201
    created = admin(base, "POST", "/consumers/carol/keys", {"key": "carol-key"})
    assert created.status_code == 201, created.text
    headers = {"apikey": "carol-key"}
    eventually(lambda: httpx.get(f"{gw.url}/api/echo", headers=headers).status_code == 200)

    gw.stop()
    gw.start()
    eventually(lambda: httpx.get(f"{gw.url}/api/echo", headers=headers).status_code == 200)


def test_subscription_approval_flow(gateway: tuple[GatewayProcess, str]) -> None:
    gw, base = gateway
    alice = {"apikey": "alice-key"}
    refused = httpx.get(f"{gw.url}/billing/echo", headers=alice)
    assert refused.status_code == 403
    assert refused.json()["error"]["code"] == "subscription_required"
    assert httpx.get(f"{gw.url}/billing/echo").status_code == 401

    requested = admin(base, "POST", "/subscriptions", {"consumer": "alice", "product": "billing"})
    assert requested.status_code == 201, requested.text
    subscription = requested.json()
    assert subscription["state"] == "pending"
    eventually(lambda: "pending" in error_message(httpx.get(f"{gw.url}/billing/echo", headers=alice)))

    approved = admin(base, "POST", f"/subscriptions/{subscription['id']}/approve", {})
    assert approved.status_code == 200, approved.text
    eventually(lambda: httpx.get(f"{gw.url}/billing/echo", headers=alice).status_code == 200)
    # bob never subscribed
    assert httpx.get(f"{gw.url}/billing/echo", headers={"apikey": "bob-key"}).status_code == 403

    revoked = admin(base, "POST", f"/subscriptions/{subscription['id']}/revoke", {})
    assert revoked.status_code == 200
    eventually(lambda: httpx.get(f"{gw.url}/billing/echo", headers=alice).status_code == 403)


def test_admin_config_is_redacted(gateway: tuple[GatewayProcess, str]) -> None:
    _, base = gateway
    response = admin(base, "GET", "/config")
    assert response.status_code == 200
    text = response.text
    assert "alice-key" not in text
    assert TOKEN not in text


def test_admin_reports_rate_limit_state(gateway: tuple[GatewayProcess, str]) -> None:
    gw, base = gateway
    headers = {"apikey": "bob-key"}
    for _ in range(2):
        assert httpx.get(f"{gw.url}/api/echo", headers=headers).status_code == 200
    state = admin(base, "GET", "/rate-limits/api/c:bob")
    assert state.status_code == 200, state.text
    body = state.json()
    assert body["mode"] == "local"
    [limit] = body["limits"]
    assert (limit["burst"], limit["remaining"]) == (3, 1)
    assert body["counters"]["allowed"] >= 2
    missing = admin(base, "GET", "/rate-limits/billing/c:bob")
    assert missing.status_code == 404
    assert missing.json()["error"]["message"] == 'no rate limit on route "billing"'
