"""Semantic checks on a decoded config: the rules a type annotation cannot express.

Each check reports into an `Issues` list instead of raising, so one run of
``lambdagate check`` shows every problem in the file. The syntax helpers
(`parse_listen`, `parse_target`, `route_path_params`) are public because the
router and the upstream pool parse the same strings.
"""

from __future__ import annotations

import ipaddress
import os
import re
import urllib.parse
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

import msgspec

from .config_decode import Issues, Validator, close_match_hint, key_path
from .config_functions import FunctionChecker, check_aws_keys
from .units import describe_value

if TYPE_CHECKING:
    from .config import Admin, Config, HealthCheck, Route, Server, StaticResponse, Store, Upstream
    from .consumers import ConsumerConfig

__all__ = [
    "RuleChecker",
    "parse_listen",
    "parse_target",
    "route_path_params",
    "route_path_shape",
]

# RFC 9110 token characters: method names, header names, cookie names.
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_PARAM_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_PLACEHOLDER = re.compile(r"\{([^{}]*)\}")
_HOST_LABEL = re.compile(r"[A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?")
# Names of upstreams, consumers and products: they appear in logs, headers and admin API URLs.
_ENTRY_NAME = re.compile(r"[A-Za-z0-9_.-]+")
# Consumer names travel in X-Consumer-Id and admin API URLs; this is what every consumer
# store accepts (gateway.consumers and gateway.store), so a configured name never fails at runtime.
_CONSUMER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")
_REDIS_SCHEMES = ("redis", "rediss", "unix")
_REDIS_FORMS = 'a URL like "redis://127.0.0.1:6379/0", "rediss://host:6380/0" or "unix:///run/redis.sock"'
_WILDCARD_HOSTS = frozenset({"", "0.0.0.0", "::"})
_DEFAULT_ROUTE = "$default"
# What can answer a route; exactly one per route.
_ROUTE_HANDLERS = ("upstream", "static", "function")


# --- addresses -----------------------------------------------------------------------------------


def _split_host_port(value: str, what: str) -> tuple[str, int]:
    expected = f"expected {what}, got {describe_value(value)}"
    if value.startswith("["):
        host, sep, port_text = value[1:].partition("]:")
        if not sep:
            raise ValueError(expected)
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ValueError(f"{expected} ({describe_value(host)} is not an IPv6 address)") from None
    else:
        host, sep, port_text = value.rpartition(":")
        if not sep:
            raise ValueError(f"{expected} (the port is missing)")
        if ":" in host:
            raise ValueError(f'{expected} (write IPv6 addresses in brackets: "[::1]:8080")')
        if host and not _valid_hostname(host):
            raise ValueError(f"{expected} ({describe_value(host)} is not a valid host name or address)")
    if not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
        raise ValueError(f"{expected} (the port must be a number from 1 to 65535)")
    return host, int(port_text)


def _valid_hostname(host: str) -> bool:
    return len(host) <= 253 and all(_HOST_LABEL.fullmatch(label) for label in host.split("."))


def parse_listen(value: str) -> tuple[str, int]:
    """``"127.0.0.1:8080"``, ``"[::1]:8080"``, ``":8080"`` / ``"*:8080"`` -> (host, port); host "" = all."""
    if value.startswith("*:"):
        value = value[1:]
    return _split_host_port(value, 'an address like "127.0.0.1:8080", "[::1]:8080" or ":8080"')


def parse_target(value: str) -> tuple[str, int]:
    """An upstream target ``"host:port"`` or ``"[v6]:port"`` -> (host, port); the host is required."""
    host, port = _split_host_port(
        value, 'a target like "10.0.0.5:9000", "backend.internal:80" or "[::1]:9000"'
    )
    if not host:
        raise ValueError(
            f'expected a target with a host, like "127.0.0.1:{port}", got {describe_value(value)}'
        )
    return host, port


# --- route paths ---------------------------------------------------------------------------------


