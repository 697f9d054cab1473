"""FunctionPool: results and logs as AWS gives them, scaling, queueing, throttling, metrics."""

from __future__ import annotations

import asyncio
import gc
import hashlib
import json
import os
import time
from pathlib import Path

import pytest

from gateway.functions.pool import InvocationResult, TooManyRequests, _Run
from gateway.functions.runtime_api import Invocation, RuntimeReply
from gateway.functions.spec import FunctionSpec
from tests.functions.sandbox_support import Sink, decoded, run, spec, started_pool


def test_plain_handler_answers_and_logs_like_lambda() -> None:
    sink = Sink()

    async def main() -> None:
        async with started_pool(spec("chatty"), sink=sink) as pool:
            first = await pool.invoke(b"{}", request_id="req-1")
            second = await pool.invoke(b"{}", request_id="req-2")
        assert first.status == "success" and first.function_error is None
        assert decoded(first) == "done"
        tail = first.log_tail.decode().splitlines()
        assert tail[0] == "START RequestId: req-1 Version: $LATEST"
        assert tail[1:3] == ["line one", "line two"]
        assert tail[3] == "END RequestId: req-1"
        report = tail[4].split("\t")
        assert report[0] == "REPORT RequestId: req-1"
        assert report[1].startswith("Duration: ") and report[1].endswith(" ms")
        assert report[2].startswith("Billed Duration: ")
        assert report[3] == "Memory Size: 128 MB"
        assert report[4].startswith("Max Memory Used: ")
        assert report[5].startswith("Init Duration: ")  # the first invocation was a cold start
        assert first.init_duration_ms is not None and second.init_duration_ms is None
        assert "Init Duration" not in second.log_tail.decode()
        assert sink.messages("req-2")[1:3] == ["line one", "line two"]

    run(main())


OURS = (Invocation, _Run, RuntimeReply, InvocationResult, asyncio.Future)


def test_a_settled_invocation_leaves_no_reference_cycle() -> None:
    """Its invocation, run, reply and result go with reference counting: garbage left for the
    cyclic collector, one set per invocation, cost a busy worker ~5 % of its CPU."""

    async def main() -> None:
        async with started_pool(spec("chatty")) as pool:
            await pool.invoke(b"{}")  # the cold start's one-off objects
            gc.collect()
            gc.disable()
            gc.set_debug(gc.DEBUG_SAVEALL)  # what the collector finds stays in gc.garbage
            try:
                for _ in range(3):
                    await pool.invoke(b"{}")
                gc.collect()
                # (Only the invocation's own objects: other tests' leftovers may be collected too.)
                left = [type(item).__name__ for item in gc.garbage if isinstance(item, OURS)]
                assert left == []
            finally:
                gc.set_debug(0)
                gc.garbage.clear()
                gc.enable()

    run(main())


def test_event_and_env_reach_the_handler() -> None:
    async def main() -> None:
        async with started_pool(spec("plain", env={"GREETING": "hej"})) as pool:
            result = await pool.invoke(json.dumps({"a": [1, 2]}).encode())
        assert decoded(result) == {"echo": {"a": [1, 2]}, "greeting": "hej"}

    run(main())


def test_context_has_aws_fields() -> None:
    async def main() -> None:
        function = spec("context_fields", timeout=2.0)
        async with started_pool(function, region="eu-west-1", account_id="123456789012") as pool:
            result = await pool.invoke(
                b"{}",
                request_id="abc-123",
                client_context=json.dumps({"custom": {"k": "v"}}),
                cognito_identity=json.dumps({"cognitoIdentityId": "id-1", "cognitoIdentityPoolId": "pool"}),
                trace_id="Root=1-00000000-000000000000000000000000;Sampled=0",
            )
        fields = decoded(result)
        assert fields["aws_request_id"] == "abc-123"
        assert fields["function_name"] == "fixture"
        assert fields["function_version"] == "$LATEST"
        assert fields["memory_limit_in_mb"] == "128"  # a string in AWS's runtime too
        assert fields["invoked_function_arn"] == "arn:aws:lambda:eu-west-1:123456789012:function:fixture"
        assert fields["log_group_name"] == "/aws/lambda/fixture"
        assert "[$LATEST]" in fields["log_stream_name"]
        assert 0 < fields["remaining_ms"] <= 2000
        assert fields["client_custom"] == {"k": "v"}
        assert fields["cognito_identity_id"] == "id-1"
        assert fields["trace_env"] == "Root=1-00000000-000000000000000000000000;Sampled=0"

    run(main())


