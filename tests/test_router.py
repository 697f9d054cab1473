"""Router: every precedence rule by example, pattern errors, and hypothesis against a brute-force model.

Each test runs against the compiled module (gateway._fastpath.router) and the interpreted source
(_fastpath/router.py loaded directly), which must behave the same.
"""

from __future__ import annotations

import importlib
import importlib.util
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

SOURCE = Path(__file__).resolve().parent.parent / "_fastpath" / "router.py"
# Imported by name: mypy cannot follow the editable install's folder mapping to _fastpath/.
compiled_router = importlib.import_module("gateway._fastpath.router")


def _load_interpreted() -> ModuleType:
    spec = importlib.util.spec_from_file_location("lambdagate_router_interpreted", SOURCE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


interpreted_router = _load_interpreted()


@pytest.fixture(params=["compiled", "interpreted"])
def impl(request: pytest.FixtureRequest) -> Any:
    if request.param == "compiled":
        assert compiled_router.__file__ is not None and compiled_router.__file__.endswith(".so")
        return compiled_router
    assert interpreted_router.__file__ == str(SOURCE)
    return interpreted_router


IMPLS = [compiled_router, interpreted_router]


def test_compiled_module_is_really_compiled() -> None:
    assert compiled_router.__file__ is not None and compiled_router.__file__.endswith(".so")
    # Cython functions are not Python functions; the interpreted module's are.
    assert type(compiled_router.match_repeatedly).__name__ != "function"
    assert type(interpreted_router.match_repeatedly).__name__ == "function"


# --- patterns ------------------------------------------------------------------------------------


def test_exact_route(impl: Any) -> None:
    router = impl.Router()
    router.add("/health", "health")
    assert router.match("", "GET", "/health") == ("health", None)
    assert router.match("", "GET", "/health/") is None
    assert router.match("", "GET", "/Health") is None
    assert router.match("", "GET", "/healthz") is None
    assert router.match("", "GET", "/") is None


def test_root_and_trailing_slash_are_literal(impl: Any) -> None:
    router = impl.Router()
    router.add("/", "root")
    router.add("/a/", "a-slash")
    router.add("/a//b", "double")
    assert router.match("", "GET", "/") == ("root", None)
    assert router.match("", "GET", "/a/") == ("a-slash", None)
    assert router.match("", "GET", "/a") is None
    assert router.match("", "GET", "/a//b") == ("double", None)
    assert router.match("", "GET", "/a/b") is None
    assert router.match("", "GET", "") is None
    assert router.match("", "GET", "*") is None


@pytest.mark.parametrize("children", [1, 4, 5, 40])
def test_static_children_found_at_any_fan_out(impl: Any, children: int) -> None:
    # Nodes with few static children compare them in place; more use a dict. Both must agree.
    # The patterns end in a parameter so the trie walk (not the whole-path dict) finds them.
    router = impl.Router()
    names = ["", "a", "ab", "b", *[f"n{index}" for index in range(children)]][:children]
    for name in names:
        router.add(f"/x/{name}/{{id}}", f"static:{name}")
    router.add("/x/{other}/{id}", "param")
    for name in names:
        assert router.match("", "GET", f"/x/{name}/7") == (f"static:{name}", {"id": "7"})
        assert router.match("", "GET", f"/x/{name}z/7") == ("param", {"other": f"{name}z", "id": "7"})
    assert router.match("", "GET", "/x/zz/7") == ("param", {"other": "zz", "id": "7"})
    assert router.allowed_methods("", f"/x/{names[-1]}/7") == sorted(impl.ALL_METHODS)


def test_parameters_are_raw_single_non_empty_segments(impl: Any) -> None:
    router = impl.Router()
    router.add("/users/{id}", "user")
    router.add("/users/{id}/posts/{post_id}", "post")
    assert router.match("", "GET", "/users/42") == ("user", {"id": "42"})
    assert router.match("", "GET", "/users/a%2Fb") == ("user", {"id": "a%2Fb"})
    assert router.match("", "GET", "/users/7/posts/x%20y") == ("post", {"id": "7", "post_id": "x%20y"})
    assert router.match("", "GET", "/users/") is None
    assert router.match("", "GET", "/users//posts/1") is None
    assert router.match("", "GET", "/users/1/2") is None


def test_greedy_takes_a_non_empty_remainder(impl: Any) -> None:
    router = impl.Router()
    router.add("/files/{proxy+}", "files")
    assert router.match("", "GET", "/files/a") == ("files", {"proxy": "a"})
    assert router.match("", "GET", "/files/a/b/c") == ("files", {"proxy": "a/b/c"})
    assert router.match("", "GET", "/files/a/") == ("files", {"proxy": "a/"})
    assert router.match("", "GET", "/files//x") == ("files", {"proxy": "/x"})
    assert router.match("", "GET", "/files/") is None
    assert router.match("", "GET", "/files") is None


def test_root_greedy_and_params_before_greedy(impl: Any) -> None:
    router = impl.Router()
    router.add("/{proxy+}", "all")
    router.add("/t/{tenant}/{rest+}", "tenant")
    assert router.match("", "GET", "/") is None
    assert router.match("", "GET", "/x/y") == ("all", {"proxy": "x/y"})
    assert router.match("", "GET", "/t/acme/a/b") == ("tenant", {"tenant": "acme", "rest": "a/b"})
    # No remainder for {rest+}: falls back to the root greedy route.
    assert router.match("", "GET", "/t/acme") == ("all", {"proxy": "t/acme"})


def test_default_catches_everything_else(impl: Any) -> None:
    router = impl.Router()
    router.add("/health", "health", ["GET"])
    router.add("$default", "fallback")
    router.add("$default", "second-default-ignored")
    assert router.match("any.host", "POST", "/health") == ("fallback", None)
    assert router.match("", "GET", "/nope") == ("fallback", None)
    assert router.match("", "GET", "not-a-path") == ("fallback", None)
    assert router.match("", "GET", "/health") == ("health", None)
    assert router.allowed_methods("", "/nope") == []


def test_targets_are_returned_as_is(impl: Any) -> None:
    router = impl.Router()
    target = object()
    router.add("/x", target)
    result = router.match("", "GET", "/x")
    assert result is not None and result[0] is target


# --- precedence --------------------------------------------------------------------------------


def test_static_beats_param_beats_greedy(impl: Any) -> None:
    router = impl.Router()
    router.add("/{proxy+}", "greedy")
    router.add("/users/{id}", "param")
    router.add("/users/me", "static")
    assert router.match("", "GET", "/users/me") == ("static", None)
    assert router.match("", "GET", "/users/you") == ("param", {"id": "you"})
    assert router.match("", "GET", "/users/you/x") == ("greedy", {"proxy": "users/you/x"})


def test_specificity_is_decided_at_the_first_differing_segment(impl: Any) -> None:
    router = impl.Router()
    router.add("/{a}/b", "param-then-static")
    router.add("/a/{b}", "static-then-param")
    assert router.match("", "GET", "/a/b") == ("static-then-param", {"b": "b"})
    assert router.match("", "GET", "/x/b") == ("param-then-static", {"a": "x"})


def test_backtracks_when_the_deeper_branch_does_not_match(impl: Any) -> None:
    router = impl.Router()
    router.add("/a/b/c", "static")
    router.add("/a/{x}/d", "param")
    router.add("/a/{proxy+}", "greedy")
    assert router.match("", "GET", "/a/b/d") == ("param", {"x": "b"})
    assert router.match("", "GET", "/a/b/e") == ("greedy", {"proxy": "b/e"})


def test_method_mismatch_falls_through_to_less_specific_route(impl: Any) -> None:
    router = impl.Router()
    router.add("/users/me", "me", ["DELETE"])
    router.add("/users/{id}", "user", ["GET"])
    router.add("/{proxy+}", "any")
    assert router.match("", "DELETE", "/users/me") == ("me", None)
    assert router.match("", "GET", "/users/me") == ("user", {"id": "me"})
    assert router.match("", "POST", "/users/me") == ("any", {"proxy": "users/me"})


def test_get_route_answers_head_and_methods_are_normalized(impl: Any) -> None:
    router = impl.Router()
    router.add("/r", "r", ["get", "Post"])
    assert router.match("", "GET", "/r") == ("r", None)
    assert router.match("", "HEAD", "/r") == ("r", None)
    assert router.match("", "POST", "/r") == ("r", None)
    assert router.match("", "PUT", "/r") is None
    # Request methods are case-sensitive (RFC 9110): the caller passes what the client sent.
    assert router.match("", "get", "/r") is None


def test_duplicate_pattern_first_added_wins_the_overlap(impl: Any) -> None:
    router = impl.Router()
    router.add("/d", "first", ["GET", "POST"])
    router.add("/d", "second", ["POST", "PUT"])
    router.add("/d", "third")
    assert router.match("", "POST", "/d") == ("first", None)
    assert router.match("", "PUT", "/d") == ("second", None)
    assert router.match("", "PATCH", "/d") == ("third", None)
    # An any-method route shadows every later route on the same pattern.
    router.add("/e", "any")
    router.add("/e", "later", ["GET"])
    assert router.match("", "GET", "/e") == ("any", None)


def test_same_trie_position_keeps_each_routes_param_names(impl: Any) -> None:
    router = impl.Router()
    router.add("/u/{id}", "by-id", ["GET"])
    router.add("/u/{name}", "by-name", ["POST"])
    assert router.match("", "GET", "/u/7") == ("by-id", {"id": "7"})
    assert router.match("", "POST", "/u/7") == ("by-name", {"name": "7"})


# --- hosts -------------------------------------------------------------------------------------


def test_host_tiers(impl: Any) -> None:
    router = impl.Router()
    router.add("/x", "any-host")
    router.add("/x", "wild", host="*.example.com")
    router.add("/x", "wild-deeper", host="*.eu.example.com")
    router.add("/x", "exact", host="API.Example.com")
    assert router.match("api.example.com", "GET", "/x") == ("exact", None)
    assert router.match("www.example.com", "GET", "/x") == ("wild", None)
    assert router.match("a.b.c.example.com", "GET", "/x") == ("wild", None)
    assert router.match("x.eu.example.com", "GET", "/x") == ("wild-deeper", None)
    assert router.match("eu.example.com", "GET", "/x") == ("wild", None)
    assert router.match("example.com", "GET", "/x") == ("any-host", None)
    assert router.match("notexample.com", "GET", "/x") == ("any-host", None)
    assert router.match("", "GET", "/x") == ("any-host", None)


def test_host_tier_wins_over_path_specificity_but_falls_through_on_miss(impl: Any) -> None:
    router = impl.Router()
    router.add("/users/me", "static-any-host")
    router.add("/{proxy+}", "host-greedy", ["GET"], host="api.example.com")
    assert router.match("api.example.com", "GET", "/users/me") == ("host-greedy", {"proxy": "users/me"})
    # The host tier has no route for POST, so the next tier is tried.
    assert router.match("api.example.com", "POST", "/users/me") == ("static-any-host", None)
    assert router.match("other.com", "GET", "/users/me") == ("static-any-host", None)


def test_host_only_routes_do_not_match_other_hosts(impl: Any) -> None:
    router = impl.Router()
    router.add("/only", "only", host="*.example.com")
    assert router.match("example.com", "GET", "/only") is None
    assert router.match("", "GET", "/only") is None
    assert router.allowed_methods("example.com", "/only") == []
    assert router.allowed_methods("a.example.com", "/only") == sorted(impl.ALL_METHODS)


def test_routes_added_after_matching_are_seen(impl: Any) -> None:
    # Each host's list of tables is cached on first match; add() must start that cache over.
    router = impl.Router()
    router.add("/x", "any-host")
    router.add("/y", "exact", host="a.example.com")
    assert router.match("b.example.com", "GET", "/x") == ("any-host", None)
    router.add("/x", "wild", host="*.example.com")
    assert router.match("b.example.com", "GET", "/x") == ("wild", None)


def test_many_distinct_hosts_stay_correct(impl: Any) -> None:
    router = impl.Router()
    router.add("/x", "any-host")
    router.add("/x", "wild", host="*.example.com")
    for index in range(impl.HOST_CACHE_SIZE * 2 + 3):
        assert router.match(f"h{index}.example.com", "GET", "/x") == ("wild", None)
        assert router.match(f"h{index}.example.org", "GET", "/x") == ("any-host", None)


# --- allowed_methods ---------------------------------------------------------------------------


def test_allowed_methods_unions_matching_routes(impl: Any) -> None:
    router = impl.Router()
    router.add("/items/{id}", "read", ["GET"])
    router.add("/items/special", "delete", ["DELETE"])
    router.add("/items/{id}", "host-write", ["PUT"], host="api.example.com")
    router.add("/other", "other", ["POST"])
    router.add("$default", "default")
    assert router.allowed_methods("", "/items/special") == ["DELETE", "GET", "HEAD"]
    assert router.allowed_methods("api.example.com", "/items/1") == ["GET", "HEAD", "PUT"]
    assert router.allowed_methods("", "/items/1") == ["GET", "HEAD"]
    assert router.allowed_methods("", "/nothing") == []
    assert router.allowed_methods("", "/items/") == []


def test_allowed_methods_of_any_method_route(impl: Any) -> None:
    router = impl.Router()
    router.add("/files/{proxy+}", "files")
    assert router.allowed_methods("", "/files/a/b") == [
        "DELETE",
        "GET",
        "HEAD",
        "OPTIONS",
        "PATCH",
        "POST",
        "PUT",
    ]
    assert router.allowed_methods("", "/files/") == []


# --- errors ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pattern", "message"),
    [
        ("health", "must start with '/'"),
        ("", "must start with '/'"),
        ("/a/{}", "empty parameter name"),
        ("/a/{+}", "empty parameter name"),
        ("/{proxy+}/x", "must be the last segment"),
        ("/{id}/{id}", "duplicate parameter name"),
        ("/{id}/{id+}", "duplicate parameter name"),
        ("/{1id}", "must match"),
        ("/{a-b}", "must match"),
        ("/{a b}", "contains"),
        ("/a{b}", "whole segment"),
        ("/{a}b", "whole segment"),
        ("/{a", "whole segment"),
        ("/a}", "whole segment"),
        ("/{{a}}", "whole segment"),
        ("/a?b=1", "contains"),
        ("/a#frag", "contains"),
    ],
)
def test_invalid_patterns(impl: Any, pattern: str, message: str) -> None:
    router = impl.Router()
    with pytest.raises(impl.RoutePatternError, match=message):
        router.add(pattern, "t")
    assert issubclass(impl.RoutePatternError, ValueError)


