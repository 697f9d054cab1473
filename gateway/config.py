"""The gateway's configuration: one TOML file decoded into frozen msgspec Structs.

The config is built once (at start and on reload) and then only read: workers
keep a reference to the whole `Config` and swap it on reload. Durations are
stored as float seconds and sizes as int bytes, whatever units the file used.

    config = load_config("gateway.toml")      # raises ConfigError listing every problem
    config.server.header_timeout               # 10.0
    config.routes[0].display_name              # "api" or "routes[0]"
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta

from .config_decode import (
    INVALID,
    LOADER_FILLED,
    Duration,
    Issues,
    Size,
    StructDecoder,
    UnitMarker,
)
from .config_plugins import check_plugin_tables, route_plugin_configs
from .config_rules import RuleChecker, parse_listen, parse_target, route_path_params
from .consumers import BasicCredential, ConsumerConfig
from .plugins import PluginRegistry
from .units import DURATION_PATTERN, SIZE_PATTERN, format_duration, format_size

__all__ = [
    "Admin",
    "BasicCredential",
    "Config",
    "ConfigError",
    "ConsumerConfig",
    "Function",
    "HealthCheck",
    "Product",
    "Route",
    "Server",
    "StaticResponse",
    "Store",
    "Trigger",
    "Upstream",
    "config_json_schema",
    "load_config",
    "parse_config",
    "parse_listen",
    "parse_target",
    "route_path_params",
    "route_plugin_configs",
]

KiB = 1024
MiB = 1024 * KiB
GiB = 1024 * MiB


class ConfigError(Exception):
    """The config file is unusable; `errors` holds one line per problem, each naming its key."""

    def __init__(self, errors: list[str]) -> None:
        super().__init__("\n".join(errors))
        self.errors = errors


def _doc(description: str) -> Meta:
    return Meta(description=description)


class Server(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The listening side: address, worker processes, client limits and timeouts."""

    listen: Annotated[
        str, _doc('Address to listen on: "host:port", "[::1]:port", or ":port" for all interfaces.')
    ] = "127.0.0.1:8080"
    workers: Annotated[
        int, Meta(ge=0), _doc("Worker processes sharing the socket; 0 = one per CPU core.")
    ] = 1
    access_log: Annotated[
        str, _doc('Where access log lines go: "off", "stdout", "stderr" or a file path.')
    ] = "stdout"
    max_request_target: Annotated[
        Size, _doc("Longest request target (path + query) accepted; longer gets 414.")
    ] = 8 * KiB
    max_header_size: Annotated[
        Size, _doc("Largest request head (request line + headers) accepted; larger gets 431.")
    ] = 16 * KiB
    max_header_fields: Annotated[
        int, Meta(ge=1, le=256), _doc("Most header fields in one request (1 to 256); more gets 431.")
    ] = 100
    max_body_size: Annotated[Size, _doc("Largest request body accepted; larger gets 413. 0 = unlimited.")] = (
        GiB
    )
    header_timeout: Annotated[Duration, _doc("The whole request head must arrive within this, else 408.")] = (
        10.0
    )
    body_timeout: Annotated[Duration, _doc("Longest gap between two reads of a request body, else 408.")] = (
        60.0
    )
    send_timeout: Annotated[
        Duration, _doc("Longest time a client may take no response bytes while we have some to send.")
    ] = 60.0
    keepalive_timeout: Annotated[Duration, _doc("An idle client connection is closed after this.")] = 75.0
    keepalive_requests: Annotated[
        int, Meta(ge=0), _doc("Requests served on one client connection before closing it; 0 = unlimited.")
    ] = 0
    drain_timeout: Annotated[
        Duration, _doc("On SIGTERM, in-flight requests get this long to finish before workers exit.")
    ] = 30.0
    sandbox_cpus: Annotated[
        list[Annotated[int, Meta(ge=0)]] | None,
        _doc(
            "CPUs the function sandboxes run on (e.g. [1] to keep them off the CPU of the worker, "
            "as nginx's worker_cpu_affinity keeps a proxy off its upstream's); absent = the workers' CPUs."
        ),
    ] = None


