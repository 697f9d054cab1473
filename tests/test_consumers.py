"""gateway.consumers: the config tables, credential lookups, the verified-password cache, runtime changes."""

from __future__ import annotations

import asyncio
import hashlib
import string
from collections.abc import Iterator
from typing import Any

import argon2
import bcrypt
import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import gateway.consumers as consumers_module
from gateway.consumers import (
    BasicCredential,
    ConsumerConfig,
    ConsumerError,
    ConsumerRegistry,
    api_key_digest,
    consumer_config_problems,
    forward_identity,
    hashed_api_key,
    password_hash_problem,
    strip_identity_headers,
)
from gateway.plugins import Consumer, Phase, PhaseError, Request

ALICE_KEY = "alice-key-0123456789"
BOB_KEY = "bob-key-9876543210"


def bcrypt_hash(password: str) -> str:
    return bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=4)).decode()


def argon2_hash(password: str) -> str:
    return argon2.PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1).hash(password)


@pytest.fixture(scope="module")
def hashes() -> dict[str, str]:
    return {"carol": bcrypt_hash("carol-pw"), "dave": argon2_hash("dave-pw")}


@pytest.fixture
def registry(hashes: dict[str, str]) -> ConsumerRegistry:
    return ConsumerRegistry.from_config(
        {
            "alice": {"keys": [ALICE_KEY], "groups": ["partners", "beta"], "metadata": {"tier": "gold"}},
            "bob": ConsumerConfig(keys=[hashed_api_key(BOB_KEY)], jwt_subjects=["bob@idp", "user-42"]),
            "carol": {"basic_auth": [{"username": "carol", "password": hashes["carol"]}]},
            "dave": {"basic_auth": [{"username": "dave", "password": hashes["dave"]}], "groups": ["staff"]},
        }
    )