def test_handler_exception_is_an_unhandled_function_error() -> None:
    async def main() -> None:
        async with started_pool(spec("fail")) as pool:
            result = await pool.invoke(b"{}", request_id="req-err")
            again = await pool.invoke(b"{}")
            assert pool.snapshot().errors == 2
        assert result.function_error == "Unhandled" and result.status == "error"
        error = decoded(result)
        assert error["errorType"] == "ValueError"
        assert error["errorMessage"] == "something broke"
        assert error["requestId"] == "req-err"
        assert any("raise ValueError" in frame for frame in error["stackTrace"])
        log = result.log_tail.decode()
        assert "about to fail" in log and "[ERROR] ValueError: something broke" in log
        assert "Status: error\tError Type: ValueError" in log
        assert again.init_duration_ms is None  # the instance survived its handler's exception

    run(main())


def test_import_failure_is_reported_as_aws_init_error() -> None:
    async def main() -> None:
        async with started_pool(spec("missing_module.handler")) as pool:
            result = await pool.invoke(b"{}")
            missing = await pool.invoke(b"{}")
        assert result.function_error == "Unhandled"
        assert decoded(result) == {
            "errorMessage": "Unable to import module 'missing_module': No module named 'missing_module'",
            "errorType": "Runtime.ImportModuleError",
            "stackTrace": [],
        }
        assert decoded(missing)["errorType"] == "Runtime.ImportModuleError"

    run(main())


def test_missing_handler_function() -> None:
    async def main() -> None:
        async with started_pool(spec("fixtures.nope")) as pool:
            result = await pool.invoke(b"{}")
        assert decoded(result)["errorType"] == "Runtime.HandlerNotFound"
        assert decoded(result)["errorMessage"] == "Handler 'nope' missing on module 'fixtures'"

    run(main())


def test_invalid_json_event_is_an_unmarshal_error() -> None:
    async def main() -> None:
        async with started_pool(spec("plain")) as pool:
            result = await pool.invoke(b"{not json")
        assert decoded(result)["errorType"] == "Runtime.UnmarshalError"

    run(main())


def test_scales_up_to_concurrency_in_parallel() -> None:
    async def main() -> None:
        async with started_pool(spec("sleep", concurrency=3)) as pool:
            event = json.dumps({"seconds": 0.3}).encode()
            started = time.perf_counter()
            results = await asyncio.gather(*(pool.invoke(event) for _ in range(3)))
            elapsed = time.perf_counter() - started
            snapshot = pool.snapshot()
        assert [decoded(r) for r in results] == ["woke"] * 3
        assert snapshot.instances == 3 and snapshot.cold_starts == 3
        assert elapsed < 0.9 * 3  # they ran side by side, not one after another

    run(main())


def test_beyond_concurrency_requests_wait_then_are_throttled() -> None:
    async def main() -> None:
        function = spec("sleep", concurrency=1)
        async with started_pool(function, max_queue=1, queue_timeout=0.2) as pool:
            event = json.dumps({"seconds": 0.6}).encode()
            running = asyncio.ensure_future(pool.invoke(event))
            await asyncio.sleep(0.1)
            waiting = asyncio.ensure_future(pool.invoke(event))
            await asyncio.sleep(0)
            with pytest.raises(TooManyRequests):  # the queue (1) is full: refused at once
                await pool.invoke(event)
            with pytest.raises(TooManyRequests):  # waited 0.2 s for the busy instance
                await waiting
            assert decoded(await running) == "woke"
            assert pool.snapshot().throttles == 2

    run(main())


def test_waiting_request_gets_the_released_instance() -> None:
    async def main() -> None:
        async with started_pool(spec("sleep", concurrency=1), queue_timeout=5) as pool:
            event = json.dumps({"seconds": 0.2}).encode()
            results = await asyncio.gather(pool.invoke(event), pool.invoke(event))
            snapshot = pool.snapshot()
        assert [decoded(r) for r in results] == ["woke", "woke"]
        assert snapshot.instances == 1 and snapshot.cold_starts == 1 and snapshot.throttles == 0

    run(main())


def test_idle_instances_are_reaped_to_zero() -> None:
    async def main() -> None:
        async with started_pool(spec("plain", idle_timeout=0.2)) as pool:
            assert pool.snapshot().instances == 0
            await pool.invoke(b"{}")
            assert pool.snapshot().instances == 1
            for _ in range(100):
                await asyncio.sleep(0.05)
                if pool.snapshot().instances == 0:
                    break
            assert pool.snapshot().instances == 0
            again = await pool.invoke(b"{}")  # and back from zero
            assert again.init_duration_ms is not None

    run(main())


