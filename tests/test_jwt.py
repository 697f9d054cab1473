"""gateway.jwt: signatures of every algorithm, claims, algorithm confusion, key loading, JWKS rotation."""

from __future__ import annotations

import asyncio
import datetime
import inspect
import json
import time
from collections.abc import Awaitable
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import NameOID

from gateway.httpfetch import FetchError, http_get, validate_fetch_url
from gateway.jwt import (
    SUPPORTED_ALGORITHMS,
    ClaimsPolicy,
    HmacKey,
    JWKSCache,
    JWKSUnavailable,
    JWTError,
    JWTVerifier,
    KeyLoadError,
    VerificationKey,
    check_claims,
    key_from_jwk,
    load_key_file,
    load_pem_key,
    parse_jwks,
    parse_token,
)
from tests.support.jwt_tokens import SigningKey, b64url, make_token, running_jwks_server

SECRET = b"s" * 32
NOW = 1_800_000_000.0


@pytest.fixture(scope="module")
def rsa_private() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def keys(rsa_private: rsa.RSAPrivateKey) -> dict[str, SigningKey]:
    """One signing key per algorithm family, generated for this test run."""
    p256 = ec.generate_private_key(ec.SECP256R1())
    p384 = ec.generate_private_key(ec.SECP384R1())
    p521 = ec.generate_private_key(ec.SECP521R1())
    ed = ed25519.Ed25519PrivateKey.generate()
    return {
        **{alg: SigningKey(alg, SECRET) for alg in ("HS256", "HS384", "HS512")},
        **{
            alg: SigningKey(alg, rsa_private)
            for alg in ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512")
        },
        "ES256": SigningKey("ES256", p256),
        "ES384": SigningKey("ES384", p384),
        "ES512": SigningKey("ES512", p521),
        "EdDSA": SigningKey("EdDSA", ed),
    }


def verification_key(key: SigningKey) -> VerificationKey:
    if isinstance(key.private, bytes):
        return HmacKey(key.private)
    return load_pem_key(key.public_pem())


def verifier(*keys: VerificationKey, policy: ClaimsPolicy | None = None, **kwargs: Any) -> JWTVerifier:
    return JWTVerifier(static_keys=keys, policy=policy or ClaimsPolicy(), clock=lambda: NOW, **kwargs)


def valid_claims(**extra: Any) -> dict[str, Any]:
    return {"sub": "alice", "exp": NOW + 60, **extra}


def verified(result: dict[str, Any] | Awaitable[dict[str, Any]]) -> dict[str, Any]:
    assert isinstance(result, dict), "a static-key verification must not need the event loop"
    return result


# --- signatures ------------------------------------------------------------------------------


def test_every_supported_algorithm_is_covered(keys: dict[str, SigningKey]) -> None:
    assert set(keys) == SUPPORTED_ALGORITHMS


@pytest.mark.parametrize(
    "alg",
    [
        "HS256",
        "HS384",
        "HS512",
        "RS256",
        "RS384",
        "RS512",
        "PS256",
        "PS384",
        "PS512",
        "ES256",
        "ES384",
        "ES512",
        "EdDSA",
    ],
)
def test_each_algorithm_verifies_and_detects_tampering(keys: dict[str, SigningKey], alg: str) -> None:
    key = keys[alg]
    check = verifier(verification_key(key))
    token = make_token(key, valid_claims())
    assert verified(check.verify(token))["sub"] == "alice"

    header, payload, signature = token.split(".")
    forged_payload = b64url(json.dumps(valid_claims(sub="mallory")).encode())
    with pytest.raises(JWTError, match="invalid signature"):
        check.verify(f"{header}.{forged_payload}.{signature}")
    flipped = bytearray(signature.encode())
    flipped[5] = ord("A") if flipped[5] != ord("A") else ord("B")
    with pytest.raises(JWTError, match="invalid signature"):
        check.verify(f"{header}.{payload}.{flipped.decode()}")


