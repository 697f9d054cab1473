"""Verify AWS Signature Version 4 on requests the gateway receives (the Lambda Invoke API).

AWS SDKs sign every call: boto3 pointed at the gateway with ``endpoint_url`` and one of the access
keys of ``[admin] aws_keys`` produces requests this module accepts. Both forms are verified:

- ``Authorization: AWS4-HMAC-SHA256 Credential=AKID/20240101/us-east-1/lambda/aws4_request,
  SignedHeaders=host;x-amz-date, Signature=<64 hex>`` with ``X-Amz-Date`` (or ``Date``);
- query-string presigned URLs (``X-Amz-Algorithm``, ``X-Amz-Credential``, ``X-Amz-Date``,
  ``X-Amz-Expires``, ``X-Amz-SignedHeaders``, ``X-Amz-Signature``).

The canonical request follows AWS's rules for services other than S3, as botocore's signer applies
them: the path with dot segments and empty segments removed, then URI-encoded once more (so every
``%`` the client sent becomes ``%25``: AWS's "encode each segment twice"); query names and values
decoded, re-encoded with RFC 3986 unreserved characters and sorted; the signed headers lower-cased
with their values' whitespace collapsed; the payload's SHA-256 (``X-Amz-Content-SHA256`` when sent,
which must then match the body). Any region is accepted, the service must be ``lambda``, and the
request time must be within 15 minutes of the gateway's clock.

Refusals raise `SignatureError`, carrying the code, HTTP status and message AWS gives, so the
caller can answer in AWS's error shape and SDKs raise their usual exception classes.
"""

from __future__ import annotations

import email.utils
import functools
import hashlib
import hmac
import re
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import quote, unquote

__all__ = [
    "ALGORITHM",
    "SigV4Verifier",
    "SignatureError",
    "SignedIdentity",
    "canonical_query",
    "canonical_uri",
    "is_signed",
]

ALGORITHM = "AWS4-HMAC-SHA256"
MAX_CLOCK_SKEW = 15 * 60
MAX_PRESIGNED_EXPIRES = 7 * 24 * 3600  # AWS's limit for X-Amz-Expires
_TIMESTAMP = "%Y%m%dT%H%M%SZ"
_TIMESTAMP_RE = re.compile(r"\d{8}T\d{6}Z")
_HEX_SHA256_RE = re.compile(r"[0-9a-f]{64}")
_AUTH_PARAM_RE = re.compile(r"\s*([A-Za-z]+)\s*=\s*([^,\s]*)\s*")

_MISMATCH = (
    "The request signature we calculated does not match the signature you provided. "
    "Check your AWS Secret Access Key and signing method. Consult the service documentation for details."
)
_UNKNOWN_KEY = "The security token included in the request is invalid."


class SignatureError(Exception):
    """A refused signature, in AWS's terms: ``code`` goes to ``x-amzn-ErrorType``."""

    def __init__(self, code: str, message: str, status: int = 403) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status


@dataclass(frozen=True, slots=True)
class SignedIdentity:
    """Who signed a verified request, and for which scope."""

    access_key_id: str
    region: str
    service: str
    signed_at: float  # unix time of X-Amz-Date
    presigned: bool


@dataclass(frozen=True, slots=True)
class _Claim:
    """The signature parameters a request presents, from its header or its query string."""

    access_key_id: str
    scope_date: str
    region: str
    service: str
    terminator: str
    signed_headers: tuple[str, ...]
    signature: str
    timestamp: str
    expires: int | None  # presigned only


def is_signed(headers: Iterable[tuple[str, str]], query: str) -> bool:
    """Whether the request presents a SigV4 signature (valid or not) rather than another scheme."""
    for name, value in headers:
        if name.lower() == "authorization" and value.lstrip().startswith(ALGORITHM):
            return True
    return any(name == "X-Amz-Algorithm" for name, _ in _query_pairs(query))


