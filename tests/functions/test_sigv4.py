"""SigV4 verification against botocore's own signer: what boto3 signs, the gateway must accept."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Mapping
from email.utils import formatdate
from urllib.parse import urlsplit

import pytest
from botocore.auth import SigV4Auth, SigV4QueryAuth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from botocore.utils import percent_encode, percent_encode_sequence
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.functions.sigv4 import SignatureError, SigV4Verifier, canonical_uri, is_signed

KEY_ID = "AKIALAMBDAGATE"
SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
KEYS = {KEY_ID: SECRET, "AKIAOTHER": "another-secret"}
ENDPOINT = "http://127.0.0.1:9901"

Wire = tuple[str, str, str, list[tuple[str, str]], bytes]


def sign(
    method: str,
    url: str,
    body: bytes = b"",
    headers: Mapping[str, str] | None = None,
    *,
    key_id: str = KEY_ID,
    secret: str = SECRET,
    region: str = "us-east-1",
    service: str = "lambda",
    token: str | None = None,
) -> Wire:
    """Sign with botocore, then take the request apart as the gateway's engine hands it over."""
    request = AWSRequest(method=method, url=url, data=body, headers=dict(headers or {}))
    SigV4Auth(Credentials(key_id, secret, token), service, region).add_auth(request)
    return wire(request)


def presign(method: str, url: str, *, expires: int = 60, secret: str = SECRET) -> Wire:
    request = AWSRequest(method=method, url=url)
    SigV4QueryAuth(Credentials(KEY_ID, secret), "lambda", "eu-west-1", expires=expires).add_auth(request)
    return wire(request)


def wire(request: AWSRequest) -> Wire:
    parts = urlsplit(request.url)
    headers = [(name, str(value)) for name, value in request.headers.items()]
    if not any(name.lower() == "host" for name, _ in headers):
        headers.append(("Host", parts.netloc))  # what the HTTP client adds
    body = request.body if isinstance(request.body, bytes) else (request.body or "").encode()
    return request.method, parts.path, parts.query, headers, body


def verifier(at: float | None = None, *, max_clock_skew: float = 15 * 60) -> SigV4Verifier:
    now = time.time() if at is None else at
    return SigV4Verifier(KEYS, clock=lambda: now, max_clock_skew=max_clock_skew)


def refusal(request: Wire, check: SigV4Verifier | None = None) -> SignatureError:
    with pytest.raises(SignatureError) as caught:
        (check or verifier()).verify(*request)
    return caught.value


def replace_header(request: Wire, name: str, value: str) -> Wire:
    method, path, query, headers, body = request
    kept = [(n, v) for n, v in headers if n.lower() != name.lower()]
    return method, path, query, [*kept, (name, value)], body


INVOKE = f"{ENDPOINT}/2015-03-31/functions/hello/invocations"


@pytest.mark.parametrize(
    ("method", "url", "body", "headers"),
    [
        ("POST", INVOKE, b'{"a": 1}', {"X-Amz-Invocation-Type": "RequestResponse"}),
        ("POST", INVOKE, b"", {}),
        (
            "POST",
            f"{ENDPOINT}/2015-03-31/functions/arn%3Aaws%3Alambda%3Aus-east-1%3A123456789012%3Afunction%3Ahello"
            "/invocations?Qualifier=%24LATEST",
            b"{}",
            {"X-Amz-Client-Context": "eyJhIjoxfQ=="},
        ),
        ("GET", f"{ENDPOINT}/a/./b/../c//d/?b=2&a=1&a=0&empty=&sp=a%20b&plus=%2B&t=%7E", b"", {}),
        ("PUT", f"{ENDPOINT}/caf%C3%A9/%E2%9C%93", "é".encode() * 3, {"X-Odd": "  spaced   out\tvalue  "}),
        ("DELETE", "https://lambda.eu-west-1.amazonaws.com/", b"", {"Content-Type": "application/json"}),
        ("POST", f"{ENDPOINT}/x", b"\x00\xff" * 1000, {"X-Amz-Content-SHA256": "", "X-Repeat": "1"}),
    ],
)
def test_accepts_what_botocore_signs(method: str, url: str, body: bytes, headers: dict[str, str]) -> None:
    if headers.get("X-Amz-Content-SHA256") == "":
        headers = {**headers, "X-Amz-Content-SHA256": hashlib.sha256(body).hexdigest()}
    identity = verifier().verify(*sign(method, url, body, headers))
    assert identity.access_key_id == KEY_ID
    assert identity.region == "us-east-1"
    assert identity.service == "lambda"
    assert not identity.presigned
    assert abs(identity.signed_at - time.time()) < 5


_any_character = st.characters(codec="utf-8")  # every code point that UTF-8 can encode
_segment = st.text(_any_character, max_size=12)
_query_text = st.text(_any_character, max_size=10)
_header_value = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=20)


