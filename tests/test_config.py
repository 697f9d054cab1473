"""gateway.config: loading, defaults, env interpolation, every error message shape, JSON Schema."""

from __future__ import annotations

import dataclasses
import os
import re
from pathlib import Path
from typing import Annotated, Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from msgspec import Meta

import gateway.config_plugins
from gateway.config import (
    Admin,
    BasicCredential,
    Config,
    ConfigError,
    ConsumerConfig,
    Function,
    HealthCheck,
    Product,
    Route,
    Server,
    StaticResponse,
    Store,
    Trigger,
    Upstream,
    config_json_schema,
    load_config,
    parse_config,
    parse_listen,
    parse_target,
    route_path_params,
    route_plugin_configs,
)
from gateway.functions.schedule import parse_schedule
from gateway.plugins import Plugin, PluginConfigError, PluginRegistry, Request, Response, default_registry

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "gateway.toml"
DOCS = ROOT / "docs" / "config.md"
STRUCTS = (
    Config, Server, Store, Admin, ConsumerConfig, BasicCredential, Product, Upstream, HealthCheck,
    StaticResponse, Route, Function, Trigger,
)  # fmt: skip
LOADER_FILLED = {(Config, "source"), (Route, "index")}

# The config from the issue, verbatim: the example file must contain it and load it.
ISSUE_CONFIG = """\
[server]
listen = "127.0.0.1:8080"
workers = 1                  # 0 = one per core
access_log = "stdout"        # "off", "stdout" or a file path

[upstreams.backend]
targets = ["127.0.0.1:9000"]
keepalive = 64
connect_timeout = "1s"
read_timeout = "30s"

[[routes]]
name = "api"
path = "/api/{proxy+}"
methods = ["GET", "POST", "PUT", "DELETE"]
upstream = "backend"
strip_prefix = "/api"

[[routes]]
path = "/health"
static = { status = 200, body = "ok" }
"""

USERS = '[upstreams.users]\ntargets = ["127.0.0.1:9000"]\n'
BACKEND = '[upstreams.backend]\ntargets = ["127.0.0.1:9000"]\n'


# --- test plugins: the config layer's view of plugins, independent of the built-in ones ----------


