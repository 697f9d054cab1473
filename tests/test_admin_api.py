"""The admin API, called through AdminApp.handle (no sockets), on both store backends."""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Awaitable, Callable
from typing import Any

import bcrypt
import msgspec
import pytest

from gateway import __version__
from gateway.admin import AdminApp
from gateway.config import parse_config
from gateway.plugins import Response
from gateway.store.base import StateStore
from gateway.store.redis_state import RedisStateStore
from tests.store_backends import StoreBackend, store_backend_fixture  # noqa: F401

TOKEN = "admin-token-123"
AUTH = [("Authorization", f"Bearer {TOKEN}")]


class _Anything:
    def __eq__(self, other: object) -> bool:
        return True

    def __hash__(self) -> int:
        return 0


ANY: Any = _Anything()

CONFIG_TOML = """
[store]
redis = "redis://:hunter2@127.0.0.1:6379/0"

[admin]
token = "admin-token-123"

[consumers.carol]
keys = ["carol-secret-key"]
groups = ["partners"]

[products.billing]
subscription = "approval"

[products.docs]
subscription = "open"

[upstreams.backend]
targets = ["127.0.0.1:9000"]

[[routes]]
path = "/api/{proxy+}"
upstream = "backend"
product = "billing"
"""


def config_dict() -> dict[str, Any]:
    config: dict[str, Any] = msgspec.to_builtins(parse_config(CONFIG_TOML))
    return config


class Admin:
    """An AdminApp plus helpers that send a request and decode the JSON answer."""

    def __init__(self, app: AdminApp) -> None:
        self.app = app

    async def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        query: str = "",
        headers: list[tuple[str, str]] | None = None,
        raw: bytes | None = None,
    ) -> tuple[int, Any, Response]:
        payload = raw if raw is not None else (b"" if body is None else json.dumps(body).encode())
        response = await self.app.handle(method, path, query, AUTH if headers is None else headers, payload)
        decoded = json.loads(response.body) if response.body else None
        return response.status, decoded, response

    async def error(self, method: str, path: str, body: Any = None, **kwargs: Any) -> tuple[int, str, str]:
        status, decoded, _ = await self.call(method, path, body, **kwargs)
        error = decoded["error"]
        assert error["status"] == status
        return status, error["code"], error["message"]


class Calls:
    def __init__(self) -> None:
        self.purges: list[tuple[str | None, str | None]] = []
        self.limits: list[tuple[str, str]] = []

    async def purge(self, key: str | None, prefix: str | None) -> int:
        self.purges.append((key, prefix))
        return 3

    def limit_state(self, route: str, key: str) -> dict[str, Any]:
        if route != "api":
            raise KeyError(f'route "{route}" has no rate limit')
        self.limits.append((route, key))
        return {"limit": 100, "remaining": 42, "reset": 0.5}


def make_app(
    store: StateStore, calls: Calls | None = None, clock: Callable[[], float] | None = None
) -> Admin:
    calls = calls or Calls()
    return Admin(
        AdminApp(
            store=store,
            token=TOKEN,
            config_view=config_dict,
            purge_cache=calls.purge,
            rate_limit_state=calls.limit_state,
            bcrypt_rounds=4,  # the minimum: hashing speed is not what these tests check
            **({"clock": clock} if clock else {}),
        )
    )


def run(backend: StoreBackend, scenario: Callable[[Admin, StateStore], Awaitable[None]]) -> None:
    async def main() -> None:
        store = backend.open()
        try:
            await scenario(make_app(store), store)
        finally:
            await store.close()

    asyncio.run(main())


# --- authentication and routing ----------------------------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [
        [],
        [("Authorization", "Bearer wrong-token")],
        [("Authorization", f"Bearer {TOKEN}x")],
        [("Authorization", f"Basic {TOKEN}")],
        [("Authorization", "Bearer")],
    ],
)
def test_requests_without_the_right_bearer_token_are_401(
    store_backend: StoreBackend, headers: list[tuple[str, str]]
) -> None:
    async def scenario(admin: Admin, store: StateStore) -> None:
        status, decoded, response = await admin.call("GET", "/consumers", headers=headers)
        assert status == 401
        assert decoded["error"]["code"] == "unauthorized"
        assert ("WWW-Authenticate", 'Bearer realm="lambdagate-admin"') in response.headers
        assert ("Content-Type", "application/json") in response.headers
        # Even a request that would change state changes nothing.
        status, _, _ = await admin.call("POST", "/consumers", {"name": "eve"}, headers=headers)
        assert status == 401
        assert await store.list_consumers() == []

    run(store_backend, scenario)


