"""What the Lambda Invoke API needs from the function runtime: the `Invoker` interface.

`gateway.functions.invoke_api.InvokeApp` speaks AWS's wire protocol and calls an `Invoker` for the
actual work; the real implementation sits on the functions' warm pools (and the durable queue for
``Event`` invocations), tests use a small in-memory one. The contract:

- ``exists(name)`` says whether a function of that (unqualified) name is configured. The Invoke
  API asks before anything else, so an unknown name is a ``ResourceNotFoundException`` and a
  ``DryRun`` never reaches ``invoke``.
- ``invoke(name, payload, ...)`` runs (``RequestResponse``) or enqueues (``Event``) one
  invocation. ``payload`` is the JSON event as the client sent it (``b"{}"`` when it sent none).
  For ``RequestResponse`` it returns when the function has answered; a function that failed is
  NOT an exception but an `InvokeOutcome` with ``function_error`` set and the error document
  (``{"errorMessage", "errorType", "stackTrace"}``) as ``payload``, exactly as AWS reports it.
  For ``Event`` it returns as soon as the event is durably queued (the outcome's payload is
  ignored).
- Refusals are exceptions: `TooManyRequests` (over the function's concurrency after the
  bounded wait, or the async queue is full), `FunctionNotFound` (the function went away between
  ``exists`` and ``invoke``, e.g. a config reload). Any other exception is the gateway's own
  failure and becomes a ``ServiceException`` (HTTP 500).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Protocol

__all__ = [
    "FunctionNotFound",
    "InvocationType",
    "InvokeOutcome",
    "Invoker",
    "LogType",
    "ThrottleReason",
    "TooManyRequests",
]


class InvocationType(enum.StrEnum):
    """``X-Amz-Invocation-Type``. ``DryRun`` is answered by the Invoke API itself."""

    REQUEST_RESPONSE = "RequestResponse"
    EVENT = "Event"
    DRY_RUN = "DryRun"


class LogType(enum.StrEnum):
    """``X-Amz-Log-Type``: ``Tail`` asks for the end of the invocation's log in the response."""

    NONE = "None"
    TAIL = "Tail"


class ThrottleReason(enum.StrEnum):
    """The ``Reason`` of a ``TooManyRequestsException`` (the values of AWS's ThrottleReason enum
    that a gateway can produce)."""

    CONCURRENT_INVOCATION_LIMIT_EXCEEDED = "ConcurrentInvocationLimitExceeded"
    FUNCTION_INVOCATION_RATE_LIMIT_EXCEEDED = "FunctionInvocationRateLimitExceeded"
    RESERVED_FUNCTION_CONCURRENT_INVOCATION_LIMIT_EXCEEDED = (
        "ReservedFunctionConcurrentInvocationLimitExceeded"
    )
    RESERVED_FUNCTION_INVOCATION_RATE_LIMIT_EXCEEDED = "ReservedFunctionInvocationRateLimitExceeded"
    CALLER_RATE_LIMIT_EXCEEDED = "CallerRateLimitExceeded"


@dataclass(frozen=True, slots=True)
class InvokeOutcome:
    """The result of one invocation as the Invoke API reports it.

    payload:        the function's response, or its error document when ``function_error`` is set.
    function_error: ``"Unhandled"`` (the runtime reported an error, the function crashed, timed
                    out or ran out of memory) or ``"Handled"``; None on success.
    log_tail:       the invocation's log output, at least the last 4 KB of it (the Invoke API
                    trims it); empty when logs were not kept.
    executed_version: what AWS returns in ``X-Amz-Executed-Version``; the gateway has no
                    published versions, so always ``$LATEST``.
    """

    payload: bytes
    function_error: str | None = None
    log_tail: bytes = b""
    executed_version: str = "$LATEST"


class TooManyRequests(Exception):
    """The invocation was refused for lack of capacity; the client may retry after a while."""

    def __init__(
        self,
        message: str = "Rate Exceeded.",
        *,
        reason: ThrottleReason = ThrottleReason.RESERVED_FUNCTION_CONCURRENT_INVOCATION_LIMIT_EXCEEDED,
        retry_after: int | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.reason = reason
        self.retry_after = retry_after


class FunctionNotFound(LookupError):
    """No function of that name (any more)."""


class Invoker(Protocol):
    def exists(self, name: str) -> bool:
        """Whether a function called ``name`` is configured."""
        ...

    async def invoke(
        self,
        name: str,
        payload: bytes,
        *,
        invocation_type: InvocationType,
        request_id: str,
        log_type: LogType,
        client_context: str | None,
        idempotency_key: str | None,
    ) -> InvokeOutcome:
        """Run (``RequestResponse``) or durably enqueue (``Event``) one invocation.

        request_id:     the AWS request id (a UUID) the API answers with in ``x-amzn-RequestId``;
                        use it as the invocation's ``aws_request_id``.
        log_type:       ``Tail`` when the caller wants ``log_tail`` filled in.
        client_context: the decoded ``X-Amz-Client-Context`` JSON text (for the runtime's
                        ``Lambda-Runtime-Client-Context`` header); None for ``Event``, as AWS
                        passes it to synchronous invocations only.
        idempotency_key: the ``Idempotency-Key`` header: the same key within the invoker's window
                        runs once and answers every repeat with the first outcome.
        """
        ...
