"""Sandboxes: what an instance can see and do, and how the gateway survives what it does."""

from __future__ import annotations

import json
import os
import re
import socket
import time
from collections.abc import Iterator

import pytest

from gateway.functions.logcapture import TAIL_BYTES
from gateway.functions.sandbox import LAMBDA_PATH, SandboxLimits, sandbox_user
from gateway.functions.spec import MiB
from tests.functions.sandbox_support import HANDLERS, Sink, decoded, provided_spec, run, spec, started_pool

LAMBDA_VARIABLES = {
    "AWS_LAMBDA_FUNCTION_NAME",
    "AWS_LAMBDA_FUNCTION_MEMORY_SIZE",
    "AWS_LAMBDA_FUNCTION_VERSION",
    "AWS_LAMBDA_RUNTIME_API",
    "AWS_LAMBDA_LOG_GROUP_NAME",
    "AWS_LAMBDA_LOG_STREAM_NAME",
    "AWS_LAMBDA_INITIALIZATION_TYPE",
    "AWS_REGION",
    "AWS_DEFAULT_REGION",
    "AWS_EXECUTION_ENV",
    "LAMBDA_TASK_ROOT",
    "_HANDLER",
    "TZ",
    "LANG",
    "PATH",
    "PYTHONPATH",
    "TMPDIR",
}


@pytest.fixture
def gateway_secret() -> Iterator[str]:
    os.environ["LAMBDAGATE_TEST_SECRET"] = "s3cr3t-value"
    try:
        yield "s3cr3t-value"
    finally:
        del os.environ["LAMBDAGATE_TEST_SECRET"]


def test_environment_is_scrubbed_and_confined(gateway_secret: str) -> None:
    async def main() -> None:
        async with started_pool(spec("environment", env={"GREETING": "hello"})) as pool:
            result = await pool.invoke(b"{}")
        facts = decoded(result)
        environ = facts["environ"]
        assert gateway_secret not in json.dumps(facts)
        assert "LAMBDAGATE_TEST_SECRET" not in environ
        assert set(environ) - {"GREETING", "_X_AMZN_TRACE_ID"} <= LAMBDA_VARIABLES
        assert environ["GREETING"] == "hello"
        assert environ["AWS_LAMBDA_FUNCTION_NAME"] == "fixture"
        assert environ["AWS_LAMBDA_FUNCTION_MEMORY_SIZE"] == "128"
        assert environ["LAMBDA_TASK_ROOT"] == str(HANDLERS.resolve())
        assert environ["_HANDLER"] == "fixtures.environment"
        assert environ["PATH"] == LAMBDA_PATH
        assert re.fullmatch(r"127\.0\.0\.1:\d+", environ["AWS_LAMBDA_RUNTIME_API"])
        assert facts["cwd"] == str(HANDLERS.resolve())
        assert facts["no_new_privs"] == "1"
        assert facts["pgid_is_pid"] and facts["sid_is_pid"]
        user = sandbox_user()
        if user is not None:  # the gateway runs as root: the sandbox does not
            assert facts["uid"] == user[0] and facts["tmp_owner"] == user[0]
        tmp = environ["TMPDIR"]
        assert not os.path.exists(tmp)  # removed with the instance (the pool is closed)
        limits = facts["limits"]
        defaults = SandboxLimits()
        assert limits["RLIMIT_NOFILE"] == defaults.open_files
        assert limits["RLIMIT_FSIZE"] == defaults.file_size
        assert limits["RLIMIT_NPROC"] == defaults.processes
        assert limits["RLIMIT_CPU"] == defaults.cpu_seconds
        assert 128 * MiB < limits["RLIMIT_AS"] < 128 * MiB + 512 * MiB  # the runtime's mappings + memory

    run(main())


@pytest.mark.skipif(sandbox_user() is None, reason="the sandbox user differs only when the gateway is root")
def test_folders_closed_to_the_sandbox_user_stay_closed() -> None:
    async def main() -> None:
        home = os.path.expanduser("~")
        probe = os.path.join(home, ".lambdagate-test-probe")
        with open(probe, "w") as f:
            f.write("gateway-only")
        os.chmod(probe, 0o644)  # readable by anyone who can reach it
        try:
            async with started_pool(spec("read_path")) as pool:
                result = await pool.invoke(json.dumps({"path": probe}).encode())
        finally:
            os.unlink(probe)
        assert decoded(result) in ({"error": "FileNotFoundError"}, {"error": "PermissionError"})

    run(main())


