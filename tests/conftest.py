"""Shared fixtures."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.redis_server import RedisServer


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """A real redis-server for the whole session (loopback, free port, no persistence).

    Tests share it: use key prefixes of your own. To simulate an outage, start a RedisServer of
    your own instead of stopping this one.
    """
    with RedisServer() as server:
        yield server.url
