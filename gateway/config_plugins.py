"""Plugin tables in the config: checked through the plugin registry, merged per route.

A plugin's config table is only a table to the config loader; its schema is the plugin's
Config struct, so validation goes through the registry. A plugin enabled globally
(``[plugins.NAME]``) runs on every route; a route's own table (``[routes.plugins.NAME]``)
enables it there and overrides the global table key by key.

The registry is loaded only when the file enables some plugin, so a config without plugins
never imports plugin modules.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

import msgspec

from .config_decode import Issues, close_match_hint, key_path
from .plugins import Plugin, PluginConfigError, PluginRegistry, default_registry
from .units import describe_value

if TYPE_CHECKING:
    from .config import Config, Route

__all__ = ["PluginTables", "check_plugin_tables", "route_plugin_configs"]

#: Plugin name -> its config table, as written under [plugins] or [routes.plugins].
PluginTables = Mapping[str, Mapping[str, Any]]


def route_plugin_configs(
    config: Config, route: Route, registry: PluginRegistry | None = None
) -> dict[str, msgspec.Struct]:
    """The plugins that run on `route`, by name, each with its decoded merged config.

    Global plugins apply to every route; the route's table overrides the global one key by
    key. The config was validated with the same registry, so this does not fail for it;
    with another registry it raises PluginConfigError.
    """
    names = sorted({*config.plugins, *route.plugins})
    if not names:
        return {}
    plugins = registry if registry is not None else default_registry()
    return {
        name: plugins.merged_config(name, config.plugins.get(name), route.plugins.get(name)) for name in names
    }


def check_plugin_tables(
    global_tables: PluginTables,
    route_tables: Iterable[tuple[str, PluginTables]],
    issues: Issues,
    registry: PluginRegistry | None = None,
) -> None:
    """Report unknown plugin names and invalid plugin configs, with the key path of each problem.

    `route_tables` pairs each route's key path (``routes[2]``) with its plugin tables. A route
    is checked against its merged config; a plugin whose global table is already reported is
    not reported again for every route that inherits it.
    """
    routes = [(path, tables) for path, tables in route_tables if tables]
    if not global_tables and not routes:
        return
    plugins = registry if registry is not None else default_registry()
    reported_globally: set[str] = set()
    for name, table in global_tables.items():
        path = key_path("plugins", name)
        plugin = _known(plugins, name, path, issues)
        if plugin is None:
            reported_globally.add(name)
            continue
        try:
            plugins.decode_config(name, table)
        except PluginConfigError as exc:
            _report(exc, path, table, issues, plugin.Config)
            reported_globally.add(name)
    for route_path, tables in routes:
        for name, table in tables.items():
            path = key_path(key_path(route_path, "plugins"), name)
            if name in reported_globally:
                continue
            plugin = _known(plugins, name, path, issues)
            if plugin is None:
                continue
            inherited = global_tables.get(name, {})
            try:
                plugins.merged_config(name, inherited, table)
            except PluginConfigError as exc:
                # The global table passed alone, so a key's problem comes from the route's value;
                # only a check across keys (reported at the table) can involve inherited ones.
                _report(exc, path, {**inherited, **table}, issues, plugin.Config)


def _known(registry: PluginRegistry, name: str, path: str, issues: Issues) -> type[Plugin] | None:
    plugin = registry.get(name)
    if plugin is not None:
        return plugin
    known = registry.names()
    if known:
        issues.add(path, f"unknown plugin{close_match_hint(name, known)}; known plugins: {', '.join(known)}")
    else:
        issues.add(path, "unknown plugin (no plugins are installed)")
    return None


# msgspec's wording for a table's own keys, rephrased the way the rest of the config says it.
_UNKNOWN_FIELD = re.compile(r"object contains unknown field `(.*)`")
_MISSING_FIELD = re.compile(r"object missing required field `(.*)`")


def _report(
    error: PluginConfigError,
    table_path: str,
    table: Mapping[str, Any],
    issues: Issues,
    config_type: type[msgspec.Struct],
) -> None:
    for relative, message in error.errors:
        if unknown := _UNKNOWN_FIELD.fullmatch(message):
            # Close-match hints only for the table's own keys: nested structs are the plugin's.
            known = [f.encode_name for f in msgspec.structs.fields(config_type)] if not relative else []
            relative = _join(relative, unknown.group(1))
            message = "unknown key" + close_match_hint(unknown.group(1), known)
        elif missing := _MISSING_FIELD.fullmatch(message):
            relative = _join(relative, missing.group(1))
            message = "missing required key"
        else:
            message = _in_config_words(message, _lookup(table, relative))
        issues.add(_join(table_path, relative), message)


_TYPE_NAME = re.compile(r"`(int|str|float|bool|array|object|null)`")
_GOT = re.compile(r", got (an integer|a string|a number|true or false|an array|a table|nothing)$")
_NOUNS = {
    "int": "an integer",
    "str": "a string",
    "float": "a number",
    "bool": "true or false",
    "array": "an array",
    "object": "a table",
    "null": "nothing",
}
_NOT_FOUND: Any = object()
_PATH_PART = re.compile(r"\.?([^.\[\]]+)|\[(\d+)\]")


def _in_config_words(message: str, value: Any) -> str:
    """msgspec's "expected `int` >= 1" -> "expected an integer >= 1, got 0", like the rest of the config."""
    message = _TYPE_NAME.sub(lambda match: _NOUNS[match.group(1)], message)
    if value is _NOT_FOUND or not message.startswith("expected "):
        return message
    shown = describe_value(value)
    if _GOT.search(message):
        return _GOT.sub(lambda _: f", got {shown}", message)
    return f"{message}, got {shown}"


def _lookup(table: Mapping[str, Any], relative: str) -> Any:
    """The value at a msgspec-style relative path ("limits[0].rate"), or _NOT_FOUND."""
    value: Any = table
    position = 0
    while position < len(relative):
        part = _PATH_PART.match(relative, position)
        if part is None:
            return _NOT_FOUND  # e.g. "[...]", msgspec's stand-in for a dict key
        key, index = part.groups()
        if key is not None and isinstance(value, Mapping) and key in value:
            value = value[key]
        elif index is not None and isinstance(value, list) and int(index) < len(value):
            value = value[int(index)]
        else:
            return _NOT_FOUND
        position = part.end()
    return value if relative else _NOT_FOUND


def _join(path: str, relative: str) -> str:
    if not relative or not path:
        return path or relative
    return f"{path}{relative}" if relative.startswith("[") else f"{path}.{relative}"
