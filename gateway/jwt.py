"""JSON Web Token verification: JWS compact tokens (RFC 7515), claims (RFC 7519), algorithms (RFC 7518).

Built on the ``cryptography`` package and kept small so that every refusal has a clear,
client-safe reason (JWTError's message goes into the 401 body).

Algorithm confusion is impossible by construction: a key's type decides the algorithms it can
verify. An HMAC key exists only when the operator configured a shared secret; an RSA, EC or
Ed25519 public key never becomes an HMAC secret, and ``alg: none`` is not an algorithm here.

    verifier = JWTVerifier(static_keys=[HmacKey(secret)], jwks=None, algorithms=ALL, policy=ClaimsPolicy())
    claims = verifier.verify(token)     # dict, or an awaitable of it when JWKS keys must be fetched
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import re
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from .httpfetch import FetchError, http_get
from .logs import log

__all__ = [
    "SUPPORTED_ALGORITHMS",
    "ClaimsPolicy",
    "EcKey",
    "EdKey",
    "HmacKey",
    "JWKSCache",
    "JWKSUnavailable",
    "JWTError",
    "JWTVerifier",
    "KeyLoadError",
    "RsaKey",
    "UnverifiedToken",
    "VerificationKey",
    "check_claims",
    "key_from_jwk",
    "load_key_file",
    "load_pem_key",
    "parse_jwks",
    "parse_token",
]

_HMAC_HASHES: dict[str, Callable[[], Any]] = {
    "HS256": hashlib.sha256,
    "HS384": hashlib.sha384,
    "HS512": hashlib.sha512,
}
_RSA_HASHES: dict[str, type[hashes.HashAlgorithm]] = {
    "RS256": hashes.SHA256,
    "RS384": hashes.SHA384,
    "RS512": hashes.SHA512,
    "PS256": hashes.SHA256,
    "PS384": hashes.SHA384,
    "PS512": hashes.SHA512,
}
# alg -> (curve name, hash, bytes per signature coordinate)
_EC_ALGORITHMS: dict[str, tuple[str, type[hashes.HashAlgorithm], int]] = {
    "ES256": ("secp256r1", hashes.SHA256, 32),
    "ES384": ("secp384r1", hashes.SHA384, 48),
    "ES512": ("secp521r1", hashes.SHA512, 66),
}
_JWK_CURVES: dict[str, ec.EllipticCurve] = {
    "P-256": ec.SECP256R1(),
    "P-384": ec.SECP384R1(),
    "P-521": ec.SECP521R1(),
}
SUPPORTED_ALGORITHMS: frozenset[str] = frozenset([*_HMAC_HASHES, *_RSA_HASHES, *_EC_ALGORITHMS, "EdDSA"])

#: RFC 7518 3.2: an HMAC key must be at least as long as the hash output; we require 256 bits.
MIN_HMAC_SECRET_BYTES = 32
MIN_RSA_BITS = 2048
MAX_TOKEN_LENGTH = 16 * 1024
_BASE64URL = re.compile(r"[A-Za-z0-9_-]*")


class JWTError(Exception):
    """The token is refused; the message is safe to show to the client."""


class JWKSUnavailable(JWTError):
    """No key could be obtained to check the token (the JWKS endpoint failed): not the caller's fault."""


class KeyLoadError(ValueError):
    """A configured key (PEM, file, JWK) cannot be used."""


# --- keys ------------------------------------------------------------------------------------


class VerificationKey:
    """One key that checks signatures; `algorithms` are the only ones it will ever verify."""

    __slots__ = ("algorithms", "kid")

    def __init__(self, kid: str | None, algorithms: frozenset[str]) -> None:
        self.kid = kid
        self.algorithms = algorithms

    def verify(self, alg: str, signing_input: bytes, signature: bytes) -> bool:
        raise NotImplementedError

    def _restricted(self, alg: str | None) -> None:
        # A JWK's "alg" pins the key to one algorithm (RFC 7517 4.4).
        if alg is None:
            return
        if alg not in self.algorithms:
            raise KeyLoadError(f"algorithm {alg!r} does not fit a {type(self).__name__}")
        self.algorithms = frozenset([alg])


