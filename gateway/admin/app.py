"""The admin API: consumers and credentials, subscriptions, cache purge, rate-limit state, config.

Transport-independent: the gateway serves `AdminApp.handle` on the ``[admin]`` listener with its
own HTTP engine, and tests call it directly. Every request needs ``Authorization: Bearer <token>``.
JSON in, JSON out; errors in the gateway's shape ``{"error": {"status", "code", "message"}}``.

    GET/POST          /consumers
    GET/PATCH/DELETE  /consumers/{name}
    GET/POST          /consumers/{name}/keys | /basic-auth | /jwt
    DELETE            /consumers/{name}/keys/{id} | /basic-auth/{id} | /jwt/{id}
    GET/POST          /subscriptions              (GET ?state=&consumer=&product=)
    GET               /subscriptions/{id}
    POST              /subscriptions/{id}/approve | /reject | /revoke
    POST              /cache/purge                {"key": ...} or {"prefix": ...}
    GET               /rate-limits/{route}/{key}
    GET               /config                     (secrets redacted)
    GET               /status
"""

from __future__ import annotations

import asyncio
import hmac
import re
import secrets
import time
import traceback
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, unquote

import bcrypt
import msgspec

import gateway
from gateway.consumers import password_hash_problem
from gateway.logs import log
from gateway.plugins import Response
from gateway.store.base import (
    ApiKeyRecord,
    BasicAuthRecord,
    ConflictError,
    ConsumerRecord,
    JwtSubjectRecord,
    NotFoundError,
    StateStore,
    SubscriptionState,
    check_name,
    hash_api_key,
)
from gateway.subscriptions import ProductPolicy, SubscriptionWorkflow

from .bodies import (
    BasicAuthBody,
    CachePurgeBody,
    ConsumerBody,
    ConsumerPatchBody,
    DecisionBody,
    JwtSubjectBody,
    KeyBody,
    SubscriptionBody,
    decode_body,
)
from .errors import AdminError
from .redact import redact_config

__all__ = ["AdminApp"]

PurgeCache = Callable[[str | None, str | None], Awaitable[int]]
RateLimitState = Callable[[str, str], dict[str, Any]]

_SHA256_HEX = re.compile(r"[0-9a-fA-F]{64}")


@dataclass(frozen=True)
class Call:
    """One admin request after routing: path parameters by name, query parameters, raw body."""

    method: str
    path: str
    params: Mapping[str, str]
    query: Mapping[str, list[str]]
    body: bytes


Handler = Callable[[Call], Awaitable[Response]]