class CountingVerify:
    """Wraps the real password check to count how often hashing runs."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls = 0
        real = consumers_module.verify_password

        def counted(password: bytes, password_hash: str) -> bool:
            self.calls += 1
            return real(password, password_hash)

        monkeypatch.setattr(consumers_module, "verify_password", counted)


@pytest.fixture
def verify_calls(monkeypatch: pytest.MonkeyPatch) -> Iterator[CountingVerify]:
    yield CountingVerify(monkeypatch)


# --- config structs --------------------------------------------------------------------------------


def test_config_structs_describe_every_field_and_refuse_unknown_keys() -> None:
    for struct in (ConsumerConfig, BasicCredential):
        for info in msgspec.structs.fields(struct):
            metadata = getattr(info.type, "__metadata__", ())
            assert any(isinstance(m, msgspec.Meta) and m.description for m in metadata), info.name
    with pytest.raises(msgspec.ValidationError, match="unknown field `secret`"):
        msgspec.convert({"keys": [], "secret": "x"}, ConsumerConfig)
    assert msgspec.convert({}, ConsumerConfig) == ConsumerConfig()


@pytest.mark.parametrize(
    ("table", "problem"),
    [
        ({"keys": [""]}, ("keys[0]", "must not be empty")),
        ({"keys": ["has space"]}, ("keys[0]", "spaces")),
        ({"keys": ["sha256:abc"]}, ("keys[0]", "64 hex digits")),
        ({"keys": ["sha256:" + "g" * 64]}, ("keys[0]", "64 hex digits")),
        ({"basic_auth": [{"username": "u", "password": "plain"}]}, ("basic_auth[0].password", "not a plain")),
        (
            {"basic_auth": [{"username": "u", "password": "$2b$12$short"}]},
            ("basic_auth[0].password", "bcrypt"),
        ),
        (
            {"basic_auth": [{"username": "u", "password": "$argon2id$v=19$junk"}]},
            ("basic_auth[0].password", "argon2"),
        ),
        (
            {"basic_auth": [{"username": "a:b", "password": "$2b$04$" + "a" * 53}]},
            ("basic_auth[0].username", "':'"),
        ),
        ({"jwt_subjects": [""]}, ("jwt_subjects[0]", "must not be empty")),
        ({"groups": ["a,b"]}, ("groups[0]", "commas")),
        ({"groups": ["équipe"]}, ("groups[0]", "printable ASCII")),
        ({"metadata": {"note": "line\r\nInjected: 1"}}, ("metadata.note", "CR, LF")),
    ],
)
def test_consumer_config_problems(table: dict[str, Any], problem: tuple[str, str]) -> None:
    config = msgspec.convert(table, ConsumerConfig)
    found = consumer_config_problems(config)
    assert len(found) == 1
    assert found[0][0] == problem[0]
    assert problem[1] in found[0][1]


def test_valid_hashes_are_accepted(hashes: dict[str, str]) -> None:
    assert password_hash_problem(hashes["carol"]) is None
    assert password_hash_problem(hashes["dave"]) is None
    assert password_hash_problem(hashes["carol"].replace("$2b$", "$2y$")) is None


def test_from_config_reports_every_problem_with_its_path() -> None:
    with pytest.raises(ConsumerError) as caught:
        ConsumerRegistry.from_config(
            {
                "alice": {"keys": [ALICE_KEY]},
                "bob": {"keys": [hashed_api_key(ALICE_KEY)], "jwt_subjects": ["x", "x"]},
                "bad name!": {},
                "eve": {"unknown": 1},
            }
        )
    paths = [path for path, _ in caught.value.errors]
    assert paths == [
        "consumers.bob.keys[0]",
        "consumers.bob.jwt_subjects[1]",
        "consumers.bad name!",
        "consumers.eve",
    ]
    assert "already in use" in caught.value.errors[0][1]
    assert ALICE_KEY not in str(caught.value)  # error lines end up in logs


# --- API keys --------------------------------------------------------------------------------------


def test_api_keys_plain_and_hashed(registry: ConsumerRegistry) -> None:
    alice = registry.by_api_key(ALICE_KEY)
    assert alice is not None and alice.name == "alice"
    assert alice.groups == ("partners", "beta")
    assert alice.metadata == {"tier": "gold"}
    assert registry.by_api_key(ALICE_KEY.encode()) is alice
    bob = registry.by_api_key(BOB_KEY)
    assert bob is not None and bob.name == "bob"
    assert registry.by_api_key("alice-key-012345678") is None
    assert registry.by_api_key("") is None
    # The stored hash is not itself a key: knowing "sha256:<hex>" must not let anyone in.
    assert registry.by_api_key(hashed_api_key(BOB_KEY)) is None
    assert registry.by_api_key(hashed_api_key(BOB_KEY).removeprefix("sha256:")) is None


def test_non_ascii_keys_match_their_wire_bytes() -> None:
    registry = ConsumerRegistry.from_config({"u": {"keys": ["clé-secrète"]}})
    wire = "clé-secrète".encode()
    assert registry.by_api_key(wire) is not None
    assert registry.by_api_key(wire.decode("latin-1")) is not None  # as the engine decodes headers
    assert registry.by_api_key("clé-secrète".encode("latin-1")) is None


@settings(max_examples=200, deadline=None)
@given(
    key=st.text(alphabet=string.ascii_letters + string.digits + "-_.~+/=", min_size=1, max_size=64),
    hashed=st.booleans(),
)
def test_any_key_is_found_in_either_stored_form(key: str, hashed: bool) -> None:
    stored = hashed_api_key(key) if hashed else key
    registry = ConsumerRegistry.from_config({"c": {"keys": [stored]}})
    found = registry.by_api_key(key)
    assert found is not None and found.name == "c"
    assert registry.by_api_key(key.encode()) is found
    assert registry.by_api_key(key + "x") is None
    assert api_key_digest(key) == hashlib.sha256(key.encode()).digest()
    assert hashed_api_key(hashed_api_key(key)) == hashed_api_key(key)  # idempotent


# --- basic auth ------------------------------------------------------------------------------------


def test_basic_auth_bcrypt_and_argon2(registry: ConsumerRegistry) -> None:
    carol = registry.by_basic_auth("carol", b"carol-pw")
    dave = registry.by_basic_auth("dave", b"dave-pw")
    assert carol is not None and carol.name == "carol"
    assert dave is not None and dave.name == "dave" and dave.groups == ("staff",)
    assert registry.by_basic_auth("carol", b"carol-pw ") is None
    assert registry.by_basic_auth("dave", b"wrong") is None
    assert registry.by_basic_auth("nobody", b"carol-pw") is None
    assert registry.by_basic_auth("dave", b"carol-pw") is None


def test_bcrypt_passwords_over_72_bytes_are_refused_not_crashing() -> None:
    long_password = "p" * 72
    registry = ConsumerRegistry.from_config(
        {"c": {"basic_auth": [{"username": "c", "password": bcrypt_hash(long_password)}]}}
    )
    assert registry.by_basic_auth("c", long_password.encode()) is not None
    assert registry.by_basic_auth("c", long_password.encode() + b"tail") is None


def test_successful_checks_are_cached(registry: ConsumerRegistry, verify_calls: CountingVerify) -> None:
    assert registry.by_basic_auth_cached("carol", b"carol-pw") is None
    assert registry.by_basic_auth("carol", b"carol-pw") is not None
    assert verify_calls.calls == 1
    for _ in range(5):
        assert registry.by_basic_auth("carol", b"carol-pw") is not None
        cached = registry.by_basic_auth_cached("carol", b"carol-pw")
        assert cached is not None and cached.name == "carol"
    assert verify_calls.calls == 1
    # Failures are not cached, and a wrong password never matches a cached success.
    assert registry.by_basic_auth_cached("carol", b"carol-pw!") is None
    assert registry.by_basic_auth("carol", b"carol-pw!") is None
    assert registry.by_basic_auth("carol", b"carol-pw!") is None
    assert verify_calls.calls == 3


def test_cache_expires_and_is_bounded(hashes: dict[str, str], verify_calls: CountingVerify) -> None:
    now = [0.0]
    registry = ConsumerRegistry(basic_cache_size=2, basic_cache_ttl=10, clock=lambda: now[0])
    for name in ("u1", "u2", "u3"):
        registry.add(name, {"basic_auth": [{"username": name, "password": hashes["carol"]}]})
    for name in ("u1", "u2", "u3"):
        assert registry.by_basic_auth(name, b"carol-pw") is not None
    assert verify_calls.calls == 3
    assert registry.by_basic_auth_cached("u1", b"carol-pw") is None  # evicted: least recently used
    assert registry.by_basic_auth_cached("u3", b"carol-pw") is not None
    now[0] = 10.0
    assert registry.by_basic_auth_cached("u3", b"carol-pw") is None  # expired


def test_changing_a_credential_invalidates_the_cache(
    registry: ConsumerRegistry, hashes: dict[str, str]
) -> None:
    assert registry.by_basic_auth("carol", b"carol-pw") is not None
    registry.remove_basic_credential("carol", "carol")
    assert registry.by_basic_auth_cached("carol", b"carol-pw") is None
    assert registry.by_basic_auth("carol", b"carol-pw") is None
    registry.add_basic_credential("carol", "carol", bcrypt_hash("new-pw"))
    assert registry.by_basic_auth("carol", b"carol-pw") is None
    assert registry.by_basic_auth("carol", b"new-pw") is not None


def test_async_check_runs_off_the_loop_and_then_hits_the_cache(
    registry: ConsumerRegistry, verify_calls: CountingVerify
) -> None:
    async def scenario() -> list[Consumer | None]:
        first = await registry.by_basic_auth_async("dave", b"dave-pw")
        second = await registry.by_basic_auth_async("dave", b"dave-pw")
        wrong = await registry.by_basic_auth_async("dave", b"nope")
        return [first, second, wrong]

    first, second, wrong = asyncio.run(scenario())
    assert first is not None and second is first and wrong is None
    assert verify_calls.calls == 2


# --- JWT subjects and runtime changes ----------------------------------------------------------------


def test_jwt_subjects(registry: ConsumerRegistry) -> None:
    bob = registry.by_jwt_subject("user-42")
    assert bob is not None and bob.name == "bob"
    assert registry.by_jwt_subject("bob@idp") is bob
    assert registry.by_jwt_subject("BOB@idp") is None


def test_runtime_changes(registry: ConsumerRegistry) -> None:
    generation = registry.generation
    erin = registry.add("erin", {"keys": ["erin-key-1"], "groups": ["partners"]})
    assert "erin" in registry and registry.get("erin") is erin
    assert registry.generation > generation
    registry.add_key("erin", hashed_api_key("erin-key-2"))
    registry.add_jwt_subject("erin", "erin@idp")
    assert registry.by_api_key("erin-key-2") is erin
    assert registry.by_jwt_subject("erin@idp") is erin

    updated = registry.update("erin", groups=["staff"])
    assert updated.groups == ("staff",)
    assert registry.by_api_key("erin-key-1") is updated  # credentials kept, identity refreshed
    assert registry.by_jwt_subject("erin@idp") is updated

    assert registry.remove_key("erin", "erin-key-2")  # given plain, stored hashed
    assert registry.by_api_key("erin-key-2") is None
    assert not registry.remove_key("erin", "erin-key-2")
    assert registry.remove_jwt_subject("erin", "erin@idp")
    assert registry.by_jwt_subject("erin@idp") is None

    config = registry.config("erin")
    assert config == ConsumerConfig(keys=["erin-key-1"], groups=["staff"])
    assert registry.remove("erin")
    assert not registry.remove("erin")
    assert registry.by_api_key("erin-key-1") is None
    assert sorted(c.name for c in registry) == ["alice", "bob", "carol", "dave"]
    assert len(registry) == 4


def test_runtime_changes_refuse_clashes_and_leave_no_trace(registry: ConsumerRegistry) -> None:
    with pytest.raises(ConsumerError, match="already exists"):
        registry.add("alice", {})
    with pytest.raises(ConsumerError, match="already in use"):
        registry.add("frank", {"keys": ["frank-key-1", ALICE_KEY]})
    assert "frank" not in registry
    assert registry.by_api_key("frank-key-1") is None
    with pytest.raises(ConsumerError, match="already in use"):
        registry.add_key("bob", ALICE_KEY)
    with pytest.raises(ConsumerError, match="already exists"):
        registry.add_basic_credential("alice", "carol", bcrypt_hash("x"))
    with pytest.raises(ConsumerError, match="not a plain password"):
        registry.add_basic_credential("alice", "alice", "hunter2")
    with pytest.raises(ConsumerError, match="already belongs"):
        registry.add_jwt_subject("alice", "user-42")
    with pytest.raises(ConsumerError, match="no consumer"):
        registry.add_key("nobody", "some-key-123")
    # Replacing a consumer keeps its own credentials legal.
    registry.add("alice", {"keys": [ALICE_KEY], "groups": ["new"]}, replace=True)
    alice = registry.by_api_key(ALICE_KEY)
    assert alice is not None and alice.groups == ("new",)


# --- identity headers ---------------------------------------------------------------------------------


def make_request(headers: list[tuple[str, str]]) -> Request:
    return Request(
        method="GET", path="/", query="", headers=headers, client_ip="127.0.0.1", route="r", request_id="id"
    )


def test_identity_headers_are_stripped_once_and_forwarded() -> None:
    request = make_request(
        [
            ("X-Consumer-Id", "admin"),
            ("x-consumer-groups", "root"),
            ("X-Credential-Identifier", "spoof"),
            ("X-Consumer-Custom-Id", "spoof"),
            ("X-Consumerish", "kept"),
        ]
    )
    strip_identity_headers(request)
    assert [name for name, _ in request.headers] == ["X-Consumerish"]
    forward_identity(request, Consumer("alice", ("a", "b")), "alice-user")
    assert request.consumer is not None and request.consumer.name == "alice"
    assert request.headers.get("x-consumer-id") == "alice"
    assert request.headers.get("x-consumer-groups") == "a,b"
    assert request.headers.get("x-credential-identifier") == "alice-user"
    # A second auth plugin on the route must not strip what the first one set...
    strip_identity_headers(request)
    assert request.headers.get("x-consumer-id") == "alice"
    # ...and its own identity replaces the first one's completely.
    forward_identity(request, Consumer("bob"))
    assert request.headers.get_all("x-consumer-id") == ["bob"]
    assert "x-consumer-groups" not in request.headers
    assert "x-credential-identifier" not in request.headers


def test_identity_can_only_be_set_in_the_access_phase() -> None:
    request = make_request([])
    request.phase = Phase.REWRITE
    with pytest.raises(PhaseError):
        forward_identity(request, Consumer("alice"))