@pytest.mark.parametrize("alg", ["RS256", "ES256", "EdDSA", "HS256"])
def test_a_different_key_of_the_same_type_is_refused(keys: dict[str, SigningKey], alg: str) -> None:
    other: dict[str, SigningKey] = {
        "RS256": SigningKey("RS256", rsa.generate_private_key(public_exponent=65537, key_size=2048)),
        "ES256": SigningKey("ES256", ec.generate_private_key(ec.SECP256R1())),
        "EdDSA": SigningKey("EdDSA", ed25519.Ed25519PrivateKey.generate()),
        "HS256": SigningKey("HS256", b"t" * 32),
    }
    token = make_token(other[alg], valid_claims())
    with pytest.raises(JWTError, match="invalid signature"):
        verifier(verification_key(keys[alg])).verify(token)


def test_ec_key_only_checks_its_own_curve(keys: dict[str, SigningKey]) -> None:
    # A P-256 key must not be asked to check an ES384 token (and the reverse).
    check = verifier(verification_key(keys["ES256"]))
    with pytest.raises(JWTError, match="no key fits"):
        check.verify(make_token(keys["ES384"], valid_claims()))
    assert verification_key(keys["ES384"]).algorithms == {"ES384"}


def test_ecdsa_signature_in_der_form_is_refused(keys: dict[str, SigningKey]) -> None:
    key = keys["ES256"]
    assert isinstance(key.private, ec.EllipticCurvePrivateKey)
    header = b64url(json.dumps({"alg": "ES256"}).encode())
    payload = b64url(json.dumps(valid_claims()).encode())
    der = key.private.sign(f"{header}.{payload}".encode(), ec.ECDSA(hashes.SHA256()))
    with pytest.raises(JWTError, match="invalid signature"):
        verifier(verification_key(key)).verify(f"{header}.{payload}.{b64url(der)}")


# --- algorithm confusion -------------------------------------------------------------------------


def test_rsa_public_key_used_as_hmac_secret_is_refused(keys: dict[str, SigningKey]) -> None:
    rs = keys["RS256"]
    pem = rs.public_pem().encode()
    # The classic attack: sign HS256 with the server's *public* key as the shared secret.
    forged = make_token(SigningKey("HS256", pem), valid_claims())
    check = verifier(load_pem_key(pem))
    with pytest.raises(JWTError, match="no key fits"):
        check.verify(forged)
    # Even when HS256 is allowed and a real secret is configured, the PEM never becomes a secret.
    with pytest.raises(JWTError, match="invalid signature"):
        verifier(load_pem_key(pem), HmacKey(SECRET)).verify(forged)


def test_alg_none_is_refused(keys: dict[str, SigningKey]) -> None:
    header = b64url(json.dumps({"alg": "none", "typ": "JWT"}).encode())
    payload = b64url(json.dumps(valid_claims()).encode())
    check = verifier(HmacKey(SECRET), verification_key(keys["RS256"]))
    for token in (f"{header}.{payload}.", f"{header}.{payload}"):
        with pytest.raises(JWTError):
            check.verify(token)
    with pytest.raises(JWTError, match="'none' is not allowed"):
        check.verify(f"{header}.{payload}.")


def test_algorithm_allow_list(keys: dict[str, SigningKey]) -> None:
    check = verifier(verification_key(keys["RS256"]), algorithms=["RS256"])
    assert verified(check.verify(make_token(keys["RS256"], valid_claims())))
    with pytest.raises(JWTError, match="'PS256' is not allowed"):
        check.verify(make_token(keys["PS256"], valid_claims()))
    with pytest.raises(ValueError, match="unsupported algorithms"):
        verifier(HmacKey(SECRET), algorithms=["HS256", "none"])


# --- token syntax ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("token", "reason"),
    [
        ("abc", "malformed token"),
        ("a.b.c.d.e", "malformed token"),
        ("!!!.e30.", "malformed token header"),
        (f"{b64url(b'[1]')}.e30.", "malformed token header"),
        (f"{b64url(b'{}')}.e30.", "no algorithm"),
        (f"{b64url(json.dumps({'alg': 'HS256'}).encode())}.bm90IGpzb24.", "malformed token payload"),
        (f"{b64url(json.dumps({'alg': 'HS256'}).encode())}.e30=.", "malformed token payload"),
        (f"{b64url(json.dumps({'alg': 'HS256', 'kid': 7}).encode())}.e30.", "'kid' must be a string"),
        (f"{b64url(json.dumps({'alg': 'HS256', 'crit': ['exp']}).encode())}.e30.", "critical"),
        (f"{b64url(json.dumps({'alg': 'HS256'}).encode())}.e30.a+b/", "malformed token signature"),
        ("x" * 20_000, "too long"),
    ],
)
def test_malformed_tokens(token: str, reason: str) -> None:
    with pytest.raises(JWTError, match=reason):
        parse_token(token)


