"""cors, ip-restriction, request-size-limit, request/response-transformer, request-id.

Each plugin is driven through a PluginChain with hand-built requests, then once more through the
Cython engine (in-process, real sockets) to see what reaches the upstream and the client.
"""

from __future__ import annotations

import asyncio
import ipaddress
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway._fastpath.balance import Balancer, Target
from gateway._fastpath.http import RouteAction
from gateway._fastpath.proxy import UpstreamPool
from gateway.plugins import (
    Phase,
    PhaseError,
    Plugin,
    PluginChain,
    PluginConfigError,
    PluginRegistry,
    Request,
    Response,
    ResponseHead,
    cors,
    ip_restriction,
    request_id,
    request_size_limit,
    request_transformer,
    response_transformer,
)
from tests.support.engine import EngineThread, running_engine
from tests.support.upstream import Upstream, echo, running_upstream

REGISTRY = PluginRegistry(
    [
        module.PLUGIN
        for module in (
            cors,
            ip_restriction,
            request_id,
            request_size_limit,
            request_transformer,
            response_transformer,
        )
    ]
)


def plugin(name: str, table: dict[str, Any] | None = None) -> Plugin:
    cls = REGISTRY.get(name)
    assert cls is not None
    return cls(REGISTRY.decode_config(name, table or {}))


def config_errors(name: str, table: dict[str, Any]) -> list[tuple[str, str]]:
    with pytest.raises(PluginConfigError) as caught:
        REGISTRY.decode_config(name, table)
    return caught.value.errors


def make_request(
    method: str = "GET",
    path: str = "/api",
    query: str = "",
    headers: list[tuple[str, str]] | None = None,
    client_ip: str = "127.0.0.1",
    content_length: int | None = None,
) -> Request:
    return Request(
        method=method,
        path=path,
        query=query,
        headers=[("Host", "api.example.com"), *(headers or [])],
        client_ip=client_ip,
        route="api",
        request_id="feedfacefeedfacefeedfacefeedface",
        content_length=content_length,
    )


def access(chain_or_plugin: PluginChain | Plugin, request: Request) -> Response | None:
    chain = chain_or_plugin if isinstance(chain_or_plugin, PluginChain) else PluginChain([chain_or_plugin])
    result = chain.run_access(request)
    assert result is None or isinstance(result, Response), "these plugins never need to await"
    return result


def respond(
    chain_or_plugin: PluginChain | Plugin,
    request: Request,
    status: int = 200,
    headers: list[tuple[str, str]] | None = None,
) -> ResponseHead:
    chain = chain_or_plugin if isinstance(chain_or_plugin, PluginChain) else PluginChain([chain_or_plugin])
    head = ResponseHead(status, headers or [], request)
    chain.run_response(request, head)
    return head


def error_of(response: Response) -> dict[str, Any]:
    body: dict[str, Any] = msgspec.json.decode(response.body)["error"]
    return body


# --- cors --------------------------------------------------------------------------------------


def preflight(origin: str, *extra: tuple[str, str]) -> Request:
    return make_request(
        "OPTIONS", headers=[("Origin", origin), ("Access-Control-Request-Method", "PUT"), *extra]
    )


def test_cors_preflight_is_answered_at_the_edge() -> None:
    cors_plugin = plugin(
        "cors", {"origins": ["https://app.example.com"], "max_age": 600, "credentials": True}
    )
    answer = access(
        cors_plugin, preflight("https://app.example.com", ("Access-Control-Request-Headers", "X-Token"))
    )
    assert answer is not None
    assert answer.status == 204
    assert answer.body == b""
    assert dict(answer.headers) == {
        "Vary": "Origin",
        "Access-Control-Allow-Origin": "https://app.example.com",
        "Access-Control-Allow-Credentials": "true",
        "Access-Control-Allow-Methods": "GET,HEAD,PUT,PATCH,POST,DELETE,OPTIONS",
        "Access-Control-Allow-Headers": "X-Token",
        "Access-Control-Max-Age": "600",
    }


