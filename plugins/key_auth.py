"""key-auth: callers identify themselves with an API key in a header or a query parameter.

The key is looked up by its SHA-256 digest (ConsumerRegistry.by_api_key) and removed from the
request before it goes upstream: an upstream never needs, and should never log, the key.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import msgspec
from msgspec import Meta

from gateway.consumers import ConsumerRegistry, forward_identity, strip_identity_headers
from gateway.plugins import Consumer, Plugin, Request, Response

from ._auth import header_name_problem, realm_problem, take_query_param, unauthorized

if TYPE_CHECKING:
    from gateway._fastpath.http import FastCheck

__all__ = ["PLUGIN", "KeyAuth"]

# Identity headers the upstream must only ever get from us; the compiled check drops these by
# exact name (the Python path drops every X-Consumer-* / X-Credential-* header).
_IDENTITY_HEADERS = (
    "X-Consumer-Id",
    "X-Consumer-Groups",
    "X-Consumer-Username",
    "X-Consumer-Custom-Id",
    "X-Credential-Identifier",
    "X-Anonymous-Consumer",
)


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
            return unauthorized(self._challenge, "No API key found in request")
        consumer = self._consumers.by_api_key(key)
        if consumer is None:
            return unauthorized(self._challenge, "Invalid authentication credentials")
        forward_identity(request, consumer)
        return None

    # --- compiled fast path (gateway.route_plugins asks for these) ---

    def fast_check(self) -> FastCheck | None:
        """The compiled equivalent of access() when keys come from headers only."""
        if self._query_names:
            return None  # the compiled check reads headers; query keys need the Python path
        from gateway._fastpath.checks import KeyAuthCheck

        consumers = self._consumers
        return KeyAuthCheck(
            self._header_names,
            consumers.by_api_key,
            _identity_header_lines,
            consumers,  # its `generation` attribute moves when consumers change
            self.config.realm,
        )

    def upstream_drop_headers(self) -> list[str]:
        """Headers the engine removes before proxying: the key itself and spoofed identities."""
        return [*self._header_names, *_IDENTITY_HEADERS]


def _identity_header_lines(consumer: Consumer) -> bytes:
    # Consumer names and groups are validated (no CR/LF, no commas in groups) when added.
    lines = f"X-Consumer-Id: {consumer.name}\r\n"
    if consumer.groups:
        lines += f"X-Consumer-Groups: {','.join(consumer.groups)}\r\n"
    return lines.encode("latin-1", "replace")


PLUGIN = KeyAuth
