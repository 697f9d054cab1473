# cython: language_level=3
"""Compiled fast checks: API-key authentication, token-bucket limits and response-cache hits, in C.

The key-auth, rate-limit and cache plugins hand these to the engine when their configuration
allows (see their `fast_check()`); a route using only such plugins then never builds a Python
view of the request. What the Python plugins do stays the reference behaviour: the same status
codes, error bodies and headers.
"""

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from libc.math cimport ceil
from libc.string cimport memcmp, memcpy
from posix.time cimport CLOCK_REALTIME, clock_gettime, timespec

from .buffer cimport ByteBuffer, bb_append, bb_append_uint, bb_clear, bb_take
from .cache cimport Entry, ResponseCache, Variants, primary_key
from .headers cimport ascii_lower_equal
from .http cimport CHECK_ANSWERED, CHECK_PASS, CHECK_PYTHON, FastCheck, HttpConnection
from .limits cimport RateLimiter
from .parser cimport Header, RequestParser
from .timers cimport monotonic

# Bounded memo of presented keys -> identity, so a hot key costs one dict lookup, not a hash.
cdef Py_ssize_t KEY_CACHE_SIZE = 4096

cdef enum:
    BY_CONSUMER = 0
    BY_IP = 1
    BY_HEADER = 2
    BY_ROUTE = 3


cdef ByteBuffer _lines  # scratch for header lines (single-threaded event loop)


cdef bytes _ratelimit_lines(long long limit, long long remaining, double reset_after, long long retry_after):
    """RateLimit-Limit/-Remaining/-Reset (and Retry-After when > 0) as header lines, built
    without string formatting: this runs for every allowed request on a limited route."""
    cdef long long reset = <long long>ceil(reset_after)
    bb_clear(&_lines)
    if retry_after > 0:
        bb_append(&_lines, "Retry-After: ", 13)
        bb_append_uint(&_lines, <unsigned long long>retry_after)
        bb_append(&_lines, "\r\n", 2)
    bb_append(&_lines, "RateLimit-Limit: ", 17)
    bb_append_uint(&_lines, <unsigned long long>(limit if limit > 0 else 0))
    bb_append(&_lines, "\r\nRateLimit-Remaining: ", 23)
    bb_append_uint(&_lines, <unsigned long long>(remaining if remaining > 0 else 0))
    bb_append(&_lines, "\r\nRateLimit-Reset: ", 19)
    bb_append_uint(&_lines, <unsigned long long>(reset if reset > 0 else 0))
    bb_append(&_lines, "\r\n", 2)
    return bb_take(&_lines)


cdef inline bint _name_is(const char* name, Py_ssize_t n, bytes lower):
    return n == PyBytes_GET_SIZE(lower) and ascii_lower_equal(name, PyBytes_AS_STRING(lower), n)


cdef object _header_value(RequestParser rp, const char* base, bytes lower_name):
    cdef int i
    cdef Header* h
    for i in range(rp.nheaders):
        h = &rp.headers[i]
        if _name_is(base + h.name.off, h.name.len, lower_name):
            return PyBytes_FromStringAndSize(base + h.value.off, h.value.len)
    return None


