"""request-transformer: change the request's headers and query arguments before it goes upstream.

Kong's request-transformer semantics (remove, rename, replace, add, append, in that order;
add only when absent, replace only when present, append always), in the rewrite phase, so
access plugins (auth, limits) see the request as the client sent it:

    [routes.plugins.request-transformer]
    remove = { headers = ["X-Debug"], querystring = ["debug"] }
    rename = { headers = { "X-Client" = "X-Caller" } }
    add = { headers = { "X-Env" = "prod" }, querystring = { "v" = "2" } }
    append = { headers = { "X-Tag" = ["edge", "eu"] } }
"""

from __future__ import annotations

from typing import Annotated

import msgspec

from gateway.plugins import Plugin, Request

from ._transform import (
    RequestNames,
    RequestRenames,
    RequestValues,
    apply_header_changes,
    apply_query_changes,
    compile_changes,
)

__all__ = ["PLUGIN", "RequestTransformer"]


class RequestTransformerConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    remove: Annotated[
        RequestNames, msgspec.Meta(description="Headers and query arguments removed (first step).")
    ] = RequestNames()
    rename: Annotated[
        RequestRenames, msgspec.Meta(description="Headers and query arguments renamed when present.")
    ] = RequestRenames()
    replace: Annotated[
        RequestValues, msgspec.Meta(description="Values set only where the name is already present.")
    ] = RequestValues()
    add: Annotated[RequestValues, msgspec.Meta(description="Values set only where the name is absent.")] = (
        RequestValues()
    )
    append: Annotated[
        RequestValues, msgspec.Meta(description="Values added whether or not the name is present (last).")
    ] = RequestValues()


class RequestTransformer(Plugin):
    name = "request-transformer"
    version = "1.0.0"
    priority = 801  # Kong's request-transformer
    Config = RequestTransformerConfig

    def __init__(self, config: RequestTransformerConfig) -> None:
        super().__init__(config)
        self._headers = compile_changes(
            config.remove.headers,
            config.rename.headers,
            config.replace.headers,
            config.add.headers,
            config.append.headers,
        )
        self._query = compile_changes(
            config.remove.querystring,
            config.rename.querystring,
            config.replace.querystring,
            config.add.querystring,
            config.append.querystring,
        )

    def rewrite(self, request: Request) -> None:
        if self._headers:
            apply_header_changes(request.headers, self._headers)
        if self._query:
            query = apply_query_changes(request.query, self._query)
            if query != request.query:
                request.query = query


PLUGIN = RequestTransformer
