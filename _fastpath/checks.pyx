# cython: language_level=3
"""Compiled fast checks: API-key authentication and token-bucket limits, answered in C.

The key-auth and rate-limit plugins hand these to the engine when their configuration allows
(see their `fast_check()`); a route using only such plugins then never builds a Python view
of the request. What the Python plugins do stays the reference behaviour: the same status
codes, error bodies and headers.
"""

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from libc.math cimport ceil

from .http cimport CHECK_ANSWERED, CHECK_PASS, FastCheck, HttpConnection
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


cdef bint _name_is(const char* name, Py_ssize_t n, bytes lower):
    cdef Py_ssize_t i
    cdef char c
    cdef const char* want = PyBytes_AS_STRING(lower)
    if n != PyBytes_GET_SIZE(lower):
        return False
    for i in range(n):
        c = name[i]
        if c >= b'A' and c <= b'Z':
            c = c + 32
        if c != want[i]:
            return False
    return True


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
    cdef object version           # callable() -> int; the memo is dropped when it changes
    cdef object seen_version
    cdef dict memo
    cdef bytes challenge

    def __cinit__(self, header_names, lookup, identity_headers, version, str realm="lambdagate"):
        self.header_names = tuple(name.lower().encode("latin-1") for name in header_names)
        self.lookup = lookup
        self.identity_headers = identity_headers
        self.version = version
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
        current = self.version()
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
        if by == "consumer":
            self.by = BY_CONSUMER
        elif by == "ip":
            self.by = BY_IP
        elif by == "route":
            self.by = BY_ROUTE
        elif by.startswith("header:"):
            self.by = BY_HEADER
            self.header_name = by[7:].strip().lower().encode("latin-1")
        else:
            raise ValueError(f"unknown rate-limit key {by!r}")

    cdef str key_for(self, HttpConnection conn, const char* base):
        if self.by == BY_CONSUMER:
            if conn.consumer is not None:
                return "c:" + conn.consumer.name
        elif self.by == BY_HEADER:
            value = _header_value(conn.gw.parser, base, self.header_name)
            if value:
                return "h:" + (<bytes>value).decode("latin-1")
        elif self.by == BY_ROUTE:
            return "r"
        return "ip:" + conn.client_ip.decode("latin-1")

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
                headers = (
                    f"Retry-After: {retry}\r\n"
                    f"RateLimit-Limit: {limiter.limit}\r\n"
                    f"RateLimit-Remaining: {max(0, limiter.remaining)}\r\n"
                    f"RateLimit-Reset: {<long long>ceil(limiter.reset_after)}\r\n"
                ).encode("latin-1")
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
            conn.response_extra = (
                f"RateLimit-Limit: {binding.limit}\r\n"
                f"RateLimit-Remaining: {max(0, binding.remaining)}\r\n"
                f"RateLimit-Reset: {<long long>ceil(binding.reset_after)}\r\n"
            ).encode("latin-1")
        return CHECK_PASS
