"""The Lambda Invoke API (``POST /2015-03-31/functions/{FunctionName}/invocations``), AWS's wire format.

Transport-independent like `gateway.admin.AdminApp`: the gateway serves `InvokeApp.handle` on the
``[admin]`` listener with its own HTTP engine; the work is done by an `Invoker`
(`gateway.functions.invoker`). boto3's Lambda client pointed at the listener with ``endpoint_url``
works unchanged:

- ``FunctionName``: a name, ``name:qualifier``, a partial ARN (``123456789012:function:name``) or a
  full ARN (``arn:aws:lambda:region:account:function:name[:qualifier]``); ``?Qualifier=``. The gateway
  has no published versions or aliases: only ``$LATEST`` (or no qualifier) is found.
- ``X-Amz-Invocation-Type``: ``RequestResponse`` (default, 200 with the function's response),
  ``Event`` (202, empty body, once the event is durably queued), ``DryRun`` (204).
- A function error is still HTTP 200, with ``X-Amz-Function-Error: Unhandled|Handled`` and the error
  document as the body. ``X-Amz-Log-Type: Tail`` adds ``X-Amz-Log-Result``: the last 4 KB of the
  invocation's log, base64. ``X-Amz-Client-Context`` (base64 JSON) reaches synchronous invocations.
  ``X-Amz-Executed-Version: $LATEST`` and ``x-amzn-RequestId`` on every answer.
- ``Idempotency-Key`` is passed to the invoker (the same key runs once within its window).
- Errors in AWS's shape: HTTP status, ``x-amzn-ErrorType: <Code>`` and a JSON body such as
  ``{"Type": "User", "Message": "Function not found: arn:..."}``, so SDKs raise their modelled
  exceptions (``ResourceNotFoundException`` 404, ``TooManyRequestsException`` 429 with ``Reason`` and
  ``Retry-After``, ``InvalidRequestContentException`` 400 for a payload that is not JSON,
  ``RequestTooLargeException`` 413, ``ServiceException`` 500, ...).

Every request is authenticated first: an AWS Signature V4 made with one of ``aws_keys`` (what SDKs
send), or ``Authorization: Bearer <admin token>`` (what ``lambdagate invoke`` and curl send).
"""

from __future__ import annotations

import base64
import binascii
import hmac
import re
import traceback
import uuid
from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeVar
from urllib.parse import parse_qs, unquote

import msgspec

from gateway.logs import log
from gateway.plugins import Response

from .invoker import FunctionNotFound, InvocationType, InvokeOutcome, Invoker, LogType, TooManyRequests
from .sigv4 import SignatureError, SigV4Verifier, is_signed

__all__ = [
    "ASYNC_PAYLOAD_LIMIT",
    "INVOKE_PATH_PREFIX",
    "LOG_TAIL_BYTES",
    "SYNC_PAYLOAD_LIMIT",
    "AwsError",
    "FunctionRef",
    "InvokeApp",
    "parse_function_ref",
]

INVOKE_PATH_PREFIX = "/2015-03-31/functions/"
SYNC_PAYLOAD_LIMIT = 6 * 1024 * 1024  # AWS: 6 MB request and response for RequestResponse
ASYNC_PAYLOAD_LIMIT = 1024 * 1024  # AWS: 1 MB for Event (256 KB until late 2025)
LOG_TAIL_BYTES = 4096
CLIENT_CONTEXT_LIMIT = 3583  # AWS's limit on the base64 X-Amz-Client-Context header
IDEMPOTENCY_KEY_LIMIT = 256
LATEST = "$LATEST"
_INVALID_TOKEN = "The security token included in the request is invalid."

# AWS's NamespacedFunctionName pattern, with the parts named.
_FUNCTION_REF_RE = re.compile(
    r"(?:arn:(?P<partition>aws[a-zA-Z-]*)?:lambda:)?"
    r"(?:(?P<region>(?:eusc-)?[a-z]{2}(?:-gov|-iso[a-z]?)?-[a-z]+-\d):)?"
    r"(?:(?P<account>\d{12}):)?"
    r"(?:function:)?"
    r"(?P<name>[a-zA-Z0-9_.-]+)"
    r"(?::(?P<qualifier>\$LATEST(?:\.PUBLISHED)?|[a-zA-Z0-9_-]+))?"
)
_NAME_LIMIT = 64
_REF_LIMIT = 256

