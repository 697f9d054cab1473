"""add-header: an example third-party lambdagate plugin.

Adds fixed headers to the request on its way upstream and to the response on its way back:

    [routes.plugins.add-header]
    request = { "X-Team" = "billing" }
    response = { "X-Served-By" = "edge" }
    overwrite = false      # keep a value the client or upstream already set
"""

from __future__ import annotations

from typing import Annotated

import msgspec

from gateway.plugins import Plugin, Request, ResponseHead

__all__ = ["AddHeader", "AddHeaderConfig"]


class AddHeaderConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    # The Config struct is the plugin's config schema: every field has a default (or is
    # required) and a description; unknown keys are refused.
    request: Annotated[
        dict[str, str], msgspec.Meta(description="Headers added to the request sent upstream.")
    ] = {}
    response: Annotated[
        dict[str, str], msgspec.Meta(description="Headers added to the response sent to the client.")
    ] = {}
    overwrite: Annotated[
        bool, msgspec.Meta(description="Replace a header already present instead of keeping it.")
    ] = False

    def __post_init__(self) -> None:
        # Checks msgspec cannot express go here; a ValueError becomes a config error at load time.
        for table in ("request", "response"):
            for name, value in getattr(self, table).items():
                if not name or any(c in name for c in " \t:\r\n") or any(c in value for c in "\r\n\0"):
                    raise ValueError(f"{table}: invalid header {name!r}")


class AddHeader(Plugin):
    name = "add-header"
    version = "1.0.0"
    priority = 700  # after the built-in transformers (801, 800)
    Config = AddHeaderConfig

    def __init__(self, config: AddHeaderConfig) -> None:
        super().__init__(config)  # built once per route and worker: precompute here, not per request
        self._request = tuple(config.request.items())
        self._response = tuple(config.response.items())

    def rewrite(self, request: Request) -> None:
        for name, value in self._request:
            if self.config.overwrite or name not in request.headers:
                request.headers.set(name, value)

    def response(self, request: Request, response: ResponseHead) -> None:
        for name, value in self._response:
            if self.config.overwrite or name not in response.headers:
                response.headers.set(name, value)
