"""Response cache store: LRU with per-entry TTL, a byte budget, Vary variants and miss coalescing.

Written in Cython's pure-Python mode: cache.pxd turns the classes below into cdef classes, so this
one source runs compiled (gateway._fastpath.cache, cimported by the engine) and interpreted (tests
load the .py directly and check both agree). The store knows nothing of HTTP semantics: whether a
response may be stored and for how long is decided by gateway.cache_policy.

Keys, two levels (RFC 9111 §4.1)
    primary material  METHOD \\0 host \\0 path \\0 query        (primary_material())
    primary key       xxh3_64 of the primary material (a Python int)
    vary material     one part per name the stored response's Vary lists, in that order:
                      \\0 + value when the request has the header, \\1 when it does not
                      (vary_material(); header values never contain NUL or SOH)
    entry key         xxh3_64 of primary material + \\0\\0 + vary material

A primary key maps to a Variants record: the lowercased Vary names of the most recent response
and its entries by vary material. The primary material is kept and compared on every lookup, so
a 64-bit hash collision can only cost a miss, never serve another resource's response.

Lookup from C (the engine) without building Python dicts of headers:
    variants = cache.find(material)            # None: miss
    vary = b"" if not variants.vary_names else <build vary material from the parsed headers>
    entry = cache.get(variants, vary, now)     # None: miss (absent or stale)
    write entry.head, b"Age: %d\\r\\n" % entry.age(now), Date, Connection, CRLF, entry.body

Filling (the engine relays a response and copies its body into the store):
    fill = cache.begin(material, path, host, vary_names, vary, head, status, ttl, initial_age, now)
    fill.append(chunk) ... -> False once over max_entry_size (stop feeding; nothing is stored)
    fill.commit(now) / fill.abort()

Coalescing: cache.join(key, callback) makes the first caller for a primary key the leader (True)
and queues later callers' callbacks (False). The leader's Fill (begun with the same primary
material) wakes them on commit with the new Entry, or with None on abort; a leader that never
begins a Fill (response not storable, upstream error) must call cache.release(key, None). Woken
callers get the Entry only: when it has vary names they compare entry.vary with their own vary
material and go upstream on a mismatch.

Clock: `now` is Unix time in seconds (time.time()), so entries shared through Redis age the same on
every node. Expired entries are dropped when a lookup meets them or when they reach the LRU tail.

Byte budget: an entry costs len(head) + len(body) (the response bytes it serves); per-entry
bookkeeping (~300 bytes of Python objects) is not counted.

Purge by path prefix walks an index of path segments (a trie keyed by '/'-separated segments), so
it visits only the paths under the prefix, not every entry.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

from xxhash import xxh3_64_intdigest

# C integers when compiled (declared in cache.pxd); a plain int annotation would make Cython expect
# a Python int object there instead.
Index = int
Status = int
VaryNames = tuple[bytes, ...]

_SEP = b"\x00"
_PRESENT = b"\x00"
_ABSENT = b"\x01"
_HIT_LINE = b"X-Cache: HIT\r\n"

# Response header fields never stored: they describe one connection or one transmission (RFC 9110
# §7.6.1, RFC 9111 §3.1), are added at serve time (Date, Age, X-Cache) or recomputed from the
# stored body (Content-Length, Transfer-Encoding).
_UNSTORED_FIELDS = frozenset(
    {
        b"age",
        b"connection",
        b"content-length",
        b"date",
        b"keep-alive",
        b"proxy-authenticate",
        b"proxy-authentication-info",
        b"proxy-authorization",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
        b"x-cache",
    }
)


def primary_material(method: bytes, host: bytes, path: bytes, query: bytes) -> bytes:
    """The first-level key material; `host` lowercased without port, as the router sees it."""
    return method + _SEP + host + _SEP + path + _SEP + query


def primary_key(material: bytes) -> object:
    """The 64-bit key (a Python int) of a primary material."""
    return xxh3_64_intdigest(material)


def vary_material(values: Sequence[bytes | None]) -> bytes:
    """The second-level key material: request header values in Vary-name order, None = absent."""
    parts = []
    for value in values:
        if value is None:
            parts.append(_ABSENT)
        else:
            parts.append(_PRESENT + value.strip())
    return b"".join(parts)


def stored_head(status: int, reason: bytes, fields: Sequence[tuple[bytes, bytes]]) -> bytes:
    """Status line and the header fields worth storing, each line ending CRLF (no blank line).

    Drops hop-by-hop fields (and the ones a Connection header names), and the fields the store
    recomputes or adds at serve time.
    """
    connection_named: set[bytes] = set()
    for name, value in fields:
        if name.lower() == b"connection":
            for token in value.split(b","):
                connection_named.add(token.strip().lower())
    lines = [b"HTTP/1.1 %d %s\r\n" % (status, reason)]
    for name, value in fields:
        lower = name.lower()
        if lower in _UNSTORED_FIELDS or lower in connection_named:
            continue
        lines.append(name + b": " + value + b"\r\n")
    return b"".join(lines)


class Entry:
    """One stored response: ready-made head bytes and body, plus its age bookkeeping."""

    def __init__(
        self,
        variants: Variants,
        vary: bytes,
        status: int,
        head: bytes,
        body: bytes,
        stored_at: float,
        ttl: float,
        initial_age: float,
    ) -> None:
        self.variants = variants
        self.vary = vary
        self.key = xxh3_64_intdigest(variants.primary + _SEP + _SEP + vary)
        self.status = status
        # Status line + stored fields + Content-Length + X-Cache: HIT, each line ending CRLF.
        self.head = head
        self.body = body
        self.stored_at = stored_at
        self.ttl = ttl
        self.initial_age = initial_age
        # Fresh while current age < ttl (RFC 9111 §4.2): current age = initial_age + (now - stored_at).
        self.expires_at = stored_at + ttl - initial_age
        self.size = len(head) + len(body)
        # Intrusive LRU list links (the cache's sentinel is the list head).
        self.newer: Entry | None = None
        self.older: Entry | None = None

    @property
    def vary_names(self) -> tuple[bytes, ...]:
        return self.variants.vary_names

    @property
    def primary(self) -> bytes:
        return self.variants.primary

    def age(self, now: float) -> Index:
        """The Age header value at `now`: whole seconds, never negative (RFC 9111 §4.2.3, §5.1)."""
        current = self.initial_age + (now - self.stored_at)
        if current <= 0:
            return 0
        return int(current)

    def fresh(self, now: float) -> bool:
        return now < self.expires_at

    def response(self, now: float, date_line: bytes, keep_alive: bool, head_only: bool) -> bytes:
        """The whole response as sent to a client (the Python-level mirror of the engine's write).

        date_line is b"Date: ...\\r\\n"; keep_alive False adds Connection: close.
        """
        parts = [self.head, b"Age: %d\r\n" % self.age(now), date_line]
        if not keep_alive:
            parts.append(b"Connection: close\r\n")
        parts.append(b"\r\n")
        if not head_only:
            parts.append(self.body)
        return b"".join(parts)

    def header_fields(self) -> list[tuple[bytes, bytes]]:
        """The stored header fields (Content-Length and X-Cache included) as (name, value) pairs."""
        fields: list[tuple[bytes, bytes]] = []
        for line in self.head.split(b"\r\n")[1:]:
            if line:
                name, _, value = line.partition(b":")
                fields.append((name, value.strip()))
        return fields


class Variants:
    """The entries stored under one primary key, told apart by their vary material."""

    def __init__(
        self, key: object, primary: bytes, host: bytes, path: bytes, vary_names: tuple[bytes, ...]
    ) -> None:
        self.key = key
        self.primary = primary
        self.host = host
        self.path = path
        # Lowercased field names of the latest stored response's Vary; () when it has none.
        self.vary_names = vary_names
        self.entries: dict[bytes, Entry] = {}


class Fill:
    """A response being stored while it is relayed: body chunks accumulate until commit."""

    def __init__(
        self,
        cache: ResponseCache,
        key: object,
        primary: bytes,
        host: bytes,
        path: bytes,
        vary_names: VaryNames,
        vary: bytes,
        head: bytes,
        status: Status,
        ttl: float,
        initial_age: float,
        stored_at: float,
    ) -> None:
        self.cache = cache
        self.key = key
        self.primary = primary
        self.host = host
        self.path = path
        self.vary_names = vary_names
        self.vary = vary
        self.head = head
        self.status = status
        self.ttl = ttl
        self.initial_age = initial_age
        self.stored_at = stored_at
        self.chunks: list[bytes] = []
        self.size = len(head)
        self.active = True

    def append(self, chunk: bytes) -> bool:
        """Add body bytes; False (and the fill aborted) once the entry would exceed max_entry_size."""
        if not self.active:
            return False
        self.size += len(chunk)
        if self.size > self.cache.max_entry_size:
            self.abort()
            return False
        self.chunks.append(chunk)
        return True

    def commit(self, now: float) -> Entry | None:
        """Store the response (evicting LRU entries as needed) and wake coalesced waiters.

        None when the fill was aborted or the finished entry does not fit the budget.
        """
        if not self.active:
            return None
        self.active = False
        body = b"".join(self.chunks)
        self.chunks = []
        head = self.head
        if self.status != 204 and self.status != 304 and self.status >= 200:
            head = head + b"Content-Length: %d\r\n" % len(body)
        else:
            body = b""
        head = head + _HIT_LINE
        cache = self.cache
        entry = cache._insert(
            self.key,
            self.primary,
            self.host,
            self.path,
            self.vary_names,
            self.vary,
            self.status,
            head,
            body,
            self.stored_at,
            self.ttl,
            self.initial_age,
        )
        if entry is not None and cache.on_store is not None:
            cache.on_store(entry)
        cache.release(self.key, entry)
        return entry

    def abort(self) -> None:
        """Give up storing (too large, upstream failed, client gone); waiters go upstream."""
        if not self.active:
            return
        self.active = False
        self.chunks = []
        self.cache.release(self.key, None)


class _PathNode:
    """A position in the purge index: the primary keys whose path ends here, and child segments."""

    def __init__(self) -> None:
        self.children: dict[bytes, _PathNode] = {}
        self.keys: set[object] = set()


class _PathIndex:
    """Primary keys by path, walkable by prefix: a trie of '/'-separated path segments."""

    def __init__(self) -> None:
        self.root = _PathNode()

    def add(self, path: bytes, key: object) -> None:
        node = self.root
        for segment in path.split(b"/"):
            child = node.children.get(segment)
            if child is None:
                child = _PathNode()
                node.children[segment] = child
            node = child
        node.keys.add(key)

    def remove(self, path: bytes, key: object) -> None:
        trail: list[tuple[_PathNode, bytes]] = []
        node = self.root
        for segment in path.split(b"/"):
            child = node.children.get(segment)
            if child is None:
                return
            trail.append((node, segment))
            node = child
        node.keys.discard(key)
        # Prune the branch back up while it holds nothing.
        for parent, segment in reversed(trail):
            child = parent.children[segment]
            if child.keys or child.children:
                break
            del parent.children[segment]

    def under(self, prefix: bytes) -> list[object]:
        """Primary keys of every path that starts with `prefix` (byte-wise, not segment-wise)."""
        segments = prefix.split(b"/")
        node: _PathNode | None = self.root
        for segment in segments[: len(segments) - 1]:
            assert node is not None
            node = node.children.get(segment)
            if node is None:
                return []
        assert node is not None
        partial = segments[len(segments) - 1]
        found: list[object] = []
        for name, child in node.children.items():
            if name.startswith(partial):
                _collect_keys(child, found)
        return found


def _collect_keys(node: _PathNode, found: list[object]) -> None:
    found.extend(node.keys)
    for child in node.children.values():
        _collect_keys(child, found)


HeaderGetter = Callable[[bytes], "bytes | None"]


class ResponseCache:
    """One store: entries by primary key + vary material, an LRU list and a byte budget."""

    def __init__(self, max_bytes: int, max_entry_size: int) -> None:
        if max_bytes < 0 or max_entry_size < 0:
            raise ValueError("cache sizes cannot be negative")
        self.max_bytes = max_bytes
        # An entry larger than the whole budget could never be kept.
        self.max_entry_size = min(max_entry_size, max_bytes)
        self.used_bytes = 0
        self.count = 0
        self._variants: dict[object, Variants] = {}
        # LRU list: sentinel.older is the most recently used entry, sentinel.newer the least.
        self._sentinel = Entry(Variants(0, b"", b"", b"", ()), b"", 0, b"", b"", 0.0, 0.0, 0.0)
        self._sentinel.newer = self._sentinel
        self._sentinel.older = self._sentinel
        self._paths = _PathIndex()
        self._waiters: dict[object, list[Callable[[Entry | None], object]]] = {}
        # Called with each entry a Fill commits (not with put() ones): the Redis tier's writer.
        self.on_store: Callable[[Entry], object] | None = None

    # -- lookup -----------------------------------------------------------------------------

    def find(self, primary: bytes) -> Variants | None:
        """The variants stored for a primary material, or None."""
        variants = self._variants.get(xxh3_64_intdigest(primary))
        if variants is None or variants.primary != primary:
            return None
        return variants

    def get(self, variants: Variants, vary: bytes, now: float) -> Entry | None:
        """The fresh entry for a vary material (marked most recently used); a stale one is dropped."""
        entry = variants.entries.get(vary)
        if entry is None:
            return None
        if now >= entry.expires_at:
            self._remove(entry)
            return None
        self._touch(entry)
        return entry

    def lookup(self, primary: bytes, header: HeaderGetter, now: float) -> Entry | None:
        """find + get for Python callers: header(lowercased name) -> value or None."""
        variants = self.find(primary)
        if variants is None:
            return None
        vary = b""
        if variants.vary_names:
            vary = vary_material([header(name) for name in variants.vary_names])
        return self.get(variants, vary, now)

    def __len__(self) -> int:
        return self.count

    def entries(self) -> Iterator[Entry]:
        """Every entry, most recently used first (includes stale ones not yet dropped)."""
        entry = self._sentinel.older
        while entry is not self._sentinel:
            assert entry is not None
            yield entry
            entry = entry.older

    # -- storing ----------------------------------------------------------------------------

    def begin(
        self,
        primary: bytes,
        host: bytes,
        path: bytes,
        vary_names: VaryNames,
        vary: bytes,
        head: bytes,
        status: Status,
        ttl: float,
        initial_age: float,
        now: float,
    ) -> Fill:
        """Start storing a response; `head` from stored_head(), `vary` built for `vary_names`."""
        return Fill(
            self,
            xxh3_64_intdigest(primary),
            primary,
            host,
            path,
            vary_names,
            vary,
            head,
            status,
            ttl,
            initial_age,
            now,
        )

    def put(
        self,
        primary: bytes,
        host: bytes,
        path: bytes,
        vary_names: VaryNames,
        vary: bytes,
        status: Status,
        head: bytes,
        body: bytes,
        stored_at: float,
        ttl: float,
        initial_age: float,
    ) -> Entry | None:
        """Insert a finished entry (its head as Entry.head: from another tier, e.g. Redis).

        Unlike Fill.commit it neither calls on_store nor wakes coalesced waiters.
        """
        return self._insert(
            xxh3_64_intdigest(primary),
            primary,
            host,
            path,
            vary_names,
            vary,
            status,
            head,
            body,
            stored_at,
            ttl,
            initial_age,
        )

    def _insert(
        self,
        key: object,
        primary: bytes,
        host: bytes,
        path: bytes,
        vary_names: VaryNames,
        vary: bytes,
        status: Status,
        head: bytes,
        body: bytes,
        stored_at: float,
        ttl: float,
        initial_age: float,
    ) -> Entry | None:
        size = len(head) + len(body)
        if size > self.max_entry_size or ttl - initial_age <= 0:
            return None
        variants = self._variants.get(key)
        if variants is not None and (variants.primary != primary or variants.vary_names != vary_names):
            # A colliding resource, or the resource changed its Vary: entries keyed by the old
            # names can no longer be selected, so they go (the latest response's Vary wins).
            self._remove_variants(variants)
            variants = None
        if variants is None:
            variants = Variants(key, primary, host, path, vary_names)
            self._variants[key] = variants
            self._paths.add(path, key)
        entry = Entry(variants, vary, status, head, body, stored_at, ttl, initial_age)
        old = variants.entries.get(vary)
        if old is not None:
            self._unlink(old)
        variants.entries[vary] = entry
        self._link_front(entry)
        self._evict()
        return entry

    def _evict(self) -> None:
        while self.used_bytes > self.max_bytes:
            victim = self._sentinel.newer
            assert victim is not None and victim is not self._sentinel
            self._remove(victim)

    # -- removal ----------------------------------------------------------------------------

    def purge(self, primary: bytes) -> int:
        """Drop every variant stored for a primary material; the number of entries dropped."""
        variants = self.find(primary)
        if variants is None:
            return 0
        return self._remove_variants(variants)

    def purge_key(self, key: object) -> int:
        """Drop the variants of a primary key, or the single entry with that entry key."""
        variants = self._variants.get(key)
        if variants is not None:
            return self._remove_variants(variants)
        for entry in self.entries():
            if entry.key == key:
                self._remove(entry)
                return 1
        return 0

    def purge_prefix(self, prefix: bytes, host: bytes | None = None) -> int:
        """Drop every entry whose path starts with `prefix` (of `host` only, when given)."""
        dropped = 0
        for key in self._paths.under(prefix):
            variants = self._variants.get(key)
            if variants is not None and (host is None or variants.host == host):
                dropped += self._remove_variants(variants)
        return dropped

    def clear(self) -> int:
        dropped = self.count
        for variants in list(self._variants.values()):
            self._remove_variants(variants)
        return dropped

    def _remove_variants(self, variants: Variants) -> int:
        dropped = 0
        for entry in list(variants.entries.values()):
            self._remove(entry)
            dropped += 1
        # _remove drops the Variants with its last entry; an empty one (never filled) goes here.
        if self._variants.get(variants.key) is variants:
            self._drop_variants(variants)
        return dropped

    def _remove(self, entry: Entry) -> None:
        variants = entry.variants
        if variants.entries.get(entry.vary) is entry:
            del variants.entries[entry.vary]
        self._unlink(entry)
        if not variants.entries and self._variants.get(variants.key) is variants:
            self._drop_variants(variants)

    def _drop_variants(self, variants: Variants) -> None:
        del self._variants[variants.key]
        self._paths.remove(variants.path, variants.key)

    # -- LRU list ---------------------------------------------------------------------------

    def _link_front(self, entry: Entry) -> None:
        sentinel = self._sentinel
        first = sentinel.older
        assert first is not None
        entry.newer = sentinel
        entry.older = first
        first.newer = entry
        sentinel.older = entry
        self.used_bytes += entry.size
        self.count += 1

    def _unlink(self, entry: Entry) -> None:
        newer = entry.newer
        older = entry.older
        if newer is None or older is None:
            return
        newer.older = older
        older.newer = newer
        entry.newer = None
        entry.older = None
        self.used_bytes -= entry.size
        self.count -= 1

    def _touch(self, entry: Entry) -> None:
        sentinel = self._sentinel
        if sentinel.older is entry:
            return
        newer = entry.newer
        older = entry.older
        assert newer is not None and older is not None
        newer.older = older
        older.newer = newer
        first = sentinel.older
        assert first is not None
        entry.newer = sentinel
        entry.older = first
        first.newer = entry
        sentinel.older = entry

    # -- coalescing -------------------------------------------------------------------------

    def join(self, key: object, callback: Callable[[Entry | None], object]) -> bool:
        """True: the caller leads the fetch for this primary key; False: callback queued."""
        waiters = self._waiters.get(key)
        if waiters is None:
            self._waiters[key] = []
            return True
        waiters.append(callback)
        return False

    def release(self, key: object, entry: Entry | None) -> Index:
        """End the leader's fetch: call every queued callback with the entry (None: go upstream).

        Every callback is called even if one raises; the first error is raised afterwards.
        Returns the number of callbacks called.
        """
        waiters = self._waiters.pop(key, None)
        if not waiters:
            return 0
        error: BaseException | None = None
        for callback in waiters:
            try:
                callback(entry)
            except Exception as exc:
                if error is None:
                    error = exc
        if error is not None:
            raise error
        return len(waiters)

    def in_flight(self, key: object) -> bool:
        return key in self._waiters

    def waiting(self, key: object) -> Index:
        waiters = self._waiters.get(key)
        return 0 if waiters is None else len(waiters)


def lookup_repeatedly(cache: ResponseCache, primary: bytes, vary: bytes, now: float, times: Index) -> object:
    """`times` compiled find+get calls (benchmarks: the per-hit cost without Python call overhead)."""
    entry = None
    for _ in range(times):
        variants = cache.find(primary)
        if variants is not None:
            entry = cache.get(variants, vary, now)
    return entry
