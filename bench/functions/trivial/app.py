"""Trivial handlers for the function benchmarks (bench/functions_bench.py and
bench/scenarios/function_route.toml.in): they do as little as a handler can, so that what is
measured is the gateway's path to and from the sandbox, not the handler's own work."""

from typing import Any


def ok(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """The same 2-byte "ok" the nginx upstream of bench/proxy_vs_nginx.py answers."""
    return {"statusCode": 200, "headers": {"content-type": "text/plain"}, "body": "ok"}


def request_id(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """The invocation's request id, so a response can be matched with its REPORT log line."""
    return {"statusCode": 200, "headers": {"content-type": "text/plain"}, "body": context.aws_request_id}
