"""Route matching among 1,000 routes: static hit, parameter hit, greedy hit and a miss.

The route table mixes ~600 static, ~300 parameter (one or two parameters) and ~100 greedy routes,
~10% of them host-specific (exact and wildcard hosts that the benchmark's request host matches,
so those tiers are searched before the host-less routes, as in a real multi-tenant config).

Two measurements per case:
- test_match_<case>: one router.match call per benchmark round (includes pytest-benchmark's
  per-call overhead, tens of ns);
- test_match_loop_<case>: match_repeatedly runs 1,000 matches inside the compiled module; the
  per-match cost is mean / 1000, reported in extra_info["ns_per_match"].

Run: make bench-micro, or .venv/bin/pytest bench/micro/test_route_bench.py --benchmark-only
"""

from __future__ import annotations

import importlib
from typing import Any

import pytest

# Imported by name: mypy cannot follow the editable install's folder mapping to _fastpath/.
router_module = importlib.import_module("gateway._fastpath.router")

LOOP = 1_000
REQUEST_HOST = "api.example.com"

RESOURCES = [f"res{index}" for index in range(60)]
ACTIONS = ["list", "search", "export", "import", "stats", "health", "config", "schema", "meta", "count"]


def build_routes() -> list[tuple[str, str, list[str] | None, str | None]]:
    """(pattern, target, methods, host) for 1,000 routes."""
    routes: list[tuple[str, str, list[str] | None, str | None]] = []
    # ~600 static: /api/v1/<resource>/<action>
    for resource in RESOURCES:
        for action in ACTIONS:
            routes.append((f"/api/v1/{resource}/{action}", f"static:{resource}/{action}", ["GET"], None))
    # ~300 with parameters: one (/api/v1/<resource>/{id}, .../{id}/history) or two.
    for resource in RESOURCES:
        routes.append((f"/api/v1/{resource}/{{id}}", f"param:{resource}", ["GET", "PUT", "DELETE"], None))
        routes.append((f"/api/v1/{resource}/{{id}}/history", f"history:{resource}", ["GET"], None))
        routes.append((f"/api/v2/{resource}/{{id}}", f"param2:{resource}", None, None))
        routes.append((f"/api/v1/{resource}/{{id}}/items/{{item_id}}", f"item:{resource}", ["GET"], None))
        routes.append((f"/api/v2/{resource}/{{id}}/items/{{item_id}}", f"item2:{resource}", None, None))
    # ~100 greedy: /assets/<bucket>/{proxy+}
    for bucket in range(100):
        routes.append((f"/assets/b{bucket}/{{proxy+}}", f"greedy:b{bucket}", ["GET"], None))
    # Every 10th route becomes host-specific, alternating an exact and a wildcard host that both
    # cover REQUEST_HOST (the original host-less routes stay, so every tier is searched).
    hosts = [REQUEST_HOST, "*.example.com"]
    for index in range(0, 1_000, 10):
        pattern, target, methods, _ = routes[index]
        routes[index] = (
            pattern.replace("/api/", "/tenant/"),
            f"host:{target}",
            methods,
            hosts[index // 10 % 2],
        )
    return routes


@pytest.fixture(scope="module")
def router() -> Any:
    assert str(router_module.__file__).endswith(".so"), "benchmark the compiled router (build it first)"
    table = router_module.Router()
    routes = build_routes()
    assert len(routes) == 1_000
    for pattern, target, methods, host in routes:
        table.add(pattern, target, methods, host)
    return table


# case -> (method, path, expected result): correctness is asserted before anything is timed.
CASES: dict[str, tuple[str, str, object]] = {
    "static": ("GET", "/api/v1/res42/export", ("static:res42/export", None)),
    "param": ("GET", "/api/v1/res17/abc123/items/99", ("item:res17", {"id": "abc123", "item_id": "99"})),
    "greedy": ("GET", "/assets/b57/css/site/main.css", ("greedy:b57", {"proxy": "css/site/main.css"})),
    "miss": ("GET", "/api/v3/res1/unknown/path", None),
}


@pytest.mark.parametrize("case", list(CASES))
def test_match(benchmark: Any, router: Any, case: str) -> None:
    method, path, expected = CASES[case]
    assert router.match(REQUEST_HOST, method, path) == expected
    result = benchmark(router.match, REQUEST_HOST, method, path)
    assert result == expected


@pytest.mark.parametrize("case", list(CASES))
def test_match_loop(benchmark: Any, router: Any, case: str) -> None:
    method, path, expected = CASES[case]
    assert router_module.match_repeatedly(router, REQUEST_HOST, method, path, LOOP) == expected
    result = benchmark(router_module.match_repeatedly, router, REQUEST_HOST, method, path, LOOP)
    assert result == expected
    benchmark.extra_info["matches_per_round"] = LOOP
    benchmark.extra_info["ns_per_match"] = round(benchmark.stats.stats.mean / LOOP * 1e9, 1)
