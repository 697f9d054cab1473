"""The Lambda Invoke API served by the engine on a real socket, driven by boto3's Lambda client.

The collaborator behind the API is a small in-memory `Invoker` (the interface the real function
pools implement); everything between boto3 and it is the real thing: the engine, SigV4, AWS's
headers and error shapes, and botocore's own response and error parsing.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import boto3
import httpx
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from gateway.functions.invoke_api import FunctionRef, InvokeApp, parse_function_ref
from gateway.functions.invoker import (
    FunctionNotFound,
    InvocationType,
    InvokeOutcome,
    LogType,
    ThrottleReason,
    TooManyRequests,
)
from gateway.functions.sigv4 import SigV4Verifier
from gateway.plugins import Request, Response
from tests.support.engine import EngineThread, RouteAction, running_engine

KEY_ID = "AKIALAMBDAGATE"
SECRET = "test-secret-key"
ADMIN_TOKEN = "admin-token-for-tests"
SYNC_LIMIT = 64 * 1024
ASYNC_LIMIT = 16 * 1024
BEARER = f"Bearer {ADMIN_TOKEN}"
HELLO = "/2015-03-31/functions/hello/invocations"


@dataclass
class Call:
    name: str
    payload: bytes
    invocation_type: InvocationType
    request_id: str
    log_type: LogType
    client_context: str | None
    idempotency_key: str | None


@dataclass
class FakeInvoker:
    """Functions by name, each a small behaviour; records every call it gets."""

    calls: list[Call] = field(default_factory=list)
    first_outcomes: dict[str, InvokeOutcome] = field(default_factory=dict)
    functions: frozenset[str] = frozenset({"hello", "fails", "chatty", "busy", "broken", "gone", "huge"})

    def exists(self, name: str) -> bool:
        return name in self.functions

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
        self.calls.append(
            Call(name, payload, invocation_type, request_id, log_type, client_context, idempotency_key)
        )
        await asyncio.sleep(0)  # a real invoker awaits its pool
        if idempotency_key is not None and idempotency_key in self.first_outcomes:
            return self.first_outcomes[idempotency_key]
        outcome = self._run(name, payload, invocation_type, request_id, client_context)
        if idempotency_key is not None:
            self.first_outcomes[idempotency_key] = outcome
        return outcome

    def _run(
        self,
        name: str,
        payload: bytes,
        invocation_type: InvocationType,
        request_id: str,
        client_context: str | None,
    ) -> InvokeOutcome:
        if name == "busy":
            raise TooManyRequests(
                reason=ThrottleReason.RESERVED_FUNCTION_CONCURRENT_INVOCATION_LIMIT_EXCEEDED, retry_after=2
            )
        if name == "broken":
            raise RuntimeError("the pool fell over")
        if name == "gone":
            raise FunctionNotFound(name)
        if invocation_type is InvocationType.EVENT:
            return InvokeOutcome(b"")
        event = json.loads(payload)
        log = f"START RequestId: {request_id} Version: $LATEST\n".encode()
        if name == "fails":
            error = {"errorMessage": "no name given", "errorType": "ValueError", "stackTrace": ["  File x"]}
            return InvokeOutcome(json.dumps(error).encode(), function_error="Unhandled", log_tail=log)
        if name == "chatty":
            lines = b"".join(f"line {index:05d}\n".encode() for index in range(1000))
            return InvokeOutcome(b'"done"', log_tail=log + lines)
        if name == "huge":
            return InvokeOutcome(json.dumps("x" * (SYNC_LIMIT + 10)).encode())
        who = event.get("name", "world") if isinstance(event, dict) else "world"
        result = {"greeting": f"hello {who}", "event": event}
        if client_context is not None:
            result["client_context"] = json.loads(client_context)
        return InvokeOutcome(json.dumps(result).encode(), log_tail=log + b"hello\n")


class Clock:
    """The verifier's clock, so a test can move the gateway's time against the client's."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset


@dataclass
class Served:
    engine: EngineThread
    invoker: FakeInvoker
    clock: Clock

    def client(self, *, key_id: str = KEY_ID, secret: str = SECRET, region: str = "us-east-1") -> Any:
        session = boto3.session.Session()
        return session.client(
            "lambda",
            endpoint_url=self.engine.url,
            region_name=region,
            aws_access_key_id=key_id,
            aws_secret_access_key=secret,
            config=Config(retries={"total_max_attempts": 1}),
        )


