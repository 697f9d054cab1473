"""Request and trace ids: AWS's shapes, unique per process and across a fork."""

from __future__ import annotations

import os
import re
import time

from gateway.functions import ids

TRACE = re.compile(r"Root=1-([0-9a-f]{8})-([0-9a-f]{24});Parent=([0-9a-f]{16});Sampled=0")
UUID4 = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}")


def test_trace_ids_have_xrays_shape_and_the_current_time() -> None:
    before = int(time.time())
    traces = [ids.trace_id() for _ in range(100)]
    assert len(set(traces)) == 100
    for trace in traces:
        match = TRACE.fullmatch(trace)
        assert match is not None, trace
        assert abs(int(match.group(1), 16) - before) <= 2
        assert match.group(2).endswith(match.group(3)[4:])  # Parent is the id's counter


def test_request_ids_are_uuid4_shaped_and_distinct() -> None:
    requests = [ids.request_id() for _ in range(100)]
    assert len(set(requests)) == 100 and all(UUID4.fullmatch(value) for value in requests)


def test_a_forked_child_draws_its_own_random_part() -> None:
    parent = ids.trace_id()
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report its ids and go
        os.write(write, f"{ids.trace_id()} {ids.request_id()}".encode())
        os._exit(0)
    os.close(write)
    child_trace, child_request = os.read(read, 4096).decode().split()
    os.close(read)
    os.waitpid(pid, 0)
    parent_match, child_match = TRACE.fullmatch(parent), TRACE.fullmatch(child_trace)
    assert parent_match is not None and child_match is not None
    assert parent_match.group(2)[:12] != child_match.group(2)[:12]
    assert child_request[:23] != ids.request_id()[:23]
