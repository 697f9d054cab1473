"""The auth plugins key-auth, basic-auth, jwt and acl: in a plugin chain, and through the engine."""

from __future__ import annotations

import asyncio
import base64
import inspect
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import bcrypt
import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from gateway.consumers import ConsumerRegistry, hashed_api_key
from gateway.plugins import Plugin, PluginChain, PluginConfigError, PluginRegistry, Request, Response
from gateway.plugins.acl import Acl
from gateway.plugins.basic_auth import BasicAuth
from gateway.plugins.jwt_auth import JwtAuth
from gateway.plugins.key_auth import KeyAuth
from tests.support.engine import EngineThread, running_engine
from tests.support.jwt_tokens import SigningKey, make_token, running_jwks_server
from tests.support.upstream import Upstream, echo, running_upstream

AUTH_CLASSES: list[type[Plugin]] = [KeyAuth, BasicAuth, JwtAuth, Acl]
SECRET = "a-shared-secret-of-at-least-32-bytes!"
REGISTRY = PluginRegistry(AUTH_CLASSES)


@pytest.fixture(scope="module")
def consumers() -> ConsumerRegistry:
    return ConsumerRegistry.from_config(
        {
            "alice": {"keys": ["alice-key-123"], "groups": ["partners"], "jwt_subjects": ["alice@idp"]},
            "bob": {"keys": [hashed_api_key("bob-key-456")], "groups": ["interns", "partners"]},
            "carol": {
                "basic_auth": [
                    {"username": "carol", "password": bcrypt.hashpw(b"carol-pw", bcrypt.gensalt(4)).decode()}
                ],
                "groups": ["staff"],
            },
        }
    )


def plugin(name: str, consumers: ConsumerRegistry, **config: Any) -> Plugin:
    cls = REGISTRY.get(name)
    assert cls is not None
    instance: Plugin = cls(REGISTRY.decode_config(name, config), consumers=consumers)  # type: ignore[call-arg]
    return instance


def make_request(headers: list[tuple[str, str]] | None = None, query: str = "") -> Request:
    return Request(
        method="GET",
        path="/api/x",
        query=query,
        headers=headers or [],
        client_ip="203.0.113.7",
        route="api",
        request_id="req-1",
    )


def run_access(chain: PluginChain, request: Request) -> Response | None:
    result = chain.run_access(request)
    if inspect.isawaitable(result):

        async def finish() -> Response | None:
            return await result

        return asyncio.run(finish())
    return result


def error_of(response: Response | None) -> dict[str, Any]:
    assert response is not None
    error: dict[str, Any] = json.loads(response.body)["error"]
    return error


def challenge(response: Response | None) -> str | None:
    assert response is not None
    return dict((k.lower(), v) for k, v in response.headers).get("www-authenticate")


SPOOFED = [("X-Consumer-Id", "admin"), ("X-Consumer-Groups", "root"), ("X-Credential-Identifier", "admin")]


# --- declarations -------------------------------------------------------------------------------------


def test_declarations_follow_kong() -> None:
    assert {cls.name: cls.priority for cls in AUTH_CLASSES} == {
        "key-auth": 1250,
        "basic-auth": 1100,
        "jwt": 1450,
        "acl": 950,
    }
    for cls in AUTH_CLASSES:
        assert signature_has_keyword(cls, "consumers")


def signature_has_keyword(cls: type[Plugin], name: str) -> bool:
    parameter = inspect.signature(cls.__init__).parameters.get(name)
    return parameter is not None and parameter.kind is inspect.Parameter.KEYWORD_ONLY


