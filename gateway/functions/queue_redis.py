"""The durable queue on Redis Streams (see `gateway.functions.queue`), for gateways sharing one Redis.

Keys of one queue share a hash tag, so Lua scripts and transactions work on Redis Cluster too:

    {prefix}{<queue>}:stream    stream; each entry has one field ``m``, a msgpack `_Envelope`
    {prefix}{<queue>}:delayed   sorted set of envelopes, scored by the ms (server time) they are due
    {prefix}{<queue>}:dead      stream of dead letters, field ``d``, a msgpack `DeadLetter`

One consumer group per queue: XREADGROUP hands each new entry to one consumer, XAUTOCLAIM moves
entries that stayed pending longer than the visibility timeout (their consumer died or hung) to
the claimer, and the pending entry's delivery counter counts redeliveries. A retry with a delay
cannot stay in the stream (entries have no "not before" time), so it leaves the stream for the
``delayed`` set, carrying its counts in the envelope, and is put back (a new entry, same message
id) by the first claim after it is due. Settling (ack, retry, dead letter) is one Lua script
that first checks that the delivery's consumer still owns the entry.

Durability is Redis's: run it with ``appendonly yes`` for "nothing lost" across a Redis restart.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import msgspec
import redis.asyncio as redis_asyncio
from redis.exceptions import ResponseError

from .queue import DeadLetter, QueueDepth, QueueMessage, check_claim_arguments, new_message_id

__all__ = ["RedisQueue"]

GROUP = "lambdagate"
PROMOTE_BATCH = 100  # most delayed messages put back on the stream per claim


class _Envelope(msgspec.Struct, array_like=True, frozen=True):
    """A message as stored in the stream: its counts travel with it across re-added entries."""

    id: str
    payload: bytes
    attributes: dict[str, str]
    enqueued_at: float
    receives: int  # deliveries of earlier stream entries of this message
    failures: int


_envelope_decoder = msgspec.msgpack.Decoder(_Envelope)
_dead_decoder = msgspec.msgpack.Decoder(DeadLetter)
_encode = msgspec.msgpack.encode

# KEYS: delayed, stream. ARGV: most to move. Returns {moved, ms until the next one is due or -1}.
_PROMOTE = """
local now = redis.call('TIME')
local now_ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now_ms, 'LIMIT', 0, tonumber(ARGV[1]))
for _, member in ipairs(due) do
    redis.call('XADD', KEYS[2], '*', 'm', member)
    redis.call('ZREM', KEYS[1], member)
end
local next_due = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
if #next_due == 0 then return {#due, -1} end
return {#due, math.max(tonumber(next_due[2]) - now_ms, 0)}
"""

# KEYS: delayed, stream. ARGV: delay ms, envelope. Server time, so nodes' clocks need not agree.
_DELAY = """
local now = redis.call('TIME')
local now_ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
redis.call('ZADD', KEYS[1], now_ms + tonumber(ARGV[1]), ARGV[2])
return 1
"""

# KEYS: stream, delayed, dead. ARGV: group, entry id, consumer, action, delay ms, data.
# action: "ack" deletes the entry; "retry" also adds `data` (an envelope) to delayed;
# "dead" also adds `data` (a DeadLetter) to the dead-letter stream.
_SETTLE = """
local pending = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[2], ARGV[2], 1)
if #pending == 0 or pending[1][2] ~= ARGV[3] then return 0 end
redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
redis.call('XDEL', KEYS[1], ARGV[2])
if ARGV[4] == 'retry' then
    local now = redis.call('TIME')
    local now_ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
    redis.call('ZADD', KEYS[2], now_ms + tonumber(ARGV[5]), ARGV[6])
elseif ARGV[4] == 'dead' then
    redis.call('XADD', KEYS[3], '*', 'd', ARGV[6])
end
return 1
"""

# KEYS: dead, stream. ARGV: dead entry id, envelope. XDEL first: two admins redriving at once
# must not both re-add the message.
_REDRIVE = """
if redis.call('XDEL', KEYS[1], ARGV[1]) == 1 then
    redis.call('XADD', KEYS[2], '*', 'm', ARGV[2])
    return 1
