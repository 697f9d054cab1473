"""The real gateway's process model: reload on SIGHUP, worker respawn, graceful stop."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path

import httpx

from tests.support.gateway_process import GatewayProcess, running_gateway
from tests.support.upstream import running_upstream


def static_config(body: str) -> str:
    return f'[[routes]]\npath = "/hello"\nstatic = {{ status = 200, body = "{body}" }}\n'


def wait_until(predicate: object, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return
        time.sleep(0.05)
    raise AssertionError("condition not reached in time")


def body_of(gw: GatewayProcess) -> str:
    try:
        return httpx.get(f"{gw.url}/hello", timeout=2).text
    except httpx.HTTPError:
        return ""


def rewrite_config(gw: GatewayProcess, body: str) -> None:
    text = gw.config_path.read_text()
    head = text.split("[[routes]]")[0]
    gw.config_path.write_text(head + static_config(body))


def test_reload_applies_a_good_config_and_refuses_a_bad_one() -> None:
    with running_gateway(static_config("one")) as gw:
        assert body_of(gw) == "one"
        rewrite_config(gw, "two")
        gw.signal(signal.SIGHUP)
        wait_until(lambda: body_of(gw) == "two")

        good = gw.config_path.read_text()
        gw.config_path.write_text(good + '\n[[routes]]\npath = "/x"\nupstream = "missing"\n')
        gw.signal(signal.SIGHUP)
        wait_until(
            lambda: 'no upstream named \\"missing\\"' in gw.log() or 'no upstream named "missing"' in gw.log()
        )
        # the old config keeps serving
        for _ in range(10):
            assert body_of(gw) == "two"


def test_killed_worker_is_respawned() -> None:
    with running_gateway(static_config("alive")) as gw:
        [worker] = gw.worker_pids()
        os.kill(worker, signal.SIGKILL)
        wait_until(lambda: gw.worker_pids() not in ([], [worker]))
        wait_until(lambda: body_of(gw) == "alive")


def test_sigterm_drains_in_flight_requests_then_exits() -> None:
    with running_upstream() as upstream:
        config = (
            f'[upstreams.backend]\ntargets = ["{upstream.addr}"]\n'
            '[[routes]]\npath = "$default"\nupstream = "backend"\n'
        )
        with running_gateway(config) as gw:
            results: list[int] = []
            slow = threading.Thread(
                target=lambda: results.append(httpx.get(f"{gw.url}/slow?ms=800", timeout=5).status_code)
            )
            slow.start()
            wait_until(lambda: upstream.requests >= 0 and len(gw.worker_pids()) == 1)
            time.sleep(0.2)  # the request is now in flight at the upstream
            gw.signal(signal.SIGTERM)
            slow.join(5)
            assert results == [200]
            assert gw.proc is not None
            assert gw.proc.wait(15) == 0


def test_access_log_lines_from_the_engine(tmp_path: Path) -> None:
    log_file = tmp_path / "access.log"
    with running_upstream() as upstream:
        config = (
            f'[upstreams.backend]\ntargets = ["{upstream.addr}"]\n'
            '[[routes]]\nname = "api"\npath = "/api/{proxy+}"\nupstream = "backend"\n' + static_config("hi")
        )
        with running_gateway(config, server_extra=f'access_log = "{log_file}"') as gw:
            httpx.get(f"{gw.url}/api/echo?q=%22x%22", headers={"X-Request-Id": 'id-"1"'})
            httpx.get(f"{gw.url}/hello")
            httpx.get(f"{gw.url}/missing")
            wait_until(lambda: log_file.exists() and len(log_file.read_text().splitlines()) >= 3)
    api, hello, missing = (json.loads(line) for line in log_file.read_text().splitlines()[:3])
    assert api["route"] == "api"
    assert api["path"] == "/api/echo?q=%22x%22"
    assert api["request_id"] == 'id-"1"'
    assert api["status"] == 200
    assert api["upstream"] == upstream.addr
    assert api["bytes"] > 0 and api["duration_us"] >= 0
    assert api["client"] == "127.0.0.1"
    assert (hello["status"], hello["upstream"], hello["method"]) == (200, None, "GET")
    assert (missing["status"], missing["route"]) == (404, "")
