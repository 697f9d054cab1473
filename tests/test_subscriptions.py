"""Subscriptions: effective states, the snapshot workers read, the workflow, and the plugin."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.plugins import (
    Consumer,
    PluginChain,
    PluginConfigError,
    PluginRegistry,
    Request,
    Response,
    default_registry,
)
from gateway.plugins.subscription import SubscriptionConfig, SubscriptionPlugin
from gateway.store.base import (
    ACTIVE_STATES,
    InvalidTransitionError,
    NotFoundError,
    StateStore,
    StoreSnapshot,
    SubscriptionRecord,
    SubscriptionState,
)
from gateway.store.watch import follow_store, poll_once
from gateway.subscriptions import (
    ProductPolicy,
    SubscriptionSnapshot,
    SubscriptionWorkflow,
    UnknownProductError,
    effective_states,
)
from tests.store_backends import StoreBackend, store_backend_fixture  # noqa: F401

PENDING = SubscriptionState.PENDING
APPROVED = SubscriptionState.APPROVED
REJECTED = SubscriptionState.REJECTED
REVOKED = SubscriptionState.REVOKED


def record(
    state: SubscriptionState,
    *,
    updated: float,
    consumer: str = "alice",
    product: str = "billing",
    id: str = "",
) -> SubscriptionRecord:
    return SubscriptionRecord(
        id=id or f"{consumer}-{product}-{updated}",
        consumer=consumer,
        product=product,
        state=state,
        created_at=0.0,
        updated_at=updated,
        requested_by="admin",
    )


def make_request() -> Request:
    return Request(
        method="GET",
        path="/api/invoices",
        query="",
        headers=[("host", "example.test")],
        client_ip="127.0.0.1",
        route="api",
        request_id="req-1",
    )


def error_of(response: Response | None) -> tuple[int, str, str]:
    assert response is not None
    body = json.loads(response.body)["error"]
    assert body["status"] == response.status
    return response.status, body["code"], body["message"]


# --- effective states --------------------------------------------------------------------------


def test_effective_state_prefers_the_active_subscription_over_history() -> None:
    states = effective_states(
        [
            record(REVOKED, updated=5.0, id="old"),
            record(PENDING, updated=3.0, id="new"),  # asked again after the revocation
            record(REJECTED, updated=9.0, consumer="bob"),
            record(REVOKED, updated=10.0, consumer="bob"),
            record(APPROVED, updated=1.0, product="search"),
        ]
    )
    assert states == {
        ("alice", "billing"): PENDING,
        ("bob", "billing"): REVOKED,  # the latest decision
        ("alice", "search"): APPROVED,
    }


histories = st.lists(
    st.tuples(
        st.sampled_from(["alice", "bob"]),
        st.sampled_from(["billing", "search"]),
        st.sampled_from(list(SubscriptionState)),
        st.integers(0, 20),
    ),
    max_size=12,
)


@settings(max_examples=300, deadline=None)
@given(histories)
def test_effective_state_matches_a_reference_model(
    history: list[tuple[str, str, SubscriptionState, int]],
) -> None:
    records = [
        record(state, updated=float(time), consumer=consumer, product=product, id=f"{index:03d}")
        for index, (consumer, product, state, time) in enumerate(history)
    ]
    # The store keeps at most one active subscription per pair; keep the model to valid histories.
    seen_active: set[tuple[str, str]] = set()
    valid = []
    for r in records:
        if r.state in ACTIVE_STATES:
            if (r.consumer, r.product) in seen_active:
                continue
            seen_active.add((r.consumer, r.product))
        valid.append(r)

    expected: dict[tuple[str, str], SubscriptionState] = {}
    for pair in {(r.consumer, r.product) for r in valid}:
        mine = [r for r in valid if (r.consumer, r.product) == pair]
        active = [r for r in mine if r.state in ACTIVE_STATES]
        expected[pair] = active[0].state if active else max(mine, key=lambda r: (r.updated_at, r.id)).state
    # The order records arrive in does not matter.
    assert effective_states(valid) == expected
    assert effective_states(reversed(valid)) == expected


def test_snapshot_swaps_whole_and_skips_a_version_it_has() -> None:
    snapshot = SubscriptionSnapshot()
    assert snapshot.state("alice", "billing") is None
    store_snapshot = StoreSnapshot(
        version=3,
        consumers=(),
        api_keys=(),
        basic_auth=(),
        jwt_subjects=(),
        subscriptions=(record(APPROVED, updated=1.0),),
    )
    assert snapshot.refresh_from(store_snapshot) is True
    assert snapshot.is_approved("alice", "billing")
    assert snapshot.version == 3
    assert snapshot.refresh_from(store_snapshot) is False
    snapshot.replace([record(REVOKED, updated=2.0)], 4)
    assert not snapshot.is_approved("alice", "billing")
    assert snapshot.state("alice", "billing") is REVOKED
    assert len(snapshot) == 1


# --- the plugin --------------------------------------------------------------------------------


def plugin_for(
    states: dict[tuple[str, str], SubscriptionState], product: str = "billing"
) -> SubscriptionPlugin:
    return SubscriptionPlugin(SubscriptionConfig(product=product), subscriptions=SubscriptionSnapshot(states))


def test_plugin_lets_an_approved_consumer_through() -> None:
    plugin = plugin_for({("alice", "billing"): APPROVED})
    request = make_request()
    request.authenticate(Consumer("alice"))
    assert plugin.access(request) is None


@pytest.mark.parametrize(
    ("state", "message"),
    [
        (None, 'consumer "alice" has no approved subscription to product "billing"'),
        (PENDING, 'the subscription of consumer "alice" to product "billing" is pending approval'),
        (REJECTED, 'the subscription of consumer "alice" to product "billing" was rejected'),
        (REVOKED, 'the subscription of consumer "alice" to product "billing" was revoked'),
    ],
)
def test_plugin_refuses_without_an_approved_subscription(
    state: SubscriptionState | None, message: str
) -> None:
    states = {} if state is None else {("alice", "billing"): state}
    states[("alice", "search")] = APPROVED  # another product's approval does not count
    states[("bob", "billing")] = APPROVED  # nor another consumer's
    request = make_request()
    request.authenticate(Consumer("alice"))
    assert error_of(plugin_for(states).access(request)) == (403, "subscription_required", message)


def test_plugin_without_a_consumer_is_401() -> None:
    status, code, message = error_of(plugin_for({}).access(make_request()))
    assert (status, code) == (401, "unauthorized")
    assert 'product "billing"' in message


def test_plugin_declares_itself_and_validates_its_config() -> None:
    registry = PluginRegistry([SubscriptionPlugin])
    assert registry.get("subscription") is SubscriptionPlugin
    assert SubscriptionPlugin.priority == 940
    config = registry.decode_config("subscription", {"product": "billing"})
    assert config == SubscriptionConfig(product="billing")
    with pytest.raises(PluginConfigError, match="product"):
        registry.decode_config("subscription", {})
    with pytest.raises(PluginConfigError, match="unknown field `prodcut`"):
        registry.decode_config("subscription", {"product": "billing", "prodcut": "x"})
    with pytest.raises(PluginConfigError):
        registry.decode_config("subscription", {"product": ""})


def test_plugin_runs_in_a_chain_and_follows_snapshot_changes() -> None:
    snapshot = SubscriptionSnapshot()
    chain = PluginChain([SubscriptionPlugin(SubscriptionConfig(product="billing"), subscriptions=snapshot)])
    request = make_request()
    request.authenticate(Consumer("alice"))
    assert error_of(chain.run_access(request))[0] == 403  # type: ignore[arg-type]
    snapshot.replace([record(APPROVED, updated=1.0)], 1)
    assert chain.run_access(make_authenticated("alice")) is None
    snapshot.replace([record(REVOKED, updated=2.0)], 2)
    assert error_of(chain.run_access(make_authenticated("alice")))[0] == 403  # type: ignore[arg-type]


def make_authenticated(name: str) -> Request:
    request = make_request()
    request.authenticate(Consumer(name))
    return request


# --- the workflow ------------------------------------------------------------------------------

PRODUCTS = {"billing": ProductPolicy.APPROVAL, "docs": ProductPolicy.OPEN}


def run_with_store(backend: StoreBackend, scenario: Callable[[StateStore], Awaitable[None]]) -> None:
    async def main() -> None:
        store = backend.open()
        try:
            await scenario(store)
        finally:
            await store.close()

    asyncio.run(main())


def workflow_for(store: StateStore, known: set[str]) -> SubscriptionWorkflow:
    async def consumer_exists(name: str) -> bool:
        return name in known

    return SubscriptionWorkflow(store, products=lambda: PRODUCTS, consumer_exists=consumer_exists)


def test_workflow_request_approve_revoke(store_backend: StoreBackend) -> None:
    async def scenario(store: StateStore) -> None:
        workflow = workflow_for(store, {"alice"})
        requested = await workflow.request("alice", "billing", actor="alice", reason="need invoices")
        assert requested.state is PENDING
        approved = await workflow.approve(requested.id, actor="root")
        assert (approved.state, approved.decided_by) == (APPROVED, "root")
        revoked = await workflow.revoke(requested.id, actor="root", reason="contract ended")
        assert (revoked.state, revoked.reason) == (REVOKED, "contract ended")
        with pytest.raises(InvalidTransitionError):
            await workflow.approve(requested.id, actor="root")
        again = await workflow.request("alice", "billing", actor="alice")
        rejected = await workflow.reject(again.id, actor="root")
        assert rejected.state is REJECTED

    run_with_store(store_backend, scenario)


def test_workflow_checks_product_and_consumer(store_backend: StoreBackend) -> None:
    async def scenario(store: StateStore) -> None:
        workflow = workflow_for(store, {"alice"})
        with pytest.raises(
            UnknownProductError, match='no product named "payroll" \\(configured: "billing", "docs"\\)'
        ):
            await workflow.request("alice", "payroll", actor="admin")
        with pytest.raises(NotFoundError, match='no consumer named "mallory"'):
            await workflow.request("mallory", "billing", actor="admin")
        # An open product needs no approval: the subscription is approved at once.
        opened = await workflow.request("alice", "docs", actor="alice")
        assert (opened.state, opened.decided_by) == (APPROVED, "alice")
        assert await store.list_subscriptions() == [opened]

    run_with_store(store_backend, scenario)


# --- workers following the store ---------------------------------------------------------------


def test_a_worker_snapshot_follows_the_admin_side_through_the_store(store_backend: StoreBackend) -> None:
    """Two store clients on the same data: the admin side writes, a worker polls and enforces."""

    async def main() -> None:
        admin_store, worker_store = store_backend.open(), store_backend.open()
        try:
            workflow = workflow_for(admin_store, {"alice"})
            snapshot = SubscriptionSnapshot()
            plugin = SubscriptionPlugin(SubscriptionConfig(product="billing"), subscriptions=snapshot)
            applied: list[int] = []

            def on_change(store_snapshot: StoreSnapshot) -> None:
                snapshot.refresh_from(store_snapshot)
                applied.append(store_snapshot.version)

            version = await poll_once(worker_store, on_change, None)
            assert len(applied) == 1  # the first poll always loads
            assert await poll_once(worker_store, on_change, version) == version
            assert len(applied) == 1  # nothing changed: no re-read

            requested = await workflow.request("alice", "billing", actor="alice")
            version = await poll_once(worker_store, on_change, version)
            assert "pending approval" in error_of(plugin.access(make_authenticated("alice")))[2]

            await workflow.approve(requested.id, actor="root")
            version = await poll_once(worker_store, on_change, version)
            assert plugin.access(make_authenticated("alice")) is None

            await workflow.revoke(requested.id, actor="root")
            await poll_once(worker_store, on_change, version)
            assert "was revoked" in error_of(plugin.access(make_authenticated("alice")))[2]
            assert len(applied) == 4
        finally:
            await admin_store.close()
            await worker_store.close()

    asyncio.run(main())


def test_follow_store_keeps_polling_and_survives_store_errors(capfd: pytest.CaptureFixture[str]) -> None:
    class FlakyStore:
        def __init__(self) -> None:
            self.calls = 0

        async def version(self) -> int:
            self.calls += 1
            if self.calls in (2, 3):
                raise ConnectionError("store down")
            return 1 if self.calls < 5 else 2

        async def snapshot(self) -> StoreSnapshot:
            return StoreSnapshot(
                version=1 if self.calls < 5 else 2,
                consumers=(),
                api_keys=(),
                basic_auth=(),
                jwt_subjects=(),
                subscriptions=(),
            )

    async def main() -> list[int]:
        store = FlakyStore()
        seen: list[int] = []
        task = asyncio.create_task(
            follow_store(store, lambda s: seen.append(s.version), interval=0.001)  # type: ignore[arg-type]
        )
        while store.calls < 7:
            await asyncio.sleep(0.001)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return seen

    assert asyncio.run(main()) == [1, 2]
    lines = [json.loads(line) for line in capfd.readouterr().err.splitlines()]
    assert [line["msg"] for line in lines] == ["state store poll failed", "state store reachable again"]
    assert lines[0]["error"] == "ConnectionError: store down"


def test_records_encode_as_json() -> None:
    # The admin API returns records as they are: states are plain strings on the wire.
    encoded = json.loads(msgspec.json.encode(record(PENDING, updated=1.0)))
    assert encoded["state"] == "pending"


def test_the_builtin_registry_has_the_subscription_plugin() -> None:
    assert default_registry().get("subscription") is SubscriptionPlugin