def test_header_name_is_case_insensitive_and_token_required(store_backend: StoreBackend) -> None:
    async def scenario(admin: Admin, store: StateStore) -> None:
        status, _, _ = await admin.call("GET", "/consumers", headers=[("authorization", f"bearer {TOKEN}")])
        assert status == 200
        with pytest.raises(ValueError, match="non-empty bearer token"):
            AdminApp(store=store, token="", config_view=dict, purge_cache=None, rate_limit_state=None)

    run(store_backend, scenario)


def test_unknown_paths_are_404_and_wrong_methods_405_with_allow(store_backend: StoreBackend) -> None:
    async def scenario(admin: Admin, store: StateStore) -> None:
        assert await admin.error("GET", "/nope") == (404, "not_found", "no admin endpoint at /nope")
        assert (await admin.error("GET", "/consumers/a/b/c/d"))[0] == 404
        status, decoded, response = await admin.call("PUT", "/consumers")
        assert (status, decoded["error"]["code"]) == (405, "method_not_allowed")
        assert ("Allow", "GET, POST") in response.headers
        assert decoded["error"]["message"] == "PUT is not allowed on /consumers; use GET, POST"
        _, _, response = await admin.call("POST", "/consumers/alice")
        assert ("Allow", "DELETE, GET, PATCH") in response.headers
        _, _, response = await admin.call("GET", "/subscriptions/x/approve")
        assert ("Allow", "POST") in response.headers

    run(store_backend, scenario)


# --- consumers ---------------------------------------------------------------------------------


def test_consumer_crud(store_backend: StoreBackend) -> None:
    async def scenario(admin: Admin, store: StateStore) -> None:
        status, created, _ = await admin.call(
            "POST", "/consumers", {"name": "alice", "groups": ["partners"], "metadata": {"tier": "gold"}}
        )
        assert status == 201
        assert (created["name"], created["groups"], created["metadata"]) == (
            "alice",
            ["partners"],
            {"tier": "gold"},
        )
        assert (await admin.call("POST", "/consumers", {"name": "bob"}))[0] == 201

        status, listed, _ = await admin.call("GET", "/consumers")
        assert status == 200
        assert [c["name"] for c in listed["data"]] == ["alice", "bob"]
        status, fetched, _ = await admin.call("GET", "/consumers/alice")
        assert (status, fetched) == (200, created)

        status, patched, _ = await admin.call("PATCH", "/consumers/alice", {"groups": ["staff"]})
        assert (status, patched["groups"], patched["metadata"]) == (200, ["staff"], {"tier": "gold"})
        consumer = await store.get_consumer("alice")
        assert consumer is not None and consumer.groups == ("staff",)

        status, body, response = await admin.call("DELETE", "/consumers/alice")
        assert (status, body, response.body) == (204, None, b"")
        assert await admin.error("GET", "/consumers/alice") == (404, "not_found", 'no consumer named "alice"')
        assert (await admin.error("DELETE", "/consumers/alice"))[0] == 404
        assert (await admin.error("PATCH", "/consumers/alice", {"groups": []}))[0] == 404

    run(store_backend, scenario)