def test_parse_token_keeps_the_signed_bytes() -> None:
    token = make_token(SigningKey("HS256", SECRET, kid="k1"), {"sub": "x"})
    parsed = parse_token(token)
    assert parsed.alg == "HS256"
    assert parsed.kid == "k1"
    assert parsed.signing_input == token.rsplit(".", 1)[0].encode()


# --- claims --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("claims", "policy", "error"),
    [
        ({"exp": NOW + 1}, ClaimsPolicy(), None),
        ({"exp": NOW}, ClaimsPolicy(), "expired"),
        ({"exp": NOW - 10}, ClaimsPolicy(), "expired"),
        ({"exp": NOW - 10}, ClaimsPolicy(leeway=30), None),
        ({"exp": NOW - 30}, ClaimsPolicy(leeway=30), "expired"),
        ({"exp": "tomorrow"}, ClaimsPolicy(), "'exp' must be a number"),
        ({"exp": True}, ClaimsPolicy(), "'exp' must be a number"),
        ({}, ClaimsPolicy(), "no 'exp' claim"),
        ({}, ClaimsPolicy(required=frozenset()), None),
        ({"exp": NOW + 60, "nbf": NOW + 10}, ClaimsPolicy(), "not valid yet"),
        ({"exp": NOW + 60, "nbf": NOW + 10}, ClaimsPolicy(leeway=10), None),
        ({"exp": NOW + 60, "nbf": NOW}, ClaimsPolicy(), None),
        ({"exp": NOW + 60, "iat": "x"}, ClaimsPolicy(), "'iat' must be a number"),
        ({"exp": NOW + 60, "iss": "https://idp"}, ClaimsPolicy(issuers=frozenset({"https://idp"})), None),
        (
            {"exp": NOW + 60, "iss": "https://evil"},
            ClaimsPolicy(issuers=frozenset({"https://idp"})),
            "issuer",
        ),
        ({"exp": NOW + 60}, ClaimsPolicy(issuers=frozenset({"https://idp"})), "issuer"),
        ({"exp": NOW + 60, "aud": "api"}, ClaimsPolicy(audiences=frozenset({"api"})), None),
        ({"exp": NOW + 60, "aud": ["web", "api"]}, ClaimsPolicy(audiences=frozenset({"api"})), None),
        ({"exp": NOW + 60, "aud": ["web"]}, ClaimsPolicy(audiences=frozenset({"api"})), "audience"),
        ({"exp": NOW + 60, "aud": "web"}, ClaimsPolicy(audiences=frozenset({"api"})), "audience"),
        ({"exp": NOW + 60}, ClaimsPolicy(audiences=frozenset({"api"})), "audience"),
        ({"exp": NOW + 60, "aud": {"api": 1}}, ClaimsPolicy(audiences=frozenset({"api"})), "audience"),
        ({"exp": NOW + 60, "sub": "a"}, ClaimsPolicy(required=frozenset({"exp", "sub", "jti"})), "no 'jti'"),
    ],
)
def test_claims(claims: dict[str, Any], policy: ClaimsPolicy, error: str | None) -> None:
    if error is None:
        check_claims(claims, policy, NOW)
    else:
        with pytest.raises(JWTError, match=error):
            check_claims(claims, policy, NOW)


def test_claims_are_checked_after_the_signature(keys: dict[str, SigningKey]) -> None:
    check = verifier(HmacKey(SECRET), policy=ClaimsPolicy(issuers=frozenset({"idp"})))
    with pytest.raises(JWTError, match="expired"):
        check.verify(make_token(keys["HS256"], {"exp": NOW - 1, "iss": "idp"}))
    with pytest.raises(JWTError, match="issuer"):
        check.verify(make_token(keys["HS256"], {"exp": NOW + 1, "iss": "other"}))
    assert verified(check.verify(make_token(keys["HS256"], {"exp": NOW + 1, "iss": "idp"})))["iss"] == "idp"


