"""request-id: a request id under a header name of your choice, echoed to the client or not.

The engine already gives every proxied request an ``X-Request-Id`` (kept when the client sent
one) and returns it on the response. This plugin is for the cases that default does not cover:
a different header name (``X-Correlation-Id``, ``Kong-Request-ID``), ids from uuid4, or keeping
the id away from clients (``echo_downstream = false``). Like Kong's correlation-id plugin, an id
the client sent under the header is kept; otherwise one is generated and added to the request.
It runs first in the access phase (Kong's correlation-id priority) so every later plugin, and
the upstream, see the id.
"""

from __future__ import annotations

import re
import uuid
from typing import Annotated, Literal

import msgspec

from gateway.plugins import Plugin, Request, ResponseHead
from gateway.units import describe_value

__all__ = ["PLUGIN", "RequestId"]

_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")


class RequestIdConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    header_name: Annotated[str, msgspec.Meta(description="Header carrying the request id.")] = "X-Request-Id"
    generator: Annotated[
        Literal["gateway", "uuid4"],
        msgspec.Meta(
            description='"gateway": the id the gateway logs (32 hex digits, or the client\'s X-Request-Id); '
            '"uuid4": a random UUID.'
        ),
    ] = "gateway"
    echo_downstream: Annotated[
        bool, msgspec.Meta(description="Return the id to the client in the same header of the response.")
    ] = True

    def __post_init__(self) -> None:
        if not _TOKEN.fullmatch(self.header_name):
            raise ValueError(f"header_name: {describe_value(self.header_name)} is not a valid header name")


class RequestId(Plugin):
    name = "request-id"
    version = "1.0.0"
    priority = 100001  # Kong's correlation-id: before everything else
    Config = RequestIdConfig

    #: request.ctx key holding the id this plugin settled on.
    CTX_KEY = "request_id"

    def _generate(self, request: Request) -> str:
        if self.config.generator == "uuid4":
            return str(uuid.uuid4())
        return request.request_id

    def access(self, request: Request) -> None:
        header = self.config.header_name
        request_id = request.headers.get(header)
        if not request_id:
            request_id = self._generate(request)
            request.headers.set(header, request_id)
        request.ctx[self.CTX_KEY] = request_id
        if not self.config.echo_downstream:
            request.ctx["echo_request_id"] = False  # the engine then adds no X-Request-Id either

    def response(self, request: Request, response: ResponseHead) -> None:
        header = self.config.header_name
        if not self.config.echo_downstream:
            response.headers.remove(header)
            return
        request_id = request.ctx.get(self.CTX_KEY)
        if request_id is None:  # the access phase did not run for this request (answered earlier)
            request_id = request.headers.get(header) or self._generate(request)
        response.headers.set(header, request_id)


PLUGIN = RequestId
