"""Route table: (host, method, path) -> target and path parameters, in AWS API Gateway style.

Written in Cython's pure-Python mode: router.pxd turns the classes below into cdef classes with
typed attributes and the hot functions into C functions, so this one source runs compiled (as
gateway._fastpath.router) and interpreted (tests load the .py directly and check both agree).

Patterns
    /health            exact (static segments only)
    /users/{id}        a parameter: exactly one non-empty segment
    /files/{proxy+}    greedy, last segment only: one or more remaining segments (non-empty rest)
    $default           matches when nothing else does (any host, any method)

Precedence, most specific first
    1. host tier: exact host, then wildcard hosts (`*.example.com`) longest suffix first, then
       routes without a host; the first tier with a route matching path AND method wins;
    2. within a tier, segment by segment: static beats {param} beats {greedy+}; this is a
       depth-first walk of a segment trie that backtracks past routes whose methods don't allow
       the request's method;
    3. the same (host, pattern) added twice: the route added first wins for the methods both allow.

Matching cost depends on the path's depth, not on the number of routes: fully static patterns are
one dict lookup keyed by the whole path; the rest walk a trie with a dict of static children, one
parameter child and one greedy tail per node.
"""

from __future__ import annotations

from collections.abc import Sequence

# Methods that a route without a method list contributes to allowed_methods (the Allow header).
ALL_METHODS: tuple[str, ...] = ("DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT")
DEFAULT_PATTERN = "$default"
# Hosts whose search order (which host tables apply) is remembered; the cache starts over when full.
HOST_CACHE_SIZE = 1024
# Up to this many static children per trie node are compared in place instead of via a dict.
FEW_STATIC_CHILDREN = 4

# A C Py_ssize_t when compiled (declared in router.pxd); a plain int annotation would make Cython
# expect a Python int object there instead.
Index = int

_STATIC = 0
_PARAM = 1
_GREEDY = 2

_NAME_START = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz_")
_NAME_CHARS = _NAME_START | frozenset("0123456789")
# RFC 9110 token characters: what a method name may contain.
_TOKEN_CHARS = _NAME_CHARS | frozenset("!#$%&'*+-.^`|~")
# Never part of a request path as the router sees it (no query, no fragment, no whitespace),
# so a pattern containing one could never match: refuse it instead.
_FORBIDDEN_PATH_CHARS = frozenset("?# \t\r\n")


class RoutePatternError(ValueError):
    """A route pattern, host or method list that cannot be added to the table."""


class _Route:
    """One added route: its target and where its parameters sit in the path."""

    def __init__(
        self, target: object, param_names: tuple[str, ...], param_depths: tuple[int, ...], greedy: bool
    ) -> None:
        self.target = target
        self.param_names = param_names
        # Segment index of each parameter (the greedy one, if any, is last).
        self.param_depths = param_depths
        self.greedy = greedy
        self.params_count = len(param_names)


class _Endpoint:
    """The routes that end at one trie position, resolved by request method."""

    def __init__(self) -> None:
        self.by_method: dict[str, _Route] = {}
        # The first route added without a method list; it shadows every later route here.
        self.any_method: _Route | None = None
        self.allowed: set[str] = set()

    def add(self, route: _Route, methods: frozenset[str] | None) -> None:
        if methods is None:
            if self.any_method is None:
                self.any_method = route
            self.allowed.update(ALL_METHODS)
            return
        # A route is reachable only for methods no earlier route here already takes, and not at
        # all behind an earlier any-method route: first added wins the overlap.
        if self.any_method is None:
            for method in methods:
                self.by_method.setdefault(method, route)
        self.allowed.update(methods)

    def lookup(self, method: str) -> _Route | None:
        route = self.by_method.get(method)
        if route is None:
            return self.any_method
        return route