def test_consumer_conflicts(store_backend: StoreBackend) -> None:
    async def scenario(admin: Admin, store: StateStore) -> None:
        await admin.call("POST", "/consumers", {"name": "alice"})
        assert await admin.error("POST", "/consumers", {"name": "alice"}) == (
            409,
            "conflict",
            'consumer "alice" already exists',
        )
        # carol is declared in the config file: the admin API does not shadow or edit her.
        assert await admin.error("POST", "/consumers", {"name": "carol"}) == (
            409,
            "conflict",
            'consumer "carol" is already declared in the config file',
        )
        status, code, message = await admin.error("POST", "/consumers/carol/keys")
        assert (status, code) == (409, "conflict")
        assert "declared in the config file" in message

    run(store_backend, scenario)


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"", "request body is empty; expected a JSON object (`name`, `groups`, `metadata`)"),
        (b"{", "request body is not valid JSON: "),
        (b"[]", "invalid request body: expected `object`, got `array`"),
        (b"{}", "invalid request body: missing required field `name`"),
        (b'{"name": 5}', "invalid request body: expected `str`, got `int` at `name`"),
        (
            b'{"name": "a", "groups": ["x", 1]}',
            "invalid request body: expected `str`, got `int` at `groups[1]`",
        ),
        (
            b'{"name": "a", "metadata": {"k": 1}}',
            "invalid request body: expected `str`, got `int` at `metadata[...]`",
        ),
        (b'{"name": "a", "nmae": "b"}', "invalid request body: unknown field `nmae`"),
        (b'{"name": "a b"}', "`name`: invalid consumer name 'a b'"),
        (b'{"name": "a", "groups": ["x,y"]}', "`groups[0]`: must be non-empty without commas or whitespace"),
        (b'{"name": "a", "metadata": {"k": "v\\r\\nX: y"}}', "`metadata.k`: must not contain CR, LF or NUL"),
    ],
)
def test_bad_consumer_bodies_are_400_naming_the_field(
    store_backend: StoreBackend, raw: bytes, message: str
) -> None:
    async def scenario(admin: Admin, store: StateStore) -> None:
        status, code, got = await admin.error("POST", "/consumers", raw=raw)
        assert (status, code) == (400, "invalid_request")
        assert got.startswith(message), got
        assert await store.list_consumers() == []

    run(store_backend, scenario)


# --- credentials -------------------------------------------------------------------------------


def test_generated_api_key_is_shown_once_and_stored_hashed(store_backend: StoreBackend) -> None:
    async def scenario(admin: Admin, store: StateStore) -> None:
        await admin.call("POST", "/consumers", {"name": "alice"})
        status, created, _ = await admin.call("POST", "/consumers/alice/keys")
        assert status == 201
        key = created["key"]
        assert len(key) >= 32
        assert created["consumer"] == "alice"
        (stored,) = await store.list_api_keys("alice")
        assert stored.id == created["id"]
        assert stored.key_sha256 == hashlib.sha256(key.encode()).hexdigest()
        snapshot_text = msgspec.json.encode(await store.snapshot())
        assert key.encode() not in snapshot_text  # only the digest is stored

        status, listed, _ = await admin.call("GET", "/consumers/alice/keys")
        assert status == 200
        assert listed["data"] == [
            {"id": created["id"], "consumer": "alice", "created_at": created["created_at"]}
        ]

        # Another generated key differs.
        _, second, _ = await admin.call("POST", "/consumers/alice/keys", {})
        assert second["key"] != key

    run(store_backend, scenario)


def test_given_keys_and_key_digests(store_backend: StoreBackend) -> None:
    async def scenario(admin: Admin, store: StateStore) -> None:
        await admin.call("POST", "/consumers", {"name": "alice"})
        await admin.call("POST", "/consumers", {"name": "bob"})
        status, created, _ = await admin.call("POST", "/consumers/alice/keys", {"key": "alice-key"})
        assert (status, created["key"]) == (201, "alice-key")
        digest = hashlib.sha256(b"bob-key").hexdigest()
        status, created, _ = await admin.call(
            "POST", "/consumers/bob/keys", {"key_sha256": f"sha256:{digest.upper()}"}
        )
        assert status == 201
        assert "key" not in created  # nothing to show: only the digest was given
        assert [k.key_sha256 for k in await store.list_api_keys("bob")] == [digest]

        assert await admin.error("POST", "/consumers/bob/keys", {"key": "alice-key"}) == (
            409,
            "conflict",
            "this API key is already registered",
        )
        for body, message in [
            ({"key": ""}, "`key`: must be non-empty without spaces or control characters"),
            ({"key": "has space"}, "`key`: must be non-empty without spaces or control characters"),
            ({"key": "a", "key_sha256": digest}, "give `key` or `key_sha256`, not both"),
            ({"key_sha256": "sha256:abc"}, "`key_sha256`: expected 64 hex digits"),
            ({"key": 1}, "invalid request body: expected `str | null`, got `int` at `key`"),
        ]:
            status, code, got = await admin.error("POST", "/consumers/alice/keys", body)
            assert (status, code) == (400, "invalid_request")
            assert got.startswith(message), got
        assert (await admin.error("POST", "/consumers/nobody/keys"))[:2] == (404, "not_found")

    run(store_backend, scenario)