end
return 0
"""


class RedisQueue:
    """DurableQueue on Redis Streams; see the module docstring for the key layout."""

    def __init__(
        self,
        client: redis_asyncio.Redis,
        *,
        prefix: str = "lambdagate:queue:",
        owns_client: bool = False,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._client = client
        self._prefix = prefix
        self._owns_client = owns_client
        self._clock = clock
        self._groups_made: set[str] = set()
        self._autoclaim_cursors: dict[str, str] = {}
        self._promote = client.register_script(_PROMOTE)
        self._delay = client.register_script(_DELAY)
        self._settle = client.register_script(_SETTLE)
        self._redrive = client.register_script(_REDRIVE)

    @classmethod
    def from_url(
        cls, url: str, *, prefix: str = "lambdagate:queue:", clock: Callable[[], float] = time.time
    ) -> RedisQueue:
        return cls(redis_asyncio.Redis.from_url(url), prefix=prefix, owns_client=True, clock=clock)

    async def close(self) -> None:
        if self._owns_client:
            await self._client.aclose()

    async def __aenter__(self) -> RedisQueue:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    # --- keys ----------------------------------------------------------------------------------

    def _key(self, queue: str, part: str) -> str:
        return f"{self._prefix}{{{queue}}}:{part}"

    def _keys(self, queue: str) -> tuple[str, str, str]:
        return self._key(queue, "stream"), self._key(queue, "delayed"), self._key(queue, "dead")

    # --- producing ------------------------------------------------------------------------------

    async def enqueue(
        self,
        queue: str,
        payload: bytes,
        attributes: Mapping[str, str] | None = None,
        *,
        message_id: str | None = None,
        delay: float = 0.0,
    ) -> str:
        message_id = message_id or new_message_id()
        envelope = _encode(_Envelope(message_id, payload, dict(attributes or {}), self._clock(), 0, 0))
        stream, delayed, _ = self._keys(queue)
        if delay > 0:
            await self._delay(keys=[delayed, stream], args=[_ms(delay), envelope])
        else:
            await self._client.xadd(stream, {"m": envelope})
        return message_id

    # --- consuming ------------------------------------------------------------------------------

    async def claim(
        self,
        queue: str,
        consumer: str,
        *,
        count: int = 1,
        visibility_timeout: float = 30.0,
        wait: float = 0.0,
    ) -> list[QueueMessage]:
        check_claim_arguments(count, visibility_timeout, wait)
        stream, delayed, _ = self._keys(queue)
        await self._ensure_group(stream)
        deadline = time.monotonic() + wait
        while True:
            _, next_due_ms = await self._promote(keys=[delayed, stream], args=[PROMOTE_BATCH])
            claimed = await self._take_over(queue, stream, consumer, count, visibility_timeout, self._clock())
            if len(claimed) < count:
                # Block (only when empty-handed) no longer than until the next delayed message is
                # due: only a claim puts it back on the stream.
                block_ms = 0 if claimed else _ms(deadline - time.monotonic())
                if next_due_ms >= 0:
                    block_ms = min(block_ms, max(int(next_due_ms), 1))
                # redis-py's reply types are loose unions: the shapes are XREADGROUP's.
                reply: Any = await self._client.xreadgroup(
                    GROUP,
                    consumer,
                    {stream: ">"},
                    count=count - len(claimed),
                    block=block_ms if block_ms > 0 else None,
                )
                now = self._clock()
                claimed += [
                    _message(queue, entry_id, fields, consumer, 1, now)
                    for _, entries in reply or ()
                    for entry_id, fields in entries
                ]
            if claimed or time.monotonic() >= deadline:
                return claimed

    async def _ensure_group(self, stream: str) -> None:
        if stream in self._groups_made:
            return
        try:
            # From id 0: messages enqueued before any consumer existed are delivered too.
            await self._client.xgroup_create(stream, GROUP, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
        self._groups_made.add(stream)

    async def _take_over(
        self, queue: str, stream: str, consumer: str, count: int, visibility_timeout: float, now: float
    ) -> list[QueueMessage]:
        """Claim entries left pending longer than the visibility timeout (their consumer is gone)."""
        cursor = self._autoclaim_cursors.get(stream, "0-0")
        reply = await self._client.xautoclaim(
            stream, GROUP, consumer, _ms(visibility_timeout), start_id=cursor, count=count
        )
        next_cursor, entries = reply[0], reply[1]
        self._autoclaim_cursors[stream] = _text(next_cursor)
        entries = [(entry_id, fields) for entry_id, fields in entries if fields]  # Redis 6.2: deleted ones
        if not entries:
            return []
        # XAUTOCLAIM counted the delivery; the pending entry tells how many there were.
        async with self._client.pipeline(transaction=False) as pipe:
            for entry_id, _ in entries:
                pipe.xpending_range(stream, GROUP, min=entry_id, max=entry_id, count=1)
            details = await pipe.execute()
        claimed = []
        for (entry_id, fields), detail in zip(entries, details, strict=True):
            deliveries = int(detail[0]["times_delivered"]) if detail else 1
            claimed.append(_message(queue, entry_id, fields, consumer, deliveries, now))
        return claimed

    # --- settling -------------------------------------------------------------------------------

    async def ack(self, message: QueueMessage) -> bool:
        return await self._settle_entry(message, "ack", 0, b"")

    async def retry(self, message: QueueMessage, delay: float = 0.0, *, failed: bool = True) -> bool:
        envelope = _Envelope(
            message.id,
            message.payload,
            message.attributes,
            message.enqueued_at,
            message.receive_count,
            message.failures + int(failed),
        )
        return await self._settle_entry(message, "retry", _ms(delay), _encode(envelope))

    async def dead_letter(
        self, message: QueueMessage, *, condition: str, error: Mapping[str, Any], attempts: int
    ) -> bool:
        record = DeadLetter(
            id=message.id,
            queue=message.queue,
            payload=message.payload,
            attributes=message.attributes,
            enqueued_at=message.enqueued_at,
            condition=condition,
            error=dict(error),
            attempts=attempts,
            receive_count=message.receive_count,
            dead_at=self._clock(),
        )
        return await self._settle_entry(message, "dead", 0, _encode(record))

    async def _settle_entry(self, message: QueueMessage, action: str, delay_ms: int, data: bytes) -> bool:
        settled = await self._settle(
            keys=list(self._keys(message.queue)),
            args=[GROUP, message.receipt, message.consumer, action, delay_ms, data],
        )
        return bool(settled)

    # --- dead letters ---------------------------------------------------------------------------

    async def dead_letters(self, queue: str, *, limit: int = 100) -> list[DeadLetter]:
        _, _, dead = self._keys(queue)
        entries: Any = await self._client.xrange(dead, count=limit)
        return [_dead_decoder.decode(fields[b"d"]) for _, fields in entries]

    async def redrive(self, queue: str, message_ids: Sequence[str] | None = None) -> int:
        stream, _, dead = self._keys(queue)
        wanted = None if message_ids is None else set(message_ids)
        now = self._clock()
        moved = 0
        start = "-"
        while True:
            entries: Any = await self._client.xrange(dead, min=start, count=500)
            for entry_id, fields in entries:
                record = _dead_decoder.decode(fields[b"d"])
                if wanted is not None and record.id not in wanted:
                    continue
                envelope = _Envelope(record.id, record.payload, record.attributes, now, 0, 0)
                moved += int(await self._redrive(keys=[dead, stream], args=[entry_id, _encode(envelope)]))
            if len(entries) < 500:
                return moved
            start = "(" + _text(entries[-1][0])

    async def depth(self, queue: str) -> QueueDepth:
        stream, delayed, dead = self._keys(queue)
        await self._ensure_group(stream)
        async with self._client.pipeline(transaction=False) as pipe:
            pipe.xlen(stream)
            pipe.xpending(stream, GROUP)
            pipe.zcard(delayed)
            pipe.xlen(dead)
            stream_length, pending, delayed_count, dead_count = await pipe.execute()
        in_flight = int(pending["pending"])
        return QueueDepth(
            ready=int(stream_length) - in_flight,
            in_flight=in_flight,
            delayed=int(delayed_count),
            dead=int(dead_count),
        )


def _message(
    queue: str, entry_id: bytes, fields: dict[bytes, bytes], consumer: str, deliveries: int, now: float
) -> QueueMessage:
    envelope = _envelope_decoder.decode(fields[b"m"])
    return QueueMessage(
        id=envelope.id,
        queue=queue,
        payload=envelope.payload,
        attributes=envelope.attributes,
        enqueued_at=envelope.enqueued_at,
        receive_count=envelope.receives + deliveries,
        failures=envelope.failures,
        receipt=_text(entry_id),
        consumer=consumer,
        received_at=now,
    )


def _ms(seconds: float) -> int:
    return max(int(seconds * 1000), 0)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