# --- key selection ----------------------------------------------------------------------------


def test_kid_selects_among_static_keys(keys: dict[str, SigningKey]) -> None:
    first = HmacKey(b"1" * 32, kid="one")
    second = HmacKey(b"2" * 32, kid="two")
    check = verifier(first, second)
    token = make_token(SigningKey("HS256", b"2" * 32, kid="two"), valid_claims())
    assert verified(check.verify(token))
    wrong_kid = make_token(SigningKey("HS256", b"2" * 32, kid="one"), valid_claims())
    with pytest.raises(JWTError, match="invalid signature"):
        check.verify(wrong_kid)
    with pytest.raises(JWTError, match="no key fits"):
        check.verify(make_token(SigningKey("HS256", b"2" * 32, kid="three"), valid_claims()))
    # A key configured without kid checks tokens whatever kid they name.
    assert verified(verifier(HmacKey(b"2" * 32)).verify(token))


def test_short_hmac_secret_and_small_rsa_key_are_refused() -> None:
    with pytest.raises(KeyLoadError, match="at least 32 bytes"):
        HmacKey(b"short")
    small = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    pem = small.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    with pytest.raises(KeyLoadError, match="at least 2048 bits"):
        load_pem_key(pem)


def test_a_verifier_needs_keys() -> None:
    with pytest.raises(ValueError, match="at least one key"):
        JWTVerifier()


# --- key loading ---------------------------------------------------------------------------------


def _certificate_pem(private: rsa.RSAPrivateKey) -> bytes:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "idp.test")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(private.public_key())
        .serial_number(1)
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(private, hashes.SHA256())
    )
    return certificate.public_bytes(serialization.Encoding.PEM)


def test_key_files_pem_certificate_jwk_and_jwks(keys: dict[str, SigningKey], tmp_path: Path) -> None:
    rs, es, ed = keys["RS256"], keys["ES256"], keys["EdDSA"]
    assert isinstance(rs.private, rsa.RSAPrivateKey)
    files = {
        "key.pem": rs.public_pem().encode(),
        "cert.pem": _certificate_pem(rs.private),
        "key.jwk": json.dumps(es.jwk(kid="es")).encode(),
        "keys.jwks": json.dumps({"keys": [ed.jwk(kid="ed"), rs.jwk(kid="rs")]}).encode(),
    }
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    loaded = {name: load_key_file(tmp_path / name) for name in files}
    assert [type(k).__name__ for k in loaded["keys.jwks"]] == ["EdKey", "RsaKey"]
    check = verifier(*[key for group in loaded.values() for key in group])
    for signer in (rs, SigningKey("ES256", es.private, kid="es"), SigningKey("EdDSA", ed.private, kid="ed")):
        assert verified(check.verify(make_token(signer, valid_claims())))
    assert verified(verifier(*loaded["cert.pem"]).verify(make_token(rs, valid_claims())))


def test_key_file_problems(keys: dict[str, SigningKey], tmp_path: Path) -> None:
    rs = keys["RS256"]
    assert isinstance(rs.private, rsa.RSAPrivateKey)
    private_pem = rs.private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    (tmp_path / "private.pem").write_bytes(private_pem)
    (tmp_path / "junk.pem").write_bytes(b"-----BEGIN PUBLIC KEY-----\nnope\n-----END PUBLIC KEY-----\n")
    (tmp_path / "bad.json").write_bytes(b"{nope")
    with pytest.raises(KeyLoadError, match="private key"):
        load_key_file(tmp_path / "private.pem")
    with pytest.raises(KeyLoadError, match="not a usable PEM"):
        load_key_file(tmp_path / "junk.pem")
    with pytest.raises(KeyLoadError, match="not valid JSON"):
        load_key_file(tmp_path / "bad.json")
    with pytest.raises(KeyLoadError, match="cannot read key file"):
        load_key_file(tmp_path / "missing.pem")