def test_delete_api_key(store_backend: StoreBackend) -> None:
    async def scenario(admin: Admin, store: StateStore) -> None:
        await admin.call("POST", "/consumers", {"name": "alice"})
        await admin.call("POST", "/consumers", {"name": "bob"})
        _, created, _ = await admin.call("POST", "/consumers/alice/keys")
        assert await admin.error("DELETE", f"/consumers/bob/keys/{created['id']}") == (
            404,
            "not_found",
            f'consumer "bob" has no API key with id "{created["id"]}"',
        )
        status, _, _ = await admin.call("DELETE", f"/consumers/alice/keys/{created['id']}")
        assert status == 204
        assert await store.list_api_keys("alice") == []
        assert (await admin.error("DELETE", f"/consumers/alice/keys/{created['id']}"))[0] == 404

    run(store_backend, scenario)


def test_basic_auth_passwords_are_hashed_with_bcrypt(store_backend: StoreBackend) -> None:
    async def scenario(admin: Admin, store: StateStore) -> None:
        await admin.call("POST", "/consumers", {"name": "alice"})
        status, created, _ = await admin.call(
            "POST", "/consumers/alice/basic-auth", {"username": "alice", "password": "correct horse"}
        )
        assert status == 201
        assert set(created) == {"id", "consumer", "username", "created_at"}  # no hash in the answer
        (stored,) = await store.list_basic_auth("alice")
        assert stored.password_hash.startswith("$2b$04$")
        assert bcrypt.checkpw(b"correct horse", stored.password_hash.encode())
        assert not bcrypt.checkpw(b"wrong horse", stored.password_hash.encode())

        status, listed, _ = await admin.call("GET", "/consumers/alice/basic-auth")
        assert (status, listed["data"]) == (200, [created])
        assert await admin.error(
            "POST", "/consumers/alice/basic-auth", {"username": "alice", "password": "x"}
        ) == (
            409,
            "conflict",
            'basic-auth username "alice" is already taken',
        )
        status, _, _ = await admin.call("DELETE", f"/consumers/alice/basic-auth/{created['id']}")
        assert status == 204
        assert await store.list_basic_auth("alice") == []

    run(store_backend, scenario)


def test_basic_auth_accepts_hashes_and_refuses_bad_input(store_backend: StoreBackend) -> None:
    bcrypt_hash = bcrypt.hashpw(b"pw", bcrypt.gensalt(rounds=4)).decode()

    async def scenario(admin: Admin, store: StateStore) -> None:
        await admin.call("POST", "/consumers", {"name": "alice"})
        status, _, _ = await admin.call(
            "POST", "/consumers/alice/basic-auth", {"username": "u1", "password_hash": bcrypt_hash}
        )
        assert status == 201
        assert [c.password_hash for c in await store.list_basic_auth("alice")] == [bcrypt_hash]
        for body, message in [
            ({"username": "u2"}, "give exactly one of `password` or `password_hash`"),
            ({"username": "u2", "password": "a", "password_hash": bcrypt_hash}, "give exactly one of"),
            ({"username": "u2", "password_hash": "plain"}, "`password_hash`: expected a bcrypt"),
            ({"username": "a:b", "password": "pw"}, "`username`: must be non-empty and contain no colon"),
            ({"username": "u2", "password": "x" * 73}, "`password`: bcrypt accepts at most 72 bytes"),
            ({"username": "u2", "password": ""}, "`password`: must not be empty"),
            ({"password": "pw"}, "invalid request body: missing required field `username`"),
        ]:
            status, code, got = await admin.error("POST", "/consumers/alice/basic-auth", body)
            assert (status, code) == (400, "invalid_request")
            assert got.startswith(message), got
        assert len(await store.list_basic_auth("alice")) == 1

    run(store_backend, scenario)


