"""basic-auth: callers send a user name and password (RFC 7617) checked against bcrypt/argon2 hashes.

Hash checks are slow by design, so a check runs in a thread off the event loop and a success
is remembered briefly (see ConsumerRegistry); a repeat caller costs one keyed hash, not bcrypt.
"""

from __future__ import annotations

import binascii
from base64 import b64decode
from collections.abc import Awaitable
from typing import Annotated

import msgspec
from msgspec import Meta

from gateway.consumers import ConsumerRegistry, forward_identity, strip_identity_headers
from gateway.plugins import Plugin, Request, Response

from ._auth import realm_problem, unauthorized

__all__ = ["PLUGIN", "BasicAuth", "parse_basic_credentials"]

_MAX_CREDENTIALS_LENGTH = 4096


class BasicAuthConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    hide_credentials: Annotated[
        bool,
        Meta(description="Remove the Authorization header before proxying, so the upstream never sees it."),
    ] = True
    realm: Annotated[
        str, Meta(description='The realm of the 401 challenge: WWW-Authenticate: Basic realm="...".')
    ] = "lambdagate"

    def __post_init__(self) -> None:
        problem = realm_problem(self.realm)
        if problem:
            raise ValueError(f"realm: {problem}")


def parse_basic_credentials(header: str) -> tuple[str, bytes] | None:
    """(username, password) from an Authorization header value, or None when it is not Basic."""
    scheme, _, encoded = header.strip().partition(" ")
    if scheme.lower() != "basic" or not encoded or len(encoded) > _MAX_CREDENTIALS_LENGTH:
        return None
    try:
        decoded = b64decode(encoded.strip(), validate=True)
    except (binascii.Error, ValueError):
        return None
    username, colon, password = decoded.partition(b":")
    if not colon:
        return None
    try:
        return username.decode("utf-8"), password
    except UnicodeDecodeError:
        return None


class BasicAuth(Plugin):
    name = "basic-auth"
    version = "1.0.0"
    priority = 1100
    Config = BasicAuthConfig

    def __init__(self, config: BasicAuthConfig, *, consumers: ConsumerRegistry) -> None:
        super().__init__(config)
        self._consumers = consumers
        self._hide = config.hide_credentials
        self._challenge = f'Basic realm="{config.realm}"'

    def access(self, request: Request) -> Response | Awaitable[Response | None] | None:
        strip_identity_headers(request)
        header = request.headers.get("authorization")
        if header is None:
            return unauthorized(self._challenge, "no basic-auth credentials in the request")
        if self._hide:
            request.headers.remove("authorization")
        credentials = parse_basic_credentials(header)
        if credentials is None:
            return unauthorized(self._challenge, "malformed basic-auth credentials")
        username, password = credentials
        consumer = self._consumers.by_basic_auth_cached(username, password)
        if consumer is not None:
            forward_identity(request, consumer, username)
            return None
        return self._verify(request, username, password)

    async def _verify(self, request: Request, username: str, password: bytes) -> Response | None:
        consumer = await self._consumers.by_basic_auth_async(username, password)
        if consumer is None:
            return unauthorized(self._challenge, "invalid username or password")
        forward_identity(request, consumer, username)
        return None


PLUGIN = BasicAuth