cdef class KeyAuthCheck(FastCheck):
    """key-auth with header credentials: 401 unless a header carries a known key."""

    cdef tuple header_names       # lower-case bytes
    cdef object lookup            # callable(bytes) -> Consumer | None
    cdef object identity_headers  # callable(Consumer) -> bytes header lines for the upstream
    cdef object version           # an object whose `generation` changes with the consumers (the
                                  # registry), or a callable() -> int; the memo is dropped on change
    cdef bint version_is_attribute
    cdef object seen_version
    cdef dict memo
    cdef bytes challenge

    def __cinit__(self, header_names, lookup, identity_headers, version, str realm="lambdagate"):
        self.header_names = tuple(name.lower().encode("latin-1") for name in header_names)
        self.lookup = lookup
        self.identity_headers = identity_headers
        self.version = version
        # Resolved once: read a registry's `generation` attribute, or call a function.
        self.version_is_attribute = not callable(version)
        self.seen_version = None
        self.memo = {}
        self.challenge = f'WWW-Authenticate: Key realm="{realm}"\r\n'.encode("latin-1")

    cdef int check(self, HttpConnection conn, const char* base) except -1:
        cdef RequestParser rp = conn.gw.parser
        cdef object key = None
        for name in self.header_names:
            key = _header_value(rp, base, <bytes>name)
            if key is not None:
                break
        if key is None or PyBytes_GET_SIZE(key) == 0:
            conn.respond_error(401, "unauthorized", "No API key found in request",
                               not conn.request_complete, self.challenge)
            return CHECK_ANSWERED
        current = self.version.generation if self.version_is_attribute else self.version()
        if current != self.seen_version:
            self.memo.clear()
            self.seen_version = current
        found = self.memo.get(key)
        if found is None:
            consumer = self.lookup(key)
            if consumer is None:
                conn.respond_error(401, "unauthorized", "Invalid authentication credentials",
                                   not conn.request_complete, self.challenge)
                return CHECK_ANSWERED
            found = (consumer, self.identity_headers(consumer))
            if len(self.memo) >= KEY_CACHE_SIZE:
                self.memo.clear()
            self.memo[key] = found
        conn.consumer = (<tuple>found)[0]
        conn.upstream_extra = (<tuple>found)[1]
        return CHECK_PASS


cdef int _key_source(str by) except -1:
    """What a rate limit counts by: "consumer", "ip", "route" or "header:<name>"."""
    if by == "consumer":
        return BY_CONSUMER
    if by == "ip":
        return BY_IP
    if by == "route":
        return BY_ROUTE
    if by.startswith("header:"):
        return BY_HEADER
    raise ValueError(f"unknown rate-limit key {by!r}")


cdef str _rate_key(int by, bytes header_name, HttpConnection conn, const char* base):
    """The request's key in the limiter; the client address when the chosen source is absent."""
    if by == BY_CONSUMER:
        if conn.consumer is not None:
            return "c:" + conn.consumer.name
    elif by == BY_HEADER:
        value = _header_value(conn.gw.parser, base, header_name)
        if value:
            return "h:" + (<bytes>value).decode("latin-1")
    elif by == BY_ROUTE:
        return "r"
    return "ip:" + conn.client_ip.decode("latin-1")


cdef class RateLimitCheck(FastCheck):
    """rate-limit in local mode, compiled: the same buckets, keys and answers as the plugin.

    Keys are the plugin's: "c:<consumer>", "ip:<address>", "h:<header value>" or "r" (the buckets
    are the plugin's own RateLimiter objects, so both paths count against one state).
    """

    cdef tuple limiters           # RateLimiter, in config order
    cdef int by
    cdef bytes header_name
    cdef bint enforce
    cdef bint headers             # RateLimit-* on allowed responses too
    cdef readonly long long allowed
    cdef readonly long long limited

    def __cinit__(self, limiters, str by, bint enforce=True, bint headers=True):
        self.limiters = tuple(limiters)
        self.enforce = enforce
        self.headers = headers
        self.header_name = b""
        self.allowed = 0
        self.limited = 0
        if not self.limiters:
            raise ValueError("a rate-limit check needs at least one limiter")
        self.by = _key_source(by)
        if self.by == BY_HEADER:
            self.header_name = by[7:].strip().lower().encode("latin-1")

    cdef str key_for(self, HttpConnection conn, const char* base):
        return _rate_key(self.by, self.header_name, conn, base)

    cdef int check(self, HttpConnection conn, const char* base) except -1:
        cdef double now = monotonic()
        cdef RateLimiter limiter
        cdef RateLimiter binding
        cdef Py_ssize_t wait_ms
        cdef Py_ssize_t i
        cdef Py_ssize_t j
        cdef long long retry
        key = self.key_for(conn, base)
        for i in range(len(self.limiters)):
            limiter = <RateLimiter>self.limiters[i]
            wait_ms = limiter.check(key, now, 1)
            if wait_ms > 0:
                # Refused: give back what the earlier limits took, as if nothing had been asked.
                for j in range(i):
                    (<RateLimiter>self.limiters[j]).refund(key, now, 1)
                self.limited += 1
                if not self.enforce:
                    return CHECK_PASS
                retry = <long long>ceil(wait_ms / 1000.0)
                headers = _ratelimit_lines(limiter.limit, limiter.remaining, limiter.reset_after, retry)
                conn.respond_error(429, "rate_limited", f"rate limit exceeded; retry in {retry} s",
                                   not conn.request_complete, headers)
                return CHECK_ANSWERED
        self.allowed += 1
        if self.headers:
            binding = <RateLimiter>self.limiters[0]
            for i in range(1, len(self.limiters)):
                limiter = <RateLimiter>self.limiters[i]
                if limiter.remaining < binding.remaining:
                    binding = limiter
            conn.response_extra = _ratelimit_lines(binding.limit, binding.remaining, binding.reset_after, 0)
        return CHECK_PASS



