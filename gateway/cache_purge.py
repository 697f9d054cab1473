"""Admin cache purge for one worker, relayed to the other workers of the same gateway.

Each worker's `cache` plugins own in-memory stores, while the admin API listener is shared: a
purge request reaches one worker. That worker purges its own stores (and the Redis tier, which is
global), then appends the purge as one JSON line to a journal file the workers share (next to the
SQLite state file: `<[store] path>.purges`). Every worker follows the journal with one stat()
per second and applies the lines other workers wrote to its own stores, so a purge reaches every
worker within about a second. A worker starts reading at the journal's end (its stores start
empty). The answer's count is the asking worker's (plus the Redis tier's).

Lines are written with a single O_APPEND write each, so concurrent writers never interleave.
A journal that cannot be written or read is logged; the purge still applies to the asking
worker and to Redis.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Sequence
from pathlib import Path

import msgspec

from gateway.logs import log
from gateway.plugins import Plugin
from gateway.plugins.cache import ResponseCachePlugin
from gateway.tasks import cancel_and_wait

__all__ = ["CachePurger", "PurgeRecord"]


class PurgeRecord(msgspec.Struct, frozen=True):
    pid: int  # the worker that applied it already
    key: str | None = None
    prefix: str | None = None


_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder(PurgeRecord).decode


class CachePurger:
    """`await purger(key, prefix)` is the admin API's purge_cache for this worker."""

    def __init__(self, caches: Sequence[ResponseCachePlugin], journal: Path | None = None) -> None:
        self.caches = list(caches)
        self.journal = journal
        self.applied = 0  # purges relayed from other workers
        self._offset = 0
        self._pid = os.getpid()
        self._task: asyncio.Task[None] | None = None

    @classmethod
    def for_plugins(cls, plugins: Sequence[Plugin], journal: Path | None = None) -> CachePurger | None:
        """None when no route of this config uses the cache."""
        caches = [plugin for plugin in plugins if isinstance(plugin, ResponseCachePlugin)]
        return cls(caches, journal) if caches else None

    async def __call__(self, key: str | None, prefix: str | None) -> int:
        dropped = 0
        for cache in self.caches:
            dropped += await cache.purge(key, prefix)
        if self.journal is not None:
            self._append(PurgeRecord(self._pid, key, prefix))
        return dropped

    # --- the journal ------------------------------------------------------------------------------

    def start(self, loop: asyncio.AbstractEventLoop, interval: float = 1.0) -> None:
        if self.journal is None:
            return
        try:
            self._offset = self.journal.stat().st_size
        except FileNotFoundError:
            self._offset = 0
        except OSError as exc:
            log("warning", "cache purge journal unreadable", path=str(self.journal), error=str(exc))
        self._task = loop.create_task(self._follow(interval))

    async def close(self) -> None:
        if self._task is not None:
            await cancel_and_wait(self._task)

    def poll(self) -> int:
        """Apply the purges other workers appended since the last poll; returns how many."""
        assert self.journal is not None
        try:
            size = self.journal.stat().st_size
        except FileNotFoundError:
            return 0
        if size < self._offset:
            self._offset = 0  # replaced by an operator: start over from its beginning
        if size == self._offset:
            return 0
        with self.journal.open("rb") as journal:
            journal.seek(self._offset)
            data = journal.read(size - self._offset)
        complete = data.rfind(b"\n") + 1  # a line still being written waits for the next poll
        self._offset += complete
        count = 0
        for line in data[:complete].splitlines():
            try:
                record = _decode(line)
            except msgspec.DecodeError:
                continue
            if record.pid == self._pid:
                continue
            for cache in self.caches:
                cache.purge_local(record.key, record.prefix)
            count += 1
        self.applied += count
        return count

    async def _follow(self, interval: float) -> None:
        failing = False
        while True:
            await asyncio.sleep(interval)
            try:
                self.poll()
                failing = False
            except OSError as exc:
                if not failing:
                    log("warning", "cache purge journal unreadable", path=str(self.journal), error=str(exc))
                    failing = True

    def _append(self, record: PurgeRecord) -> None:
        assert self.journal is not None
        line = _encode(record) + b"\n"
        try:
            fd = os.open(self.journal, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                os.write(fd, line)
            finally:
                os.close(fd)
        except OSError as exc:
            log("warning", "cache purge not relayed to other workers", path=str(self.journal), error=str(exc))
