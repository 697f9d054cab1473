"""gateway.config: loading, defaults, env interpolation, every error message shape, JSON Schema."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.config import (
    Config,
    ConfigError,
    HealthCheck,
    Route,
    Server,
    StaticResponse,
    Upstream,
    config_json_schema,
    load_config,
    parse_config,
    parse_listen,
    parse_target,
    route_path_params,
)

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "gateway.toml"
DOCS = ROOT / "docs" / "config.md"
STRUCTS = (Config, Server, Upstream, HealthCheck, StaticResponse, Route)
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


def errors_of(text: str, env: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse_config(text, "gateway.toml", env={} if env is None else env)
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
    assert uncommented.count("\n#") < text.count("\n#") - 20  # the rewrite really activated lines
    expected = load_config(EXAMPLE)
    backend = msgspec.structs.replace(expected.upstreams["backend"], health=HealthCheck())
    expected = msgspec.structs.replace(expected, upstreams={"backend": backend})
    assert parse_config(uncommented, str(EXAMPLE), env={}) == expected


@pytest.mark.parametrize("struct", STRUCTS)
def test_every_key_is_in_the_example_and_the_docs(struct: type[msgspec.Struct]) -> None:
    example, docs = EXAMPLE.read_text(), DOCS.read_text()
    for name in public_fields(struct):
        # a key line, an inline-table key, or (for Config's fields) a table header
        assert re.search(rf"^#?{name} =|[{{ ,]{name} =|^#?\[+([a-z.]+\.)?{name}[.\]]", example, re.M), (
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
def test_error_line(case: ErrorCase) -> None:
    """Each config in the corpus fails with exactly its one expected line."""
    assert errors_of(case.config) == [case.expect]


def test_docs_error_examples_are_real(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every example line in docs/config.md's error table is a line the loader really prints."""
    table = DOCS.read_text().split("## Error messages", 1)[1]
    documented = re.findall(r"^\| [^|]+ \| `(gateway\.toml: .*)` \|$", table, re.M)
    assert len(documented) >= 15
    produced = {case.expect for case in ERROR_CASES}  # each checked by test_error_line
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
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError) as caught:
        load_config("gateway.toml")
    produced.update(caught.value.errors)
    missing = [line for line in documented if line not in produced]
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
    assert public_fields(Config) == ["server", "upstreams", "routes"]
    assert public_fields(Server) == [
        "listen", "workers", "access_log", "max_request_target", "max_header_size", "max_header_fields",
        "max_body_size", "header_timeout", "body_timeout", "send_timeout", "keepalive_timeout",
        "keepalive_requests", "drain_timeout",
    ]  # fmt: skip
    assert public_fields(Upstream) == [
        "targets", "balance", "hash_on", "keepalive", "keepalive_timeout", "connect_timeout", "read_timeout",
        "send_timeout", "retries", "max_fails", "fail_timeout", "health",
    ]  # fmt: skip
    assert public_fields(HealthCheck) == [
        "path", "interval", "timeout", "healthy_threshold", "unhealthy_threshold", "expect_status",
    ]  # fmt: skip
    assert public_fields(Route) == [
        "name", "path", "host", "methods", "upstream", "static", "strip_prefix", "rewrite", "preserve_host",
    ]  # fmt: skip
    assert public_fields(StaticResponse) == ["status", "body", "content_type", "headers"]
    assert dataclasses.is_dataclass(Config) is False  # msgspec Structs, not dataclasses
