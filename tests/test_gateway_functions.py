"""Functions behind HTTP routes, through the real gateway process (issue 4's example config)."""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.gateway_process import GatewayProcess, running_gateway

ROOT = Path(__file__).resolve().parent.parent
HELLO = ROOT / "examples" / "functions" / "hello"


@pytest.fixture(scope="module")
def gateway() -> Iterator[GatewayProcess]:
    broken = Path(tempfile.mkdtemp(prefix="lambdagate-fn-"))  # readable by the sandbox's user
    broken.chmod(0o755)
    (broken / "app.py").write_text("def handler(event, context):\n    raise ValueError('no luck')\n")
    (broken / "app.py").chmod(0o644)
    config = f"""
[functions.hello]
code = "{HELLO}"
handler = "app.handler"
runtime = "python"
timeout = "3s"
memory = "128MiB"
concurrency = 8
provisioned = 1
idle_timeout = "10m"
env = {{ GREETING = "hello" }}

[functions.broken]
code = "{broken}"
handler = "app.handler"

[[routes]]
path = "/hello/{{name}}"
methods = ["GET", "POST"]
function = "hello"
payload = "2.0"

[[routes]]
path = "/rest/hello/{{name}}"
function = "hello"
payload = "1.0"

[[routes]]
path = "/broken"
function = "broken"
"""
    try:
        with running_gateway(config) as gw:
            yield gw
    finally:
        shutil.rmtree(broken, ignore_errors=True)


def test_http_api_event_reaches_the_function(gateway: GatewayProcess) -> None:
    response = httpx.get(f"{gateway.url}/hello/world", timeout=10)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["message"] == "hello, world!"
    assert len(body["request_id"]) == 36  # Lambda's request ids are UUIDs
    posted = httpx.post(f"{gateway.url}/hello/there", content=b'{"x": 1}', timeout=10)
    assert posted.json()["message"] == "hello, there!"


def test_rest_api_payload(gateway: GatewayProcess) -> None:
    response = httpx.get(f"{gateway.url}/rest/hello/rest", timeout=10)
    assert response.status_code == 200
    assert response.json()["message"] == "hello, rest!"


def test_function_error_is_api_gateways_500(gateway: GatewayProcess) -> None:
    response = httpx.get(f"{gateway.url}/broken", timeout=10)
    assert response.status_code == 500
    assert response.json() == {"message": "Internal Server Error"}
    assert httpx.get(f"{gateway.url}/hello/again", timeout=10).status_code == 200  # still serving


@pytest.fixture(scope="module")
def aws_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[GatewayProcess, str, Path]]:
    """A gateway with the Invoke API on its admin listener, signed with an access key."""
    from tests.support.upstream import free_port

    # The sandbox runs as nobody: the code folder must be readable by it (pytest's own temp dirs
    # are private to root).
    code = Path(tempfile.mkdtemp(prefix="lambdagate-fn-"))
    code.chmod(0o755)
    marker_dir = Path("/tmp") / f"lambdagate-test-{uuid.uuid4().hex}"
    (code / "app.py").write_text(
        "import json, os\n"
        "def handler(event, context):\n"
        "    print('working on', json.dumps(event))\n"
        "    if event.get('fail'):\n"
        "        raise RuntimeError('asked to fail')\n"
        "    if 'marker' in event:\n"
        "        os.makedirs(os.path.dirname(event['marker']), exist_ok=True)\n"
        "        open(event['marker'], 'w').write(context.aws_request_id)\n"
        "    return {'echo': event, 'function': context.function_name}\n"
    )
    (code / "app.py").chmod(0o644)
    admin_port = free_port()
    state = tmp_path_factory.mktemp("state")
    config = f"""
[store]
path = "{state / "state.db"}"

[admin]
listen = "127.0.0.1:{admin_port}"
token = "admin-token"
aws_keys = {{ AKIALAMBDAGATE = "aws-secret" }}

[functions.worker]
code = "{code}"
handler = "app.handler"
"""
    try:
        with running_gateway(config) as gw:
            yield gw, f"http://127.0.0.1:{admin_port}", marker_dir
    finally:
        shutil.rmtree(code, ignore_errors=True)


def lambda_client(endpoint: str) -> Any:
    import boto3
    from botocore.config import Config as BotoConfig

    return boto3.client(
        "lambda",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="AKIALAMBDAGATE",
        aws_secret_access_key="aws-secret",
        config=BotoConfig(retries={"max_attempts": 0}),
    )


