# cython: language_level=3
"""The client-facing HTTP/1.1 engine: one HttpConnection protocol object per client connection.

Requests are parsed in place from the bytes uvloop hands us, routed, and answered without a
Python coroutine: static routes and gateway errors are written straight from here, proxied
routes are relayed through proxy.UpstreamConnection. Responses leave in request order; a
pipelined request waits in the input buffer until the response before it is complete.
"""

import asyncio
import logging
import os
from email.utils import formatdate

import msgspec

from gateway.plugins import Request as PluginRequest
from gateway.plugins import Response as PluginResponse
from gateway.plugins import ResponseHead as PluginResponseHead

# request.ctx key where a Python-phase cache plugin leaves the Fill the relayed body goes into
# (gateway.plugins.cache.BODY_SINK_KEY; not imported: the plugin imports this engine).
BODY_SINK_KEY = "body_sink"

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.unicode cimport PyUnicode_DecodeLatin1
from libc.stdint cimport int64_t
from libc.string cimport memcmp, memcpy
from posix.time cimport CLOCK_REALTIME, clock_gettime, timespec

from .buffer cimport (
    ByteBuffer,
    bb_append,
    bb_append_str,
    bb_append_uint,
    bb_clear,
    bb_consume,
    bb_free,
    bb_len,
    bb_take,
)
from .headers cimport (
    H_CONTENT_LENGTH,
    H_EXPECT,
    H_HOST,
    H_OTHER,
    H_TRANSFER_ENCODING,
    H_X_FORWARDED_FOR,
    H_X_FORWARDED_HOST,
    H_X_FORWARDED_PROTO,
    H_X_REQUEST_ID,
    ascii_lower_equal,
    header_id,
    is_hop_by_hop,
    named_by_connection,
)
from .parser cimport (
    BODY_CHUNKED,
    BODY_LENGTH,
    BODY_NONE,
    CHUNK_DATA,
    CHUNK_DONE,
    CHUNK_ERROR,
    ChunkedDecoder,
    Header,
    RequestParser,
)
from .proxy cimport (
    ACQUIRE_NO_TARGET,
    ACQUIRE_PENDING,
    ACQUIRE_READY,
    PAUSE_BUFFER_FULL,
    PAUSE_UPSTREAM_FULL,
    UPSTREAM_BAD_RESPONSE,
    UPSTREAM_CLOSED,
    UPSTREAM_CONNECT_FAILED,
    UPSTREAM_CONNECT_TIMEOUT,
    UPSTREAM_NO_TARGET,
    UPSTREAM_READ_TIMEOUT,
    UPSTREAM_STALE,
    ProxyClient,
    UpstreamConnection,
    UpstreamPool,
)
from .balance cimport Target
from .cache cimport Entry, Fill
from .router cimport Router
from .timers cimport Ticker, monotonic

_log = logging.getLogger("lambdagate.http")

# Client connection states (C_HEAD and C_BODY accept input; the others do not)
cdef enum:
    C_HEAD = 0        # waiting for (more of) a request head
    C_BODY = 1        # reading the current request's body
    C_CLOSED = 2
    C_LINGER = 3      # answered with an error; draining what the client still sends, then closing

# Lingering close (as nginx does): after an error answer, read and drop what the client still
# sends for a while, so that closing does not reset the connection before it read our answer.
cdef double LINGER_READ_TIMEOUT = 1.0
cdef double LINGER_TOTAL = 10.0

# Input held back while a response is in progress; beyond it we stop reading the socket.
cdef Py_ssize_t BUFFER_HIGH_WATER = 256 * 1024

# Cached bodies up to this size are copied behind the head into one write; larger ones are
# handed to the transport as they are (no copy).
cdef Py_ssize_t CACHED_COPY_MAX = 16 * 1024

cdef ByteBuffer _out  # response builder shared by the worker's connections (single-threaded)

_REASONS = {
    100: "Continue", 200: "OK", 201: "Created", 202: "Accepted", 204: "No Content",
    301: "Moved Permanently", 302: "Found", 303: "See Other", 304: "Not Modified",
    307: "Temporary Redirect", 308: "Permanent Redirect", 400: "Bad Request",
    401: "Unauthorized", 403: "Forbidden", 404: "Not Found", 405: "Method Not Allowed",
    408: "Request Timeout", 409: "Conflict", 410: "Gone", 411: "Length Required",
    413: "Content Too Large", 414: "URI Too Long", 415: "Unsupported Media Type",
    429: "Too Many Requests", 431: "Request Header Fields Too Large",
    500: "Internal Server Error", 501: "Not Implemented", 502: "Bad Gateway",
    503: "Service Unavailable", 504: "Gateway Timeout", 505: "HTTP Version Not Supported",
}


def reason_phrase(int status):
    return _REASONS.get(status, "Unknown")


# "Date: ...\r\n", refreshed by the worker's ticker (RFC 9110 §6.6.1: an origin with a clock sends it)
cdef bytes _date_line = b""


def refresh_date():
    global _date_line
    _date_line = b"Date: " + formatdate(usegmt=True).encode("ascii") + b"\r\n"


refresh_date()

_json = msgspec.json.Encoder()


def error_body(int status, str code, str message):
    """The JSON body of a response the gateway itself produces."""
    return _json.encode({"error": {"status": status, "code": code, "message": message}})


cdef str _method_str(const char* p, Py_ssize_t n):
    # The common methods as interned constants: no allocation on the hot path.
    if n == 3:
        if memcmp(p, b"GET", 3) == 0:
            return "GET"
        if memcmp(p, b"PUT", 3) == 0:
            return "PUT"
    elif n == 4:
        if memcmp(p, b"POST", 4) == 0:
            return "POST"
        if memcmp(p, b"HEAD", 4) == 0:
            return "HEAD"
    elif n == 5 and memcmp(p, b"PATCH", 5) == 0:
        return "PATCH"
    elif n == 6 and memcmp(p, b"DELETE", 6) == 0:
        return "DELETE"
    elif n == 7 and memcmp(p, b"OPTIONS", 7) == 0:
        return "OPTIONS"
    return PyUnicode_DecodeLatin1(p, n, NULL)


cdef str _normalize_host(const char* p, Py_ssize_t n):
    """Host header value -> lower-case name without port ('[::1]' keeps its brackets)."""
    cdef Py_ssize_t end = n
    cdef Py_ssize_t i
    if n > 0 and p[0] == b'[':
        for i in range(n):
            if p[i] == b']':
                end = i + 1
                break
    else:
        for i in range(n - 1, -1, -1):
            if p[i] == b':':
                end = i
                break
    return PyUnicode_DecodeLatin1(p, end, NULL).lower()


cdef class FastCheck:
    cdef int check(self, HttpConnection conn, const char* base) except -1:
        return CHECK_PASS