@settings(max_examples=200, deadline=None)
@given(
    segments=st.lists(_segment, max_size=5),
    query=st.lists(st.tuples(_query_text, _query_text), max_size=4),
    header_values=st.lists(_header_value, max_size=3),
    body=st.binary(max_size=200),
)
def test_accepts_botocore_signatures_over_arbitrary_requests(
    segments: list[str], query: list[tuple[str, str]], header_values: list[str], body: bytes
) -> None:
    # The client encodes each segment once on the wire (botocore's serializer does the same for
    # URI labels); the verifier must arrive at the same doubly encoded canonical path.
    path = "/" + "/".join(percent_encode(segment, safe="") for segment in segments)
    url = f"{ENDPOINT}{path}" + (f"?{percent_encode_sequence(query)}" if query else "")
    headers = {f"X-Test-{index}": value for index, value in enumerate(header_values)}
    verifier().verify(*sign("POST", url, body, headers))


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(["", ".", "..", "a", "b%2F", "%41", "~x", "c d", "é"]), max_size=8))
def test_canonical_uri_matches_botocore(parts: list[str]) -> None:
    path = "/" + "/".join(parts)
    expected = SigV4Auth(Credentials("a", "b"), "lambda", "us-east-1")._normalize_url_path(path)
    assert canonical_uri(path) == expected


def test_tampering_is_refused() -> None:
    method, path, query, headers, body = sign(
        "POST", f"{INVOKE}?Qualifier=1", b'{"amount": 10}', {"X-A": "1"}
    )
    verifier().verify(method, path, query, headers, body)
    for tampered in [
        (method, path, query, headers, b'{"amount": 99}'),
        ("PUT", path, query, headers, body),
        (method, path.replace("hello", "hellp"), query, headers, body),
        (method, path, "Qualifier=2", headers, body),
        (method, path, query, [(n, "2" if n == "X-A" else v) for n, v in headers], body),
        (method, path, query, [(n, "evil.example" if n == "Host" else v) for n, v in headers], body),
    ]:
        error = refusal(tampered)
        assert (error.code, error.status) == ("InvalidSignatureException", 403)
        assert error.message.startswith("The request signature we calculated does not match")


def test_unsigned_extra_headers_do_not_matter() -> None:
    method, path, query, headers, body = sign("POST", INVOKE, b"{}")
    verifier().verify(method, path, query, [*headers, ("X-Forwarded-For", "10.0.0.1")], body)


def test_signed_header_repeated_on_the_wire_is_refused() -> None:
    method, path, query, headers, body = sign("POST", INVOKE, b"{}", {"X-A": "1"})
    assert refusal((method, path, query, [*headers, ("X-A", "2")], body)).code == "InvalidSignatureException"


def test_wrong_secret_and_unknown_key() -> None:
    error = refusal(sign("POST", INVOKE, b"{}", secret="not-the-secret"))
    assert (error.code, error.status) == ("InvalidSignatureException", 403)
    error = refusal(sign("POST", INVOKE, b"{}", key_id="AKIAUNKNOWN"))
    assert (error.code, error.status) == ("UnrecognizedClientException", 403)
    assert error.message == "The security token included in the request is invalid."
    # The other configured key signs for itself.
    verifier().verify(*sign("POST", INVOKE, b"{}", key_id="AKIAOTHER", secret="another-secret"))


def test_clock_skew_window_is_fifteen_minutes() -> None:
    request = sign("POST", INVOKE, b"{}")
    now = time.time()
    verifier(now + 14 * 60).verify(*request)
    verifier(now - 14 * 60).verify(*request)
    expired = refusal(request, verifier(now + 16 * 60))
    assert expired.code == "InvalidSignatureException"
    assert expired.message.startswith("Signature expired: ")
    assert "is now earlier than" in expired.message and "- 15 min.)" in expired.message
    early = refusal(request, verifier(now - 16 * 60))
    assert early.message.startswith("Signature not yet current: ")
    verifier(now + 20 * 60, max_clock_skew=30 * 60).verify(*request)


def test_any_region_but_only_the_lambda_service() -> None:
    identity = verifier().verify(*sign("POST", INVOKE, b"{}", region="ap-southeast-2"))
    assert identity.region == "ap-southeast-2"
    error = refusal(sign("POST", INVOKE, b"{}", service="s3"))
    assert error.code == "InvalidSignatureException"
    assert "correct service: 'lambda'" in error.message
    SigV4Verifier(KEYS, service="s3").verify(*sign("POST", INVOKE, b"{}", service="s3"))


def test_content_sha256_header_must_match_the_body() -> None:
    good = hashlib.sha256(b"{}").hexdigest()
    verifier().verify(*sign("POST", INVOKE, b"{}", {"X-Amz-Content-SHA256": good}))
    method, path, query, headers, _ = sign("POST", INVOKE, b"{}", {"X-Amz-Content-SHA256": good})
    error = refusal((method, path, query, headers, b'{"x": 1}'))
    assert "x-amz-content-sha256" in error.message
    # Unsigned payloads (an S3-only mode) are not accepted: the body would not be covered.
    error = refusal(sign("POST", INVOKE, b"{}", {"X-Amz-Content-SHA256": "UNSIGNED-PAYLOAD"}))
    assert error.code == "InvalidSignatureException"