_encoder = msgspec.json.Encoder()
_Choice = TypeVar("_Choice", InvocationType, LogType)


class AwsError(Exception):
    """An Invoke API refusal, answered as AWS answers it.

    ``message_key`` is ``"message"`` or ``"Message"``: AWS's error shapes differ in the case
    (ResourceNotFoundException and ServiceException say ``Message``); SDKs read either.
    ``error_type`` is the body's ``Type`` (``User`` or ``Service``); None for errors of the
    authentication front end, whose bodies carry only the message.
    """

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        message_key: str = "message",
        error_type: str | None = "User",
        fields: Mapping[str, str] | None = None,
        headers: Iterable[tuple[str, str]] = (),
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.message_key = message_key
        self.error_type = error_type
        self.fields = dict(fields or {})
        self.headers = list(headers)

    def response(self, request_id: str) -> Response:
        document: dict[str, str] = {}
        if self.error_type is not None:
            document["Type"] = self.error_type
        document.update(self.fields)
        document[self.message_key] = self.message
        return Response(
            self.status,
            _encoder.encode(document),
            [
                ("Content-Type", "application/json"),
                ("x-amzn-RequestId", request_id),
                ("x-amzn-ErrorType", self.code),
                *self.headers,
            ],
        )


class FunctionRef(msgspec.Struct, frozen=True):
    """A parsed ``FunctionName``: region and account only when the caller wrote an ARN."""

    name: str
    qualifier: str | None = None
    region: str | None = None
    account: str | None = None


def parse_function_ref(value: str) -> FunctionRef | None:
    """Name, partial ARN or full ARN -> its parts; None when it is none of those."""
    match = _FUNCTION_REF_RE.fullmatch(value)
    if match is None or len(value) > _REF_LIMIT or len(match["name"]) > _NAME_LIMIT:
        return None
    return FunctionRef(match["name"], match["qualifier"], match["region"], match["account"])


