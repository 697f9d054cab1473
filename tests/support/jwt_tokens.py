"""JWT test kit: keys generated in the test run, a token signer, and a JWKS server on loopback.

The signer is written independently of gateway.jwt (straight on `cryptography`), so a bug in
the verifier's encoding cannot be mirrored by the tokens it is tested with.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

__all__ = ["JwksServer", "SigningKey", "b64url", "make_token", "running_jwks_server", "sign"]

PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey | bytes

_HASHES: dict[str, type[hashes.HashAlgorithm]] = {
    "256": hashes.SHA256,
    "384": hashes.SHA384,
    "512": hashes.SHA512,
}


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _int_b64(value: int, length: int | None = None) -> str:
    size = length or (value.bit_length() + 7) // 8
    return b64url(value.to_bytes(size, "big"))


@dataclass(frozen=True)
class SigningKey:
    """A private key (or HMAC secret) and the algorithm it signs with."""

    alg: str
    private: PrivateKey
    kid: str | None = None

    def public_pem(self) -> str:
        assert not isinstance(self.private, bytes)
        return (
            self.private.public_key()
            .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
            .decode("ascii")
        )

    def jwk(self, **extra: Any) -> dict[str, Any]:
        """The public JWK (RFC 7517/7518/8037)."""
        key = self.private
        jwk: dict[str, Any]
        if isinstance(key, rsa.RSAPrivateKey):
            numbers = key.public_key().public_numbers()
            jwk = {"kty": "RSA", "n": _int_b64(numbers.n), "e": _int_b64(numbers.e)}
        elif isinstance(key, ec.EllipticCurvePrivateKey):
            numbers_ec = key.public_key().public_numbers()
            size = (key.curve.key_size + 7) // 8
            crv = {"secp256r1": "P-256", "secp384r1": "P-384", "secp521r1": "P-521"}[key.curve.name]
            jwk = {
                "kty": "EC",
                "crv": crv,
                "x": _int_b64(numbers_ec.x, size),
                "y": _int_b64(numbers_ec.y, size),
            }
        elif isinstance(key, ed25519.Ed25519PrivateKey):
            raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
            jwk = {"kty": "OKP", "crv": "Ed25519", "x": b64url(raw)}
        else:
            jwk = {"kty": "oct", "k": b64url(key)}
        if self.kid is not None:
            jwk["kid"] = self.kid
        jwk.update(extra)
        return jwk


def sign(alg: str, private: PrivateKey, data: bytes) -> bytes:
    if alg.startswith("HS"):
        assert isinstance(private, bytes)
        return hmac.new(private, data, getattr(hashlib, f"sha{alg[2:]}")).digest()
    if alg.startswith(("RS", "PS")):
        assert isinstance(private, rsa.RSAPrivateKey)
        digest = _HASHES[alg[2:]]()
        scheme: padding.AsymmetricPadding = (
            padding.PSS(mgf=padding.MGF1(_HASHES[alg[2:]]()), salt_length=digest.digest_size)
            if alg.startswith("PS")
            else padding.PKCS1v15()
        )
        return private.sign(data, scheme, digest)
    if alg.startswith("ES"):
        assert isinstance(private, ec.EllipticCurvePrivateKey)
        r, s = decode_dss_signature(private.sign(data, ec.ECDSA(_HASHES[alg[2:]]())))
        size = (private.curve.key_size + 7) // 8
        return r.to_bytes(size, "big") + s.to_bytes(size, "big")
    if alg == "EdDSA":
        assert isinstance(private, ed25519.Ed25519PrivateKey)
        return private.sign(data)
    raise ValueError(alg)


def make_token(
    key: SigningKey,
    claims: dict[str, Any],
    *,
    header: dict[str, Any] | None = None,
    alg: str | None = None,
) -> str:
    """A compact JWS. `alg` overrides the header's algorithm (and the one used to sign)."""
    algorithm = alg or key.alg
    fields: dict[str, Any] = {"alg": algorithm, "typ": "JWT"}
    if key.kid is not None:
        fields["kid"] = key.kid
    fields.update(header or {})
    signing_input = f"{b64url(json.dumps(fields).encode())}.{b64url(json.dumps(claims).encode())}"
    signature = sign(algorithm, key.private, signing_input.encode("ascii"))
    return f"{signing_input}.{b64url(signature)}"


class JwksServer:
    """Serves `document` at any path; counts requests; `fail = True` answers 500."""

    def __init__(self) -> None:
        self.document: dict[str, Any] = {"keys": []}
        self.fail = False
        self.requests = 0
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                with server._lock:
                    server.requests += 1
                    fail = server.fail
                    body = json.dumps(server.document).encode()
                if fail:
                    self.send_response(500)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self.port = self._httpd.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}/.well-known/jwks.json"
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    def publish(self, *keys: SigningKey) -> None:
        with self._lock:
            self.document = {"keys": [key.jwk() for key in keys]}

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(5)


@contextmanager
def running_jwks_server(*keys: SigningKey) -> Iterator[JwksServer]:
    server = JwksServer()
    server.publish(*keys)
    server.start()
    try:
        yield server
    finally:
        server.stop()