def test_date_header_instead_of_x_amz_date() -> None:
    request = sign("POST", INVOKE, b"{}", {"Date": formatdate(usegmt=True)})
    assert not any(name.lower() == "x-amz-date" for name, _ in request[3])
    verifier().verify(*request)
    old = replace_header(request, "Date", formatdate(time.time() - 3600, usegmt=True))
    assert refusal(old).code == "InvalidSignatureException"


def test_scope_date_must_match_the_request_date() -> None:
    request = sign("POST", INVOKE, b"{}")
    stamp = dict(request[3])["X-Amz-Date"]
    yesterday = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(time.time() - 86400))
    assert yesterday[:8] != stamp[:8]
    error = refusal(replace_header(request, "X-Amz-Date", yesterday), verifier(time.time() - 86400))
    assert "Date in Credential scope does not match" in error.message


def test_host_must_be_signed() -> None:
    request = sign("POST", INVOKE, b"{}")
    authorization = dict(request[3])["Authorization"]
    without_host = authorization.replace("SignedHeaders=host;", "SignedHeaders=")
    assert without_host != authorization
    error = refusal(replace_header(request, "Authorization", without_host))
    assert "'Host' must be a 'SignedHeader'" in error.message


def test_session_tokens_are_refused() -> None:
    error = refusal(sign("POST", INVOKE, b"{}", token="FwoGZXIvYXdzEXAMPLE"))
    assert error.code == "UnrecognizedClientException"


@pytest.mark.parametrize(
    ("authorization", "code"),
    [
        ("AWS4-HMAC-SHA256 Credential=AKIALAMBDAGATE/20240101/us-east-1/lambda/aws4_request", "Incomplete"),
        ("AWS4-HMAC-SHA256 SignedHeaders=host, Signature=" + "0" * 64, "Incomplete"),
        ("AWS4-HMAC-SHA256 garbage", "Incomplete"),
        ("AWS4-HMAC-SHA1 Credential=a/b/c/d/e, SignedHeaders=host, Signature=00", "Incomplete"),
        ("AWS4-HMAC-SHA256 Credential=AKID/x, SignedHeaders=host, Signature=" + "0" * 64, "Incomplete"),
        ("AWS4-HMAC-SHA256 Credential=a/b/c/d/e, SignedHeaders=host, Signature=xyz", "InvalidSignature"),
        ("AWS4-HMAC-SHA256 Credential=a/b/c/d/e, SignedHeaders=Host, Signature=" + "0" * 64, "Incomplete"),
    ],
)
def test_malformed_authorization_headers(authorization: str, code: str) -> None:
    request = replace_header(sign("POST", INVOKE, b"{}"), "Authorization", authorization)
    assert refusal(request).code.startswith(code)


def test_missing_signature() -> None:
    error = refusal(("POST", "/", "", [("Host", "x")], b""))
    assert (error.code, error.status) == ("MissingAuthenticationTokenException", 403)


def test_missing_date() -> None:
    method, path, query, headers, body = sign("POST", INVOKE, b"{}")
    headers = [(n, v) for n, v in headers if n.lower() != "x-amz-date"]
    assert refusal((method, path, query, headers, body)).code == "IncompleteSignatureException"


def test_presigned_urls() -> None:
    request = presign("GET", f"{ENDPOINT}/2015-03-31/functions/hello?x=1", expires=60)
    method, path, query, headers, body = request
    assert "X-Amz-Signature=" in query and not any(n.lower() == "authorization" for n, _ in headers)
    assert is_signed(headers, query)
    identity = verifier().verify(*request)
    assert identity.presigned and identity.region == "eu-west-1"
    now = time.time()
    verifier(now + 50).verify(*request)
    assert refusal(request, verifier(now + 70)).message.startswith("Signature expired")
    assert (
        refusal((method, path, query.replace("x=1", "x=2"), headers, body)).code
        == "InvalidSignatureException"
    )
    assert refusal(presign("GET", f"{ENDPOINT}/", secret="wrong")).code == "InvalidSignatureException"
    both = (method, path, query, [*headers, ("Authorization", "AWS4-HMAC-SHA256 x")], body)
    assert refusal(both).code == "IncompleteSignatureException"


def test_presigned_expiry_must_be_within_a_week() -> None:
    method, path, query, headers, body = presign("GET", f"{ENDPOINT}/", expires=60)
    tampered = query.replace("X-Amz-Expires=60", "X-Amz-Expires=999999")
    assert refusal((method, path, tampered, headers, body)).code == "IncompleteSignatureException"


def test_is_signed() -> None:
    assert is_signed([("Authorization", "AWS4-HMAC-SHA256 Credential=...")], "")
    assert not is_signed([("Authorization", "Bearer token")], "")
    assert not is_signed([], "a=b")
    assert is_signed([], "X-Amz-Algorithm=AWS4-HMAC-SHA256")
