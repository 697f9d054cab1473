"""Balancer and Target: policies, consistent hashing, passive health, address parsing.

Each test runs against the compiled module (gateway._fastpath.balance) and the interpreted source
(_fastpath/balance.py loaded directly).
"""

from __future__ import annotations

import importlib
import importlib.util
from collections import Counter
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

SOURCE = Path(__file__).resolve().parent.parent / "_fastpath" / "balance.py"
# Imported by name: mypy cannot follow the editable install's folder mapping to _fastpath/.
compiled_balance = importlib.import_module("gateway._fastpath.balance")


def _load_interpreted() -> ModuleType:
    spec = importlib.util.spec_from_file_location("lambdagate_balance_interpreted", SOURCE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


interpreted_balance = _load_interpreted()
IMPLS = [compiled_balance, interpreted_balance]


@pytest.fixture(params=["compiled", "interpreted"])
def impl(request: pytest.FixtureRequest) -> Any:
    if request.param == "compiled":
        assert compiled_balance.__file__ is not None and compiled_balance.__file__.endswith(".so")
        return compiled_balance
    assert interpreted_balance.__file__ == str(SOURCE)
    return interpreted_balance


def make_targets(impl: Any, count: int) -> list[Any]:
    return [impl.Target(f"10.0.0.{index}:8080") for index in range(1, count + 1)]


def addrs(picks: list[Any]) -> list[str | None]:
    return [None if target is None else target.addr for target in picks]


def test_compiled_module_is_really_compiled() -> None:
    assert compiled_balance.__file__ is not None and compiled_balance.__file__.endswith(".so")
    assert type(compiled_balance.Target).__name__ == "type"
    # cdef classes reject unknown attributes; plain Python classes accept them.
    with pytest.raises(AttributeError):
        compiled_balance.Target("a:1").unknown = 1


# --- Target --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("addr", "host", "port"),
    [
        ("127.0.0.1:9000", "127.0.0.1", 9000),
        ("backend.internal:80", "backend.internal", 80),
        ("[::1]:8080", "::1", 8080),
        ("[fe80::1%eth0]:1", "fe80::1%eth0", 1),
        ("h:65535", "h", 65535),
    ],
)
def test_target_parses_addresses(impl: Any, addr: str, host: str, port: int) -> None:
    target = impl.Target(addr)
    assert (target.addr, target.host, target.port) == (addr, host, port)
    assert (target.in_flight, target.consecutive_failures, target.down_until, target.healthy) == (
        0,
        0,
        0.0,
        True,
    )
    assert target.available(0.0)


@pytest.mark.parametrize(
    "addr",
    [
        "",
        "host",
        ":80",
        "host:",
        "host:0",
        "host:65536",
        "host:-1",
        "host:8o",
        "::1:80",
        "[::1]",
        "[::1]80",
        "[]:80",
        "[host]:80",
        "a b:80",
        "host: 80",
        "host:٣",
    ],
)
def test_target_rejects_bad_addresses(impl: Any, addr: str) -> None:
    with pytest.raises(ValueError):
        impl.Target(addr)


def test_target_availability(impl: Any) -> None:
    target = impl.Target("a:1")
    target.down_until = 5.0
    assert not target.available(4.9)
    assert target.available(5.0)
    target.healthy = False
    assert not target.available(6.0)


# --- round robin -------------------------------------------------------------------------------


def test_round_robin_order(impl: Any) -> None:
    targets = make_targets(impl, 3)
    balancer = impl.Balancer(targets)
    assert balancer.targets == targets
    assert addrs([balancer.pick(0.0) for _ in range(7)]) == [t.addr for t in targets * 3][:7]


def test_round_robin_skips_unavailable(impl: Any) -> None:
    a, b, c = make_targets(impl, 3)
    balancer = impl.Balancer([a, b, c])
    b.healthy = False
    assert addrs([balancer.pick(0.0) for _ in range(4)]) == [a.addr, c.addr, a.addr, c.addr]
    b.healthy = True
    c.down_until = 100.0
    assert addrs([balancer.pick(1.0) for _ in range(4)]) == [a.addr, b.addr, a.addr, b.addr]


def test_empty_and_all_down(impl: Any) -> None:
    assert impl.Balancer([]).pick(0.0) is None
    assert impl.Balancer([], "least_conn").pick(0.0) is None
    assert impl.Balancer([], "hash").pick(0.0, b"k") is None
    for policy in ("round_robin", "least_conn", "hash"):
        targets = make_targets(impl, 3)
        for target in targets:
            target.healthy = False
        balancer = impl.Balancer(targets, policy)
        assert balancer.pick(0.0) is None
        assert balancer.pick(0.0, b"key") is None