def test_provisioned_instances_are_warm_and_kept() -> None:
    async def main() -> None:
        async with started_pool(spec("plain", provisioned=2, idle_timeout=0.1)) as pool:
            assert pool.snapshot().idle == 2
            result = await pool.invoke(b"{}")
            assert result.init_duration_ms is not None  # the instance's first invocation
            await asyncio.sleep(0.5)
            assert pool.snapshot().instances == 2  # not reaped below `provisioned`

    run(main())


def test_metrics_snapshot() -> None:
    async def main() -> None:
        async with started_pool(spec("plain")) as pool:
            for _ in range(3):
                await pool.invoke(b"{}")
            snapshot = pool.snapshot()
        assert snapshot.invocations == 3 and snapshot.errors == 0 and snapshot.cold_starts == 1
        assert snapshot.duration_ms_total > 0 and snapshot.duration_ms_max > 0
        assert snapshot.init_duration_ms_total > 0
        assert snapshot.max_memory_mb > 0 and snapshot.idle == 1 and snapshot.busy == 0

    run(main())


def test_cold_and_warm_start_timing() -> None:
    """Printed, not asserted (speed is for bench/)."""

    async def main() -> None:
        async with started_pool(spec("plain", idle_timeout=600)) as pool:
            cold = []
            for _ in range(5):
                started = time.perf_counter()
                instance_count = pool.snapshot().instances
                await pool.invoke(b"{}")
                cold.append((time.perf_counter() - started) * 1000)
                assert pool.snapshot().instances == instance_count + 1 or instance_count == 0
                for instance in list(pool.idle):  # force the next one cold
                    pool._discard(instance)
            warm = []
            await pool.invoke(b"{}")
            for _ in range(50):
                started = time.perf_counter()
                await pool.invoke(b"{}")
                warm.append((time.perf_counter() - started) * 1000)
        cold.sort()
        warm.sort()
        print(
            f"\ncold start (no instance -> response): p50 {cold[2]:.2f} ms, all {[round(c, 2) for c in cold]}"
        )
        print(f"warm invocation: p50 {warm[25]:.3f} ms, p90 {warm[45]:.3f} ms")

    run(main())


def test_a_caller_that_goes_away_does_not_break_the_instance() -> None:
    async def main() -> None:
        async with started_pool(spec("sleep", concurrency=1)) as pool:
            abandoned = asyncio.ensure_future(pool.invoke(json.dumps({"seconds": 0.3}).encode()))
            await asyncio.sleep(0.1)
            abandoned.cancel()
            # The next caller waits for the instance to finish the abandoned invocation.
            result = await pool.invoke(json.dumps({"seconds": 0}).encode())
            assert decoded(result) == "woke"
            assert pool.snapshot().instances == 1 and pool.snapshot().invocations == 2

    run(main())


def test_a_dead_sandbox_parent_is_restarted() -> None:
    async def main() -> None:
        async with started_pool(spec("plain")) as pool:
            await pool.invoke(b"{}")
            assert pool.parent is not None and pool.parent.process is not None
            pool.parent.process.kill()
            for _ in range(100):
                await asyncio.sleep(0.02)
                if not pool.parent.alive and pool.snapshot().instances == 0:
                    break
            result = await pool.invoke(b"{}")
            assert result.status == "success" and decoded(result)["echo"] == {}

    run(main())


def test_the_issues_hello_function() -> None:
    async def main() -> None:
        hello = FunctionSpec(
            name="hello",
            code=Path(__file__).parents[2] / "examples/functions/hello",
            env={"GREETING": "hello"},
        )
        async with started_pool(hello) as pool:
            result = await pool.invoke(
                json.dumps({"pathParameters": {"name": "ada"}}).encode(), request_id="r-1"
            )
        response = decoded(result)
        assert response["statusCode"] == 200
        assert json.loads(response["body"]) == {"message": "hello, ada!", "request_id": "r-1"}

    run(main())


def test_system_log_level_warn_keeps_platform_lines_out_of_the_log_but_in_the_tail() -> None:
    sink = Sink()

    async def main() -> None:
        async with started_pool(spec("chatty", platform_logs=False), sink=sink) as pool:
            result = await pool.invoke(b"{}", request_id="quiet-1")
        assert sink.messages("quiet-1") == ["line one", "line two"]  # the function's own output
        tail = result.log_tail.decode().splitlines()
        assert tail[0] == "START RequestId: quiet-1 Version: $LATEST"
        assert tail[3] == "END RequestId: quiet-1" and tail[4].startswith("REPORT RequestId: quiet-1")

    run(main())