cdef class RouteAction:
    """What a matched route does; built once per config and shared by every request."""

    def __cinit__(self, str name):
        self.name = name
        self.kind = 0
        self.pool = None
        self.strip_prefix = None
        self.rewrite_parts = None
        self.preserve_host = False
        self.chain = None
        self.response_phase = False
        self.handler = None
        self.buffer_body = False
        self.fast_checks = None
        self.drop_headers = None

    def with_fast_checks(self, checks, drop_headers=(), fallback_chains=None):
        """Compiled checks run before any Python plugin; drop_headers never reach the upstream.

        fallback_chains[i] is the PluginChain to run when check i answers CHECK_PYTHON.
        """
        self.fast_checks = tuple(checks) if checks else None
        self.fallback_chains = tuple(fallback_chains) if fallback_chains else None
        if self.fast_checks is not None and (
                self.fallback_chains is None or len(self.fallback_chains) != len(self.fast_checks)):
            # Without a fallback a check must decide alone; an empty chain keeps indexing safe.
            from gateway.plugins import PluginChain
            self.fallback_chains = tuple(PluginChain(()) for _ in self.fast_checks)
        names = tuple(name.lower().encode("latin-1") if isinstance(name, str) else name.lower()
                      for name in drop_headers)
        self.drop_headers = names if names else None
        # Lengths of those names as a bit mask: most fields are ruled out without a compare.
        self.drop_lengths = 0
        for name in names:
            self.drop_lengths |= (<unsigned long long>1) << (len(name) if len(name) < 64 else 63)
        return self

    def with_plugins(self, chain):
        """Attach a PluginChain (None or an empty chain: the route stays on the pure fast path)."""
        if chain:
            self.chain = chain
            self.response_phase = bool(chain.response)
        else:
            self.chain = None
            self.response_phase = False
        return self

    @staticmethod
    def python_handler(str name, object handler):
        """A route answered by `handler(request, body)`: a Response, or a coroutine or future of
        one (the body is buffered)."""
        cdef RouteAction a = RouteAction(name)
        a.kind = ACTION_HANDLER
        a.handler = handler
        a.buffer_body = True
        return a

    @staticmethod
    def static(str name, int status, bytes body, str content_type, dict headers):
        cdef RouteAction a = RouteAction(name)
        a.kind = ACTION_STATIC
        a.static_status = status
        head = [f"HTTP/1.1 {status} {reason_phrase(status)}\r\n".encode("latin-1")]
        if content_type:
            head.append(f"Content-Type: {content_type}\r\n".encode("latin-1"))
        for key, value in headers.items():
            head.append(f"{key}: {value}\r\n".encode("latin-1"))
        if status != 204 and status != 304:
            head.append(f"Content-Length: {len(body)}\r\n".encode("latin-1"))
        a.static_head = b"".join(head)
        a.static_body = body if status != 204 and status != 304 else b""
        return a

    @staticmethod
    def proxy(str name, UpstreamPool pool, str strip_prefix=None, list rewrite_parts=None,
              bint preserve_host=False):
        cdef RouteAction a = RouteAction(name)
        a.kind = ACTION_PROXY
        a.pool = pool
        a.strip_prefix = strip_prefix.encode("latin-1") if strip_prefix else None
        a.rewrite_parts = rewrite_parts
        a.preserve_host = preserve_host
        return a


cdef class Gateway:
    """One worker's serving state: the router and limits of one config, and its connections."""

    def __init__(
        self,
        object loop,
        Router router,
        *,
        bint host_routing=False,
        Py_ssize_t max_target=8192,
        Py_ssize_t max_head=16384,
        int max_fields=100,
        int64_t max_body=1 << 30,
        double header_timeout=10.0,
        double body_timeout=60.0,
        double send_timeout=60.0,
        double keepalive_timeout=75.0,
        int keepalive_requests=0,
        object access_log=None,
        Ticker ticker=None,
    ):
        self.loop = loop
        self.router = router
        self.host_routing = host_routing
        self.max_target = max_target
        self.max_head = max_head
        self.max_fields = max_fields
        self.max_body = max_body
        self.header_timeout = header_timeout
        self.body_timeout = body_timeout
        self.send_timeout = send_timeout
        self.keepalive_timeout = keepalive_timeout
        self.keepalive_requests = keepalive_requests
        self.access_log = access_log
        self.log_enabled = access_log is not None and bool(access_log.enabled)
        self.log_lines = access_log.lines if self.log_enabled else None
        self.ticker = ticker if ticker is not None else Ticker(loop, 0.1, refresh_date)
        # One parser for the whole worker: a head is parsed and acted on without yielding, and
        # its header table (several KiB) must not be paid per idle connection.
        self.parser = RequestParser(max_target=max_target, max_head=max_head, max_fields=max_fields)
        self.connections = set()
        self.draining = False
        self.drained = None
        prefix = os.urandom(10).hex().encode("ascii")
        memcpy(self.rid_prefix, PyBytes_AS_STRING(prefix), 20)
        self.rid_counter = 0

    def new_connection(self):
        return HttpConnection(self)

    cdef bytes next_request_id(self):
        # 32 hex digits: a random per-worker prefix and a counter, unique without a syscall.
        cdef char buf[32]
        cdef unsigned long long c
        cdef int i
        cdef const char* digits = "0123456789abcdef"
        self.rid_counter += 1
        c = self.rid_counter
        memcpy(buf, self.rid_prefix, 20)
        for i in range(31, 19, -1):
            buf[i] = digits[c & 15]
            c >>= 4
        return PyBytes_FromStringAndSize(buf, 32)

    def drain(self):
        """Stop keeping connections alive; the future resolves once every connection is gone."""
        cdef HttpConnection conn
        self.draining = True
        if self.drained is None:
            self.drained = self.loop.create_future()
        for conn in list(self.connections):
            if not conn.busy and conn.state == C_HEAD and bb_len(&conn.inbuf) == 0:
                conn.close()
            else:
                conn.keep_alive = False
        if not self.connections and not self.drained.done():
            self.drained.set_result(None)
        return self.drained

    def abort_all(self):
        cdef HttpConnection conn
        for conn in list(self.connections):
            conn.transport.abort()

    cdef void connection_closed(self, HttpConnection conn):
        self.connections.discard(conn)
        if self.draining and not self.connections and self.drained is not None:
            if not self.drained.done():
                self.drained.set_result(None)