def test_cors_preflight_with_configured_headers_and_methods() -> None:
    cors_plugin = plugin(
        "cors", {"methods": ["GET", "POST"], "headers": ["Authorization", "X-Token"], "max_age": "10m"}
    )
    answer = access(
        cors_plugin, preflight("https://any.example", ("Access-Control-Request-Headers", "X-Other"))
    )
    assert answer is not None
    headers = dict(answer.headers)
    assert headers["Access-Control-Allow-Origin"] == "*"
    assert "Vary" not in headers  # any origin gets the same answer
    assert headers["Access-Control-Allow-Methods"] == "GET,POST"
    assert headers["Access-Control-Allow-Headers"] == "Authorization,X-Token"
    assert headers["Access-Control-Max-Age"] == "600"


def test_cors_preflight_from_a_disallowed_origin_gets_no_allow_origin() -> None:
    # Kong's behaviour: not a 403, but an answer the browser will not accept.
    cors_plugin = plugin("cors", {"origins": ["https://app.example.com"]})
    answer = access(cors_plugin, preflight("https://evil.example"))
    assert answer is not None
    assert answer.status == 204
    assert answer.headers == [("Vary", "Origin")]


def test_cors_any_origin_with_credentials_echoes_the_origin() -> None:
    cors_plugin = plugin("cors", {"origins": ["*"], "credentials": True})
    answer = access(cors_plugin, preflight("https://a.example"))
    assert answer is not None
    headers = dict(answer.headers)
    assert headers["Access-Control-Allow-Origin"] == "https://a.example"
    assert headers["Access-Control-Allow-Credentials"] == "true"
    assert headers["Vary"] == "Origin"


@pytest.mark.parametrize(
    "headers",
    [
        [],  # a plain OPTIONS request
        [("Origin", "https://app.example.com")],  # no Access-Control-Request-Method
        [("Access-Control-Request-Method", "PUT")],  # no Origin
    ],
)
def test_cors_options_that_is_not_a_preflight_goes_upstream(headers: list[tuple[str, str]]) -> None:
    assert access(plugin("cors"), make_request("OPTIONS", headers=headers)) is None


def test_cors_preflight_continue_delegates_to_the_upstream() -> None:
    cors_plugin = plugin("cors", {"origins": ["https://app.example.com"], "preflight_continue": True})
    request = preflight("https://app.example.com")
    assert access(cors_plugin, request) is None
    head = respond(cors_plugin, request, headers=[("Access-Control-Allow-Origin", "https://upstream")])
    assert head.headers.items() == [("Access-Control-Allow-Origin", "https://upstream")]  # untouched


def test_cors_actual_request_gets_allow_origin_in_the_response_phase() -> None:
    cors_plugin = plugin(
        "cors",
        {"origins": ["https://*.example.com"], "credentials": True, "exposed_headers": ["X-Total", "X-Page"]},
    )
    request = make_request(headers=[("Origin", "https://shop.example.com")])
    assert access(cors_plugin, request) is None
    head = respond(cors_plugin, request, headers=[("Vary", "Accept-Encoding")])
    assert head.headers.items() == [
        ("Vary", "Accept-Encoding"),
        ("Vary", "Origin"),
        ("Access-Control-Allow-Origin", "https://shop.example.com"),
        ("Access-Control-Allow-Credentials", "true"),
        ("Access-Control-Expose-Headers", "X-Total,X-Page"),
    ]


def test_cors_does_not_repeat_vary_origin() -> None:
    cors_plugin = plugin("cors", {"origins": ["https://app.example.com"]})
    request = make_request(headers=[("Origin", "https://app.example.com")])
    head = respond(cors_plugin, request, headers=[("Vary", "Accept-Encoding, origin")])
    assert head.headers.get_all("Vary") == ["Accept-Encoding, origin"]


def test_cors_removes_an_upstreams_allow_origin_for_a_disallowed_origin() -> None:
    cors_plugin = plugin("cors", {"origins": ["https://app.example.com"]})
    request = make_request(headers=[("Origin", "https://evil.example")])
    head = respond(
        cors_plugin,
        request,
        headers=[("Access-Control-Allow-Origin", "*"), ("Access-Control-Allow-Credentials", "true")],
    )
    assert head.headers.items() == [("Vary", "Origin")]


