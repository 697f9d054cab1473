"""The plugin layer: what a plugin declares, the request it sees, and per-route phase chains.

A plugin is a class with a name, a version, an integer priority, a msgspec config Struct
(a description on every field) and one or more phase methods:

    access(request)            -> Response | None  (or an awaitable of it): auth, ACL, limits
    rewrite(request)           -> None (or an awaitable): change what goes upstream
    response(request, resp)    -> None: change the response head before it reaches the client
    log(request, resp)         -> None: after the response has been sent

Only the phases a class overrides are registered, so a phase no plugin implements costs a
route nothing. Chains run by priority (higher first; ties by name). Each plugin instance is
built once per route and worker from its validated config; per-request state lives on the
Request (``request.ctx``), never on the plugin.

The request object is phase-aware: calls that make no sense in the current phase (changing
request headers once the request has gone upstream, reading the response during access)
raise PhaseError instead of silently doing nothing.
"""

from __future__ import annotations

import enum
import inspect
from collections.abc import Awaitable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import Any, ClassVar

import msgspec

__all__ = [
    "ENTRY_POINT_GROUP",
    "Consumer",
    "Headers",
    "Phase",
    "PhaseError",
    "Plugin",
    "PluginChain",
    "PluginConfigError",
    "PluginRegistry",
    "Request",
    "Response",
    "ResponseHead",
    "default_registry",
]

ENTRY_POINT_GROUP = "lambdagate.plugins"


class Phase(enum.StrEnum):
    ACCESS = "access"
    REWRITE = "rewrite"
    RESPONSE = "response"
    LOG = "log"


PHASES: tuple[Phase, ...] = (Phase.ACCESS, Phase.REWRITE, Phase.RESPONSE, Phase.LOG)


class PhaseError(RuntimeError):
    """A plugin API call made in a phase that does not allow it."""


class PluginConfigError(ValueError):
    """A plugin or its configuration is invalid; `errors` are (key path, message) pairs."""

    def __init__(self, errors: list[tuple[str, str]]) -> None:
        super().__init__("; ".join(f"{path}: {message}" if path else message for path, message in errors))
        self.errors = errors


# --- request and response views --------------------------------------------------------------


class Headers:
    """An ordered multi-map of header fields with case-insensitive names.

    ``writable`` is consulted before every change, so a view handed out in a phase that must not
    change it refuses (PhaseError) instead of changing a copy nobody reads.
    """

    __slots__ = ("_fields", "_guard")

    def __init__(self, fields: Iterable[tuple[str, str]] = (), guard: Any = None) -> None:
        self._fields: list[tuple[str, str]] = list(fields)
        self._guard = guard  # callable(action: str) raising PhaseError, or None

    def _check(self, action: str) -> None:
        if self._guard is not None:
            self._guard(action)

    def get(self, name: str, default: str | None = None) -> str | None:
        lower = name.lower()
        for key, value in self._fields:
            if key.lower() == lower:
                return value
        return default

    def get_all(self, name: str) -> list[str]:
        lower = name.lower()
        return [value for key, value in self._fields if key.lower() == lower]

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self.get(name) is not None

    def __iter__(self) -> Iterator[tuple[str, str]]:
        return iter(list(self._fields))

    def __len__(self) -> int:
        return len(self._fields)

    def items(self) -> list[tuple[str, str]]:
        return list(self._fields)

    def set(self, name: str, value: str) -> None:
        """Replace every field of that name with one."""
        self._check(f"set header {name}")
        _check_field(name, value)
        lower = name.lower()
        self._fields = [(k, v) for k, v in self._fields if k.lower() != lower]
        self._fields.append((name, value))

    def add(self, name: str, value: str) -> None:
        self._check(f"add header {name}")
        _check_field(name, value)
        self._fields.append((name, value))

    def remove(self, name: str) -> None:
        self._check(f"remove header {name}")
        lower = name.lower()
        self._fields = [(k, v) for k, v in self._fields if k.lower() != lower]

    def rename(self, old: str, new: str) -> None:
        self._check(f"rename header {old}")
        _check_field(new, "")
        lower = old.lower()
        self._fields = [((new if k.lower() == lower else k), v) for k, v in self._fields]


_TOKEN_CHARS = frozenset("!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")


def _check_field(name: str, value: str) -> None:
    # A plugin must not be able to smuggle a second header or message through a value.
    if not name or any(c not in _TOKEN_CHARS for c in name):
        raise ValueError(f"invalid header name {name!r}")
    if any(c in value for c in "\r\n\0"):
        raise ValueError(f"invalid header value for {name}: CR, LF and NUL are not allowed")


