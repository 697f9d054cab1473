"""The compiled access-log formatter writes the same JSON lines as the Python encoder."""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from gateway._fastpath.accesslog import LogLines
from gateway.accesslog import AccessLog

texts = st.text(alphabet=st.characters(min_codepoint=1, max_codepoint=0x2FF), max_size=30)
raw = st.binary(max_size=60)


@settings(max_examples=300, deadline=None)
@given(
    unix_time=st.floats(min_value=0, max_value=4e9, allow_nan=False),
    request_id=raw,
    route=texts,
    method=raw,
    target=raw,
    status=st.integers(100, 599),
    bytes_sent=st.integers(0, 2**40),
    upstream=st.none() | texts,
    duration_us=st.integers(0, 2**40),
    client=raw,
)
def test_same_json_as_the_python_encoder(
    unix_time: float,
    request_id: bytes,
    route: str,
    method: bytes,
    target: bytes,
    status: int,
    bytes_sent: int,
    upstream: str | None,
    duration_us: int,
    client: bytes,
) -> None:
    lines = LogLines()
    lines.add(unix_time, request_id, route, method, target, status, bytes_sent, upstream, duration_us, client)
    ours = lines.take()
    assert ours.endswith(b"\n") and ours.count(b"\n") == 1
    reference = AccessLog("off").encode(
        [(unix_time, request_id, route, method, target, status, bytes_sent, upstream, duration_us,
          client.decode("latin-1"))]
    )  # fmt: skip
    assert json.loads(ours) == json.loads(reference)


def test_take_empties_the_buffer() -> None:
    lines = LogLines()
    lines.add(1.5, b"id", "r", b"GET", b"/", 200, 1, None, 1, b"1.2.3.4")
    assert len(lines) > 0
    assert lines.take().startswith(b'{"time":"1970-01-01T00:00:01.500000Z"')
    assert lines.take() == b""
    assert lines.lines == 1