@pytest.mark.parametrize(
    ("name", "table", "error"),
    [
        ("key-auth", {"header": "x"}, "unknown field `header`"),
        ("key-auth", {"header_names": [], "query_param_names": []}, "at least one"),
        ("key-auth", {"header_names": ["bad header"]}, "not a valid header name"),
        ("key-auth", {"realm": 'a"b'}, "realm"),
        ("basic-auth", {"hide_credentials": "yes"}, "expected `bool`"),
        ("jwt", {}, "needs a key"),
        ("jwt", {"secret": "short"}, "at least 32 bytes"),
        ("jwt", {"secret": SECRET, "algorithms": ["none"]}, "unsupported algorithms"),
        ("jwt", {"secret": SECRET, "algorithms": ["RS256"]}, "none of the configured keys"),
        ("jwt", {"jwks_url": "ftp://idp/keys"}, "scheme must be http or https"),
        ("jwt", {"secret": SECRET, "leeway": 30}, "expected `str`"),
        ("jwt", {"secret": SECRET, "leeway": "30 seconds"}, "leeway"),
        ("jwt", {"key_files": ["/nonexistent/key.pem"]}, "cannot read key file"),
        ("jwt", {"public_keys": ["not a pem"]}, "public_keys\\[0\\]"),
        ("jwt", {"secret": SECRET, "forward_claims": {"email": "X Email"}}, "not a valid header name"),
        ("acl", {}, "at least one group"),
        ("acl", {"allow": ["a"], "groups": ["b"]}, "unknown field `groups`"),
    ],
)
def test_config_validation(name: str, table: dict[str, Any], error: str) -> None:
    with pytest.raises(PluginConfigError, match=error):
        REGISTRY.decode_config(name, table)


# --- key-auth --------------------------------------------------------------------------------------


def test_key_auth_header(consumers: ConsumerRegistry) -> None:
    chain = PluginChain([plugin("key-auth", consumers)])
    request = make_request([("apikey", "alice-key-123"), ("Accept", "*/*"), *SPOOFED])
    assert run_access(chain, request) is None
    assert request.consumer is not None and request.consumer.name == "alice"
    assert request.headers.items() == [
        ("Accept", "*/*"),
        ("X-Consumer-Id", "alice"),
        ("X-Consumer-Groups", "partners"),
    ]


def test_key_auth_hashed_key_and_custom_headers(consumers: ConsumerRegistry) -> None:
    chain = PluginChain([plugin("key-auth", consumers, header_names=["X-API-Key", "apikey"])])
    request = make_request([("x-api-key", "bob-key-456"), ("apikey", "alice-key-123")])
    assert run_access(chain, request) is None
    assert request.consumer is not None and request.consumer.name == "bob"  # first configured header wins
    assert "apikey" not in request.headers and "x-api-key" not in request.headers
    assert request.headers.get("x-consumer-groups") == "interns,partners"


def test_key_auth_query_parameter_is_removed(consumers: ConsumerRegistry) -> None:
    chain = PluginChain([plugin("key-auth", consumers, header_names=[], query_param_names=["apikey", "key"])])
    request = make_request(query="a=1&key=alice-key-123&b=%2F+x&key=other")
    assert run_access(chain, request) is None
    assert request.consumer is not None and request.consumer.name == "alice"
    assert request.query == "a=1&b=%2F+x"  # the others untouched, as the client wrote them
    assert request.path_changed


def test_key_auth_percent_encoded_query_key(consumers: ConsumerRegistry) -> None:
    chain = PluginChain([plugin("key-auth", consumers, query_param_names=["apikey"])])
    request = make_request(query="apikey=alice%2Dkey%2D123")
    assert run_access(chain, request) is None
    assert request.consumer is not None and request.consumer.name == "alice"
    assert request.query == ""


@pytest.mark.parametrize(
    ("headers", "query", "message"),
    [
        ([], "", "No API key found"),
        ([("apikey", "")], "", "No API key found"),
        ([("apikey", "wrong-key")], "", "Invalid authentication credentials"),
        ([("apikey", hashed_api_key("bob-key-456"))], "", "Invalid authentication credentials"),
        ([], "apikey=alice-key-123", "No API key found"),  # query names not configured
    ],
)
def test_key_auth_refusals(
    consumers: ConsumerRegistry, headers: list[tuple[str, str]], query: str, message: str
) -> None:
    chain = PluginChain([plugin("key-auth", consumers, realm="api")])
    request = make_request([*headers, *SPOOFED], query=query)
    response = run_access(chain, request)
    assert response is not None and response.status == 401
    assert challenge(response) == 'Key realm="api"'
    assert error_of(response) == {
        "status": 401,
        "code": "unauthorized",
        "message": error_of(response)["message"],
    }
    assert message in error_of(response)["message"]
    assert request.consumer is None