def test_system_log_level_warn_still_logs_a_timeout() -> None:
    sink = Sink()

    async def main() -> None:
        async with started_pool(spec("sleep", timeout=0.3, platform_logs=False), sink=sink) as pool:
            result = await pool.invoke(b"{}", request_id="slow-1")
        assert result.status == "timeout"
        assert any("Task timed out after 0.30 seconds" in line for line in sink.messages("slow-1"))
        assert not any(line.startswith(("START", "END", "REPORT")) for line in sink.messages("slow-1"))

    run(main())


def test_sandbox_cpus_pin_the_instances() -> None:
    last = max(os.sched_getaffinity(0))

    async def main() -> None:
        async with started_pool(spec("affinity", cpus=(last,))) as pool:
            result = await pool.invoke(b"{}")
        assert decoded(result) == [last]

    run(main())


def test_a_large_event_arrives_whole() -> None:
    data = "".join(chr(ord("a") + i % 26) for i in range(5 * 1024 * 1024))

    async def main() -> None:
        async with started_pool(spec("measure", memory=256 * 1024 * 1024)) as pool:
            result = await pool.invoke(json.dumps({"data": data}).encode())
        assert decoded(result) == {"length": len(data), "sha256": hashlib.sha256(data.encode()).hexdigest()}

    run(main())


def test_a_response_over_6_mb_fails_as_on_lambda_and_the_instance_is_replaced() -> None:
    async def main() -> None:
        async with started_pool(spec("big_response", memory=256 * 1024 * 1024)) as pool:
            too_big = await pool.invoke(json.dumps({"size": 7 * 1024 * 1024}).encode())
            fine = await pool.invoke(json.dumps({"size": 10}).encode())
        assert too_big.status == "error" and too_big.error_type == "Function.ResponseSizeTooLarge"
        assert "Response payload size exceeded maximum allowed payload size" in str(too_big.error())
        assert decoded(fine) == "x" * 10
        assert fine.init_duration_ms is not None  # a new instance: the first one was retired

    run(main())


def test_two_invocations_sharing_a_request_id_each_keep_their_deadline() -> None:
    """A redelivered async event can run again under its id while the first attempt still runs."""

    async def main() -> None:
        async with started_pool(spec("sleep", timeout=0.3, concurrency=2)) as pool:
            first, second = await asyncio.wait_for(
                asyncio.gather(
                    pool.invoke(b'{"seconds": 5}', request_id="same"),
                    pool.invoke(b'{"seconds": 5}', request_id="same"),
                ),
                timeout=4,
            )
        assert first.status == second.status == "timeout"

    run(main())


def test_a_withdrawn_waiting_invocation_never_runs_and_does_not_hold_up_the_next() -> None:
    async def main() -> None:
        async with started_pool(spec("sleep", concurrency=1), queue_timeout=5) as pool:
            event = json.dumps({"seconds": 0.2}).encode()
            running = pool.submit(event)
            await asyncio.sleep(0.05)  # the instance is busy now
            withdrawn = pool.submit(event)
            waiting = pool.submit(event)
            assert pool.snapshot().waiting == 2
            withdrawn.cancel()
            results = await asyncio.gather(running, waiting)
            assert [decoded(r) for r in results] == ["woke", "woke"]
            assert pool.snapshot().invocations == 2 and pool.snapshot().instances == 1

    run(main())


def test_a_start_cancelled_before_it_ran_gives_its_slot_back() -> None:
    async def main() -> None:
        async with started_pool(spec("plain", concurrency=1), queue_timeout=0.5) as pool:
            abandoned = pool.submit(b"{}")  # would start the only instance...
            abandoned.cancel()  # ...but its caller leaves before the task ran at all
            result = await pool.invoke(b"{}")  # must not wait for a slot nobody holds
            assert result.status == "success"

    run(main())


def test_garbage_on_the_invocation_socket_fails_that_invocation_and_the_pool_goes_on() -> None:
    async def main() -> None:
        async with started_pool(spec("scribble_on_invocation_socket", concurrency=1)) as pool:
            broken = await pool.invoke(b"{}")
            again = await pool.invoke(b"{}")
        assert broken.status == "error" and broken.error_type == "Runtime.Unknown"
        assert "broke the invocation protocol" in str(broken.error())
        assert again.status == "error" and again.init_duration_ms is not None  # a new instance

    run(main())
