"""The hello function of the issue's example config: GET /hello/{name}."""

import json
import os
from typing import Any


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    name = (event.get("pathParameters") or {}).get("name", "world")
    greeting = os.environ.get("GREETING", "hello")
    return {
        "statusCode": 200,
        "headers": {"content-type": "application/json"},
        "body": json.dumps({"message": f"{greeting}, {name}!", "request_id": context.aws_request_id}),
    }
