"""key-auth: callers identify themselves with an API key in a header or a query parameter.

The key is looked up by its SHA-256 digest (ConsumerRegistry.by_api_key) and removed from the
request before it goes upstream: an upstream never needs, and should never log, the key.
"""

from __future__ import annotations

from typing import Annotated

import msgspec
from msgspec import Meta

from gateway.consumers import ConsumerRegistry, forward_identity, strip_identity_headers
from gateway.plugins import Plugin, Request, Response

from ._auth import header_name_problem, realm_problem, take_query_param, unauthorized

__all__ = ["PLUGIN", "KeyAuth"]


class KeyAuthConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    header_names: Annotated[
        list[str], Meta(description="Request headers that may carry the API key, tried in order.")
    ] = msgspec.field(default_factory=lambda: ["apikey"])
    query_param_names: Annotated[
        list[str],
        Meta(
            description="Query parameters that may carry the API key, tried after the headers (default none)."
        ),
    ] = []
    realm: Annotated[
        str, Meta(description='The realm of the 401 challenge: WWW-Authenticate: Key realm="...".')
    ] = "lambdagate"

    def __post_init__(self) -> None:
        if not self.header_names and not self.query_param_names:
            raise ValueError("key-auth needs at least one of header_names and query_param_names")
        for name in self.header_names:
            problem = header_name_problem(name)
            if problem:
                raise ValueError(f"header_names: {problem}")
        if any(not name for name in self.query_param_names):
            raise ValueError("query_param_names: names must not be empty")
        problem = realm_problem(self.realm)
        if problem:
            raise ValueError(f"realm: {problem}")


class KeyAuth(Plugin):
    name = "key-auth"
    version = "1.0.0"
    priority = 1250
    Config = KeyAuthConfig

    def __init__(self, config: KeyAuthConfig, *, consumers: ConsumerRegistry) -> None:
        super().__init__(config)
        self._consumers = consumers
        self._header_names = tuple(dict.fromkeys(config.header_names))
        self._query_names = frozenset(config.query_param_names)
        self._challenge = f'Key realm="{config.realm}"'

    def access(self, request: Request) -> Response | None:
        strip_identity_headers(request)
        key: str | bytes | None = None
        for name in self._header_names:
            values = request.headers.get_all(name)
            if values:
                request.headers.remove(name)
                if key is None and values[0]:
                    key = values[0]
        if self._query_names and request.query:
            found, rest = take_query_param(request.query, self._query_names)
            if rest != request.query:
                request.query = rest
            if key is None and found:
                key = found
        if key is None:
            return unauthorized(self._challenge, "no API key found in the request")
        consumer = self._consumers.by_api_key(key)
        if consumer is None:
            return unauthorized(self._challenge, "invalid API key")
        forward_identity(request, consumer)
        return None


PLUGIN = KeyAuth