# --- basic-auth ------------------------------------------------------------------------------------


def basic(username: str, password: str) -> tuple[str, str]:
    return ("Authorization", "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode())


def test_basic_auth_verifies_then_answers_from_the_cache(consumers: ConsumerRegistry) -> None:
    chain = PluginChain([plugin("basic-auth", consumers)])
    first = make_request([basic("carol", "carol-pw"), *SPOOFED])
    pending = chain.run_access(first)
    assert inspect.isawaitable(pending)  # bcrypt runs off the event loop

    async def finish() -> Response | None:
        return await pending

    assert asyncio.run(finish()) is None
    assert first.consumer is not None and first.consumer.name == "carol"
    assert first.headers.items() == [
        ("X-Consumer-Id", "carol"),
        ("X-Consumer-Groups", "staff"),
        ("X-Credential-Identifier", "carol"),
    ]  # Authorization hidden by default, spoofed copies gone

    again = make_request([basic("carol", "carol-pw")])
    assert chain.run_access(again) is None  # synchronous: a cache hit
    assert again.consumer is not None and again.consumer.name == "carol"


def test_basic_auth_can_pass_the_credentials_on(consumers: ConsumerRegistry) -> None:
    chain = PluginChain([plugin("basic-auth", consumers, hide_credentials=False)])
    request = make_request([basic("carol", "carol-pw")])
    assert run_access(chain, request) is None
    assert request.headers.get("authorization") == basic("carol", "carol-pw")[1]


@pytest.mark.parametrize(
    ("header", "message"),
    [
        (None, "no basic-auth credentials"),
        (basic("carol", "wrong"), "invalid username or password"),
        (basic("mallory", "carol-pw"), "invalid username or password"),
        (("Authorization", "Basic !!!"), "malformed"),
        (("Authorization", "Basic " + base64.b64encode(b"no-colon").decode()), "malformed"),
        (("Authorization", "Bearer abc"), "malformed"),
    ],
)
def test_basic_auth_refusals(
    consumers: ConsumerRegistry, header: tuple[str, str] | None, message: str
) -> None:
    chain = PluginChain([plugin("basic-auth", consumers)])
    response = run_access(chain, make_request([header] if header else []))
    assert response is not None and response.status == 401
    assert challenge(response) == 'Basic realm="lambdagate"'
    assert message in error_of(response)["message"]


# --- jwt ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def rsa_key() -> SigningKey:
    return SigningKey("RS256", rsa.generate_private_key(public_exponent=65537, key_size=2048), kid="rsa-1")


def claims(**extra: Any) -> dict[str, Any]:
    return {"sub": "alice@idp", "exp": time.time() + 60, **extra}


def bearer(token: str) -> tuple[str, str]:
    return ("Authorization", f"Bearer {token}")


def test_jwt_hmac_maps_subject_to_consumer_and_forwards_claims(consumers: ConsumerRegistry) -> None:
    chain = PluginChain(
        [
            plugin(
                "jwt",
                consumers,
                secret=SECRET,
                forward_claims={"email": "X-User-Email", "roles": "X-User-Roles"},
            )
        ]
    )
    token = make_token(SigningKey("HS256", SECRET.encode()), claims(email="a@x.test", roles=["r1", "r2"]))
    request = make_request([bearer(token), ("X-User-Email", "spoofed@x.test"), *SPOOFED])
    assert run_access(chain, request) is None
    assert request.consumer is not None and request.consumer.name == "alice"
    assert request.headers.get_all("x-user-email") == ["a@x.test"]
    assert request.headers.get("x-user-roles") == "r1,r2"
    assert request.headers.get("x-consumer-id") == "alice"
    assert request.headers.get("x-credential-identifier") == "alice@idp"
    assert request.headers.get("authorization") == f"Bearer {token}"  # kept unless hide_credentials
    assert request.ctx["jwt.claims"]["email"] == "a@x.test"


def test_jwt_spoofed_claim_headers_are_removed_even_when_the_claim_is_absent(
    consumers: ConsumerRegistry,
) -> None:
    chain = PluginChain([plugin("jwt", consumers, secret=SECRET, forward_claims={"email": "X-User-Email"})])
    token = make_token(SigningKey("HS256", SECRET.encode()), claims())
    request = make_request([bearer(token), ("X-User-Email", "spoofed@x.test")])
    assert run_access(chain, request) is None
    assert "x-user-email" not in request.headers


def test_jwt_public_key_and_key_file(
    consumers: ConsumerRegistry, rsa_key: SigningKey, tmp_path: Path
) -> None:
    ec_key = SigningKey("ES384", ec.generate_private_key(ec.SECP384R1()))
    key_file = tmp_path / "ec.pem"
    key_file.write_text(ec_key.public_pem())
    chain = PluginChain(
        [plugin("jwt", consumers, public_keys=[rsa_key.public_pem()], key_files=[str(key_file)])]
    )
    for key in (rsa_key, ec_key):
        request = make_request([bearer(make_token(key, claims()))])
        assert run_access(chain, request) is None
        assert request.consumer is not None and request.consumer.name == "alice"


def test_jwt_refuses_alg_confusion_through_the_plugin(
    consumers: ConsumerRegistry, rsa_key: SigningKey
) -> None:
    chain = PluginChain([plugin("jwt", consumers, public_keys=[rsa_key.public_pem()])])
    forged = make_token(SigningKey("HS256", rsa_key.public_pem().encode()), claims())
    response = run_access(chain, make_request([bearer(forged)]))
    assert response is not None and response.status == 401
    assert "HS256" in error_of(response)["message"]


@pytest.mark.parametrize(
    ("token_claims", "config", "message"),
    [
        ({"sub": "alice@idp", "exp": 1}, {}, "token expired"),
        ({"sub": "alice@idp", "exp": 4e9, "nbf": 4e9 - 10}, {}, "not valid yet"),
        ({"sub": "alice@idp", "exp": 4e9, "iss": "evil"}, {"issuers": ["https://idp"]}, "issuer"),
        ({"sub": "alice@idp", "exp": 4e9, "aud": "other"}, {"audiences": ["api"]}, "audience"),
        ({"sub": "alice@idp"}, {}, "no 'exp' claim"),
        ({"sub": "stranger", "exp": 4e9}, {}, "not a known consumer"),
        ({"exp": 4e9}, {}, "no usable 'sub' claim"),
        ({"sub": "alice@idp", "exp": 4e9}, {"consumer_claim": "uid"}, "no usable 'uid' claim"),
    ],
)
def test_jwt_claim_refusals(
    consumers: ConsumerRegistry, token_claims: dict[str, Any], config: dict[str, Any], message: str
) -> None:
    chain = PluginChain([plugin("jwt", consumers, secret=SECRET, **config)])
    response = run_access(
        chain, make_request([bearer(make_token(SigningKey("HS256", SECRET.encode()), token_claims))])
    )
    assert response is not None and response.status == 401
    assert challenge(response) == 'Bearer realm="lambdagate", error="invalid_token"'
    assert message in error_of(response)["message"]


def test_jwt_missing_and_bad_signature(consumers: ConsumerRegistry) -> None:
    chain = PluginChain([plugin("jwt", consumers, secret=SECRET)])
    missing = run_access(chain, make_request([basic("carol", "carol-pw")]))
    assert missing is not None and missing.status == 401
    assert challenge(missing) == 'Bearer realm="lambdagate"'  # RFC 6750 3.1: no error without a token
    forged = make_token(SigningKey("HS256", b"x" * 32), claims())
    bad = run_access(chain, make_request([bearer(forged)]))
    assert bad is not None and bad.status == 401
    assert challenge(bad) == 'Bearer realm="lambdagate", error="invalid_token"'
    assert error_of(bad)["message"] == "invalid signature"


def test_jwt_unknown_subjects_when_consumers_are_not_required(consumers: ConsumerRegistry) -> None:
    chain = PluginChain(
        [plugin("jwt", consumers, secret=SECRET, require_consumer=False, groups_claim="groups")]
    )
    token = make_token(
        SigningKey("HS256", SECRET.encode()), claims(sub="svc-7", groups=["ops", "bad,group", 3])
    )
    request = make_request([bearer(token)])
    assert run_access(chain, request) is None
    assert request.consumer is not None
    assert (request.consumer.name, request.consumer.groups) == ("svc-7", ("ops",))
    assert request.headers.get("x-consumer-groups") == "ops"


def test_jwt_from_query_and_cookie_with_hidden_credentials(consumers: ConsumerRegistry) -> None:
    chain = PluginChain(
        [
            plugin(
                "jwt",
                consumers,
                secret=SECRET,
                header_names=["authorization"],
                query_param_names=["jwt"],
                cookie_names=["session"],
                hide_credentials=True,
            )
        ]
    )
    token = make_token(SigningKey("HS256", SECRET.encode()), claims())
    by_query = make_request(query=f"x=1&jwt={token}")
    assert run_access(chain, by_query) is None
    assert by_query.consumer is not None and by_query.query == "x=1"
    by_cookie = make_request([("Cookie", f"theme=dark; session={token}; lang=en")])
    assert run_access(chain, by_cookie) is None
    assert by_cookie.consumer is not None
    assert by_cookie.headers.get("cookie") == "theme=dark; lang=en"
    by_header = make_request([bearer(token)])
    assert run_access(chain, by_header) is None
    assert "authorization" not in by_header.headers


def test_jwt_with_jwks_url(consumers: ConsumerRegistry, rsa_key: SigningKey) -> None:
    with running_jwks_server(rsa_key) as server:
        chain = PluginChain([plugin("jwt", consumers, jwks_url=server.url, issuers=["https://idp"])])

        async def scenario() -> tuple[Response | None, Response | None, Response | None]:
            good = make_request([bearer(make_token(rsa_key, claims(iss="https://idp")))])
            first = chain.run_access(good)
            assert inspect.isawaitable(first)
            accepted = await first
            assert good.consumer is not None and good.consumer.name == "alice"
            second = chain.run_access(make_request([bearer(make_token(rsa_key, claims(iss="https://idp")))]))
            assert not inspect.isawaitable(second)  # keys cached
            unknown = make_request(
                [bearer(make_token(SigningKey("RS256", rsa_key.private, kid="nope"), claims()))]
            )
            refused = chain.run_access(unknown)
            if inspect.isawaitable(refused):
                refused = await refused
            return accepted, second, refused

        accepted, second, refused = asyncio.run(scenario())
        assert accepted is None and second is None
        assert refused is not None and refused.status == 401
        assert server.requests == 1  # the unknown kid came within the refetch interval


def test_jwt_keys_unavailable_is_503(consumers: ConsumerRegistry, rsa_key: SigningKey) -> None:
    with running_jwks_server(rsa_key) as server:
        url = server.url
    chain = PluginChain([plugin("jwt", consumers, jwks_url=url, jwks_timeout="2s")])
    response = run_access(chain, make_request([bearer(make_token(rsa_key, claims()))]))
    assert response is not None and response.status == 503
    assert error_of(response)["code"] == "keys_unavailable"


# --- acl ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("config", "key", "status"),
    [
        ({"allow": ["partners"]}, "alice-key-123", None),
        ({"allow": ["partners"], "deny": ["interns"]}, "alice-key-123", None),
        ({"allow": ["partners"], "deny": ["interns"]}, "bob-key-456", 403),
        ({"deny": ["interns"]}, "bob-key-456", 403),
        ({"deny": ["interns"]}, "alice-key-123", None),
        ({"allow": ["staff"]}, "alice-key-123", 403),
    ],
)
def test_acl_allow_and_deny(
    consumers: ConsumerRegistry, config: dict[str, Any], key: str, status: int | None
) -> None:
    chain = PluginChain([plugin("acl", consumers, **config), plugin("key-auth", consumers)])
    assert [type(p).name for p in chain.access] == ["key-auth", "acl"]  # priority order
    response = run_access(chain, make_request([("apikey", key)]))
    if status is None:
        assert response is None
    else:
        assert response is not None and response.status == status
        assert error_of(response)["code"] == "forbidden"
        assert challenge(response) is None


