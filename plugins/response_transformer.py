"""response-transformer: change the response headers before they reach the client.

Kong's response-transformer header semantics (remove, rename, replace, add, append, in that
order; add only when absent, replace only when present, append always), in the response
phase; it applies to upstream responses and to responses a plugin answered with:

    [routes.plugins.response-transformer]
    remove = { headers = ["Server", "X-Powered-By"] }
    add = { headers = { "Cache-Control" = "no-store" } }
"""

from __future__ import annotations

from typing import Annotated

import msgspec

from gateway.plugins import Plugin, Request, ResponseHead

from ._transform import HeaderNames, HeaderRenames, HeaderValues, apply_header_changes, compile_changes

__all__ = ["PLUGIN", "ResponseTransformer"]


class ResponseTransformerConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    remove: Annotated[HeaderNames, msgspec.Meta(description="Response headers removed (first step).")] = (
        HeaderNames()
    )
    rename: Annotated[HeaderRenames, msgspec.Meta(description="Response headers renamed when present.")] = (
        HeaderRenames()
    )
    replace: Annotated[
        HeaderValues, msgspec.Meta(description="Values set only where the header is already present.")
    ] = HeaderValues()
    add: Annotated[HeaderValues, msgspec.Meta(description="Values set only where the header is absent.")] = (
        HeaderValues()
    )
    append: Annotated[
        HeaderValues, msgspec.Meta(description="Values added whether or not the header is present (last).")
    ] = HeaderValues()


class ResponseTransformer(Plugin):
    name = "response-transformer"
    version = "1.0.0"
    priority = 800  # Kong's response-transformer
    Config = ResponseTransformerConfig

    def __init__(self, config: ResponseTransformerConfig) -> None:
        super().__init__(config)
        self._changes = compile_changes(
            config.remove.headers,
            config.rename.headers,
            config.replace.headers,
            config.add.headers,
            config.append.headers,
        )

    def response(self, request: Request, response: ResponseHead) -> None:
        apply_header_changes(response.headers, self._changes)


PLUGIN = ResponseTransformer