def route_path_params(path: str) -> tuple[str, ...]:
    """Validate a route path and return its parameter names in order.

    ``"/exact"``, ``"/users/{id}"``, ``"/files/{proxy+}"`` (greedy, last segment only)
    or ``"$default"`` (the catch-all route). Raises ValueError saying what is wrong.
    """
    if path == _DEFAULT_ROUTE:
        return ()
    if not path.startswith("/"):
        raise ValueError(f'expected a path starting with "/" (or "$default"), got {describe_value(path)}')
    if any(char in path for char in "?# ") or not path.isprintable():
        raise ValueError(
            f"expected a URL path without spaces, query (?) or fragment (#), got {describe_value(path)}"
        )
    segments = path[1:].split("/")
    names: list[str] = []
    for position, segment in enumerate(segments):
        if "{" not in segment and "}" not in segment:
            continue
        match = _PLACEHOLDER.fullmatch(segment)
        if match is None:
            raise ValueError(
                f"a parameter must be a whole segment like /{{id}}, got {describe_value(segment)} "
                f"in {describe_value(path)}"
            )
        name = match.group(1)
        greedy = name.endswith("+")
        name = name.removesuffix("+")
        if not _PARAM_NAME.fullmatch(name):
            raise ValueError(
                f"parameter names are letters, digits and _ (not starting with a digit), "
                f"got {describe_value(segment)} in {describe_value(path)}"
            )
        if greedy and position != len(segments) - 1:
            raise ValueError(
                f"a greedy parameter {{{name}+}} must be the last segment, in {describe_value(path)}"
            )
        if name in names:
            raise ValueError(f"parameter {describe_value(name)} appears twice in {describe_value(path)}")
        names.append(name)
    return tuple(names)


def route_path_shape(path: str) -> str:
    """The path with parameter names erased: ``/users/{id}`` and ``/users/{uid}`` match the same requests."""
    return _PLACEHOLDER.sub(lambda m: "{+}" if m.group(1).endswith("+") else "{}", path)


def _literal_prefix(path: str) -> str:
    return path.split("{", 1)[0]


# --- the checker ---------------------------------------------------------------------------------


