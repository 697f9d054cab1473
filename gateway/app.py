"""Compile a Config into one worker's runtime objects: router, route actions, upstream pools.

Everything here runs once per worker start (or reload); requests only read what it builds.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gateway._fastpath.balance import Balancer, Target
from gateway._fastpath.http import Gateway, RouteAction, refresh_date
from gateway._fastpath.proxy import UpstreamPool
from gateway._fastpath.router import Router
from gateway._fastpath.timers import Ticker
from gateway.accesslog import AccessLog
from gateway.config import Config, Function, Route, Upstream
from gateway.config_plugins import route_plugin_configs
from gateway.consumers import ConsumerRegistry
from gateway.functions.http_route import FunctionRoute
from gateway.functions.pool import FunctionPool
from gateway.functions.spec import FunctionSpec
from gateway.health import HealthChecker
from gateway.logs import log
from gateway.plugins import Plugin, default_registry
from gateway.route_plugins import build_route_plugins
from gateway.subscriptions import SubscriptionSnapshot

_PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\+?\}")


@dataclass
class Runtime:
    """What one worker serves with; replaced whole when the config changes."""

    gateway: Gateway
    ticker: Ticker
    access_log: AccessLog
    pools: dict[str, UpstreamPool]
    health: list[HealthChecker] = field(default_factory=list)
    consumers: ConsumerRegistry = field(default_factory=ConsumerRegistry)
    subscriptions: SubscriptionSnapshot = field(default_factory=SubscriptionSnapshot)
    plugins: list[Plugin] = field(default_factory=list)
    functions: dict[str, FunctionPool] = field(default_factory=dict)

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self.ticker.start()
        # Small, frequent batches: a busy worker writes ~100 KB every 20 ms rather than a
        # megabyte-sized stall every 100 ms (which showed up as p99 latency).
        self.access_log.start(loop, interval=0.02)
        for checker in self.health:
            checker.start(loop)

    async def start_functions(self) -> None:
        """Start each function's sandbox parent (interpreter up, handler imported) and its
        provisioned instances; a function that cannot start is logged and answers 502."""
        for name, pool in self.functions.items():
            try:
                await pool.start()
            except Exception as exc:
                log("error", "function did not start", function=name, error=str(exc))

    def close(self) -> None:
        for checker in self.health:
            checker.stop()
        for pool in self.pools.values():
            pool.close()
        self.ticker.stop()
        self.access_log.close()

    async def aclose(self) -> None:
        """What needs the loop to shut down: function sandboxes, plugins' store clients."""
        for function in self.functions.values():
            with contextlib.suppress(Exception):
                await function.close()
        for plugin in self.plugins:
            closer = getattr(plugin, "aclose", None) or getattr(plugin, "close", None)
            if closer is None:
                continue
            with contextlib.suppress(Exception):
                result = closer()
                if inspect.isawaitable(result):
                    await result


def rewrite_parts(template: str) -> list[bytes | str]:
    """ "/v2/{proxy}" -> [b"/v2/", "proxy"]: literals as bytes, parameters by name."""
    parts: list[bytes | str] = []
    position = 0
    for match in _PLACEHOLDER.finditer(template):
        if match.start() > position:
            parts.append(template[position : match.start()].encode("latin-1"))
        parts.append(match.group(1))
        position = match.end()
    if position < len(template):
        parts.append(template[position:].encode("latin-1"))
    return parts


def build_pool(
    name: str, upstream: Upstream, loop: asyncio.AbstractEventLoop, ticker: Ticker
) -> UpstreamPool:
    targets = [Target(addr) for addr in upstream.targets]
    balancer = Balancer(targets, upstream.balance, upstream.max_fails, upstream.fail_timeout)
    return UpstreamPool(
        name,
        loop,
        balancer,
        ticker,
        keepalive=upstream.keepalive,
        connect_timeout=upstream.connect_timeout,
        read_timeout=upstream.read_timeout,
        keepalive_timeout=upstream.keepalive_timeout,
        retries=upstream.retries,
        hash_on=upstream.hash_on if upstream.balance == "hash" else None,
    )