def test_cors_request_without_origin_only_varies() -> None:
    request = make_request()
    assert respond(plugin("cors", {"origins": ["https://a.example"]}), request).headers.items() == [
        ("Vary", "Origin")
    ]
    assert respond(plugin("cors"), request).headers.items() == []


@pytest.mark.parametrize(
    ("origins", "origin", "allowed"),
    [
        (["https://app.example.com"], "https://app.example.com", True),
        (["https://app.example.com"], "HTTPS://App.Example.COM", True),
        (["https://app.example.com"], "https://app.example.com:443", True),
        (["https://app.example.com:443"], "https://app.example.com", True),
        (["https://app.example.com"], "http://app.example.com", False),
        (["https://app.example.com"], "https://app.example.com:8443", False),
        (["https://app.example.com"], "https://app.example.com.evil", False),
        (["https://*.example.com"], "https://a.example.com", True),
        (["https://*.example.com"], "https://a.b.example.com", True),
        (["https://*.example.com"], "https://example.com", False),
        (["https://*.example.com"], "https://evilexample.com", False),
        (["https://*.example.com"], "https://a.example.com.evil.org", False),
        (["https://*.example.com"], "http://a.example.com", False),
        (["http://localhost:*"], "http://localhost:3000", True),
        (["http://localhost:*"], "http://localhost", False),
        ([r"^https://(app|admin)\.example\.com$"], "https://admin.example.com", True),
        ([r"^https://(app|admin)\.example\.com$"], "https://other.example.com", False),
        ([r"(app|admin)\.example\.com"], "http://app.example.com:8080", True),  # no ":": host only
        ([r"(app|admin)\.example\.com"], "http://app.example.com.evil", False),
        (["https://[::1]:8443"], "https://[::1]:8443", True),
        (["null"], "null", True),
        (["https://a.example", "https://b.example"], "https://b.example", True),
        (["https://a.example", "*"], "https://z.example", True),
    ],
)
def test_cors_origin_matching(origins: list[str], origin: str, allowed: bool) -> None:
    assert cors.OriginMatcher(origins).allows(origin) is allowed
    answer = access(plugin("cors", {"origins": origins}), preflight(origin))
    assert answer is not None
    assert ("Access-Control-Allow-Origin" in dict(answer.headers)) is allowed


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ({"origins": ["https://(broken"]}, 'origins[0]: bad regular expression "https://(broken"'),
        ({"origins": ["https://a.example, https://b.example"]}, "is not an origin (write one per entry)"),
        ({"methods": ["GET POST"]}, 'methods: "GET POST" is not a valid token'),
        ({"headers": ["X Token"]}, 'headers: "X Token" is not a valid token'),
        ({"exposed_headers": ["X:Total"]}, 'exposed_headers: "X:Total" is not a valid header name'),
        ({"max_age": "forever"}, 'max_age: expected a duration like "250ms", "30s" or "5m", got "forever"'),
        ({"max_age": -1}, "max_age: expected seconds >= 0, got -1"),
    ],
)
def test_cors_config_errors(table: dict[str, Any], message: str) -> None:
    ((path, found),) = config_errors("cors", table)
    assert path == ""
    assert message in found


