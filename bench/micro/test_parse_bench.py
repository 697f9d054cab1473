"""Request-head parsing: our parser against httptools (llhttp) on a typical 8-header browser GET.

Measurements:
- test_ours_head_loop: bench_parse_head runs RequestParser.parse_head LOOP times inside the
  compiled module (what the connection protocol does: spans, no Python objects); the per-parse
  cost is mean / LOOP, in extra_info["ns_per_parse"]. It also times httptools the way a server
  uses it and asserts we are not slower (the requirement for this parser).
- test_ours_parse_request: the Python-level parse_request (builds bytes for every field).
- test_httptools_feed_data: one feed_data call on a kept-alive HttpRequestParser whose protocol
  object stores the URL and the headers, as a real server does.

Correctness is asserted before anything is timed.

Run: make bench-micro, or .venv/bin/pytest bench/micro/test_parse_bench.py --benchmark-only
"""

from __future__ import annotations

import importlib
import timeit
from typing import Any

import httptools
import pytest

# Imported by name: mypy cannot follow the editable install's folder mapping to _fastpath/.
parser_module = importlib.import_module("gateway._fastpath.parser")

LOOP = 10_000

REQUEST = (
    b"GET /api/v1/orders/12345?include=items&expand=customer HTTP/1.1\r\n"
    b"Host: shop.example.com\r\n"
    b"User-Agent: Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0\r\n"
    b"Accept: text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8\r\n"
    b"Accept-Encoding: gzip, deflate, br, zstd\r\n"
    b"Accept-Language: en-US,en;q=0.5\r\n"
    b"Connection: keep-alive\r\n"
    b"Cookie: session=8f14e45fceea167a5a36dedd4bea2543; theme=dark; _ga=GA1.2.1234567890.1700000000\r\n"
    b"Referer: https://shop.example.com/orders?page=2\r\n"
    b"\r\n"
)

EXPECTED_HEADERS = [
    (name, value.strip())
    for name, _, value in (line.partition(b":") for line in REQUEST.split(b"\r\n")[1:-2])
]


class ServerProtocol:
    """What a server's httptools protocol keeps per request: the URL and the header list."""

    def __init__(self) -> None:
        self.url = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.complete = 0

    def on_message_begin(self) -> None:
        self.url = b""
        self.headers = []

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def on_message_complete(self) -> None:
        self.complete += 1


@pytest.fixture(scope="module")
def compiled() -> Any:
    assert str(parser_module.__file__).endswith(".so"), "benchmark the compiled parser (build it first)"
    return parser_module


def llhttp_parser() -> tuple[httptools.HttpRequestParser, ServerProtocol]:
    protocol = ServerProtocol()
    parser = httptools.HttpRequestParser(protocol)
    parser.feed_data(REQUEST)
    assert protocol.url == b"/api/v1/orders/12345?include=items&expand=customer"
    assert protocol.headers == EXPECTED_HEADERS
    assert parser.should_keep_alive()
    return parser, protocol


def httptools_ns_per_parse() -> float:
    parser, _ = llhttp_parser()
    feed = parser.feed_data
    best = min(timeit.repeat(lambda: feed(REQUEST), number=LOOP, repeat=5))
    return best / LOOP * 1e9


def test_ours_head_loop(benchmark: Any, compiled: Any) -> None:
    parser = compiled.RequestParser()
    assert compiled.bench_parse_head(parser, REQUEST, 1) == len(REQUEST)
    result = benchmark(compiled.bench_parse_head, parser, REQUEST, LOOP)
    assert result == len(REQUEST) * LOOP
    ours = benchmark.stats.stats.min / LOOP * 1e9
    theirs = httptools_ns_per_parse()
    benchmark.extra_info["parses_per_round"] = LOOP
    benchmark.extra_info["ns_per_parse"] = round(benchmark.stats.stats.mean / LOOP * 1e9, 1)
    benchmark.extra_info["ns_per_parse_min"] = round(ours, 1)
    benchmark.extra_info["httptools_ns_per_parse_min"] = round(theirs, 1)
    assert ours <= theirs, f"head parse {ours:.0f} ns is slower than httptools {theirs:.0f} ns"


def test_ours_parse_request(benchmark: Any, compiled: Any) -> None:
    request = compiled.parse_request(REQUEST)
    assert request.target == b"/api/v1/orders/12345?include=items&expand=customer"
    assert request.headers == EXPECTED_HEADERS
    assert request.keep_alive
    result = benchmark(compiled.parse_request, REQUEST)
    assert result.consumed == len(REQUEST)


def test_httptools_feed_data(benchmark: Any) -> None:
    parser, protocol = llhttp_parser()
    before = protocol.complete
    benchmark(parser.feed_data, REQUEST)
    assert protocol.complete > before
    assert protocol.headers == EXPECTED_HEADERS
