# cython: language_level=3
"""Upstream keep-alive pools and the protocol that relays upstream responses to clients.

One UpstreamConnection carries one exchange at a time. It parses the response head, rewrites
it for the client (hop-by-hop fields dropped, framing adapted to the client's HTTP version) and
relays the body as it arrives, so no body is ever held whole in memory. Flow control is end to
end: a client that cannot take bytes pauses the upstream read side, and the other way round.
"""

import asyncio
import logging

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from libc.stdint cimport int64_t
from posix.time cimport CLOCK_REALTIME, clock_gettime, timespec

from .balance cimport Balancer, Target
from .cache cimport Fill
from .buffer cimport (
    ByteBuffer,
    bb_append,
    bb_append_hex,
    bb_append_str,
    bb_append_uint,
    bb_clear,
    bb_consume,
    bb_free,
    bb_len,
    bb_take,
)
from .headers cimport (
    H_CONNECTION,
    H_TRANSFER_ENCODING,
    H_X_REQUEST_ID,
    header_id,
    is_hop_by_hop,
    named_by_connection,
)
from .parser cimport (
    BODY_CHUNKED,
    BODY_LENGTH,
    BODY_NONE,
    BODY_UNTIL_CLOSE,
    CHUNK_DATA,
    CHUNK_DONE,
    CHUNK_ERROR,
    ChunkedDecoder,
    Header,
    ResponseParser,
)
from .timers cimport Ticker, Watched, monotonic

_log = logging.getLogger("lambdagate.proxy")


cdef enum:
    HASH_NONE = 0
    HASH_HEADER = 1
    HASH_COOKIE = 2
    HASH_IP = 3

# UpstreamConnection.state
cdef enum:
    UP_CONNECTING = 0
    UP_IDLE = 1
    UP_WAIT_HEAD = 2
    UP_BODY = 3
    UP_CLOSED = 4

# Head builder shared by every connection of the worker (the event loop is single-threaded and
# a head is built and handed to a transport without yielding).
cdef ByteBuffer _out

cdef bytes _X_CACHE_MISS = b"X-Cache: MISS\r\n"
cdef bytes _X_CACHE_BYPASS = b"X-Cache: BYPASS\r\n"


cdef double _unix_now() noexcept:
    # The cache's clock: Unix time, so entries shared through Redis age the same on every node.
    cdef timespec ts
    clock_gettime(CLOCK_REALTIME, &ts)
    return ts.tv_sec + ts.tv_nsec * 1e-9


cdef bint _is_x_cache(const char* name, Py_ssize_t n) noexcept:
    cdef const char* want = b"x-cache"
    cdef Py_ssize_t i
    cdef char c
    if n != 7:
        return False
    for i in range(7):
        c = name[i]
        if c >= b'A' and c <= b'Z':
            c = c + 32
        if c != want[i]:
            return False
    return True


cdef class ProxyClient(Watched):
    cdef void pause_input(self, int reason):
        pass

    cdef void resume_input(self, int reason):
        pass

    cdef void on_upstream_connected(self, UpstreamConnection up):
        pass

    cdef void on_upstream_error(self, int kind, str detail):
        pass

    cdef void on_response_complete(self):
        pass

    cdef object filter_response_head(self, int status, list headers):
        return None


