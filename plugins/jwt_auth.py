"""jwt: callers present a signed JSON Web Token (Authorization: Bearer, or a query parameter/cookie).

Keys come from the config (a shared secret, PEM public keys, key files) and/or a JWKS URL
that is fetched lazily, cached and refreshed with rotation (gateway.jwt.JWKSCache). The token's
consumer claim (default `sub`) names the consumer through [consumers.NAME] jwt_subjects;
selected claims are forwarded upstream as headers.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Awaitable, Mapping
from typing import Annotated, Any

import msgspec
from msgspec import Meta

from gateway.consumers import Consumer, ConsumerRegistry, forward_identity, strip_identity_headers
from gateway.httpfetch import validate_fetch_url
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
    load_key_file,
    load_pem_key,
)
from gateway.plugins import Plugin, Request, Response
from gateway.units import parse_duration

from ._auth import header_name_problem, realm_problem, take_cookie, take_query_param, unauthorized

__all__ = ["PLUGIN", "JwtAuth"]

CLAIMS_CTX_KEY = "jwt.claims"


def _doc(description: str) -> Meta:
    return Meta(description=description)


class JwtConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    header_names: Annotated[
        list[str],
        _doc('Headers that may carry the token ("Bearer <token>" or the bare token), tried in order.'),
    ] = msgspec.field(default_factory=lambda: ["authorization"])
    query_param_names: Annotated[
        list[str], _doc("Query parameters that may carry the token (none by default).")
    ] = []
    cookie_names: Annotated[list[str], _doc("Cookies that may carry the token (none by default).")] = []
    secret: Annotated[
        str | None, _doc("Shared secret for HS256/384/512 (at least 32 bytes); absent = no HMAC tokens.")
    ] = None
    secret_base64: Annotated[
        bool, _doc("The secret is written in base64 (standard or url-safe alphabet).")
    ] = False
    public_keys: Annotated[
        list[str], _doc("PEM public keys or certificates for RS*/PS*/ES*/EdDSA tokens.")
    ] = []
    key_files: Annotated[
        list[str], _doc("Files holding a PEM public key or certificate, a JWK or a JWK Set; read at load.")
    ] = []
    jwks_url: Annotated[
        str | None, _doc("An http(s) URL serving a JWK Set; fetched on first use and on an unknown kid.")
    ] = None
    jwks_refresh_interval: Annotated[
        str, _doc("JWKS keys older than this are refreshed in the background while still being used.")
    ] = "5m"
    jwks_min_refetch_interval: Annotated[
        str, _doc("At most one JWKS fetch per this interval, however many unknown kids arrive.")
    ] = "30s"
    jwks_timeout: Annotated[str, _doc("A JWKS fetch must complete within this.")] = "5s"
    algorithms: Annotated[
        list[str],
        _doc("Accepted algorithms (HS256, RS256, PS256, ES256, EdDSA, ...); empty = any the keys fit."),
    ] = []
    issuers: Annotated[list[str], _doc("Accepted `iss` values; empty = the issuer is not checked.")] = []
    audiences: Annotated[list[str], _doc("Accepted `aud` values (one must match); empty = not checked.")] = []
    leeway: Annotated[str, _doc("Clock skew allowed when checking `exp` and `nbf`.")] = "0s"
    required_claims: Annotated[list[str], _doc("Claims every token must carry.")] = msgspec.field(
        default_factory=lambda: ["exp"]
    )
    consumer_claim: Annotated[str, _doc("The claim matched against consumers' jwt_subjects.")] = "sub"
    require_consumer: Annotated[
        bool,
        _doc(
            "Refuse tokens whose consumer claim names no configured consumer. When false, such a token "
            "authenticates a consumer named after the claim, with groups from groups_claim."
        ),
    ] = True
    groups_claim: Annotated[
        str | None, _doc("Claim holding groups (array or space-separated) for consumers not configured here.")
    ] = None
    forward_claims: Annotated[
        dict[str, str],
        _doc("Claims forwarded upstream: claim name -> header name (client copies are removed)."),
    ] = {}
    hide_credentials: Annotated[bool, _doc("Remove the token from the request before proxying.")] = False
    realm: Annotated[str, _doc('The realm of the 401 challenge: WWW-Authenticate: Bearer realm="...".')] = (
        "lambdagate"
    )

    def __post_init__(self) -> None:
        if not (self.header_names or self.query_param_names or self.cookie_names):
            raise ValueError("jwt needs at least one of header_names, query_param_names and cookie_names")
        for name in [*self.header_names, *self.forward_claims.values()]:
            problem = header_name_problem(name)
            if problem:
                raise ValueError(problem)
        unknown = set(self.algorithms) - SUPPORTED_ALGORITHMS
        if unknown:
            supported = ", ".join(sorted(SUPPORTED_ALGORITHMS))
            raise ValueError(f"unsupported algorithms {sorted(unknown)}; supported: {supported}")
        for name in ("jwks_refresh_interval", "jwks_min_refetch_interval", "jwks_timeout", "leeway"):
            try:
                parse_duration(getattr(self, name))
            except ValueError as exc:
                raise ValueError(f"{name}: {exc}") from None
        if self.jwks_url is not None:
            problem = validate_fetch_url(self.jwks_url)
            if problem:
                raise ValueError(f"jwks_url: {problem}")
        problem = realm_problem(self.realm)
        if problem:
            raise ValueError(f"realm: {problem}")
        keys = static_keys(self)  # raises ValueError naming the bad key
        if not keys and self.jwks_url is None:
            raise ValueError("jwt needs a key: secret, public_keys, key_files or jwks_url")
        if self.algorithms and keys and self.jwks_url is None:
            usable = set().union(*(key.algorithms for key in keys))
            if not usable & set(self.algorithms):
                raise ValueError("none of the configured keys fits any of the allowed algorithms")


def static_keys(config: JwtConfig) -> list[VerificationKey]:
    keys: list[VerificationKey] = []
    try:
        if config.secret is not None:
            keys.append(HmacKey(_secret_bytes(config.secret, config.secret_base64)))
        for index, pem in enumerate(config.public_keys):
            try:
                keys.append(load_pem_key(pem))
            except KeyLoadError as exc:
                raise KeyLoadError(f"public_keys[{index}]: {exc}") from None
        for path in config.key_files:
            keys.extend(load_key_file(path))
    except KeyLoadError as exc:
        raise ValueError(str(exc)) from None
    return keys


def _secret_bytes(secret: str, is_base64: bool) -> bytes:
    if not is_base64:
        return secret.encode("utf-8")
    text = secret.strip().replace("-", "+").replace("_", "/")
    try:
        return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise KeyLoadError("secret is not valid base64") from None


def _header_value(value: Any) -> str | None:
    """A claim as a header value: printable ASCII text as is, anything else as JSON (ASCII-escaped)."""
    if isinstance(value, str) and all(0x20 <= ord(c) <= 0x7E for c in value):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return json.dumps(value)
    if isinstance(value, list) and all(
        isinstance(item, str) and item and all(0x21 <= ord(c) <= 0x7E and c != "," for c in item)
        for item in value
    ):
        return ",".join(value)
    try:
        return json.dumps(value, ensure_ascii=True, separators=(",", ":"))
    except (TypeError, ValueError):
        return None


def _claim_groups(value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        value = value.split()
    if not isinstance(value, list):
        return ()
    return tuple(
        g for g in value if isinstance(g, str) and g and all(0x21 <= ord(c) <= 0x7E and c != "," for c in g)
    )


class JwtAuth(Plugin):
    name = "jwt"
    version = "1.0.0"
    priority = 1450
    Config = JwtConfig

    def __init__(self, config: JwtConfig, *, consumers: ConsumerRegistry) -> None:
        super().__init__(config)
        self._consumers = consumers
        keys = static_keys(config)
        jwks = None
        if config.jwks_url is not None:
            jwks = JWKSCache(
                config.jwks_url,
                refresh_interval=parse_duration(config.jwks_refresh_interval),
                min_refetch_interval=parse_duration(config.jwks_min_refetch_interval),
                timeout=parse_duration(config.jwks_timeout),
            )
        algorithms = set(config.algorithms or SUPPORTED_ALGORITHMS)
        if jwks is None:
            # Without a JWKS the keys are all known: accept only algorithms some key can check.
            algorithms &= set().union(*(key.algorithms for key in keys))
        self.verifier = JWTVerifier(
            static_keys=keys,
            jwks=jwks,
            algorithms=algorithms,
            policy=ClaimsPolicy(
                issuers=frozenset(config.issuers),
                audiences=frozenset(config.audiences),
                leeway=parse_duration(config.leeway),
                required=frozenset(config.required_claims),
            ),
        )
        self._header_names = tuple(dict.fromkeys(name.lower() for name in config.header_names))
        self._query_names = frozenset(config.query_param_names)
        self._cookie_names = frozenset(config.cookie_names)
        self._forward = dict(config.forward_claims)
        self._missing = f'Bearer realm="{config.realm}"'
        self._invalid = f'Bearer realm="{config.realm}", error="invalid_token"'

    def access(self, request: Request) -> Response | Awaitable[Response | None] | None:
        strip_identity_headers(request)
        for header in self._forward.values():
            request.headers.remove(header)
        token = self._take_token(request)
        if token is None:
            # RFC 6750 3.1: no error code when the request carried no token at all.
            return unauthorized(self._missing, "no bearer token in the request")
        try:
            result = self.verifier.verify(token)
        except JWKSUnavailable as exc:
            return Response.error(503, "keys_unavailable", str(exc))
        except JWTError as exc:
            return unauthorized(self._invalid, str(exc))
        if isinstance(result, dict):
            return self._accept(request, result)
        return self._finish(request, result)

    async def _finish(self, request: Request, pending: Awaitable[dict[str, Any]]) -> Response | None:
        try:
            claims = await pending
        except JWKSUnavailable as exc:
            return Response.error(503, "keys_unavailable", str(exc))
        except JWTError as exc:
            return unauthorized(self._invalid, str(exc))
        return self._accept(request, claims)

    def _accept(self, request: Request, claims: Mapping[str, Any]) -> Response | None:
        subject = claims.get(self.config.consumer_claim)
        if isinstance(subject, int) and not isinstance(subject, bool):
            subject = str(subject)
        if not isinstance(subject, str) or not subject or any(ord(c) < 0x20 for c in subject):
            return unauthorized(self._invalid, f"token has no usable {self.config.consumer_claim!r} claim")
        consumer = self._consumers.by_jwt_subject(subject)
        if consumer is None:
            if self.config.require_consumer:
                return unauthorized(self._invalid, "the token's subject is not a known consumer")
            groups_claim = self.config.groups_claim
            groups = _claim_groups(claims.get(groups_claim)) if groups_claim else ()
            consumer = Consumer(name=subject, groups=groups)
        request.ctx[CLAIMS_CTX_KEY] = claims
        forward_identity(request, consumer, subject)
        for claim, header in self._forward.items():
            if claim in claims:
                value = _header_value(claims[claim])
                if value is not None:
                    request.headers.set(header, value)
        return None

    def _take_token(self, request: Request) -> str | None:
        token: str | None = None
        for name in self._header_names:
            value = request.headers.get(name)
            if value is None:
                continue
            scheme, _, rest = value.strip().partition(" ")
            if scheme.lower() == "bearer":
                candidate = rest.strip()
            elif name == "authorization":
                continue  # another scheme (Basic, ...) belongs to another plugin
            else:
                candidate = value.strip()
            if candidate:
                token = candidate
                if self.config.hide_credentials:
                    request.headers.remove(name)
                break
        if token is None and self._query_names and request.query:
            found, rest_query = take_query_param(request.query, self._query_names)
            if found:
                token = found.decode("latin-1")
                if self.config.hide_credentials:
                    request.query = rest_query
        if token is None and self._cookie_names:
            cookie_header = request.headers.get("cookie")
            if cookie_header:
                found_cookie, rest_cookies = take_cookie(cookie_header, self._cookie_names)
                if found_cookie:
                    token = found_cookie
                    if self.config.hide_credentials:
                        if rest_cookies:
                            request.headers.set("Cookie", rest_cookies)
                        else:
                            request.headers.remove("Cookie")
        return token


PLUGIN = JwtAuth