class HealthCheck(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Active health checks: a GET to each target every `interval`."""

    path: Annotated[str, _doc("Path requested on each target.")] = "/health"
    interval: Annotated[Duration, _doc("Time between two checks of one target.")] = 5.0
    timeout: Annotated[Duration, _doc("A check not answered within this counts as failed.")] = 1.0
    healthy_threshold: Annotated[
        int, Meta(ge=1), _doc("Consecutive passed checks that bring an ejected target back.")
    ] = 2
    unhealthy_threshold: Annotated[
        int, Meta(ge=1), _doc("Consecutive failed checks that eject a target.")
    ] = 2
    expect_status: Annotated[
        list[Annotated[int, Meta(ge=100, le=599)]],
        _doc("Status codes that count as healthy; empty = any 200-399."),
    ] = []


class Upstream(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A named group of targets that routes proxy to."""

    targets: Annotated[
        list[str], Meta(min_length=1), _doc('Target addresses, each "host:port" or "[ipv6]:port". Required.')
    ]
    balance: Annotated[
        Literal["round_robin", "least_conn", "hash"],
        _doc(
            "How a target is picked: round_robin, least_conn (fewest in-flight requests) "
            "or hash (by hash_on)."
        ),
    ] = "round_robin"
    hash_on: Annotated[
        str | None,
        _doc(
            'What balance = "hash" hashes: "header:NAME", "cookie:NAME" or "ip". '
            'Required iff balance = "hash".'
        ),
    ] = None
    keepalive: Annotated[
        int, Meta(ge=0), _doc("Idle pooled connections kept per target; 0 = no pooling.")
    ] = 64
    keepalive_timeout: Annotated[Duration, _doc("An idle pooled connection is closed after this.")] = 60.0
    connect_timeout: Annotated[
        Duration, _doc("Connecting to a target must finish within this, else 502.")
    ] = 1.0
    read_timeout: Annotated[Duration, _doc("Longest gap between two reads from the target, else 504.")] = 30.0
    send_timeout: Annotated[Duration, _doc("Longest gap between two writes to the target.")] = 30.0
    retries: Annotated[
        int,
        Meta(ge=0),
        _doc("Retries of an idempotent request on another target when connecting fails."),
    ] = 1
    max_fails: Annotated[
        int, Meta(ge=0), _doc("Passive health: consecutive failures that eject a target; 0 = off.")
    ] = 3
    fail_timeout: Annotated[Duration, _doc("Passive health: how long an ejected target stays out.")] = 10.0
    health: Annotated[HealthCheck | None, _doc("Active health checks; absent = none.")] = None


class StaticResponse(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A fixed response answered by the gateway itself (health checks, redirects, stubs)."""

    status: Annotated[int, Meta(ge=200, le=599), _doc("Status code, 200 to 599.")] = 200
    body: Annotated[str, _doc("Response body.")] = ""
    content_type: Annotated[str, _doc("Content-Type of the body.")] = "text/plain; charset=utf-8"
    headers: Annotated[
        dict[str, str], _doc("Extra response headers (Content-Length and framing are set by the gateway).")
    ] = {}


class Route(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Which requests go where: a path pattern (plus optional host and methods) and one handler."""

    name: Annotated[str | None, _doc('Name used in logs and metrics; defaults to "routes[<index>]".')] = None
    path: Annotated[
        str,
        _doc(
            'Path pattern: "/exact", "/users/{id}", "/files/{proxy+}" (greedy, last) or "$default". Required.'
        ),
    ]
    host: Annotated[
        str | None, _doc('Host to match: exact "api.example.com" or wildcard "*.example.com"; absent = any.')
    ] = None
    methods: Annotated[list[str] | None, _doc('Methods to match, e.g. ["GET", "POST"]; absent = any.')] = None
    upstream: Annotated[str | None, _doc("Name of the [upstreams] entry to proxy to.")] = None
    static: Annotated[StaticResponse | None, _doc("Answer with a fixed response instead of proxying.")] = None
    function: Annotated[
        str | None, _doc("Name of the [functions] entry that answers the route (an API Gateway event).")
    ] = None
    payload: Annotated[
        Literal["1.0", "2.0"],
        _doc(
            'Event format for a function route: "2.0" = API Gateway HTTP API, '
            '"1.0" = REST API proxy integration.'
        ),
    ] = "2.0"
    strip_prefix: Annotated[
        str | None, _doc('Removed from the start of the path before proxying, e.g. "/api".')
    ] = None
    rewrite: Annotated[
        str | None, _doc('Upstream path template; path parameters are substituted, e.g. "/v2/{proxy}".')
    ] = None
    preserve_host: Annotated[
        bool, _doc("Send the client's Host header upstream instead of the target's host:port.")
    ] = False
    product: Annotated[
        str | None,
        _doc("Name of the [products] entry the route belongs to (subscriptions are per product)."),
    ] = None
    plugins: Annotated[
        dict[str, dict[str, Any]],
        _doc(
            "Plugins enabled on this route, by name, each with its config table; "
            "keys override those of the global [plugins] table of the same name."
        ),
    ] = {}
    # Position in the routes array; set by the loader, not read from TOML.
    index: Annotated[int, LOADER_FILLED] = -1

    @property
    def display_name(self) -> str:
        """The name for logs: `name`, or ``routes[<index>]`` when the route has none."""
        return self.name if self.name is not None else f"routes[{self.index}]"


class Store(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Where state lives: embedded (memory + a SQLite file) unless a Redis server is named."""

    redis: Annotated[
        str | None,
        _doc(
            'Redis URL, "redis://host:6379/0", "rediss://host:6380/0" (TLS) or "unix:///path/redis.sock"; '
            "rate limits, cache and state are then shared by every gateway using it. Absent = embedded."
        ),
    ] = None
    path: Annotated[
        str,
        _doc(
            "SQLite file for state that must survive restarts (consumers, credentials, subscriptions) "
            "when redis is not set; relative paths are relative to the working directory."
        ),
    ] = "lambdagate.db"


class Admin(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The admin API: a separate listener for consumers, subscriptions, cache purge and the config."""

    listen: Annotated[
        str,
        _doc("Address of the admin listener, like server.listen (and not the same); keep it private."),
    ] = "127.0.0.1:9901"
    token: Annotated[
        str,
        _doc(
            'Bearer token every admin request must send; write "${VAR}" to keep it out of the file. Required.'
        ),
    ]
    aws_keys: Annotated[
        dict[str, str],
        _doc(
            "AWS access key id -> secret access key, accepted on AWS Signature V4-signed requests "
            '(AWS SDKs such as boto3); write "${VAR}" for the secrets.'
        ),
    ] = {}


class Function(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A Lambda-style function run by the gateway itself, in sandboxed warm instances."""

    code: Annotated[
        str,
        _doc(
            "Folder holding the handler and its vendored dependencies; relative to the working "
            "directory, stored absolute. Required."
        ),
    ]
    handler: Annotated[
        str | None,
        _doc(
            'For runtime "python": "module.function" (e.g. "app.handler"), required. For "provided": '
            "passed to the bootstrap as _HANDLER, optional."
        ),
    ] = None
    runtime: Annotated[
        Literal["python", "provided"],
        _doc('"python": the built-in runtime (preloaded, forked); "provided": runs <code>/bootstrap.'),
    ] = "python"
    timeout: Annotated[
        Duration, _doc('An invocation running longer is killed ("Task timed out"); at most 15m.')
    ] = 3.0
    memory: Annotated[Size, _doc("Memory of one instance, 128MiB to 10GiB in whole MiB.")] = 128 * MiB
    concurrency: Annotated[
        int,
        Meta(ge=1, le=1000),
        _doc("Most instances at once; beyond it requests wait in a bounded queue, then are throttled."),
    ] = 10
    provisioned: Annotated[
        int, Meta(ge=0), _doc("Instances kept warm even when idle; at most concurrency.")
    ] = 0
    idle_timeout: Annotated[
        Duration, _doc("An instance idle this long is stopped (down to provisioned, else zero).")
    ] = 600.0
    env: Annotated[
        dict[str, str],
        _doc("Environment variables of the function (AWS's reserved names are refused); 4KiB at most."),
    ] = {}
    network: Annotated[
        bool, _doc("false = instances get no network (their own network namespace, where the kernel allows).")
    ] = True
    max_event_age: Annotated[
        Duration,
        _doc("An asynchronous event not run within this is dropped to the dead-letter queue; 6h at most."),
    ] = 6 * 3600.0
    retries: Annotated[
        int, Meta(ge=0, le=2), _doc("Retries of a failed asynchronous invocation (0 to 2), with back-off.")
    ] = 2
    dead_letter: Annotated[
        str | None,
        _doc("Queue that receives asynchronous events that failed for good; absent = the function's own."),
    ] = None
    system_log_level: Annotated[
        Literal["DEBUG", "INFO", "WARN"],
        _doc(
            "As AWS's LoggingConfig.SystemLogLevel: WARN leaves the platform's START, END and REPORT "
            "lines out of the gateway's log (X-Amz-Log-Result tails keep them; timeouts and crashes "
            "are logged at any level)."
        ),
    ] = "INFO"


class Trigger(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Invokes a function on a schedule or with batches of messages from a queue."""

    function: Annotated[str, _doc("Name of the [functions] entry invoked. Required.")]
    schedule: Annotated[
        str | None,
        _doc('An EventBridge schedule: "rate(5 minutes)" or "cron(0 2 * * ? *)" (UTC).'),
    ] = None
    queue: Annotated[
        str | None,
        _doc(
            "Name of the queue whose messages are delivered: a Redis stream when [store] redis is set, "
            "else an embedded durable queue."
        ),
    ] = None
    batch_size: Annotated[
        int, Meta(ge=1, le=10000), _doc("Queue triggers: most messages in one invocation (1 to 10000).")
    ] = 10
    batch_window: Annotated[
        Duration,
        _doc("Queue triggers: how long to wait to fill a batch; 0 = send what is there; 5m at most."),
    ] = 0.0
    max_receive_count: Annotated[
        int,
        Meta(ge=1, le=1000),
        _doc("Queue triggers: failed deliveries after which a message goes to the dead-letter stream."),
    ] = 3


class Product(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """An API product: routes grouped for subscriptions (routes join it with `product`)."""

    subscription: Annotated[
        Literal["open", "approval"],
        _doc(
            '"open": any caller may use it; "approval": only consumers whose subscription '
            "an admin approved (others get 403)."
        ),
    ] = "open"
    description: Annotated[str, _doc("What the product offers, shown in the admin API.")] = ""


class Config(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A whole lambdagate config file."""

    server: Annotated[Server, _doc("The listening side.")] = msgspec.field(default_factory=Server)
    store: Annotated[Store, _doc("Where rate-limit, cache and consumer state lives.")] = msgspec.field(
        default_factory=Store
    )
    admin: Annotated[Admin | None, _doc("The admin API listener; absent = no admin API.")] = None
    plugins: Annotated[
        dict[str, dict[str, Any]],
        _doc("Plugins enabled on every route, by name, each with its config table."),
    ] = {}
    consumers: Annotated[
        dict[str, ConsumerConfig], _doc("Known callers by name, with their credentials and groups.")
    ] = {}
    products: Annotated[dict[str, Product], _doc("API products that routes are grouped into.")] = {}
    upstreams: Annotated[dict[str, Upstream], _doc("Named upstream groups.")] = {}
    routes: Annotated[
        list[Route], _doc("Routes: which requests go to which upstream, static response or function.")
    ] = []
    functions: Annotated[dict[str, Function], _doc("Functions the gateway runs, by name.")] = {}
    triggers: Annotated[
        list[Trigger], _doc("Schedules and queues that invoke functions without an HTTP request.")
    ] = []
    # The file the config was loaded from, as the user wrote it; set by the loader, not read from TOML.
    source: Annotated[str, LOADER_FILLED] = "<string>"


# --- loading -------------------------------------------------------------------------------------


def load_config(
    path: str | os.PathLike[str],
    env: Mapping[str, str] | None = None,
    registry: PluginRegistry | None = None,
) -> Config:
    """Read and validate a config file; raise ConfigError listing every problem found.

    Plugin tables are checked against `registry` (default: the built-in and installed plugins).
    """
    source = os.fspath(path)
    try:
        with open(source, "rb") as file:
            data = file.read()
    except OSError as exc:
        raise ConfigError([f"{source}: cannot read the config file: {exc.strerror or exc}"]) from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError([f"{source}: the config file is not UTF-8 (byte {exc.start})"]) from None
    return parse_config(text, source, env, registry)


# tomllib ends its messages with "(at line L, column C)" or "(at end of document)".
_TOML_POSITION = re.compile(r"(?s)(.*) \(at (?:line (\d+), column (\d+)|(end of document))\)")


def _describe_toml_error(message: str) -> str:
    """ "Invalid value (at line 2, column 5)" -> "line 2, column 5: invalid TOML: invalid value"."""
    match = _TOML_POSITION.fullmatch(message)
    if match is None:
        return f"invalid TOML: {message}"
    reason, line, column, at_end = match.groups()
    where = "end of file" if at_end else f"line {line}, column {column}"
    return f"{where}: invalid TOML: {reason[:1].lower()}{reason[1:]}"


def parse_config(
    text: str,
    source: str = "<string>",
    env: Mapping[str, str] | None = None,
    registry: PluginRegistry | None = None,
) -> Config:
    """Validate config text; `source` names it in error lines. `env` defaults to os.environ.

    Plugin tables are checked against `registry` (default: the built-in and installed plugins,
    loaded only when the text enables a plugin).
    """
    try:
        document = msgspec.toml.decode(text)
    except msgspec.DecodeError as exc:
        raise ConfigError([f"{source}: {_describe_toml_error(str(exc))}"]) from None

    issues = Issues()
    rules = RuleChecker()
    decoder = StructDecoder(issues, rules.validators(), os.environ if env is None else env)
    config = decoder.decode(Config, document, "")
    rules.check_references(
        issues,
        upstreams=_table_keys(document, "upstreams"),
        products=_table_keys(document, "products"),
        consumers=_table_keys(document, "consumers"),
        functions=_table_keys(document, "functions"),
    )
    if rules.plugin_tables_complete:
        check_plugin_tables(rules.global_plugins, rules.route_plugins, issues, registry)
    if issues or config is INVALID:
        raise ConfigError(issues.lines(source))
    routes = [msgspec.structs.replace(route, index=index) for index, route in enumerate(config.routes)]
    result: Config = msgspec.structs.replace(config, routes=routes, source=source)
    return result


def _table_keys(document: dict[str, Any], name: str) -> list[str]:
    """The names defined under [name.*], whatever their tables contain (for reference checks)."""
    table = document.get(name)
    return list(table) if isinstance(table, dict) else []


# --- JSON Schema ---------------------------------------------------------------------------------


def config_json_schema() -> dict[str, Any]:
    """A JSON Schema for the config file (durations and sizes as strings with patterns)."""
    schema = msgspec.json.schema(Config)
    definitions: dict[str, Any] = schema["$defs"]
    for struct in _SCHEMA_STRUCTS:
        properties: dict[str, Any] = definitions[struct.__name__]["properties"]
        for info in msgspec.structs.fields(struct):
            metadata = getattr(info.type, "__metadata__", ())
            if LOADER_FILLED in metadata:
                del properties[info.encode_name]
                continue
            unit = next((m for m in metadata if isinstance(m, UnitMarker)), None)
            if unit is not None:
                properties[info.encode_name] = _unit_schema(unit, properties[info.encode_name], info.default)
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "lambdagate configuration",
        **schema,
    }


_SCHEMA_STRUCTS: tuple[type[msgspec.Struct], ...] = (
    Config,
    Server,
    Store,
    Admin,
    ConsumerConfig,
    BasicCredential,
    Product,
    Upstream,
    HealthCheck,
    StaticResponse,
    Route,
    Function,
    Trigger,
)


def _unit_schema(unit: UnitMarker, generated: dict[str, Any], default: Any) -> dict[str, Any]:
    described = {key: value for key, value in generated.items() if key == "description"}
    if unit.kind == "duration":
        unit_schema: dict[str, Any] = {"type": "string", "pattern": DURATION_PATTERN}
        if default is not msgspec.NODEFAULT:
            unit_schema["default"] = format_duration(default)
    else:
        unit_schema = {
            "anyOf": [{"type": "string", "pattern": SIZE_PATTERN}, {"type": "integer", "minimum": 0}],
        }
        if default is not msgspec.NODEFAULT:
            unit_schema["default"] = format_size(default)
    return {**unit_schema, **described}
