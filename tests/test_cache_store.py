"""Response cache store: behaviour by example, and hypothesis against a reference model.

Every test runs against the compiled module (gateway._fastpath.cache) and the interpreted source
(_fastpath/cache.py loaded directly); both must behave the same.
"""

from __future__ import annotations

import importlib
import importlib.util
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

SOURCE = Path(__file__).resolve().parent.parent / "_fastpath" / "cache.py"
# Imported by name: mypy cannot follow the editable install's folder mapping to _fastpath/.
compiled_cache = importlib.import_module("gateway._fastpath.cache")


def _load_interpreted() -> ModuleType:
    spec = importlib.util.spec_from_file_location("lambdagate_cache_interpreted", SOURCE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


interpreted_cache = _load_interpreted()
IMPLS = [compiled_cache, interpreted_cache]
IDS = ["compiled", "interpreted"]
impls = pytest.mark.parametrize("impl", IMPLS, ids=IDS)

NOW = 1_700_000_000.0
HOST = b"api.example.com"


def test_compiled_module_is_really_compiled() -> None:
    assert str(compiled_cache.__file__).endswith(".so")
    assert type(compiled_cache.lookup_repeatedly).__name__ != "function"
    assert type(interpreted_cache.lookup_repeatedly).__name__ == "function"


def material(impl: Any, path: bytes, query: bytes = b"", method: bytes = b"GET", host: bytes = HOST) -> Any:
    return impl.primary_material(method, host, path, query)


def store(
    impl: Any,
    cache: Any,
    path: bytes,
    body: bytes,
    *,
    ttl: float = 60.0,
    now: float = NOW,
    vary_names: tuple[bytes, ...] = (),
    vary: bytes = b"",
    query: bytes = b"",
    host: bytes = HOST,
    status: int = 200,
    initial_age: float = 0.0,
) -> Any:
    head = impl.stored_head(status, b"OK", [(b"Content-Type", b"text/plain")])
    primary = material(impl, path, query, host=host)
    fill = cache.begin(primary, host, path, vary_names, vary, head, status, ttl, initial_age, now)
    fill.append(body)
    return fill.commit(now)


def no_headers(name: bytes) -> bytes | None:
    return None


# --- keys and heads ------------------------------------------------------------------------------


@impls
def test_key_material_separates_fields(impl: Any) -> None:
    # The separator keeps ("/a", "b=1") and ("/a\0b=1", "") apart; method and host count.
    keys = {
        impl.primary_key(impl.primary_material(m, h, p, q))
        for m, h, p, q in [
            (b"GET", HOST, b"/a", b"b=1"),
            (b"GET", HOST, b"/a", b""),
            (b"HEAD", HOST, b"/a", b"b=1"),
            (b"GET", b"other.example.com", b"/a", b"b=1"),
            (b"GET", HOST, b"/a/", b"b=1"),
        ]
    }
    assert len(keys) == 5
    assert all(isinstance(key, int) and 0 <= key < 2**64 for key in keys)
    # Absent and empty header values are different vary material.
    assert impl.vary_material([None]) != impl.vary_material([b""])
    assert impl.vary_material([b"a", None]) != impl.vary_material([None, b"a"])
    assert impl.vary_material([b" gzip "]) == impl.vary_material([b"gzip"])


@impls
def test_stored_head_drops_hop_by_hop_and_serve_time_fields(impl: Any) -> None:
    head = impl.stored_head(
        200,
        b"OK",
        [
            (b"Content-Type", b"text/html"),
            (b"Connection", b"keep-alive, X-Secret"),
            (b"X-Secret", b"1"),
            (b"Date", b"Tue, 14 Nov 2023 22:13:20 GMT"),
            (b"Age", b"3"),
            (b"Transfer-Encoding", b"chunked"),
            (b"Content-Length", b"99"),
            (b"Keep-Alive", b"timeout=5"),
            (b"X-Cache", b"MISS"),
            (b"ETag", b'"v1"'),
        ],
    )
    assert head == b'HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nETag: "v1"\r\n'


@impls
def test_hit_serves_ready_made_bytes(impl: Any) -> None:
    cache = impl.ResponseCache(1 << 20, 1 << 16)
    entry = store(impl, cache, b"/a", b"hello", initial_age=3.0)
    assert entry is not None
    assert entry.head.endswith(b"Content-Length: 5\r\nX-Cache: HIT\r\n")
    found = cache.lookup(material(impl, b"/a"), no_headers, NOW + 10.9)
    assert found is entry
    assert found.age(NOW + 10.9) == 13
    assert found.response(NOW + 10.9, b"Date: D\r\n", True, False) == (
        b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5\r\nX-Cache: HIT\r\n"
        b"Age: 13\r\nDate: D\r\n\r\nhello"
    )
    assert found.response(NOW, b"Date: D\r\n", False, True).endswith(b"Connection: close\r\n\r\n")
    assert found.header_fields() == [
        (b"Content-Type", b"text/plain"),
        (b"Content-Length", b"5"),
        (b"X-Cache", b"HIT"),
    ]
    assert cache.used_bytes == entry.size == len(entry.head) + 5
    assert cache.lookup(material(impl, b"/a", b"x=1"), no_headers, NOW) is None


@impls
def test_no_content_status_stores_no_body(impl: Any) -> None:
    cache = impl.ResponseCache(1 << 20, 1 << 16)
    entry = store(impl, cache, b"/n", b"ignored", status=204)
    assert entry.body == b""
    assert b"Content-Length" not in entry.head


@impls
def test_ttl_expiry_and_initial_age(impl: Any) -> None:
    cache = impl.ResponseCache(1 << 20, 1 << 16)
    store(impl, cache, b"/a", b"x", ttl=10.0, initial_age=4.0)
    primary = material(impl, b"/a")
    assert cache.lookup(primary, no_headers, NOW + 5.99) is not None
    # Fresh while initial_age + resident time < ttl: 4 + 6 = 10 is stale.
    assert cache.lookup(primary, no_headers, NOW + 6.0) is None
    assert len(cache) == 0 and cache.used_bytes == 0
    # Stale on arrival is not stored at all.
    assert store(impl, cache, b"/b", b"x", ttl=5.0, initial_age=5.0) is None
    assert len(cache) == 0


@impls
def test_vary_separates_variants(impl: Any) -> None:
    cache = impl.ResponseCache(1 << 20, 1 << 16)
    names = (b"accept-encoding",)
    gzip = impl.vary_material([b"gzip"])
    plain = impl.vary_material([None])
    store(impl, cache, b"/v", b"zipped", vary_names=names, vary=gzip)
    store(impl, cache, b"/v", b"plain", vary_names=names, vary=plain)
    primary = material(impl, b"/v")
    headers = {b"accept-encoding": b"gzip"}
    assert cache.lookup(primary, headers.get, NOW).body == b"zipped"
    assert cache.lookup(primary, no_headers, NOW).body == b"plain"
    assert cache.lookup(primary, {b"accept-encoding": b"br"}.get, NOW) is None
    variants = cache.find(primary)
    assert variants.vary_names == names and len(variants.entries) == 2
    # The resource changes what it varies on: the old variants can no longer be selected.
    store(
        impl, cache, b"/v", b"by-language", vary_names=(b"accept-language",), vary=impl.vary_material([b"en"])
    )
    assert len(cache) == 1
    assert cache.lookup(primary, {b"accept-language": b"en"}.get, NOW).body == b"by-language"


@impls
def test_byte_budget_evicts_least_recently_used(impl: Any) -> None:
    probe = store(impl, impl.ResponseCache(1 << 20, 1 << 20), b"/0", b"x" * 100)
    size = probe.size
    cache = impl.ResponseCache(size * 3, size)
    for index in range(3):
        store(impl, cache, b"/%d" % index, b"x" * 100)
    assert cache.used_bytes == size * 3
    cache.lookup(material(impl, b"/0"), no_headers, NOW)  # /0 becomes most recently used
    store(impl, cache, b"/3", b"x" * 100)
    assert [entry.variants.path for entry in cache.entries()] == [b"/3", b"/0", b"/2"]
    assert cache.used_bytes == size * 3


@impls
def test_fill_over_max_entry_size_aborts(impl: Any) -> None:
    cache = impl.ResponseCache(1 << 20, 100)
    head = impl.stored_head(200, b"OK", [])
    primary = material(impl, b"/big")
    fill = cache.begin(primary, HOST, b"/big", (), b"", head, 200, 60.0, 0.0, NOW)
    assert fill.append(b"x" * 50)
    assert not fill.append(b"x" * 50)
    assert not fill.active
    assert not fill.append(b"x")
    assert fill.commit(NOW) is None
    assert len(cache) == 0
    # max_entry_size never exceeds the whole budget.
    assert impl.ResponseCache(10, 100).max_entry_size == 10


@impls
def test_replacing_an_entry_keeps_accounting(impl: Any) -> None:
    cache = impl.ResponseCache(1 << 20, 1 << 16)
    store(impl, cache, b"/a", b"one")
    second = store(impl, cache, b"/a", b"second")
    assert len(cache) == 1 and cache.used_bytes == second.size
    assert cache.lookup(material(impl, b"/a"), no_headers, NOW) is second


# --- purge ---------------------------------------------------------------------------------------


@impls
def test_purge_by_prefix_key_and_material(impl: Any) -> None:
    cache = impl.ResponseCache(1 << 20, 1 << 16)
    paths = [b"/api/users", b"/api/users/1", b"/api/usersettings", b"/api/orders/1", b"/apix", b"/"]
    for path in paths:
        store(impl, cache, path, b"x")
        store(impl, cache, path, b"x", query=b"page=2")
    store(impl, cache, b"/api/users/2", b"x", host=b"other.example.com")
    assert len(cache) == 13
    assert cache.purge_prefix(b"/api/users/", HOST) == 2  # /api/users/1 (two queries); not the other host
    assert cache.purge_prefix(b"/api/us") == 5  # /api/users, /api/usersettings, other host's /api/users/2
    assert cache.purge_prefix(b"/nothing") == 0
    assert cache.purge(material(impl, b"/apix", b"page=2")) == 1
    entry = cache.lookup(material(impl, b"/apix"), no_headers, NOW)
    assert cache.purge_key(entry.key) == 1
    assert cache.purge_key(cache.find(material(impl, b"/")).key) == 1
    assert cache.purge_key(12345) == 0
    remaining = sorted((e.variants.path, e.variants.primary.rsplit(b"\0", 1)[1]) for e in cache.entries())
    assert remaining == [(b"/", b"page=2"), (b"/api/orders/1", b""), (b"/api/orders/1", b"page=2")]
    assert cache.purge_prefix(b"") == 3
    assert len(cache) == 0 and cache.used_bytes == 0
    assert cache.clear() == 0


# --- coalescing ----------------------------------------------------------------------------------


@impls
def test_coalesced_waiters_get_the_committed_entry(impl: Any) -> None:
    cache = impl.ResponseCache(1 << 20, 1 << 16)
    primary = material(impl, b"/slow")
    key = impl.primary_key(primary)
    woken: list[Any] = []
    assert cache.join(key, woken.append) is True
    assert cache.join(key, woken.append) is False
    assert cache.join(key, woken.append) is False
    assert cache.in_flight(key) and cache.waiting(key) == 2
    entry = store(impl, cache, b"/slow", b"done")
    assert woken == [entry, entry]
    assert not cache.in_flight(key)
    assert cache.join(key, woken.append) is True  # the next miss leads a new fetch


@impls
def test_aborted_or_uncacheable_leader_sends_waiters_upstream(impl: Any) -> None:
    cache = impl.ResponseCache(1 << 20, 10)
    primary = material(impl, b"/x")
    key = impl.primary_key(primary)
    woken: list[Any] = []
    cache.join(key, woken.append)
    cache.join(key, woken.append)
    fill = cache.begin(primary, HOST, b"/x", (), b"", b"HTTP/1.1 200 OK\r\n", 200, 60.0, 0.0, NOW)
    fill.append(b"way too large for ten bytes")
    assert woken == [None]
    fill.abort()  # idempotent
    assert woken == [None]
    cache.join(key, woken.append)
    cache.join(key, woken.append)
    assert cache.release(key, None) == 1
    assert woken == [None, None]
    assert cache.release(key, None) == 0


@impls
def test_a_raising_waiter_does_not_starve_the_others(impl: Any) -> None:
    cache = impl.ResponseCache(1 << 20, 1 << 16)
    woken: list[Any] = []

    def broken(entry: Any) -> None:
        raise RuntimeError("waiter failed")

    cache.join(1, woken.append)
    cache.join(1, broken)
    cache.join(1, woken.append)
    with pytest.raises(RuntimeError, match="waiter failed"):
        cache.release(1, None)
    assert woken == [None]
    assert not cache.in_flight(1)


def test_hash_collision_is_a_miss_never_a_wrong_answer(monkeypatch: pytest.MonkeyPatch) -> None:
    impl = interpreted_cache  # the compiled module's hash function cannot be replaced
    monkeypatch.setattr(impl, "xxh3_64_intdigest", lambda data: 7)
    cache = impl.ResponseCache(1 << 20, 1 << 16)
    store(impl, cache, b"/a", b"A")
    assert cache.lookup(material(impl, b"/b"), no_headers, NOW) is None
    store(impl, cache, b"/b", b"B")  # the colliding resource replaces /a
    assert cache.lookup(material(impl, b"/b"), no_headers, NOW).body == b"B"
    assert cache.lookup(material(impl, b"/a"), no_headers, NOW) is None
    assert len(cache) == 1


# --- property test against a reference model -------------------------------------------------------


class Model:
    """Explicit LRU list + dict + clock: what the store must do, written the obvious way."""

    def __init__(self, max_bytes: int, max_entry: int, head_len: int) -> None:
        self.max_bytes = max_bytes
        self.max_entry = min(max_entry, max_bytes)
        self.head_len = head_len
        self.entries: dict[tuple[bytes, bytes], tuple[int, float, bytes]] = {}  # -> (size, expires, body)
        self.vary_names: dict[bytes, tuple[bytes, ...]] = {}
        self.lru: list[tuple[bytes, bytes]] = []  # least recently used first

    def size_of(self, body: bytes) -> int:
        return (
            self.head_len + len(b"Content-Length: %d\r\n" % len(body)) + len(b"X-Cache: HIT\r\n") + len(body)
        )

    def drop(self, key: tuple[bytes, bytes]) -> None:
        del self.entries[key]
        self.lru.remove(key)
        if not any(k[0] == key[0] for k in self.entries):
            self.vary_names.pop(key[0], None)

    def store(
        self, path: bytes, names: tuple[bytes, ...], vary: bytes, body: bytes, ttl: float, now: float
    ) -> None:
        size = self.size_of(body)
        if size > self.max_entry:
            return
        if path in self.vary_names and self.vary_names[path] != names:
            for key in [k for k in self.entries if k[0] == path]:
                self.drop(key)
        self.vary_names[path] = names
        key = (path, vary)
        if key in self.entries:
            self.drop(key)
            self.vary_names[path] = names
        self.entries[key] = (size, now + ttl, body)
        self.lru.append(key)
        while self.used() > self.max_bytes:
            self.drop(self.lru[0])

    def lookup(self, path: bytes, value: bytes | None, now: float) -> bytes | None:
        names = self.vary_names.get(path)
        if names is None:
            return None
        vary = (b"\x01" if value is None else b"\x00" + value) if names else b""
        key = (path, vary)
        if key not in self.entries:
            return None
        _size, expires, body = self.entries[key]
        if now >= expires:
            self.drop(key)
            return None
        self.lru.remove(key)
        self.lru.append(key)
        return body

    def purge_prefix(self, prefix: bytes) -> int:
        doomed = [k for k in self.entries if k[0].startswith(prefix)]
        for key in doomed:
            self.drop(key)
        return len(doomed)

    def used(self) -> int:
        return sum(size for size, _, _ in self.entries.values())


PATHS = [b"/a", b"/a/b", b"/a/bc", b"/b", b"/b/a/c"]
VALUES = [None, b"gzip", b"br"]

operations = st.lists(
    st.one_of(
        st.tuples(
            st.just("store"),
            st.sampled_from(PATHS),
            st.booleans(),  # varies on accept-encoding
            st.sampled_from(VALUES),
            st.integers(0, 120),  # body size
            st.integers(1, 30),  # ttl
        ),
        st.tuples(st.just("lookup"), st.sampled_from(PATHS), st.sampled_from(VALUES)),
        st.tuples(st.just("advance"), st.integers(0, 20)),
        st.tuples(st.just("purge"), st.sampled_from([b"/a", b"/a/", b"/b", b"/a/b", b"/x"])),
    ),
    max_size=60,
)


@impls
@settings(max_examples=300, deadline=None)
@given(ops=operations, max_bytes=st.integers(0, 600), max_entry=st.integers(0, 300))
def test_store_matches_reference_model(
    impl: Any, ops: list[tuple[Any, ...]], max_bytes: int, max_entry: int
) -> None:
    head = impl.stored_head(200, b"OK", [])
    cache = impl.ResponseCache(max_bytes, max_entry)
    model = Model(max_bytes, max_entry, len(head))
    names = (b"accept-encoding",)
    now = NOW
    for op in ops:
        if op[0] == "store":
            _, path, varies, value, size, ttl = op
            vary_names = names if varies else ()
            vary = impl.vary_material([value]) if varies else b""
            body = bytes([65 + len(path)]) * size
            fill = cache.begin(
                material(impl, path), HOST, path, vary_names, vary, head, 200, float(ttl), 0.0, now
            )
            fill.append(body[: size // 2])
            fill.append(body[size // 2 :])
            entry = fill.commit(now)
            model.store(path, vary_names, vary, body, float(ttl), now)
            assert (entry is not None) is (model.size_of(body) <= model.max_entry)
        elif op[0] == "lookup":
            _, path, value = op
            headers = {} if value is None else {b"accept-encoding": value}
            entry = cache.lookup(material(impl, path), headers.get, now)
            expected = model.lookup(path, value, now)
            assert (None if entry is None else entry.body) == expected
        elif op[0] == "advance":
            now += op[1]
        else:
            assert cache.purge_prefix(op[1]) == model.purge_prefix(op[1])
        assert cache.used_bytes <= max_bytes
        assert cache.used_bytes == model.used()
        assert len(cache) == len(model.entries)
        assert [(e.variants.path, e.vary) for e in cache.entries()] == list(reversed(model.lru))


@impls
def test_put_inserts_ready_entries_and_on_store_sees_only_commits(impl: Any) -> None:
    cache = impl.ResponseCache(1 << 20, 1 << 16)
    committed: list[Any] = []
    cache.on_store = committed.append
    entry = store(impl, cache, b"/a", b"body")
    assert committed == [entry]
    copy = impl.ResponseCache(1 << 20, 1 << 16)
    copy.on_store = committed.append
    woken: list[Any] = []
    copy.join(entry.variants.key, woken.append)
    copy.join(entry.variants.key, woken.append)
    put = copy.put(entry.variants.primary, HOST, b"/a", (), b"", 200, entry.head, entry.body, NOW, 60.0, 0.0)
    assert (put.head, put.body, put.stored_at) == (entry.head, entry.body, NOW)
    assert committed == [entry] and woken == []  # put() neither writes through nor wakes
    assert copy.lookup(material(impl, b"/a"), no_headers, NOW + 1) is put