@pytest.fixture(scope="module")
def served() -> Iterator[Served]:
    invoker = FakeInvoker()
    clock = Clock()
    app = InvokeApp(
        invoker,
        {KEY_ID: SECRET},
        ADMIN_TOKEN,
        sync_payload_limit=SYNC_LIMIT,
        async_payload_limit=ASYNC_LIMIT,
        verifier=SigV4Verifier({KEY_ID: SECRET}, clock=clock),
    )

    async def handle(request: Request, body: bytes) -> Response:
        return await app.handle(request.method, request.path, request.query, request.headers.items(), body)

    def routes(loop: asyncio.AbstractEventLoop, ticker: Any) -> list[tuple[str, Any]]:
        return [("$default", RouteAction.python_handler("invoke", handle))]

    with running_engine(routes) as engine:
        yield Served(engine, invoker, clock)


@pytest.fixture()
def lam(served: Served) -> Any:
    served.invoker.calls.clear()
    served.clock.offset = 0.0
    return served.client()


def last_call(served: Served) -> Call:
    assert served.invoker.calls, "the invoker was not called"
    return served.invoker.calls[-1]


def test_synchronous_invoke(served: Served, lam: Any) -> None:
    response = lam.invoke(FunctionName="hello", Payload=json.dumps({"name": "ada"}))
    assert response["StatusCode"] == 200
    assert response["ExecutedVersion"] == "$LATEST"
    assert "FunctionError" not in response and "LogResult" not in response
    assert json.loads(response["Payload"].read()) == {"greeting": "hello ada", "event": {"name": "ada"}}
    call = last_call(served)
    assert (call.name, call.invocation_type) == ("hello", InvocationType.REQUEST_RESPONSE)
    assert call.log_type is LogType.NONE
    # The AWS request id the client sees is the one the function runs under.
    assert response["ResponseMetadata"]["RequestId"] == call.request_id
    assert uuid.UUID(call.request_id).version == 4


def test_no_payload_is_an_empty_object(served: Served, lam: Any) -> None:
    response = lam.invoke(FunctionName="hello")
    assert json.loads(response["Payload"].read())["event"] == {}
    assert last_call(served).payload == b"{}"


@pytest.mark.parametrize(
    ("function_name", "qualifier"),
    [
        ("arn:aws:lambda:eu-west-1:123456789012:function:hello", None),
        ("arn:aws:lambda:eu-west-1:123456789012:function:hello:$LATEST", None),
        ("123456789012:function:hello", None),
        ("hello:$LATEST", None),
        ("hello", "$LATEST"),
    ],
)
def test_function_names_and_arns(served: Served, lam: Any, function_name: str, qualifier: str | None) -> None:
    extra = {"Qualifier": qualifier} if qualifier else {}
    response = lam.invoke(FunctionName=function_name, Payload=b"{}", **extra)
    assert response["StatusCode"] == 200
    assert last_call(served).name == "hello"


def test_event_invocation(served: Served, lam: Any) -> None:
    context = base64.b64encode(json.dumps({"custom": {"k": "v"}}).encode()).decode()
    response = lam.invoke(
        FunctionName="hello",
        InvocationType="Event",
        Payload=b'{"n": 1}',
        ClientContext=context,
        LogType="Tail",
    )
    assert response["StatusCode"] == 202
    assert response["Payload"].read() == b""
    call = last_call(served)
    assert call.invocation_type is InvocationType.EVENT
    assert call.payload == b'{"n": 1}'
    # As AWS: the client context and the log tail are for synchronous invocations only.
    assert call.client_context is None and call.log_type is LogType.NONE


def test_dry_run_checks_without_invoking(served: Served, lam: Any) -> None:
    response = lam.invoke(FunctionName="hello", InvocationType="DryRun", Payload=b"{}")
    assert response["StatusCode"] == 204
    assert served.invoker.calls == []
    with pytest.raises(lam.exceptions.ResourceNotFoundException):
        lam.invoke(FunctionName="nope", InvocationType="DryRun")


