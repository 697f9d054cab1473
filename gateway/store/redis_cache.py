"""The shared response-cache tier on Redis: a second level behind each worker's in-memory store.

With ``[store] redis`` set and a route's ``cache`` plugin configured with ``redis = true``, a
response one node stored is a hit for every node: the local store is consulted first, then Redis;
an entry found in Redis is copied into the local store (keeping its stored_at, so it ages the
same everywhere).

Layout under a key prefix (default ``lambdagate:{cache}:``; the hash tag keeps every key in one
slot, so the scripts below also run on Redis Cluster):

    e:{primary key hex}   hash   "v"            -> Vary names of the latest response ("\\n"-joined)
                                 vary material  -> EntryRecord (msgpack), b"" when no Vary
                          the key's TTL is the longest remaining lifetime of its variants; a stale
                          variant is ignored on read and replaced on the next store
    paths                 zset   score 0, member "{path}\\0{host}\\0{primary key hex}": purge by
                                 path prefix is a ZRANGEBYLEX, not a key scan
    expiry                zset   the same members scored by expiry time, so index members of
                                 expired entries are removed (64 at a time) on each store

A lookup without Vary is one round trip (HMGET of "v" and b""); with Vary, two.
"""

from __future__ import annotations

import importlib
from typing import Any

import msgspec
import redis.asyncio as redis_asyncio

__all__ = ["EntryRecord", "RedisCacheTier"]

# Imported by name: mypy cannot follow the editable install's folder mapping to _fastpath/.
_cache: Any = importlib.import_module("gateway._fastpath.cache")

DEFAULT_PREFIX = "lambdagate:{cache}:"


class EntryRecord(msgspec.Struct, array_like=True, frozen=True):
    """One stored response as kept in Redis."""

    primary: bytes  # compared on read: a hash collision is a miss, never another resource
    host: bytes
    path: bytes
    status: int
    head: bytes  # Entry.head: ready to serve (Content-Length and X-Cache included)
    body: bytes
    stored_at: float
    ttl: float
    initial_age: float


_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(EntryRecord)

# KEYS: entry hash, paths, expiry. ARGV: vary names, vary material, record, ttl in ms, index member,
# expires at (Unix s), now (Unix s).
_STORE_SCRIPT = """
local names = redis.call('HGET', KEYS[1], 'v')
if names ~= false and names ~= ARGV[1] then
  redis.call('DEL', KEYS[1])
end
redis.call('HSET', KEYS[1], 'v', ARGV[1], ARGV[2], ARGV[3])
local ttl = tonumber(ARGV[4])
local pttl = redis.call('PTTL', KEYS[1])
if pttl < ttl then
  redis.call('PEXPIRE', KEYS[1], ttl)
end
redis.call('ZADD', KEYS[2], 0, ARGV[5])
local old = redis.call('ZSCORE', KEYS[3], ARGV[5])
if old == false or tonumber(old) < tonumber(ARGV[6]) then
  redis.call('ZADD', KEYS[3], ARGV[6], ARGV[5])
end
local dead = redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', ARGV[7], 'LIMIT', 0, 64)
for _, member in ipairs(dead) do
  redis.call('ZREM', KEYS[2], member)
  redis.call('ZREM', KEYS[3], member)
end
return 1
"""

# KEYS: paths, expiry. ARGV: prefix of entry keys, lex range start, lex range end, host or "".
_PURGE_SCRIPT = """
local members = redis.call('ZRANGEBYLEX', KEYS[1], ARGV[2], ARGV[3])
local dropped = 0
for _, member in ipairs(members) do
  local path_end = string.find(member, '\\0', 1, true)
  local host_end = string.find(member, '\\0', path_end + 1, true)
  local host = string.sub(member, path_end + 1, host_end - 1)
  if ARGV[4] == '' or ARGV[4] == host then
    dropped = dropped + redis.call('DEL', ARGV[1] .. string.sub(member, host_end + 1))
    redis.call('ZREM', KEYS[1], member)
    redis.call('ZREM', KEYS[2], member)
  end
end
return dropped
"""


def _split_names(raw: bytes) -> tuple[bytes, ...]:
    return tuple(raw.split(b"\n")) if raw else ()


def _lex_end(prefix: bytes) -> bytes:
    """The exclusive ZRANGEBYLEX bound just past every string starting with `prefix`."""
    stripped = prefix.rstrip(b"\xff")
    if not stripped:
        return b"+"
    return b"(" + stripped[:-1] + bytes([stripped[-1] + 1])


