"""An API written for AWS with aws-lambda-powertools' event handler, deployed unchanged.

Two handlers in one module: `http_handler` (APIGatewayHttpResolver, HTTP API payload 2.0) and
`rest_handler` (APIGatewayRestResolver, REST API payload 1.0). Routes carry the gateway route's
prefix (/pt/... and /ptrest/...), as they would behind an API Gateway route without a base path.
"""

from __future__ import annotations

import json
import os
from typing import Any

from aws_lambda_powertools.event_handler import (
    APIGatewayHttpResolver,
    APIGatewayRestResolver,
    Response,
    content_types,
)
from aws_lambda_powertools.shared.cookies import Cookie
from aws_lambda_powertools.utilities.typing import LambdaContext

http_app = APIGatewayHttpResolver()
rest_app = APIGatewayRestResolver()


@http_app.get("/pt/items/<item_id>")
def get_item(item_id: str) -> dict[str, Any]:
    event = http_app.current_event
    return {
        "item": item_id,
        "verbose": event.get_query_string_value("verbose"),
        "tags": event.query_string_parameters.get("tag"),  # HTTP API joins repeats with commas
        "route_key": event.route_key,
        "agent": event.headers.get("user-agent"),
        "function": os.environ["AWS_LAMBDA_FUNCTION_NAME"],
    }


@http_app.post("/pt/orders")
def create_order() -> Response[str]:
    order = http_app.current_event.json_body
    total = sum(line["price"] * line["quantity"] for line in order["lines"])
    return Response(
        status_code=201,
        content_type=content_types.APPLICATION_JSON,
        body=json.dumps({"customer": order["customer"], "total": total}),
        headers={"Location": f"/pt/orders/{order['customer']}-1"},
    )


@http_app.post("/pt/session")
def open_session() -> Response[str]:
    cookies = [
        Cookie(name="session", value="s3cr3t", http_only=True, path="/"),
        Cookie(name="theme", value="dark", secure=False),
    ]
    return Response(
        status_code=202,
        content_type=content_types.TEXT_PLAIN,
        body="session opened",
        headers={"X-Session-State": "open"},
        cookies=cookies,
    )


@http_app.get("/pt/whoami")
def whoami() -> dict[str, Any]:
    event = http_app.current_event
    return {"cookies": event.cookies, "source_ip": event.request_context.http.source_ip}


@rest_app.get("/ptrest/items/<item_id>")
def get_rest_item(item_id: str) -> dict[str, Any]:
    event = rest_app.current_event
    return {
        "item": item_id,
        "tags": event.multi_value_query_string_parameters.get("tag"),
        "resource": event.resource,
        "method": event.http_method,
    }


@rest_app.post("/ptrest/echo")
def rest_echo() -> Response[str]:
    event = rest_app.current_event
    return Response(
        status_code=201,
        content_type=content_types.APPLICATION_JSON,
        body=json.dumps({"echo": event.json_body}),
        headers={"X-Echo": "yes"},
        cookies=[Cookie(name="seen", value="1")],
    )


def http_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return http_app.resolve(event, context)


def rest_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return rest_app.resolve(event, context)