class _Node:
    """A trie position: reached after consuming some leading path segments."""

    def __init__(self) -> None:
        self.static: dict[str, _Node] = {}
        # With only a few static children, comparing them in place beats slicing the segment out
        # of the path and hashing it for a dict lookup (the common case: most nodes have one).
        self.few_keys: tuple[str, ...] | None = None
        self.few_children: tuple[_Node, ...] = ()
        self.param: _Node | None = None
        # A greedy segment is always last, so its child is just the routes ending there.
        self.greedy: _Endpoint | None = None
        self.end: _Endpoint | None = None

    def add_static(self, segment: str) -> _Node:
        child = self.static.get(segment)
        if child is None:
            child = _Node()
            self.static[segment] = child
            if len(self.static) <= FEW_STATIC_CHILDREN:
                self.few_keys = tuple(self.static)
                self.few_children = tuple(self.static.values())
            else:
                self.few_keys = None
                self.few_children = ()
        return child

    def static_child(self, path: str, start: Index, end: Index) -> _Node | None:
        """The static child named path[start:end], if any."""
        keys = self.few_keys
        if keys is None:
            return self.static.get(path[start:end])
        length = end - start
        for i in range(len(keys)):
            key = keys[i]
            if len(key) == length and path.startswith(key, start):
                return self.few_children[i]
        return None


class _Table:
    """The routes of one host tier entry: a trie plus a whole-path dict for static patterns."""

    def __init__(self) -> None:
        self.root = _Node()
        self.exact: dict[str, _Endpoint] = {}

    def add(
        self, pattern: str, segments: list[tuple[int, str]], target: object, methods: frozenset[str] | None
    ) -> None:
        # Annotated locals are typed by Cython too: cdef attributes are reachable only through them.
        node: _Node = self.root
        names: list[str] = []
        depths: list[int] = []
        endpoint: _Endpoint | None = None
        for depth, (kind, text) in enumerate(segments):
            if kind == _STATIC:
                node = node.add_static(text)
            elif kind == _PARAM:
                if node.param is None:
                    node.param = _Node()
                node = node.param
                names.append(text)
                depths.append(depth)
            else:
                if node.greedy is None:
                    node.greedy = _Endpoint()
                endpoint = node.greedy
                names.append(text)
                depths.append(depth)
        greedy = endpoint is not None
        if endpoint is None:
            if node.end is None:
                node.end = _Endpoint()
            endpoint = node.end
        if not names:
            # A static pattern is its own request path; the whole-path dict skips the walk.
            self.exact[pattern] = endpoint
        endpoint.add(_Route(target, tuple(names), tuple(depths), greedy), methods)

    def find(self, method: str, path: str) -> _Route | None:
        endpoint = self.exact.get(path)
        if endpoint is not None:
            route = endpoint.lookup(method)
            if route is not None:
                return route
        n = len(path)
        if n == 0 or path[0] != "/":
            return None
        return _walk(self.root, path, 0, n, method)

    def collect_allowed(self, path: str, allowed: set[str]) -> None:
        if path.startswith("/"):
            _collect(self.root, path, 0, len(path), allowed)


def _segment_end(path: str, start: Index, n: Index) -> Index:
    """Index of the '/' that ends the segment starting at `start`, or n.

    A plain character loop: compiled, it reads the string's buffer directly, which beats
    str.find's generic search for segments a few characters long.
    """
    end = start
    while end < n and path[end] != "/":
        end += 1
    return end


def _walk(node: _Node, path: str, pos: Index, n: Index, method: str) -> _Route | None:
    """Find the most specific route under `node` for path[pos:], which is empty or starts with '/'.

    Depth first: the static child, then the parameter child, then the greedy tail; a branch whose
    routes don't allow `method` is abandoned for the next one (backtracking).
    """
    if pos == n:
        if node.end is not None:
            return node.end.lookup(method)
        return None
    start = pos + 1
    end = _segment_end(path, start, n)
    if node.static:
        child = node.static_child(path, start, end)
        if child is not None:
            route = _walk(child, path, end, n, method)
            if route is not None:
                return route
    if node.param is not None and end > start:
        route = _walk(node.param, path, end, n, method)
        if route is not None:
            return route
    if node.greedy is not None and n > start:
        return node.greedy.lookup(method)
    return None


def _collect(node: _Node, path: str, pos: Index, n: Index, allowed: set[str]) -> None:
    """Add the methods of every route under `node` matching path[pos:] (all branches, no ranking)."""
    if pos == n:
        if node.end is not None:
            allowed.update(node.end.allowed)
        return
    start = pos + 1
    end = _segment_end(path, start, n)
    child = node.static_child(path, start, end)
    if child is not None:
        _collect(child, path, end, n, allowed)
    if node.param is not None and end > start:
        _collect(node.param, path, end, n, allowed)
    if node.greedy is not None and n > start:
        allowed.update(node.greedy.allowed)