# --- ip-restriction ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("table", "client_ip", "allowed"),
    [
        ({"allow": ["10.0.0.0/8"]}, "10.20.30.40", True),
        ({"allow": ["10.0.0.0/8"]}, "11.0.0.1", False),
        ({"allow": ["10.0.0.0/8"]}, "::ffff:10.1.2.3", True),  # IPv4-mapped IPv6 counts as IPv4
        ({"allow": ["192.0.2.7"]}, "192.0.2.7", True),
        ({"allow": ["192.0.2.7"]}, "192.0.2.8", False),
        ({"allow": ["2001:db8::/32"]}, "2001:db8:1::5", True),
        ({"allow": ["2001:db8::/32"]}, "2001:db9::5", False),
        ({"allow": ["fe80::/10"]}, "fe80::1%eth0", True),
        ({"allow": ["10.0.0.0/8"]}, "2001:db8::1", False),  # another family never matches
        ({"deny": ["10.0.0.0/8"]}, "10.0.0.1", False),
        ({"deny": ["10.0.0.0/8"]}, "192.0.2.1", True),
        ({"allow": ["10.0.0.0/8"], "deny": ["10.1.0.0/16"]}, "10.1.2.3", False),  # deny wins
        ({"allow": ["10.0.0.0/8"], "deny": ["10.1.0.0/16"]}, "10.2.0.1", True),
        ({"allow": ["10.0.0.0/8"]}, "not-an-ip", False),
        ({"deny": ["10.0.0.0/8"]}, "not-an-ip", True),
    ],
)
def test_ip_restriction(table: dict[str, Any], client_ip: str, allowed: bool) -> None:
    answer = access(plugin("ip-restriction", table), make_request(client_ip=client_ip))
    if allowed:
        assert answer is None
    else:
        assert answer is not None
        assert answer.status == 403
        assert error_of(answer) == {
            "status": 403,
            "code": "ip_not_allowed",
            "message": "Your IP address is not allowed",
        }


def test_ip_restriction_custom_status_and_message() -> None:
    answer = access(
        plugin("ip-restriction", {"deny": ["0.0.0.0/0"], "status": 401, "message": "office only"}),
        make_request(client_ip="203.0.113.9"),
    )
    assert answer is not None
    assert (answer.status, error_of(answer)["message"]) == (401, "office only")


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ({}, "ip-restriction needs at least one of allow or deny"),
        ({"allow": ["10.0.0.1/8"]}, 'allow[0]: "10.0.0.1/8" has host bits set (did you mean "10.0.0.0/8"?)'),
        ({"deny": ["10.0.0.0/8", "office"]}, 'deny[1]: "office" is not an IP address or CIDR block'),
        ({"deny": ["10.0.0.0/33"]}, 'deny[0]: "10.0.0.0/33" is not an IP address or CIDR block'),
    ],
)
def test_ip_restriction_config_errors(table: dict[str, Any], message: str) -> None:
    ((path, found),) = config_errors("ip-restriction", table)
    assert (path, found[: len(message)]) == ("", message)


def test_ip_restriction_status_must_be_an_error() -> None:
    assert config_errors("ip-restriction", {"deny": ["10.0.0.0/8"], "status": 200}) == [
        ("status", "expected `int` >= 400")
    ]


networks_v4 = st.builds(
    lambda address, prefix: str(ipaddress.ip_network(f"{address}/{prefix}", strict=False)),
    st.ip_addresses(v=4),
    st.integers(0, 32),
)
networks_v6 = st.builds(
    lambda address, prefix: str(ipaddress.ip_network(f"{address}/{prefix}", strict=False)),
    st.ip_addresses(v=6),
    st.integers(0, 128),
)


@settings(max_examples=300, deadline=None)
@given(
    networks=st.lists(st.one_of(networks_v4, networks_v6), min_size=1, max_size=6),
    address=st.one_of(st.ip_addresses(v=4), st.ip_addresses(v=6)),
)
def test_address_set_agrees_with_ipaddress(
    networks: list[str], address: ipaddress.IPv4Address | ipaddress.IPv6Address
) -> None:
    checked: ipaddress.IPv4Address | ipaddress.IPv6Address = address
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        checked = address.ipv4_mapped
    expected = any(checked in ipaddress.ip_network(network) for network in networks)
    assert ip_restriction.AddressSet(networks).contains(str(address)) is expected


