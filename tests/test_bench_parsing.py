"""The benchmark harness's pure parts: wrk output parsing and the summary math (no processes)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

# bench/ is a package at the repository root, which pytest does not necessarily put on sys.path.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import (
    SocketErrors,
    WrkParseError,
    WrkResult,
    bounded_foreign_ticks,
    compare,
    median,
    median_pair_ratio,
    pair_ratios,
    parse_wrk_output,
    render_template,
    summarize_target,
    time_to_ms,
)

# Captured from wrk 4.1.0 (Debian) against nginx on this machine.
WRK_OK = """\
Running 1s test @ http://127.0.0.1:18081/
  1 threads and 16 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency    66.21us   14.55us 316.00us   86.61%
    Req/Sec   183.57k     2.72k  188.28k    70.00%
  Latency Distribution
     50%   65.00us
     75%   70.00us
     90%   77.00us
     99%  117.00us
  182291 requests in 1.00s, 25.90MB read
Requests/sec: 182138.91
Transfer/sec:     25.88MB
"""

WRK_MIXED_UNITS = """\
Running 2s test @ http://127.0.0.1:41735/
  1 threads and 64 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     1.83ms    1.91ms  12.90ms   84.20%
    Req/Sec    47.25k     3.93k   56.12k    70.00%
  Latency Distribution
     50%  687.00us
     75%    2.83ms
     90%    4.72ms
     99%    8.58ms
  94412 requests in 2.01s, 13.42MB read
Requests/sec:  47052.89
Transfer/sec:      6.69MB
"""

WRK_NON_2XX = """\
Running 1s test @ http://127.0.0.1:18081/err
  1 threads and 16 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency    68.94us   21.82us   0.92ms   90.02%
    Req/Sec   177.07k     2.28k  180.42k    63.64%
  Latency Distribution
     50%   67.00us
     75%   71.00us
     90%   79.00us
     99%  136.00us
  193363 requests in 1.10s, 32.82MB read
  Non-2xx or 3xx responses: 193363
Requests/sec: 175893.92
Transfer/sec:     29.86MB
"""

# Seconds as the unit; wrk pads these lines with a trailing space.
WRK_SECONDS = """\
Running 3s test @ http://127.0.0.1:18081/big
  1 threads and 4 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     1.36s    86.19ms   1.44s   100.00%
    Req/Sec     2.50      0.71     3.00    100.00%
  Latency Distribution
     50%    1.44s 
     75%    1.44s 
     90%    1.44s 
     99%    1.44s 
  8 requests in 3.01s, 2.67MB read
Requests/sec:      2.66
Transfer/sec:      0.89MB
"""  # noqa: W291

WRK_TIMEOUTS = """\
Running 3s test @ http://127.0.0.1:18081/big
  1 threads and 4 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     0.00us    0.00us   0.00us    -nan%
    Req/Sec     2.50      0.71     3.00    100.00%
  Latency Distribution
     50%    0.00us
     75%    0.00us
     90%    0.00us
     99%    0.00us
  8 requests in 3.01s, 2.67MB read
  Socket errors: connect 0, read 0, write 0, timeout 8
Requests/sec:      2.66
Transfer/sec:      0.89MB
"""

WRK_NO_LATENCY_FLAG = """\
Running 2s test @ http://127.0.0.1:8080/
  1 threads and 64 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     1.02ms  245.11us   4.20ms   77.10%
    Req/Sec    62.10k     1.20k   64.00k    80.00%
  124200 requests in 2.00s, 17.65MB read
  Socket errors: connect 3, read 12, write 1, timeout 0