def route_name(route: Route) -> str:
    return route.name or f"routes[{route.index}]"


def function_spec(name: str, function: Function, cpus: list[int] | None = None) -> FunctionSpec:
    return FunctionSpec(
        name=name,
        code=Path(function.code),
        handler=function.handler or "",
        runtime=function.runtime,
        timeout=function.timeout,
        memory=function.memory,
        concurrency=function.concurrency,
        provisioned=function.provisioned,
        idle_timeout=function.idle_timeout,
        env=dict(function.env),
        network=function.network,
        platform_logs=function.system_log_level != "WARN",
        cpus=tuple(cpus) if cpus else None,
    )


def build_action(
    route: Route, pools: dict[str, UpstreamPool], functions: Mapping[str, FunctionPool] | None = None
) -> RouteAction:
    name = route_name(route)
    if route.function is not None:
        assert functions is not None  # the config loader guarantees the function exists
        handler = FunctionRoute(
            functions[route.function], payload=route.payload, path_pattern=route.path, methods=route.methods
        )
        return RouteAction.python_handler(name, handler)
    if route.static is not None:
        static = route.static
        return RouteAction.static(
            name, static.status, static.body.encode("utf-8"), static.content_type, dict(static.headers)
        )
    assert route.upstream is not None  # the config loader guarantees exactly one action
    return RouteAction.proxy(
        name,
        pools[route.upstream],
        route.strip_prefix,
        rewrite_parts(route.rewrite) if route.rewrite else None,
        route.preserve_host,
    )


def build_runtime(
    config: Config, loop: asyncio.AbstractEventLoop, extra_services: Mapping[str, Any] | None = None
) -> Runtime:
    refresh_date()
    ticker = Ticker(loop, 0.1, refresh_date)
    pools = {name: build_pool(name, upstream, loop, ticker) for name, upstream in config.upstreams.items()}
    consumers = ConsumerRegistry.from_config(config.consumers)
    subscriptions = SubscriptionSnapshot()
    services: dict[str, Any] = {
        "consumers": consumers,
        "subscriptions": subscriptions,
        "redis_url": config.store.redis,
        "loop": loop,
        **(extra_services or {}),
    }
    registry = default_registry()
    functions = {
        name: FunctionPool(function_spec(name, function, config.server.sandbox_cpus))
        for name, function in config.functions.items()
    }
    router = Router()
    plugins: list[Plugin] = []
    for route in config.routes:
        action = build_action(route, pools, functions)
        configs = route_plugin_configs(config, route, registry)
        product = config.products.get(route.product) if route.product else None
        if product is not None and product.subscription == "approval" and "subscription" not in configs:
            configs["subscription"] = registry.decode_config("subscription", {"product": route.product})
        if configs:
            built = build_route_plugins(configs, registry, {**services, "route": route_name(route)})
            action.with_fast_checks(built.fast_checks, built.drop_headers, built.fallback_chains)
            action.with_plugins(built.chain)
            plugins.extend(built.plugins)
        router.add(route.path, action, route.methods, route.host)
    access_log = AccessLog(config.server.access_log)
    server = config.server
    gateway = Gateway(
        loop,
        router,
        host_routing=any(route.host for route in config.routes),
        max_target=server.max_request_target,
        max_head=server.max_header_size,
        max_fields=server.max_header_fields,
        max_body=server.max_body_size,
        header_timeout=server.header_timeout,
        body_timeout=server.body_timeout,
        send_timeout=server.send_timeout,
        keepalive_timeout=server.keepalive_timeout,
        keepalive_requests=server.keepalive_requests,
        access_log=access_log,
        ticker=ticker,
    )
    health = [
        HealthChecker(name, pools[name].balancer.targets, upstream.health)
        for name, upstream in config.upstreams.items()
        if upstream.health is not None
    ]
    return Runtime(gateway, ticker, access_log, pools, health, consumers, subscriptions, plugins, functions)