@pytest.mark.parametrize("policy", ["round_robin", "least_conn", "hash"])
def test_exclude(impl: Any, policy: str) -> None:
    a, b = make_targets(impl, 2)
    balancer = impl.Balancer([a, b], policy)
    for key in (None, b"k1", b"k2", b"k3"):
        assert balancer.pick(0.0, key, a) is b
        assert balancer.pick(0.0, key, b) is a
    b.healthy = False
    # The excluded target is the only available one: nothing to retry on.
    assert balancer.pick(0.0, b"k1", a) is None
    assert balancer.pick(0.0, None, a) is None


# --- least connections --------------------------------------------------------------------------


def test_least_conn_picks_fewest_in_flight(impl: Any) -> None:
    a, b, c = make_targets(impl, 3)
    balancer = impl.Balancer([a, b, c], "least_conn")
    a.in_flight, b.in_flight, c.in_flight = 5, 2, 3
    assert balancer.pick(0.0) is b
    b.healthy = False
    assert balancer.pick(0.0) is c
    assert balancer.pick(0.0, None, c) is a


def test_least_conn_ties_rotate(impl: Any) -> None:
    a, b, c = make_targets(impl, 3)
    balancer = impl.Balancer([a, b, c], "least_conn")
    assert addrs([balancer.pick(0.0) for _ in range(6)]) == [a.addr, b.addr, c.addr] * 2
    c.in_flight = 1
    assert addrs([balancer.pick(0.0) for _ in range(4)]) == [a.addr, b.addr, a.addr, b.addr]


def test_least_conn_tracks_requests_as_the_proxy_counts_them(impl: Any) -> None:
    targets = make_targets(impl, 4)
    balancer = impl.Balancer(targets, "least_conn")
    started = []
    for _ in range(8):
        target = balancer.pick(0.0)
        target.in_flight += 1
        started.append(target)
    assert [t.in_flight for t in targets] == [2, 2, 2, 2]
    started[0].in_flight -= 1
    assert balancer.pick(0.0) is started[0]


# --- consistent hashing ---------------------------------------------------------------------------

KEYS = [f"user-{index}".encode() for index in range(10_000)]


def test_hash_is_stable_and_falls_back_to_round_robin(impl: Any) -> None:
    targets = make_targets(impl, 4)
    balancer = impl.Balancer(targets, "hash")
    first = [balancer.pick(0.0, key) for key in KEYS[:200]]
    assert [balancer.pick(0.0, key) for key in KEYS[:200]] == first
    # Another balancer built from equal addresses (another worker) agrees.
    other = impl.Balancer(make_targets(impl, 4), "hash")
    assert addrs([other.pick(0.0, key) for key in KEYS[:200]]) == addrs(first)
    assert addrs([balancer.pick(0.0) for _ in range(5)]) == [t.addr for t in targets + targets[:1]]


def test_hash_spreads_keys_evenly(impl: Any) -> None:
    balancer = impl.Balancer(make_targets(impl, 4), "hash")
    shares = Counter(balancer.pick(0.0, key).addr for key in KEYS)
    fair = len(KEYS) / 4
    assert len(shares) == 4
    for addr, count in shares.items():
        assert 0.5 * fair <= count <= 1.5 * fair, (addr, count)


def test_adding_a_target_moves_few_keys_and_only_to_it(impl: Any) -> None:
    four = impl.Balancer(make_targets(impl, 4), "hash")
    five_targets = make_targets(impl, 5)
    five = impl.Balancer(five_targets, "hash")
    before = [four.pick(0.0, key).addr for key in KEYS]
    after = [five.pick(0.0, key).addr for key in KEYS]
    moved = [(old, new) for old, new in zip(before, after, strict=True) if old != new]
    assert 0 < len(moved) <= 0.35 * len(KEYS)
    assert {new for _, new in moved} == {five_targets[4].addr}


def test_unavailable_owner_moves_only_its_keys(impl: Any) -> None:
    targets = make_targets(impl, 4)
    balancer = impl.Balancer(targets, "hash")
    before = [balancer.pick(0.0, key) for key in KEYS[:2000]]
    targets[2].healthy = False
    after = [balancer.pick(0.0, key) for key in KEYS[:2000]]
    for old, new in zip(before, after, strict=True):
        if old is targets[2]:
            assert new is not targets[2] and new is not None
        else:
            assert new is old
    # Spread over the rest rather than all onto one neighbour.
    assert len({new.addr for old, new in zip(before, after, strict=True) if old is targets[2]}) == 3


# --- passive health ---------------------------------------------------------------------------


def test_ejection_after_max_fails_and_recovery(impl: Any) -> None:
    a, b = make_targets(impl, 2)
    balancer = impl.Balancer([a, b], max_fails=3, fail_timeout=10.0)
    balancer.report_failure(a, 1.0)
    balancer.report_failure(a, 2.0)
    assert a.available(2.0) and a.consecutive_failures == 2
    balancer.report_failure(a, 3.0)
    assert a.down_until == 13.0
    assert not a.available(12.9)
    assert addrs([balancer.pick(5.0) for _ in range(3)]) == [b.addr] * 3
    # After the timeout: back in rotation, but half-open: one more failure ejects it again.
    assert a.available(13.0)
    assert a in [balancer.pick(13.0), balancer.pick(13.0)]
    balancer.report_failure(a, 14.0)
    assert not a.available(14.0) and a.down_until == 24.0
    # A success ends the streak: it takes max_fails failures again.
    balancer.report_success(a)
    assert a.consecutive_failures == 0
    balancer.report_failure(a, 30.0)
    balancer.report_failure(a, 30.0)
    assert a.available(30.0)


