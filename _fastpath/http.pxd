# The client-facing HTTP/1.1 connection protocol and the per-worker gateway state it serves.

from libc.stdint cimport int64_t

from .buffer cimport ByteBuffer
from .parser cimport ChunkedDecoder, RequestParser
from .accesslog cimport LogLines
from .balance cimport Target
from .cache cimport Entry
from .proxy cimport ProxyClient, UpstreamConnection, UpstreamPool
from .router cimport Router
from .timers cimport Ticker


cdef enum ActionKind:
    ACTION_STATIC = 1
    ACTION_PROXY = 2
    ACTION_HANDLER = 3            # a Python coroutine answers (admin API, functions, ...)


cdef class RouteAction:
    cdef readonly str name
    cdef readonly int kind
    cdef int static_status
    # static: status line and fixed headers (no Date, no Connection), and the body
    cdef bytes static_head
    cdef bytes static_body
    # proxy
    cdef readonly UpstreamPool pool
    cdef bytes strip_prefix
    cdef list rewrite_parts       # bytes literals and str parameter names, in order
    cdef bint preserve_host
    # plugins and Python handlers
    cdef readonly object chain    # gateway.plugins.PluginChain, or None: the pure fast path
    cdef bint response_phase      # some plugin implements the response phase
    cdef readonly object handler  # ACTION_HANDLER: async (Request, body) -> Response
    cdef bint buffer_body         # read the whole request body before answering
    # compiled checks and the header fields they own
    cdef tuple fast_checks        # FastCheck objects, or None
    cdef tuple fallback_chains    # PluginChain per fast check, for CHECK_PYTHON
    cdef tuple drop_headers       # lower-case names (bytes) never forwarded upstream (credentials, spoofed identity)
    cdef unsigned long long drop_lengths  # bit n set: some dropped name is n bytes long


cdef class Gateway:
    cdef readonly object loop
    cdef readonly Router router
    cdef bint host_routing        # some route names a host: compute the normalized Host
    cdef Py_ssize_t max_target
    cdef Py_ssize_t max_head
    cdef int max_fields
    cdef RequestParser parser     # shared by the worker's connections (see Gateway.__init__)
    cdef int64_t max_body         # 0 = unlimited
    cdef double header_timeout
    cdef double body_timeout
    cdef double send_timeout
    cdef double keepalive_timeout
    cdef int keepalive_requests
    cdef readonly object access_log
    cdef bint log_enabled
    cdef LogLines log_lines       # the access log's C-formatted line buffer (None when off)
    cdef readonly Ticker ticker
    cdef readonly set connections
    cdef readonly bint draining
    cdef object drained
    cdef char rid_prefix[20]
    cdef unsigned long long rid_counter

    cdef bytes next_request_id(self)
    cdef void connection_closed(self, HttpConnection conn)