def _extract_params(route: _Route, path: str) -> dict[str, str]:
    """The matched route's parameter values, raw (percent-encoding left as is)."""
    params: dict[str, str] = {}
    names = route.param_names
    depths = route.param_depths
    last = route.params_count - 1
    k = 0
    wanted = depths[0]
    depth = 0
    pos = 0  # index of the '/' that opens segment `depth`
    n = len(path)
    while True:
        start = pos + 1
        end = _segment_end(path, start, n)
        if depth == wanted:
            if k == last:
                params[names[k]] = path[start:] if route.greedy else path[start:end]
                return params
            params[names[k]] = path[start:end]
            k += 1
            wanted = depths[k]
        pos = end
        depth += 1


def _result(route: _Route, path: str) -> tuple[object, dict[str, str] | None]:
    if route.params_count == 0:
        return (route.target, None)
    return (route.target, _extract_params(route, path))


def _parse_pattern(pattern: str) -> list[tuple[int, str]]:
    """Split a pattern into (kind, text) segments: text is the static segment or the parameter name."""
    if not isinstance(pattern, str):
        raise RoutePatternError(f"route pattern must be a string, got {type(pattern).__name__}")
    if not pattern.startswith("/"):
        raise RoutePatternError(f"route pattern {pattern!r} must start with '/' (or be '$default')")
    bad = _FORBIDDEN_PATH_CHARS.intersection(pattern)
    if bad:
        raise RoutePatternError(f"route pattern {pattern!r} contains {''.join(sorted(bad))!r}")
    raw_segments = pattern[1:].split("/")
    segments: list[tuple[int, str]] = []
    seen: set[str] = set()
    for index, segment in enumerate(raw_segments):
        if "{" not in segment and "}" not in segment:
            segments.append((_STATIC, segment))
            continue
        if not (segment.startswith("{") and segment.endswith("}")) or segment.count("{") != 1:
            raise RoutePatternError(
                f"route pattern {pattern!r}: a parameter must be a whole segment like '{{name}}', "
                f"got {segment!r}"
            )
        name = segment[1 : len(segment) - 1]
        kind = _PARAM
        if name.endswith("+"):
            kind = _GREEDY
            name = name[: len(name) - 1]
            if index != len(raw_segments) - 1:
                raise RoutePatternError(
                    f"route pattern {pattern!r}: greedy parameter {segment!r} must be the last segment"
                )
        if not name:
            raise RoutePatternError(f"route pattern {pattern!r}: empty parameter name in {segment!r}")
        if name[0] not in _NAME_START or not _NAME_CHARS.issuperset(name):
            raise RoutePatternError(
                f"route pattern {pattern!r}: parameter name {name!r} must match [A-Za-z_][A-Za-z0-9_]*"
            )
        if name in seen:
            raise RoutePatternError(f"route pattern {pattern!r}: duplicate parameter name {name!r}")
        seen.add(name)
        segments.append((kind, name))
    return segments


def _normalize_methods(methods: Sequence[str] | None) -> frozenset[str] | None:
    if methods is None:
        return None
    if isinstance(methods, str):
        raise RoutePatternError(f"methods must be a sequence of names, not the string {methods!r}")
    normalized: set[str] = set()
    for method in methods:
        if not isinstance(method, str) or not method or not _TOKEN_CHARS.issuperset(method):
            raise RoutePatternError(f"invalid method name {method!r}")
        normalized.add(method.upper())
    if not normalized:
        raise RoutePatternError("methods must name at least one method (use None for any method)")
    if "GET" in normalized:
        normalized.add("HEAD")  # a GET route answers HEAD too
    return frozenset(normalized)


def _normalize_host(host: str) -> str:
    """Lowercase a route host; '*.suffix' becomes '.suffix' (the key wildcard lookups use)."""
    if not isinstance(host, str) or not host:
        raise RoutePatternError(f"route host must be a non-empty string or None, got {host!r}")
    host = host.lower()
    if host.startswith("*."):
        suffix = host[1:]
        if len(suffix) < 2 or "*" in suffix:
            raise RoutePatternError(f"wildcard host {host!r} must look like '*.example.com'")
        return suffix
    if "*" in host or host.startswith("."):
        raise RoutePatternError(f"route host {host!r}: a wildcard must be a leading '*.' label")
    return host


