"""request-size-limit: refuse request bodies over a per-route size with 413.

Like Kong's request-size-limiting, a declared ``Content-Length`` over the limit is refused in
the access phase, before any byte of the body is read or proxied. A chunked body has no length
up front: the plugin records the limit in ``request.ctx[BODY_LIMIT_KEY]`` for the engine, which
counts body bytes as they stream and answers 413 once the count passes it (the server-wide
``max_body_size`` works the same way). With ``require_content_length`` such bodies are refused
with 411 instead.
"""

from __future__ import annotations

from typing import Annotated

import msgspec

from gateway.plugins import Plugin, Request, Response
from gateway.units import parse_size

__all__ = ["BODY_LIMIT_KEY", "PLUGIN", "RequestSizeLimit"]

#: request.ctx key holding the byte limit the engine enforces on a streamed (chunked) body.
BODY_LIMIT_KEY = "body_limit"


class RequestSizeLimitConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    allowed_payload_size: Annotated[
        str | int,
        msgspec.Meta(
            description='Largest request body accepted, as a size ("512KiB", "1MiB", "10MB") or a byte '
            "count; larger gets 413."
        ),
    ] = "128MiB"
    require_content_length: Annotated[
        bool,
        msgspec.Meta(description="Refuse a request body without Content-Length (chunked) with 411."),
    ] = False

    def __post_init__(self) -> None:
        try:
            parse_size(self.allowed_payload_size)
        except ValueError as exc:
            raise ValueError(f"allowed_payload_size: {exc}") from None


def _has_body_without_length(request: Request) -> bool:
    return request.content_length is None and request.headers.get("Transfer-Encoding") is not None


class RequestSizeLimit(Plugin):
    name = "request-size-limit"
    version = "1.0.0"
    priority = 951  # Kong's request-size-limiting
    Config = RequestSizeLimitConfig

    def __init__(self, config: RequestSizeLimitConfig) -> None:
        super().__init__(config)
        self.limit = parse_size(config.allowed_payload_size)

    def access(self, request: Request) -> Response | None:
        length = request.content_length
        if length is not None:
            if length > self.limit:
                return Response.error(
                    413,
                    "payload_too_large",
                    f"Request size limit exceeded: the body is {length} bytes, the limit is {self.limit}",
                )
            return None
        if _has_body_without_length(request):
            if self.config.require_content_length:
                return Response.error(411, "length_required", "A valid Content-Length header is required")
            request.ctx[BODY_LIMIT_KEY] = min(self.limit, request.ctx.get(BODY_LIMIT_KEY, self.limit))
        return None


PLUGIN = RequestSizeLimit