# --- response cache --------------------------------------------------------------------------

cdef enum:
    SEEN_CACHE_CONTROL = 1
    SEEN_PRAGMA = 2
    SEEN_BYPASS = 4

cdef bytes _X_CACHE_BYPASS = b"X-Cache: BYPASS\r\n"
cdef tuple _DIRECTIVE_FIELDS = (b"cache-control", b"pragma")


cdef double _unix_now() noexcept:
    # The cache's clock is Unix time (entries shared through Redis age the same on every node).
    cdef timespec ts
    clock_gettime(CLOCK_REALTIME, &ts)
    return ts.tv_sec + ts.tv_nsec * 1e-9


cdef inline char _lower_latin1(char c) noexcept:
    # str.lower() over Latin-1, as the plugin's normalize_host does: A-Z and À-Þ (not ×).
    cdef unsigned char u = <unsigned char>c
    if (u >= 65 and u <= 90) or (u >= 0xC0 and u <= 0xDE and u != 0xD7):
        return <char>(u + 32)
    return c


cdef bytes _primary_material(RequestParser rp, const char* base):
    """GET \0 host \0 path \0 query, as plugins/cache.py primary_for() builds it (HEAD shares GET)."""
    cdef const char* host = b""
    cdef Py_ssize_t host_len = 0
    cdef const char* path = b"/"
    cdef Py_ssize_t path_len = 1
    cdef const char* query = b""
    cdef Py_ssize_t query_len = 0
    cdef Py_ssize_t i
    cdef Py_ssize_t end
    cdef Header* h
    cdef char* out
    if rp.host_index >= 0:
        h = &rp.headers[rp.host_index]
        host = base + h.value.off
        host_len = h.value.len
        while host_len > 0 and (host[0] == b' ' or host[0] == b'\t'):
            host += 1
            host_len -= 1
        while host_len > 0 and (host[host_len - 1] == b' ' or host[host_len - 1] == b'\t'):
            host_len -= 1
        end = host_len
        if host_len > 0 and host[0] == b'[':
            for i in range(host_len):
                if host[i] == b']':
                    end = i + 1
                    break
        else:
            for i in range(host_len - 1, -1, -1):
                if host[i] == b':':
                    end = i
                    break
        host_len = end
    if rp.path.len:
        path = base + rp.path.off
        path_len = rp.path.len
    if rp.query.off >= 0:
        query = base + rp.query.off
        query_len = rp.query.len
    material = PyBytes_FromStringAndSize(NULL, 6 + host_len + path_len + query_len)
    out = PyBytes_AS_STRING(material)
    memcpy(out, b"GET\0", 4)
    out += 4
    for i in range(host_len):
        out[i] = _lower_latin1(host[i])
    out += host_len
    out[0] = 0
    out += 1
    memcpy(out, path, path_len)
    out += path_len
    out[0] = 0
    out += 1
    memcpy(out, query, query_len)
    return material