def test_jwk_rules(keys: dict[str, SigningKey]) -> None:
    rs = keys["RS256"]
    assert key_from_jwk(rs.jwk(alg="RS256")).algorithms == {"RS256"}
    with pytest.raises(KeyLoadError, match="does not fit"):
        key_from_jwk(rs.jwk(alg="ES256"))
    with pytest.raises(KeyLoadError, match="not a signature key"):
        key_from_jwk(rs.jwk(use="enc"))
    with pytest.raises(KeyLoadError, match="key_ops"):
        key_from_jwk(rs.jwk(key_ops=["encrypt"]))
    with pytest.raises(KeyLoadError, match="unsupported JWK key type"):
        key_from_jwk({"kty": "XYZ"})
    with pytest.raises(KeyLoadError, match="not base64url"):
        key_from_jwk({"kty": "RSA", "n": "***", "e": "AQAB"})
    with pytest.raises(KeyLoadError, match="invalid EC JWK"):
        key_from_jwk({"kty": "EC", "crv": "P-256", "x": b64url(b"\x01" * 32), "y": b64url(b"\x02" * 32)})
    oct_jwk = SigningKey("HS256", SECRET).jwk()
    assert isinstance(key_from_jwk(oct_jwk), HmacKey)
    with pytest.raises(KeyLoadError, match="symmetric"):
        key_from_jwk(oct_jwk, allow_symmetric=False)


def test_jwks_skips_unusable_keys(keys: dict[str, SigningKey]) -> None:
    document = {"keys": [keys["RS256"].jwk(kid="a", use="enc"), keys["ES256"].jwk(kid="b"), 5]}
    usable, problems = parse_jwks(json.dumps(document).encode())
    assert [key.kid for key in usable] == ["b"]
    assert len(problems) == 2
    with pytest.raises(KeyLoadError, match='"keys" array'):
        parse_jwks(b'{"keys": {}}')


# --- JWKS over HTTP ---------------------------------------------------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def run(coroutine: Awaitable[Any]) -> Any:
    async def main() -> Any:
        return await coroutine

    return asyncio.run(main())


async def settle(result: dict[str, Any] | Awaitable[dict[str, Any]]) -> dict[str, Any]:
    return await result if inspect.isawaitable(result) else result


@pytest.fixture(scope="module")
def rotating_keys() -> list[SigningKey]:
    return [
        SigningKey("RS256", rsa.generate_private_key(public_exponent=65537, key_size=2048), kid=f"k{i}")
        for i in range(2)
    ]


def test_jwks_fetched_lazily_then_served_from_cache(rotating_keys: list[SigningKey]) -> None:
    first = rotating_keys[0]
    with running_jwks_server(first) as server:
        cache = JWKSCache(server.url, min_refetch_interval=60)
        check = verifier(jwks=cache)
        assert server.requests == 0  # nothing happens at construction

        async def scenario() -> None:
            token = make_token(first, valid_claims())
            pending = check.verify(token)
            assert inspect.isawaitable(pending)  # the first token waits for the fetch
            assert (await pending)["sub"] == "alice"
            assert verified(check.verify(token))["sub"] == "alice"  # then it is synchronous

        run(scenario())
        assert server.requests == 1


def test_jwks_rotation_new_kid_triggers_refetch(rotating_keys: list[SigningKey]) -> None:
    old, new = rotating_keys
    clock = FakeClock()
    with running_jwks_server(old) as server:
        cache = JWKSCache(server.url, min_refetch_interval=30, clock=clock)
        check = verifier(jwks=cache)

        async def scenario() -> None:
            await settle(check.verify(make_token(old, valid_claims())))
            server.publish(old, new)
            # Within the refetch interval an unknown kid does not cause a fetch.
            clock.now += 5
            with pytest.raises(JWTError, match="no key fits"):
                await settle(check.verify(make_token(new, valid_claims())))
            assert server.requests == 1
            clock.now += 30
            assert (await settle(check.verify(make_token(new, valid_claims()))))["sub"] == "alice"
            assert server.requests == 2
            assert cache.kids == {"k0", "k1"}
            # A known kid with a bad signature never causes a fetch.
            forged = make_token(SigningKey("RS256", rotating_keys[0].private, kid="k1"), valid_claims())
            clock.now += 60
            with pytest.raises(JWTError, match="invalid signature"):
                await settle(check.verify(forged))
            assert server.requests == 2

        run(scenario())


