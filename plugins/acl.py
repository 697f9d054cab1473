"""acl: allow or deny authenticated consumers by group.

Runs after the auth plugins (priority 950). A consumer in any `deny` group is refused; when
`allow` is set, only consumers in one of its groups pass. Refusals are 403: the caller is known,
just not allowed. A request nobody authenticated is a 401 (the route has no auth plugin that
ran, or it let the request through anonymously).
"""

from __future__ import annotations

from typing import Annotated

import msgspec
from msgspec import Meta

from gateway.consumers import ConsumerRegistry
from gateway.plugins import Plugin, Request, Response

__all__ = ["PLUGIN", "Acl"]


class AclConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    allow: Annotated[
        list[str], Meta(description="Consumer groups allowed to call; empty means every group not denied.")
    ] = []
    deny: Annotated[list[str], Meta(description="Consumer groups refused, even when also allowed.")] = []
    hide_groups_header: Annotated[
        bool,
        Meta(
            description="Remove X-Consumer-Groups before proxying, so the upstream does not see the groups."
        ),
    ] = False

    def __post_init__(self) -> None:
        if not self.allow and not self.deny:
            raise ValueError("acl needs at least one group in allow or deny")
        if any(not group for group in [*self.allow, *self.deny]):
            raise ValueError("group names must not be empty")


class Acl(Plugin):
    name = "acl"
    version = "1.0.0"
    priority = 950
    Config = AclConfig

    def __init__(self, config: AclConfig, *, consumers: ConsumerRegistry | None = None) -> None:
        # Takes (and does not need) the registry the auth plugins get, so the engine can build
        # every consumer-related plugin the same way.
        super().__init__(config)
        self._allow = frozenset(config.allow)
        self._deny = frozenset(config.deny)
        self._hide_groups = config.hide_groups_header

    def access(self, request: Request) -> Response | None:
        consumer = request.consumer
        if consumer is None:
            return Response.error(401, "unauthorized", "authentication required")
        groups = frozenset(consumer.groups)
        if groups & self._deny:
            return Response.error(403, "forbidden", "you are not allowed to call this route")
        if self._allow and not groups & self._allow:
            return Response.error(403, "forbidden", "you are not allowed to call this route")
        if self._hide_groups:
            request.headers.remove("X-Consumer-Groups")
        return None


PLUGIN = Acl