cdef list _request_fields(RequestParser rp, const char* base, tuple only=None):
    """The request's header fields as (name, value) bytes (only the names listed, if given)."""
    cdef list fields = []
    cdef int i
    cdef Header* h
    for i in range(rp.nheaders):
        h = &rp.headers[i]
        if only is not None and not (_name_is(base + h.name.off, h.name.len, <bytes>only[0])
                                     or _name_is(base + h.name.off, h.name.len, <bytes>only[1])):
            continue
        fields.append((PyBytes_FromStringAndSize(base + h.name.off, h.name.len),
                       PyBytes_FromStringAndSize(base + h.value.off, h.value.len)))
    return fields


cdef bytes _vary_from_parser(RequestParser rp, const char* base, tuple names):
    """cache.vary_material() of the parsed request (repeated fields joined with ", ")."""
    cdef list parts = []
    cdef int i
    cdef Header* h
    for name in names:
        value = None
        for i in range(rp.nheaders):
            h = &rp.headers[i]
            if _name_is(base + h.name.off, h.name.len, <bytes>name):
                piece = PyBytes_FromStringAndSize(base + h.value.off, h.value.len)
                value = piece if value is None else value + b", " + piece
        parts.append(b"\x01" if value is None else b"\x00" + (<bytes>value).strip())
    return b"".join(parts)


cdef bytes _vary_from_fields(list fields, tuple names):
    """cache.vary_material() of captured (name, value) fields."""
    cdef list parts = []
    for name in names:
        value = None
        for field_name, field_value in fields:
            if _name_is(PyBytes_AS_STRING(<bytes>field_name), PyBytes_GET_SIZE(<bytes>field_name), <bytes>name):
                value = field_value if value is None else value + b", " + field_value
        parts.append(b"\x01" if value is None else b"\x00" + (<bytes>value).strip())
    return b"".join(parts)


cdef void _mark_bypass(HttpConnection conn):
    conn.response_extra = _X_CACHE_BYPASS if conn.response_extra is None else conn.response_extra + _X_CACHE_BYPASS


def _leader_placeholder(entry):
    """Queued when a request that may not wait joins behind a fetch in flight; never answered."""