def _listener() -> socket.socket:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    return listener


def test_network_false_has_no_route_to_the_host() -> None:
    async def main() -> None:
        with _listener() as listener:
            event = json.dumps({"port": listener.getsockname()[1]}).encode()
            async with started_pool(spec("connect", network=True)) as pool:
                assert decoded(await pool.invoke(event)) == {"connected": True}
            async with started_pool(spec("connect", network=False)) as pool:
                isolated = pool.parent is not None and pool.parent.ready is not None
                isolated = isolated and pool.parent.ready.network_isolated  # type: ignore[union-attr]
                result = decoded(await pool.invoke(event))
                second = decoded(await pool.invoke(event))  # a warm instance still reaches its API
        if not isolated:
            pytest.fail("this kernel refused a network namespace; the gateway logs it and runs without one")
        assert result == {"connected": False, "error": "ConnectionRefusedError"}
        assert second == result

    run(main())


def test_deadline_kills_exactly_that_instance_and_replaces_it() -> None:
    async def main() -> None:
        async with started_pool(spec("sleep", timeout=0.5, concurrency=2)) as pool:
            other = await pool.invoke(json.dumps({"seconds": 0}).encode())
            assert decoded(other) == "woke"
            started = time.perf_counter()
            result = await pool.invoke(json.dumps({"seconds": 30}).encode(), request_id="slow-1")
            elapsed = time.perf_counter() - started
            pid = int(re.search(rb"sleeping in pid (\d+)", result.log_tail).group(1))  # type: ignore[union-attr]
            assert result.status == "timeout" and result.function_error == "Unhandled"
            assert decoded(result) == {
                "errorType": "Sandbox.Timedout",
                "errorMessage": "RequestId: slow-1 Error: Task timed out after 0.50 seconds",
            }
            assert elapsed < 3
            log = result.log_tail.decode()
            assert re.search(r"\d{4}-\d\d-\d\dT[\d:.]+Z slow-1 Task timed out after 0.50 seconds", log)
            assert "Status: timeout" in log and log.rstrip().endswith("\t".rstrip())
            for _ in range(100):
                if not os.path.exists(f"/proc/{pid}"):
                    break
                time.sleep(0.02)
            assert not os.path.exists(f"/proc/{pid}")
            after = await pool.invoke(json.dumps({"seconds": 0}).encode())
            assert decoded(after) == "woke"
            assert pool.snapshot().timeouts == 1

    run(main())


def test_memory_exhaustion_is_runtime_out_of_memory() -> None:
    async def main() -> None:
        async with started_pool(spec("hog_memory", memory=128 * MiB)) as pool:
            result = await pool.invoke(b"{}", request_id="hog-1")
            assert result.function_error == "Unhandled"
            assert decoded(result) == {
                "errorType": "Runtime.OutOfMemory",
                "errorMessage": "RequestId: hog-1 Error: Runtime exited with error: signal: killed",
            }
            assert "Error Type: Runtime.OutOfMemory" in result.log_tail.decode()
        async with started_pool(spec("plain", memory=128 * MiB)) as pool:
            assert decoded(await pool.invoke(b"{}"))["echo"] == {}

    run(main())


def test_crash_is_runtime_exit_error_and_the_pool_keeps_serving() -> None:
    async def main() -> None:
        async with started_pool(spec("crash")) as pool:
            result = await pool.invoke(json.dumps({"status": 3}).encode(), request_id="crash-1")
            assert decoded(result) == {
                "errorType": "Runtime.ExitError",
                "errorMessage": "RequestId: crash-1 Error: Runtime exited with error: exit status 3",
            }
            clean = await pool.invoke(json.dumps({"status": 0}).encode(), request_id="crash-2")
            assert decoded(clean)["errorMessage"] == (
                "RequestId: crash-2 Error: Runtime exited without providing a reason"
            )
            assert pool.snapshot().errors == 2 and pool.snapshot().instances == 0

    run(main())