@pytest.mark.parametrize(
    ("methods", "host"),
    [
        ([], None),
        ("GET", None),
        ([""], None),
        (["GE T"], None),
        (None, ""),
        (None, "*."),
        (None, "*"),
        (None, "a.*.com"),
        (None, "*.*.com"),
    ],
)
def test_invalid_methods_and_hosts(impl: Any, methods: Any, host: Any) -> None:
    with pytest.raises(impl.RoutePatternError):
        impl.Router().add("/x", "t", methods, host)


def test_default_takes_no_methods_or_host(impl: Any) -> None:
    with pytest.raises(impl.RoutePatternError, match=r"\$default"):
        impl.Router().add("$default", "t", ["GET"])
    with pytest.raises(impl.RoutePatternError, match=r"\$default"):
        impl.Router().add("$default", "t", host="a.com")


def test_match_repeatedly_returns_the_match(impl: Any) -> None:
    router = impl.Router()
    router.add("/u/{id}", "u")
    assert impl.match_repeatedly(router, "", "GET", "/u/1", 3) == ("u", {"id": "1"})


# --- hypothesis: router == brute-force model --------------------------------------------------

STATIC_SEGMENTS = ["a", "b", ""]
REQUEST_SEGMENTS = ["a", "b", "", "c", "x%2F"]
ROUTE_HOSTS = [None, "api.example.com", "*.example.com", "*.b.example.com"]
REQUEST_HOSTS = ["api.example.com", "x.example.com", "y.b.example.com", "example.com", "", "other.org"]
ROUTE_METHODS = [None, ("GET",), ("POST",), ("GET", "DELETE"), ("HEAD",), ("PUT", "POST")]
REQUEST_METHODS = ["GET", "HEAD", "POST", "DELETE", "PUT"]