Requests/sec:  62091.50
Transfer/sec:      8.82MB
"""

WRK_CONNECT_REFUSED = "unable to connect to 127.0.0.1:18099 Connection refused\n"


def test_parses_a_clean_run_in_microseconds() -> None:
    r = parse_wrk_output(WRK_OK)
    assert r.requests == 182291
    assert r.duration_s == pytest.approx(1.0)
    assert r.rps == pytest.approx(182138.91)
    assert r.latency_avg_ms == pytest.approx(0.06621)
    assert r.latency_max_ms == pytest.approx(0.316)
    assert r.percentiles_ms == pytest.approx({"50": 0.065, "75": 0.070, "90": 0.077, "99": 0.117})
    assert r.p50_ms == pytest.approx(0.065)
    assert r.p99_ms == pytest.approx(0.117)
    assert r.non_2xx_3xx == 0
    assert r.socket_errors == SocketErrors()
    assert r.valid
    assert r.problems() == []


def test_parses_mixed_units_in_one_distribution() -> None:
    r = parse_wrk_output(WRK_MIXED_UNITS)
    assert r.percentiles_ms == pytest.approx({"50": 0.687, "75": 2.83, "90": 4.72, "99": 8.58})
    assert r.latency_max_ms == pytest.approx(12.9)
    assert r.duration_s == pytest.approx(2.01)
    assert r.valid


def test_parses_seconds_with_trailing_space() -> None:
    r = parse_wrk_output(WRK_SECONDS)
    assert r.p50_ms == pytest.approx(1440.0)
    assert r.p99_ms == pytest.approx(1440.0)
    assert r.latency_avg_ms == pytest.approx(1360.0)
    assert r.latency_max_ms == pytest.approx(1440.0)
    assert r.requests == 8
    assert r.rps == pytest.approx(2.66)


def test_non_2xx_responses_make_a_run_invalid() -> None:
    r = parse_wrk_output(WRK_NON_2XX)
    assert r.non_2xx_3xx == 193363
    assert not r.valid
    assert r.problems() == ["193363 non-2xx/3xx responses"]
    # Everything else is still read, so the report can show what happened.
    assert r.rps == pytest.approx(175893.92)
    assert r.latency_max_ms == pytest.approx(0.92)


def test_socket_timeouts_make_a_run_invalid() -> None:
    r = parse_wrk_output(WRK_TIMEOUTS)
    assert r.socket_errors == SocketErrors(connect=0, read=0, write=0, timeout=8)
    assert r.socket_errors.total == 8
    assert not r.valid
    assert r.problems() == ["socket errors: connect 0, read 0, write 0, timeout 8"]


def test_every_socket_error_kind_is_read_and_latency_flag_is_optional() -> None:
    r = parse_wrk_output(WRK_NO_LATENCY_FLAG)
    assert r.socket_errors == SocketErrors(connect=3, read=12, write=1, timeout=0)
    assert r.percentiles_ms == {}
    assert r.latency_avg_ms == pytest.approx(1.02)
    assert r.rps == pytest.approx(62091.5)
    assert "socket errors: connect 3, read 12, write 1, timeout 0" in r.problems()


def test_failed_wrk_output_is_an_error_not_a_zero() -> None:
    with pytest.raises(WrkParseError, match="Requests/sec"):
        parse_wrk_output(WRK_CONNECT_REFUSED)
    truncated = WRK_OK.replace("  182291 requests in 1.00s, 25.90MB read\n", "")
    with pytest.raises(WrkParseError, match="requests in"):
        parse_wrk_output(truncated)


def test_a_run_with_no_requests_is_invalid() -> None:
    r = parse_wrk_output(WRK_OK.replace("182291 requests", "0 requests"))
    assert r.problems() == ["no requests completed"]


@pytest.mark.parametrize(
    ("value", "unit", "expected"),
    [
        ("65.00", "us", 0.065),
        ("2.83", "ms", 2.83),
        ("1.44", "s", 1440.0),
        ("1.50", "m", 90_000.0),
        ("1", "h", 3.6e6),
    ],
)
def test_time_units(value: str, unit: str, expected: float) -> None:
    assert time_to_ms(value, unit) == pytest.approx(expected)


def test_unknown_time_unit_is_rejected() -> None:
    with pytest.raises(WrkParseError):
        time_to_ms("1", "d")


# --- summary math --------------------------------------------------------------------------------


def run(rps: float, p50: float = 0.5, p99: float = 2.0, non_2xx: int = 0) -> WrkResult:
    return WrkResult(
        requests=int(rps * 10),
        duration_s=10.0,
        rps=rps,
        latency_avg_ms=p50,
        latency_max_ms=p99 * 2,
        percentiles_ms={"50": p50, "75": p50, "90": p99, "99": p99},
        non_2xx_3xx=non_2xx,
    )


def test_median_of_odd_even_and_empty() -> None:
    assert median([3.0, 1.0, 2.0]) == 2.0
    assert median([4.0, 1.0, 3.0, 2.0]) == 2.5
    assert median([]) is None


def test_pair_ratios_skip_pairs_with_a_missing_side() -> None:
    assert pair_ratios([10.0, None, 30.0, 8.0], [5.0, 5.0, None, 0.0]) == [2.0]
    assert pair_ratios([9.0, 12.0], [10.0, 10.0]) == pytest.approx([0.9, 1.2])
    with pytest.raises(ValueError, match="unequal"):
        pair_ratios([1.0], [1.0, 2.0])


def test_median_pair_ratio_differs_from_ratio_of_medians() -> None:
    # Pair 3 ran while the machine was slow for both; per-pair ratios cancel that out.
    candidate = [90.0, 110.0, 45.0]
    reference = [100.0, 100.0, 50.0]
    assert median_pair_ratio(candidate, reference) == pytest.approx(0.9)
    assert median(candidate) == 90.0 and median(reference) == 100.0
    assert median_pair_ratio([None], [1.0]) is None


def test_summarize_target_excludes_invalid_runs() -> None:
    s = summarize_target([run(100.0, p99=2.0), run(300.0, non_2xx=5), None, run(200.0, p50=0.7, p99=4.0)])
    assert s.rps_runs == [100.0, None, None, 200.0]
    assert s.rps_median == 150.0
    assert s.p50_median_ms == pytest.approx(0.6)
    assert s.p99_median_ms == pytest.approx(3.0)
    assert (s.valid_runs, s.invalid_runs) == (2, 2)


def test_summarize_target_with_no_valid_run() -> None:
    s = summarize_target([None, run(5.0, non_2xx=1)])
    assert s.rps_median is None and s.p99_median_ms is None
    assert (s.valid_runs, s.invalid_runs) == (0, 2)


def test_compare_takes_the_median_of_per_pair_ratios() -> None:
    gateway = [run(80.0, p99=3.0), run(120.0, p99=2.0), run(95.0, p99=9.0, non_2xx=1)]
    nginx = [run(100.0, p99=2.0), run(100.0, p99=2.0), run(100.0, p99=2.0)]
    c = compare(gateway, nginx)
    assert c.rps_pair_ratios == pytest.approx([0.8, 1.2])  # the invalid third pair is left out
    assert c.rps_ratio == pytest.approx(1.0)
    assert c.p99_pair_ratios == pytest.approx([1.5, 1.0])
    assert c.p99_ratio == pytest.approx(1.25)


def test_foreign_cpu_of_ended_children_is_capped_by_unexplained_busy_time() -> None:
    # A parent reaped a child that ran 1100 ticks over its life, but the machine was busy only
    # 300 ticks beyond what ours, kernel threads and the live foreign processes (100) explain.
    assert bounded_foreign_ticks(own=100, reaped=1100, unexplained=400) == 400
    assert bounded_foreign_ticks(own=100, reaped=50, unexplained=400) == 150
    assert bounded_foreign_ticks(own=100, reaped=50, unexplained=20) == 100
    assert bounded_foreign_ticks(own=0, reaped=80, unexplained=-30) == 0


# --- config templates ----------------------------------------------------------------------------


def test_render_template_fills_every_placeholder_or_fails() -> None:
    assert render_template("listen @PORT@; # @...@ stays", {"PORT": "8080"}) == "listen 8080; # @...@ stays"
    with pytest.raises(KeyError, match="UPSTREAM_PORT"):
        render_template("@PORT@ @UPSTREAM_PORT@", {"PORT": "1"})


def test_shipped_templates_render_with_the_values_the_scripts_give() -> None:
    bench = Path(__file__).resolve().parent.parent / "bench"
    values = {"PREFIX": "/tmp/x", "PORT": "1", "UPSTREAM_PORT": "2", "USER_LINE": "", "NOFILE": "20000"}
    for template in [*sorted((bench / "nginx").glob("*.conf.in")), *sorted(bench.glob("*.toml.in"))]:
        assert "@" not in render_template(template.read_text(), values).replace("@...@", ""), template
