"""The plugin layer itself: registration, ordering, phase chains, phase guards, entry points, configs."""

from __future__ import annotations

import asyncio
import gc
import importlib
import inspect
import sys
import tomllib
import weakref
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Annotated, Any

import msgspec
import pytest

from gateway.plugins import (
    ENTRY_POINT_GROUP,
    Consumer,
    Headers,
    Phase,
    PhaseError,
    Plugin,
    PluginChain,
    PluginConfigError,
    PluginRegistry,
    Request,
    Response,
    ResponseHead,
    builtin_plugin_classes,
    entry_point_plugin_classes,
)

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "plugins" / "add_header"


def make_request(**overrides: Any) -> Request:
    fields: dict[str, Any] = {
        "method": "GET",
        "path": "/api/items",
        "query": "",
        "headers": [("Host", "example.com")],
        "client_ip": "127.0.0.1",
        "route": "api",
        "request_id": "0123456789abcdef0123456789abcdef",
    }
    fields.update(overrides)
    return Request(**fields)


class Empty(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    pass


class Limits(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    rate: Annotated[str, msgspec.Meta(description="Requests per period.")]
    burst: Annotated[int, msgspec.Meta(ge=0, description="Extra requests allowed at once.")] = 0


class LimitConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    by: Annotated[str, msgspec.Meta(description="What the limit is keyed by.")] = "ip"
    burst: Annotated[int, msgspec.Meta(description="Extra requests allowed at once.")] = 0
    limits: Annotated[list[Limits], msgspec.Meta(description="More limits.")] = []
    header: Annotated[str, msgspec.Meta(description="Header name.")] = "X-Key"


def plugin_class(
    name: str,
    priority: int,
    *,
    access: bool = False,
    rewrite: bool = False,
    response: bool = False,
    log: bool = False,
    trace: list[str] | None = None,
) -> type[Plugin]:
    """A plugin class implementing the named phases, recording each call in `trace`."""
    calls = trace if trace is not None else []
    body: dict[str, Any] = {"name": name, "version": "1.0.0", "priority": priority, "Config": Empty}
    if access:

        def _access(self: Plugin, request: Request) -> Response | None:
            calls.append(f"{name}.access")
            return None

        body["access"] = _access
    if rewrite:

        def _rewrite(self: Plugin, request: Request) -> None:
            calls.append(f"{name}.rewrite")

        body["rewrite"] = _rewrite
    if response:

        def _response(self: Plugin, request: Request, head: ResponseHead) -> None:
            calls.append(f"{name}.response")

        body["response"] = _response
    if log:

        def _log(self: Plugin, request: Request, head: ResponseHead) -> None:
            calls.append(f"{name}.log")

        body["log"] = _log
    return type(f"Plugin_{name.replace('-', '_')}", (Plugin,), body)


# --- registration ------------------------------------------------------------------------------


class Valid(Plugin):
    name = "valid"
    version = "1.0.0"
    priority = 10
    Config = LimitConfig

    def access(self, request: Request) -> None:
        return None


def problems(cls: type[Plugin]) -> list[str]:
    with pytest.raises(PluginConfigError) as caught:
        PluginRegistry([cls])
    return [message for _, message in caught.value.errors]


def test_a_complete_plugin_registers() -> None:
    registry = PluginRegistry([Valid])
    assert registry.names() == ["valid"]
    assert registry.get("valid") is Valid
    assert registry.get("missing") is None


@pytest.mark.parametrize(
    ("attribute", "value", "expected"),
    [
        ("name", None, "has no name"),
        ("name", "", "has no name"),
        ("version", None, "plugin valid has no version"),
        ("priority", None, "plugin valid has no integer priority"),
        ("priority", "10", "plugin valid has no integer priority"),
        ("priority", True, "plugin valid has no integer priority"),
        ("Config", None, "plugin valid has no msgspec Config struct"),
        ("Config", dict, "plugin valid has no msgspec Config struct"),
    ],
)
def test_registration_refuses_missing_declarations(attribute: str, value: Any, expected: str) -> None:
    cls = type("Broken", (Valid,), {attribute: value})
    assert any(expected in message for message in problems(cls))


def test_registration_requires_a_description_on_every_config_field() -> None:
    class Undocumented(msgspec.Struct, frozen=True, kw_only=True):
        documented: Annotated[int, msgspec.Meta(description="Fine.")] = 1
        bare: int = 2
        constrained: Annotated[int, msgspec.Meta(ge=0)] = 3

    cls = type("Broken", (Valid,), {"Config": Undocumented})
    assert problems(cls) == [
        "plugin valid: config field 'bare' has no description",
        "plugin valid: config field 'constrained' has no description",
    ]


def test_registration_requires_a_phase() -> None:
    class Idle(Plugin):
        name = "idle"
        version = "1"
        priority = 1
        Config = Empty

    assert problems(Idle) == ["plugin idle implements no phase"]


def test_response_and_log_phases_must_be_synchronous() -> None:
    class AsyncResponse(Plugin):
        name = "async-response"
        version = "1"
        priority = 1
        Config = Empty

        async def response(self, request: Request, response: ResponseHead) -> None:  # type: ignore[override]
            return None

    assert problems(AsyncResponse) == ["plugin async-response: the response phase must be synchronous"]


def test_all_problems_are_reported_at_once() -> None:
    class Hopeless(Plugin):
        pass

    found = problems(Hopeless)
    assert len(found) == 5  # name, version, priority, Config, phases
    assert found[-1].endswith("implements no phase")


def test_two_classes_with_one_name_are_refused() -> None:
    twin = type("Twin", (Valid,), {})
    registry = PluginRegistry([Valid])
    registry.register(Valid)  # the same class again is harmless
    with pytest.raises(PluginConfigError, match="two plugins are named 'valid'"):
        registry.register(twin)


def test_phases_are_the_overridden_methods_in_execution_order() -> None:
    cls = plugin_class("p", 1, log=True, access=True, response=True)
    assert cls.phases() == (Phase.ACCESS, Phase.RESPONSE, Phase.LOG)
    assert plugin_class("q", 1, rewrite=True).phases() == (Phase.REWRITE,)


# --- ordering and per-phase chains -------------------------------------------------------------


def test_chain_orders_by_priority_then_name() -> None:
    classes = [
        plugin_class("zeta", 10, access=True),
        plugin_class("alpha", 10, access=True),
        plugin_class("first", 2000, access=True),
        plugin_class("last", -5, access=True),
        plugin_class("mid", 950, access=True),
    ]
    chain = PluginChain(cls(Empty()) for cls in classes)
    assert [type(p).name for p in chain.plugins] == ["first", "mid", "alpha", "zeta", "last"]
    # The order does not depend on the order plugins were given in.
    reversed_chain = PluginChain(cls(Empty()) for cls in reversed(classes))
    assert [type(p).name for p in reversed_chain.plugins] == ["first", "mid", "alpha", "zeta", "last"]


def test_phase_tuples_hold_only_the_plugins_implementing_that_phase() -> None:
    chain = PluginChain(
        [
            plugin_class("auth", 1000, access=True)(Empty()),
            plugin_class("transform", 800, rewrite=True, response=True)(Empty()),
            plugin_class("logger", 5, log=True)(Empty()),
        ]
    )
    assert [type(p).name for p in chain.access] == ["auth"]
    assert [type(p).name for p in chain.rewrite] == ["transform"]
    assert [type(p).name for p in chain.response] == ["transform"]
    assert [type(p).name for p in chain.log] == ["logger"]
    only_logs = PluginChain([plugin_class("logger", 5, log=True)(Empty())])
    assert only_logs.access == only_logs.rewrite == only_logs.response == ()


def test_an_empty_chain_is_false_and_needs_no_request_view() -> None:
    empty = PluginChain([])
    assert not empty
    assert not empty.needs_request_view
    assert empty.run_access(make_request()) is None


def test_phases_run_in_order_and_set_the_request_phase() -> None:
    trace: list[str] = []
    seen: list[Phase] = []

    class Watcher(Plugin):
        name = "watcher"
        version = "1"
        priority = 1
        Config = Empty

        def access(self, request: Request) -> None:
            seen.append(request.phase)

        def rewrite(self, request: Request) -> None:
            seen.append(request.phase)

        def response(self, request: Request, response: ResponseHead) -> None:
            seen.append(request.phase)

        def log(self, request: Request, response: ResponseHead) -> None:
            seen.append(request.phase)

    chain = PluginChain(
        [
            Watcher(Empty()),
            plugin_class("b", 5, access=True, rewrite=True, response=True, log=True, trace=trace)(Empty()),
            plugin_class("a", 9, access=True, rewrite=True, response=True, log=True, trace=trace)(Empty()),
        ]
    )
    request = make_request()
    assert chain.run_access(request) is None
    head = ResponseHead(200, [], request)
    chain.run_response(request, head)
    chain.run_log(request, head)
    assert trace == [
        "a.access", "b.access", "a.rewrite", "b.rewrite",
        "a.response", "b.response", "a.log", "b.log",
    ]  # fmt: skip
    assert seen == [Phase.ACCESS, Phase.REWRITE, Phase.RESPONSE, Phase.LOG]


def test_an_access_response_stops_the_chain_before_rewrite() -> None:
    trace: list[str] = []

    class Refuser(Plugin):
        name = "refuser"
        version = "1"
        priority = 500
        Config = Empty

        def access(self, request: Request) -> Response:
            trace.append("refuser.access")
            return Response.error(403, "forbidden", "no")

    chain = PluginChain(
        [
            Refuser(Empty()),
            plugin_class("before", 900, access=True, trace=trace)(Empty()),
            plugin_class("after", 100, access=True, rewrite=True, trace=trace)(Empty()),
        ]
    )
    result = chain.run_access(make_request())
    assert isinstance(result, Response)
    assert result.status == 403
    assert msgspec.json.decode(result.body) == {
        "error": {"status": 403, "code": "forbidden", "message": "no"}
    }
    assert trace == ["before.access", "refuser.access"]


def test_a_plugin_exception_propagates_to_the_engine() -> None:
    # The engine turns it into a 500 with the request id; the chain must not swallow it.
    class Broken(Plugin):
        name = "broken"
        version = "1"
        priority = 1
        Config = Empty

        def access(self, request: Request) -> None:
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        PluginChain([Broken(Empty())]).run_access(make_request())


# --- async access and rewrite ------------------------------------------------------------------


class AsyncAuth(Plugin):
    name = "async-auth"
    version = "1"
    priority = 1000
    Config = Empty

    async def _check(self, request: Request) -> Response | None:
        await asyncio.sleep(0)
        if request.headers.get("Authorization") != "ok":
            return Response.error(401, "unauthorized", "who are you?")
        request.authenticate(Consumer("alice", ("partners",)))
        return None

    def access(self, request: Request) -> Awaitable[Response | None]:
        return self._check(request)


class AsyncRewrite(Plugin):
    name = "async-rewrite"
    version = "1"
    priority = 10
    Config = Empty

    async def _rewrite(self, request: Request) -> None:
        await asyncio.sleep(0)
        request.headers.set("X-Rewritten", "async")

    def rewrite(self, request: Request) -> Awaitable[None]:
        return self._rewrite(request)


def run_to_completion(result: Response | Awaitable[Response | None] | None) -> Response | None:
    if inspect.isawaitable(result):

        async def wait() -> Response | None:
            return await result

        return asyncio.run(wait())
    return result


def test_async_access_then_later_sync_plugins_and_async_rewrite() -> None:
    trace: list[str] = []
    chain = PluginChain(
        [
            AsyncAuth(Empty()),
            AsyncRewrite(Empty()),
            plugin_class("acl", 950, access=True, rewrite=True, trace=trace)(Empty()),
        ]
    )
    request = make_request(headers=[("Authorization", "ok")])
    pending = chain.run_access(request)
    assert inspect.isawaitable(pending)  # the chain only becomes async where a plugin needs it
    assert trace == []  # plugins after the awaiting one wait for it
    assert run_to_completion(pending) is None
    assert trace == ["acl.access", "acl.rewrite"]
    assert request.consumer == Consumer("alice", ("partners",))
    assert request.headers.get("X-Rewritten") == "async"
    assert request.phase is Phase.REWRITE


def test_async_access_refusal_skips_the_rest() -> None:
    trace: list[str] = []
    chain = PluginChain([AsyncAuth(Empty()), plugin_class("acl", 950, access=True, trace=trace)(Empty())])
    result = run_to_completion(chain.run_access(make_request()))
    assert isinstance(result, Response)
    assert result.status == 401
    assert trace == []


def test_sync_chain_stays_synchronous() -> None:
    chain = PluginChain([plugin_class("a", 1, access=True, rewrite=True)(Empty())])
    assert chain.run_access(make_request()) is None


# --- the phase-aware request -------------------------------------------------------------------


def test_request_is_mutable_in_access_and_rewrite() -> None:
    request = make_request(query="a=1")
    for phase in (Phase.ACCESS, Phase.REWRITE):
        request.phase = phase
        request.headers.set("X-Phase", phase.value)
        request.path = f"/{phase.value}"
        request.query = f"phase={phase.value}"
    assert request.headers.get("x-phase") == "rewrite"
    assert (request.path, request.query, request.path_changed) == ("/rewrite", "phase=rewrite", True)


@pytest.mark.parametrize("phase", [Phase.RESPONSE, Phase.LOG])
def test_request_refuses_changes_after_it_went_upstream(phase: Phase) -> None:
    request = make_request()
    request.phase = phase
    changes: list[Callable[[], None]] = [
        lambda: request.headers.set("X-A", "1"),
        lambda: request.headers.add("X-A", "1"),
        lambda: request.headers.remove("Host"),
        lambda: request.headers.rename("Host", "X-Host"),
    ]
    for change in changes:
        with pytest.raises(PhaseError, match=f"of the request in the {phase.value} phase"):
            change()
    with pytest.raises(PhaseError):
        request.path = "/elsewhere"
    with pytest.raises(PhaseError):
        request.query = "x=1"
    assert request.headers.get("Host") == "example.com"  # reading is always allowed
    assert request.path == "/api/items"


@pytest.mark.parametrize("phase", [Phase.REWRITE, Phase.RESPONSE, Phase.LOG])
def test_authenticate_only_in_access(phase: Phase) -> None:
    request = make_request()
    request.phase = phase
    with pytest.raises(PhaseError, match="cannot authenticate"):
        request.authenticate(Consumer("bob"))
    assert request.consumer is None


@pytest.mark.parametrize("phase", [Phase.ACCESS, Phase.REWRITE, Phase.LOG])
def test_response_head_is_mutable_in_the_response_phase_only(phase: Phase) -> None:
    request = make_request()
    head = ResponseHead(200, [("Server", "upstream")], request)
    request.phase = phase
    with pytest.raises(PhaseError, match=f"of the response in the {phase.value} phase"):
        head.headers.set("X-A", "1")
    with pytest.raises(PhaseError):
        head.headers.remove("Server")
    assert head.headers.get("server") == "upstream"
    request.phase = Phase.RESPONSE
    head.headers.set("X-A", "1")
    head.headers.remove("Server")
    assert head.headers.items() == [("X-A", "1")]


def test_a_request_and_its_response_head_are_freed_without_the_cycle_collector() -> None:
    """One is built per request: a reference cycle among them would be garbage only the cyclic
    collector frees, and its runs would cost the worker a few per cent of its CPU."""
    gc.collect()
    gc.disable()
    try:
        request = make_request()
        head = ResponseHead(200, [("Server", "upstream")], request)
        request.phase = Phase.RESPONSE
        head.headers.set("X-A", "1")
        request_ref, head_ref = weakref.ref(request), weakref.ref(head)
        del request, head
        assert request_ref() is None and head_ref() is None
    finally:
        gc.enable()


@pytest.mark.parametrize(
    ("name", "value"),
    [("X-A", "1\r\nX-Injected: 1"), ("X-A", "1\n"), ("X-A", "a\0b"), ("X A", "1"), ("", "1"), ("X:A", "1")],
)
def test_headers_refuse_values_that_would_split_the_message(name: str, value: str) -> None:
    headers = Headers([])
    with pytest.raises(ValueError, match="invalid header"):
        headers.set(name, value)
    with pytest.raises(ValueError, match="invalid header"):
        headers.add(name, value)
    assert len(headers) == 0


def test_headers_are_case_insensitive_and_ordered() -> None:
    headers = Headers([("Accept", "a"), ("X-Tag", "1"), ("x-tag", "2")])
    assert headers.get("X-TAG") == "1"
    assert headers.get_all("x-Tag") == ["1", "2"]
    assert "accept" in headers
    headers.set("X-Tag", "3")
    assert headers.items() == [("Accept", "a"), ("X-Tag", "3")]
    headers.rename("accept", "X-Accept")
    assert headers.items() == [("X-Accept", "a"), ("X-Tag", "3")]


def test_path_and_query_setters_refuse_what_would_break_the_request_line() -> None:
    request = make_request()
    for bad in ("relative", "/a b", "/a?b", "/a#b", "/a\r\n"):
        with pytest.raises(ValueError, match="invalid path"):
            request.path = bad
    with pytest.raises(ValueError, match="invalid query"):
        request.query = "a=1 2"
    assert not request.path_changed


# --- config decoding ---------------------------------------------------------------------------


class Limited(Plugin):
    name = "limited"
    version = "1"
    priority = 910
    Config = LimitConfig

    def access(self, request: Request) -> None:
        return None


@pytest.fixture
def registry() -> PluginRegistry:
    return PluginRegistry([Limited])


@pytest.mark.parametrize(
    ("table", "path", "message"),
    [
        ({"burst": "lots"}, "burst", "expected `int`, got `str`"),
        ({"limits": [{"rate": "1/s"}, {"rate": 5}]}, "limits[1].rate", "expected `str`, got `int`"),
        ({"limits": [{"rate": "1/s", "burst": -1}]}, "limits[0].burst", "expected `int` >= 0"),
        ({"limits": [{"burst": 1}]}, "limits[0]", "object missing required field `rate`"),
        ({"limitz": []}, "", "object contains unknown field `limitz`"),
        ({"limits": {}}, "limits", "expected `array`, got `object`"),
    ],
)
def test_decode_config_errors_name_the_key_path(
    registry: PluginRegistry, table: dict[str, Any], path: str, message: str
) -> None:
    with pytest.raises(PluginConfigError) as caught:
        registry.decode_config("limited", table)
    assert caught.value.errors == [(path, message)]
    assert message in str(caught.value)


def test_decode_config_of_an_unknown_plugin_lists_the_known_ones(registry: PluginRegistry) -> None:
    with pytest.raises(PluginConfigError, match=r"unknown plugin 'limted' \(known: limited\)"):
        registry.decode_config("limted", {})


def test_decode_config_gives_the_plugins_config_struct(registry: PluginRegistry) -> None:
    config = registry.decode_config("limited", {"by": "consumer", "limits": [{"rate": "5/s"}]})
    assert config == LimitConfig(by="consumer", limits=[Limits(rate="5/s")])
    with pytest.raises(AttributeError):
        config.by = "ip"  # type: ignore[misc]  # configs are frozen


def test_merged_config_route_keys_override_global_ones(registry: PluginRegistry) -> None:
    merged = registry.merged_config(
        "limited", {"by": "consumer", "burst": 5, "header": "X-Global"}, {"burst": 50, "header": "X-Route"}
    )
    assert merged == LimitConfig(by="consumer", burst=50, header="X-Route")
    assert registry.merged_config("limited", None, {"burst": 1}) == LimitConfig(burst=1)
    assert registry.merged_config("limited", {"burst": 2}, None) == LimitConfig(burst=2)
    assert registry.merged_config("limited", None, None) == LimitConfig()


def test_merged_config_replaces_whole_values_not_their_insides(registry: PluginRegistry) -> None:
    merged = registry.merged_config(
        "limited", {"limits": [{"rate": "1/s"}, {"rate": "100/m"}]}, {"limits": [{"rate": "9/s"}]}
    )
    assert merged == LimitConfig(limits=[Limits(rate="9/s")])


def test_merged_config_is_validated_as_a_whole(registry: PluginRegistry) -> None:
    with pytest.raises(PluginConfigError) as caught:
        registry.merged_config("limited", {"burst": "x"}, {"by": "ip"})
    assert caught.value.errors == [("burst", "expected `int`, got `str`")]


# --- built-ins ---------------------------------------------------------------------------------

KONG_PRIORITIES = [
    ("request_id", "request-id", 100001),  # Kong's correlation-id
    ("cors", "cors", 2000),
    ("ip_restriction", "ip-restriction", 990),
    ("request_size_limit", "request-size-limit", 951),
    ("request_transformer", "request-transformer", 801),
    ("response_transformer", "response-transformer", 800),
]


@pytest.mark.parametrize(("module", "name", "priority"), KONG_PRIORITIES)
def test_builtin_plugins_declare_kong_priorities_and_register(module: str, name: str, priority: int) -> None:
    cls = importlib.import_module(f"gateway.plugins.{module}").PLUGIN
    assert (cls.name, cls.priority) == (name, priority)
    registry = PluginRegistry([cls])
    assert registry.names() == [name]
    assert registry.get(name) is cls


def test_builtin_plugin_classes_finds_the_builtin_modules() -> None:
    names = {cls.name for cls in builtin_plugin_classes()}
    assert {name for _, name, _ in KONG_PRIORITIES} <= names


# --- entry points and the example third-party plugin -------------------------------------------


def write_dist_info(site: Path, project: dict[str, Any]) -> None:
    """What `pip install` leaves for a package: a .dist-info with METADATA and entry_points.txt."""
    name, version = project["name"], project["version"]
    dist_info = site / f"{name.replace('-', '_')}-{version}.dist-info"
    dist_info.mkdir(parents=True)
    (dist_info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    lines = []
    for group, entries in project.get("entry-points", {}).items():
        lines.append(f"[{group}]")
        lines.extend(f"{key} = {target}" for key, target in entries.items())
    (dist_info / "entry_points.txt").write_text("\n".join(lines) + "\n")


@pytest.fixture
def installed_example(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Any]]:
    """The example package as if pip-installed: its module importable, its entry points declared."""
    project = tomllib.loads((EXAMPLE / "pyproject.toml").read_text())["project"]
    write_dist_info(tmp_path / "site", project)
    monkeypatch.syspath_prepend(str(EXAMPLE))
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    yield project
    sys.modules.pop("lambdagate_add_header", None)


def test_example_declares_its_entry_point(installed_example: dict[str, Any]) -> None:
    assert installed_example["entry-points"][ENTRY_POINT_GROUP] == {
        "add-header": "lambdagate_add_header:AddHeader"
    }


def test_entry_points_load_third_party_plugins(installed_example: dict[str, Any]) -> None:
    classes = entry_point_plugin_classes()
    assert [cls.name for cls in classes] == ["add-header"]
    registry = PluginRegistry(classes)  # validated like a built-in
    assert registry.names() == ["add-header"]


def test_the_example_plugin_works_in_a_chain(installed_example: dict[str, Any]) -> None:
    (cls,) = entry_point_plugin_classes()
    registry = PluginRegistry([cls])
    config = registry.merged_config(
        "add-header",
        {"request": {"X-Team": "billing"}, "response": {"X-Served-By": "edge"}},
        {"overwrite": True},
    )
    chain = PluginChain([cls(config)])
    assert chain.access == () and chain.log == ()
    request = make_request(headers=[("X-Team", "client-said")])
    assert chain.run_access(request) is None
    assert request.headers.get_all("X-Team") == ["billing"]
    head = ResponseHead(200, [("X-Served-By", "upstream")], request)
    chain.run_response(request, head)
    assert head.headers.get_all("X-Served-By") == ["edge"]

    keep = PluginChain([cls(registry.decode_config("add-header", {"request": {"X-Team": "billing"}}))])
    request = make_request(headers=[("X-Team", "client-said")])
    keep.run_access(request)
    assert request.headers.get_all("X-Team") == ["client-said"]


def test_the_example_plugin_config_is_checked(installed_example: dict[str, Any]) -> None:
    (cls,) = entry_point_plugin_classes()
    registry = PluginRegistry([cls])
    with pytest.raises(PluginConfigError, match="invalid header 'X Team'"):
        registry.decode_config("add-header", {"request": {"X Team": "billing"}})
    with pytest.raises(PluginConfigError) as caught:
        registry.decode_config("add-header", {"requests": {}})
    assert caught.value.errors == [("", "object contains unknown field `requests`")]


def test_an_entry_point_that_is_not_a_plugin_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    module = tmp_path / "not_a_plugin.py"
    module.write_text("class Thing:\n    pass\n")
    write_dist_info(
        tmp_path,
        {
            "name": "not-a-plugin",
            "version": "0.1",
            "entry-points": {ENTRY_POINT_GROUP: {"thing": "not_a_plugin:Thing"}},
        },
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        with pytest.raises(PluginConfigError, match="entry point 'thing' does not name a Plugin subclass"):
            entry_point_plugin_classes()
    finally:
        sys.modules.pop("not_a_plugin", None)