class RuleChecker:
    """Per-Struct validators for StructDecoder plus the cross-reference checks run after it.

    One instance per load: it remembers what passed its own checks (routes, listen addresses,
    consumer credentials, plugin tables) so `check_references` can compare them with each other.
    """

    def __init__(self) -> None:
        self._routes: list[tuple[str, Route]] = []
        self._product_references: list[tuple[str, str]] = []
        self._listens: dict[str, tuple[str, int] | None] = {}  # key path -> (host, port); None = invalid
        self._credentials: list[tuple[str, str, str]] = []  # (kind, identity, key path)
        #: The global [plugins] tables, and each route's key path with its own plugin tables.
        self.global_plugins: Mapping[str, Mapping[str, Any]] = {}
        self.route_plugins: list[tuple[str, Mapping[str, Mapping[str, Any]]]] = []
        #: False when the global tables themselves failed to decode (e.g. an unset ${VAR}):
        #: routes merged with a partial global table would report phantom problems.
        self.plugin_tables_complete = True
        self._functions = FunctionChecker()

    def validators(self) -> dict[type, Validator]:
        from .config import (
            Admin,
            Config,
            Function,
            HealthCheck,
            Route,
            Server,
            StaticResponse,
            Store,
            Trigger,
            Upstream,
        )
        from .consumers import ConsumerConfig

        return {
            Config: self.check_config,
            Server: self.check_server,
            Store: self.check_store,
            Admin: self.check_admin,
            ConsumerConfig: self.check_consumer,
            Upstream: self.check_upstream,
            HealthCheck: self.check_health,
            StaticResponse: self.check_static,
            Route: self.check_route,
            Function: self._functions.check_function,
            Trigger: self._functions.check_trigger,
        }

    def check_config(
        self, config: Config, path: str, issues: Issues, broken: frozenset[str], given: frozenset[str]
    ) -> Config:
        if "plugins" in broken:
            self.plugin_tables_complete = False
        else:
            self.global_plugins = config.plugins
        return config

    def check_server(
        self, server: Server, path: str, issues: Issues, broken: frozenset[str], given: frozenset[str]
    ) -> Server:
        self._check_listen(server.listen, key_path(path, "listen"), issues)
        if not server.access_log:
            issues.add(
                key_path(path, "access_log"), 'expected "off", "stdout", "stderr" or a file path, got ""'
            )
        for name in ("max_request_target", "max_header_size"):
            if getattr(server, name) == 0:
                issues.add(key_path(path, name), "expected a size above 0")
        if server.sandbox_cpus is not None:
            # The machine's CPUs, not this process's affinity: the gateway itself may be pinned
            # (taskset) to other CPUs than its sandboxes are meant for.
            count = os.cpu_count() or 1
            if not server.sandbox_cpus:
                issues.add(key_path(path, "sandbox_cpus"), "expected at least one CPU")
            for cpu in server.sandbox_cpus:
                if cpu >= count:
                    issues.add(
                        key_path(path, "sandbox_cpus"),
                        f"CPU {cpu} does not exist on this machine (CPUs 0 to {count - 1})",
                    )
        return server

    def _check_listen(self, listen: str, path: str, issues: Issues) -> None:
        try:
            self._listens[path] = parse_listen(listen)
        except ValueError as exc:
            self._listens[path] = None
            issues.add(path, str(exc))

    def check_store(
        self, store: Store, path: str, issues: Issues, broken: frozenset[str], given: frozenset[str]
    ) -> Store:
        if store.redis is not None:
            problem = _redis_url_problem(store.redis)
            if problem is not None:
                shown = describe_value(_without_password(store.redis))
                issues.add(key_path(path, "redis"), f"expected {_REDIS_FORMS}, got {shown}{problem}")
        if not store.path.strip():
            issues.add(key_path(path, "path"), 'expected a file path like "lambdagate.db", got ""')
        return store

    def check_admin(
        self, admin: Admin, path: str, issues: Issues, broken: frozenset[str], given: frozenset[str]
    ) -> Admin:
        self._check_listen(admin.listen, key_path(path, "listen"), issues)
        # Never echo the token: error lines end up in logs.
        if not admin.token.strip():
            issues.add(key_path(path, "token"), "must not be empty (every admin request must present it)")
        elif any(char.isspace() or not char.isprintable() for char in admin.token):
            issues.add(key_path(path, "token"), "must not contain spaces or control characters")
        if "aws_keys" not in broken:
            check_aws_keys(admin.aws_keys, key_path(path, "aws_keys"), issues)
        return admin

    def check_consumer(
        self,
        consumer: ConsumerConfig,
        path: str,
        issues: Issues,
        broken: frozenset[str],
        given: frozenset[str],
    ) -> ConsumerConfig:
        """The consumers module's own rules, then remember each credential for the uniqueness check."""
        from .consumers import consumer_config_problems, hashed_api_key

        # Never echo a key or a password hash: error lines end up in logs.
        problems = consumer_config_problems(consumer)
        for relative, message in problems:
            issues.add(f"{path}.{relative}", message)
        invalid = {relative for relative, _ in problems}
        for index, key in enumerate(consumer.keys):
            entry = key_path(key_path(path, "keys"), index)
            if f"keys[{index}]" not in invalid:
                # By hash: a plain key and its "sha256:" form are one credential.
                self._credentials.append(("key", hashed_api_key(key), entry))
        for index, credential in enumerate(consumer.basic_auth):
            entry = key_path(key_path(key_path(path, "basic_auth"), index), "username")
            self._credentials.append(("basic-auth user", credential.username, entry))
        for index, subject in enumerate(consumer.jwt_subjects):
            self._credentials.append(
                ("JWT subject", subject, key_path(key_path(path, "jwt_subjects"), index))
            )
        return consumer

    def check_upstream(
        self, upstream: Upstream, path: str, issues: Issues, broken: frozenset[str], given: frozenset[str]
    ) -> Upstream:
        if not upstream.targets:
            issues.add(key_path(path, "targets"), 'expected at least one target like "127.0.0.1:9000"')
        for index, target in enumerate(upstream.targets):
            try:
                parse_target(target)
            except ValueError as exc:
                issues.add(key_path(key_path(path, "targets"), index), str(exc))
        hash_path = key_path(path, "hash_on")
        hash_forms = 'expected "header:NAME", "cookie:NAME" or "ip"'
        if broken & {"balance", "hash_on"}:
            pass  # one of them is already reported; comparing with a default would mislead
        elif upstream.balance == "hash" and upstream.hash_on is None:
            issues.add(hash_path, f'required when balance = "hash" ({hash_forms})')
        elif upstream.hash_on is not None and upstream.balance != "hash":
            issues.add(hash_path, f'only used with balance = "hash" (balance is "{upstream.balance}")')
        elif upstream.hash_on is not None and not _valid_hash_on(upstream.hash_on):
            issues.add(hash_path, f"{hash_forms}, got {describe_value(upstream.hash_on)}")
        return upstream

    def check_health(
        self, health: HealthCheck, path: str, issues: Issues, broken: frozenset[str], given: frozenset[str]
    ) -> HealthCheck:
        if not health.path.startswith("/"):
            issues.add(
                key_path(path, "path"),
                f'expected a path starting with "/", got {describe_value(health.path)}',
            )
        for name in ("interval", "timeout"):
            if getattr(health, name) <= 0:
                issues.add(key_path(path, name), "expected a duration above 0")
        return health

    def check_static(
        self, static: StaticResponse, path: str, issues: Issues, broken: frozenset[str], given: frozenset[str]
    ) -> StaticResponse:
        if static.body and (static.status in (204, 304)):
            issues.add(key_path(path, "body"), f"a {static.status} response cannot have a body")
        if _has_line_break(static.content_type):
            issues.add(key_path(path, "content_type"), "must not contain line breaks")
        headers_path = key_path(path, "headers")
        for name, value in static.headers.items():
            header_path = key_path(headers_path, name)
            lowered = name.lower()
            if not _TOKEN.fullmatch(name):
                issues.add(
                    header_path, f"expected a header name (letters, digits, -), got {describe_value(name)}"
                )
            elif lowered in ("content-length", "transfer-encoding", "connection"):
                issues.add(header_path, "is set by the gateway (it frames the response itself)")
            elif lowered == "content-type":
                issues.add(header_path, "set it with content_type instead")
            if _has_line_break(value):
                issues.add(header_path, "header values must not contain line breaks")
        return static

    def check_route(
        self, route: Route, path: str, issues: Issues, broken: frozenset[str], given: frozenset[str]
    ) -> Route:
        errors_before = len(issues)
        handlers = [name for name in _ROUTE_HANDLERS if getattr(route, name) is not None]
        if broken & set(_ROUTE_HANDLERS):
            pass  # already reported; the handler check would only add noise
        elif not handlers:
            issues.add(
                path,
                'needs one of upstream = "<name>", static = { status = ..., body = ... } '
                'or function = "<name>"',
            )
        elif len(handlers) > 1:
            issues.add(
                path,
                f"has {' and '.join(handlers)}; a route has exactly one of upstream, static and function",
            )
        if route.name is not None and not route.name.strip():
            issues.add(key_path(path, "name"), "must not be empty (leave it out to use the position)")
        params: tuple[str, ...] | None = None
        try:
            params = route_path_params(route.path)
        except ValueError as exc:
            issues.add(key_path(path, "path"), str(exc))
        route = self._normalise_route(route, path, issues)
        if route.path == _DEFAULT_ROUTE:
            for name in ("host", "methods"):
                if getattr(route, name) is not None:
                    issues.add(
                        key_path(path, name), 'not allowed on the "$default" route (it matches everything)'
                    )
        if route.upstream is None and handlers:
            for name in ("strip_prefix", "rewrite"):
                if getattr(route, name) is not None:
                    issues.add(key_path(path, name), "only applies to routes with an upstream")
            if route.preserve_host:
                issues.add(key_path(path, "preserve_host"), "only applies to routes with an upstream")
        if route.function is None and handlers and "payload" in given:
            issues.add(key_path(path, "payload"), "only applies to routes with a function")
        if "function" not in broken:
            self._functions.note_route(route, path)
        if route.strip_prefix is not None:
            self._check_strip_prefix(route, key_path(path, "strip_prefix"), issues)
        if route.rewrite is not None:
            self._check_rewrite(route.rewrite, params, key_path(path, "rewrite"), issues)
        if route.product is not None and "product" not in broken:
            self._product_references.append((key_path(path, "product"), route.product))
        if route.plugins and "plugins" not in broken:
            self.route_plugins.append((path, route.plugins))
        if len(issues) == errors_before and not broken:
            self._routes.append((path, route))
        return route

    def _normalise_route(self, route: Route, path: str, issues: Issues) -> Route:
        """Methods upper-cased and de-duplicated, host lower-cased: both are case-insensitive to match."""
        methods = route.methods
        if methods is not None:
            methods_path = key_path(path, "methods")
            if not methods:
                issues.add(methods_path, "expected at least one method (leave methods out to allow any)")
            for index, method in enumerate(methods):
                if not _TOKEN.fullmatch(method):
                    issues.add(
                        key_path(methods_path, index),
                        f'expected an HTTP method like "GET", got {describe_value(method)}',
                    )
            methods = list(dict.fromkeys(method.upper() for method in methods))
        host = route.host
        if host is not None:
            host = host.lower()
            if not _valid_host_pattern(host):
                issues.add(
                    key_path(path, "host"),
                    'expected a host name like "api.example.com" or "*.example.com", '
                    f"got {describe_value(route.host)}",
                )
        return msgspec.structs.replace(route, methods=methods, host=host)

    def _check_strip_prefix(self, route: Route, path: str, issues: Issues) -> None:
        prefix = route.strip_prefix or ""
        if not prefix.startswith("/"):
            issues.add(path, f'expected a path prefix starting with "/", got {describe_value(prefix)}')
        elif route.rewrite is not None:
            issues.add(path, "cannot be combined with rewrite (rewrite replaces the whole path)")
        elif route.path != _DEFAULT_ROUTE and not _literal_prefix(route.path).startswith(prefix):
            issues.add(
                path,
                f"{describe_value(prefix)} is not a prefix of every path the route matches "
                f"({describe_value(route.path)})",
            )

    def _check_rewrite(self, rewrite: str, params: tuple[str, ...] | None, path: str, issues: Issues) -> None:
        if not rewrite.startswith("/"):
            issues.add(path, f'expected a path template starting with "/", got {describe_value(rewrite)}')
            return
        stripped = _PLACEHOLDER.sub("", rewrite)
        if "{" in stripped or "}" in stripped:
            issues.add(path, f"unbalanced braces in {describe_value(rewrite)}")
        if params is None:
            return  # the path itself is invalid and already reported
        for name in _PLACEHOLDER.findall(rewrite):
            if name not in params:
                known = ", ".join(f"{{{param}}}" for param in params) or "none"
                issues.add(path, f"{{{name}}} is not a parameter of the route path (its parameters: {known})")

    def check_references(
        self,
        issues: Issues,
        *,
        upstreams: Iterable[str] = (),
        products: Iterable[str] = (),
        consumers: Iterable[str] = (),
        functions: Iterable[str] = (),
    ) -> None:
        """Names are well-formed and what routes and triggers refer to exists; nothing is claimed twice.

        Run after decoding, with the names defined in the file's [upstreams], [products],
        [consumers] and [functions] tables.
        """
        names = sorted(upstreams)
        product_names = sorted(products)
        for section, defined in (("upstreams", names), ("products", product_names)):
            for name in defined:
                if not _ENTRY_NAME.fullmatch(name):
                    issues.add(
                        key_path(section, name),
                        f"{section[:-1]} names may use letters, digits, '_', '-' and '.'",
                    )
        for name in consumers:
            if not _CONSUMER_NAME.fullmatch(name):
                issues.add(
                    key_path("consumers", name),
                    "consumer names are 1 to 128 letters, digits, '_', '-' and '.', "
                    "starting with a letter or digit",
                )
        # Without a [products] section product names are plain labels of open products (the
        # issue's example config groups routes that way); once products are declared, a route
        # must name one of them, so a typo cannot silently open an approval-only product.
        for path, product in self._product_references:
            if product_names and product not in product_names:
                hint = close_match_hint(product, product_names)
                issues.add(path, f"no product named {describe_value(product)}{hint}")
        self._check_listens_differ(issues)
        self._check_credentials_unique(issues)
        self._check_routes(names, issues)
        self._functions.check_references(issues, functions)

    def _check_listens_differ(self, issues: Issues) -> None:
        from .config import Server

        admin = self._listens.get("admin.listen")
        server = (
            self._listens.get("server.listen")
            if "server.listen" in self._listens
            else parse_listen(Server().listen)
        )
        if admin is None or server is None:
            return
        # One port on an overlapping address would share (SO_REUSEPORT) or steal the other's traffic.
        if admin[1] == server[1] and (admin[0] == server[0] or {admin[0], server[0]} & _WILDCARD_HOSTS):
            issues.add("admin.listen", "must differ from server.listen (the admin API needs its own port)")

    def _check_credentials_unique(self, issues: Issues) -> None:
        """One credential identifies one consumer: a key, a basic-auth user, a JWT subject."""
        owners: dict[tuple[str, str], str] = {}
        for kind, identity, path in self._credentials:
            first = owners.setdefault((kind, identity), path)
            if first != path:
                # Keys are compared by hash, so a plain key and its "sha256:" form collide too.
                issues.add(path, f"the same {kind} as {first} (each {kind} must identify one consumer)")

    def _check_routes(self, names: list[str], issues: Issues) -> None:
        seen: dict[tuple[str | None, str], list[tuple[str, Route]]] = {}
        for path, route in self._routes:
            if route.upstream is not None and route.upstream not in names:
                hint = close_match_hint(route.upstream, names) or (
                    "" if names else " (no [upstreams] are defined)"
                )
                issues.add(
                    key_path(path, "upstream"), f"no upstream named {describe_value(route.upstream)}{hint}"
                )
            key = (route.host, route_path_shape(route.path))
            for other_path, other in seen.get(key, []):
                overlap = _method_overlap(route.methods, other.methods)
                if overlap:
                    issues.add(
                        path,
                        f"matches the same requests as {other_path}{_named(other)} "
                        f"(host {describe_value(route.host) if route.host else 'any'}, "
                        f"path {describe_value(route.path)}, methods {overlap})",
                    )
            seen.setdefault(key, []).append((path, route))