def test_acl_without_an_authenticated_consumer(consumers: ConsumerRegistry) -> None:
    response = run_access(PluginChain([plugin("acl", consumers, allow=["partners"])]), make_request(SPOOFED))
    assert response is not None and response.status == 401


def test_acl_can_hide_the_groups(consumers: ConsumerRegistry) -> None:
    chain = PluginChain(
        [plugin("key-auth", consumers), plugin("acl", consumers, allow=["partners"], hide_groups_header=True)]
    )
    request = make_request([("apikey", "alice-key-123")])
    assert run_access(chain, request) is None
    assert "x-consumer-groups" not in request.headers
    assert request.headers.get("x-consumer-id") == "alice"


def test_two_auth_plugins_identity_of_the_last(consumers: ConsumerRegistry) -> None:
    chain = PluginChain([plugin("key-auth", consumers), plugin("jwt", consumers, secret=SECRET)])
    token = make_token(SigningKey("HS256", SECRET.encode()), claims())
    request = make_request([bearer(token), ("apikey", "bob-key-456"), *SPOOFED])
    assert run_access(chain, request) is None
    assert request.consumer is not None and request.consumer.name == "bob"
    assert request.headers.get_all("x-consumer-id") == ["bob"]
    assert request.headers.get("x-consumer-groups") == "interns,partners"
    assert "x-credential-identifier" not in request.headers