cdef class CacheCheck(FastCheck):
    """cache, compiled: a fresh stored response answers GET/HEAD without entering Python.

    Misses go upstream with `conn.cache_miss` set (the plugin's EngineMiss): the relay asks it,
    once the response head is in, whether and how to store, and tees the body into the Fill.
    A miss for a resource another request is already fetching waits for that fetch (at most
    lock_timeout) and is answered from what it stores, or goes upstream itself.

    Requests with Cache-Control or Pragma get the plugin's request rule (a Python call); the
    bypass header, other methods and HEAD misses are marked X-Cache: BYPASS and go on as usual.
    """

    cdef readonly ResponseCache store
    cdef bint get_allowed
    cdef bint head_allowed
    cdef bytes bypass_header      # lower-case, or None
    cdef object request_rule      # callable(method, [(name, value) str]) -> cache_policy.RequestRule
    cdef object new_miss          # callable(primary, key, fields, request_time, leader) -> EngineMiss
    cdef readonly double lock_timeout
    cdef readonly long long hits
    cdef readonly long long misses
    cdef readonly long long bypasses
    cdef readonly long long coalesced

    def __cinit__(self, ResponseCache store, *, bint get=True, bint head=True, str bypass_header=None,
                  object request_rule=None, object new_miss=None, double lock_timeout=5.0):
        if request_rule is None or new_miss is None:
            raise ValueError("a cache check needs request_rule and new_miss")
        self.store = store
        self.get_allowed = get
        self.head_allowed = head
        self.bypass_header = bypass_header.lower().encode("latin-1") if bypass_header else None
        self.request_rule = request_rule
        self.new_miss = new_miss
        self.lock_timeout = lock_timeout
        self.hits = 0
        self.misses = 0
        self.bypasses = 0
        self.coalesced = 0

    cdef int bypass(self, HttpConnection conn):
        self.bypasses += 1
        _mark_bypass(conn)
        return CHECK_PASS

    cdef int check(self, HttpConnection conn, const char* base) except -1:
        cdef RequestParser rp = conn.gw.parser
        cdef const char* method = base + rp.method.off
        cdef bint head
        cdef int seen = 0
        cdef int i
        cdef Header* h
        cdef Py_ssize_t n
        cdef Variants variants
        cdef Entry entry
        cdef double now
        cdef bint lookup = True
        cdef bint leader
        cdef CacheWaiter waiter
        if rp.method.len == 3 and memcmp(method, b"GET", 3) == 0:
            head = False
            if not self.get_allowed:
                return self.bypass(conn)
        elif rp.method.len == 4 and memcmp(method, b"HEAD", 4) == 0:
            head = True
            if not self.head_allowed:
                return self.bypass(conn)
        else:
            return self.bypass(conn)
        for i in range(rp.nheaders):
            h = &rp.headers[i]
            n = h.name.len
            if n == 13 and _name_is(base + h.name.off, n, b"cache-control"):
                seen |= SEEN_CACHE_CONTROL
            elif n == 6 and _name_is(base + h.name.off, n, b"pragma"):
                seen |= SEEN_PRAGMA
            elif self.bypass_header is not None and _name_is(base + h.name.off, n, self.bypass_header):
                seen |= SEEN_BYPASS
        if seen & SEEN_BYPASS:
            return self.bypass(conn)
        rule = None
        if seen:
            # Request directives (no-cache, max-age, only-if-cached, ...): the plugin's rules.
            fields = [(name.decode("latin-1"), value.decode("latin-1"))
                      for name, value in _request_fields(rp, base, _DIRECTIVE_FIELDS)]
            rule = self.request_rule("HEAD" if head else "GET", fields)
            lookup = rule.lookup
            if not lookup and not rule.store:
                return self.bypass(conn)
        primary = _primary_material(rp, base)
        if conn.consumer is not None:
            # Authenticated callers never share entries (as Kong keys its cache by consumer).
            primary = primary + b"\x00c:" + (<str>conn.consumer.name).encode("utf-8")
        now = _unix_now()
        if lookup:
            variants = self.store.find(primary)
            if variants is not None:
                vary = b"" if not variants.vary_names else _vary_from_parser(rp, base, variants.vary_names)
                entry = self.store.get(variants, vary, now)
                if entry is not None and (rule is None or rule.accepts(entry.age(now), entry.ttl)):
                    self.hits += 1
                    conn.respond_cached(entry, now)
                    return CHECK_ANSWERED
            if rule is not None and rule.only_if_cached:
                self.bypasses += 1
                conn.respond_error(504, "not_cached", "The response is not in the cache (only-if-cached)",
                                   not conn.request_complete, _X_CACHE_BYPASS)
                return CHECK_ANSWERED
        if head or (rule is not None and not rule.store):
            return self.bypass(conn)  # HEAD responses have no body to store; request no-store
        self.misses += 1
        key = primary_key(primary)
        fields = _request_fields(rp, base)
        if rule is None and self.store.in_flight(key) and conn.action.fast_checks[len(conn.action.fast_checks) - 1] is self:
            # Another request is fetching this resource: wait for what it stores.
            waiter = CacheWaiter(self, conn, primary, key, fields, now)
            self.store.join(key, waiter)
            conn.suspend_request(base)
            waiter.arm()
            self.coalesced += 1
            return CHECK_ANSWERED
        leader = self.store.join(key, _leader_placeholder)
        conn.cache_miss = self.new_miss(primary, key, fields, now, leader)
        return CHECK_PASS