def test_tail_logs_are_the_last_4_kb(served: Served, lam: Any) -> None:
    response = lam.invoke(FunctionName="chatty", LogType="Tail", Payload=b"{}")
    log = base64.b64decode(response["LogResult"])
    assert len(log) == 4096
    assert log.endswith(b"line 00999\n")
    assert last_call(served).log_type is LogType.TAIL
    short = lam.invoke(FunctionName="hello", LogType="Tail", Payload=b"{}")
    assert base64.b64decode(short["LogResult"]) == (
        f"START RequestId: {last_call(served).request_id} Version: $LATEST\nhello\n".encode()
    )


def test_function_error_is_a_200_with_function_error(lam: Any) -> None:
    response = lam.invoke(FunctionName="fails", Payload=b"{}", LogType="Tail")
    assert response["StatusCode"] == 200
    assert response["FunctionError"] == "Unhandled"
    error = json.loads(response["Payload"].read())
    assert error["errorType"] == "ValueError" and error["errorMessage"] == "no name given"
    assert base64.b64decode(response["LogResult"]).startswith(b"START RequestId: ")


def test_oversized_response_becomes_a_function_error(lam: Any) -> None:
    response = lam.invoke(FunctionName="huge", Payload=b"{}")
    assert response["FunctionError"] == "Unhandled"
    assert json.loads(response["Payload"].read())["errorType"] == "Function.ResponseSizeTooLarge"


def test_client_context_reaches_synchronous_invocations(served: Served, lam: Any) -> None:
    context = {"client": {"installation_id": "abc"}, "custom": {"tier": "gold"}}
    encoded = base64.b64encode(json.dumps(context).encode()).decode()
    response = lam.invoke(FunctionName="hello", Payload=b"{}", ClientContext=encoded)
    assert json.loads(response["Payload"].read())["client_context"] == context
    with pytest.raises(lam.exceptions.InvalidRequestContentException):
        lam.invoke(FunctionName="hello", Payload=b"{}", ClientContext="not base64 json!")
    array = base64.b64encode(b"[1, 2]").decode()
    with pytest.raises(lam.exceptions.InvalidRequestContentException):
        lam.invoke(FunctionName="hello", Payload=b"{}", ClientContext=array)


def test_unknown_function(served: Served, lam: Any) -> None:
    with pytest.raises(lam.exceptions.ResourceNotFoundException) as caught:
        lam.invoke(FunctionName="nope", Payload=b"{}")
    error = caught.value.response
    arn = "arn:aws:lambda:us-east-1:000000000000:function:nope"
    assert error["Error"]["Message"] == f"Function not found: {arn}"
    assert error["ResponseMetadata"]["HTTPStatusCode"] == 404
    assert error["Type"] == "User"
    # The caller's ARN and the signed region name the function in the message.
    with pytest.raises(lam.exceptions.ResourceNotFoundException) as caught:
        lam.invoke(FunctionName="arn:aws:lambda:eu-west-1:123456789012:function:nope")
    assert caught.value.response["Error"]["Message"].endswith("eu-west-1:123456789012:function:nope")
    with pytest.raises(lam.exceptions.ResourceNotFoundException):
        lam.invoke(FunctionName="gone", Payload=b"{}")  # removed between exists() and invoke()
    assert served.invoker.calls[-1].name == "gone"


def test_only_latest_is_published(lam: Any) -> None:
    for extra in ({"FunctionName": "hello:live"}, {"FunctionName": "hello", "Qualifier": "1"}):
        with pytest.raises(lam.exceptions.ResourceNotFoundException) as caught:
            lam.invoke(Payload=b"{}", **extra)
        assert caught.value.response["Error"]["Message"].startswith("Function not found: arn:aws:lambda:")
    with pytest.raises(lam.exceptions.InvalidParameterValueException):
        lam.invoke(FunctionName="hello:$LATEST", Qualifier="live", Payload=b"{}")


def test_invalid_function_name(lam: Any) -> None:
    with pytest.raises(ClientError) as caught:
        lam.invoke(FunctionName="no spaces allowed", Payload=b"{}")
    assert caught.value.response["Error"]["Code"] == "ValidationException"
    assert caught.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400