@dataclass(frozen=True)
class Consumer:
    """An authenticated caller, as configured under [consumers.NAME] or created in the admin API."""

    name: str
    groups: tuple[str, ...] = ()
    metadata: Mapping[str, str] = field(default_factory=dict)


class _PhaseCell:
    """The phase a request is in, shared by the request and its guards."""

    __slots__ = ("phase",)

    def __init__(self, phase: Phase) -> None:
        self.phase = phase


def _check_request_phase(phase: Phase, action: str) -> None:
    if phase is not Phase.ACCESS and phase is not Phase.REWRITE:
        raise PhaseError(f"cannot {action} of the request in the {phase} phase")


class _RequestGuard:
    """The request headers' guard: writable in ACCESS and REWRITE."""

    __slots__ = ("_cell",)

    def __init__(self, cell: _PhaseCell) -> None:
        self._cell = cell

    def __call__(self, action: str) -> None:
        _check_request_phase(self._cell.phase, action)


class _ResponseGuard:
    """The response headers' guard: writable in RESPONSE."""

    __slots__ = ("_cell",)

    def __init__(self, cell: _PhaseCell) -> None:
        self._cell = cell

    def __call__(self, action: str) -> None:
        phase = self._cell.phase
        if phase is not Phase.RESPONSE:
            raise PhaseError(f"cannot {action} of the response in the {phase} phase")


class Request:
    """The client request as plugins see it. Mutable in ACCESS and REWRITE only."""

    def __init__(
        self,
        *,
        method: str,
        path: str,
        query: str,
        headers: Iterable[tuple[str, str]],
        client_ip: str,
        route: str,
        request_id: str,
        http_version: str = "1.1",
        path_params: Mapping[str, str] | None = None,
        content_length: int | None = None,
    ) -> None:
        # The phase lives in a cell the headers' guard shares, not behind a bound method of the
        # request: request -> headers -> guard -> request would be a reference cycle per
        # request, garbage only the cyclic collector frees (it took ~4 % of a busy worker).
        self._phase = _PhaseCell(Phase.ACCESS)
        self.method = method
        self._path = path
        self._query = query
        self.headers = Headers(headers, _RequestGuard(self._phase))
        self.client_ip = client_ip
        self.route = route
        self.request_id = request_id
        self.http_version = http_version
        self.path_params: Mapping[str, str] = path_params or {}
        self.content_length = content_length
        self.consumer: Consumer | None = None
        self.ctx: dict[str, Any] = {}  # per-request scratch space shared by the route's plugins
        self.path_changed = False

    @property
    def phase(self) -> Phase:
        return self._phase.phase

    @phase.setter
    def phase(self, value: Phase) -> None:
        self._phase.phase = value

    def _guard_request(self, action: str) -> None:
        _check_request_phase(self._phase.phase, action)

    @property
    def path(self) -> str:
        return self._path

    @path.setter
    def path(self, value: str) -> None:
        self._guard_request("change the path")
        if not value.startswith("/") or any(c in value for c in " \r\n\0?#"):
            raise ValueError(f"invalid path {value!r}")
        self._path = value
        self.path_changed = True

    @property
    def query(self) -> str:
        return self._query

    @query.setter
    def query(self, value: str) -> None:
        self._guard_request("change the query")
        if any(c in value for c in " \r\n\0#"):
            raise ValueError(f"invalid query {value!r}")
        self._query = value
        self.path_changed = True

    def authenticate(self, consumer: Consumer) -> None:
        """Record who is calling (auth plugins); later plugins and the upstream see it."""
        if self.phase is not Phase.ACCESS:
            raise PhaseError(f"cannot authenticate in the {self.phase} phase")
        self.consumer = consumer


class ResponseHead:
    """The response status and headers; mutable in the RESPONSE phase only."""

    def __init__(self, status: int, headers: Iterable[tuple[str, str]], request: Request) -> None:
        self.status = status
        self.headers = Headers(headers, _ResponseGuard(request._phase))  # no cycle, as Request's
        self.bytes_sent = 0


@dataclass
class Response:
    """A complete response a plugin answers with instead of the route's handler."""

    status: int
    body: bytes = b""
    headers: list[tuple[str, str]] = field(default_factory=list)

    @classmethod
    def json(cls, status: int, value: Any, headers: Iterable[tuple[str, str]] = ()) -> Response:
        return cls(status, msgspec.json.encode(value), [("Content-Type", "application/json"), *headers])

    @classmethod
    def error(cls, status: int, code: str, message: str, headers: Iterable[tuple[str, str]] = ()) -> Response:
        """The gateway's error shape: {"error": {"status", "code", "message"}}."""
        return cls.json(status, {"error": {"status": status, "code": code, "message": message}}, headers)