@dataclass(frozen=True)
class ModelRoute:
    segments: tuple[str, ...]  # raw pattern segments: "a", "{p1}", "{p2+}"
    host: str | None
    methods: tuple[str, ...] | None
    target: str

    @property
    def pattern(self) -> str:
        return "/" + "/".join(self.segments)


def model_match_params(route: ModelRoute, path: str) -> dict[str, str] | None:
    """Params when the route's pattern matches the path (an empty dict for static ones)."""
    parts = path[1:].split("/")
    params: dict[str, str] = {}
    for index, segment in enumerate(route.segments):
        if segment.endswith("+}"):
            rest = "/".join(parts[index:])
            if index >= len(parts) or not rest:
                return None
            params[segment[1:-2]] = rest
            return params
        if index >= len(parts):
            return None
        if segment.startswith("{"):
            if not parts[index]:
                return None
            params[segment[1:-1]] = parts[index]
        elif segment != parts[index]:
            return None
    return params if len(parts) == len(route.segments) else None


def model_host_tier(route_host: str | None, host: str) -> tuple[int, int] | None:
    if route_host is None:
        return (2, 0)
    if route_host.startswith("*."):
        suffix = route_host[1:]
        return (1, -len(suffix)) if host.endswith(suffix) and len(host) > len(suffix) else None
    return (0, 0) if route_host == host else None