def test_jwt_subjects(store_backend: StoreBackend) -> None:
    async def scenario(admin: Admin, store: StateStore) -> None:
        await admin.call("POST", "/consumers", {"name": "alice"})
        status, created, _ = await admin.call("POST", "/consumers/alice/jwt", {"subject": "user-42"})
        assert (status, created["subject"], created["consumer"]) == (201, "user-42", "alice")
        status, listed, _ = await admin.call("GET", "/consumers/alice/jwt")
        assert listed["data"] == [created]
        assert (await admin.error("POST", "/consumers/alice/jwt", {"subject": "user-42"}))[0] == 409
        assert (await admin.error("POST", "/consumers/alice/jwt", {"subject": ""}))[0] == 400
        assert (await admin.call("DELETE", f"/consumers/alice/jwt/{created['id']}"))[0] == 204
        assert await store.list_jwt_subjects("alice") == []

    run(store_backend, scenario)


def test_percent_encoded_path_segments_are_decoded(store_backend: StoreBackend) -> None:
    async def scenario(admin: Admin, store: StateStore) -> None:
        await admin.call("POST", "/consumers", {"name": "al~ice.x"})
        status, fetched, _ = await admin.call("GET", "/consumers/al%7Eice.x")
        assert (status, fetched["name"]) == (200, "al~ice.x")

    run(store_backend, scenario)


# --- subscriptions -----------------------------------------------------------------------------


def test_subscription_workflow_over_the_api(store_backend: StoreBackend) -> None:
    async def scenario(admin: Admin, store: StateStore) -> None:
        await admin.call("POST", "/consumers", {"name": "alice"})
        status, requested, _ = await admin.call(
            "POST", "/subscriptions", {"consumer": "alice", "product": "billing", "reason": "invoices"}
        )
        assert status == 201
        assert (requested["state"], requested["requested_by"], requested["reason"]) == (
            "pending",
            "admin",
            "invoices",
        )

        status, pending, _ = await admin.call("GET", "/subscriptions", query="state=pending")
        assert (status, [s["id"] for s in pending["data"]]) == (200, [requested["id"]])
        assert (await admin.call("GET", "/subscriptions", query="state=approved"))[1]["data"] == []

        status, approved, _ = await admin.call(
            "POST", f"/subscriptions/{requested['id']}/approve", {"by": "root", "reason": "contract signed"}
        )
        assert status == 200
        assert (approved["state"], approved["decided_by"], approved["reason"]) == (
            "approved",
            "root",
            "contract signed",
        )
        status, code, message = await admin.error("POST", f"/subscriptions/{requested['id']}/approve")
        assert (status, code) == (409, "conflict")
        assert message == (
            f"subscription {requested['id']} is approved; only a pending subscription can become approved"
        )
        assert (await admin.error("POST", f"/subscriptions/{requested['id']}/reject"))[0] == 409
        assert (await admin.error("POST", "/subscriptions", {"consumer": "alice", "product": "billing"}))[
            0
        ] == 409

        status, revoked, _ = await admin.call("POST", f"/subscriptions/{requested['id']}/revoke")
        assert (status, revoked["state"], revoked["decided_by"]) == (200, "revoked", "admin")
        status, fetched, _ = await admin.call("GET", f"/subscriptions/{requested['id']}")
        assert (status, fetched) == (200, revoked)

        _, again, _ = await admin.call("POST", "/subscriptions", {"consumer": "alice", "product": "billing"})
        status, rejected, _ = await admin.call(
            "POST", f"/subscriptions/{again['id']}/reject", {"reason": "no"}
        )
        assert (status, rejected["state"], rejected["reason"]) == (200, "rejected", "no")
        status, listed, _ = await admin.call("GET", "/subscriptions", query="consumer=alice&product=billing")
        assert sorted(s["state"] for s in listed["data"]) == ["rejected", "revoked"]

    run(store_backend, scenario)