# --- plugins -----------------------------------------------------------------------------------


class Plugin:
    """Base class of plugins; see the module docstring for the contract."""

    name: ClassVar[str]
    version: ClassVar[str]
    priority: ClassVar[int]
    Config: ClassVar[type[msgspec.Struct]]

    def __init__(self, config: Any) -> None:
        self.config = config

    # Phase methods: override the ones the plugin needs.
    def access(self, request: Request) -> Response | Awaitable[Response | None] | None:
        return None

    def rewrite(self, request: Request) -> Awaitable[None] | None:
        return None

    def response(self, request: Request, response: ResponseHead) -> None:
        return None

    def log(self, request: Request, response: ResponseHead) -> None:
        return None

    @classmethod
    def phases(cls) -> tuple[Phase, ...]:
        """The phases this class implements (overrides), in execution order."""
        return tuple(
            phase for phase in PHASES if getattr(cls, phase.value) is not getattr(Plugin, phase.value)
        )


def validate_plugin_class(cls: type[Plugin]) -> None:
    """Refuse a plugin class that does not declare what the layer needs."""
    problems: list[tuple[str, str]] = []
    label = getattr(cls, "name", cls.__qualname__)
    if not isinstance(getattr(cls, "name", None), str) or not cls.name:
        problems.append(("", f"plugin {cls.__qualname__} has no name"))
    if not isinstance(getattr(cls, "version", None), str) or not cls.version:
        problems.append(("", f"plugin {label} has no version"))
    priority = getattr(cls, "priority", None)
    if not isinstance(priority, int) or isinstance(priority, bool):
        problems.append(("", f"plugin {label} has no integer priority"))
    config = getattr(cls, "Config", None)
    if not (isinstance(config, type) and issubclass(config, msgspec.Struct)):
        problems.append(("", f"plugin {label} has no msgspec Config struct"))
    else:
        for info in msgspec.structs.fields(config):
            metadata = getattr(info.type, "__metadata__", ())
            if not any(isinstance(m, msgspec.Meta) and m.description for m in metadata):
                problems.append(("", f"plugin {label}: config field {info.name!r} has no description"))
    if not cls.phases():
        problems.append(("", f"plugin {label} implements no phase"))
    for phase in (Phase.RESPONSE, Phase.LOG):
        if inspect.iscoroutinefunction(getattr(cls, phase.value)):
            problems.append(("", f"plugin {label}: the {phase} phase must be synchronous"))
    if problems:
        raise PluginConfigError(problems)


class PluginRegistry:
    """Plugin classes by name: the built-ins in gateway.plugins plus entry points."""

    def __init__(self, classes: Iterable[type[Plugin]] = ()) -> None:
        self._classes: dict[str, type[Plugin]] = {}
        for cls in classes:
            self.register(cls)

    def register(self, cls: type[Plugin]) -> None:
        validate_plugin_class(cls)
        existing = self._classes.get(cls.name)
        if existing is not None and existing is not cls:
            raise PluginConfigError([("", f"two plugins are named {cls.name!r}")])
        self._classes[cls.name] = cls

    def names(self) -> list[str]:
        return sorted(self._classes)

    def get(self, name: str) -> type[Plugin] | None:
        return self._classes.get(name)

    def decode_config(self, name: str, table: Mapping[str, Any]) -> msgspec.Struct:
        """Validate one plugin's config table; PluginConfigError with key paths relative to it."""
        cls = self._classes.get(name)
        if cls is None:
            raise PluginConfigError([("", f"unknown plugin {name!r} (known: {', '.join(self.names())})")])
        try:
            config: msgspec.Struct = msgspec.convert(dict(table), cls.Config, strict=False)
        except msgspec.ValidationError as exc:
            raise PluginConfigError([_validation_error(exc)]) from None
        return config

    def merged_config(
        self, name: str, global_table: Mapping[str, Any] | None, route_table: Mapping[str, Any] | None
    ) -> msgspec.Struct:
        """A route's config of a plugin: the global table with the route's keys on top."""
        merged = dict(global_table or {})
        merged.update(route_table or {})
        return self.decode_config(name, merged)