cdef class CacheWaiter:
    """A miss waiting for the fetch of the same resource in flight (ResponseCache.join callback)."""

    cdef CacheCheck check
    cdef HttpConnection conn
    cdef bytes primary
    cdef object key
    cdef list fields
    cdef double requested_at
    cdef object timer
    cdef bint done

    def __cinit__(self, CacheCheck check, HttpConnection conn, bytes primary, object key, list fields,
                  double requested_at):
        self.check = check
        self.conn = conn
        self.primary = primary
        self.key = key
        self.fields = fields
        self.requested_at = requested_at
        self.timer = None
        self.done = False

    cdef void arm(self):
        if not self.done:
            self.timer = self.conn.gw.loop.call_later(self.check.lock_timeout, self._expire)

    def __call__(self, entry):
        # Called by the store when the leader's fetch ends, from inside that request's relay:
        # continue on the next loop turn, outside the other connection's stack.
        if self.done:
            return
        self.done = True
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        self.conn.gw.loop.call_soon(self._wake, entry)

    def _expire(self):
        self.timer = None
        if not self.done:
            self.done = True
            self._wake(None)

    def _wake(self, entry):
        cdef HttpConnection conn = self.conn
        cdef CacheCheck check = self.check
        cdef Entry stored
        cdef double now = _unix_now()
        self.conn = None
        if conn is None or not conn.is_open():
            return
        if entry is not None:
            stored = <Entry?>entry
            if stored.fresh(now) and (
                not stored.variants.vary_names
                or stored.vary == _vary_from_fields(self.fields, stored.variants.vary_names)
            ):
                check.hits += 1
                conn.respond_cached(stored, now)
                return
        # Nothing stored that fits this request: fetch it too (and store what comes back).
        conn.cache_miss = check.new_miss(self.primary, self.key, self.fields, self.requested_at, False)
        conn.resume_request()


cdef class RemoteRateLimitCheck(FastCheck):
    """rate-limit in Redis mode with local batching: decided here while the key's local state is
    fresh (no I/O, no coroutine); when a sync with Redis is due, the request takes the plugin's
    Python path (CHECK_PYTHON), which awaits the sync."""

    cdef object limiter           # gateway.store.redis_limits.RedisRateLimiter (check_nowait)
    cdef object limiter_factory   # the plugin's lazy constructor of it (built in the worker's loop)
    cdef int by
    cdef bytes header_name
    cdef bint enforce
    cdef bint headers
    cdef str prefix               # "<route>|": the plugin's Redis keys are per route

    def __cinit__(self, limiter_factory, str by, str route, bint enforce=True, bint headers=True):
        self.limiter = None
        self.limiter_factory = limiter_factory
        self.enforce = enforce
        self.headers = headers
        self.prefix = route + "|"
        self.header_name = b""
        self.by = _key_source(by)
        if self.by == BY_HEADER:
            self.header_name = by[7:].strip().lower().encode("latin-1")

    cdef str key_for(self, HttpConnection conn, const char* base):
        return self.prefix + _rate_key(self.by, self.header_name, conn, base)

    cdef int check(self, HttpConnection conn, const char* base) except -1:
        if self.limiter is None:
            self.limiter = self.limiter_factory()
        decision = self.limiter.check_nowait(self.key_for(conn, base))
        if decision is None:
            return CHECK_PYTHON
        if not decision.allowed:
            retry = max(1, <long long>ceil(decision.retry_after))
            headers = _ratelimit_lines(decision.limit, decision.remaining, decision.reset_after, retry)
            conn.respond_error(429, "rate_limited", f"rate limit exceeded; retry in {retry} s",
                               not conn.request_complete, headers)
            return CHECK_ANSWERED
        if self.headers:
            conn.response_extra = _ratelimit_lines(decision.limit, decision.remaining, decision.reset_after, 0)
        return CHECK_PASS