def model_allows(methods: tuple[str, ...] | None, method: str) -> bool:
    return methods is None or method in methods or (method == "HEAD" and "GET" in methods)


def model_kinds(route: ModelRoute) -> tuple[int, ...]:
    return tuple(2 if s.endswith("+}") else 1 if s.startswith("{") else 0 for s in route.segments)


def model_match(
    routes: list[ModelRoute], default: str | None, host: str, method: str, path: str
) -> tuple[object, dict[str, str] | None] | None:
    best: tuple[Any, ...] | None = None
    for order, route in enumerate(routes):
        tier = model_host_tier(route.host, host)
        params = model_match_params(route, path) if path.startswith("/") else None
        if tier is None or params is None or not model_allows(route.methods, method):
            continue
        key = (tier, model_kinds(route), order)
        if best is None or key < best[0]:
            best = (key, route.target, params or None)
    if best is not None:
        return (best[1], best[2])
    return (default, None) if default is not None else None


def model_allowed(routes: list[ModelRoute], host: str, path: str) -> list[str]:
    allowed: set[str] = set()
    for route in routes:
        if model_host_tier(route.host, host) is None or model_match_params(route, path) is None:
            continue
        methods = route.methods or compiled_router.ALL_METHODS
        allowed.update(methods)
        if "GET" in methods:
            allowed.add("HEAD")
    return sorted(allowed)