# --- request-size-limit ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("size", "length", "refused"),
    [
        ("1MiB", 1024 * 1024, False),
        ("1MiB", 1024 * 1024 + 1, True),
        ("1MB", 1_000_001, True),
        ("512", 512, False),
        (512, 513, True),
        ("0", 0, False),
        ("0", 1, True),
    ],
)
def test_request_size_limit_by_content_length(size: str | int, length: int, refused: bool) -> None:
    limiter = plugin("request-size-limit", {"allowed_payload_size": size})
    answer = access(limiter, make_request("POST", content_length=length))
    if not refused:
        assert answer is None
        return
    assert answer is not None
    assert answer.status == 413
    error = error_of(answer)
    assert error["code"] == "payload_too_large"
    assert error["message"].startswith("Request size limit exceeded")


def test_request_size_limit_default_is_128_mib() -> None:
    limiter = plugin("request-size-limit")
    assert isinstance(limiter, request_size_limit.RequestSizeLimit)
    assert limiter.limit == 128 * 1024 * 1024


def test_request_size_limit_hands_a_chunked_body_to_the_engine() -> None:
    limiter = plugin("request-size-limit", {"allowed_payload_size": "64KiB"})
    request = make_request("POST", headers=[("Transfer-Encoding", "chunked")])
    assert access(limiter, request) is None
    assert request.ctx[request_size_limit.BODY_LIMIT_KEY] == 64 * 1024
    # Two limits on one request (a global and a stricter plugin instance): the smaller wins.
    access(plugin("request-size-limit", {"allowed_payload_size": "1MiB"}), request)
    assert request.ctx[request_size_limit.BODY_LIMIT_KEY] == 64 * 1024


def test_request_size_limit_can_require_content_length() -> None:
    limiter = plugin("request-size-limit", {"require_content_length": True})
    answer = access(limiter, make_request("POST", headers=[("Transfer-Encoding", "chunked")]))
    assert answer is not None
    assert (answer.status, error_of(answer)["code"]) == (411, "length_required")
    assert access(limiter, make_request("GET")) is None  # no body at all is fine


def test_request_size_limit_config_errors() -> None:
    ((path, message),) = config_errors("request-size-limit", {"allowed_payload_size": "1M"})
    assert path == ""
    assert message.startswith('allowed_payload_size: expected a size like "512B"')
    assert message.endswith('(did you mean "1MiB"?)')


# --- request-transformer -----------------------------------------------------------------------


def transform(table: dict[str, Any], request: Request) -> Request:
    chain = PluginChain([plugin("request-transformer", table)])
    assert chain.access == ()  # rewrite phase only: access plugins see the client's request
    assert access(chain, request) is None
    return request


def test_request_transformer_header_semantics() -> None:
    request = transform(
        {
            "remove": {"headers": ["X-Debug"]},
            "rename": {"headers": {"X-Client": "X-Caller", "X-Absent": "X-Never"}},
            "replace": {"headers": {"X-Env": "prod", "X-Missing": "no"}},
            "add": {"headers": {"X-Env": "ignored", "X-New": "yes", "X-Multi": ["a", "b"]}},
            "append": {"headers": {"X-Tag": "edge", "X-Caller": "gateway"}},
        },
        make_request(
            headers=[
                ("X-Debug", "1"),
                ("x-debug", "2"),
                ("X-Client", "web"),
                ("X-Env", "dev"),
                ("X-Tag", "client"),
            ]
        ),
    )
    assert request.headers.items() == [
        ("Host", "api.example.com"),
        ("X-Caller", "web"),
        ("X-Tag", "client"),
        ("X-Env", "prod"),
        ("X-New", "yes"),
        ("X-Multi", "a"),
        ("X-Multi", "b"),
        ("X-Tag", "edge"),
        ("X-Caller", "gateway"),
    ]


def test_request_transformer_rename_replaces_an_existing_target() -> None:
    request = transform(
        {"rename": {"headers": {"X-Old": "X-New"}}},
        make_request(headers=[("X-New", "stale"), ("X-Old", "fresh")]),
    )
    assert request.headers.get_all("X-New") == ["fresh"]
    assert "X-Old" not in request.headers