def test_boto3_invokes_through_the_gateway(aws_gateway: tuple[GatewayProcess, str, Path]) -> None:
    _, endpoint, marker_dir = aws_gateway
    client = lambda_client(endpoint)
    result = client.invoke(FunctionName="worker", Payload=json.dumps({"x": 1}), LogType="Tail")
    assert result["StatusCode"] == 200
    assert json.loads(result["Payload"].read()) == {"echo": {"x": 1}, "function": "worker"}
    logs = base64.b64decode(result["LogResult"]).decode()
    assert "START RequestId:" in logs and "REPORT RequestId:" in logs and "working on" in logs

    failed = client.invoke(FunctionName="worker", Payload=json.dumps({"fail": True}))
    assert failed["FunctionError"] == "Unhandled"
    assert json.loads(failed["Payload"].read())["errorMessage"] == "asked to fail"

    with pytest.raises(client.exceptions.ResourceNotFoundException):
        client.invoke(FunctionName="nope", Payload=b"{}")

    marker = marker_dir / "event.txt"
    queued = client.invoke(
        FunctionName="worker", InvocationType="Event", Payload=json.dumps({"marker": str(marker)})
    )
    assert queued["StatusCode"] == 202
    deadline = time.monotonic() + 10
    while not (marker.exists() and marker.read_text()) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert marker.exists(), "the queued event never ran"
    # The event ran under the request id the Event invocation answered with, as on Lambda.
    assert marker.read_text() == queued["ResponseMetadata"]["RequestId"]
    shutil.rmtree(marker_dir, ignore_errors=True)


def test_cli_invoke(aws_gateway: tuple[GatewayProcess, str, Path]) -> None:
    gw, _, _ = aws_gateway
    command = [sys.executable, "-m", "gateway", "invoke", "worker", "-c", str(gw.config_path)]
    done = subprocess.run(
        [*command, "--payload", '{"k": "v"}', "--logs"], capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"echo": {"k": "v"}, "function": "worker"}
    assert "REPORT RequestId:" in done.stderr
    failed = subprocess.run(
        [*command, "--payload", '{"fail": true}'], capture_output=True, text=True, timeout=30
    )
    assert failed.returncode == 1
    assert json.loads(failed.stdout)["errorType"] == "RuntimeError"
    queued = subprocess.run([*command, "--async"], capture_output=True, text=True, timeout=30)
    assert queued.returncode == 0 and queued.stdout.startswith("queued")


@pytest.fixture(scope="module")
def trigger_gateway() -> Iterator[tuple[GatewayProcess, str, Path]]:
    """Schedule and queue triggers, plus a function whose async events all fail."""
    from tests.support.upstream import free_port

    code = Path(tempfile.mkdtemp(prefix="lambdagate-fn-"))
    code.chmod(0o755)
    out = Path(tempfile.mkdtemp(prefix="lambdagate-out-"))
    out.chmod(0o777)
    (code / "app.py").write_text(
        "import json, os, time\n"
        f"OUT = {str(out)!r}\n"
        "def handler(event, context):\n"
        "    kind = event.get('source') or ('sqs' if 'Records' in event else 'direct')\n"
        "    name = f'{kind}-{time.time_ns()}.json'\n"
        "    with open(os.path.join(OUT, name + '.part'), 'w') as f:\n"
        "        json.dump(event, f)\n"
        "    os.rename(os.path.join(OUT, name + '.part'), os.path.join(OUT, name))  # readers see it whole\n"
        "    return {}\n"
        "def failing(event, context):\n"
        "    raise RuntimeError('always fails')\n"
    )
    (code / "app.py").chmod(0o644)
    admin_port = free_port()
    state = Path(tempfile.mkdtemp(prefix="lambdagate-state-"))
    config = f"""
[store]
path = "{state / "state.db"}"

[admin]
listen = "127.0.0.1:{admin_port}"
token = "admin-token"

[functions.recorder]
code = "{code}"
handler = "app.handler"

[functions.failing]
code = "{code}"
handler = "app.failing"
retries = 0

[[triggers]]
function = "recorder"
schedule = "rate(1 second)"

[[triggers]]
function = "recorder"
queue = "orders"
batch_size = 5
batch_window = "200ms"
"""
    try:
        with running_gateway(config) as gw:
            yield gw, f"http://127.0.0.1:{admin_port}", out
    finally:
        for folder in (code, out, state):
            shutil.rmtree(folder, ignore_errors=True)


def admin_call(base: str, method: str, path: str, body: object | None = None) -> httpx.Response:
    headers = {"Authorization": "Bearer admin-token"}
    return httpx.request(method, f"{base}{path}", json=body, headers=headers, timeout=10)