def test_jwks_fetch_failure_keeps_known_keys(rotating_keys: list[SigningKey]) -> None:
    old, new = rotating_keys
    clock = FakeClock()
    with running_jwks_server(old) as server:
        cache = JWKSCache(server.url, min_refetch_interval=10, clock=clock)
        check = verifier(jwks=cache)

        async def scenario() -> None:
            await settle(check.verify(make_token(old, valid_claims())))
            server.fail = True
            clock.now += 20
            with pytest.raises(JWTError, match="no key fits"):
                await settle(check.verify(make_token(new, valid_claims())))  # refetch fails
            assert cache.last_error is not None and "status 500" in cache.last_error
            assert server.requests == 2
            assert verified(check.verify(make_token(old, valid_claims())))["sub"] == "alice"

        run(scenario())


def test_jwks_unreachable_without_any_key_is_unavailable(rotating_keys: list[SigningKey]) -> None:
    with running_jwks_server(rotating_keys[0]) as server:
        url = server.url
    check = verifier(jwks=JWKSCache(url, timeout=2))
    with pytest.raises(JWKSUnavailable):
        run(settle(check.verify(make_token(rotating_keys[0], valid_claims()))))


def test_jwks_stale_keys_refresh_in_background(rotating_keys: list[SigningKey]) -> None:
    old, new = rotating_keys
    clock = FakeClock()
    with running_jwks_server(old) as server:
        cache = JWKSCache(server.url, refresh_interval=300, min_refetch_interval=10, clock=clock)
        check = verifier(jwks=cache)

        async def scenario() -> None:
            await settle(check.verify(make_token(old, valid_claims())))
            server.publish(new)  # the IdP retired the old key
            clock.now += 301
            # Still served while the refresh runs in the background...
            assert verified(check.verify(make_token(old, valid_claims())))
            for _ in range(200):
                if cache.kids == {"k1"}:
                    break
                await asyncio.sleep(0.01)
            assert cache.kids == {"k1"}
            # ...and refused once the refreshed set no longer has it.
            with pytest.raises(JWTError, match="no key fits"):
                await settle(check.verify(make_token(old, valid_claims())))
            assert verified(check.verify(make_token(new, valid_claims())))

        run(scenario())
        assert server.requests == 2


def test_concurrent_unknown_kids_share_one_fetch(rotating_keys: list[SigningKey]) -> None:
    with running_jwks_server(*rotating_keys) as server:
        check = verifier(jwks=JWKSCache(server.url))

        async def scenario() -> list[dict[str, Any]]:
            tokens = [make_token(key, valid_claims(n=i)) for i, key in enumerate(rotating_keys * 5)]
            return list(await asyncio.gather(*(settle(check.verify(token)) for token in tokens)))

        results = run(scenario())
        assert [claims["n"] for claims in results] == list(range(10))
        assert server.requests == 1


def test_jwks_refuses_symmetric_keys(rotating_keys: list[SigningKey]) -> None:
    with running_jwks_server(SigningKey("HS256", SECRET, kid="oct")) as server:
        cache = JWKSCache(server.url)
        check = verifier(jwks=cache)
        with pytest.raises(JWKSUnavailable):
            run(settle(check.verify(make_token(SigningKey("HS256", SECRET, kid="oct"), valid_claims()))))
        assert cache.last_error is not None and "symmetric" in cache.last_error


# --- the fetch client ------------------------------------------------------------------------------


async def _serve_raw(response: bytes, *, hold: float = 0.0) -> tuple[asyncio.Server, str]:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await reader.readuntil(b"\r\n\r\n")
            writer.write(response)
            await writer.drain()
            if hold:
                await asyncio.sleep(hold)
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    return server, f"http://127.0.0.1:{port}/keys"