class _Window(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    rate: Annotated[str, Meta(description="A further rate.")]


_RATE = re.compile(r"[0-9]+/[smhd]")


class _LimitConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    rate: Annotated[str, Meta(description='"N/s", "N/m", "N/h" or "N/d".')] = "10/s"
    burst: Annotated[int, Meta(ge=1, description="Bucket size.")] = 1
    by: Annotated[str, Meta(description='"ip" or "header".')] = "ip"
    header: Annotated[str, Meta(description='The header when by = "header".')] = ""
    limits: Annotated[list[_Window], Meta(description="Further limits.")] = []

    def __post_init__(self) -> None:
        # Plugins parse their own strings: the config layer only routes these errors.
        if not _RATE.fullmatch(self.rate):
            raise ValueError(f'expected a rate like "100/s", got "{self.rate}"')
        if self.by == "header" and not self.header:
            raise ValueError('by = "header" needs a header name')


class LimitPlugin(Plugin):
    name = "test-limit"
    version = "1.0"
    priority = 900
    Config = _LimitConfig

    def access(self, request: Request) -> Response | None:
        return None


class _TagConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    tag: Annotated[str, Meta(description="Required.")]
    headers: Annotated[dict[str, str], Meta(description="Extra headers.")] = {}


class TagPlugin(Plugin):
    name = "test-tag"
    version = "1.0"
    priority = 10

    Config = _TagConfig

    def rewrite(self, request: Request) -> None:
        return None


TEST_PLUGINS = PluginRegistry([LimitPlugin, TagPlugin])


def errors_of(
    text: str, env: dict[str, str] | None = None, registry: PluginRegistry = TEST_PLUGINS
) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse_config(text, "gateway.toml", env={} if env is None else env, registry=registry)
    assert str(caught.value) == "\n".join(caught.value.errors)
    return caught.value.errors


def public_fields(struct: type[msgspec.Struct]) -> list[str]:
    return [f.name for f in msgspec.structs.fields(struct) if (struct, f.name) not in LOADER_FILLED]


# --- good configs --------------------------------------------------------------------------------


def test_issue_config_loads() -> None:
    config = parse_config(ISSUE_CONFIG, "gateway.toml", env={})
    assert config.source == "gateway.toml"
    assert parse_listen(config.server.listen) == ("127.0.0.1", 8080)
    backend = config.upstreams["backend"]
    assert backend.targets == ["127.0.0.1:9000"]
    assert backend.keepalive == 64
    assert backend.connect_timeout == 1.0
    assert backend.read_timeout == 30.0
    api, health = config.routes
    assert (api.name, api.display_name, api.index) == ("api", "api", 0)
    assert api.methods == ["GET", "POST", "PUT", "DELETE"]
    assert (api.upstream, api.strip_prefix, api.static) == ("backend", "/api", None)
    assert (health.name, health.display_name, health.index) == (None, "routes[1]", 1)
    assert health.static == StaticResponse(status=200, body="ok")


def test_example_file_contains_the_issue_config_and_loads_to_the_same_config() -> None:
    example = load_config(EXAMPLE)
    assert example.source == str(EXAMPLE)
    assert msgspec.structs.replace(example, source="x") == msgspec.structs.replace(
        parse_config(ISSUE_CONFIG, env={}), source="x"
    )
    # The issue's lines appear in order; only comments and blank lines may sit between them.
    active = [
        line
        for line in EXAMPLE.read_text().splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]
    assert active == [line for line in ISSUE_CONFIG.splitlines() if line.strip()]


def _uncomment_defaults(text: str) -> str:
    """Turn every ``#key = value`` line (and ``#[table]``) into an active one, except examples."""
    lines = []
    for line in text.splitlines():
        if re.match(r"#(\[|[a-z_]+ = )", line) and "no default" not in line:
            line = line[1:]
        lines.append(line)
    return "\n".join(lines) + "\n"


def test_example_commented_keys_show_the_real_defaults() -> None:
    text = EXAMPLE.read_text()
    uncommented = _uncomment_defaults(text)
    assert uncommented.count("\n#") < text.count("\n#") - 25  # the rewrite really activated lines
    expected = load_config(EXAMPLE)
    backend = msgspec.structs.replace(expected.upstreams["backend"], health=HealthCheck())
    # Uncommenting a table turns it on ([store] with its defaults changes nothing; [admin] needs
    # its token, which the example takes from the environment).
    expected = msgspec.structs.replace(
        expected, upstreams={"backend": backend}, admin=Admin(token="s3cret"), store=Store()
    )
    assert "[store]\n" in uncommented and "[admin]\n" in uncommented
    env = {"LAMBDAGATE_ADMIN_TOKEN": "s3cret"}
    assert parse_config(uncommented, str(EXAMPLE), env=env, registry=TEST_PLUGINS) == expected


@pytest.mark.parametrize("struct", STRUCTS)
def test_every_key_is_in_the_example_and_the_docs(struct: type[msgspec.Struct]) -> None:
    example, docs = EXAMPLE.read_text(), DOCS.read_text()
    for name in public_fields(struct):
        # a key line, an inline-table key, or (for Config's fields) a table header
        assert re.search(rf"^#?{name} =|[{{ ,]{name} =|^#? *\[+([a-z.]+\.)?{name}[.\]]", example, re.M), (
            f"{name} not in example"
        )
        assert re.search(rf"^\| `{name}` \||^## `\[+{name}[.\]]", docs, re.M), f"{name} not in docs/config.md"


def test_defaults_match_the_contract() -> None:
    config = parse_config("", env={})
    assert config == Config(source="<string>")
    assert config.server == Server(
        listen="127.0.0.1:8080",
        workers=1,
        access_log="stdout",
        max_request_target=8 * 1024,
        max_header_size=16 * 1024,
        max_header_fields=100,
        max_body_size=1024**3,
        header_timeout=10.0,
        body_timeout=60.0,
        send_timeout=60.0,
        keepalive_timeout=75.0,
        keepalive_requests=0,
        drain_timeout=30.0,
    )
    upstream = Upstream(targets=["a:1"])
    assert (upstream.balance, upstream.hash_on, upstream.keepalive, upstream.retries) == (
        "round_robin",
        None,
        64,
        1,
    )
    assert (upstream.keepalive_timeout, upstream.connect_timeout, upstream.read_timeout) == (60.0, 1.0, 30.0)
    assert (upstream.send_timeout, upstream.max_fails, upstream.fail_timeout, upstream.health) == (
        30.0,
        3,
        10.0,
        None,
    )
    assert HealthCheck() == HealthCheck(
        path="/health",
        interval=5.0,
        timeout=1.0,
        healthy_threshold=2,
        unhealthy_threshold=2,
        expect_status=[],
    )
    assert StaticResponse() == StaticResponse(
        status=200, body="", content_type="text/plain; charset=utf-8", headers={}
    )
    route = Route(path="/")
    assert (route.name, route.host, route.methods, route.upstream, route.static) == (
        None,
        None,
        None,
        None,
        None,
    )
    assert (route.strip_prefix, route.rewrite, route.preserve_host) == (None, None, False)
    assert (route.product, route.plugins) == (None, {})
    assert (route.function, route.payload) == (None, "2.0")
    assert (config.store, config.admin, config.plugins, config.consumers, config.products) == (
        Store(redis=None, path="lambdagate.db"),
        None,
        {},
        {},
        {},
    )
    assert (config.functions, config.triggers) == ({}, [])
    assert Admin(token="t") == Admin(listen="127.0.0.1:9901", token="t", aws_keys={})
    assert Function(code="f") == Function(
        code="f",
        handler=None,
        runtime="python",
        timeout=3.0,
        memory=128 * 1024**2,
        concurrency=10,
        provisioned=0,
        idle_timeout=600.0,
        env={},
        network=True,
        max_event_age=6 * 3600.0,
        retries=2,
        dead_letter=None,
    )
    assert Trigger(function="f") == Trigger(
        function="f", schedule=None, queue=None, batch_size=10, batch_window=0.0, max_receive_count=3
    )
    assert Product() == Product(subscription="open", description="")
    assert ConsumerConfig() == ConsumerConfig(keys=[], basic_auth=[], jwt_subjects=[], groups=[], metadata={})


def test_units_are_stored_as_plain_numbers() -> None:
    config = parse_config(
        USERS
        + 'connect_timeout = "250ms"\nfail_timeout = "1m30s"\n'
        + '[server]\nmax_body_size = "10KB"\nmax_header_size = 4096\nmax_request_target = "1024"\n',
        env={},
    )
    users = config.upstreams["users"]
    assert type(users.connect_timeout) is float and users.connect_timeout == 0.25
    assert users.fail_timeout == 90.0
    assert type(config.server.max_body_size) is int and config.server.max_body_size == 10_000
    assert (config.server.max_header_size, config.server.max_request_target) == (4096, 1024)


def test_full_featured_config() -> None:
    config = parse_config(
        USERS
        + """balance = "hash"
hash_on = "cookie:session"
health = { interval = "2s", expect_status = [200, 204] }

[upstreams."api.v2"]
targets = ["[::1]:9001", "backend.internal:80"]
balance = "least_conn"

[[routes]]
name = "users"
path = "/users/{id}"
host = "API.Example.com"
methods = ["get", "Post", "GET"]
upstream = "users"
rewrite = "/v1/users/{id}"
preserve_host = true

[[routes]]
path = "/users/{id}"
host = "*.example.com"
upstream = "api.v2"

[[routes]]
path = "/users/{user}"
methods = ["DELETE"]
upstream = "users"

[[routes]]
path = "/users/{user}"
methods = ["PUT"]
upstream = "users"

[[routes]]
path = "$default"
static = { status = 404, body = "nothing here", headers = { X-Reason = "no route" } }
""",
        env={},
    )
    users = config.upstreams["users"]
    assert users.health == HealthCheck(interval=2.0, expect_status=[200, 204])
    assert config.upstreams["api.v2"].balance == "least_conn"
    first = config.routes[0]
    assert first.methods == ["GET", "POST"]  # upper-cased, duplicates dropped, order kept
    assert first.host == "api.example.com"
    assert [route.index for route in config.routes] == [0, 1, 2, 3, 4]
    assert config.routes[4].static == StaticResponse(
        status=404, body="nothing here", headers={"X-Reason": "no route"}
    )


def test_config_is_immutable() -> None:
    config = parse_config(ISSUE_CONFIG, env={})
    with pytest.raises(AttributeError):
        config.server.workers = 4  # type: ignore[misc]


def test_load_config_names_the_file_as_given(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "gw.toml").write_text("[server]\nworkers = -1\n")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError) as caught:
        load_config("gw.toml", env={})
    assert caught.value.errors == ["gw.toml: server.workers: expected an integer >= 0, got -1"]


def test_load_config_unreadable_and_non_utf8(tmp_path: Path) -> None:
    missing = tmp_path / "missing.toml"
    with pytest.raises(ConfigError) as caught:
        load_config(missing)
    assert caught.value.errors == [f"{missing}: cannot read the config file: No such file or directory"]
    latin1 = tmp_path / "latin1.toml"
    latin1.write_bytes(b'[server]\naccess_log = "caf\xe9"\n')
    with pytest.raises(ConfigError) as caught:
        load_config(latin1)
    assert caught.value.errors == [f"{latin1}: the config file is not UTF-8 (byte 26)"]


# --- environment interpolation -------------------------------------------------------------------


def test_env_substitution_in_every_string() -> None:
    env = {"HOST": "10.0.0.7", "PORT": "9000", "LOG": "/var/log/gw.log", "EMPTY": ""}
    config = parse_config(
        """
[server]
listen = ":${LISTEN_PORT:-8081}"
access_log = "${LOG}"
workers = "${WORKERS:-0}"
header_timeout = "${TIMEOUT:-5s}"
[upstreams.users]
targets = ["${HOST}:${PORT}", "${HOST2:-10.0.0.8}:${PORT}"]
[[routes]]
path = "/"
static = { body = "literal $${HOST} and ${EMPTY:-fallback} and [${EMPTY}]", headers = { X-Host = "${HOST}" } }
""",
        env=env,
    )
    assert config.server.listen == ":8081"
    assert config.server.access_log == "/var/log/gw.log"
    assert config.server.workers == 0 and type(config.server.workers) is int
    assert config.server.header_timeout == 5.0
    assert config.upstreams["users"].targets == ["10.0.0.7:9000", "10.0.0.8:9000"]
    static = config.routes[0].static
    assert static is not None
    assert static.body == "literal ${HOST} and fallback and []"
    assert static.headers == {"X-Host": "10.0.0.7"}