def test_subscription_errors(store_backend: StoreBackend) -> None:
    async def scenario(admin: Admin, store: StateStore) -> None:
        await admin.call("POST", "/consumers", {"name": "alice"})
        assert await admin.error("POST", "/subscriptions", {"consumer": "alice", "product": "payroll"}) == (
            404,
            "not_found",
            'no product named "payroll" (configured: "billing", "docs")',
        )
        assert await admin.error("POST", "/subscriptions", {"consumer": "mallory", "product": "billing"}) == (
            404,
            "not_found",
            'no consumer named "mallory"',
        )
        assert await admin.error("POST", "/subscriptions", {"consumer": "alice"}) == (
            400,
            "invalid_request",
            "invalid request body: missing required field `product`",
        )
        assert await admin.error("GET", "/subscriptions/nope") == (
            404,
            "not_found",
            'no subscription with id "nope"',
        )
        assert await admin.error("POST", "/subscriptions/nope/approve") == (
            404,
            "not_found",
            'no subscription with id "nope"',
        )
        assert await admin.error("GET", "/subscriptions", query="state=approvd") == (
            400,
            "invalid_request",
            "query `state`: 'approvd' is not one of pending, approved, rejected, revoked",
        )
        assert await store.list_subscriptions() == []

    run(store_backend, scenario)


def test_config_consumers_subscribe_and_open_products_approve_at_once(store_backend: StoreBackend) -> None:
    async def scenario(admin: Admin, store: StateStore) -> None:
        status, requested, _ = await admin.call(
            "POST", "/subscriptions", {"consumer": "carol", "product": "billing"}
        )
        assert (status, requested["state"]) == (201, "pending")
        status, opened, _ = await admin.call(
            "POST", "/subscriptions", {"consumer": "carol", "product": "docs"}
        )
        assert (status, opened["state"]) == (201, "approved")

    run(store_backend, scenario)


# --- cache, rate limits, config, status --------------------------------------------------------


def test_cache_purge_calls_the_cache(store_backend: StoreBackend) -> None:
    async def main() -> None:
        store = store_backend.open()
        calls = Calls()
        admin = make_app(store, calls)
        try:
            assert await admin.call("POST", "/cache/purge", {"prefix": "/api/"}) == (200, {"purged": 3}, ANY)
            assert (await admin.call("POST", "/cache/purge", {"key": "abc"}))[:2] == (200, {"purged": 3})
            assert calls.purges == [(None, "/api/"), ("abc", None)]
            for body in ({}, {"key": "a", "prefix": "/"}):
                status, code, message = await admin.error("POST", "/cache/purge", body)
                assert (status, code) == (400, "invalid_request")
                assert message.startswith("give exactly one of `key` or `prefix`")
            assert len(calls.purges) == 2

            no_cache = Admin(
                AdminApp(store=store, token=TOKEN, config_view=dict, purge_cache=None, rate_limit_state=None)
            )
            assert (await no_cache.error("POST", "/cache/purge", {"key": "a"}))[:2] == (404, "not_enabled")
            assert (await no_cache.error("GET", "/rate-limits/api/alice"))[:2] == (404, "not_enabled")
        finally:
            await store.close()

    asyncio.run(main())


def test_rate_limit_state(store_backend: StoreBackend) -> None:
    async def main() -> None:
        store = store_backend.open()
        calls = Calls()
        admin = make_app(store, calls)
        try:
            status, state, _ = await admin.call("GET", "/rate-limits/api/10.0.0.1%3A80")
            assert (status, state) == (200, {"limit": 100, "remaining": 42, "reset": 0.5})
            assert calls.limits == [("api", "10.0.0.1:80")]
            assert await admin.error("GET", "/rate-limits/other/alice") == (
                404,
                "not_found",
                'route "other" has no rate limit',
            )
        finally:
            await store.close()

    asyncio.run(main())


def test_config_is_shown_with_secrets_redacted(store_backend: StoreBackend) -> None:
    async def scenario(admin: Admin, store: StateStore) -> None:
        status, shown, _ = await admin.call("GET", "/config")
        assert status == 200
        text = json.dumps(shown)
        for secret in ("carol-secret-key", "admin-token-123", "hunter2"):
            assert secret not in text
        assert shown["consumers"]["carol"]["keys"] == ["<redacted>"]
        assert shown["consumers"]["carol"]["groups"] == ["partners"]
        assert shown["admin"] == {"listen": "127.0.0.1:9901", "token": "<redacted>", "aws_keys": {}}
        assert shown["store"]["redis"] == "redis://:<redacted>@127.0.0.1:6379/0"
        assert shown["products"]["billing"]["subscription"] == "approval"
        assert shown["routes"][0]["path"] == "/api/{proxy+}"
        # Everything else is the loaded config as it is.
        expected = config_dict()
        expected["consumers"]["carol"]["keys"] = ["<redacted>"]
        expected["admin"]["token"] = "<redacted>"
        expected["store"]["redis"] = "redis://:<redacted>@127.0.0.1:6379/0"
        assert shown == expected

    run(store_backend, scenario)