# --- through the engine --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def upstream() -> Iterator[Upstream]:
    with running_upstream() as server:
        yield server


@pytest.fixture(scope="module")
def engine(upstream: Upstream, consumers: ConsumerRegistry) -> Iterator[EngineThread]:
    from gateway._fastpath.balance import Balancer, Target
    from gateway._fastpath.http import RouteAction
    from gateway._fastpath.proxy import UpstreamPool

    def routes(loop: asyncio.AbstractEventLoop, ticker: Any) -> list[tuple[str, Any]]:
        pool = UpstreamPool("backend", loop, Balancer([Target(upstream.addr)]), ticker)

        def proxy(name: str, *plugins: Plugin) -> Any:
            return RouteAction.proxy(name, pool).with_plugins(PluginChain(plugins))

        return [
            (
                "/keyed/{proxy+}",
                proxy(
                    "keyed",
                    plugin("key-auth", consumers, query_param_names=["apikey"]),
                    plugin("acl", consumers, deny=["interns"]),
                ),
            ),
            (
                "/fast/{proxy+}",
                fast_key_auth(
                    pool, plugin("key-auth", consumers), plugin("acl", consumers, deny=["interns"])
                ),
            ),
            ("/basic/{proxy+}", proxy("basic", plugin("basic-auth", consumers))),
            ("/jwt/{proxy+}", proxy("jwt", plugin("jwt", consumers, secret=SECRET))),
        ]

    def fast_key_auth(pool: Any, key_auth: Any, *plugins: Plugin) -> Any:
        check = key_auth.fast_check()
        assert check is not None
        action = RouteAction.proxy("fast", pool).with_fast_checks([check], key_auth.upstream_drop_headers())
        return action.with_plugins(PluginChain(plugins))

    with running_engine(routes) as running:
        yield running