cdef class HttpConnection(ProxyClient):
    def __cinit__(self, Gateway gw):
        self.gw = gw
        self.body_decoder = ChunkedDecoder(max_trailer=gw.max_head)
        self.state = C_HEAD
        self.busy = False
        self.paused = 0
        self.write_paused = False
        self.client_ip = b""
        self.served = 0
        self.transport = None
        self.upstream = None
        self.waiting_upstream = False
        self.head_timer = False
        self.last_host_raw = None
        self.last_host = ""
        self.consuming = False
        self.linger = False
        self.view = None
        self.response_view = None
        self.plugin_task = None
        self.handler_ready = False
        self.wants_response_head = False
        self.response_extra = None
        self.echo_request_id = True
        self.chain = None
        self.response_phase = False
        self.match_params = None

    def __dealloc__(self):
        bb_free(&self.inbuf)
        bb_free(&self.pending)

    # -- asyncio protocol ------------------------------------------------------------------

    def connection_made(self, transport):
        self.transport = transport
        peer = transport.get_extra_info("peername")
        if peer:
            self.client_ip = str(peer[0]).encode("latin-1")
        self.gw.connections.add(self)
        self.deadline = monotonic() + self.gw.header_timeout
        self.gw.ticker.add(self)

    def connection_lost(self, exc):
        cdef UpstreamConnection up = self.upstream
        cdef int previous = self.state
        self.state = C_CLOSED
        self.gw.ticker.remove(self)
        if self.plugin_task is not None:
            self.plugin_task.cancel()
            self.plugin_task = None
        if up is not None:
            self.upstream = None
            up.client = None
            if not self.waiting_upstream:
                up.end_exchange(False)
        if self.busy:
            self.busy = False
            if self.response_status == 0:
                self.response_status = 499  # the client went away first (nginx's convention)
            self.log_request()
        bb_free(&self.inbuf)
        bb_free(&self.pending)
        self.gw.connection_closed(self)

    def eof_received(self):
        # A half-closed client may still want its response (HTTP/1.0 style "request, then FIN").
        if self.state != C_LINGER and (self.busy or self.state == C_BODY):
            self.keep_alive = False  # nothing more can come: close once this response is out
            return True
        return False

    def pause_writing(self):
        cdef double now = monotonic()
        self.write_paused = True
        self.send_deadline = now + self.gw.send_timeout
        if self.deadline == 0.0 or self.deadline > self.send_deadline:
            self.deadline = self.send_deadline
        if self.upstream is not None:
            self.upstream.pause_reading()

    def resume_writing(self):
        cdef double now = monotonic()
        self.write_paused = False
        if self.state == C_BODY:
            self.deadline = now + self.gw.body_timeout
        elif self.state == C_HEAD:
            self.deadline = 0.0 if self.busy else now + self.gw.keepalive_timeout
        if self.upstream is not None:
            self.upstream.resume_reading()

    def data_received(self, bytes data):
        cdef const char* p = PyBytes_AS_STRING(data)
        cdef Py_ssize_t n = PyBytes_GET_SIZE(data)
        cdef Py_ssize_t used
        if self.state == C_CLOSED:
            return
        if self.state == C_LINGER:
            self.deadline = min(monotonic() + LINGER_READ_TIMEOUT, self.started + LINGER_TOTAL)
            return
        if bb_len(&self.inbuf) == 0:
            used = self.consume(p, n, data)
            if used < n and self.state <= C_BODY:
                bb_append(&self.inbuf, p + used, n - used)
        else:
            bb_append(&self.inbuf, p, n)
            used = self.consume(self.inbuf.data + self.inbuf.start, bb_len(&self.inbuf), None)
            if self.state <= C_BODY:
                bb_consume(&self.inbuf, used)
        if self.state > C_BODY:
            return
        if self.upstream is not None and not self.waiting_upstream and bb_len(&self.pending) > 0:
            self.flush_pending()
        if bb_len(&self.inbuf) > BUFFER_HIGH_WATER and self.busy:
            self.pause_input(PAUSE_BUFFER_FULL)

    # -- input processing -----------------------------------------------------------------

    cdef Py_ssize_t consume(self, const char* p, Py_ssize_t n, object whole) except -1:
        """Process as much of p[0:n] as the current state allows; returns the bytes used."""
        cdef Py_ssize_t off = 0
        cdef Py_ssize_t r
        cdef RequestParser rp = self.gw.parser
        cdef bint outer = not self.consuming
        self.consuming = True
        try:
            off = self.consume_loop(p, n, whole)
        finally:
            if outer:
                self.consuming = False
        return off

    cdef Py_ssize_t consume_loop(self, const char* p, Py_ssize_t n, object whole) except -1:
        cdef Py_ssize_t off = 0
        cdef Py_ssize_t r
        cdef RequestParser rp = self.gw.parser
        while off < n and self.state <= C_BODY:
            if self.state == C_BODY:
                r = self.feed_body(p + off, n - off, whole if off == 0 else None)
                off += r
                if r == 0:
                    break
                continue
            if self.busy:
                break  # pipelined: wait for the response in progress
            r = rp.parse_head(p + off, n - off)
            if r == 0:
                if not self.head_timer:
                    self.head_timer = True
                    self.deadline = monotonic() + self.gw.header_timeout
                break
            if r < 0:
                self.respond_error(rp.error_status, rp.error_code, rp.error_message, True)
                return n
            self.head_timer = False
            off += self.handle_head(p + off, r)
        return off

    cdef Py_ssize_t handle_head(self, const char* base, Py_ssize_t head_len) except -1:
        cdef RequestParser rp = self.gw.parser
        cdef Gateway gw = self.gw
        cdef str method
        cdef str path
        cdef str host = ""
        cdef Header* h
        cdef RouteAction action
        self.started = monotonic()
        self.deadline = 0.0
        self.served += 1
        self.busy = True
        self.action = None
        self.request_id = None
        self.log_upstream = None
        self.response_status = 0
        self.response_bytes = 0
        self.attempts = 1
        self.upstream_request = None
        self.flushed_any = False
        self.discard_body = False
        self.view = None
        self.response_view = None
        self.handler_ready = False
        self.wants_response_head = False
        self.consumer = None
        self.upstream_extra = None
        self.response_extra = None
        self.echo_request_id = True
        self.body_limit = gw.max_body
        self.expect_continue = rp.expect_continue
        self.client_http10 = rp.version == 10
        self.request_is_head = rp.method.len == 4 and memcmp(base + rp.method.off, b"HEAD", 4) == 0
        self.keep_alive = rp.keep_alive and not gw.draining and (
            gw.keepalive_requests == 0 or self.served < gw.keepalive_requests)
        self.body_kind = rp.body_kind
        self.body_remaining = rp.content_length if rp.body_kind == BODY_LENGTH else 0
        self.body_total = 0
        self.request_complete = rp.body_kind == BODY_NONE
        if rp.body_kind != BODY_NONE:
            self.state = C_BODY
            self.deadline = self.started + gw.body_timeout
            if rp.body_kind == BODY_CHUNKED:
                self.body_decoder.reset()
        if gw.log_enabled:
            self.log_method = PyBytes_FromStringAndSize(base + rp.method.off, rp.method.len)
            self.log_target = PyBytes_FromStringAndSize(base + rp.target.off, rp.target.len)

        method = _method_str(base + rp.method.off, rp.method.len)
        if method == "CONNECT":
            self.respond_error(501, "not_implemented", "CONNECT tunnels are not supported", True)
            return head_len
        # An absolute-form target without a path ("http://host") means "/" (RFC 9112 §3.2.2).
        path = PyUnicode_DecodeLatin1(base + rp.path.off, rp.path.len, NULL) if rp.path.len else "/"
        if gw.host_routing and rp.host_index >= 0:
            h = &rp.headers[rp.host_index]
            if (self.last_host_raw is None or PyBytes_GET_SIZE(self.last_host_raw) != h.value.len
                    or memcmp(PyBytes_AS_STRING(self.last_host_raw), base + h.value.off, h.value.len) != 0):
                self.last_host_raw = PyBytes_FromStringAndSize(base + h.value.off, h.value.len)
                self.last_host = _normalize_host(base + h.value.off, h.value.len)
            host = self.last_host

        match = gw.router.match(host, method, path)
        if match is None:
            allowed = gw.router.allowed_methods(host, path)
            if allowed:
                self.respond_error(405, "method_not_allowed",
                                   f"{method} is not allowed here; allowed: {', '.join(allowed)}",
                                   not self.request_complete,
                                   ("Allow: " + ", ".join(allowed) + "\r\n").encode("latin-1"))
            else:
                self.respond_error(404, "not_found", f"no route matches {path}",
                                   not self.request_complete)
            return head_len
        action = <RouteAction>match[0]
        self.action = action
        if gw.max_body and rp.body_kind == BODY_LENGTH and rp.content_length > gw.max_body:
            self.respond_error(413, "content_too_large",
                               f"the request body is larger than the limit of {gw.max_body} bytes", True)
            return head_len
        self.chain = action.chain
        self.response_phase = action.response_phase
        if action.fast_checks is not None:
            self.match_params = match[1]
            for i in range(len(action.fast_checks)):
                outcome = (<FastCheck>action.fast_checks[i]).check(self, base)
                if outcome == CHECK_ANSWERED:
                    return head_len
                if outcome == CHECK_PYTHON:
                    # This check cannot decide alone (e.g. a Redis-backed limit due for a sync):
                    # its plugin and every later one run in Python for this request.
                    self.chain = action.fallback_chains[i]
                    self.response_phase = bool(self.chain.response)
                    break
        if self.chain is not None or action.kind == ACTION_HANDLER:
            self.start_plugins(base, action, match[1], method, path)
            return head_len
        if action.kind == ACTION_STATIC:
            self.discard_body = not self.request_complete
            self.respond_static(action)
            return head_len
        self.start_proxy(base, action, match[1])
        return head_len

    cdef Py_ssize_t feed_body(self, const char* p, Py_ssize_t n, object whole) except -1:
        cdef int64_t take
        cdef Py_ssize_t off = 0
        cdef Py_ssize_t consumed
        cdef int rc = 0
        cdef ChunkedDecoder dec
        self.deadline = monotonic() + self.gw.body_timeout
        if self.body_kind == BODY_LENGTH:
            take = n if n <= self.body_remaining else self.body_remaining
            self.body_remaining -= take
            self.sink(p, take, whole if take == n else None)
            if self.body_remaining == 0:
                self.body_done()
            return take
        dec = self.body_decoder
        while off < n:
            rc = dec.step(p + off, n - off, &consumed)
            if rc == CHUNK_ERROR:
                self.fail_request(dec.error_status, dec.error_code, dec.error_message)
                return n
            if rc == CHUNK_DATA:
                self.body_total += dec.data_len
                if self.body_limit and self.body_total > self.body_limit:
                    self.fail_request(413, "content_too_large",
                                      f"the request body is larger than the limit of {self.body_limit} bytes")
                    return n
            off += consumed
            if rc == CHUNK_DONE:
                break
            if consumed == 0 and rc != CHUNK_DATA:
                break
        # Chunk framing is relayed as received: it was validated above.
        self.sink(p, off, whole if off == n else None)
        if rc == CHUNK_DONE:
            self.body_done()
        return off

    cdef void fail_request(self, int status, str code, str message):
        """The request body turned out to be invalid: give up on the whole exchange."""
        cdef UpstreamConnection up = self.upstream
        if up is not None:
            self.upstream = None
            up.client = None
            if not self.waiting_upstream:
                up.end_exchange(False)
            self.waiting_upstream = False
        if self.response_status == 0:
            self.respond_error(status, code, message, True)
        else:
            self.close()

    cdef void sink(self, const char* p, Py_ssize_t n, object whole):
        if n <= 0 or self.discard_body:
            return
        if self.upstream is not None and not self.waiting_upstream and bb_len(&self.pending) == 0:
            self.flushed_any = True
            self.upstream.send(whole if whole is not None else PyBytes_FromStringAndSize(p, n))
            return
        bb_append(&self.pending, p, n)
        if bb_len(&self.pending) > BUFFER_HIGH_WATER and not (self.action is not None and self.action.buffer_body):
            self.pause_input(PAUSE_BUFFER_FULL)

    cdef void body_done(self):
        self.state = C_HEAD
        self.request_complete = True
        self.deadline = 0.0
        if self.discard_body:
            self.discard_body = False
            if not self.busy:
                self.finish_response()
            return
        if self.handler_ready:
            self.call_handler()
            return
        if self.upstream is not None and not self.waiting_upstream and bb_len(&self.pending) == 0:
            self.upstream.request_sent()

    cdef void flush_pending(self):
        cdef bytes data = bb_take(&self.pending)
        if not self.flushed_any and self.request_complete:
            self.upstream_request = data  # the whole request: replayable on a stale connection
        self.flushed_any = True
        self.upstream.send(data)
        if self.request_complete:
            self.upstream.request_sent()
        if self.paused & PAUSE_BUFFER_FULL:
            self.resume_input(PAUSE_BUFFER_FULL)

    # -- proxying ---------------------------------------------------------------------------

    cdef UpstreamConnection take_upstream(self, UpstreamPool pool):
        """A connection to a target of `pool` for this request (maybe still connecting: then
        waiting_upstream), or None after answering 502 when no target is available."""
        cdef UpstreamConnection up
        cdef int rc = pool.acquire(self, self.hash_key, None, False)
        if rc == ACQUIRE_NO_TARGET:
            self.respond_error(502, "no_upstream_available",
                               f"no target of upstream \"{pool.name}\" is available", not self.request_complete)
            return None
        up = self.upstream
        self.waiting_upstream = rc == ACQUIRE_PENDING
        self.log_upstream = up.target.addr
        return up

    cdef void start_proxy(self, const char* base, RouteAction action, object params):
        cdef UpstreamPool pool = action.pool
        cdef RequestParser rp = self.gw.parser
        cdef UpstreamConnection up
        self.hash_key = self.compute_hash_key(base, pool) if pool.hash_source else None
        up = self.take_upstream(pool)
        if up is None:
            return
        self.build_upstream_head(base, action, params, up.target)
        if rp.expect_continue and not self.request_complete and not self.client_http10:
            self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        if self.write_paused:
            up.pause_reading()

    cdef object compute_hash_key(self, const char* base, UpstreamPool pool):
        cdef RequestParser rp = self.gw.parser
        cdef Header* h
        cdef int i
        cdef bytes name = pool.hash_name
        cdef Py_ssize_t nlen = PyBytes_GET_SIZE(name)
        if pool.hash_source == 3:  # client ip
            return self.client_ip
        for i in range(rp.nheaders):
            h = &rp.headers[i]
            if pool.hash_source == 1:
                if h.name.len == nlen and ascii_lower_equal(base + h.name.off, PyBytes_AS_STRING(name), nlen):
                    return PyBytes_FromStringAndSize(base + h.value.off, h.value.len)
            elif h.name.len == 6 and ascii_lower_equal(base + h.name.off, b"cookie", 6):
                value = _cookie_value(PyBytes_FromStringAndSize(base + h.value.off, h.value.len), name)
                if value is not None:
                    return value
        return None

    cdef void build_upstream_head(self, const char* base, RouteAction action, object params, object target):
        cdef RequestParser rp = self.gw.parser
        cdef ByteBuffer* b = &self.pending
        cdef Header* h
        cdef int i
        cdef int hid
        cdef const char* path = base + rp.path.off
        cdef Py_ssize_t path_len = rp.path.len
        cdef Py_ssize_t plen
        cdef int xff_first = -1
        cdef bint have_request_id = False
        cdef bytes value
        bb_clear(b)
        bb_append(b, base + rp.method.off, rp.method.len)
        bb_append(b, " ", 1)
        if action.rewrite_parts is not None:
            for part in action.rewrite_parts:
                if isinstance(part, bytes):
                    bb_append_str(b, <bytes>part)
                else:
                    value = (<str>(params[part] if params else "")).encode("latin-1")
                    bb_append_str(b, value)
        elif action.strip_prefix is not None:
            plen = PyBytes_GET_SIZE(action.strip_prefix)
            if path_len >= plen and memcmp(path, PyBytes_AS_STRING(action.strip_prefix), plen) == 0:
                path += plen
                path_len -= plen
            if path_len == 0 or path[0] != b'/':
                bb_append(b, "/", 1)
            bb_append(b, path, path_len)
        elif path_len:
            bb_append(b, path, path_len)
        else:
            bb_append(b, "/", 1)
        if rp.query.off >= 0:
            bb_append(b, "?", 1)
            bb_append(b, base + rp.query.off, rp.query.len)
        bb_append(b, " HTTP/1.1\r\nHost: ", 17)
        self.host_off = bb_len(b)
        if action.preserve_host and rp.host_index >= 0:
            h = &rp.headers[rp.host_index]
            bb_append(b, base + h.value.off, h.value.len)
        else:
            bb_append_str(b, <bytes>action.pool.host_headers[target])
        self.host_len = bb_len(b) - self.host_off
        bb_append(b, "\r\n", 2)
        for i in range(rp.nheaders):
            h = &rp.headers[i]
            hid = header_id(base + h.name.off, h.name.len)
            if hid == H_OTHER:
                if rp.connection_tokens and named_by_connection(rp, base, h):
                    continue
                if (action.drop_headers is not None
                        and (action.drop_lengths >> (h.name.len if h.name.len < 64 else 63)) & 1
                        and _listed_name(action.drop_headers, base + h.name.off, h.name.len)):
                    continue
            elif hid == H_TRANSFER_ENCODING or hid == H_CONTENT_LENGTH:
                pass  # the body framing is relayed verbatim, so its header goes along
            elif hid == H_X_REQUEST_ID:
                have_request_id = True
                self.request_id = PyBytes_FromStringAndSize(base + h.value.off, h.value.len)
            elif hid == H_X_FORWARDED_FOR:
                if xff_first < 0:
                    xff_first = i
                continue
            else:
                # Host (rewritten above), Expect (answered here), X-Forwarded-Proto/-Host (set
                # below), and the hop-by-hop fields of RFC 9110 §7.6.1.
                continue
            bb_append(b, base + h.name.off, h.name.len)
            bb_append(b, ": ", 2)
            bb_append(b, base + h.value.off, h.value.len)
            bb_append(b, "\r\n", 2)
        bb_append(b, "X-Forwarded-For: ", 17)
        if xff_first >= 0:
            for i in range(xff_first, rp.nheaders):
                h = &rp.headers[i]
                if header_id(base + h.name.off, h.name.len) == H_X_FORWARDED_FOR and h.value.len > 0:
                    bb_append(b, base + h.value.off, h.value.len)
                    bb_append(b, ", ", 2)
        bb_append_str(b, self.client_ip)
        bb_append(b, "\r\nX-Forwarded-Proto: http\r\n", 27)
        if rp.host_index >= 0:
            h = &rp.headers[rp.host_index]
            bb_append(b, "X-Forwarded-Host: ", 18)
            bb_append(b, base + h.value.off, h.value.len)
            bb_append(b, "\r\n", 2)
        if not have_request_id:
            self.request_id = self.gw.next_request_id()
            bb_append(b, "X-Request-Id: ", 14)
            bb_append_str(b, self.request_id)
            bb_append(b, "\r\n", 2)
        if self.upstream_extra is not None:
            bb_append_str(b, self.upstream_extra)
        bb_append(b, "\r\n", 2)

    cdef void on_upstream_connected(self, UpstreamConnection up):
        self.waiting_upstream = False
        if self.write_paused:
            up.pause_reading()
        if bb_len(&self.pending) > 0:
            self.flush_pending()
        elif self.request_complete:
            up.request_sent()

    cdef void on_upstream_error(self, int kind, str detail):
        cdef UpstreamPool pool
        cdef Target failed_target
        cdef int rc
        self.waiting_upstream = False
        if self.state == C_CLOSED or self.action is None:
            return
        pool = self.action.pool
        failed_target = self.upstream.target if self.upstream is not None else None
        self.upstream = None
        if self.response_status == 0:
            if ((kind == UPSTREAM_CONNECT_FAILED or kind == UPSTREAM_CONNECT_TIMEOUT)
                    and not self.flushed_any and self.attempts <= pool.retries):
                # Nothing reached the upstream: safe to try another target.
                self.attempts += 1
                if self.retry(pool, False, failed_target):
                    return
            elif kind == UPSTREAM_STALE and self.upstream_request is not None and self.attempts <= 2:
                # A keep-alive connection the upstream had closed: replay on a fresh one.
                self.attempts += 1
                bb_clear(&self.pending)
                bb_append_str(&self.pending, self.upstream_request)
                self.flushed_any = False
                if self.retry(pool, True, None):
                    return
        if self.response_status != 0:
            # Part of the response is already out: the client can only learn by the connection closing.
            self.close()
            return
        if kind == UPSTREAM_READ_TIMEOUT:
            self.respond_error(504, "upstream_timeout",
                               f"upstream \"{pool.name}\" did not answer within read_timeout",
                               not self.request_complete)
        elif kind == UPSTREAM_CONNECT_TIMEOUT:
            self.respond_error(502, "upstream_connect_timeout",
                               f"could not connect to upstream \"{pool.name}\" within connect_timeout",
                               not self.request_complete)
        elif kind == UPSTREAM_BAD_RESPONSE:
            self.respond_error(502, "bad_upstream_response",
                               f"upstream \"{pool.name}\" sent an invalid response: {detail}",
                               not self.request_complete)
        elif kind == UPSTREAM_CONNECT_FAILED or kind == UPSTREAM_NO_TARGET:
            self.respond_error(502, "upstream_unreachable",
                               f"no target of upstream \"{pool.name}\" could be reached ({detail})",
                               not self.request_complete)
        else:
            self.respond_error(502, "upstream_closed",
                               f"upstream \"{pool.name}\" closed the connection before responding",
                               not self.request_complete)

    cdef bint retry(self, UpstreamPool pool, bint fresh, Target exclude):
        """Send the pending request through another connection; False when none is left."""
        cdef int rc = pool.acquire(self, self.hash_key, exclude, fresh)
        cdef bytes host
        cdef bytes head
        if rc == ACQUIRE_NO_TARGET:
            return False
        self.waiting_upstream = rc == ACQUIRE_PENDING
        self.log_upstream = self.upstream.target.addr
        host = pool.host_headers[self.upstream.target]
        if not self.action.preserve_host and self.host_off > 0 and bb_len(&self.pending) >= self.host_off + self.host_len:
            # Point the Host header at the newly chosen target.
            head = bb_take(&self.pending)
            bb_append(&self.pending, PyBytes_AS_STRING(head), self.host_off)
            bb_append_str(&self.pending, host)
            bb_append(&self.pending, PyBytes_AS_STRING(head) + self.host_off + self.host_len,
                      PyBytes_GET_SIZE(head) - self.host_off - self.host_len)
            self.host_len = PyBytes_GET_SIZE(host)
            if self.upstream_request is not None:
                self.upstream_request = bytes(self.pending.data[self.pending.start:self.pending.end])
        if rc == ACQUIRE_READY:
            self.flush_pending()
        return True

    cdef void on_response_complete(self):
        self.finish_response()

    cdef void pause_input(self, int reason):
        if self.paused == 0 and self.transport is not None and self.state != C_CLOSED:
            self.transport.pause_reading()
        self.paused |= reason

    cdef void resume_input(self, int reason):
        if self.paused == 0:
            return
        self.paused &= ~reason
        if self.paused == 0 and self.transport is not None and self.state != C_CLOSED:
            self.transport.resume_reading()

    # -- plugins and Python handlers -----------------------------------------------------------

    cdef void start_plugins(self, const char* base, RouteAction action, object params, str method, str path):
        """Build the plugins' view of the request and run access + rewrite (sync or async)."""
        self.build_view(base, action, params, method, path)
        self.run_access_chain()

    cdef void build_view(self, const char* base, RouteAction action, object params, str method, str path):
        """The plugins' view of the request (a copy: the parser is shared by the worker)."""
        cdef RequestParser rp = self.gw.parser
        cdef Header* h
        cdef int i
        cdef list fields = []
        for i in range(rp.nheaders):
            h = &rp.headers[i]
            if action.drop_headers is not None and _listed_name(action.drop_headers, base + h.name.off, h.name.len):
                continue
            name = PyUnicode_DecodeLatin1(base + h.name.off, h.name.len, NULL)
            value = PyUnicode_DecodeLatin1(base + h.value.off, h.value.len, NULL)
            if self.request_id is None and header_id(base + h.name.off, h.name.len) == H_X_REQUEST_ID:
                self.request_id = PyBytes_FromStringAndSize(base + h.value.off, h.value.len)
            fields.append((name, value))
        if self.request_id is None:
            self.request_id = self.gw.next_request_id()
        if self.upstream_extra is not None:
            for line in self.upstream_extra.decode("latin-1").split("\r\n"):
                if line:
                    name, _, value = line.partition(":")
                    fields.append((name, value.strip()))
        self.view = PluginRequest(
            method=method,
            path=path,
            query=PyUnicode_DecodeLatin1(base + rp.query.off, rp.query.len, NULL) if rp.query.off >= 0 else "",
            headers=fields,
            client_ip=self.client_ip.decode("latin-1"),
            route=action.name,
            request_id=self.request_id.decode("latin-1"),
            http_version="1.0" if self.client_http10 else "1.1",
            path_params=params,
            content_length=rp.content_length if rp.body_kind == BODY_LENGTH else None,
        )
        if self.consumer is not None:
            self.view.consumer = self.consumer

    cdef void run_access_chain(self):
        cdef RouteAction action = self.action
        if self.chain is None:
            self.plugins_finished(None)
            return
        try:
            result = self.chain.run_access(self.view)
        except Exception:
            self.plugin_failed("access")
            return
        if result is None or isinstance(result, PluginResponse):
            self.plugins_finished(result)
            return
        self.plugin_task = asyncio.ensure_future(result)
        self.plugin_task.add_done_callback(self._on_plugins_done)

    def _on_plugins_done(self, future):
        self.plugin_task = None
        if self.state > C_BODY or future.cancelled():
            return
        try:
            response = future.result()
        except Exception:
            self.plugin_failed("access")
            return
        self.plugins_finished(response)

    cdef void plugins_finished(self, object response):
        cdef RouteAction action = self.action
        if self.state > C_BODY:
            return
        if response is not None:
            self.respond_response(response)
            return
        if action.kind == ACTION_STATIC:
            self.discard_body = not self.request_complete
            self.respond_static(action)
            return
        if self.view is not None:
            ctx = self.view.ctx
            if ctx.get("echo_request_id") is False:  # the request-id plugin keeps the id internal
                self.echo_request_id = False
            limit = ctx.get("body_limit")
            if limit is not None and (self.body_limit == 0 or limit < self.body_limit):
                # A plugin (request-size-limit) lowered the body limit for this request; bytes
                # that arrived while the plugins ran count already.
                self.body_limit = limit
                if self.body_total > self.body_limit:
                    self.fail_request(413, "content_too_large",
                                      f"the request body is larger than the limit of {self.body_limit} bytes")
                    return
        if self.expect_continue and not self.request_complete:
            self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        if action.kind == ACTION_HANDLER:
            self.handler_ready = True
            if self.request_complete:
                self.call_handler()
            return
        self.start_proxy_from_view()

    cdef void plugin_failed(self, str phase):
        rid = self.request_id.decode("latin-1") if self.request_id is not None else "-"
        _log.exception("plugin failed in the %s phase (route %s, request id %s)", phase,
                       self.action.name if self.action is not None else "-", rid)
        self.respond_error(500, "plugin_error",
                           f"a plugin failed in the {phase} phase; request id {rid}", not self.request_complete)

    cdef void call_handler(self):
        cdef bytes body = bb_take(&self.pending)
        self.handler_ready = False
        try:
            result = self.action.handler(self.view, body)
            if isinstance(result, PluginResponse):  # answered at once
                self.respond_response(result)
                return
            # A coroutine becomes a task; a future (the function routes' handler) is taken as is.
            task = asyncio.ensure_future(result)
        except Exception:
            self.plugin_failed("handler")
            return
        self.plugin_task = task
        task.add_done_callback(self._on_handler_done)

    def _on_handler_done(self, future):
        self.plugin_task = None
        if self.state == C_CLOSED or future.cancelled():
            return
        try:
            response = future.result()
        except Exception:
            self.plugin_failed("handler")
            return
        if not isinstance(response, PluginResponse):
            _log.error("handler of route %s returned %r, not a Response", self.action.name, response)
            self.respond_error(500, "handler_error", "the route's handler returned no response", False)
            return
        self.respond_response(response)

    cdef void start_proxy_from_view(self):
        cdef RouteAction action = self.action
        cdef UpstreamPool pool = action.pool
        cdef UpstreamConnection up
        cdef bytes body
        self.hash_key = self.hash_key_from_view(pool) if pool.hash_source else None
        up = self.take_upstream(pool)
        if up is None:
            return
        self.wants_response_head = self.response_phase
        # Body bytes that arrived while the plugins ran wait in `pending`: the head goes first.
        body = bb_take(&self.pending)
        self.build_head_from_view(action, up.target)
        bb_append_str(&self.pending, body)
        if self.write_paused:
            up.pause_reading()
        if not self.waiting_upstream:
            self.flush_pending()

    cdef object hash_key_from_view(self, UpstreamPool pool):
        if pool.hash_source == 3:
            return self.client_ip
        if pool.hash_source == 1:
            value = self.view.headers.get(pool.hash_name.decode("latin-1"))
            return value.encode("latin-1") if value is not None else None
        for cookie_header in self.view.headers.get_all("cookie"):
            value = _cookie_value(cookie_header.encode("latin-1"), pool.hash_name)
            if value is not None:
                return value
        return None

    cdef void build_head_from_view(self, RouteAction action, Target target):
        """The upstream request head from the plugins' view, into `pending`."""
        cdef ByteBuffer* b = &self.pending
        cdef bytes name_b
        cdef bytes value_b
        cdef int hid
        cdef list forwarded_for = []
        cdef bint have_request_id = False
        view = self.view
        path = view.path.encode("latin-1")
        bb_append_str(b, view.method.encode("latin-1"))
        bb_append(b, " ", 1)
        if view.path_changed:
            bb_append_str(b, path)
        elif action.rewrite_parts is not None:
            params = view.path_params
            for part in action.rewrite_parts:
                if isinstance(part, bytes):
                    bb_append_str(b, <bytes>part)
                else:
                    bb_append_str(b, (<str>params.get(part, "")).encode("latin-1"))
        elif action.strip_prefix is not None and path.startswith(action.strip_prefix):
            rest = path[len(action.strip_prefix):]
            if not rest.startswith(b"/"):
                bb_append(b, "/", 1)
            bb_append_str(b, rest)
        else:
            bb_append_str(b, path)
        if view.query:
            bb_append(b, "?", 1)
            bb_append_str(b, view.query.encode("latin-1"))
        bb_append(b, " HTTP/1.1\r\nHost: ", 17)
        self.host_off = bb_len(b)
        client_host = view.headers.get("host")
        if action.preserve_host and client_host is not None:
            bb_append_str(b, client_host.encode("latin-1"))
        else:
            bb_append_str(b, <bytes>action.pool.host_headers[target])
        self.host_len = bb_len(b) - self.host_off
        bb_append(b, "\r\n", 2)
        for name, value in view.headers.items():
            name_b = name.encode("latin-1")
            value_b = value.encode("latin-1")
            hid = header_id(PyBytes_AS_STRING(name_b), PyBytes_GET_SIZE(name_b))
            if hid == H_X_FORWARDED_FOR:
                forwarded_for.append(value_b)
                continue
            if hid == H_X_REQUEST_ID:
                have_request_id = True
            elif hid == H_OTHER:
                if _named_in_connection_values(view, name):
                    continue
            elif hid != H_TRANSFER_ENCODING and hid != H_CONTENT_LENGTH:
                continue
            bb_append_str(b, name_b)
            bb_append(b, ": ", 2)
            bb_append_str(b, value_b)
            bb_append(b, "\r\n", 2)
        bb_append(b, "X-Forwarded-For: ", 17)
        for value_b in forwarded_for:
            if value_b:
                bb_append_str(b, value_b)
                bb_append(b, ", ", 2)
        bb_append_str(b, self.client_ip)
        bb_append(b, "\r\nX-Forwarded-Proto: http\r\n", 27)
        if client_host is not None:
            bb_append(b, "X-Forwarded-Host: ", 18)
            bb_append_str(b, client_host.encode("latin-1"))
            bb_append(b, "\r\n", 2)
        if not have_request_id:
            bb_append(b, "X-Request-Id: ", 14)
            bb_append_str(b, self.request_id)
            bb_append(b, "\r\n", 2)
        bb_append(b, "\r\n", 2)

    cdef object filter_response_head(self, int status, list headers):
        """Run the response phase over an upstream response head; None if the client was answered."""
        cdef RouteAction action = self.action
        if self.view is None or action is None or not self.response_phase:
            return None
        head = PluginResponseHead(
            status, [(n.decode("latin-1"), v.decode("latin-1")) for n, v in headers], self.view)
        try:
            self.chain.run_response(self.view, head)
        except Exception:
            self.plugin_failed("response")
            return None
        self.response_view = head
        sink = self.view.ctx.get(BODY_SINK_KEY)
        if sink is not None and isinstance(sink, Fill) and (<Fill>sink).active and self.cache_miss is None:
            # A Python-phase cache plugin stores this response: the relay tees the body into it.
            self.cache_fill = <Fill>sink
        return head

    cdef void respond_response(self, object response):
        """Answer with a plugin's or handler's Response (through the response phase)."""
        cdef RouteAction action = self.action
        cdef int status = response.status
        cdef list fields = list(response.headers)
        cdef bytes body = bytes(response.body)
        if self.view is not None and action is not None and self.response_phase:
            head = PluginResponseHead(status, fields, self.view)
            try:
                self.chain.run_response(self.view, head)
            except Exception:
                self.plugin_failed("response")
                return
            self.response_view = head
            status = head.status
            fields = head.headers.items()
        elif self.view is not None and self.logs_to_plugins():
            # Only the log phase reads it (a handler route without log plugins skips the copy).
            self.response_view = PluginResponseHead(status, fields, self.view)
        if not self.request_complete and not self.discard_body:
            # Answering before the body was read (401 on an upload, say): drop the rest of it.
            self.discard_body = True
            bb_clear(&self.pending)
            if self.paused & PAUSE_BUFFER_FULL:
                self.resume_input(PAUSE_BUFFER_FULL)
        bb_clear(&_out)
        bb_append_str(&_out, f"HTTP/1.1 {status} {reason_phrase(status)}\r\n".encode("latin-1"))
        for name, value in fields:
            lower = name.lower()
            if lower in ("content-length", "transfer-encoding", "connection", "date"):
                continue
            bb_append_str(&_out, f"{name}: {value}\r\n".encode("latin-1"))
        if status >= 200 and status != 204 and status != 304:
            bb_append(&_out, "Content-Length: ", 16)
            bb_append_uint(&_out, <unsigned long long>len(body))
            bb_append(&_out, "\r\n", 2)
        else:
            body = b""
        bb_append_str(&_out, _date_line)
        if self.response_extra is not None:
            bb_append_str(&_out, self.response_extra)
        if self.echo_request_id and self.request_id is not None and response.headers is not None:
            if not any(n.lower() == "x-request-id" for n, _ in fields):
                bb_append(&_out, "X-Request-Id: ", 14)
                bb_append_str(&_out, self.request_id)
                bb_append(&_out, "\r\n", 2)
        self.send_built(status, body)
        self.response_sent()

    cdef void respond_cached(self, Entry entry, double now):
        """Answer with a stored response (a cache hit): its prebuilt head, Age, Date, our fields."""
        cdef bytes body = entry.body
        cdef Py_ssize_t body_len = PyBytes_GET_SIZE(body)
        cdef bint copy_body
        if self.state == C_CLOSED or self.state == C_LINGER:
            return
        if not self.request_complete and not self.discard_body:
            # A GET with a body: drop it (nobody is going to read it).
            self.discard_body = True
            bb_clear(&self.pending)
        copy_body = not self.request_is_head and body_len <= CACHED_COPY_MAX
        bb_clear(&_out)
        bb_append_str(&_out, entry.head)
        bb_append(&_out, "Age: ", 5)
        bb_append_uint(&_out, <unsigned long long>entry.age(now))
        bb_append(&_out, "\r\n", 2)
        bb_append_str(&_out, _date_line)
        if self.response_extra is not None:
            bb_append_str(&_out, self.response_extra)
        self.send_built(entry.status, body if copy_body else None)
        if not self.request_is_head and not copy_body:
            self.response_bytes += body_len
            self.transport.write(body)
        self.response_sent()

    cdef void suspend_request(self, const char* base):
        """Keep this request (as the plugins' view) while a fast check makes it wait."""
        cdef RequestParser rp = self.gw.parser
        method = _method_str(base + rp.method.off, rp.method.len)
        path = PyUnicode_DecodeLatin1(base + rp.path.off, rp.path.len, NULL) if rp.path.len else "/"
        self.build_view(base, self.action, self.match_params, method, path)

    cdef bint resume_request(self):
        """Go on with a suspended request: the route's Python chain, then its handler or upstream.

        False when the client is gone (nothing to do).
        """
        if not self.is_open() or self.view is None:
            return False
        self.run_access_chain()
        return True

    cdef bint is_open(self):
        return self.state == C_HEAD or self.state == C_BODY

    cdef inline bint logs_to_plugins(self):
        """Whether this request's plugin chain has a log phase."""
        return self.chain is not None and bool(self.chain.log)

    cdef void run_log_phase(self):
        cdef RouteAction action = self.action
        view = self.view
        self.view = None
        if action is None or not self.logs_to_plugins():
            return
        head = self.response_view
        if head is None:
            head = PluginResponseHead(self.response_status, [], view)
        head.bytes_sent = self.response_bytes
        try:
            self.chain.run_log(view, head)
        except Exception:
            _log.exception("plugin failed in the log phase (route %s, request id %s)", action.name,
                           view.request_id)

    # -- responses --------------------------------------------------------------------------

    cdef void send_built(self, int status, bytes body):
        """Finish the head being built in _out (Connection, blank line), add the body unless the
        request was HEAD, and hand it all to the transport in one write."""
        if not self.keep_alive:
            bb_append(&_out, "Connection: close\r\n", 19)
        elif self.client_http10:
            bb_append(&_out, "Connection: keep-alive\r\n", 24)
        bb_append(&_out, "\r\n", 2)
        if body is not None and not self.request_is_head:
            bb_append_str(&_out, body)
        self.response_status = status
        self.response_bytes = bb_len(&_out)
        if self.transport is not None:
            self.transport.write(bb_take(&_out))
        else:
            bb_clear(&_out)

    cdef void response_sent(self):
        """A response of our own is out: go on, or first read and drop the rest of the body."""
        if not self.discard_body:
            self.finish_response()
        else:
            self.busy = False  # the body still arrives; body_done() then continues the connection
            self.log_request()

    cdef void respond_static(self, RouteAction action):
        if self.view is not None and self.response_phase:
            self.respond_response(PluginResponse(
                action.static_status, action.static_body, _static_headers(action.static_head)))
            return
        bb_clear(&_out)
        bb_append_str(&_out, action.static_head)
        bb_append_str(&_out, _date_line)
        if self.response_extra is not None:
            bb_append_str(&_out, self.response_extra)
        self.send_built(action.static_status, action.static_body)
        self.response_sent()

    cdef void respond_error(self, int status, str code, str message, bint close, bytes extra_headers=None):
        cdef bytes body = error_body(status, code, message)
        if close:
            self.keep_alive = False
            self.linger = True
        bb_clear(&_out)
        bb_append_str(&_out, f"HTTP/1.1 {status} {reason_phrase(status)}\r\n".encode("latin-1"))
        bb_append(&_out, "Content-Type: application/json\r\nContent-Length: ", 48)
        bb_append_uint(&_out, <unsigned long long>len(body))
        bb_append(&_out, "\r\n", 2)
        bb_append_str(&_out, _date_line)
        if extra_headers is not None:
            bb_append_str(&_out, extra_headers)
        if self.echo_request_id and self.request_id is not None:
            bb_append(&_out, "X-Request-Id: ", 14)
            bb_append_str(&_out, self.request_id)
            bb_append(&_out, "\r\n", 2)
        self.send_built(status, body)
        if not self.busy:
            # An error outside a request (bad head): nothing more to log than the error.
            self.busy = True
            self.started = monotonic()
        self.finish_response()

    cdef void finish_response(self):
        """The response is complete: log it, then close or wait for the next request."""
        cdef Py_ssize_t used
        if self.state == C_CLOSED:
            return
        if self.busy:
            self.busy = False
            self.log_request()
        if not self.keep_alive:
            if self.linger:
                self.start_linger()
            else:
                self.close()
            return
        if not self.request_complete:
            return  # the body is still being read (discarded); body_done() continues
        self.state = C_HEAD
        self.head_timer = False
        self.deadline = monotonic() + self.gw.keepalive_timeout
        if self.paused & PAUSE_BUFFER_FULL:
            self.resume_input(PAUSE_BUFFER_FULL)
        if bb_len(&self.inbuf) > 0 and not self.consuming:
            # Pipelined requests waited for this response. (Inside consume() the running loop
            # picks them up itself.)
            used = self.consume(self.inbuf.data + self.inbuf.start, bb_len(&self.inbuf), None)
            if self.state <= C_BODY:
                bb_consume(&self.inbuf, used)
                if self.upstream is not None and not self.waiting_upstream and bb_len(&self.pending) > 0:
                    self.flush_pending()

    cdef void log_request(self):
        cdef timespec ts
        cdef Gateway gw = self.gw
        if self.view is not None:
            self.run_log_phase()
        if self.cache_fill is not None or self.cache_miss is not None:
            self.end_cache_exchange()
        if not gw.log_enabled:
            return
        clock_gettime(CLOCK_REALTIME, &ts)
        if self.request_id is None:
            self.request_id = gw.next_request_id()
        method = self.log_method if self.log_method is not None else b""
        target = self.log_target if self.log_target is not None else b""
        # Formatted straight into the access log's buffer: no tuple, no encoder call per request.
        gw.log_lines.append(
            ts.tv_sec + ts.tv_nsec * 1e-9,
            self.request_id,
            self.action.name if self.action is not None else "",
            PyBytes_AS_STRING(method), PyBytes_GET_SIZE(method),
            PyBytes_AS_STRING(target), PyBytes_GET_SIZE(target),
            self.response_status,
            self.response_bytes,
            self.log_upstream,
            <long long>((monotonic() - self.started) * 1e6),
            self.client_ip,
        )
        self.log_method = None
        self.log_target = None

    cdef void end_cache_exchange(self):
        """The request is over: a Fill still open was not completed (abort: nothing is stored, the
        coalesced waiters go upstream), and a miss still leading a fetch lets go of it."""
        cdef Fill fill = self.cache_fill
        miss = self.cache_miss
        self.cache_fill = None
        self.cache_miss = None
        try:
            if fill is not None:
                fill.abort()
            if miss is not None:
                miss.release()
        except Exception:
            _log.exception("cache: releasing coalesced requests failed")

    cdef void close(self):
        if self.transport is not None and self.state != C_CLOSED:
            self.transport.close()
        self.state = C_CLOSED

    cdef void start_linger(self):
        if self.transport is None or self.state == C_CLOSED:
            self.state = C_CLOSED
            return
        if not self.transport.can_write_eof():
            self.close()
            return
        self.transport.write_eof()
        self.state = C_LINGER
        self.started = monotonic()
        self.deadline = self.started + LINGER_READ_TIMEOUT
        bb_clear(&self.inbuf)
        if self.paused:
            self.paused = 0
            self.transport.resume_reading()

    cdef void on_deadline(self, double now):
        if self.state == C_CLOSED:
            return
        if self.state == C_LINGER:
            self.close()
            return
        if self.write_paused:
            if now >= self.send_deadline:
                # The client has left our bytes unread for send_timeout: give up on it.
                self.transport.abort()
            else:
                self.deadline = self.send_deadline
            return
        if self.state == C_BODY:
            self.fail_request(408, "request_timeout",
                              "the request body stalled for longer than body_timeout")
        elif not self.busy:
            if self.head_timer or bb_len(&self.inbuf) > 0 or self.served == 0:
                if self.head_timer or bb_len(&self.inbuf) > 0:
                    self.respond_error(408, "request_timeout",
                                       "the request head did not arrive within header_timeout", True)
                else:
                    self.close()  # connected but never sent a byte
            else:
                self.close()  # idle keep-alive connection


cdef bint _listed_name(tuple names, const char* name, Py_ssize_t n):
    """Whether a header name (any case) is one of the lower-case names."""
    for candidate in names:
        if PyBytes_GET_SIZE(<bytes>candidate) == n and ascii_lower_equal(name, PyBytes_AS_STRING(<bytes>candidate), n):
            return True
    return False


cdef bint _named_in_connection_values(object view, str name):
    """Whether the Connection header of the plugins' view names this field (hop-by-hop)."""
    cdef bytes lower = name.lower().encode("latin-1")
    for value in view.headers.get_all("connection"):
        for token in value.split(","):
            if token.strip().lower().encode("latin-1") == lower:
                return True
    return False


cdef list _static_headers(bytes head):
    """The fixed headers of a static route's prebuilt head, as (name, value) strings."""
    cdef list fields = []
    for line in head.split(b"\r\n")[1:]:
        if line:
            name, _, value = line.partition(b":")
            if name.lower() != b"content-length":
                fields.append((name.decode("latin-1"), value.strip().decode("latin-1")))
    return fields


cdef object _cookie_value(bytes header, bytes name):
    for part in header.split(b";"):
        key, sep, value = part.strip().partition(b"=")
        if sep and key == name:
            return value
    return None
