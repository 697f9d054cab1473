"""subscription: a consumer may call an "approval" product's routes only with an approved subscription.

The gateway enables it on every route whose product has ``subscription = "approval"`` (a route
config names the product); it runs after the auth plugins, so ``request.consumer`` is set when
a caller authenticated. The check is one dict lookup in a SubscriptionSnapshot that the worker
refreshes from the state store; nothing here waits on the store.
"""

from __future__ import annotations

from typing import Annotated, ClassVar

import msgspec

from gateway.plugins import Plugin, Request, Response
from gateway.store.base import SubscriptionState
from gateway.subscriptions import SubscriptionSnapshot, denial_message

__all__ = ["PLUGIN", "SubscriptionConfig", "SubscriptionPlugin"]


class SubscriptionConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    product: Annotated[
        str,
        msgspec.Meta(
            min_length=1,
            description="The API product whose approved subscription a consumer needs to call the route.",
        ),
    ]


class SubscriptionPlugin(Plugin):
    name: ClassVar[str] = "subscription"
    version: ClassVar[str] = "1.0.0"
    priority: ClassVar[int] = 940  # just below the auth plugins, which set request.consumer
    Config: ClassVar[type[msgspec.Struct]] = SubscriptionConfig

    def __init__(self, config: SubscriptionConfig, *, subscriptions: SubscriptionSnapshot) -> None:
        super().__init__(config)
        self.product = config.product
        self.subscriptions = subscriptions

    def access(self, request: Request) -> Response | None:
        consumer = request.consumer
        if consumer is None:
            return Response.error(
                401,
                "unauthorized",
                f'product "{self.product}" requires an authenticated consumer with an approved subscription',
            )
        state = self.subscriptions.state(consumer.name, self.product)
        if state is SubscriptionState.APPROVED:
            return None
        return Response.error(
            403, "subscription_required", denial_message(consumer.name, self.product, state)
        )


PLUGIN = SubscriptionPlugin