def upstream_headers(response: httpx.Response) -> dict[str, str]:
    return {name.lower(): value for name, value in echo(response.content)["headers"]}


def test_engine_key_auth_and_acl(engine: EngineThread) -> None:
    ok = httpx.get(f"{engine.url}/keyed/echo?apikey=alice-key-123&q=1", headers={"X-Consumer-Id": "admin"})
    assert ok.status_code == 200
    assert echo(ok.content)["path"] == "/keyed/echo?q=1"
    seen = upstream_headers(ok)
    assert seen["x-consumer-id"] == "alice"
    assert seen["x-consumer-groups"] == "partners"
    denied = httpx.get(f"{engine.url}/keyed/echo", headers={"apikey": "bob-key-456"})
    assert denied.status_code == 403
    missing = httpx.get(f"{engine.url}/keyed/echo")
    assert missing.status_code == 401
    assert missing.headers["www-authenticate"] == 'Key realm="lambdagate"'


def test_engine_basic_auth(engine: EngineThread) -> None:
    with httpx.Client() as client:
        for _ in range(3):  # the first verifies in a thread, the others hit the cache
            response = client.get(f"{engine.url}/basic/echo", auth=("carol", "carol-pw"))
            assert response.status_code == 200
            seen = upstream_headers(response)
            assert seen["x-consumer-id"] == "carol"
            assert "authorization" not in seen
        wrong = client.get(f"{engine.url}/basic/echo", auth=("carol", "nope"))
        assert wrong.status_code == 401
        assert wrong.headers["www-authenticate"] == 'Basic realm="lambdagate"'