def test_success_resets_streak(impl: Any) -> None:
    (a,) = make_targets(impl, 1)
    balancer = impl.Balancer([a], max_fails=2)
    for now in range(10):
        balancer.report_failure(a, float(now))
        balancer.report_success(a)
    assert a.available(10.0) and a.down_until == 0.0


def test_max_fails_zero_disables_ejection(impl: Any) -> None:
    (a,) = make_targets(impl, 1)
    balancer = impl.Balancer([a], max_fails=0)
    for _ in range(100):
        balancer.report_failure(a, 1.0)
    assert a.available(1.0) and balancer.pick(1.0) is a


def test_invalid_balancer_arguments(impl: Any) -> None:
    targets = make_targets(impl, 1)
    with pytest.raises(ValueError, match="policy"):
        impl.Balancer(targets, "random")
    with pytest.raises(ValueError, match="max_fails"):
        impl.Balancer(targets, max_fails=-1)
    with pytest.raises(ValueError, match="fail_timeout"):
        impl.Balancer(targets, fail_timeout=-1.0)
    with pytest.raises(TypeError):
        impl.Balancer(["10.0.0.1:80"])


# --- hypothesis ---------------------------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(
    availability=st.lists(st.booleans(), min_size=1, max_size=8),
    rounds=st.integers(1, 4),
    policy=st.sampled_from(["round_robin", "least_conn"]),
)
def test_rotation_is_fair_among_available(availability: list[bool], rounds: int, policy: str) -> None:
    for impl in IMPLS:
        targets = make_targets(impl, len(availability))
        for target, up in zip(targets, availability, strict=True):
            target.healthy = up
        balancer = impl.Balancer(targets, policy)
        up_count = sum(availability)
        picks = [balancer.pick(0.0) for _ in range(up_count * rounds)]
        if up_count == 0:
            assert picks == []
            assert balancer.pick(0.0) is None
            continue
        assert all(pick is not None and pick.healthy for pick in picks)
        assert set(Counter(picks).values()) == {rounds}


@settings(max_examples=200, deadline=None)
@given(
    in_flight=st.lists(st.integers(0, 5), min_size=1, max_size=8),
    down=st.lists(st.booleans(), min_size=8, max_size=8),
    exclude_index=st.one_of(st.none(), st.integers(0, 7)),
)
def test_least_conn_picks_a_minimum(
    in_flight: list[int], down: list[bool], exclude_index: int | None
) -> None:
    for impl in IMPLS:
        targets = make_targets(impl, len(in_flight))
        for target, count, is_down in zip(targets, in_flight, down, strict=False):
            target.in_flight = count
            target.down_until = 10.0 if is_down else 0.0
        exclude = (
            targets[exclude_index] if exclude_index is not None and exclude_index < len(targets) else None
        )
        candidates = [t for t in targets if t.available(1.0) and t is not exclude]
        picked = impl.Balancer(targets, "least_conn").pick(1.0, None, exclude)
        if not candidates:
            assert picked is None
        else:
            assert picked in candidates and picked.in_flight == min(t.in_flight for t in candidates)


@settings(max_examples=100, deadline=None)
@given(
    count=st.integers(2, 8),
    down=st.sets(st.integers(0, 7)),
    keys=st.lists(st.binary(max_size=16), min_size=1, max_size=50),
)
def test_hash_keys_stay_put_while_their_owner_is_up(count: int, down: set[int], keys: list[bytes]) -> None:
    for impl in IMPLS:
        targets = make_targets(impl, count)
        balancer = impl.Balancer(targets, "hash")
        owners = [balancer.pick(0.0, key) for key in keys]
        for index in down:
            if index < count:
                targets[index].healthy = False
        for key, owner in zip(keys, owners, strict=True):
            picked = balancer.pick(0.0, key)
            if owner.healthy:
                assert picked is owner
            elif all(not t.healthy for t in targets):
                assert picked is None
            else:
                assert picked is not None and picked.healthy


def test_implementations_agree_on_hash_placement() -> None:
    compiled = compiled_balance.Balancer(make_targets(compiled_balance, 5), "hash")
    interpreted = interpreted_balance.Balancer(make_targets(interpreted_balance, 5), "hash")
    assert addrs([compiled.pick(0.0, key) for key in KEYS[:1000]]) == addrs(
        [interpreted.pick(0.0, key) for key in KEYS[:1000]]
    )
