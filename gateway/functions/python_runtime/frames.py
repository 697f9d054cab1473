"""The invocation channel of the built-in python runtime: length-prefixed frames on a socketpair.

The built-in runtime is the gateway's own code on both ends, so it does not need HTTP to get
its events: each instance gets one end of a Unix socketpair when it is forked, and an
invocation is one frame each way. That saves the HTTP requests and responses the Runtime API
costs per invocation (head formatting and parsing on both sides), which is most of a trivial
function's cost. Runtimes that are not ours (``runtime = "provided"``, AWS's runtime interface
client) speak the real Runtime API.

    gateway -> instance   u32 length | u16 header length | header | event payload
                          header = request id, deadline ms, function ARN, trace id, client
                          context, cognito identity, shape, joined by NUL (UTF-8; JSON texts
                          cannot hold a raw NUL, ids and ARNs do not)
                          shape: "" (the payload is the JSON event) or "http2" (the payload is an
                          HTTP request's parts, see gateway.functions.inline_http)
    instance -> gateway   u32 length | u8 kind | u32 max RSS (KiB) | u32 CPU time (ms) | body
                          kind: READY (first frame: initialised, ready for events), RESPONSE,
                          ERROR (body: AWS's error document), INIT_ERROR (then it exits),
                          RESPONSE_HTTP (to a shaped invocation: the mapped HTTP response)

The length counts what follows it. The instance reports its own peak resident size and CPU
time with every answer (one getrusage call), so the gateway need not read /proc per invocation.
"""

from __future__ import annotations

import struct

LENGTH = struct.Struct("<I")
HEADER_LENGTH = struct.Struct("<H")
REPLY_HEAD = struct.Struct("<IBII")  # length, kind, max RSS KiB, CPU ms
_INVOCATION_HEAD = struct.Struct("<IH")  # LENGTH then HEADER_LENGTH, packed in one call

READY = 1
RESPONSE = 2
ERROR = 3
INIT_ERROR = 4
RESPONSE_HTTP = 5

SEPARATOR = "\0"


def invocation_frame(
    request_id: str,
    deadline_ms: int,
    function_arn: str,
    trace_id: str,
    client_context: str | None,
    cognito_identity: str | None,
    payload: bytes,
    shape: str = "",
) -> bytes:
    header = SEPARATOR.join(
        (
            request_id,
            str(deadline_ms),
            function_arn,
            trace_id,
            client_context or "",
            cognito_identity or "",
            shape,
        )
    ).encode()
    # One join: the payload (the event) is copied once, not once per concatenation.
    return b"".join(
        (_INVOCATION_HEAD.pack(HEADER_LENGTH.size + len(header) + len(payload), len(header)), header, payload)
    )


def reply_frame(kind: int, max_rss_kib: int, cpu_ms: int, body: bytes) -> bytes:
    return REPLY_HEAD.pack(REPLY_HEAD.size - LENGTH.size + len(body), kind, max_rss_kib, cpu_ms) + body