class InvokeApp:
    def __init__(
        self,
        invoker: Invoker,
        aws_keys: Mapping[str, str],
        admin_token: str | None,
        *,
        region: str = "us-east-1",
        account_id: str = "000000000000",
        sync_payload_limit: int = SYNC_PAYLOAD_LIMIT,
        async_payload_limit: int = ASYNC_PAYLOAD_LIMIT,
        verifier: SigV4Verifier | None = None,
        new_request_id: Callable[[], str] = lambda: str(uuid.uuid4()),
    ) -> None:
        """``region`` and ``account_id`` only fill in the ARNs of error messages when the caller
        gave a bare name; any region and account in a caller's ARN are accepted. ``verifier``
        replaces the default `SigV4Verifier` over ``aws_keys`` (tests pass one with a clock)."""
        self._invoker = invoker
        self._token = admin_token.encode() if admin_token else None
        self._verifier = verifier if verifier is not None else SigV4Verifier(aws_keys)
        self._region = region
        self._account_id = account_id
        self._sync_limit = sync_payload_limit
        self._async_limit = async_payload_limit
        self._new_request_id = new_request_id

    async def handle(
        self, method: str, path: str, query: str, headers: list[tuple[str, str]], body: bytes
    ) -> Response:
        """Answer one request; ``path`` and ``query`` as on the wire (still percent-encoded)."""
        request_id = self._new_request_id()
        try:
            return await self._invoke(request_id, method, path, query, headers, body)
        except AwsError as exc:
            return exc.response(request_id)
        except Exception as exc:
            log(
                "error",
                "Invoke API request failed",
                method=method,
                path=path,
                request_id=request_id,
                error=f"{type(exc).__name__}: {exc}",
                traceback=traceback.format_exc(),
            )
            error = AwsError(
                500,
                "ServiceException",
                "The gateway failed to invoke the function; see its log.",
                message_key="Message",
                error_type="Service",
            )
            return error.response(request_id)

    async def _invoke(
        self, request_id: str, method: str, path: str, query: str, headers: list[tuple[str, str]], body: bytes
    ) -> Response:
        fields = _first_values(headers)
        signed_region = self._authenticate(method, path, query, headers, fields, body)
        ref = _route(method, path)
        region = ref.region or signed_region or self._region
        arn = f"arn:aws:lambda:{region}:{ref.account or self._account_id}:function:{ref.name}"
        qualifier = _qualifier(ref, query)
        if qualifier not in (None, LATEST):
            raise _not_found(f"{arn}:{qualifier}")
        invocation_type = _enum_header(fields, "x-amz-invocation-type", "invocationType", InvocationType)
        log_type = _enum_header(fields, "x-amz-log-type", "logType", LogType)
        client_context = _client_context(fields.get("x-amz-client-context"))
        idempotency_key = _idempotency_key(fields.get("idempotency-key"))
        payload = self._payload(body, invocation_type)
        if not self._invoker.exists(ref.name):
            raise _not_found(arn)
        if invocation_type is InvocationType.DRY_RUN:
            return Response(204, b"", [("x-amzn-RequestId", request_id)])
        is_event = invocation_type is InvocationType.EVENT
        try:
            outcome = await self._invoker.invoke(
                ref.name,
                payload,
                invocation_type=invocation_type,
                request_id=request_id,
                log_type=LogType.NONE if is_event else log_type,
                client_context=None if is_event else client_context,
                idempotency_key=idempotency_key,
            )
        except TooManyRequests as exc:
            retry = [("Retry-After", str(exc.retry_after))] if exc.retry_after is not None else []
            raise AwsError(
                429, "TooManyRequestsException", exc.message, fields={"Reason": exc.reason}, headers=retry
            ) from None
        except FunctionNotFound:
            raise _not_found(arn) from None
        if is_event:
            return Response(202, b"", [("x-amzn-RequestId", request_id)])
        return self._sync_response(request_id, outcome, log_type)

    def _authenticate(
        self,
        method: str,
        path: str,
        query: str,
        headers: list[tuple[str, str]],
        fields: Mapping[str, str],
        body: bytes,
    ) -> str | None:
        """Refuse an unauthenticated request; the signed region when SigV4 was used."""
        scheme, _, credential = fields.get("authorization", "").strip().partition(" ")
        if scheme.lower() == "bearer":
            # compare_digest: the time taken does not reveal how much of the token matched.
            if self._token is None or not hmac.compare_digest(credential.strip().encode(), self._token):
                raise AwsError(403, "UnrecognizedClientException", _INVALID_TOKEN, error_type=None)
            return None
        if not is_signed(headers, query):
            raise AwsError(
                403, "MissingAuthenticationTokenException", "Missing Authentication Token", error_type=None
            )
        try:
            return self._verifier.verify(method, path, query, headers, body).region
        except SignatureError as exc:
            raise AwsError(exc.status, exc.code, exc.message, error_type=None) from None

    def _payload(self, body: bytes, invocation_type: InvocationType) -> bytes:
        if invocation_type is InvocationType.EVENT:
            limit, operation = self._async_limit, "InvokeAsync"
        else:
            limit, operation = self._sync_limit, "InvokeFunction"
        if len(body) > limit:
            raise AwsError(
                413,
                "RequestTooLargeException",
                f"Request must be smaller than {limit} bytes for the {operation} operation",
            )
        if not body.strip():
            return b"{}"  # as AWS: an invocation without a payload gets an empty JSON object
        try:
            msgspec.json.decode(body)
        except msgspec.DecodeError as exc:
            raise AwsError(
                400,
                "InvalidRequestContentException",
                f"Could not parse request body into json: Could not parse payload into json: {exc}",
            ) from None
        return body

    def _sync_response(self, request_id: str, outcome: InvokeOutcome, log_type: LogType) -> Response:
        payload, function_error = outcome.payload, outcome.function_error
        if len(payload) > self._sync_limit:
            # AWS reports an oversized response as the function's error, not the API's.
            function_error = "Unhandled"
            payload = _encoder.encode(
                {
                    "errorMessage": "Response payload size exceeded maximum allowed payload size "
                    f"({self._sync_limit} bytes).",
                    "errorType": "Function.ResponseSizeTooLarge",
                }
            )
        headers = [
            ("Content-Type", "application/json"),
            ("x-amzn-RequestId", request_id),
            ("X-Amz-Executed-Version", outcome.executed_version),
        ]
        if function_error is not None:
            headers.append(("X-Amz-Function-Error", function_error))
        if log_type is LogType.TAIL:
            headers.append(
                ("X-Amz-Log-Result", base64.b64encode(outcome.log_tail[-LOG_TAIL_BYTES:]).decode())
            )
        return Response(200, payload, headers)