@st.composite
def model_routes(draw: st.DrawFn, target: str) -> ModelRoute:
    depth = draw(st.integers(1, 4))
    segments: list[str] = []
    for index in range(depth):
        kind = draw(
            st.sampled_from(
                ["static", "static", "param", "greedy"] if index == depth - 1 else ["static", "param"]
            )
        )
        if kind == "static":
            segments.append(draw(st.sampled_from(STATIC_SEGMENTS)))
        elif kind == "param":
            segments.append("{" + draw(st.sampled_from(["p", "q"])) + str(index) + "}")
        else:
            segments.append("{" + draw(st.sampled_from(["rest", "proxy"])) + "+}")
    return ModelRoute(
        tuple(segments), draw(st.sampled_from(ROUTE_HOSTS)), draw(st.sampled_from(ROUTE_METHODS)), target
    )


@st.composite
def route_tables(draw: st.DrawFn) -> tuple[list[ModelRoute], str | None]:
    count = draw(st.integers(0, 14))
    routes = [draw(model_routes(f"r{index}")) for index in range(count)]
    default = draw(st.sampled_from([None, "default"]))
    return routes, default


requests = st.tuples(
    st.sampled_from(REQUEST_HOSTS),
    st.sampled_from(REQUEST_METHODS),
    st.lists(st.sampled_from(REQUEST_SEGMENTS), min_size=1, max_size=5).map(
        lambda parts: "/" + "/".join(parts)
    ),
)


def build(impl: Any, routes: list[ModelRoute], default: str | None) -> Any:
    router = impl.Router()
    for route in routes:
        router.add(route.pattern, route.target, route.methods, route.host)
    if default is not None:
        router.add("$default", default)
    return router


@settings(max_examples=300, deadline=None)
@given(table=route_tables(), request_list=st.lists(requests, min_size=1, max_size=20))
def test_router_agrees_with_brute_force_model(
    table: tuple[list[ModelRoute], str | None], request_list: list[tuple[str, str, str]]
) -> None:
    routes, default = table
    routers = [build(impl, routes, default) for impl in IMPLS]
    for host, method, path in request_list:
        expected = model_match(routes, default, host, method, path)
        expected_allowed = model_allowed(routes, host, path)
        for router in routers:
            assert router.match(host, method, path) == expected, (host, method, path)
            assert router.allowed_methods(host, path) == expected_allowed, (host, path)


@settings(max_examples=200, deadline=None)
@given(table=route_tables(), request=requests)
def test_miss_has_allowed_methods_only_when_path_matches(
    table: tuple[list[ModelRoute], str | None], request: tuple[str, str, str]
) -> None:
    # The 405-vs-404 contract: on a miss, allowed methods never include the request's method.
    routes, _ = table
    host, method, path = request
    for impl in IMPLS:
        router = build(impl, routes, None)
        if router.match(host, method, path) is None:
            assert method not in router.allowed_methods(host, path)
