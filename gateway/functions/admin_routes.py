"""Admin API endpoints for functions, next to gateway.admin's (same listener, same token):

POST /queues/{queue}/messages              publish a message to a trigger queue
GET  /functions/{name}/dead-letters        failed async events (event, error, attempts)
POST /functions/{name}/dead-letters/redrive  put them back on the function's async queue
GET  /functions                            instances, warm/busy and metrics per function
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable

import msgspec

from gateway.functions.async_invoker import async_queue_name
from gateway.functions.service import FunctionService
from gateway.plugins import Request, Response

__all__ = ["function_admin_routes"]

Handler = Callable[[Request, bytes], Awaitable[Response]]


class _PublishBody(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    body: str
    attributes: dict[str, str] = {}


def function_admin_routes(service: FunctionService, token: str) -> list[tuple[str, Handler]]:
    """(path pattern, handler) pairs for the admin router."""

    def authorized(request: Request) -> Response | None:
        given = request.headers.get("authorization") or ""
        if hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
            return None
        return Response.error(
            401,
            "unauthorized",
            "the admin API needs an Authorization: Bearer token",
            [("WWW-Authenticate", 'Bearer realm="lambdagate-admin"')],
        )

    async def publish(request: Request, body: bytes) -> Response:
        if (refused := authorized(request)) is not None:
            return refused
        if request.method != "POST":
            return Response.error(405, "method_not_allowed", "use POST", [("Allow", "POST")])
        try:
            message = msgspec.json.decode(body, type=_PublishBody)
        except msgspec.DecodeError as exc:
            return Response.error(
                400, "invalid_body", f"expected {{'body': str, 'attributes'?: {{}}}}: {exc}"
            )
        queue = request.path_params["queue"]
        if not any(trigger.queue == queue for trigger in service.config.triggers):
            return Response.error(404, "not_found", f'no trigger reads queue "{queue}"')
        message_id = await service.publish(queue, message.body, message.attributes)
        return Response.json(201, {"message_id": message_id, "queue": queue})

    async def dead_letters(request: Request, body: bytes) -> Response:
        if (refused := authorized(request)) is not None:
            return refused
        name = request.path_params["name"]
        if name not in service.pools or service.queue is None:
            return Response.error(404, "not_found", f'no function named "{name}"')
        letters = await service.queue.dead_letters(async_queue_name(name))
        return Response.json(
            200,
            {
                "data": [
                    {
                        "id": letter.id,
                        "event": letter.payload.decode("utf-8", "replace"),
                        "condition": letter.condition,
                        "error": letter.error,
                        "attempts": letter.attempts,
                        "dead_at": letter.dead_at,
                    }
                    for letter in letters
                ]
            },
        )

    async def redrive(request: Request, body: bytes) -> Response:
        if (refused := authorized(request)) is not None:
            return refused
        if request.method != "POST":
            return Response.error(405, "method_not_allowed", "use POST", [("Allow", "POST")])
        name = request.path_params["name"]
        if name not in service.pools or service.queue is None:
            return Response.error(404, "not_found", f'no function named "{name}"')
        moved = await service.queue.redrive(async_queue_name(name))
        return Response.json(200, {"redriven": moved})

    async def functions(request: Request, body: bytes) -> Response:
        if (refused := authorized(request)) is not None:
            return refused
        return Response.json(
            200, {name: msgspec.to_builtins(pool.snapshot()) for name, pool in service.pools.items()}
        )

    return [
        ("/queues/{queue}/messages", publish),
        ("/functions/{name}/dead-letters", dead_letters),
        ("/functions/{name}/dead-letters/redrive", redrive),
        ("/functions", functions),
    ]