def wait_for(predicate: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_schedule_trigger_fires(trigger_gateway: tuple[GatewayProcess, str, Path]) -> None:
    _, _, out = trigger_gateway
    wait_for(lambda: len(list(out.glob("aws.scheduler-*.json"))) >= 2)
    event = json.loads(sorted(out.glob("aws.scheduler-*.json"))[0].read_text())
    assert event["detail-type"] == "Scheduled Event"


def test_queue_trigger_delivers_batches(trigger_gateway: tuple[GatewayProcess, str, Path]) -> None:
    _, base, out = trigger_gateway
    for i in range(3):
        response = admin_call(base, "POST", "/queues/orders/messages", {"body": json.dumps({"order": i})})
        assert response.status_code == 201, response.text
    wait_for(lambda: sum(len(json.loads(p.read_text())["Records"]) for p in out.glob("sqs-*.json")) >= 3)
    records = [r for p in out.glob("sqs-*.json") for r in json.loads(p.read_text())["Records"]]
    assert sorted(json.loads(r["body"])["order"] for r in records) == [0, 1, 2]
    assert all(r["eventSource"] == "aws:sqs" for r in records)
    assert admin_call(base, "POST", "/queues/nope/messages", {"body": "x"}).status_code == 404
    assert httpx.post(f"{base}/queues/orders/messages", json={"body": "x"}).status_code == 401


def test_failed_async_events_reach_the_dead_letters(
    trigger_gateway: tuple[GatewayProcess, str, Path],
) -> None:
    gw, base, _ = trigger_gateway
    command = [sys.executable, "-m", "gateway", "invoke", "failing", "--async", "-c", str(gw.config_path)]
    assert (
        subprocess.run([*command, "--payload", '{"n": 1}'], capture_output=True, timeout=30).returncode == 0
    )

    def dead() -> list[dict[str, Any]]:
        letters: list[dict[str, Any]] = admin_call(base, "GET", "/functions/failing/dead-letters").json()[
            "data"
        ]
        return letters

    wait_for(lambda: len(dead()) == 1)
    [letter] = dead()
    assert json.loads(letter["event"]) == {"n": 1}
    assert letter["attempts"] == 1
    assert letter["error"]["errorMessage"] == "always fails"
    assert admin_call(base, "POST", "/functions/failing/dead-letters/redrive").json() == {"redriven": 1}
    metrics = admin_call(base, "GET", "/functions").json()
    assert metrics["failing"]["errors"] >= 1


def test_cli_functions(trigger_gateway: tuple[GatewayProcess, str, Path]) -> None:
    gw, _, _ = trigger_gateway
    command = [sys.executable, "-m", "gateway", "functions", "-c", str(gw.config_path)]
    table = subprocess.run(command, capture_output=True, text=True, timeout=30)
    assert table.returncode == 0, table.stderr
    assert "recorder" in table.stdout and "failing" in table.stdout
    raw = subprocess.run([*command, "--json"], capture_output=True, text=True, timeout=30)
    assert set(json.loads(raw.stdout)) == {"recorder", "failing"}


def test_kill_9_loses_no_queued_event(tmp_path: Path) -> None:
    """Events accepted (202) before the gateway is SIGKILLed all run after it restarts."""
    from tests.support.gateway_process import GatewayProcess
    from tests.support.upstream import free_port

    code = Path(tempfile.mkdtemp(prefix="lambdagate-fn-"))
    code.chmod(0o755)
    out = Path(tempfile.mkdtemp(prefix="lambdagate-out-"))
    out.chmod(0o777)
    (code / "app.py").write_text(
        "import os, time\n"
        "def handler(event, context):\n"
        "    time.sleep(0.3)\n"
        f"    open(os.path.join({str(out)!r}, str(event['n'])), 'w').write('done')\n"
    )
    (code / "app.py").chmod(0o644)
    admin_port = free_port()
    port = free_port()
    config = f"""
[server]
listen = "127.0.0.1:{port}"
workers = 1
access_log = "off"

[store]
path = "{tmp_path / "state.db"}"

[admin]
listen = "127.0.0.1:{admin_port}"
token = "admin-token"

[functions.slow]
code = "{code}"
handler = "app.handler"
timeout = "2s"
"""
    gateway = GatewayProcess(config, port, tmp_path)
    try:
        gateway.start()
        wait_for(lambda: admin_call(f"http://127.0.0.1:{admin_port}", "GET", "/functions").status_code == 200)
        for n in range(10):
            response = httpx.post(
                f"http://127.0.0.1:{admin_port}/2015-03-31/functions/slow/invocations",
                content=json.dumps({"n": n}),
                headers={"Authorization": "Bearer admin-token", "X-Amz-Invocation-Type": "Event"},
            )
            assert response.status_code == 202
        assert gateway.proc is not None
        os.killpg(gateway.proc.pid, signal.SIGKILL)  # master and workers, no chance to drain
        gateway.proc.wait(10)
        assert len(list(out.iterdir())) < 10, "the test needs events still queued at the kill"
        gateway.start()
        wait_for(lambda: len(list(out.iterdir())) == 10, timeout=40)
        assert sorted(int(p.name) for p in out.iterdir()) == list(range(10))
    finally:
        gateway.stop()
        shutil.rmtree(code, ignore_errors=True)
        shutil.rmtree(out, ignore_errors=True)