def _named(route: Route) -> str:
    return f" ({describe_value(route.name)})" if route.name else ""


def _method_overlap(first: list[str] | None, second: list[str] | None) -> str:
    if first is None and second is None:
        return "any"
    if first is None or second is None:
        return ", ".join(first or second or [])
    return ", ".join(method for method in first if method in second)


def _valid_host_pattern(host: str) -> bool:
    """An exact host or ``*.suffix``; no port, since routes match the Host header without its port."""
    if host.startswith("[") and host.endswith("]"):
        try:
            ipaddress.IPv6Address(host[1:-1])
        except ValueError:
            return False
        return True
    if host.startswith("*."):
        host = host[2:]
    return bool(host) and _valid_hostname(host)


def _valid_hash_on(value: str) -> bool:
    if value == "ip":
        return True
    kind, sep, name = value.partition(":")
    return bool(sep) and kind in ("header", "cookie") and bool(_TOKEN.fullmatch(name))


def _has_line_break(value: str) -> bool:
    return any(char in value for char in "\r\n\0")


def _redis_url_problem(url: str) -> str | None:
    """None when `url` is a usable Redis URL, else a parenthesised reason (or "")."""
    try:
        parts = urllib.parse.urlsplit(url)
        port = parts.port
    except ValueError:
        return " (the port must be a number from 1 to 65535)"
    if parts.scheme not in _REDIS_SCHEMES or not url.startswith(f"{parts.scheme}://"):
        return ""
    if parts.scheme == "unix":
        return None if parts.path not in ("", "/") else " (the socket path is missing)"
    if not parts.hostname:
        return " (the host is missing)"
    if port == 0:
        return " (the port must be a number from 1 to 65535)"
    database = parts.path.removeprefix("/")
    if database and not database.isdigit():
        return f" (the database is a number, got {describe_value(database)})"
    return None


def _without_password(url: str) -> str:
    """The URL as it may appear in an error line: a password is replaced by "***"."""
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError:
        return url.split("@", 1)[-1] if "@" in url else url
    if parts.password is None:
        return url
    return parts._replace(netloc=parts.netloc.replace(f":{parts.password}@", ":***@", 1)).geturl()