cdef class UpstreamPool:
    """Connections to one named upstream: a balancer over its targets and idle lists per target."""

    def __cinit__(
        self,
        str name,
        object loop,
        Balancer balancer,
        Ticker ticker,
        *,
        int keepalive=64,
        double connect_timeout=1.0,
        double read_timeout=30.0,
        double keepalive_timeout=60.0,
        int retries=1,
        str hash_on=None,
    ):
        self.name = name
        self.loop = loop
        self.balancer = balancer
        self.ticker = ticker
        self.keepalive = keepalive
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self.keepalive_timeout = keepalive_timeout
        self.retries = retries
        self.idle = {}
        self.host_headers = {}
        for target in balancer.targets:
            self.idle[target] = []
            self.host_headers[target] = target.addr.encode("latin-1")
        self.hash_source = HASH_NONE
        self.hash_name = b""
        if hash_on:
            if hash_on == "ip":
                self.hash_source = HASH_IP
            elif hash_on.startswith("header:"):
                self.hash_source = HASH_HEADER
                self.hash_name = hash_on[7:].lower().encode("latin-1")
            elif hash_on.startswith("cookie:"):
                self.hash_source = HASH_COOKIE
                self.hash_name = hash_on[7:].encode("latin-1")
            else:
                raise ValueError(f"hash_on must be header:NAME, cookie:NAME or ip, got {hash_on!r}")

    cdef int acquire(self, ProxyClient client, object hash_key, Target exclude, bint fresh):
        cdef double now = monotonic()
        cdef UpstreamConnection up
        cdef list conns
        cdef Target target = self.balancer.pick(now, hash_key, exclude)
        if target is None:
            return ACQUIRE_NO_TARGET
        target.in_flight += 1
        if not fresh:
            conns = <list>self.idle[target]
            while conns:
                up = <UpstreamConnection>conns.pop()
                if up.state == UP_IDLE:
                    up.in_exchange = True
                    up.start_request(client)
                    client.upstream = up
                    return ACQUIRE_READY
        up = UpstreamConnection.__new__(UpstreamConnection, self, target)
        up.in_exchange = True
        up.client = client
        client.upstream = up
        up.deadline = now + self.connect_timeout
        self.ticker.add(up)
        future = asyncio.ensure_future(
            self.loop.create_connection(up._self_factory, target.host, target.port)
        )
        future.add_done_callback(up._on_connect_done)
        up.connect_future = future
        return ACQUIRE_PENDING

    cdef void release(self, UpstreamConnection up, bint reusable):
        cdef list conns
        if reusable and up.state != UP_CLOSED and self.keepalive > 0:
            conns = <list>self.idle[up.target]
            if len(conns) < self.keepalive:
                up.state = UP_IDLE
                up.client = None
                up.reused = True
                up.deadline = monotonic() + self.keepalive_timeout
                conns.append(up)
                return
        up.abort()

    cdef void report_failure(self, Target target):
        self.balancer.report_failure(target, monotonic())

    def close(self):
        """Close every idle connection (worker shutdown)."""
        cdef UpstreamConnection up
        for conns in self.idle.values():
            while conns:
                up = <UpstreamConnection>conns.pop()
                up.abort()