cdef class HttpConnection(ProxyClient):
    cdef Gateway gw
    cdef ChunkedDecoder body_decoder
    cdef ByteBuffer inbuf         # unparsed input (a partial head, or pipelined requests)
    cdef ByteBuffer pending       # request bytes waiting for the upstream connection
    cdef int state
    cdef bint busy                # a response is being produced (the next request must wait)
    cdef int body_kind
    cdef int64_t body_remaining
    cdef int64_t body_total
    cdef int64_t body_limit       # server.max_body_size, or lower when a plugin asked (0 = none)
    cdef bint discard_body        # read and drop the request body (static responses)
    cdef int paused               # PAUSE_* reasons for not reading
    cdef bint write_paused
    cdef double send_deadline     # when a client not reading our response is given up on
    cdef bytes client_ip
    cdef int served
    cdef RouteAction action
    cdef bytes upstream_request   # the whole request as sent, kept to replay on a stale connection
    cdef bint flushed_any         # some of this request has been written upstream
    cdef Py_ssize_t host_off      # where the Host value sits in the upstream head (for retries)
    cdef Py_ssize_t host_len
    cdef int attempts
    cdef object hash_key
    cdef bint waiting_upstream
    cdef double started
    cdef bint head_timer
    cdef bytes log_method
    cdef bytes log_target
    cdef str log_upstream
    cdef bytes last_host_raw
    cdef str last_host

    cdef public object consumer   # gateway.plugins.Consumer set by a fast auth check
    cdef public bytes upstream_extra  # header lines ("Name: value\r\n"...) fast checks add upstream
    cdef object chain             # this request's PluginChain: the route's, or a fast check's fallback
    cdef bint response_phase      # this request's chain has response-phase plugins
    cdef object view              # gateway.plugins.Request when the route has plugins, else None
    cdef object response_view     # gateway.plugins.ResponseHead for the response and log phases
    cdef object plugin_task       # a running async access phase or handler
    cdef bint expect_continue     # copied from the parser (shared) for use after plugins ran
    cdef bint handler_ready       # plugins passed; the handler runs once the body is complete
    cdef bint linger              # close with a lingering read (after an error answer)
    cdef bint consuming           # inside consume(): nested completions must not re-enter it
    cdef object match_params      # the matched route's path parameters (routes with fast checks)

    cdef Py_ssize_t consume(self, const char* p, Py_ssize_t n, object whole) except -1
    cdef Py_ssize_t consume_loop(self, const char* p, Py_ssize_t n, object whole) except -1
    cdef void fail_request(self, int status, str code, str message)
    cdef bint retry(self, UpstreamPool pool, bint fresh, Target exclude)
    cdef object compute_hash_key(self, const char* base, UpstreamPool pool)
    cdef Py_ssize_t handle_head(self, const char* base, Py_ssize_t head_len) except -1
    cdef Py_ssize_t feed_body(self, const char* p, Py_ssize_t n, object whole) except -1
    cdef void body_done(self)
    cdef void sink(self, const char* p, Py_ssize_t n, object whole)
    cdef void flush_pending(self)
    cdef UpstreamConnection take_upstream(self, UpstreamPool pool)
    cdef void start_proxy(self, const char* base, RouteAction action, object params)
    cdef void build_upstream_head(self, const char* base, RouteAction action, object params, object target)
    cdef void send_built(self, int status, bytes body)
    cdef void response_sent(self)
    cdef void respond_static(self, RouteAction action)
    cdef void respond_error(self, int status, str code, str message, bint close, bytes extra_headers=*)
    cdef void finish_response(self)
    cdef void log_request(self)
    cdef void end_cache_exchange(self)
    cdef void start_plugins(self, const char* base, RouteAction action, object params, str method, str path)
    cdef void build_view(self, const char* base, RouteAction action, object params, str method, str path)
    cdef void run_access_chain(self)
    cdef void plugins_finished(self, object response)
    cdef void plugin_failed(self, str phase)
    cdef void call_handler(self)
    cdef void start_proxy_from_view(self)
    cdef object hash_key_from_view(self, UpstreamPool pool)
    cdef void build_head_from_view(self, RouteAction action, Target target)
    cdef void respond_response(self, object response)
    cdef void respond_cached(self, Entry entry, double now)
    cdef void suspend_request(self, const char* base)
    cdef bint resume_request(self)
    cdef bint is_open(self)
    cdef bint logs_to_plugins(self)
    cdef void run_log_phase(self)
    cdef void close(self)
    cdef void start_linger(self)


# FastCheck.check results
cdef enum:
    CHECK_PASS = 0                # go on with the request
    CHECK_ANSWERED = 1            # the check has answered the client (401, 429, a cache hit, ...)
    CHECK_PYTHON = 2              # cannot decide alone: run this check's plugin (and later ones) in Python


cdef class FastCheck:
    # A compiled per-route check run before any Python plugin (key lookup, token bucket, cache
    # hit). It reads the request from the worker's parser (valid during the call only) and may
    # answer the client through the connection's respond_* methods. A check may also take charge
    # of the request without answering yet: suspend_request() keeps what the request needs (the
    # parser is shared), the check returns CHECK_ANSWERED, and later either answers it
    # (respond_*) or lets it go on with resume_request() (the Python chain, then the upstream;
    # checks after it in the route's list are skipped, so only the last check may suspend).
    cdef int check(self, HttpConnection conn, const char* base) except -1
