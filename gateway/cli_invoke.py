"""``lambdagate invoke``: call a function of a running gateway through its Invoke API.

The command reads the same config file as the gateway to find the admin listener and its
token, then speaks AWS's Invoke API over plain HTTP (what boto3 does, minus the signing).
"""

from __future__ import annotations

import argparse
import base64
import http.client
import json
import sys

from .config import ConfigError, load_config, parse_listen

__all__ = ["functions_command", "invoke_command"]


def invoke_command(args: argparse.Namespace) -> int:
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        for line in exc.errors:
            print(line, file=sys.stderr)
        return 1
    if config.admin is None:
        print(f"{args.config}: [admin] is not configured: the Invoke API is served there", file=sys.stderr)
        return 1
    if args.name not in config.functions:
        print(f"{args.config}: no function named {args.name!r}", file=sys.stderr)
        return 1
    payload = args.payload.encode()
    try:
        json.loads(payload)
    except ValueError as exc:
        print(f"--payload is not JSON: {exc}", file=sys.stderr)
        return 2
    host, port = parse_listen(config.admin.listen)
    connection = http.client.HTTPConnection(host or "127.0.0.1", port, timeout=args.timeout)
    headers = {
        "Authorization": f"Bearer {config.admin.token}",
        "Content-Type": "application/json",
        "X-Amz-Invocation-Type": "Event" if args.async_ else "RequestResponse",
        "X-Amz-Log-Type": "Tail" if args.logs else "None",
    }
    try:
        connection.request("POST", f"/2015-03-31/functions/{args.name}/invocations", payload, headers)
        response = connection.getresponse()
        body = response.read()
    except OSError as exc:
        print(f"cannot reach the gateway's admin listener at {config.admin.listen}: {exc}", file=sys.stderr)
        return 1
    finally:
        connection.close()
    if args.logs and response.getheader("X-Amz-Log-Result"):
        sys.stderr.write(
            base64.b64decode(response.getheader("X-Amz-Log-Result", "")).decode(errors="replace")
        )
    if response.status == 202:
        print(f"queued (request id {response.getheader('x-amzn-RequestId', '?')})")
        return 0
    sys.stdout.write(body.decode(errors="replace") + "\n")
    if response.status >= 400 or response.getheader("X-Amz-Function-Error"):
        return 1
    return 0


def functions_command(args: argparse.Namespace) -> int:
    """`lambdagate functions`: instances (warm/busy) and metrics per function, from one worker."""
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        for line in exc.errors:
            print(line, file=sys.stderr)
        return 1
    if config.admin is None:
        print(
            f"{args.config}: [admin] is not configured: the function metrics are served there",
            file=sys.stderr,
        )
        return 1
    host, port = parse_listen(config.admin.listen)
    connection = http.client.HTTPConnection(host or "127.0.0.1", port, timeout=10)
    try:
        connection.request("GET", "/functions", headers={"Authorization": f"Bearer {config.admin.token}"})
        response = connection.getresponse()
        body = response.read()
    except OSError as exc:
        print(f"cannot reach the gateway's admin listener at {config.admin.listen}: {exc}", file=sys.stderr)
        return 1
    finally:
        connection.close()
    if response.status != 200:
        sys.stderr.write(body.decode(errors="replace") + "\n")
        return 1
    metrics = json.loads(body)
    if args.json:
        print(json.dumps(metrics, indent=2))
        return 0
    columns = ("function", "instances", "busy", "idle", "invocations", "errors", "throttles", "cold_starts")
    print("  ".join(f"{c:>11}" for c in columns) + "  last_error")
    for name, m in sorted(metrics.items()):
        cells = [name] + [str(m.get(c, "")) for c in columns[1:]]
        print("  ".join(f"{c:>11}" for c in cells) + f"  {m.get('last_error') or '-'}")
    return 0