@pytest.mark.parametrize(
    ("raw", "body"),
    [
        (b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello", b"hello"),
        (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"3;x=1\r\nhel\r\n2\r\nlo\r\n0\r\nT: 1\r\n\r\n",
            b"hello",
        ),
        (b"HTTP/1.0 200 OK\r\n\r\nhello", b"hello"),
        (b"HTTP/1.1 103 Early Hints\r\nLink: x\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", b"ok"),
    ],
)
def test_http_get_body_framings(raw: bytes, body: bytes) -> None:
    async def scenario() -> bytes:
        server, url = await _serve_raw(raw)
        async with server:
            response = await http_get(url, timeout=5, max_body_bytes=100)
        assert response.status == 200
        return response.body

    assert run(scenario()) == body


@pytest.mark.parametrize(
    ("raw", "error"),
    [
        (b"HTTP/1.1 200 OK\r\nContent-Length: 500\r\n\r\n" + b"x" * 500, "exceeds"),
        (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n200\r\n" + b"x" * 512 + b"\r\n0\r\n\r\n",
            "exceeds",
        ),
        (b"HTTP/1.1 200 OK\r\n\r\n" + b"x" * 500, "exceeds"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0x3\r\nabc\r\n0\r\n\r\n", "chunk size"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab", "conflicting"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n", "unsupported transfer-encoding"),
        (b"SSH-2.0-nope\r\n\r\n", "malformed status line"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort", "IncompleteReadError"),
    ],
)
def test_http_get_refuses_bad_responses(raw: bytes, error: str) -> None:
    async def scenario() -> None:
        server, url = await _serve_raw(raw)
        async with server:
            with pytest.raises(FetchError, match=error):
                await http_get(url, timeout=5, max_body_bytes=100)

    run(scenario())


def test_http_get_deadline() -> None:
    async def scenario() -> float:
        server, url = await _serve_raw(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc", hold=5)
        async with server:
            started = time.monotonic()
            with pytest.raises(FetchError, match="no complete response within"):
                await http_get(url, timeout=0.2, max_body_bytes=100)
            return time.monotonic() - started

    assert run(scenario()) < 4


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("https://idp.example/.well-known/jwks.json", None),
        ("http://127.0.0.1:8080/keys?x=1", None),
        ("ftp://idp.example/keys", "scheme"),
        ("https:///keys", "no host"),
        ("https://idp.example:99999/keys", "invalid URL"),
        ("https://idp.example/keys#frag", "fragments"),
    ],
)
def test_fetch_url_validation(url: str, problem: str | None) -> None:
    found = validate_fetch_url(url)
    if problem is None:
        assert found is None
    else:
        assert found is not None and problem in found


def test_verified_tokens_skip_the_signature_but_not_the_claims(keys: dict[str, SigningKey]) -> None:
    wall = [NOW]
    mono = FakeClock()
    calls = []

    class CountingKey(HmacKey):
        __slots__ = ()

        def verify(self, alg: str, signing_input: bytes, signature: bytes) -> bool:
            calls.append(alg)
            return super().verify(alg, signing_input, signature)

    check = JWTVerifier(
        static_keys=[CountingKey(SECRET)],
        clock=lambda: wall[0],
        monotonic=mono,
        verified_cache_size=2,
        verified_cache_ttl=30,
    )
    token = make_token(keys["HS256"], {"sub": "a", "exp": NOW + 10})
    for _ in range(3):
        assert verified(check.verify(token))["sub"] == "a"
    assert len(calls) == 1
    wall[0] = NOW + 10
    with pytest.raises(JWTError, match="expired"):
        check.verify(token)  # a cached token still expires on time
    wall[0] = NOW
    mono.now += 31
    assert verified(check.verify(token))
    assert len(calls) == 2  # the cache entry outlived its TTL
    others = [make_token(keys["HS256"], {"sub": f"u{i}", "exp": NOW + 10}) for i in range(2)]
    for other in others:
        verified(check.verify(other))
    verified(check.verify(token))
    assert len(calls) == 5  # bounded: the first token was evicted
    forged = token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB")
    with pytest.raises(JWTError, match="invalid signature"):
        check.verify(forged)  # a different string never matches a cached one