def test_fork_bomb_is_bounded_and_killed_with_its_instance() -> None:
    async def main() -> None:
        limits = SandboxLimits(processes=40)
        async with started_pool(spec("fork_bomb", timeout=1.0), limits=limits) as pool:
            result = await pool.invoke(b"{}")
            tail = result.log_tail.decode()
            group = int(re.search(r"bomb group (\d+)", tail).group(1))  # type: ignore[union-attr]
            forked = int(re.search(r"forked (\d+)", tail).group(1))  # type: ignore[union-attr]
            assert result.status == "timeout"
            assert forked < 40  # RLIMIT_NPROC held
            for _ in range(100):
                if not _processes_in_group(group):
                    break
                time.sleep(0.02)
            assert _processes_in_group(group) == []
            # Sandboxes start again once the bomb is gone. (With the default process limit:
            # RLIMIT_NPROC counts every process of the sandbox user on the machine, so a low
            # limit here would also count other sandboxes that happen to be running.)
        async with started_pool(spec("plain")) as pool:
            assert decoded(await pool.invoke(b"{}"))["echo"] == {}

    if sandbox_user() is None:
        pytest.fail("RLIMIT_NPROC would count the gateway's own processes: run this test as root")
    run(main())


def _processes_in_group(group: int) -> list[int]:
    members = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rpartition(")")[2].split()
        except OSError:
            continue
        if int(fields[2]) == group and fields[0] != "Z":
            members.append(int(entry))
    return members


def test_endless_output_is_bounded() -> None:
    sink = Sink()

    async def main() -> None:
        function = spec("endless_output", timeout=1.0)
        async with started_pool(function, sink=sink, max_log_bytes=64 * 1024) as pool:
            result = await pool.invoke(b"{}", request_id="loud-1")
            after = await pool.invoke(b"{}", request_id="loud-2")
        assert result.status == "timeout" and after.status == "timeout"
        assert len(result.log_tail) <= TAIL_BYTES
        assert result.log_tail.decode().splitlines()[-1].startswith("REPORT RequestId: loud-1")
        lines = sink.messages("loud-1")
        output = [line for line in lines if line.startswith("x")]
        assert 0 < sum(len(line) + 1 for line in output) <= 64 * 1024 + 65536
        assert any(re.fullmatch(r"\[lambdagate\] \d+ bytes of output dropped", line) for line in lines)

    run(main())


def test_awslambdaric_runs_unchanged_as_a_provided_runtime(gateway_secret: str) -> None:
    async def main() -> None:
        async with started_pool(provided_spec("fixtures.context_fields", timeout=3.0)) as pool:
            result = await pool.invoke(b"{}", request_id="ric-1")
            assert result.status == "success", result.payload
            fields = decoded(result)
            assert fields["aws_request_id"] == "ric-1"
            assert fields["function_name"] == "fixture"
            assert fields["memory_limit_in_mb"] == "128"
            assert fields["invoked_function_arn"] == "arn:aws:lambda:us-east-1:000000000000:function:fixture"
            assert 0 < fields["remaining_ms"] <= 3000
        async with started_pool(provided_spec("fixtures.fail")) as pool:
            failed = await pool.invoke(b"{}")
            assert failed.function_error == "Unhandled"
            assert decoded(failed)["errorType"] == "ValueError"
            assert decoded(failed)["errorMessage"] == "something broke"
            assert decoded(await pool.invoke(b"{}"))["errorType"] == "ValueError"  # same instance, warm
        async with started_pool(provided_spec("fixtures.environment")) as pool:
            facts = decoded(await pool.invoke(b"{}"))
            assert "LAMBDAGATE_TEST_SECRET" not in facts["environ"]
            assert facts["no_new_privs"] == "1"

    run(main())


def test_awslambdaric_without_network_reaches_its_runtime_api() -> None:
    async def main() -> None:
        with _listener() as listener:
            event = json.dumps({"port": listener.getsockname()[1]}).encode()
            async with started_pool(provided_spec("fixtures.connect", network=False)) as pool:
                result = await pool.invoke(event)
        assert result.status == "success", result.payload
        assert decoded(result) == {"connected": False, "error": "ConnectionRefusedError"}

    run(main())