def test_request_transformer_query_semantics() -> None:
    request = transform(
        {
            "remove": {"querystring": ["debug"]},
            "rename": {"querystring": {"q": "query"}},
            "replace": {"querystring": {"page": "1", "missing": "x"}},
            "add": {"querystring": {"page": "9", "lang": "en gb", "tags": ["a&b", "c"]}},
            "append": {"querystring": {"page": "2"}},
        },
        make_request(query="q=caf%C3%A9+au+lait&debug=1&page=5&keep=%7Eraw+form&debug"),
    )
    assert request.query == (
        "query=caf%C3%A9+au+lait&page=1&keep=%7Eraw+form&lang=en%20gb&tags=a%26b&tags=c&page=2"
    )
    assert request.path_changed


def test_request_transformer_leaves_an_untouched_query_alone() -> None:
    request = transform({"add": {"querystring": {"v": "2"}}}, make_request(query="v=1&x=%41"))
    assert request.query == "v=1&x=%41"
    assert not request.path_changed
    request = transform({"add": {"querystring": {"v": "2"}}}, make_request(query=""))
    assert request.query == "v=2"


def test_request_transformer_matches_decoded_query_names() -> None:
    request = transform({"remove": {"querystring": ["a b"]}}, make_request(query="a+b=1&a%20b=2&ab=3"))
    assert request.query == "ab=3"


@pytest.mark.parametrize(
    ("table", "path", "message"),
    [
        ({"add": {"headers": {"Content-Length": "5"}}}, "add", 'headers: "Content-Length" is managed'),
        ({"remove": {"headers": ["Transfer-Encoding"]}}, "remove", 'headers: "Transfer-Encoding" is managed'),
        ({"rename": {"headers": {"X-A": "Connection"}}}, "rename", 'headers: "Connection" is managed'),
        ({"append": {"headers": {"X A": "1"}}}, "append", 'headers: "X A" is not a valid header name'),
        ({"add": {"headers": {"X-A": "1\r\nX-B: 2"}}}, "add", 'headers: the value of "X-A" contains CR'),
        ({"add": {"headers": {"X-A": []}}}, "add", 'headers: the list of values of "X-A" is empty'),
        ({"add": {"querystring": {"": "1"}}}, "add", "querystring: a query argument name cannot be empty"),
        ({"add": {"body": {}}}, "add", "object contains unknown field `body`"),
        ({"add": {"headers": {"X-A": 1}}}, "add.headers[...]", "expected `str | array`, got `int`"),
    ],
)
def test_request_transformer_config_errors(table: dict[str, Any], path: str, message: str) -> None:
    ((found_path, found),) = config_errors("request-transformer", table)
    assert found_path == path
    assert found.startswith(message)


# --- response-transformer ----------------------------------------------------------------------


def test_response_transformer_header_semantics() -> None:
    transformer = plugin(
        "response-transformer",
        {
            "remove": {"headers": ["Server", "X-Powered-By"]},
            "rename": {"headers": {"X-Upstream-Time": "X-Backend-Time"}},
            "replace": {"headers": {"Cache-Control": "no-store", "X-Absent": "x"}},
            "add": {"headers": {"Cache-Control": "public", "X-Frame-Options": "DENY"}},
            "append": {"headers": {"Set-Cookie": ["a=1", "b=2"]}},
        },
    )
    assert PluginChain([transformer]).response == (transformer,)
    head = respond(
        transformer,
        make_request(),
        headers=[
            ("Server", "nginx"),
            ("Cache-Control", "max-age=60"),
            ("X-Upstream-Time", "12ms"),
            ("Set-Cookie", "s=0"),
        ],
    )
    assert head.headers.items() == [
        ("X-Backend-Time", "12ms"),
        ("Set-Cookie", "s=0"),
        ("Cache-Control", "no-store"),
        ("X-Frame-Options", "DENY"),
        ("Set-Cookie", "a=1"),
        ("Set-Cookie", "b=2"),
    ]


def test_response_transformer_refuses_the_wrong_phase() -> None:
    transformer = plugin("response-transformer", {"add": {"headers": {"X-A": "1"}}})
    request = make_request()
    head = ResponseHead(200, [], request)
    request.phase = Phase.LOG
    with pytest.raises(PhaseError):
        transformer.response(request, head)


