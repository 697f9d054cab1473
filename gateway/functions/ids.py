"""Request and trace ids for invocations, cheap enough to make one per HTTP request.

Lambda's request ids are random UUIDs; drawing 16 random bytes per request costs more than the
rest of an id's handling. These ids have the same shape (8-4-4-4-12 hex, version 4, RFC 4122
variant) and are unique in the same practical sense: 74 random bits drawn once per process,
then a 48-bit counter. The random part is drawn again in a forked child (workers are forks of
the master), so two processes never share it.
"""

from __future__ import annotations

import os
import time

_uuid_prefix = ""
_trace_prefix = ""
_counter = 0


def _reseed() -> None:
    global _uuid_prefix, _trace_prefix, _counter, _trace_root
    random = os.urandom(16).hex()
    variant = "89ab"[int(random[15], 16) & 3]
    _uuid_prefix = f"{random[0:8]}-{random[8:12]}-4{random[12:15]}-{variant}{random[16:19]}-"
    _trace_prefix = random[19:31]
    _counter = int.from_bytes(os.urandom(4), "big")  # ids do not restart at 0 with the process
    _trace_root = (-1, "")  # it holds the prefix drawn before


# A child forked with os.fork() (the workers) draws its own random part at fork time rather
# than comparing os.getpid() per id: glibc does not cache the pid, so that was a system call
# per id, two per invocation.
os.register_at_fork(after_in_child=_reseed)
_reseed()


def request_id() -> str:
    """A new UUID-shaped request id."""
    global _counter
    _counter += 1
    return f"{_uuid_prefix}{_counter & 0xFFFFFFFFFFFF:012x}"


_trace_root: tuple[int, str] = (-1, "")  # the last second's "Root=1-<time>-<prefix>"


def trace_id() -> str:
    """An X-Ray trace header as Lambda passes one (Root=1-<8 hex time>-<24 hex>;Parent=<16 hex>;Sampled=0)."""
    global _counter, _trace_root
    _counter += 1
    count = f"{_counter & 0xFFFFFFFFFFFF:012x}"
    second = int(time.time())
    if _trace_root[0] != second:  # once a second, not once per invocation
        _trace_root = (second, f"Root=1-{second:08x}-{_trace_prefix}")
    return f"{_trace_root[1]}{count};Parent=0000{count};Sampled=0"
