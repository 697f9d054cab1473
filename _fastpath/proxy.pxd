# Upstream side of the reverse proxy: keep-alive pools per target and the upstream connection
# protocol that relays one response at a time back to the client connection.

from libc.stdint cimport int64_t

from .balance cimport Balancer, Target
from .buffer cimport ByteBuffer
from .cache cimport Fill
from .parser cimport ChunkedDecoder, ResponseParser
from .timers cimport Ticker, Watched


# Why an exchange with an upstream failed (ProxyClient.on_upstream_error)
cdef enum UpstreamError:
    UPSTREAM_NO_TARGET = 1        # every target is ejected or unhealthy
    UPSTREAM_CONNECT_FAILED = 2   # refused / unreachable: nothing was sent
    UPSTREAM_CONNECT_TIMEOUT = 3  # connect_timeout passed: nothing was sent
    UPSTREAM_STALE = 4            # a reused keep-alive connection closed before any response byte
    UPSTREAM_READ_TIMEOUT = 5     # read_timeout passed while waiting for response bytes
    UPSTREAM_BAD_RESPONSE = 6     # the response head or body framing is invalid
    UPSTREAM_CLOSED = 7           # the connection closed before the response was complete

# Reasons a client connection stops reading (a bit mask; reading resumes when all are clear)
cdef enum:
    PAUSE_UPSTREAM_FULL = 1       # the upstream cannot take request body bytes as fast
    PAUSE_BUFFER_FULL = 2         # pipelined or early body bytes are waiting in our buffer

# UpstreamPool.acquire results
cdef enum:
    ACQUIRE_READY = 0             # client.upstream holds an idle connection; send now
    ACQUIRE_PENDING = 1           # a connection is being opened; on_upstream_connected follows
    ACQUIRE_NO_TARGET = 2         # nothing to connect to


cdef class ProxyClient(Watched):
    # The downstream side of an exchange; HttpConnection (http.pyx) implements it.
    cdef object transport
    cdef UpstreamConnection upstream
    cdef bint request_is_head
    cdef bint client_http10
    cdef bint keep_alive          # the client connection stays open after this response
    cdef bint request_complete    # the whole request body has been forwarded
    cdef bytes request_id         # added to the response when the upstream sent none
    cdef bint echo_request_id     # False: keep the id off the response (request-id plugin's choice)
    cdef int response_status
    cdef int64_t response_bytes   # bytes written to the client for this response
    cdef bint wants_response_head # plugins see (and may change) the response head first
    cdef bytes response_extra     # header lines fast checks add to the response (RateLimit-*), or None
    # Response cache (None unless this request may store its response; routes without a cache
    # pay one pointer check per response head):
    # cache_miss: a compiled cache miss (plugins/cache.py EngineMiss): `.begin(status, reason,
    #   fields)` decides storability when the head arrives and returns a Fill or None;
    #   `.release()` gives up leadership of a coalesced fetch when no Fill took it over.
    # cache_fill: the store entry the relayed body is teed into (committed when the body ends).
    cdef object cache_miss
    cdef Fill cache_fill

    # The response phase: gets (status, [(name, value) bytes]) and returns an object with
    # `.status` and `.headers.items()` (str pairs), or None when the client has been answered
    # otherwise (a plugin failed) and the exchange must be dropped.
    cdef object filter_response_head(self, int status, list headers)

    cdef void pause_input(self, int reason)
    cdef void resume_input(self, int reason)
    cdef void on_upstream_connected(self, UpstreamConnection up)
    cdef void on_upstream_error(self, int kind, str detail)
    cdef void on_response_complete(self)


cdef class UpstreamPool:
    cdef readonly str name
    cdef object loop
    cdef readonly Balancer balancer
    cdef dict idle                # Target -> list[UpstreamConnection], most recently used last
    cdef int keepalive
    cdef readonly double connect_timeout
    cdef readonly double read_timeout
    cdef double keepalive_timeout
    cdef readonly int retries
    cdef Ticker ticker
    cdef int hash_source          # HASH_NONE / HASH_HEADER / HASH_COOKIE / HASH_IP
    cdef bytes hash_name          # header or cookie name for hashing
    cdef dict host_headers        # Target -> bytes for the Host header ("host:port")

    cdef int acquire(self, ProxyClient client, object hash_key, Target exclude, bint fresh)
    cdef void release(self, UpstreamConnection up, bint reusable)
    cdef void report_failure(self, Target target)


cdef class UpstreamConnection(Watched):
    cdef UpstreamPool pool
    cdef readonly Target target
    cdef object transport
    cdef ProxyClient client
    cdef ResponseParser parser
    cdef ChunkedDecoder chunked
    cdef ByteBuffer inbuf         # a response head split across reads
    cdef int state
    cdef bint reused              # served a request before this one
    cdef bint got_bytes           # any response bytes for the current request
    cdef bint reusable
    cdef int body_kind
    cdef int64_t remaining
    cdef bint dechunk             # chunked body relayed to an HTTP/1.0 client without framing
    cdef bint rechunk             # close-delimited body relayed to an HTTP/1.1 client as chunks
    cdef bint response_done
    cdef bint in_exchange         # between acquire and the end of the exchange (in_flight counted)
    cdef bint read_armed          # read_timeout applies (the request has been fully sent)
    cdef bint reading_paused
    cdef object connect_future

    cdef void start_request(self, ProxyClient client)
    cdef void send(self, object data)
    cdef void request_sent(self)
    cdef void end_exchange(self, bint reusable)
    cdef void pause_reading(self)
    cdef void resume_reading(self)
    cdef void abort(self)
    cdef void finish_if_done(self)
    cdef void commit_fill(self, ProxyClient client)
    cdef void write_head(self, const char* base, bint with_cache)
    cdef bytes begin_cache_fill(self, ProxyClient client, int status, bytes reason, list fields)
    cdef void tee(self, ProxyClient client, const char* p, Py_ssize_t n, object whole)
    cdef bint write_head_filtered(self, const char* base) except -1
    cdef void relay_body(self, const char* p, Py_ssize_t n, object whole, bint head_pending)
    cdef void flush_out(self)
    cdef void fail(self, int kind, str detail)
    cdef void on_closed(self)