def test_response_transformer_has_no_querystring() -> None:
    assert config_errors("response-transformer", {"add": {"querystring": {"a": "1"}}}) == [
        ("add", "object contains unknown field `querystring`")
    ]


# --- request-id --------------------------------------------------------------------------------


def test_request_id_uses_the_gateway_id_under_a_custom_header() -> None:
    ids = plugin("request-id", {"header_name": "X-Correlation-Id"})
    request = make_request()
    assert access(ids, request) is None
    assert request.headers.get("X-Correlation-Id") == request.request_id
    head = respond(ids, request)
    assert head.headers.items() == [("X-Correlation-Id", request.request_id)]


def test_request_id_keeps_the_clients_id() -> None:
    ids = plugin("request-id", {"header_name": "X-Correlation-Id", "generator": "uuid4"})
    request = make_request(headers=[("X-Correlation-Id", "client-chosen")])
    access(ids, request)
    assert request.headers.get_all("X-Correlation-Id") == ["client-chosen"]
    head = respond(ids, request, headers=[("X-Correlation-Id", "upstream-said")])
    assert head.headers.get_all("X-Correlation-Id") == ["client-chosen"]


def test_request_id_uuid4_generator() -> None:
    ids = plugin("request-id", {"generator": "uuid4"})
    first, second = make_request(), make_request()
    access(ids, first)
    access(ids, second)
    values = [first.headers.get("X-Request-Id"), second.headers.get("X-Request-Id")]
    assert all(value is not None and uuid.UUID(value).version == 4 for value in values)
    assert values[0] != values[1]


def test_request_id_without_echo_removes_it_from_the_response() -> None:
    ids = plugin("request-id", {"header_name": "Kong-Request-ID", "echo_downstream": False})
    request = make_request()
    access(ids, request)
    assert request.headers.get("Kong-Request-ID") == request.request_id
    head = respond(ids, request, headers=[("Kong-Request-ID", "leaked"), ("Server", "x")])
    assert head.headers.items() == [("Server", "x")]


def test_request_id_runs_before_every_other_plugin() -> None:
    chain = PluginChain(
        [
            plugin("cors"),
            plugin("request-id"),
            plugin("ip-restriction", {"deny": ["192.0.2.0/24"]}),
        ]
    )
    assert [type(p).name for p in chain.access] == ["request-id", "cors", "ip-restriction"]
    request = make_request(client_ip="192.0.2.1")
    refused = access(chain, request)
    assert refused is not None and refused.status == 403
    assert request.ctx[request_id.PLUGIN.CTX_KEY] == request.request_id  # set before the refusal


def test_request_id_config_errors() -> None:
    assert config_errors("request-id", {"generator": "snowflake"}) == [
        ("generator", "invalid enum value 'snowflake'")
    ]
    ((path, message),) = config_errors("request-id", {"header_name": "X Id"})
    assert (path, message) == ("", 'header_name: "X Id" is not a valid header name')


def test_every_config_field_is_documented() -> None:
    # Registration checks the top level; nested tables (the transformers') are documented too.
    def walk(struct: type[msgspec.Struct]) -> Iterator[tuple[str, Any]]:
        for info in msgspec.structs.fields(struct):
            yield f"{struct.__name__}.{info.name}", info.type
            inner = getattr(info.type, "__origin__", info.type)
            if isinstance(inner, type) and issubclass(inner, msgspec.Struct):
                yield from walk(inner)

    for name in REGISTRY.names():
        cls = REGISTRY.get(name)
        assert cls is not None
        for where, annotated in walk(cls.Config):
            metadata = getattr(annotated, "__metadata__", ())
            assert any(isinstance(m, msgspec.Meta) and m.description for m in metadata), where


# --- through the engine ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def upstream() -> Iterator[Upstream]:
    with running_upstream() as server:
        yield server