class AdminApp:
    def __init__(
        self,
        *,
        store: StateStore,
        token: str,
        config_view: Callable[[], dict[str, Any]],
        purge_cache: PurgeCache | None,
        rate_limit_state: RateLimitState | None,
        bcrypt_rounds: int = 12,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not token:
            raise ValueError("the admin API needs a non-empty bearer token ([admin] token)")
        self._store = store
        self._token = token.encode()
        self._config_view = config_view
        self._purge_cache = purge_cache
        self._rate_limit_state = rate_limit_state
        self._bcrypt_rounds = bcrypt_rounds
        self._clock = clock
        self._started = clock()
        self._subscriptions = SubscriptionWorkflow(
            store, products=self._products, consumer_exists=self._consumer_exists
        )
        self._routes: list[tuple[tuple[str, ...], dict[str, Handler]]] = [
            (("consumers",), {"GET": self._list_consumers, "POST": self._create_consumer}),
            (
                ("consumers", "{name}"),
                {"GET": self._get_consumer, "PATCH": self._patch_consumer, "DELETE": self._delete_consumer},
            ),
            (("consumers", "{name}", "keys"), {"GET": self._list_keys, "POST": self._add_key}),
            (("consumers", "{name}", "keys", "{id}"), {"DELETE": self._delete_key}),
            (
                ("consumers", "{name}", "basic-auth"),
                {"GET": self._list_basic_auth, "POST": self._add_basic_auth},
            ),
            (("consumers", "{name}", "basic-auth", "{id}"), {"DELETE": self._delete_basic_auth}),
            (("consumers", "{name}", "jwt"), {"GET": self._list_jwt, "POST": self._add_jwt}),
            (("consumers", "{name}", "jwt", "{id}"), {"DELETE": self._delete_jwt}),
            (("subscriptions",), {"GET": self._list_subscriptions, "POST": self._request_subscription}),
            (("subscriptions", "{id}"), {"GET": self._get_subscription}),
            (("subscriptions", "{id}", "approve"), {"POST": self._approve}),
            (("subscriptions", "{id}", "reject"), {"POST": self._reject}),
            (("subscriptions", "{id}", "revoke"), {"POST": self._revoke}),
            (("cache", "purge"), {"POST": self._purge}),
            (("rate-limits", "{route}", "{key}"), {"GET": self._rate_limit}),
            (("config",), {"GET": self._config}),
            (("status",), {"GET": self._status}),
        ]

    # --- entry point -------------------------------------------------------------------------

    async def handle(
        self, method: str, path: str, query: str, headers: list[tuple[str, str]], body: bytes
    ) -> Response:
        try:
            self._authorize(headers)
            handler, params = self._route(method, path)
            call = Call(method, path, params, parse_qs(query, keep_blank_values=True), body)
            return await handler(call)
        except AdminError as exc:
            return exc.response()
        except NotFoundError as exc:
            return Response.error(404, "not_found", str(exc))
        except ConflictError as exc:
            return Response.error(409, "conflict", str(exc))
        except Exception as exc:
            log(
                "error",
                "admin API request failed",
                method=method,
                path=path,
                error=f"{type(exc).__name__}: {exc}",
                traceback=traceback.format_exc(),
            )
            return Response.error(500, "internal_error", "the admin API failed; see the gateway log")

    def _authorize(self, headers: list[tuple[str, str]]) -> None:
        challenge = [("WWW-Authenticate", 'Bearer realm="lambdagate-admin"')]
        values = [value for name, value in headers if name.lower() == "authorization"]
        if not values:
            raise AdminError(
                401, "unauthorized", "the admin API needs an Authorization: Bearer token", challenge
            )
        scheme, _, presented = values[0].strip().partition(" ")
        # compare_digest: the time taken does not reveal how much of the token matched.
        if scheme.lower() != "bearer" or not hmac.compare_digest(presented.strip().encode(), self._token):
            raise AdminError(401, "unauthorized", "the admin bearer token is wrong", challenge)

    def _route(self, method: str, path: str) -> tuple[Handler, dict[str, str]]:
        segments = [unquote(segment) for segment in path.strip("/").split("/")] if path.strip("/") else []
        for pattern, methods in self._routes:
            params = _match(pattern, segments)
            if params is None:
                continue
            handler = methods.get(method)
            if handler is None:
                allow = ", ".join(sorted(methods))
                raise AdminError(
                    405,
                    "method_not_allowed",
                    f"{method} is not allowed on {path}; use {allow}",
                    [("Allow", allow)],
                )
            return handler, params
        raise AdminError(404, "not_found", f"no admin endpoint at {path}")

    # --- helpers -----------------------------------------------------------------------------

    def _products(self) -> dict[str, ProductPolicy]:
        products = self._config_view().get("products") or {}
        policies: dict[str, ProductPolicy] = {}
        for name, table in products.items():
            policy = (table or {}).get("subscription", ProductPolicy.OPEN)
            policies[name] = ProductPolicy(policy)
        return policies

    def _config_consumers(self) -> Mapping[str, Any]:
        consumers: Mapping[str, Any] = self._config_view().get("consumers") or {}
        return consumers

    async def _consumer_exists(self, name: str) -> bool:
        return name in self._config_consumers() or await self._store.get_consumer(name) is not None

    async def _require_consumer(self, name: str) -> ConsumerRecord:
        consumer = await self._store.get_consumer(name)
        if consumer is None:
            if name in self._config_consumers():
                raise AdminError(
                    409,
                    "conflict",
                    f'consumer "{name}" is declared in the config file; change it there',
                )
            raise AdminError(404, "not_found", f'no consumer named "{name}"')
        return consumer

    # --- consumers ---------------------------------------------------------------------------

    async def _list_consumers(self, call: Call) -> Response:
        return Response.json(200, {"data": await self._store.list_consumers()})

    async def _create_consumer(self, call: Call) -> Response:
        body = decode_body(call.body, ConsumerBody)
        _check_field("name", "consumer name", body.name)
        _check_groups_and_metadata(body.groups, body.metadata)
        if body.name in self._config_consumers():
            raise AdminError(
                409, "conflict", f'consumer "{body.name}" is already declared in the config file'
            )
        record = await self._store.create_consumer(body.name, groups=body.groups, metadata=body.metadata)
        return Response.json(201, record)

    async def _get_consumer(self, call: Call) -> Response:
        return Response.json(200, await self._require_consumer(call.params["name"]))

    async def _patch_consumer(self, call: Call) -> Response:
        body = decode_body(call.body, ConsumerPatchBody)
        _check_groups_and_metadata(body.groups, body.metadata)
        name = call.params["name"]
        await self._require_consumer(name)
        record = await self._store.update_consumer(name, groups=body.groups, metadata=body.metadata)
        return Response.json(200, record)

    async def _delete_consumer(self, call: Call) -> Response:
        name = call.params["name"]
        await self._require_consumer(name)
        if not await self._store.delete_consumer(name):
            raise AdminError(404, "not_found", f'no consumer named "{name}"')
        return Response(204)

    # --- credentials -------------------------------------------------------------------------

    async def _list_keys(self, call: Call) -> Response:
        name = call.params["name"]
        await self._require_consumer(name)
        return Response.json(200, {"data": [_key_view(k) for k in await self._store.list_api_keys(name)]})

    async def _add_key(self, call: Call) -> Response:
        body = decode_body(call.body, KeyBody, optional=True)
        name = call.params["name"]
        await self._require_consumer(name)
        if body.key is not None and body.key_sha256 is not None:
            raise AdminError(400, "invalid_request", "give `key` or `key_sha256`, not both")
        shown: str | None
        if body.key_sha256 is not None:
            digest = body.key_sha256.removeprefix("sha256:")
            if not _SHA256_HEX.fullmatch(digest):
                raise AdminError(
                    400,
                    "invalid_request",
                    "`key_sha256`: expected 64 hex digits (optionally after `sha256:`)",
                )
            shown, digest = None, digest.lower()
        else:
            shown = body.key if body.key is not None else secrets.token_urlsafe(32)
            if not shown or any(ord(c) < 0x21 or ord(c) == 0x7F for c in shown):
                raise AdminError(
                    400, "invalid_request", "`key`: must be non-empty without spaces or control characters"
                )
            digest = hash_api_key(shown)
        record = await self._store.add_api_key(name, digest)
        view = _key_view(record)
        if shown is not None:
            view["key"] = shown  # the only time the key is shown; only its hash is kept
        return Response.json(201, view)

    async def _delete_key(self, call: Call) -> Response:
        return await self._delete_credential(call, self._store.delete_api_key, "API key")

    async def _list_basic_auth(self, call: Call) -> Response:
        name = call.params["name"]
        await self._require_consumer(name)
        entries = await self._store.list_basic_auth(name)
        return Response.json(200, {"data": [_basic_auth_view(entry) for entry in entries]})

    async def _add_basic_auth(self, call: Call) -> Response:
        body = decode_body(call.body, BasicAuthBody)
        name = call.params["name"]
        await self._require_consumer(name)
        if not body.username or ":" in body.username:
            raise AdminError(400, "invalid_request", "`username`: must be non-empty and contain no colon")
        if (body.password is None) == (body.password_hash is None):
            raise AdminError(400, "invalid_request", "give exactly one of `password` or `password_hash`")
        if body.password_hash is not None:
            problem = password_hash_problem(body.password_hash)
            if problem:
                raise AdminError(400, "invalid_request", f"`password_hash`: {problem}")
            password_hash = body.password_hash
        else:
            password_hash = await self._hash_password(body.password or "")
        record = await self._store.add_basic_auth(name, body.username, password_hash)
        return Response.json(201, _basic_auth_view(record))

    async def _hash_password(self, password: str) -> str:
        secret = password.encode()
        if not secret:
            raise AdminError(400, "invalid_request", "`password`: must not be empty")
        if len(secret) > 72:
            # bcrypt reads only 72 bytes; refuse instead of silently ignoring the rest.
            raise AdminError(400, "invalid_request", "`password`: bcrypt accepts at most 72 bytes")
        salt = bcrypt.gensalt(rounds=self._bcrypt_rounds)
        # bcrypt is deliberately slow (~0.2 s at 12 rounds): keep it off the event loop.
        hashed = await asyncio.to_thread(bcrypt.hashpw, secret, salt)
        return hashed.decode()

    async def _delete_basic_auth(self, call: Call) -> Response:
        return await self._delete_credential(call, self._store.delete_basic_auth, "basic-auth credential")

    async def _list_jwt(self, call: Call) -> Response:
        name = call.params["name"]
        await self._require_consumer(name)
        subjects = await self._store.list_jwt_subjects(name)
        return Response.json(200, {"data": subjects})

    async def _add_jwt(self, call: Call) -> Response:
        body = decode_body(call.body, JwtSubjectBody)
        name = call.params["name"]
        await self._require_consumer(name)
        if not body.subject:
            raise AdminError(400, "invalid_request", "`subject`: must not be empty")
        record: JwtSubjectRecord = await self._store.add_jwt_subject(name, body.subject)
        return Response.json(201, record)

    async def _delete_jwt(self, call: Call) -> Response:
        return await self._delete_credential(call, self._store.delete_jwt_subject, "JWT subject")

    async def _delete_credential(
        self, call: Call, delete: Callable[[str, str], Awaitable[bool]], what: str
    ) -> Response:
        name, credential_id = call.params["name"], call.params["id"]
        await self._require_consumer(name)
        if not await delete(name, credential_id):
            raise AdminError(404, "not_found", f'consumer "{name}" has no {what} with id "{credential_id}"')
        return Response(204)

    # --- subscriptions -----------------------------------------------------------------------

    async def _list_subscriptions(self, call: Call) -> Response:
        filters: dict[str, str] = {}
        for name in ("state", "consumer", "product"):
            values = call.query.get(name)
            if values:
                filters[name] = values[-1]
        state: SubscriptionState | None = None
        if "state" in filters:
            try:
                state = SubscriptionState(filters["state"])
            except ValueError:
                allowed = ", ".join(s.value for s in SubscriptionState)
                raise AdminError(
                    400, "invalid_request", f"query `state`: {filters['state']!r} is not one of {allowed}"
                ) from None
        records = await self._store.list_subscriptions(
            state=state, consumer=filters.get("consumer"), product=filters.get("product")
        )
        return Response.json(200, {"data": records})

    async def _request_subscription(self, call: Call) -> Response:
        body = decode_body(call.body, SubscriptionBody)
        record = await self._subscriptions.request(
            body.consumer, body.product, actor=body.requested_by, reason=body.reason
        )
        return Response.json(201, record)

    async def _get_subscription(self, call: Call) -> Response:
        record = await self._store.get_subscription(call.params["id"])
        if record is None:
            raise AdminError(404, "not_found", f'no subscription with id "{call.params["id"]}"')
        return Response.json(200, record)

    async def _approve(self, call: Call) -> Response:
        body = decode_body(call.body, DecisionBody, optional=True)
        record = await self._subscriptions.approve(call.params["id"], actor=body.by, reason=body.reason)
        return Response.json(200, record)

    async def _reject(self, call: Call) -> Response:
        body = decode_body(call.body, DecisionBody, optional=True)
        record = await self._subscriptions.reject(call.params["id"], actor=body.by, reason=body.reason)
        return Response.json(200, record)

    async def _revoke(self, call: Call) -> Response:
        body = decode_body(call.body, DecisionBody, optional=True)
        record = await self._subscriptions.revoke(call.params["id"], actor=body.by, reason=body.reason)
        return Response.json(200, record)

    # --- cache, rate limits, config, status --------------------------------------------------

    async def _purge(self, call: Call) -> Response:
        body = decode_body(call.body, CachePurgeBody)
        if (body.key is None) == (body.prefix is None):
            raise AdminError(
                400, "invalid_request", 'give exactly one of `key` or `prefix` (e.g. {"prefix": "/api/"})'
            )
        if self._purge_cache is None:
            raise AdminError(404, "not_enabled", "no route uses the response cache")
        purged = await self._purge_cache(body.key, body.prefix)
        return Response.json(200, {"purged": purged})

    async def _rate_limit(self, call: Call) -> Response:
        if self._rate_limit_state is None:
            raise AdminError(404, "not_enabled", "no route uses rate limiting")
        route, key = call.params["route"], call.params["key"]
        try:
            state = self._rate_limit_state(route, key)
        except LookupError as exc:
            # The provider raises LookupError (e.g. KeyError) for a route without a rate limit.
            message = (
                exc.args[0]
                if exc.args and isinstance(exc.args[0], str)
                else f'no rate limit on route "{route}"'
            )
            raise AdminError(404, "not_found", message) from None
        return Response.json(200, state)

    async def _config(self, call: Call) -> Response:
        return Response.json(200, redact_config(msgspec.to_builtins(self._config_view())))

    async def _status(self, call: Call) -> Response:
        return Response.json(
            200,
            {
                "version": gateway.__version__,
                "uptime": round(self._clock() - self._started, 3),
                "store_version": await self._store.version(),
            },
        )


def _match(pattern: tuple[str, ...], segments: list[str]) -> dict[str, str] | None:
    if len(pattern) != len(segments):
        return None
    params: dict[str, str] = {}
    for part, segment in zip(pattern, segments, strict=True):
        if part.startswith("{"):
            if not segment:
                return None
            params[part[1:-1]] = segment
        elif part != segment:
            return None
    return params


def _check_field(field: str, kind: str, value: str) -> None:
    try:
        check_name(kind, value)
    except ValueError as exc:
        raise AdminError(400, "invalid_request", f"`{field}`: {exc}") from None


def _check_groups_and_metadata(groups: list[str] | None, metadata: dict[str, str] | None) -> None:
    # Groups are forwarded comma-separated in X-Consumer-Groups; metadata may end up in headers.
    for index, group in enumerate(groups or ()):
        if not group or any(c in group for c in ", \t\r\n\0"):
            raise AdminError(
                400, "invalid_request", f"`groups[{index}]`: must be non-empty without commas or whitespace"
            )
    for key, value in (metadata or {}).items():
        if any(c in value for c in "\r\n\0"):
            raise AdminError(400, "invalid_request", f"`metadata.{key}`: must not contain CR, LF or NUL")


def _key_view(record: ApiKeyRecord) -> dict[str, Any]:
    # The digest stays in the store: for a short, human-chosen key it would allow guessing.
    return {"id": record.id, "consumer": record.consumer, "created_at": record.created_at}


def _basic_auth_view(record: BasicAuthRecord) -> dict[str, Any]:
    return {
        "id": record.id,
        "consumer": record.consumer,
        "username": record.username,
        "created_at": record.created_at,
    }