class HmacKey(VerificationKey):
    __slots__ = ("_secret",)

    def __init__(self, secret: bytes, kid: str | None = None, alg: str | None = None) -> None:
        if len(secret) < MIN_HMAC_SECRET_BYTES:
            raise KeyLoadError(f"an HMAC secret must be at least {MIN_HMAC_SECRET_BYTES} bytes long")
        super().__init__(kid, frozenset(_HMAC_HASHES))
        self._secret = secret
        self._restricted(alg)

    def verify(self, alg: str, signing_input: bytes, signature: bytes) -> bool:
        expected = hmac.new(self._secret, signing_input, _HMAC_HASHES[alg]).digest()
        return hmac.compare_digest(expected, signature)


class RsaKey(VerificationKey):
    __slots__ = ("_key",)

    def __init__(self, key: rsa.RSAPublicKey, kid: str | None = None, alg: str | None = None) -> None:
        if key.key_size < MIN_RSA_BITS:
            raise KeyLoadError(
                f"RSA keys must have at least {MIN_RSA_BITS} bits (this one has {key.key_size})"
            )
        super().__init__(kid, frozenset(_RSA_HASHES))
        self._key = key
        self._restricted(alg)

    def verify(self, alg: str, signing_input: bytes, signature: bytes) -> bool:
        digest = _RSA_HASHES[alg]()
        scheme: padding.AsymmetricPadding
        if alg.startswith("PS"):
            # RFC 7518 3.5: MGF1 with the same hash, salt as long as the hash output.
            scheme = padding.PSS(mgf=padding.MGF1(_RSA_HASHES[alg]()), salt_length=digest.digest_size)
        else:
            scheme = padding.PKCS1v15()
        try:
            self._key.verify(signature, signing_input, scheme, digest)
        except InvalidSignature:
            return False
        return True


class EcKey(VerificationKey):
    __slots__ = ("_key",)

    def __init__(
        self, key: ec.EllipticCurvePublicKey, kid: str | None = None, alg: str | None = None
    ) -> None:
        fitting = frozenset(name for name, spec in _EC_ALGORITHMS.items() if spec[0] == key.curve.name)
        if not fitting:
            raise KeyLoadError(f"EC curve {key.curve.name} is not used by any JWS algorithm")
        super().__init__(kid, fitting)
        self._key = key
        self._restricted(alg)

    def verify(self, alg: str, signing_input: bytes, signature: bytes) -> bool:
        _, digest, size = _EC_ALGORITHMS[alg]
        # JWS carries ECDSA signatures as fixed-size R || S, not DER (RFC 7518 3.4).
        if len(signature) != 2 * size:
            return False
        r = int.from_bytes(signature[:size], "big")
        s = int.from_bytes(signature[size:], "big")
        try:
            self._key.verify(encode_dss_signature(r, s), signing_input, ec.ECDSA(digest()))
        except InvalidSignature:
            return False
        return True


class EdKey(VerificationKey):
    __slots__ = ("_key",)

    def __init__(
        self,
        key: ed25519.Ed25519PublicKey | ed448.Ed448PublicKey,
        kid: str | None = None,
        alg: str | None = None,
    ) -> None:
        super().__init__(kid, frozenset(["EdDSA"]))
        self._key = key
        self._restricted(alg)

    def verify(self, alg: str, signing_input: bytes, signature: bytes) -> bool:
        try:
            self._key.verify(signature, signing_input)
        except InvalidSignature:
            return False
        return True


def key_from_public_key(key: object, kid: str | None = None, alg: str | None = None) -> VerificationKey:
    if isinstance(key, rsa.RSAPublicKey):
        return RsaKey(key, kid, alg)
    if isinstance(key, ec.EllipticCurvePublicKey):
        return EcKey(key, kid, alg)
    if isinstance(key, ed25519.Ed25519PublicKey | ed448.Ed448PublicKey):
        return EdKey(key, kid, alg)
    raise KeyLoadError(f"unsupported public key type {type(key).__name__}")


def load_pem_key(pem: str | bytes, kid: str | None = None) -> VerificationKey:
    """A PEM public key or X.509 certificate; private keys are refused (the gateway only verifies)."""
    data = pem.encode("ascii", "replace") if isinstance(pem, str) else pem
    if b"PRIVATE KEY-----" in data:
        raise KeyLoadError("expected a public key or certificate, got a private key")
    try:
        if b"-----BEGIN CERTIFICATE-----" in data:
            public_key: object = x509.load_pem_x509_certificate(data).public_key()
        else:
            public_key = serialization.load_pem_public_key(data)
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise KeyLoadError(f"not a usable PEM public key or certificate ({exc})") from None
    return key_from_public_key(public_key, kid)