class SigV4Verifier:
    """Verifies SigV4 signatures made with the secrets in ``keys`` (access key id -> secret)."""

    def __init__(
        self,
        keys: Mapping[str, str],
        *,
        service: str = "lambda",
        max_clock_skew: float = MAX_CLOCK_SKEW,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._keys = dict(keys)
        self._service = service
        self._max_skew = max_clock_skew
        self._clock = clock

    def verify(
        self, method: str, path: str, query: str, headers: Iterable[tuple[str, str]], body: bytes
    ) -> SignedIdentity:
        """Check the request's signature; raise `SignatureError` if it does not hold.

        ``path`` and ``query`` are exactly as they came on the wire (still percent-encoded),
        ``headers`` as received (repeated names allowed).
        """
        header_map = _header_map(headers)
        query_pairs = _query_pairs(query)
        presigned = any(name == "X-Amz-Algorithm" for name, _ in query_pairs)
        authorization = header_map.get("authorization")
        if presigned and authorization is not None:
            raise SignatureError(
                "IncompleteSignatureException",
                "Only one auth mechanism allowed; only the X-Amz-Algorithm query parameter or the "
                "Authorization header should be specified",
            )
        if presigned:
            claim = _presigned_claim(query_pairs)
        elif authorization is not None:
            claim = _header_claim(",".join(authorization), header_map)
        else:
            raise SignatureError("MissingAuthenticationTokenException", "Missing Authentication Token")
        if "x-amz-security-token" in header_map or any(n == "X-Amz-Security-Token" for n, _ in query_pairs):
            # Temporary (STS) credentials are never issued by the gateway, so none can be valid.
            raise SignatureError("UnrecognizedClientException", _UNKNOWN_KEY)
        self._check_scope(claim)
        signed_at = self._check_time(claim)
        secret = self._keys.get(claim.access_key_id)
        if secret is None:
            raise SignatureError("UnrecognizedClientException", _UNKNOWN_KEY)

        key = _signing_key(secret, claim.scope_date, claim.region, claim.service)
        scope = f"{claim.scope_date}/{claim.region}/{claim.service}/{claim.terminator}"
        signed = claim.signed_headers
        signed_part = "\n".join(
            (
                "".join(f"{name}:{_canonical_value(header_map.get(name, []))}\n" for name in signed),
                ";".join(claim.signed_headers),
                _payload_hash(header_map, body),
            )
        )
        for canonical_query_string in _query_candidates(query, presigned):
            canonical = "\n".join((method.upper(), canonical_uri(path), canonical_query_string, signed_part))
            digest = hashlib.sha256(canonical.encode()).hexdigest()
            string_to_sign = f"{ALGORITHM}\n{claim.timestamp}\n{scope}\n{digest}"
            expected = hmac.new(key, string_to_sign.encode(), hashlib.sha256).hexdigest()
            # compare_digest: the time taken does not reveal how much of the signature matched.
            if hmac.compare_digest(expected, claim.signature.lower()):
                break
        else:
            raise SignatureError("InvalidSignatureException", _MISMATCH)
        return SignedIdentity(claim.access_key_id, claim.region, claim.service, signed_at, presigned)

    def _check_scope(self, claim: _Claim) -> None:
        if claim.terminator != "aws4_request":
            raise SignatureError(
                "InvalidSignatureException",
                "Credential should be scoped with a valid terminator: 'aws4_request', "
                f"not '{claim.terminator}'.",
            )
        if claim.service != self._service:
            raise SignatureError(
                "InvalidSignatureException",
                f"Credential should be scoped to correct service: '{self._service}'. ",
            )
        if not claim.region:
            raise SignatureError(
                "InvalidSignatureException", "Credential should be scoped to a valid region. "
            )
        if claim.scope_date != claim.timestamp[:8]:
            raise SignatureError(
                "InvalidSignatureException",
                "Date in Credential scope does not match YYYYMMDD from ISO-8601 version of date from HTTP: "
                f"'{claim.scope_date}' != '{claim.timestamp[:8]}', from '{claim.timestamp}'.",
            )
        if "host" not in claim.signed_headers:
            # Without the host signed, a signature for one gateway could be replayed at another.
            raise SignatureError(
                "InvalidSignatureException", "'Host' must be a 'SignedHeader' in the AWS Authorization."
            )

    def _check_time(self, claim: _Claim) -> float:
        try:
            signed_at = datetime.strptime(claim.timestamp, _TIMESTAMP).replace(tzinfo=UTC).timestamp()
        except ValueError:
            raise SignatureError(
                "IncompleteSignatureException",
                f"Date must be in ISO-8601 'basic format'. Got '{claim.timestamp}'.",
            ) from None
        now = self._clock()
        if signed_at - now > self._max_skew:
            raise SignatureError(
                "InvalidSignatureException",
                f"Signature not yet current: {claim.timestamp} is still later than "
                f"{_format(now + self._max_skew)} ({_format(now)} + {self._max_skew / 60:g} min.)",
            )
        # A presigned URL lives for X-Amz-Expires; a signed header request for the skew window.
        lifetime = self._max_skew if claim.expires is None else claim.expires
        if now - signed_at > lifetime:
            raise SignatureError(
                "InvalidSignatureException",
                f"Signature expired: {claim.timestamp} is now earlier than "
                f"{_format(now - lifetime)} ({_format(now)} - {lifetime / 60:g} min.)",
            )
        return signed_at


def canonical_uri(path: str) -> str:
    """The path as AWS's non-S3 services sign it: dot and empty segments removed, then URI-encoded
    (the wire path is already encoded once, so this is the second encoding)."""
    segments: list[str] = []
    for segment in path.split("/"):
        if segment == "..":
            if segments:
                segments.pop()
        elif segment and segment != ".":
            segments.append(segment)
    normalized = "/" + "/".join(segments)
    if path.endswith("/") and segments:
        normalized += "/"
    return quote(normalized, safe="/~")


def canonical_query(pairs: Iterable[tuple[str, str]]) -> str:
    """Names and values (already decoded) URI-encoded, sorted by name, then by value."""
    encoded = sorted((_uri_encode(name), _uri_encode(value)) for name, value in pairs)
    return "&".join(f"{name}={value}" for name, value in encoded)


def _query_candidates(query: str, presigned: bool) -> list[str]:
    """The canonical query strings a client may have signed.

    AWS's rule is to decode and re-encode names and values (AWS's Go and Java SDKs do); botocore
    signs the query's pairs exactly as it sends them. The two differ only for a query that is not
    canonically encoded (``%7E`` for ``~``, lower-case hex), so the raw form is tried second.
    Both describe exactly the bytes on the wire.
    """
    raw_pairs = [part.partition("=") for part in query.split("&") if part]
    if presigned:
        raw_pairs = [pair for pair in raw_pairs if pair[0] != "X-Amz-Signature"]
    decoded = canonical_query((unquote(name), unquote(value)) for name, _, value in raw_pairs)
    raw = "&".join(f"{name}={value}" for name, value in sorted((name, value) for name, _, value in raw_pairs))
    return [decoded] if raw == decoded else [decoded, raw]


def _uri_encode(value: str) -> str:
    # quote() leaves exactly RFC 3986's unreserved characters (A-Z a-z 0-9 - _ . ~) alone.
    return quote(value, safe="")


def _query_pairs(query: str) -> list[tuple[str, str]]:
    # unquote, not unquote_plus: SigV4 clients encode a space as %20, a "+" means "+".
    pairs: list[tuple[str, str]] = []
    for part in query.split("&"):
        if part:
            name, _, value = part.partition("=")
            pairs.append((unquote(name), unquote(value)))
    return pairs


def _header_map(headers: Iterable[tuple[str, str]]) -> dict[str, list[str]]:
    header_map: dict[str, list[str]] = {}
    for name, value in headers:
        header_map.setdefault(name.lower(), []).append(value)
    return header_map


def _canonical_value(values: list[str]) -> str:
    return ",".join(" ".join(value.split()) for value in values)


def _payload_hash(header_map: Mapping[str, list[str]], body: bytes) -> str:
    computed = hashlib.sha256(body).hexdigest()
    declared = header_map.get("x-amz-content-sha256")
    if declared is None:
        return computed
    # The header is signed in place of the body, so it must be the body's hash: no unsigned or
    # streaming payloads (only S3 accepts those).
    if declared[0] != computed:
        raise SignatureError(
            "InvalidSignatureException",
            "The provided 'x-amz-content-sha256' header does not match what was computed.",
        )
    return declared[0]


def _header_claim(authorization: str, header_map: Mapping[str, list[str]]) -> _Claim:
    algorithm, _, rest = authorization.strip().partition(" ")
    if algorithm != ALGORITHM:
        raise SignatureError(
            "IncompleteSignatureException", f"Unsupported AWS 'algorithm': '{algorithm}'", status=400
        )
    params: dict[str, str] = {}
    for part in rest.split(","):
        match = _AUTH_PARAM_RE.fullmatch(part)
        if match is None:
            raise SignatureError(
                "IncompleteSignatureException",
                f"'{part.strip()}' not a valid key=value pair (missing equal-sign) in Authorization header: "
                f"'{authorization}'.",
            )
        params[match.group(1)] = match.group(2)
    missing = [name for name in ("Credential", "Signature", "SignedHeaders") if name not in params]
    if missing:
        raise SignatureError(
            "IncompleteSignatureException",
            " ".join(f"Authorization header requires '{name}' parameter." for name in missing)
            + f" Authorization={authorization}",
        )
    if "x-amz-date" in header_map:
        timestamp = header_map["x-amz-date"][0].strip()
    elif "date" in header_map:
        timestamp = _http_date_to_timestamp(header_map["date"][0])
    else:
        raise SignatureError(
            "IncompleteSignatureException",
            "Authorization header requires existence of either a 'X-Amz-Date' or a 'Date' header. "
            f"Authorization={authorization}",
        )
    return _claim(params["Credential"], params["SignedHeaders"], params["Signature"], timestamp, None)


def _presigned_claim(pairs: list[tuple[str, str]]) -> _Claim:
    params = dict(pairs)
    if params.get("X-Amz-Algorithm") != ALGORITHM:
        raise SignatureError(
            "IncompleteSignatureException",
            f'X-Amz-Algorithm only supports "{ALGORITHM}"',
            status=400,
        )
    required = ("X-Amz-Credential", "X-Amz-Date", "X-Amz-Expires", "X-Amz-SignedHeaders", "X-Amz-Signature")
    missing = [name for name in required if name not in params]
    if missing:
        raise SignatureError(
            "IncompleteSignatureException",
            " ".join(f"AWS query-string parameters must include '{name}'." for name in missing),
        )
    expires_text = params["X-Amz-Expires"]
    if not expires_text.isdigit() or not 0 < int(expires_text) <= MAX_PRESIGNED_EXPIRES:
        raise SignatureError(
            "IncompleteSignatureException",
            f"X-Amz-Expires must be a whole number of seconds from 1 to {MAX_PRESIGNED_EXPIRES}.",
        )
    return _claim(
        params["X-Amz-Credential"],
        params["X-Amz-SignedHeaders"],
        params["X-Amz-Signature"],
        params["X-Amz-Date"],
        int(expires_text),
    )


def _claim(
    credential: str, signed_headers: str, signature: str, timestamp: str, expires: int | None
) -> _Claim:
    parts = credential.split("/")
    if len(parts) != 5 or not parts[0]:
        raise SignatureError(
            "IncompleteSignatureException",
            f"Credential should have the form <access key id>/<date>/<region>/<service>/aws4_request, "
            f"got '{credential}'.",
        )
    if not _HEX_SHA256_RE.fullmatch(signature.lower()):
        raise SignatureError("InvalidSignatureException", _MISMATCH)
    if not _TIMESTAMP_RE.fullmatch(timestamp):
        raise SignatureError(
            "IncompleteSignatureException", f"Date must be in ISO-8601 'basic format'. Got '{timestamp}'."
        )
    names = tuple(signed_headers.split(";"))
    if any(not name or name != name.lower() for name in names):
        raise SignatureError(
            "IncompleteSignatureException",
            f"SignedHeaders must be lower-case header names separated by ';', got '{signed_headers}'.",
        )
    access_key_id, scope_date, region, service, terminator = parts
    return _Claim(
        access_key_id, scope_date, region, service, terminator, names, signature, timestamp, expires
    )


def _http_date_to_timestamp(value: str) -> str:
    try:
        parsed = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        raise SignatureError(
            "IncompleteSignatureException", f"Date header '{value}' is not an HTTP date."
        ) from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC).strftime(_TIMESTAMP)


def _format(unix_time: float) -> str:
    return datetime.fromtimestamp(unix_time, UTC).strftime(_TIMESTAMP)


@functools.lru_cache(maxsize=64)
def _signing_key(secret: str, date: str, region: str, service: str) -> bytes:
    # The key only changes per day, region and service: derive it once, not per request.
    key = hmac.new(f"AWS4{secret}".encode(), date.encode(), hashlib.sha256).digest()
    for part in (region, service, "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    return key