def test_env_defaults_to_os_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LAMBDAGATE_TEST_WORKERS", "3")
    config = parse_config('[server]\nworkers = "${LAMBDAGATE_TEST_WORKERS}"\n')
    assert config.server.workers == 3


def test_env_value_still_has_to_fit_the_type() -> None:
    assert errors_of('[server]\nworkers = "${W}"\n', env={"W": "many"}) == [
        'gateway.toml: server.workers: expected an integer >= 0, got "many"'
    ]


def test_literal_strings_are_not_coerced() -> None:
    """Only a value that came from the environment may change type: "4" written in TOML is a string."""
    assert errors_of('[server]\nworkers = "4"\n') == [
        'gateway.toml: server.workers: expected an integer >= 0, got "4"'
    ]


# --- every error shape ---------------------------------------------------------------------------

ERROR_CASES_FILE = ROOT / "tests" / "conformance" / "configs" / "errors.toml"


class ErrorCase(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    name: str
    config: str
    expect: str


ERROR_CASES = msgspec.convert(msgspec.toml.decode(ERROR_CASES_FILE.read_text())["case"], list[ErrorCase])


def test_error_cases_are_distinct() -> None:
    assert len(ERROR_CASES) >= 80
    assert len({case.name for case in ERROR_CASES}) == len(ERROR_CASES)
    assert len({case.config for case in ERROR_CASES}) == len(ERROR_CASES)


@pytest.mark.parametrize("case", ERROR_CASES, ids=[case.name for case in ERROR_CASES])
def test_error_line(case: ErrorCase, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each config in the corpus fails with exactly its one expected line (plugins: TEST_PLUGINS).

    Run from the repository root: function cases name code folders under tests/conformance.
    """
    monkeypatch.chdir(ROOT)
    assert errors_of(case.config) == [case.expect]


def test_docs_error_examples_are_real(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every example line in docs/config.md's error table is a line the loader really prints.

    A line ending in "…" stands for every line that starts with the text before it.
    """
    table = DOCS.read_text().split("## Error messages", 1)[1]
    documented = re.findall(r"^\| [^|]+ \| `(gateway\.toml: .*)` \|$", table, re.M)
    assert len(documented) >= 25
    produced = {case.expect for case in ERROR_CASES}  # each checked by test_error_line
    # The plugin examples name built-in plugins, so they come from the default registry.
    route = '[[routes]]\npath = "/"\nstatic = {}\n'
    produced.update(errors_of(route + "[routes.plugins.rate-limt]\n", registry=default_registry()))
    produced.update(
        errors_of(route + "[routes.plugins.rate-limit]\nburst = 0\n", registry=default_registry())
    )
    produced.update(errors_of('[plugins.cors]\norigin = ["*"]\n', registry=default_registry()))
    produced.update(
        errors_of('[products.billing]\n[[routes]]\npath = "/"\nstatic = {}\nproduct = "biling"\n')
    )
    produced.update(
        errors_of(
            USERS
            + '[[routes]]\npath = "/files/{proxy+}/x"\nupstream = "users"\n'
            + '[[routes]]\npath = "/c"\n'
            + '[[routes]]\npath = "/b"\nupstream = "userz"\n'
            + '[[routes]]\nname = "users"\npath = "/users/{id}"\nupstream = "users"\n'
            + '[[routes]]\npath = "/users/{uid}"\nmethods = ["GET"]\nupstream = "users"\n'
        )
    )
    produced.update(errors_of("[server]\nworkers = 1\nlisten = = 3\n"))
    monkeypatch.chdir(ROOT)
    produced.update(errors_of('[functions.hello]\ncode = "functions/helo"\nhandler = "app.handler"\n'))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError) as caught:
        load_config("gateway.toml")
    produced.update(caught.value.errors)
    missing = [
        line
        for line in documented
        if not (
            any(found.startswith(line[:-1]) for found in produced) if line.endswith("…") else line in produced
        )
    ]
    assert not missing, "\n".join(["documented but not produced:", *missing, "produced:", *sorted(produced)])


def test_all_errors_are_reported_at_once() -> None:
    errors = errors_of(
        """
[server]
lsten = "x"
workers = -1
header_timeout = "fast"
listen = "nowhere"

[upstreams.users]
targets = ["127.0.0.1:0"]
balance = "rr"
hash_on = "ip"
health = { path = "h", expect_status = [99] }

[[routes]]
path = "/a{b}"
upstream = "users"
static = { status = 99 }

[[routes]]
path = "/ok"
upstream = "userz"
""",
        env={},
    )
    assert errors == [
        'gateway.toml: server.lsten: unknown key (did you mean "listen"?)',
        "gateway.toml: server.workers: expected an integer >= 0, got -1",
        'gateway.toml: server.header_timeout: expected a duration like "250ms", "30s" or "5m", got "fast"',
        'gateway.toml: server.listen: expected an address like "127.0.0.1:8080", "[::1]:8080" or ":8080", '
        'got "nowhere" (the port is missing)',
        'gateway.toml: upstreams.users.balance: expected one of "round_robin", "least_conn", "hash", '
        'got "rr"',
        "gateway.toml: upstreams.users.health.expect_status[0]: expected an integer from 100 to 599, got 99",
        'gateway.toml: upstreams.users.health.path: expected a path starting with "/", got "h"',
        'gateway.toml: upstreams.users.targets[0]: expected a target like "10.0.0.5:9000", '
        '"backend.internal:80" or "[::1]:9000", got "127.0.0.1:0" '
        "(the port must be a number from 1 to 65535)",
        "gateway.toml: routes[0].static.status: expected an integer from 200 to 599, got 99",
        'gateway.toml: routes[0].path: a parameter must be a whole segment like /{id}, got "a{b}" in "/a{b}"',
        'gateway.toml: routes[1].upstream: no upstream named "userz" (did you mean "users"?)',
    ]


# --- issue 3: plugins, consumers, products, store, admin ------------------------------------------

# The config from issue 3 (plus the upstream its route names and the sections the brief adds).
ISSUE3_CONFIG = """\
[store]
redis = "redis://127.0.0.1:6379/0"
path = "lambdagate.db"

[admin]
listen = "127.0.0.1:9901"
token = "${LAMBDAGATE_ADMIN_TOKEN}"

[plugins.cors]
origins = ["*"]

[consumers.alice]
keys = ["${ALICE_API_KEY}"]         # or "sha256:<hex>" hashes
groups = ["partners"]

[products.billing]
subscription = "approval"
description = "Billing API"

[upstreams.backend]
targets = ["127.0.0.1:9000"]

[[routes]]
path = "/api/{proxy+}"
upstream = "backend"
product = "billing"                 # routes grouped into an API product for subscriptions

[routes.plugins.key-auth]           # reads header "apikey" by default
[routes.plugins.rate-limit]
by = "consumer"                     # consumer | ip | header:NAME | route
rate = "100/s"
burst = 200
[routes.plugins.cache]
ttl = "60s"
"""
ISSUE3_ENV = {"ALICE_API_KEY": "alice-key-0001", "LAMBDAGATE_ADMIN_TOKEN": "admin-token"}


def _stand_in(plugin_name: str, config: type[msgspec.Struct]) -> type[Plugin]:
    """A plugin class named like a built-in, for testing the config layer on its own."""

    class StandIn(Plugin):
        name = plugin_name
        version = "0"
        priority = 1
        Config = config

        def log(self, request: Request, response: Any) -> None:
            return None

    return StandIn


class _KeyAuth(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    header_names: Annotated[list[str], Meta(description="Headers.")] = msgspec.field(
        default_factory=lambda: ["apikey"]
    )


class _RateLimit(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    by: Annotated[str, Meta(description="Key.")] = "consumer"
    rate: Annotated[str, Meta(description="Rate.")] = "1/s"
    burst: Annotated[int, Meta(ge=1, description="Burst.")] = 1


class _Cache(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    ttl: Annotated[str, Meta(description="Time to live.")] = "10s"


class _Cors(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    origins: Annotated[list[str], Meta(description="Origins.")] = []


ISSUE3_STAND_INS = PluginRegistry(
    [
        _stand_in("key-auth", _KeyAuth),
        _stand_in("rate-limit", _RateLimit),
        _stand_in("cache", _Cache),
        _stand_in("cors", _Cors),
    ]
)


def test_issue3_config_loads() -> None:
    config = parse_config(ISSUE3_CONFIG, "gateway.toml", env=ISSUE3_ENV, registry=ISSUE3_STAND_INS)
    assert config.store == Store(redis="redis://127.0.0.1:6379/0", path="lambdagate.db")
    assert config.admin == Admin(listen="127.0.0.1:9901", token="admin-token")
    assert config.plugins == {"cors": {"origins": ["*"]}}
    assert config.consumers == {"alice": ConsumerConfig(keys=["alice-key-0001"], groups=["partners"])}
    assert config.products == {"billing": Product(subscription="approval", description="Billing API")}
    (route,) = config.routes
    assert route.product == "billing"
    assert route.plugins == {
        "key-auth": {},
        "rate-limit": {"by": "consumer", "rate": "100/s", "burst": 200},
        "cache": {"ttl": "60s"},
    }
    assert route_plugin_configs(config, route, ISSUE3_STAND_INS) == {
        "cache": _Cache(ttl="60s"),
        "cors": _Cors(origins=["*"]),
        "key-auth": _KeyAuth(),
        "rate-limit": _RateLimit(by="consumer", rate="100/s", burst=200),
    }


# The built-in cache plugin is not written yet; its table joins this test when plugins/cache.py lands.
BUILTIN_PLUGINS_PRESENT = ("cache", "cors", "key-auth", "rate-limit")


def test_issue3_config_with_the_builtin_plugins() -> None:
    """The issue's plugin tables are valid configs of the real key-auth, rate-limit and cors plugins."""
    registry = default_registry()
    text = ISSUE3_CONFIG
    config = parse_config(text, "gateway.toml", env=ISSUE3_ENV, registry=registry)
    configs = route_plugin_configs(config, config.routes[0], registry)
    assert tuple(sorted(configs)) == BUILTIN_PLUGINS_PRESENT
    for name, plugin_config in configs.items():
        plugin = registry.get(name)
        assert plugin is not None and isinstance(plugin_config, plugin.Config)
    assert msgspec.structs.asdict(configs["rate-limit"])["burst"] == 200
    assert errors_of(text.replace("burst = 200", "burst = 0"), env=ISSUE3_ENV, registry=registry) == [
        "gateway.toml: routes[0].plugins.rate-limit.burst: expected an integer >= 1, got 0"
    ]


ISSUE3_AS_WRITTEN = """\
[upstreams.backend]
targets = ["127.0.0.1:9000"]

[consumers.alice]
keys = ["${ALICE_API_KEY}"]         # or "sha256:<hex>" hashes
groups = ["partners"]

[[routes]]
path = "/api/{proxy+}"
upstream = "backend"
product = "billing"                 # routes grouped into an API product for subscriptions

[routes.plugins.key-auth]           # reads header "apikey" by default
[routes.plugins.rate-limit]
by = "consumer"                     # consumer | ip | header:NAME | route
rate = "100/s"
burst = 200
[routes.plugins.cache]
ttl = "60s"
"""


def test_issue3_example_works_as_written() -> None:
    """The issue's example, verbatim: no [products] section, so "billing" is an open product."""
    config = parse_config(ISSUE3_AS_WRITTEN, "gateway.toml", env=ISSUE3_ENV, registry=default_registry())
    assert config.routes[0].product == "billing"
    assert sorted(route_plugin_configs(config, config.routes[0])) == ["cache", "key-auth", "rate-limit"]


def test_issue3_config_needs_its_environment() -> None:
    assert errors_of(ISSUE3_CONFIG, env={"LAMBDAGATE_ADMIN_TOKEN": "t"}, registry=ISSUE3_STAND_INS) == [
        'gateway.toml: consumers.alice.keys[0]: environment variable "ALICE_API_KEY" is not set '
        "(write ${ALICE_API_KEY:-default} to give a default)"
    ]


PLUGGED = (
    BACKEND
    + """
[plugins.test-limit]
rate = "5/s"
burst = 3

[[routes]]
path = "/a"
upstream = "backend"
[routes.plugins.test-limit]
burst = 10

[[routes]]
path = "/b"
upstream = "backend"

[[routes]]
path = "/c"
upstream = "backend"
[routes.plugins.test-tag]
tag = "c"
"""
)


def test_route_plugin_configs_merge_global_and_route_tables() -> None:
    config = parse_config(PLUGGED, env={}, registry=TEST_PLUGINS)
    overriding, inheriting, adding = config.routes
    assert route_plugin_configs(config, overriding, TEST_PLUGINS) == {
        "test-limit": _LimitConfig(rate="5/s", burst=10)  # burst from the route, rate from the global table
    }
    assert route_plugin_configs(config, inheriting, TEST_PLUGINS) == {
        "test-limit": _LimitConfig(rate="5/s", burst=3)
    }
    assert route_plugin_configs(config, adding, TEST_PLUGINS) == {
        "test-limit": _LimitConfig(rate="5/s", burst=3),
        "test-tag": _TagConfig(tag="c"),
    }


def test_route_plugin_configs_with_another_registry_raises() -> None:
    config = parse_config(PLUGGED, env={}, registry=TEST_PLUGINS)
    with pytest.raises(PluginConfigError):
        route_plugin_configs(config, config.routes[0], PluginRegistry([TagPlugin]))


def test_a_config_without_plugins_loads_no_plugin(monkeypatch: pytest.MonkeyPatch) -> None:
    """Plugin modules are imported only when the file enables a plugin."""

    def refuse() -> PluginRegistry:
        raise AssertionError("the plugin registry was loaded")

    monkeypatch.setattr(gateway.config_plugins, "default_registry", refuse)
    config = parse_config(ISSUE_CONFIG, env={})
    assert [route_plugin_configs(config, route) for route in config.routes] == [{}, {}]
    with pytest.raises(AssertionError, match="registry was loaded"):
        parse_config(ISSUE_CONFIG + "[plugins.cors]\n", env={})


def test_env_substitution_inside_plugin_tables() -> None:
    config = parse_config(
        """
[plugins.test-tag]
tag = "${TAG}"
headers = { X-Team = "${TEAM:-core}", X-Literal = "$${TAG}" }
[plugins.test-limit]
burst = "${BURST}"
limits = [{ rate = "${RATE}" }]
""",
        env={"TAG": "blue", "BURST": "7", "RATE": "9/m"},
        registry=TEST_PLUGINS,
    )
    assert config.plugins["test-tag"] == {"tag": "blue", "headers": {"X-Team": "core", "X-Literal": "${TAG}"}}
    route = Route(path="/")
    configs = route_plugin_configs(config, route, TEST_PLUGINS)
    assert configs["test-limit"] == _LimitConfig(
        burst=7, limits=[_Window(rate="9/m")]
    )  # "7" -> 7 by the plugin


@pytest.mark.parametrize(
    "redis",
    [
        "redis://127.0.0.1:6379/0",
        "redis://cache",
        "redis://:${PASSWORD}@cache:6379/2",
        "redis://user:pw@[::1]:6380",
        "rediss://cache.internal:6380/0",
        "unix:///run/redis/redis.sock",
    ],
)
def test_store_redis_urls(redis: str) -> None:
    config = parse_config(f'[store]\nredis = "{redis}"\n', env={"PASSWORD": "pw"})
    assert config.store.redis == redis.replace("${PASSWORD}", "pw")


@pytest.mark.parametrize(
    ("server", "admin"),
    [("127.0.0.1:8080", "127.0.0.1:9901"), ("127.0.0.1:8080", "127.0.0.2:8080"), (":8080", "[::1]:9901")],
)
def test_admin_listen_may_share_nothing_but_the_machine(server: str, admin: str) -> None:
    config = parse_config(
        f'[server]\nlisten = "{server}"\n[admin]\nlisten = "{admin}"\ntoken = "t"\n', env={}
    )
    assert config.admin == Admin(listen=admin, token="t")


BCRYPT_HASH = "$2b$04$YjrMHi6d2MbKC2wW/pNgk.3z9kC6LrxtSFGXDCmAwCJrgBfRo/59W"


def test_consumers_and_products() -> None:
    config = parse_config(
        f"""
[consumers.alice]
keys = ["alice-key-0001", "sha256:{"AB" * 32}"]
basic_auth = [{{ username = "alice", password = "{BCRYPT_HASH}" }}]
jwt_subjects = ["user-1"]
groups = ["partners", "beta"]
metadata = {{ team = "billing" }}

[consumers."bob.smith"]
keys = ["bob-key-0001"]

[products.billing]
[products.search]
subscription = "approval"

[[routes]]
path = "/"
static = {{}}
product = "search"
""",
        env={},
    )
    alice = config.consumers["alice"]
    assert alice.keys == ["alice-key-0001", "sha256:" + "AB" * 32]
    assert alice.basic_auth == [BasicCredential(username="alice", password=BCRYPT_HASH)]
    assert (alice.jwt_subjects, alice.groups, alice.metadata) == (
        ["user-1"],
        ["partners", "beta"],
        {"team": "billing"},
    )
    assert list(config.consumers) == ["alice", "bob.smith"]
    assert config.products == {"billing": Product(), "search": Product(subscription="approval")}
    assert config.routes[0].product == "search"


def test_issue3_errors_are_reported_at_once_without_secrets() -> None:
    errors = errors_of(
        """
[store]
redis = "redis://:topsecret@cache:0/0"
[admin]
listen = "127.0.0.1:8080"
token = "${ADMIN_TOKEN}"
[plugins.test-limit]
brust = 1
[consumers.alice]
keys = ["secret-key-1"]
[consumers.bob]
keys = ["secret-key-1"]
[[routes]]
path = "/a{b}"
static = {}
product = "billing"
[routes.plugins.test-tag]
tag = 1
[[routes]]
path = "/b"
upstream = "nowhere"
[routes.plugins.nope]
"""
    )
    assert errors == [
        'gateway.toml: store.redis: expected a URL like "redis://127.0.0.1:6379/0", "rediss://host:6380/0" '
        'or "unix:///run/redis.sock", got "redis://:***@cache:0/0" '
        "(the port must be a number from 1 to 65535)",
        'gateway.toml: admin.token: environment variable "ADMIN_TOKEN" is not set '
        "(write ${ADMIN_TOKEN:-default} to give a default)",
        'gateway.toml: routes[0].path: a parameter must be a whole segment like /{id}, got "a{b}" in "/a{b}"',
        "gateway.toml: consumers.bob.keys[0]: the same key as consumers.alice.keys[0] "
        "(each key must identify one consumer)",
        'gateway.toml: routes[1].upstream: no upstream named "nowhere" (no [upstreams] are defined)',
        'gateway.toml: plugins.test-limit.brust: unknown key (did you mean "burst"?)',
        "gateway.toml: routes[0].plugins.test-tag.tag: expected a string, got 1",
        "gateway.toml: routes[1].plugins.nope: unknown plugin; known plugins: test-limit, test-tag",
    ]
    assert not [line for line in errors if "secret" in line]


# --- address and path syntax ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "parsed"),
    [
        ("127.0.0.1:8080", ("127.0.0.1", 8080)),
        ("[::1]:8080", ("::1", 8080)),
        ("[::]:443", ("::", 443)),
        (":80", ("", 80)),
        ("*:80", ("", 80)),
        ("localhost:65535", ("localhost", 65535)),
    ],
)
def test_parse_listen(value: str, parsed: tuple[str, int]) -> None:
    assert parse_listen(value) == parsed


@pytest.mark.parametrize(
    "value", ["8080", ":0", ":65536", "::1:80", "[::1]", "[::1]80", "host:", "host:8o", "a..b:1"]
)
def test_parse_listen_rejects(value: str) -> None:
    with pytest.raises(ValueError, match="expected an address like"):
        parse_listen(value)


def test_parse_target() -> None:
    assert parse_target("backend.internal:80") == ("backend.internal", 80)
    assert parse_target("[2001:db8::1]:9000") == ("2001:db8::1", 9000)
    with pytest.raises(ValueError, match="with a host"):
        parse_target(":80")


@pytest.mark.parametrize(
    ("path", "params"),
    [("/", ()), ("/exact", ()), ("/users/{id}", ("id",)), ("/a/{x}/b/{y+}", ("x", "y")), ("$default", ())],
)
def test_route_path_params(path: str, params: tuple[str, ...]) -> None:
    assert route_path_params(path) == params


_router: Any = pytest.importorskip("gateway._fastpath.router")


_SEGMENTS = st.one_of(
    st.sampled_from(
        ["", "a", "users", "v1", "{id}", "{id}", "{x+}", "{proxy+}", "{_a1}", "{1x}", "{}", "{+}"]
    ),
    st.sampled_from(
        ["{a-b}", "a{b}", "{a}b", "{a}{b}", "{", "}", "}{", "{{a}}", "a?b", "a#", "a b", "%20", "$x"]
    ),
    st.text(alphabet="ab{}+_1?# ", max_size=4),
)
_ROUTE_PATHS = st.one_of(
    st.lists(_SEGMENTS, min_size=1, max_size=5).map(lambda segments: "/" + "/".join(segments)),
    st.sampled_from(["$default", "", "users", "a/{b}", "/$default"]),
)


@settings(max_examples=500, deadline=None)
@given(_ROUTE_PATHS)
def test_route_path_rules_agree_with_the_router(path: str) -> None:
    """The config rejects exactly the route paths the router would refuse (differential test)."""
    try:
        route_path_params(path)
        config_accepts = True
    except ValueError:
        config_accepts = False
    try:
        _router.Router().add(path, object())
        router_accepts = True
    except _router.RoutePatternError:
        router_accepts = False
    assert config_accepts == router_accepts


# --- JSON Schema ---------------------------------------------------------------------------------


def _validate(schema: dict[str, Any], instance: Any, root: dict[str, Any], at: str = "$") -> list[str]:
    """A small JSON Schema checker covering the keywords config_json_schema() uses."""
    if "$ref" in schema:
        target = root
        for part in schema["$ref"].removeprefix("#/").split("/"):
            target = target[part]
        return _validate(target, instance, root, at)
    if "anyOf" in schema:
        if all(_validate(option, instance, root, at) for option in schema["anyOf"]):
            return [f"{at}: matches no anyOf option"]
        return []
    errors: list[str] = []
    types: dict[str, type | tuple[type, ...]] = {
        "object": dict,
        "array": list,
        "string": str,
        "integer": int,
        "number": (int, float),
        "boolean": bool,
        "null": type(None),
    }
    if "type" in schema:
        allowed = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
        fits = any(
            isinstance(instance, types[name])
            and not (isinstance(instance, bool) and name in ("integer", "number"))
            for name in allowed
        )
        if not fits:
            return [f"{at}: not {schema['type']}"]
    if "enum" in schema and instance not in schema["enum"]:
        errors.append(f"{at}: not in enum")
    if isinstance(instance, str) and "pattern" in schema and not re.search(schema["pattern"], instance):
        errors.append(f"{at}: does not match {schema['pattern']}")
    is_number = isinstance(instance, int | float) and not isinstance(instance, bool)
    if is_number and not schema.get("minimum", instance) <= instance <= schema.get("maximum", instance):
        errors.append(f"{at}: out of range")
    if isinstance(instance, list):
        if len(instance) < schema.get("minItems", 0):
            errors.append(f"{at}: too few items")
        for index, item in enumerate(instance):
            errors += _validate(schema.get("items", {}), item, root, f"{at}[{index}]")
    if isinstance(instance, dict):
        properties = schema.get("properties", {})
        errors += [f"{at}.{key}: required" for key in schema.get("required", []) if key not in instance]
        for key, value in instance.items():
            if key in properties:
                errors += _validate(properties[key], value, root, f"{at}.{key}")
            elif schema.get("additionalProperties") is False:
                errors.append(f"{at}.{key}: not allowed")
            elif isinstance(schema.get("additionalProperties"), dict):
                errors += _validate(schema["additionalProperties"], value, root, f"{at}.{key}")
    return errors


def test_example_validates_against_the_schema() -> None:
    schema = config_json_schema()
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    document = msgspec.toml.decode(EXAMPLE.read_text())
    assert _validate(schema, document, schema) == []
    full = msgspec.toml.decode(_uncomment_defaults(EXAMPLE.read_text()))
    assert _validate(schema, full, schema) == []


@pytest.mark.parametrize(
    ("document", "error"),
    [
        ({"server": {"lsten": ":80"}}, "$.server.lsten: not allowed"),
        ({"server": {"header_timeout": "fast"}}, "$.server.header_timeout: does not match"),
        ({"server": {"max_body_size": "16k"}}, "$.server.max_body_size: matches no anyOf option"),
        ({"server": {"workers": -1}}, "$.server.workers: out of range"),
        ({"upstreams": {"b": {"keepalive": 1}}}, "$.upstreams.b.targets: required"),
        ({"upstreams": {"b": {"targets": []}}}, "$.upstreams.b.targets: too few items"),
        ({"upstreams": {"b": {"targets": ["a:1"], "balance": "rr"}}}, "$.upstreams.b.balance: not in enum"),
        ({"routes": [{"path": "/", "index": 0}]}, "$.routes[0].index: not allowed"),
        ({"source": "x"}, "$.source: not allowed"),
        ({"admin": {"listen": "127.0.0.1:9901"}}, "$.admin: matches no anyOf option"),  # no token
        ({"products": {"b": {"subscription": "manual"}}}, "$.products.b.subscription: not in enum"),
        ({"plugins": {"cors": ["*"]}}, "$.plugins.cors: not object"),
        ({"routes": [{"path": "/", "plugins": {"x": 1}}]}, "$.routes[0].plugins.x: not object"),
        (
            {"consumers": {"a": {"basic_auth": [{"username": "a"}]}}},
            "$.consumers.a.basic_auth[0].password: required",
        ),
        ({"store": {"redis": 1}}, "$.store.redis: matches no anyOf option"),
        ({"functions": {"f": {"handler": "app.handler"}}}, "$.functions.f.code: required"),
        ({"functions": {"f": {"code": ".", "runtime": "java"}}}, "$.functions.f.runtime: not in enum"),
        ({"functions": {"f": {"code": ".", "timeout": 3}}}, "$.functions.f.timeout: not string"),
        ({"functions": {"f": {"code": ".", "retries": 3}}}, "$.functions.f.retries: out of range"),
        ({"routes": [{"path": "/", "payload": "3.0"}]}, "$.routes[0].payload: not in enum"),
        ({"triggers": [{"queue": "q"}]}, "$.triggers[0].function: required"),
        ({"triggers": [{"function": "f", "batch_size": 0}]}, "$.triggers[0].batch_size: out of range"),
        ({"admin": {"token": "t", "aws_keys": {"AKIA": 1}}}, "$.admin"),
    ],
)
def test_schema_rejects_bad_documents(document: dict[str, Any], error: str) -> None:
    schema = config_json_schema()
    errors = _validate(schema, document, schema)
    assert any(found.startswith(error) for found in errors), errors


def test_schema_documents_every_field() -> None:
    schema = config_json_schema()
    for struct in STRUCTS:
        definition = schema["$defs"][struct.__name__]
        assert definition["description"]
        assert list(definition["properties"]) == public_fields(struct)
        for name, property_schema in definition["properties"].items():
            assert property_schema.get("description"), f"{struct.__name__}.{name} has no description"
    server = schema["$defs"]["Server"]["properties"]
    assert server["header_timeout"]["type"] == "string"
    assert server["header_timeout"]["default"] == "10s"
    assert server["keepalive_timeout"]["default"] == "75s"
    assert server["max_header_size"]["default"] == "16KiB"
    assert server["max_body_size"]["default"] == "1GiB"
    assert msgspec.json.decode(msgspec.json.encode(schema)) == schema


def test_structs_have_the_contract_options() -> None:
    for struct in STRUCTS:
        config = struct.__struct_config__
        assert config.frozen and config.forbid_unknown_fields, struct
        with pytest.raises(TypeError):
            untyped: Any = struct  # the call below is wrong on purpose: fields are keyword-only
            untyped("positional")


def test_contract_field_names() -> None:
    """The worker is written against these names; renaming one must fail here first."""
    assert public_fields(Config) == [
        "server", "store", "admin", "plugins", "consumers", "products", "upstreams", "routes", "functions",
        "triggers",
    ]  # fmt: skip
    assert public_fields(Store) == ["redis", "path"]
    assert public_fields(Admin) == ["listen", "token", "aws_keys"]
    assert public_fields(Function) == [
        "code", "handler", "runtime", "timeout", "memory", "concurrency", "provisioned", "idle_timeout",
        "env", "network", "max_event_age", "retries", "dead_letter", "system_log_level",
    ]  # fmt: skip
    assert public_fields(Trigger) == [
        "function", "schedule", "queue", "batch_size", "batch_window", "max_receive_count",
    ]  # fmt: skip
    assert public_fields(Product) == ["subscription", "description"]
    assert public_fields(ConsumerConfig) == ["keys", "basic_auth", "jwt_subjects", "groups", "metadata"]
    assert public_fields(Server) == [
        "listen", "workers", "access_log", "max_request_target", "max_header_size", "max_header_fields",
        "max_body_size", "header_timeout", "body_timeout", "send_timeout", "keepalive_timeout",
        "keepalive_requests", "drain_timeout", "sandbox_cpus",
    ]  # fmt: skip
    assert public_fields(Upstream) == [
        "targets", "balance", "hash_on", "keepalive", "keepalive_timeout", "connect_timeout", "read_timeout",
        "send_timeout", "retries", "max_fails", "fail_timeout", "health",
    ]  # fmt: skip
    assert public_fields(HealthCheck) == [
        "path", "interval", "timeout", "healthy_threshold", "unhealthy_threshold", "expect_status",
    ]  # fmt: skip
    assert public_fields(Route) == [
        "name", "path", "host", "methods", "upstream", "static", "function", "payload", "strip_prefix",
        "rewrite", "preserve_host", "product", "plugins",
    ]  # fmt: skip
    assert public_fields(StaticResponse) == ["status", "body", "content_type", "headers"]
    assert dataclasses.is_dataclass(Config) is False  # msgspec Structs, not dataclasses


# --- issue 4: functions, function routes, triggers, AWS access keys ------------------------------

# The config from issue 4, verbatim.
ISSUE4_CONFIG = """\
[functions.hello]
code = "examples/functions/hello"   # folder with the handler and its vendored dependencies
handler = "app.handler"             # module.function for runtime "python"
runtime = "python"                  # "python" (built in, preloaded) or "provided" (runs code/bootstrap)
timeout = "3s"
memory = "128MiB"
concurrency = 8                     # most instances at once; beyond it requests wait, then are throttled
provisioned = 1                     # instances kept warm
idle_timeout = "10m"                # scale to zero after this
env = { GREETING = "hello" }

[[routes]]
path = "/hello/{name}"
methods = ["GET", "POST"]
function = "hello"
payload = "2.0"                     # API Gateway HTTP API event; "1.0" = REST API proxy event

[[triggers]]
function = "hello"
schedule = "rate(5 minutes)"        # or "cron(0 2 * * ? *)", EventBridge syntax

[[triggers]]
function = "hello"
queue = "orders"                    # a Redis stream when [store] redis is set, else an embedded durable queue
batch_size = 10
batch_window = "1s"
max_receive_count = 3               # then the message goes to the queue's dead-letter stream

[admin]
listen = "127.0.0.1:9901"
token = "${LAMBDAGATE_ADMIN_TOKEN}"
aws_keys = { AKIALAMBDAGATE = "${LAMBDAGATE_AWS_SECRET}" }   # access key id -> secret, for SigV4-signed AWS SDK calls
"""  # noqa: E501 (verbatim)
ISSUE4_ENV = {"LAMBDAGATE_ADMIN_TOKEN": "admin-token", "LAMBDAGATE_AWS_SECRET": "aws-secret-0001"}
FIXTURE_FUNCTIONS = ROOT / "tests" / "conformance" / "configs" / "functions"


def _code_folder(root: Path, relative: str, files: dict[str, str]) -> Path:
    folder = root / relative
    for name, text in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(text)
    return folder


def test_issue4_config_works_as_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The issue's block, verbatim, run where examples/functions/hello exists (as `make run` does)."""
    folder = _code_folder(tmp_path, "examples/functions/hello", {"app.py": "def handler(e, c): ...\n"})
    monkeypatch.chdir(tmp_path)
    config = parse_config(ISSUE4_CONFIG, "gateway.toml", env=ISSUE4_ENV)
    assert config.functions == {
        "hello": Function(
            code=str(folder),  # stored absolute: later chdirs cannot move it
            handler="app.handler",
            runtime="python",
            timeout=3.0,
            memory=128 * 1024**2,
            concurrency=8,
            provisioned=1,
            idle_timeout=600.0,
            env={"GREETING": "hello"},
        )
    }
    (route,) = config.routes
    assert (route.function, route.payload, route.upstream, route.static) == ("hello", "2.0", None, None)
    assert route.methods == ["GET", "POST"]
    assert config.triggers == [
        Trigger(function="hello", schedule="rate(5 minutes)"),
        Trigger(function="hello", queue="orders", batch_size=10, batch_window=1.0, max_receive_count=3),
    ]
    assert config.admin == Admin(
        listen="127.0.0.1:9901", token="admin-token", aws_keys={"AKIALAMBDAGATE": "aws-secret-0001"}
    )


def test_issue4_config_needs_its_folder_and_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert errors_of(ISSUE4_CONFIG, env={"LAMBDAGATE_ADMIN_TOKEN": "t"}) == [
        "gateway.toml: admin.aws_keys.AKIALAMBDAGATE: "
        'environment variable "LAMBDAGATE_AWS_SECRET" is not set '
        "(write ${LAMBDAGATE_AWS_SECRET:-default} to give a default)",
        'gateway.toml: functions.hello.code: no folder "examples/functions/hello" '
        "(relative paths start at the working directory)",
    ]


@pytest.mark.parametrize(
    ("handler", "files"),
    [
        ("app.handler", {"app.py": ""}),
        ("app.handler", {"app/__init__.py": ""}),
        ("app.handler", {"app/README": ""}),  # a namespace package
        ("app.handler", {"app.cpython-311-x86_64-linux-gnu.so": ""}),
        ("app.handler", {"app.pyc": ""}),
        ("src.app.main", {"src/app.py": ""}),
        ("src/app.main", {"src/app.py": ""}),  # AWS's Python runtime reads "/" as "."
        ("_private.lambda_handler", {"_private.py": ""}),
    ],
)
def test_python_handler_forms(
    handler: str, files: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _code_folder(tmp_path, "fn", files)
    monkeypatch.chdir(tmp_path)
    config = parse_config(f'[functions.f]\ncode = "fn"\nhandler = "{handler}"\n', env={})
    assert config.functions["f"].handler == handler


def test_code_paths_absolute_and_with_env(tmp_path: Path) -> None:
    folder = _code_folder(tmp_path, "fn", {"app.py": ""})
    config = parse_config(
        '[functions.a]\ncode = "${FN_DIR}"\nhandler = "app.handler"\n'
        f'[functions.b]\ncode = "{folder}/"\nhandler = "app.handler"\n',
        env={"FN_DIR": str(folder)},
    )
    assert config.functions["a"].code == str(folder)
    assert config.functions["b"].code == str(folder)  # normalised


def test_provided_runtime() -> None:
    """A provided function needs an executable bootstrap; its handler is free-form and optional."""
    provided = FIXTURE_FUNCTIONS / "provided"
    config = parse_config(
        f'[functions.p]\ncode = "{provided}"\nruntime = "provided"\n'
        f'[functions.q]\ncode = "{provided}"\nruntime = "provided"\nhandler = "function.handler"\n'
        f'[functions.r]\ncode = "{provided}"\nruntime = "provided"\nhandler = "anything goes"\n',
        env={},
    )
    assert [function.handler for function in config.functions.values()] == [
        None,
        "function.handler",
        "anything goes",
    ]
    assert {function.runtime for function in config.functions.values()} == {"provided"}


HELLO = f'[functions.hello]\ncode = "{FIXTURE_FUNCTIONS / "hello"}"\nhandler = "app.handler"\n'


def test_function_limits_at_their_bounds() -> None:
    config = parse_config(
        HELLO
        + 'timeout = "15m"\nmemory = "10GiB"\nconcurrency = 1000\nprovisioned = 1000\nidle_timeout = "1ms"\n'
        + 'max_event_age = "6h"\nretries = 0\nnetwork = false\ndead_letter = "hello.failed-1"\n'
        + f'env = {{ A = "{"x" * 4092}", B_2 = "" }}\n',  # 4096 bytes with the names
        env={},
    )
    hello = config.functions["hello"]
    assert (hello.timeout, hello.memory, hello.concurrency, hello.provisioned) == (
        900.0,
        10 * 1024**3,
        1000,
        1000,
    )
    assert (hello.idle_timeout, hello.max_event_age, hello.retries) == (0.001, 21600.0, 0)
    assert (hello.network, hello.dead_letter) == (False, "hello.failed-1")
    memory = parse_config(HELLO + 'memory = "1536MiB"\n', env={}).functions["hello"].memory
    assert memory == 1536 * 1024**2


@pytest.mark.parametrize(
    "schedule",
    [
        "rate(1 minute)",
        "rate(5 minutes)",
        "rate(1 hour)",
        "rate(7 days)",
        "rate(10 seconds)",  # lambdagate's own extension, for tests and demos
        "cron(0 2 * * ? *)",
        "cron(0/15 8-17 ? * MON-FRI *)",
        "cron(0 9 ? * 6#3 *)",
        "at(2030-01-01T09:00:00)",
    ],
)
def test_schedules(schedule: str) -> None:
    config = parse_config(HELLO + f'[[triggers]]\nfunction = "hello"\nschedule = "{schedule}"\n', env={})
    assert config.triggers == [Trigger(function="hello", schedule=schedule)]


def test_function_routes_and_triggers_together() -> None:
    config = parse_config(
        HELLO
        + """
[[routes]]
path = "/v1/{proxy+}"
function = "hello"
payload = "1.0"

[[routes]]
path = "/v2/{proxy+}"
function = "hello"

[[triggers]]
function = "hello"
queue = "orders"

[[triggers]]
function = "hello"
queue = "orders.dlq"
batch_size = 10000
batch_window = "5m"
max_receive_count = 1000

[[triggers]]
function = "hello"
schedule = "rate(1 hour)"
""",
        env={},
    )
    assert [(route.function, route.payload) for route in config.routes] == [
        ("hello", "1.0"),
        ("hello", "2.0"),
    ]
    assert config.triggers[0] == Trigger(function="hello", queue="orders")
    assert config.triggers[1] == Trigger(
        function="hello", queue="orders.dlq", batch_size=10000, batch_window=300.0, max_receive_count=1000
    )


def test_issue4_errors_are_reported_at_once_without_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)
    with pytest.raises(ValueError) as bad_rate:
        parse_schedule("rate(0 minutes)")
    errors = errors_of(
        """
[admin]
token = "t"
aws_keys = { AKIAGOOD = "good secret", akia_bad = "" }

[functions.hello]
code = "tests/conformance/configs/functions/hello"
timeout = "16m"
concurrency = 2
provisioned = 5
env = { AWS_SECRET_ACCESS_KEY = "secret-env-value", OK = "x" }

[functions.worker]
code = "nowhere"
handler = "app.handler"
runtime = "provided"

[[routes]]
path = "/a"
function = "helo"

[[routes]]
path = "/b"
static = {}
payload = "1.0"

[[triggers]]
function = "hello"
schedule = "rate(0 minutes)"
batch_window = "1s"

[[triggers]]
function = "worker"
"""
    )
    assert errors == [
        "gateway.toml: admin.aws_keys.AKIAGOOD: "
        "the secret access key must not contain spaces or control characters",
        "gateway.toml: admin.aws_keys.akia_bad: access key ids are 1 to 128 upper-case letters and digits, "
        'like "AKIAIOSFODNN7EXAMPLE"',
        "gateway.toml: admin.aws_keys.akia_bad: the secret access key must not be empty",
        "gateway.toml: routes[1].payload: only applies to routes with a function",
        'gateway.toml: functions.hello.handler: missing required key (runtime "python" needs handler = '
        '"module.function", e.g. "app.handler")',
        'gateway.toml: functions.hello.timeout: expected at most "15m" (Lambda\'s limit), got "16m"',
        "gateway.toml: functions.hello.provisioned: expected at most concurrency (2), got 5",
        "gateway.toml: functions.hello.env.AWS_SECRET_ACCESS_KEY: is reserved: the gateway sets it for every "
        "function, as Lambda does",
        'gateway.toml: functions.worker.code: no folder "nowhere" '
        "(relative paths start at the working directory)",
        f"gateway.toml: triggers[0].schedule: {bad_rate.value}",  # the schedule parser's own words
        "gateway.toml: triggers[0].batch_window: only applies to queue triggers",
        'gateway.toml: triggers[1]: needs either schedule = "rate(...)" or "cron(...)", or queue = "<name>"',
        'gateway.toml: routes[0].function: no function named "helo" (did you mean "hello"?)',
    ]
    assert not [line for line in errors if "secret-env-value" in line or "good secret" in line]


def test_sandbox_cpus_must_exist(tmp_path: Path) -> None:
    count = os.cpu_count() or 1
    path = tmp_path / "gateway.toml"
    path.write_text(f"[server]\nsandbox_cpus = [0, {count}]\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert str(caught.value) == (
        f"{path}: server.sandbox_cpus: CPU {count} does not exist on this machine (CPUs 0 to {count - 1})"
    )
    path.write_text("[server]\nsandbox_cpus = [0]\n")
    assert load_config(path).server.sandbox_cpus == [0]
