"""Turn a route's plugin configs into what the engine runs: compiled fast checks + a Python chain.

Plugins run in priority order. The longest prefix of that order whose plugins can compile
themselves (``fast_check()`` returns a FastCheck) runs in C before anything else; the rest form
the route's PluginChain. A plugin that only has response/log phases does not end the prefix,
since it runs after the request was let through anyway. So a route with key-auth +
rate-limit (local) + an access log never builds a Python view of a request.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import msgspec

from gateway.plugins import Phase, Plugin, PluginChain, PluginRegistry

__all__ = ["RoutePlugins", "build_route_plugins", "instantiate_plugin"]


@dataclass
class RoutePlugins:
    fast_checks: list[Any] = field(default_factory=list)  # gateway._fastpath.http.FastCheck
    # fallback_chains[i]: what runs in Python when fast check i cannot decide a request by itself
    # (a Redis-backed limit whose local state is due for a sync): that check's plugin and every
    # plugin after it, in priority order. The compiled checks share state with their plugins.
    fallback_chains: list[PluginChain] = field(default_factory=list)
    drop_headers: list[str] = field(default_factory=list)
    chain: PluginChain | None = None
    plugins: list[Plugin] = field(default_factory=list)  # every instance, for shutdown hooks


def instantiate_plugin(cls: type[Plugin], config: msgspec.Struct, services: Mapping[str, Any]) -> Plugin:
    """Build a plugin, passing the shared services its constructor asks for by keyword.

    A plugin declares what it needs as keyword-only parameters (``consumers``, ``redis_url``,
    ``subscriptions``, ...); it gets exactly those, so plugins stay independent of each other.
    """
    parameters = inspect.signature(cls).parameters
    wanted: dict[str, Any] = {}
    for name, parameter in parameters.items():
        if parameter.kind is not inspect.Parameter.KEYWORD_ONLY:
            continue
        if name in services:
            wanted[name] = services[name]
        elif parameter.default is inspect.Parameter.empty:
            raise TypeError(
                f"plugin {cls.name!r} needs the service {name!r}, which this gateway does not provide"
            )
    return cls(config, **wanted)


def _priority_order(plugin: Plugin) -> tuple[int, str]:
    return (-type(plugin).priority, type(plugin).name)


def build_route_plugins(
    configs: Mapping[str, msgspec.Struct], registry: PluginRegistry, services: Mapping[str, Any]
) -> RoutePlugins:
    plugins = []
    for name, config in configs.items():
        cls = registry.get(name)
        if cls is None:  # the config was validated with this registry
            raise KeyError(name)
        plugins.append(instantiate_plugin(cls, config, services))
    plugins.sort(key=_priority_order)
    result = RoutePlugins(plugins=plugins)
    python: list[Plugin] = []
    compiling = True
    for position, plugin in enumerate(plugins):
        phases = type(plugin).phases()
        runs_before_upstream = Phase.ACCESS in phases or Phase.REWRITE in phases
        check = None
        if compiling and runs_before_upstream:
            fast_check = getattr(plugin, "fast_check", None)
            check = fast_check() if callable(fast_check) else None
        if check is not None:
            result.fast_checks.append(check)
            # (`python` so far holds only response/log plugins: they run in the fallback too.)
            result.fallback_chains.append(PluginChain([*python, *plugins[position:]]))
            drop = getattr(plugin, "upstream_drop_headers", None)
            if callable(drop):
                result.drop_headers.extend(drop())
            continue
        if runs_before_upstream:
            compiling = False
        python.append(plugin)
    result.chain = PluginChain(python) if python else None
    return result