def test_status_reports_version_uptime_and_store_version(store_backend: StoreBackend) -> None:
    async def main() -> None:
        store = store_backend.open()
        now = [100.0]
        admin = make_app(store, clock=lambda: now[0])
        try:
            now[0] = 112.5
            await store.create_consumer("alice")
            status, body, _ = await admin.call("GET", "/status")
            assert status == 200
            assert body == {"version": __version__, "uptime": 12.5, "store_version": await store.version()}
            assert body["store_version"] > 0
        finally:
            await store.close()

    asyncio.run(main())


def test_store_failures_are_500_and_logged(
    store_backend: StoreBackend, capfd: pytest.CaptureFixture[str]
) -> None:
    async def main() -> None:
        store = store_backend.open()
        admin = make_app(store)
        await store.close()
        if store_backend.kind == "redis":
            # A closed client reconnects on use; point it at a port nobody listens on instead.
            store = RedisStateStore.from_url("redis://127.0.0.1:1/0")
            admin = make_app(store)
        try:
            assert await admin.error("GET", "/consumers") == (
                500,
                "internal_error",
                "the admin API failed; see the gateway log",
            )
        finally:
            await store.close()

    asyncio.run(main())
    (line,) = [json.loads(line) for line in capfd.readouterr().err.splitlines()]
    assert (line["level"], line["msg"], line["method"], line["path"]) == (
        "error",
        "admin API request failed",
        "GET",
        "/consumers",
    )
    assert "Traceback" in line["traceback"]


# --- persistence -------------------------------------------------------------------------------


def test_admin_changes_survive_a_restart(store_backend: StoreBackend) -> None:
    async def main() -> None:
        store = store_backend.open()
        admin = make_app(store)
        await admin.call("POST", "/consumers", {"name": "alice", "groups": ["partners"]})
        _, key, _ = await admin.call("POST", "/consumers/alice/keys")
        await admin.call("POST", "/consumers/alice/basic-auth", {"username": "alice", "password": "pw"})
        _, subscription, _ = await admin.call(
            "POST", "/subscriptions", {"consumer": "alice", "product": "billing"}
        )
        await admin.call("POST", f"/subscriptions/{subscription['id']}/approve")
        await store.close()

        store = store_backend.open()  # a new process would do the same
        admin = make_app(store)
        try:
            _, consumer, _ = await admin.call("GET", "/consumers/alice")
            assert consumer["groups"] == ["partners"]
            _, keys, _ = await admin.call("GET", "/consumers/alice/keys")
            assert [k["id"] for k in keys["data"]] == [key["id"]]
            (stored_key,) = await store.list_api_keys("alice")
            assert stored_key.key_sha256 == hashlib.sha256(key["key"].encode()).hexdigest()
            (basic,) = await store.list_basic_auth("alice")
            assert bcrypt.checkpw(b"pw", basic.password_hash.encode())
            _, approved, _ = await admin.call("GET", "/subscriptions", query="state=approved")
            assert [s["id"] for s in approved["data"]] == [subscription["id"]]
        finally:
            await store.close()

    asyncio.run(main())


def test_secret_maps_are_redacted_value_by_value() -> None:
    from gateway.admin.redact import redact_config

    shown = redact_config(
        {
            "admin": {"aws_keys": {"AKIALAMBDAGATE": "aws-secret"}},
            "functions": {"hello": {"env": {"STRIPE_KEY": "sk_live_1", "EMPTY": ""}, "timeout": 3.0}},
        }
    )
    assert shown == {
        "admin": {"aws_keys": {"AKIALAMBDAGATE": "<redacted>"}},
        "functions": {"hello": {"env": {"STRIPE_KEY": "<redacted>", "EMPTY": ""}, "timeout": 3.0}},
    }