cdef class UpstreamConnection(Watched):
    def __cinit__(self, UpstreamPool pool, Target target):
        self.pool = pool
        self.target = target
        self.transport = None
        self.client = None
        self.parser = ResponseParser()
        self.chunked = ChunkedDecoder()
        self.state = UP_CONNECTING
        self.reused = False
        self.got_bytes = False
        self.reusable = True
        self.response_done = False
        self.reading_paused = False
        self.in_exchange = False
        self.read_armed = False
        self.connect_future = None

    def __dealloc__(self):
        bb_free(&self.inbuf)

    def _self_factory(self):
        return self

    def _on_connect_done(self, future):
        cdef ProxyClient client
        self.connect_future = None
        if future.cancelled():
            return  # the connect timeout already reported the failure
        exc = future.exception()
        if exc is not None:
            if self.state == UP_CONNECTING:
                self.state = UP_CLOSED
                self.pool.ticker.remove(self)
                self.pool.report_failure(self.target)
                client = self.client
                self.end_exchange(False)
                if client is not None:
                    client.on_upstream_error(UPSTREAM_CONNECT_FAILED, str(exc) or type(exc).__name__)
            return
        if self.state != UP_CONNECTING:
            # Gave up on it (timeout or the client left) while the connect was completing.
            if self.transport is not None:
                self.transport.close()
            return
        self.deadline = 0.0
        client = self.client
        if client is None:
            self.state = UP_WAIT_HEAD
            self.end_exchange(True)
            return
        self.start_request(client)
        client.on_upstream_connected(self)

    # -- asyncio protocol ------------------------------------------------------------------

    def connection_made(self, transport):
        self.transport = transport

    def connection_lost(self, exc):
        self.on_closed()

    def eof_received(self):
        return False

    def pause_writing(self):
        if self.client is not None:
            self.client.pause_input(PAUSE_UPSTREAM_FULL)

    def resume_writing(self):
        if self.client is not None:
            self.client.resume_input(PAUSE_UPSTREAM_FULL)

    def data_received(self, bytes data):
        cdef const char* p = PyBytes_AS_STRING(data)
        cdef Py_ssize_t n = PyBytes_GET_SIZE(data)
        cdef Py_ssize_t off = 0
        cdef Py_ssize_t r
        cdef bint from_buffer = False
        cdef ProxyClient client = self.client
        if client is None or self.state == UP_IDLE or self.state == UP_CLOSED:
            # Bytes nobody asked for: the connection cannot be trusted for another request.
            self.reusable = False
            self.abort()
            return
        self.got_bytes = True
        self.deadline = monotonic() + self.pool.read_timeout
        if self.state == UP_BODY:
            self.relay_body(p, n, data, False)
            return
        # UP_WAIT_HEAD
        if bb_len(&self.inbuf) > 0:
            bb_append(&self.inbuf, p, n)
            p = self.inbuf.data + self.inbuf.start
            n = bb_len(&self.inbuf)
            from_buffer = True
        while True:
            r = self.parser.parse_head(p + off, n - off, client.request_is_head)
            if r == 0:
                if not from_buffer:
                    bb_append(&self.inbuf, p + off, n - off)
                else:
                    bb_consume(&self.inbuf, off)
                return
            if r < 0:
                self.fail(UPSTREAM_BAD_RESPONSE, self.parser.error_message)
                return
            if self.parser.status >= 200:
                break
            if self.parser.status == 101:
                self.fail(UPSTREAM_BAD_RESPONSE, "the upstream switched protocols, which this route does not allow")
                return
            off += r  # interim 1xx responses are not relayed: the gateway answers Expect itself
        bb_clear(&_out)
        if client.wants_response_head:
            if not self.write_head_filtered(p + off):
                return  # a response-phase plugin failed; the client has its 500 already
        else:
            self.write_head(p + off, True)
        off += r
        self.state = UP_BODY
        if self.body_kind == BODY_NONE:
            self.response_done = True
            if off < n:
                self.reusable = False
        elif off < n:
            self.relay_body(p + off, n - off, None, True)
            if from_buffer:
                bb_clear(&self.inbuf)
            return
        if from_buffer:
            bb_clear(&self.inbuf)
        self.flush_out()
        self.finish_if_done()

    # -- response relay ---------------------------------------------------------------------

    cdef void write_head(self, const char* base, bint with_cache):
        """Append the client-facing response head for the parsed upstream head to _out.

        with_cache: a compiled cache miss (client.cache_miss) decides here whether the response
        is stored; the stored fields are the relayed ones without X-Request-Id and X-Cache.
        """
        cdef ResponseParser rp = self.parser
        cdef ProxyClient client = self.client
        cdef int i
        cdef int hid
        cdef Header* h
        cdef bint have_request_id = False
        cdef int body_kind = rp.body_kind
        cdef list cache_fields = None
        if with_cache and client.cache_miss is not None:
            cache_fields = []

        self.reusable = self.reusable and rp.keep_alive
        self.dechunk = False
        self.rechunk = False
        if body_kind == BODY_CHUNKED and client.client_http10:
            self.dechunk = True
            client.keep_alive = False
        elif body_kind == BODY_UNTIL_CLOSE:
            self.reusable = False
            if client.client_http10:
                client.keep_alive = False
            else:
                self.rechunk = True
        if not client.request_complete:
            # The upstream answered before the request body was all sent: the client's
            # remaining bytes cannot be told apart from a next request, so close afterwards.
            client.keep_alive = False
            self.reusable = False
        self.body_kind = body_kind
        self.remaining = rp.content_length if body_kind == BODY_LENGTH else 0
        if body_kind == BODY_CHUNKED:
            self.chunked.reset()
        client.response_status = rp.status

        bb_append(&_out, "HTTP/1.1 ", 9)
        bb_append_uint(&_out, <unsigned long long>rp.status)
        bb_append(&_out, " ", 1)
        bb_append(&_out, base + rp.reason.off, rp.reason.len)
        bb_append(&_out, "\r\n", 2)
        for i in range(rp.nheaders):
            h = &rp.headers[i]
            hid = header_id(base + h.name.off, h.name.len)
            if hid == H_TRANSFER_ENCODING:
                if body_kind == BODY_CHUNKED and not self.dechunk:
                    pass  # relayed verbatim below, chunk framing and all
                else:
                    continue
            elif is_hop_by_hop(hid):
                continue
            elif hid == H_X_REQUEST_ID:
                have_request_id = True
            if rp.connection_tokens and hid == 0 and named_by_connection(rp, base, h):
                continue
            if cache_fields is not None and hid != H_TRANSFER_ENCODING:
                if _is_x_cache(base + h.name.off, h.name.len):
                    continue  # the upstream's own cache verdict is not ours
                if hid != H_X_REQUEST_ID:
                    cache_fields.append((PyBytes_FromStringAndSize(base + h.name.off, h.name.len),
                                         PyBytes_FromStringAndSize(base + h.value.off, h.value.len)))
            bb_append(&_out, base + h.name.off, h.name.len)
            bb_append(&_out, ": ", 2)
            bb_append(&_out, base + h.value.off, h.value.len)
            bb_append(&_out, "\r\n", 2)
        if self.rechunk:
            bb_append(&_out, "Transfer-Encoding: chunked\r\n", 28)
        if not have_request_id and client.echo_request_id and client.request_id is not None:
            bb_append(&_out, "X-Request-Id: ", 14)
            bb_append(&_out, PyBytes_AS_STRING(client.request_id), PyBytes_GET_SIZE(client.request_id))
            bb_append(&_out, "\r\n", 2)
        if cache_fields is not None:
            bb_append_str(&_out, self.begin_cache_fill(
                client, rp.status, PyBytes_FromStringAndSize(base + rp.reason.off, rp.reason.len),
                cache_fields))
        if client.response_extra is not None:
            bb_append_str(&_out, client.response_extra)
        if not client.keep_alive:
            bb_append(&_out, "Connection: close\r\n", 19)
        elif client.client_http10:
            bb_append(&_out, "Connection: keep-alive\r\n", 24)
        bb_append(&_out, "\r\n", 2)

    cdef bint write_head_filtered(self, const char* base) except -1:
        """write_head for routes whose plugins see the response head: through Python objects."""
        cdef ResponseParser rp = self.parser
        cdef ProxyClient client = self.client
        cdef int i
        cdef int hid
        cdef Header* h
        cdef list fields = []
        cdef bytes chunked_te = None
        # Framing decisions first, exactly as write_head makes them.
        bb_clear(&_out)
        self.write_head(base, False)
        bb_clear(&_out)
        for i in range(rp.nheaders):
            h = &rp.headers[i]
            hid = header_id(base + h.name.off, h.name.len)
            if hid == H_TRANSFER_ENCODING:
                if rp.body_kind == BODY_CHUNKED and not self.dechunk:
                    chunked_te = PyBytes_FromStringAndSize(base + h.value.off, h.value.len)
                continue
            if is_hop_by_hop(hid):
                continue
            if rp.connection_tokens and hid == 0 and named_by_connection(rp, base, h):
                continue
            fields.append((PyBytes_FromStringAndSize(base + h.name.off, h.name.len),
                           PyBytes_FromStringAndSize(base + h.value.off, h.value.len)))
        head = client.filter_response_head(rp.status, fields)
        if head is None:
            self.client = None
            client.upstream = None
            self.end_exchange(False)
            return False
        client.response_status = head.status
        bb_append_str(&_out, f"HTTP/1.1 {head.status} ".encode("latin-1"))
        if head.status == rp.status:
            bb_append(&_out, base + rp.reason.off, rp.reason.len)
        bb_append(&_out, "\r\n", 2)
        have_request_id = False
        cache_fields = [] if client.cache_miss is not None else None
        for name, value in head.headers.items():
            lower = name.lower()
            if lower in ("transfer-encoding", "connection"):
                continue
            if lower == "x-request-id":
                have_request_id = True
            elif cache_fields is not None:
                if lower == "x-cache":
                    continue
                cache_fields.append((name.encode("latin-1"), value.encode("latin-1")))
            bb_append_str(&_out, f"{name}: {value}\r\n".encode("latin-1"))
        if cache_fields is not None:
            reason = (PyBytes_FromStringAndSize(base + rp.reason.off, rp.reason.len)
                      if head.status == rp.status else b"")
            bb_append_str(&_out, self.begin_cache_fill(client, head.status, reason, cache_fields))
        if chunked_te is not None:
            bb_append(&_out, "Transfer-Encoding: ", 19)
            bb_append_str(&_out, chunked_te)
            bb_append(&_out, "\r\n", 2)
        if self.rechunk:
            bb_append(&_out, "Transfer-Encoding: chunked\r\n", 28)
        if not have_request_id and client.echo_request_id and client.request_id is not None:
            bb_append(&_out, "X-Request-Id: ", 14)
            bb_append_str(&_out, client.request_id)
            bb_append(&_out, "\r\n", 2)
        if client.response_extra is not None:
            bb_append_str(&_out, client.response_extra)
        if not client.keep_alive:
            bb_append(&_out, "Connection: close\r\n", 19)
        elif client.client_http10:
            bb_append(&_out, "Connection: keep-alive\r\n", 24)
        bb_append(&_out, "\r\n", 2)
        return True

    cdef bytes begin_cache_fill(self, ProxyClient client, int status, bytes reason, list fields):
        """A compiled cache miss meets its response head: store it or not; the X-Cache line."""
        miss = client.cache_miss
        fill = None
        try:
            fill = miss.begin(status, reason, fields)
        except Exception:
            _log.exception("cache: deciding whether to store a response failed")
            try:
                miss.release()
            except Exception:
                pass
        if fill is None:
            return _X_CACHE_BYPASS
        client.cache_fill = <Fill?>fill
        return _X_CACHE_MISS

    cdef void tee(self, ProxyClient client, const char* p, Py_ssize_t n, object whole):
        """Copy relayed payload bytes into the cache fill (dropped once it grows too large)."""
        if n <= 0:
            return
        if not client.cache_fill.append(whole if whole is not None else PyBytes_FromStringAndSize(p, n)):
            client.cache_fill = None  # over max_entry_size: the Fill aborted itself

    cdef void relay_body(self, const char* p, Py_ssize_t n, object whole, bint head_pending):
        """Relay body bytes p[0:n]; `whole` is the bytes object when p spans all of it."""
        cdef int64_t take
        cdef Py_ssize_t off = 0
        cdef Py_ssize_t consumed
        cdef Py_ssize_t raw_start
        cdef int rc
        cdef ChunkedDecoder dec
        if self.body_kind == BODY_LENGTH:
            take = n if n <= self.remaining else self.remaining
            if take < n:
                self.reusable = False  # bytes beyond Content-Length: not a trustworthy connection
            self.remaining -= take
            if self.remaining == 0:
                self.response_done = True
            if self.client.cache_fill is not None:
                self.tee(self.client, p, take, whole if take == n else None)
            if whole is not None and take == n and not head_pending and bb_len(&_out) == 0:
                self.client.response_bytes += n
                self.client.transport.write(whole)
            else:
                bb_append(&_out, p, take)
        elif self.body_kind == BODY_CHUNKED:
            dec = self.chunked
            raw_start = 0
            while off < n:
                rc = dec.step(p + off, n - off, &consumed)
                if rc == CHUNK_ERROR:
                    self.flush_out()
                    self.fail(UPSTREAM_BAD_RESPONSE, dec.error_message)
                    return
                if rc == CHUNK_DATA:
                    if self.dechunk:
                        bb_append(&_out, p + off + dec.data_off, dec.data_len)
                    if self.client.cache_fill is not None:
                        self.tee(self.client, p + off + dec.data_off, dec.data_len, None)
                off += consumed
                if rc == CHUNK_DONE:
                    self.response_done = True
                    if off < n:
                        self.reusable = False
                    break
                if consumed == 0 and rc != CHUNK_DATA:
                    break
            if not self.dechunk:
                if whole is not None and off == n and not head_pending and bb_len(&_out) == 0:
                    self.client.response_bytes += n
                    self.client.transport.write(whole)
                else:
                    bb_append(&_out, p + raw_start, off - raw_start)
        else:  # BODY_UNTIL_CLOSE
            if self.client.cache_fill is not None:
                self.tee(self.client, p, n, whole)
            if self.rechunk:
                bb_append_hex(&_out, <unsigned long long>n)
                bb_append(&_out, "\r\n", 2)
                bb_append(&_out, p, n)
                bb_append(&_out, "\r\n", 2)
            elif whole is not None and not head_pending and bb_len(&_out) == 0:
                self.client.response_bytes += n
                self.client.transport.write(whole)
            else:
                bb_append(&_out, p, n)
        self.flush_out()
        self.finish_if_done()

    cdef void flush_out(self):
        cdef Py_ssize_t n = bb_len(&_out)
        if n > 0 and self.client is not None:
            self.client.response_bytes += n
            self.client.transport.write(bb_take(&_out))
        else:
            bb_clear(&_out)

    cdef void finish_if_done(self):
        cdef ProxyClient client = self.client
        if not self.response_done or client is None:
            return
        if self.got_bytes and self.target.consecutive_failures:
            self.pool.balancer.report_success(self.target)
        self.client = None
        client.upstream = None
        self.end_exchange(self.reusable and client.request_complete)
        if client.cache_fill is not None:
            self.commit_fill(client)
        client.on_response_complete()

    cdef void commit_fill(self, ProxyClient client):
        """The whole body was relayed: store it (coalesced waiters are woken by the store)."""
        cdef Fill fill = client.cache_fill
        client.cache_fill = None
        try:
            fill.commit(_unix_now())
        except Exception:
            _log.exception("cache: storing a response failed")
            fill.abort()

    # -- exchange lifecycle -----------------------------------------------------------------

    cdef void start_request(self, ProxyClient client):
        self.client = client
        self.state = UP_WAIT_HEAD
        self.got_bytes = False
        self.reusable = True
        self.response_done = False
        self.read_armed = False
        self.deadline = 0.0
        bb_clear(&self.inbuf)
        if self.reading_paused:
            self.resume_reading()

    cdef void send(self, object data):
        self.transport.write(data)

    cdef void request_sent(self):
        """The whole request is on its way: from now on the upstream owes us bytes."""
        if not self.read_armed and not self.got_bytes:
            self.read_armed = True
            self.deadline = monotonic() + self.pool.read_timeout

    cdef void end_exchange(self, bint reusable):
        if not self.in_exchange:
            if not reusable:
                self.abort()
            return
        self.in_exchange = False
        self.target.in_flight -= 1
        self.pool.release(self, reusable)

    cdef void fail(self, int kind, str detail):
        """End the exchange on an upstream fault; the client decides what its user sees."""
        cdef ProxyClient client = self.client
        if kind != UPSTREAM_STALE:
            self.pool.report_failure(self.target)
        self.client = None
        if client is not None:
            client.upstream = None
        self.end_exchange(False)
        if client is not None:
            client.on_upstream_error(kind, detail)

    cdef void on_closed(self):
        cdef int previous = self.state
        cdef list conns
        self.state = UP_CLOSED
        self.pool.ticker.remove(self)
        self.transport = None
        if previous == UP_IDLE:
            conns = <list>self.pool.idle.get(self.target)
            if conns is not None and self in conns:
                conns.remove(self)
            return
        if self.client is None:
            return
        if previous == UP_BODY and self.body_kind == BODY_UNTIL_CLOSE and not self.response_done:
            if self.rechunk:
                bb_clear(&_out)
                bb_append(&_out, "0\r\n\r\n", 5)
                self.flush_out()
            self.response_done = True
            self.reusable = False
            self.finish_if_done()
            return
        if previous == UP_WAIT_HEAD and self.reused and not self.got_bytes:
            self.fail(UPSTREAM_STALE, "the keep-alive connection was closed by the upstream")
        elif previous == UP_CONNECTING:
            self.fail(UPSTREAM_CONNECT_FAILED, "the connection closed while connecting")
        else:
            self.fail(UPSTREAM_CLOSED, "the upstream closed the connection before the response was complete")

    cdef void on_deadline(self, double now):
        if self.state == UP_IDLE:
            self.abort()
        elif self.state == UP_CONNECTING:
            self.state = UP_CLOSED
            if self.connect_future is not None:
                self.connect_future.cancel()
                self.connect_future = None
            self.fail(UPSTREAM_CONNECT_TIMEOUT, "connect_timeout passed")
        elif self.state == UP_WAIT_HEAD or self.state == UP_BODY:
            if self.state == UP_WAIT_HEAD and not self.read_armed:
                return
            self.fail(UPSTREAM_READ_TIMEOUT, "read_timeout passed")

    cdef void pause_reading(self):
        # The client is not taking bytes: its send_timeout applies, our read_timeout waits.
        if not self.reading_paused and self.transport is not None:
            self.reading_paused = True
            self.transport.pause_reading()
            if self.state == UP_WAIT_HEAD or self.state == UP_BODY:
                self.deadline = 0.0

    cdef void resume_reading(self):
        if self.reading_paused and self.transport is not None:
            self.reading_paused = False
            self.transport.resume_reading()
            if self.state == UP_BODY or (self.state == UP_WAIT_HEAD and self.read_armed):
                self.deadline = monotonic() + self.pool.read_timeout

    cdef void abort(self):
        cdef int previous = self.state
        self.state = UP_CLOSED
        self.pool.ticker.remove(self)
        if self.connect_future is not None:
            self.connect_future.cancel()
            self.connect_future = None
        if self.transport is not None:
            self.transport.close()
        if previous == UP_IDLE:
            conns = self.pool.idle.get(self.target)
            if conns is not None and self in conns:
                conns.remove(self)