def test_throttled(lam: Any) -> None:
    with pytest.raises(lam.exceptions.TooManyRequestsException) as caught:
        lam.invoke(FunctionName="busy", Payload=b"{}")
    error = caught.value.response
    assert error["ResponseMetadata"]["HTTPStatusCode"] == 429
    assert error["Reason"] == "ReservedFunctionConcurrentInvocationLimitExceeded"
    assert error["retryAfterSeconds"] == "2"
    assert error["Error"]["Message"] == "Rate Exceeded."


def test_payload_must_be_json(lam: Any) -> None:
    with pytest.raises(lam.exceptions.InvalidRequestContentException) as caught:
        lam.invoke(FunctionName="hello", Payload=b"{not json")
    assert caught.value.response["Error"]["Message"].startswith("Could not parse request body into json")
    for value in (b'"a string"', b"42", b"[1, 2]", b"null"):
        assert lam.invoke(FunctionName="hello", Payload=value, InvocationType="Event")["StatusCode"] == 202


def test_payload_size_limits(lam: Any) -> None:
    just_right = json.dumps("x" * (ASYNC_LIMIT - 2)).encode()
    assert len(just_right) == ASYNC_LIMIT
    assert lam.invoke(FunctionName="hello", InvocationType="Event", Payload=just_right)["StatusCode"] == 202
    with pytest.raises(lam.exceptions.RequestTooLargeException) as caught:
        lam.invoke(FunctionName="hello", InvocationType="Event", Payload=json.dumps("x" * ASYNC_LIMIT))
    assert caught.value.response["ResponseMetadata"]["HTTPStatusCode"] == 413
    assert f"smaller than {ASYNC_LIMIT} bytes" in caught.value.response["Error"]["Message"]
    # The synchronous limit is larger.
    assert lam.invoke(FunctionName="hello", Payload=json.dumps("x" * ASYNC_LIMIT))["StatusCode"] == 200
    with pytest.raises(lam.exceptions.RequestTooLargeException):
        lam.invoke(FunctionName="hello", Payload=json.dumps("x" * SYNC_LIMIT))


def test_invoker_failure_is_a_service_exception(lam: Any) -> None:
    with pytest.raises(lam.exceptions.ServiceException) as caught:
        lam.invoke(FunctionName="broken", Payload=b"{}")
    assert caught.value.response["ResponseMetadata"]["HTTPStatusCode"] == 500
    assert "the pool fell over" not in caught.value.response["Error"]["Message"]  # details stay in the log


def test_idempotency_key_is_passed_to_the_invoker(served: Served, lam: Any) -> None:
    def add_key(request: Any, **kwargs: Any) -> None:
        request.headers["Idempotency-Key"] = "order-42"

    # The header is added before signing, so it is signed like any other.
    lam.meta.events.register("before-sign.lambda.Invoke", add_key)
    first = json.loads(lam.invoke(FunctionName="hello", Payload=b'{"name": "first"}')["Payload"].read())
    again = json.loads(lam.invoke(FunctionName="hello", Payload=b'{"name": "second"}')["Payload"].read())
    assert first == again == {"greeting": "hello first", "event": {"name": "first"}}
    assert [call.idempotency_key for call in served.invoker.calls] == ["order-42", "order-42"]


def test_bad_signatures_are_refused(served: Served, lam: Any) -> None:
    wrong_secret = served.client(secret="not-the-secret")
    with pytest.raises(ClientError) as caught:
        wrong_secret.invoke(FunctionName="hello", Payload=b"{}")
    assert caught.value.response["Error"]["Code"] == "InvalidSignatureException"
    assert caught.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
    unknown_key = served.client(key_id="AKIAUNKNOWN")
    with pytest.raises(ClientError) as caught:
        unknown_key.invoke(FunctionName="hello", Payload=b"{}")
    assert caught.value.response["Error"]["Code"] == "UnrecognizedClientException"
    assert served.invoker.calls == []