def test_engine_jwt(engine: EngineThread) -> None:
    token = make_token(SigningKey("HS256", SECRET.encode()), claims())
    response = httpx.get(f"{engine.url}/jwt/echo", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 200
    assert upstream_headers(response)["x-consumer-id"] == "alice"
    expired = make_token(SigningKey("HS256", SECRET.encode()), claims(exp=1))
    refused = httpx.get(f"{engine.url}/jwt/echo", headers={"Authorization": f"Bearer {expired}"})
    assert refused.status_code == 401
    assert refused.json()["error"]["message"] == "token expired"


def test_built_in_registry_has_them() -> None:
    from gateway.plugins import default_registry

    registry = default_registry()
    for cls in AUTH_CLASSES:
        assert registry.get(cls.name) is cls


def test_engine_compiled_key_auth_matches_the_python_path(
    engine: EngineThread, consumers: ConsumerRegistry
) -> None:
    spoofs = {"X-Consumer-Id": "admin", "X-Consumer-Groups": "root", "X-Credential-Identifier": "x"}
    ok = httpx.get(f"{engine.url}/fast/echo", headers={"apikey": "alice-key-123", **spoofs})
    assert ok.status_code == 200
    seen = upstream_headers(ok)
    assert seen["x-consumer-id"] == "alice"
    assert seen["x-consumer-groups"] == "partners"
    assert "apikey" not in seen and "x-credential-identifier" not in seen
    denied = httpx.get(f"{engine.url}/fast/echo", headers={"apikey": "bob-key-456"})
    assert denied.status_code == 403  # the Python acl sees the consumer the compiled check found
    for headers in ({}, {"apikey": "wrong-key"}):
        refused = httpx.get(f"{engine.url}/fast/echo", headers=headers)
        python = httpx.get(f"{engine.url}/keyed/echo", headers=headers)
        assert refused.status_code == python.status_code == 401
        assert refused.headers["www-authenticate"] == python.headers["www-authenticate"]
        assert refused.json()["error"]["message"] == python.json()["error"]["message"]
    # A key added at runtime is accepted, and a removed one refused, despite the check's memo.
    consumers.add("grace", {"keys": ["grace-key-789"]})
    try:
        assert httpx.get(f"{engine.url}/fast/echo", headers={"apikey": "grace-key-789"}).status_code == 200
    finally:
        consumers.remove("grace")
    assert httpx.get(f"{engine.url}/fast/echo", headers={"apikey": "grace-key-789"}).status_code == 401


def test_key_auth_with_query_names_has_no_compiled_check(consumers: ConsumerRegistry) -> None:
    with_query = plugin("key-auth", consumers, query_param_names=["k"])
    assert isinstance(with_query, KeyAuth)
    assert with_query.fast_check() is None
    headers_only = plugin("key-auth", consumers)
    assert isinstance(headers_only, KeyAuth)
    assert headers_only.fast_check() is not None