class RedisCacheTier:
    """Async get/set/purge of cache entries in Redis (see the module docstring for the layout)."""

    def __init__(
        self, client: redis_asyncio.Redis, *, prefix: str = DEFAULT_PREFIX, owns_client: bool = False
    ) -> None:
        self._client = client
        self._prefix = prefix.encode()
        self._owns_client = owns_client
        self._paths = self._prefix + b"paths"
        self._expiry = self._prefix + b"expiry"
        self._store = client.register_script(_STORE_SCRIPT)
        self._purge = client.register_script(_PURGE_SCRIPT)

    @classmethod
    def from_url(cls, url: str, *, prefix: str = DEFAULT_PREFIX) -> RedisCacheTier:
        return cls(redis_asyncio.Redis.from_url(url), prefix=prefix, owns_client=True)

    async def close(self) -> None:
        if self._owns_client:
            await self._client.aclose()

    def _entry_key(self, primary: bytes) -> bytes:
        return b"%se:%016x" % (self._prefix, _cache.primary_key(primary))

    async def get(self, primary: bytes, header: Any, now: float) -> EntryRecord | None:
        """The fresh record for a request; header(lowercased name: bytes) -> value or None."""
        found = await self._fetch(primary, header, now)
        return None if found is None else found[2]

    async def get_into(self, cache: Any, primary: bytes, header: Any, now: float) -> Any:
        """get(), then copy the record into a local ResponseCache; the local Entry or None."""
        found = await self._fetch(primary, header, now)
        if found is None:
            return None
        names, vary, record = found
        return cache.put(
            record.primary,
            record.host,
            record.path,
            names,
            vary,
            record.status,
            record.head,
            record.body,
            record.stored_at,
            record.ttl,
            record.initial_age,
        )

    async def _fetch(
        self, primary: bytes, header: Any, now: float
    ) -> tuple[tuple[bytes, ...], bytes, EntryRecord] | None:
        key = self._entry_key(primary)
        # The client is built without decode_responses, so replies are bytes.
        raw_names, raw_record = await self._client.hmget(key, [b"v", b""])
        if not isinstance(raw_names, bytes):
            return None
        names = _split_names(raw_names)
        vary = b""
        if names:
            vary = _cache.vary_material([header(name) for name in names])
            raw_record = await self._client.hget(key, vary)
        if not isinstance(raw_record, bytes):
            return None
        record = _decoder.decode(raw_record)
        if record.primary != primary or now >= record.stored_at + record.ttl - record.initial_age:
            return None
        return names, vary, record

    async def set(self, entry: Any, now: float) -> None:
        """Store a local Entry (as committed by a Fill) for every node."""
        variants = entry.variants
        expires_at = entry.stored_at + entry.ttl - entry.initial_age
        ttl_ms = int((expires_at - now) * 1000)
        if ttl_ms <= 0:
            return
        record = EntryRecord(
            variants.primary,
            variants.host,
            variants.path,
            entry.status,
            entry.head,
            entry.body,
            entry.stored_at,
            entry.ttl,
            entry.initial_age,
        )
        key = self._entry_key(variants.primary)
        member = variants.path + b"\0" + variants.host + b"\0" + key[len(self._prefix) :]
        await self._store(
            keys=[key, self._paths, self._expiry],
            args=[
                b"\n".join(variants.vary_names),
                entry.vary,
                _encoder.encode(record),
                ttl_ms,
                member,
                repr(expires_at),
                repr(now),
            ],
        )

    async def purge(self, primary: bytes) -> int:
        """Drop every variant of one resource; 1 if something was stored, else 0."""
        dropped: int = await self._client.delete(self._entry_key(primary))
        return dropped

    async def purge_key(self, key: int) -> int:
        """Drop every variant of the resource with this primary key."""
        dropped: int = await self._client.delete(b"%se:%016x" % (self._prefix, key))
        return dropped

    async def purge_prefix(self, prefix: bytes, host: bytes | None = None) -> int:
        """Drop every resource whose path starts with `prefix` (of `host` only, when given)."""
        dropped: int = await self._purge(
            keys=[self._paths, self._expiry],
            args=[self._prefix, b"[" + prefix, _lex_end(prefix), host or b""],
        )
        return dropped