def test_expired_signature(served: Served, lam: Any) -> None:
    served.clock.offset = 16 * 60  # the gateway's clock runs 16 minutes ahead of the client's
    with pytest.raises(ClientError) as caught:
        lam.invoke(FunctionName="hello", Payload=b"{}")
    assert caught.value.response["Error"]["Code"] == "InvalidSignatureException"
    assert caught.value.response["Error"]["Message"].startswith("Signature expired: ")
    served.clock.offset = 10 * 60
    assert lam.invoke(FunctionName="hello", Payload=b"{}")["StatusCode"] == 200


def test_any_signing_region_is_accepted(served: Served) -> None:
    client = served.client(region="ap-northeast-1")
    assert client.invoke(FunctionName="hello", Payload=b"{}")["StatusCode"] == 200
    with pytest.raises(client.exceptions.ResourceNotFoundException) as caught:
        client.invoke(FunctionName="nope")
    assert ":ap-northeast-1:" in caught.value.response["Error"]["Message"]


def test_bearer_token(served: Served) -> None:
    url = f"{served.engine.url}/2015-03-31/functions/hello/invocations"
    response = httpx.post(
        url,
        content=b'{"name": "curl"}',
        headers={
            "Authorization": BEARER,
            "X-Amz-Log-Type": "Tail",
            "Idempotency-Key": "k-1",
        },
    )
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.json()["greeting"] == "hello curl"
    assert response.headers["x-amz-executed-version"] == "$LATEST"
    assert base64.b64decode(response.headers["x-amz-log-result"]).endswith(b"hello\n")
    assert last_call(served).idempotency_key == "k-1"

    wrong = httpx.post(url, content=b"{}", headers={"Authorization": "Bearer wrong"})
    assert wrong.status_code == 403
    assert wrong.headers["x-amzn-errortype"] == "UnrecognizedClientException"
    assert wrong.json() == {"message": "The security token included in the request is invalid."}
    missing = httpx.post(url, content=b"{}")
    assert missing.status_code == 403
    assert missing.headers["x-amzn-errortype"] == "MissingAuthenticationTokenException"
    assert missing.json() == {"message": "Missing Authentication Token"}


def test_event_over_http_answers_202_with_a_request_id(served: Served) -> None:
    response = httpx.post(
        f"{served.engine.url}/2015-03-31/functions/hello/invocations",
        content=b"{}",
        headers={"Authorization": BEARER, "X-Amz-Invocation-Type": "Event"},
    )
    assert response.status_code == 202 and response.content == b""
    assert response.headers["x-amzn-requestid"] == last_call(served).request_id


@pytest.mark.parametrize(
    ("method", "path", "headers", "status", "code"),
    [
        ("POST", "/2015-03-31/functions/hello", {}, 404, "UnknownOperationException"),
        ("GET", HELLO, {}, 405, "UnknownOperationException"),
        ("POST", HELLO, {"X-Amz-Invocation-Type": "Later"}, 400, "ValidationException"),
        ("POST", HELLO, {"X-Amz-Log-Type": "Head"}, 400, "ValidationException"),
        ("POST", "/2015-03-31/functions/a%2Fb/invocations", {}, 400, "ValidationException"),
        ("POST", HELLO, {"Idempotency-Key": "k" * 300}, 400, "InvalidParameterValueException"),
    ],
)
def test_request_errors(
    served: Served, method: str, path: str, headers: dict[str, str], status: int, code: str
) -> None:
    response = httpx.request(
        method,
        f"{served.engine.url}{path}",
        content=b"{}",
        headers={"Authorization": BEARER, **headers},
    )
    assert response.status_code == status
    assert response.headers["x-amzn-errortype"] == code
    assert response.json()["message"]


def test_parse_function_ref() -> None:
    ref = parse_function_ref("arn:aws-us-gov:lambda:us-gov-west-1:123456789012:function:my.fn-1:prod")
    assert ref == FunctionRef("my.fn-1", "prod", "us-gov-west-1", "123456789012")
    assert parse_function_ref("hello") == FunctionRef("hello")
    assert parse_function_ref("hello:$LATEST") == FunctionRef("hello", "$LATEST")
    assert parse_function_ref("123456789012:function:hello") == FunctionRef("hello", account="123456789012")
    for bad in ("", "a b", "x" * 65, "arn:aws:lambda:us-east-1:123:function:f", "f:a:b", "f/g"):
        assert parse_function_ref(bad) is None, bad