def _validation_error(exc: msgspec.ValidationError) -> tuple[str, str]:
    # msgspec: "Expected `int`, got `str` - at `$.burst`" -> ("burst", "expected `int`, got `str`")
    text = str(exc)
    message, _, where = text.rpartition(" - at `")
    if not message:
        return "", text[:1].lower() + text[1:]
    path = where.rstrip("`").removeprefix("$").removeprefix(".")
    return path, message[:1].lower() + message[1:]


def builtin_plugin_classes() -> list[type[Plugin]]:
    """Every Plugin subclass exported as PLUGIN by a module of gateway.plugins."""
    import importlib
    import pkgutil

    import gateway.plugins as package  # this module's own package: the built-in plugins

    classes: list[type[Plugin]] = []
    for module_info in sorted(pkgutil.iter_modules(package.__path__), key=lambda m: m.name):
        if module_info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{package.__name__}.{module_info.name}")
        plugin = getattr(module, "PLUGIN", None)
        if isinstance(plugin, type) and issubclass(plugin, Plugin):
            classes.append(plugin)
    return classes


def entry_point_plugin_classes() -> list[type[Plugin]]:
    classes: list[type[Plugin]] = []
    for entry in entry_points(group=ENTRY_POINT_GROUP):
        plugin = entry.load()
        if not (isinstance(plugin, type) and issubclass(plugin, Plugin)):
            raise PluginConfigError([("", f"entry point {entry.name!r} does not name a Plugin subclass")])
        classes.append(plugin)
    return classes


_default: PluginRegistry | None = None


def default_registry() -> PluginRegistry:
    """Built-in and installed plugins (loaded once per process)."""
    global _default
    if _default is None:
        _default = PluginRegistry([*builtin_plugin_classes(), *entry_point_plugin_classes()])
    return _default


# --- per-route chains --------------------------------------------------------------------------


class PluginChain:
    """One route's plugins, split by phase once, in execution order.

    Each tuple holds only the plugins that implement that phase; the engine skips a phase whose
    tuple is empty without creating anything.
    """

    def __init__(self, plugins: Iterable[Plugin]) -> None:
        ordered = sorted(plugins, key=lambda p: (-type(p).priority, type(p).name))
        self.plugins: tuple[Plugin, ...] = tuple(ordered)
        self.access: tuple[Plugin, ...] = tuple(p for p in ordered if Phase.ACCESS in type(p).phases())
        self.rewrite: tuple[Plugin, ...] = tuple(p for p in ordered if Phase.REWRITE in type(p).phases())
        self.response: tuple[Plugin, ...] = tuple(p for p in ordered if Phase.RESPONSE in type(p).phases())
        self.log: tuple[Plugin, ...] = tuple(p for p in ordered if Phase.LOG in type(p).phases())

    def __bool__(self) -> bool:
        return bool(self.plugins)

    @property
    def needs_request_view(self) -> bool:
        """Whether the engine must build a Request (some phase has a plugin)."""
        return bool(self.plugins)

    async def _finish_access(
        self, request: Request, pending: Awaitable[Response | None], rest: tuple[Plugin, ...]
    ) -> Response | None:
        response = await pending
        if response is not None:
            return response
        result = self.run_access(request, rest)
        if inspect.isawaitable(result):
            return await result
        return result

    def run_access(
        self, request: Request, plugins: tuple[Plugin, ...] | None = None
    ) -> Response | Awaitable[Response | None] | None:
        """Run access then rewrite; synchronous unless a plugin returns an awaitable."""
        chain = self.access if plugins is None else plugins
        request.phase = Phase.ACCESS
        for index, plugin in enumerate(chain):
            result = plugin.access(request)
            if result is None:
                continue
            if isinstance(result, Response):
                return result
            return self._finish_access(request, result, chain[index + 1 :])
        return self.run_rewrite(request)

    def run_rewrite(self, request: Request, start: int = 0) -> Response | Awaitable[Response | None] | None:
        request.phase = Phase.REWRITE
        for index in range(start, len(self.rewrite)):
            result = self.rewrite[index].rewrite(request)
            if result is not None:
                return self._finish_rewrite(request, result, index + 1)
        return None

    async def _finish_rewrite(self, request: Request, pending: Awaitable[None], next_index: int) -> None:
        await pending
        result = self.run_rewrite(request, next_index)
        if result is not None and not isinstance(result, Response):
            await result

    def run_response(self, request: Request, response: ResponseHead) -> None:
        request.phase = Phase.RESPONSE
        for plugin in self.response:
            plugin.response(request, response)

    def run_log(self, request: Request, response: ResponseHead) -> None:
        request.phase = Phase.LOG
        for plugin in self.log:
            plugin.log(request, response)