def load_key_file(path: str | Path) -> list[VerificationKey]:
    """Keys from a file: a PEM public key or certificate, a JWK, or a JWK Set."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise KeyLoadError(f"cannot read key file {str(path)!r}: {exc.strerror or exc}") from None
    if data.lstrip().startswith(b"{"):
        try:
            document = msgspec.json.decode(data)
        except msgspec.DecodeError as exc:
            raise KeyLoadError(f"key file {str(path)!r} is not valid JSON: {exc}") from None
        if isinstance(document, dict) and "keys" in document:
            keys, problems = parse_jwks(data)
            if problems:
                raise KeyLoadError(f"key file {str(path)!r}: {'; '.join(problems)}")
            return keys
        if not isinstance(document, dict):
            raise KeyLoadError(f"key file {str(path)!r} is neither a JWK nor a JWK Set")
        return [key_from_jwk(document)]
    try:
        return [load_pem_key(data)]
    except KeyLoadError as exc:
        raise KeyLoadError(f"key file {str(path)!r}: {exc}") from None


def _jwk_int(jwk: Mapping[str, Any], name: str) -> int:
    return int.from_bytes(_jwk_bytes(jwk, name), "big")


def _jwk_bytes(jwk: Mapping[str, Any], name: str) -> bytes:
    value = jwk.get(name)
    if not isinstance(value, str):
        raise KeyLoadError(f"JWK member {name!r} is missing or not a string")
    try:
        return b64url_decode(value)
    except ValueError:
        raise KeyLoadError(f"JWK member {name!r} is not base64url") from None


def key_from_jwk(jwk: Mapping[str, Any], *, allow_symmetric: bool = True) -> VerificationKey:
    """One JWK (RFC 7517/7518 section 6, RFC 8037 for OKP)."""
    kty = jwk.get("kty")
    kid = jwk.get("kid")
    alg = jwk.get("alg")
    if kid is not None and not isinstance(kid, str):
        raise KeyLoadError("JWK 'kid' must be a string")
    if alg is not None and not isinstance(alg, str):
        raise KeyLoadError("JWK 'alg' must be a string")
    if jwk.get("use", "sig") != "sig":
        raise KeyLoadError(f"JWK {kid!r} is not a signature key (use={jwk.get('use')!r})")
    key_ops = jwk.get("key_ops")
    if key_ops is not None and (not isinstance(key_ops, list) or "verify" not in key_ops):
        raise KeyLoadError(f"JWK {kid!r} does not allow 'verify' in key_ops")
    try:
        if kty == "RSA":
            numbers = rsa.RSAPublicNumbers(_jwk_int(jwk, "e"), _jwk_int(jwk, "n"))
            return RsaKey(numbers.public_key(), kid, alg)
        if kty == "EC":
            curve = _JWK_CURVES.get(str(jwk.get("crv")))
            if curve is None:
                raise KeyLoadError(f"unsupported EC curve {jwk.get('crv')!r}")
            point = ec.EllipticCurvePublicNumbers(_jwk_int(jwk, "x"), _jwk_int(jwk, "y"), curve)
            return EcKey(point.public_key(), kid, alg)
        if kty == "OKP":
            crv = jwk.get("crv")
            raw = _jwk_bytes(jwk, "x")
            if crv == "Ed25519":
                return EdKey(ed25519.Ed25519PublicKey.from_public_bytes(raw), kid, alg)
            if crv == "Ed448":
                return EdKey(ed448.Ed448PublicKey.from_public_bytes(raw), kid, alg)
            raise KeyLoadError(f"unsupported OKP curve {crv!r}")
        if kty == "oct":
            if not allow_symmetric:
                raise KeyLoadError("symmetric (oct) keys are not accepted from a JWKS URL")
            return HmacKey(_jwk_bytes(jwk, "k"), kid, alg)
    except ValueError as exc:
        if isinstance(exc, KeyLoadError):
            raise
        raise KeyLoadError(f"invalid {kty} JWK {kid!r}: {exc}") from None
    raise KeyLoadError(f"unsupported JWK key type {kty!r}")


def parse_jwks(document: bytes, *, allow_symmetric: bool = True) -> tuple[list[VerificationKey], list[str]]:
    """The usable keys of a JWK Set and why the others were skipped.

    One odd key (an encryption key, an unknown curve) must not take the whole set down.
    """
    try:
        parsed = msgspec.json.decode(document)
    except msgspec.DecodeError as exc:
        raise KeyLoadError(f"JWK Set is not valid JSON: {exc}") from None
    if not isinstance(parsed, dict) or not isinstance(parsed.get("keys"), list):
        raise KeyLoadError('a JWK Set must be a JSON object with a "keys" array')
    keys: list[VerificationKey] = []
    problems: list[str] = []
    for index, jwk in enumerate(parsed["keys"]):
        if not isinstance(jwk, dict):
            problems.append(f"keys[{index}]: not an object")
            continue
        try:
            keys.append(key_from_jwk(jwk, allow_symmetric=allow_symmetric))
        except KeyLoadError as exc:
            problems.append(f"keys[{index}]: {exc}")
    return keys, problems


# --- tokens and claims --------------------------------------------------------------------------


def b64url_decode(text: str) -> bytes:
    """Unpadded base64url (RFC 7515 2); ValueError on any other alphabet or a bad length."""
    if len(text) % 4 == 1 or not _BASE64URL.fullmatch(text):
        raise ValueError("not base64url")
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass(frozen=True)
class UnverifiedToken:
    header: dict[str, Any]
    claims: dict[str, Any]
    signing_input: bytes
    signature: bytes

    @property
    def alg(self) -> str:
        alg: str = self.header["alg"]
        return alg

    @property
    def kid(self) -> str | None:
        kid: str | None = self.header.get("kid")
        return kid


def _json_object(segment: str, what: str) -> dict[str, Any]:
    try:
        value = msgspec.json.decode(b64url_decode(segment))
    except (ValueError, msgspec.DecodeError):
        raise JWTError(f"malformed token {what}") from None
    if not isinstance(value, dict):
        raise JWTError(f"malformed token {what}")
    return value


def parse_token(token: str) -> UnverifiedToken:
    """Split and decode a compact JWS; nothing is trusted yet."""
    if len(token) > MAX_TOKEN_LENGTH:
        raise JWTError("token too long")
    parts = token.split(".")
    if len(parts) != 3:
        raise JWTError("malformed token (expected header.payload.signature)")
    header = _json_object(parts[0], "header")
    alg = header.get("alg")
    if not isinstance(alg, str):
        raise JWTError("token header has no algorithm")
    kid = header.get("kid")
    if kid is not None and not isinstance(kid, str):
        raise JWTError("token header 'kid' must be a string")
    if "crit" in header:
        # RFC 7515 4.1.11: extensions we do not understand must make the token invalid.
        raise JWTError("token uses critical header extensions")
    claims = _json_object(parts[1], "payload")
    try:
        signature = b64url_decode(parts[2])
    except ValueError:
        raise JWTError("malformed token signature") from None
    return UnverifiedToken(header, claims, f"{parts[0]}.{parts[1]}".encode("ascii"), signature)


@dataclass(frozen=True)
class ClaimsPolicy:
    """What the registered claims must say. Empty issuers/audiences mean "not checked"."""

    issuers: frozenset[str] = frozenset()
    audiences: frozenset[str] = frozenset()
    leeway: float = 0.0
    required: frozenset[str] = frozenset(["exp"])


def _numeric_date(claims: Mapping[str, Any], name: str) -> float | None:
    value = claims.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise JWTError(f"token claim {name!r} must be a number")
    return float(value)


def check_claims(claims: Mapping[str, Any], policy: ClaimsPolicy, now: float) -> None:
    """Raise JWTError unless `claims` satisfy `policy` at time `now` (Unix seconds)."""
    for name in sorted(policy.required):
        if name not in claims:
            raise JWTError(f"token has no {name!r} claim")
    expires = _numeric_date(claims, "exp")
    if expires is not None and now >= expires + policy.leeway:
        raise JWTError("token expired")
    not_before = _numeric_date(claims, "nbf")
    if not_before is not None and now + policy.leeway < not_before:
        raise JWTError("token not valid yet")
    _numeric_date(claims, "iat")
    if policy.issuers:
        issuer = claims.get("iss")
        if not isinstance(issuer, str) or issuer not in policy.issuers:
            raise JWTError("token issuer not allowed")
    if policy.audiences:
        audience = claims.get("aud")
        audiences = [audience] if isinstance(audience, str) else audience
        if not isinstance(audiences, list) or not any(
            isinstance(entry, str) and entry in policy.audiences for entry in audiences
        ):
            raise JWTError("token audience not allowed")


# --- JWKS -----------------------------------------------------------------------------------------


class JWKSCache:
    """Keys of one JWKS URL, fetched lazily and refreshed with rotation in mind.

    - an unknown `kid` triggers a refetch, at most once per `min_refetch_interval` (so tokens
      with made-up kids cannot turn the gateway into a load generator against the IdP);
    - keys older than `refresh_interval` are refreshed in the background while still served;
    - a failed fetch keeps the keys already known; concurrent refreshes share one fetch.
    """

    def __init__(
        self,
        url: str,
        *,
        refresh_interval: float = 300.0,
        min_refetch_interval: float = 30.0,
        timeout: float = 5.0,
        max_bytes: int = 1024 * 1024,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.url = url
        self.refresh_interval = refresh_interval
        self.min_refetch_interval = min_refetch_interval
        self.timeout = timeout
        self.max_bytes = max_bytes
        self._clock = clock
        self.keys: tuple[VerificationKey, ...] = ()
        self.kids: frozenset[str] = frozenset()
        self.loaded_at: float | None = None
        self.attempted_at: float | None = None
        self.last_error: str | None = None
        self.fetches = 0
        self.generation = 0  # bumped whenever the key set is replaced
        self._inflight: asyncio.Task[None] | None = None

    @property
    def loaded(self) -> bool:
        return self.loaded_at is not None

    def candidates(self, alg: str, kid: str | None) -> list[VerificationKey]:
        return [
            key
            for key in self.keys
            if alg in key.algorithms and (kid is None or key.kid is None or key.kid == kid)
        ]

    def may_refetch(self, kid: str | None) -> bool:
        """Whether a token with this kid justifies (joining) a fetch now."""
        if self._inflight is not None:
            return True
        if self.loaded and kid is not None and kid in self.kids:
            return False  # a refetch cannot help a key we already hold
        return self.attempted_at is None or self._clock() - self.attempted_at >= self.min_refetch_interval

    def refresh_if_stale(self) -> None:
        """Start a background refresh when the keys are old; needs a running event loop."""
        if self._inflight is not None or self.loaded_at is None:
            return
        now = self._clock()
        if now - self.loaded_at < self.refresh_interval:
            return
        if self.attempted_at is not None and now - self.attempted_at < self.min_refetch_interval:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        self._start(loop)

    async def refresh(self) -> None:
        """Fetch now (or join the fetch in flight); failures are recorded, not raised."""
        task = self._inflight or self._start(asyncio.get_running_loop())
        await asyncio.shield(task)

    def _start(self, loop: asyncio.AbstractEventLoop) -> asyncio.Task[None]:
        task = loop.create_task(self._fetch())
        self._inflight = task
        task.add_done_callback(self._finished)
        return task

    def _finished(self, task: asyncio.Task[None]) -> None:
        if self._inflight is task:
            self._inflight = None

    async def _fetch(self) -> None:
        self.attempted_at = self._clock()
        self.fetches += 1
        try:
            response = await http_get(self.url, timeout=self.timeout, max_body_bytes=self.max_bytes)
            if response.status != 200:
                raise FetchError(f"GET {self.url}: status {response.status}")
            keys, problems = parse_jwks(response.body, allow_symmetric=False)
            if not keys:
                raise KeyLoadError("no usable keys" + (f" ({'; '.join(problems)})" if problems else ""))
        except (FetchError, KeyLoadError) as exc:
            self.last_error = str(exc)
            log("warning", "jwks fetch failed; keeping the keys already known", url=self.url, error=str(exc))
            return
        if problems:
            log("warning", "jwks keys skipped", url=self.url, problems=problems)
        self.keys = tuple(keys)
        self.kids = frozenset(key.kid for key in keys if key.kid is not None)
        self.loaded_at = self._clock()
        self.last_error = None
        self.generation += 1


# --- the verifier -------------------------------------------------------------------------------


class JWTVerifier:
    """Static keys and/or a JWKS, an algorithm allow-list and a claims policy."""

    def __init__(
        self,
        *,
        static_keys: Sequence[VerificationKey] = (),
        jwks: JWKSCache | None = None,
        algorithms: Iterable[str] = SUPPORTED_ALGORITHMS,
        policy: ClaimsPolicy | None = None,
        clock: Callable[[], float] = time.time,
        verified_cache_size: int = 4096,
        verified_cache_ttl: float = 30.0,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        allowed = frozenset(algorithms)
        unknown = allowed - SUPPORTED_ALGORITHMS
        if unknown:
            raise ValueError(f"unsupported algorithms: {', '.join(sorted(unknown))}")
        if not static_keys and jwks is None:
            raise ValueError("a JWT verifier needs at least one key or a JWKS URL")
        self.static_keys = tuple(static_keys)
        self.jwks = jwks
        self.algorithms = allowed
        self.policy = policy or ClaimsPolicy()
        self._clock = clock
        # Tokens whose signature checked out recently -> (claims, until). A client sends the same
        # token for many requests; a hit skips the signature (tens of microseconds for ECDSA and
        # EdDSA) but never the claims, so expiry stays exact. The TTL bounds how long a token
        # signed by a key that has since been rotated out stays accepted.
        self._verified: dict[str, tuple[dict[str, Any], float]] = {}
        self._verified_size = verified_cache_size
        self._verified_ttl = verified_cache_ttl
        self._monotonic = monotonic
        self._jwks_generation = jwks.generation if jwks is not None else 0

    def verify(self, token: str) -> dict[str, Any] | Awaitable[dict[str, Any]]:
        """The token's claims; raises JWTError. An awaitable only when JWKS keys must be fetched.

        The claims dict may be shared between requests presenting the same token: read it only.
        """
        if self.jwks is not None:
            self.jwks.refresh_if_stale()
            if self.jwks.generation != self._jwks_generation:
                # Keys may have been retired: what they signed must be checked again.
                self._verified.clear()
                self._jwks_generation = self.jwks.generation
        hit = self._verified.get(token)
        if hit is not None:
            if hit[1] > self._monotonic():
                check_claims(hit[0], self.policy, self._clock())
                return hit[0]
            del self._verified[token]
        parsed = parse_token(token)
        alg, kid = parsed.alg, parsed.kid
        if alg not in self.algorithms:
            raise JWTError(f"algorithm {alg!r} is not allowed")
        keys = [k for k in self.static_keys if alg in k.algorithms and (kid is None or k.kid in (None, kid))]
        if self.jwks is not None:
            keys += self.jwks.candidates(alg, kid)
        if any(key.verify(alg, parsed.signing_input, parsed.signature) for key in keys):
            return self._checked_claims(token, parsed)
        if self.jwks is not None and self.jwks.may_refetch(kid):
            return self._verify_after_refresh(token, parsed, self.jwks, tried=keys)
        raise JWTError("invalid signature" if keys else "no key fits the token")

    async def _verify_after_refresh(
        self, token: str, parsed: UnverifiedToken, jwks: JWKSCache, tried: list[VerificationKey]
    ) -> dict[str, Any]:
        await jwks.refresh()
        fresh = [key for key in jwks.candidates(parsed.alg, parsed.kid) if key not in tried]
        if any(key.verify(parsed.alg, parsed.signing_input, parsed.signature) for key in fresh):
            return self._checked_claims(token, parsed)
        if not tried and not jwks.loaded:
            raise JWKSUnavailable("the keys to check the token are unavailable")
        raise JWTError("invalid signature" if tried or fresh else "no key fits the token")

    def _checked_claims(self, token: str, parsed: UnverifiedToken) -> dict[str, Any]:
        check_claims(parsed.claims, self.policy, self._clock())
        if self._verified_size > 0:
            if len(self._verified) >= self._verified_size:
                del self._verified[next(iter(self._verified))]  # the oldest entry
            self._verified[token] = (parsed.claims, self._monotonic() + self._verified_ttl)
        return parsed.claims