class Router:
    """The route table of one configuration: built once with add(), then only matched."""

    def __init__(self) -> None:
        self._any_host = _Table()
        self._exact_hosts: dict[str, _Table] = {}
        # Keyed by the suffix with its leading dot: '*.example.com' -> '.example.com'.
        self._wildcard_hosts: dict[str, _Table] = {}
        self._default: _Route | None = None
        # The tables to search for a host, in precedence order (host-less table last). Without
        # host routes every host searches only the host-less table; with them, each host's list is
        # resolved once and cached, because walking a host's dot-suffixes costs more than a match.
        self._any_host_only: tuple[_Table, ...] = (self._any_host,)
        self._tiers_by_host: dict[str, tuple[_Table, ...]] = {}

    def add(
        self,
        pattern: str,
        target: object,
        methods: Sequence[str] | None = None,
        host: str | None = None,
    ) -> None:
        """Add a route; raise RoutePatternError when the pattern, methods or host are invalid."""
        if pattern == DEFAULT_PATTERN:
            if methods is not None or host is not None:
                raise RoutePatternError(
                    "'$default' matches any host and method: give neither methods nor host"
                )
            if self._default is None:
                self._default = _Route(target, (), (), False)
            return
        segments = _parse_pattern(pattern)
        method_set = _normalize_methods(methods)
        self._table_for(host).add(pattern, segments, target, method_set)
        self._tiers_by_host.clear()

    def match(self, host: str, method: str, path: str) -> tuple[object, dict[str, str] | None] | None:
        """(target, params) of the most specific route; params is None for parameterless patterns.

        host: lowercased, without port ('' when absent). path: raw, without the query.
        None when no route (and no $default) matches.
        """
        tiers = self._any_host_only
        if self._exact_hosts or self._wildcard_hosts:
            tiers = self._tiers_for(host)
        for table in tiers:
            route = table.find(method, path)
            if route is not None:
                return _result(route, path)
        if self._default is None:
            return None
        return (self._default.target, None)

    def allowed_methods(self, host: str, path: str) -> list[str]:
        """Sorted methods of the routes (not $default) whose host and path match: the Allow header.

        Meant for a miss: non-empty means answer 405, empty means 404.
        """
        allowed: set[str] = set()
        for table in self._resolve_tiers(host):
            table.collect_allowed(path, allowed)
        return sorted(allowed)

    def _tiers_for(self, host: str) -> tuple[_Table, ...]:
        tiers = self._tiers_by_host.get(host)
        if tiers is None:
            tiers = self._resolve_tiers(host)
            # Host headers are client-controlled: bound the cache instead of letting it grow.
            if len(self._tiers_by_host) >= HOST_CACHE_SIZE:
                self._tiers_by_host.clear()
            self._tiers_by_host[host] = tiers
        return tiers

    def _resolve_tiers(self, host: str) -> tuple[_Table, ...]:
        tiers: list[_Table] = []
        exact = self._exact_hosts.get(host)
        if exact is not None:
            tiers.append(exact)
        # Each suffix of the host that starts at a dot, longest first; position 0 is skipped
        # because '*.example.com' needs at least one label before '.example.com'.
        i = host.find(".", 1)
        while i > 0:
            wildcard = self._wildcard_hosts.get(host[i:])
            if wildcard is not None:
                tiers.append(wildcard)
            i = host.find(".", i + 1)
        tiers.append(self._any_host)
        return tuple(tiers)

    def _table_for(self, host: str | None) -> _Table:
        if host is None:
            return self._any_host
        key = _normalize_host(host)
        tables = self._wildcard_hosts if key.startswith(".") else self._exact_hosts
        table = tables.get(key)
        if table is None:
            table = _Table()
            tables[key] = table
        return table


def match_repeatedly(router: Router, host: str, method: str, path: str, times: Index) -> object:
    """Call router.match `times` times and return the last result.

    For benchmarks: the loop runs at the router's own speed (in C when compiled), so dividing the
    elapsed time by `times` gives the per-match cost without a Python-level loop or a benchmark
    harness's per-call overhead in it.
    """
    result: object = None
    for _ in range(times):
        result = router.match(host, method, path)
    return result