@pytest.fixture(scope="module")
def engine(upstream: Upstream) -> Iterator[EngineThread]:
    def routes(loop: asyncio.AbstractEventLoop, ticker: Any) -> list[tuple[str, Any]]:
        pool = UpstreamPool("backend", loop, Balancer([Target(upstream.addr)]), ticker)

        def proxy(name: str, *plugins: Plugin) -> RouteAction:
            return RouteAction.proxy(name, pool).with_plugins(PluginChain(plugins))

        return [
            (
                "/cors/{proxy+}",
                proxy(
                    "cors",
                    plugin("cors", {"origins": ["https://app.example.com"], "exposed_headers": ["X-Total"]}),
                    plugin("request-id", {"header_name": "X-Correlation-Id"}),
                ),
            ),
            (
                "/transform/{proxy+}",
                proxy(
                    "transform",
                    plugin(
                        "request-transformer",
                        {
                            "remove": {"headers": ["X-Secret"], "querystring": ["token"]},
                            "add": {"headers": {"X-Env": "prod"}, "querystring": {"v": "2"}},
                        },
                    ),
                    plugin("response-transformer", {"add": {"headers": {"X-Frame-Options": "DENY"}}}),
                ),
            ),
            (
                "/limited/{proxy+}",
                proxy("limited", plugin("request-size-limit", {"allowed_payload_size": "1KiB"})),
            ),
            ("/private/{proxy+}", proxy("private", plugin("ip-restriction", {"allow": ["10.0.0.0/8"]}))),
        ]

    with running_engine(routes) as running:
        yield running


def upstream_headers(response: httpx.Response) -> dict[str, str]:
    return {name.lower(): value for name, value in echo(response.content)["headers"]}


def test_engine_answers_a_preflight_without_the_upstream(engine: EngineThread, upstream: Upstream) -> None:
    before = upstream.requests
    response = httpx.options(
        f"{engine.url}/cors/echo",
        headers={"Origin": "https://app.example.com", "Access-Control-Request-Method": "DELETE"},
    )
    assert response.status_code == 204
    assert response.headers["access-control-allow-origin"] == "https://app.example.com"
    assert response.headers["access-control-allow-methods"] == "GET,HEAD,PUT,PATCH,POST,DELETE,OPTIONS"
    assert response.headers["x-correlation-id"]  # the response phase ran on the edge answer
    assert upstream.requests == before


def test_engine_cors_actual_request_and_request_id(engine: EngineThread) -> None:
    response = httpx.get(f"{engine.url}/cors/echo", headers={"Origin": "https://app.example.com"})
    assert response.status_code == 200
    assert response.headers["access-control-allow-origin"] == "https://app.example.com"
    assert response.headers["access-control-expose-headers"] == "X-Total"
    assert response.headers["vary"] == "Origin"
    seen = upstream_headers(response)
    assert seen["x-correlation-id"] == response.headers["x-correlation-id"] == seen["x-request-id"]


def test_engine_transformers(engine: EngineThread) -> None:
    response = httpx.get(
        f"{engine.url}/transform/echo?token=s3cret&q=1", headers={"X-Secret": "s3cret", "X-Keep": "1"}
    )
    assert response.status_code == 200
    seen = upstream_headers(response)
    assert "x-secret" not in seen
    assert (seen["x-env"], seen["x-keep"]) == ("prod", "1")
    assert echo(response.content)["path"] == "/transform/echo?q=1&v=2"
    assert response.headers["x-frame-options"] == "DENY"


def test_engine_request_size_limit(engine: EngineThread, upstream: Upstream) -> None:
    before = upstream.requests
    refused = httpx.post(f"{engine.url}/limited/echo", content=b"x" * 2048)
    assert refused.status_code == 413
    assert refused.json()["error"]["code"] == "payload_too_large"
    assert upstream.requests == before
    assert httpx.post(f"{engine.url}/limited/echo", content=b"x" * 1024).status_code == 200


def test_engine_ip_restriction(engine: EngineThread, upstream: Upstream) -> None:
    before = upstream.requests
    response = httpx.get(f"{engine.url}/private/echo")  # from 127.0.0.1
    assert response.status_code == 403
    assert response.json()["error"] == {
        "status": 403,
        "code": "ip_not_allowed",
        "message": "Your IP address is not allowed",
    }
    assert upstream.requests == before