def _first_values(headers: Iterable[tuple[str, str]]) -> dict[str, str]:
    fields: dict[str, str] = {}
    for name, value in headers:
        fields.setdefault(name.lower(), value)
    return fields


def _route(method: str, path: str) -> FunctionRef:
    # Split the raw path before decoding, so an encoded "/" stays inside the function name.
    segments = path.split("/")
    if len(segments) != 5 or segments[:3] != ["", "2015-03-31", "functions"] or segments[4] != "invocations":
        raise AwsError(404, "UnknownOperationException", f"Unknown operation {method} {path}")
    if method != "POST":
        raise AwsError(
            405, "UnknownOperationException", f"Unknown operation {method} {path}; Invoke is a POST"
        )
    raw = unquote(segments[3])
    ref = parse_function_ref(raw)
    if ref is None:
        raise AwsError(
            400,
            "ValidationException",
            f"1 validation error detected: Value '{raw}' at 'functionName' failed to satisfy constraint: "
            f"Member must satisfy regular expression pattern: {_FUNCTION_REF_RE.pattern}",
            error_type=None,
        )
    return ref


def _qualifier(ref: FunctionRef, query: str) -> str | None:
    values = parse_qs(query, keep_blank_values=True).get("Qualifier")
    given = values[-1] if values else None
    if given is not None and ref.qualifier is not None and given != ref.qualifier:
        raise AwsError(
            400,
            "InvalidParameterValueException",
            "The derived qualifier from the function name does not match the specified qualifier.",
        )
    return given if given is not None else ref.qualifier


def _enum_header(fields: Mapping[str, str], header: str, member: str, kind: type[_Choice]) -> _Choice:
    value = fields.get(header)
    if value is None:
        return next(iter(kind))
    try:
        return kind(value)
    except ValueError:
        allowed = ", ".join(option.value for option in kind)
        raise AwsError(
            400,
            "ValidationException",
            f"1 validation error detected: Value '{value}' at '{member}' failed to satisfy constraint: "
            f"Member must satisfy enum value set: [{allowed}]",
            error_type=None,
        ) from None


def _client_context(value: str | None) -> str | None:
    """The decoded JSON text of ``X-Amz-Client-Context``."""
    if value is None or not value.strip():
        return None
    if len(value) > CLIENT_CONTEXT_LIMIT:
        raise AwsError(
            400,
            "InvalidRequestContentException",
            f"Client context must be at most {CLIENT_CONTEXT_LIMIT} bytes of base64-encoded JSON.",
        )
    try:
        text = base64.b64decode(value.strip(), validate=True).decode()
        document: Any = msgspec.json.decode(text)
    except (binascii.Error, UnicodeDecodeError, msgspec.DecodeError):
        document = None
        text = ""
    if not isinstance(document, dict):
        raise AwsError(
            400,
            "InvalidRequestContentException",
            "Client context must be a valid Base64-encoded JSON object.",
        )
    return text


def _idempotency_key(value: str | None) -> str | None:
    if value is None or not value.strip():
        return None
    key = value.strip()
    if len(key) > IDEMPOTENCY_KEY_LIMIT:
        raise AwsError(
            400,
            "InvalidParameterValueException",
            f"Idempotency-Key must be at most {IDEMPOTENCY_KEY_LIMIT} characters.",
        )
    return key


def _not_found(arn: str) -> AwsError:
    return AwsError(404, "ResourceNotFoundException", f"Function not found: {arn}", message_key="Message")
