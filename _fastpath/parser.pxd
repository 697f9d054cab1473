# Public C-level surface of the HTTP/1.1 message parser (request heads, response heads,
# chunked bodies). The connection protocol in http.pyx cimports this; tests and benchmarks use
# the Python-level helpers defined in parser.pyx (parse_request, parse_response, ParseError).
#
# Conventions
# - The parser never copies: every Span is an offset/length into the buffer the caller passed.
# - Nothing here raises. Failures return a negative code and fill error_status (HTTP status to
#   answer with), error_code (short snake_case token) and error_message (one sentence for people).

from libc.stdint cimport int64_t

cdef enum:
    HEADER_CAPACITY = 256         # hard array size; the configured max_fields must be <= this

cdef struct Span:
    Py_ssize_t off
    Py_ssize_t len

cdef struct Header:
    Span name
    Span value

cdef enum BodyKind:
    BODY_NONE = 0                 # no body: no framing headers, or Content-Length: 0
    BODY_LENGTH = 1               # Content-Length > 0 (content_length holds it)
    BODY_CHUNKED = 2              # Transfer-Encoding whose final coding is chunked
    BODY_UNTIL_CLOSE = 3          # responses only: delimited by the connection closing

# Return codes of ChunkedDecoder.step
cdef enum:
    CHUNK_NEED_MORE = 0           # everything given was consumed; feed more bytes
    CHUNK_DATA = 1                # payload bytes at buf[data_off : data_off + data_len]
    CHUNK_DONE = 2                # last-chunk and trailer section consumed
    CHUNK_ERROR = -1


cdef class MessageHead:
    # Fields shared by requests and responses, valid after a successful parse_head.
    cdef Header headers[HEADER_CAPACITY]
    cdef int nheaders
    cdef int version              # 10 for HTTP/1.0, 11 for HTTP/1.1
    cdef BodyKind body_kind
    cdef int64_t content_length   # -1 when absent
    cdef bint keep_alive          # after version default + Connection: close / keep-alive
    cdef bint upgrade             # Connection: upgrade together with an Upgrade header
    cdef bint connection_tokens   # Connection lists tokens beyond close/keep-alive (hop-by-hop names)
    cdef int connection_index     # index of the (first) Connection header, -1 when absent
    cdef Py_ssize_t head_len      # bytes of the head including the final CRLF CRLF

    # Limits (set by the constructor / configure())
    cdef Py_ssize_t max_head      # bytes of the whole head; over it -> 431
    cdef int max_fields           # header field lines; over it -> 431

    # Error of the last failed parse
    cdef int error_status
    cdef str error_code
    cdef str error_message

    cdef void set_error(self, int status, str code, str message) noexcept


cdef class RequestParser(MessageHead):
    cdef Py_ssize_t max_target    # bytes of the request target; over it -> 414
    cdef Span method
    cdef Span target              # as sent (origin-form, absolute-form, authority-form or "*")
    cdef Span path                # target up to '?' (for absolute-form: the path part)
    cdef Span query               # after '?' (len 0 and off -1 when the target has no '?')
    cdef int host_index           # index of the Host header, -1 when absent
    cdef bint expect_continue     # Expect: 100-continue

    # > 0: a complete, valid head of that many bytes at buf[0:n]; 0: incomplete (and within the
    # limits so far); -1: invalid (error_* set). Leading CRLFs before a request line are
    # skipped (RFC 9112 §2.2) and counted in the returned length.
    cdef Py_ssize_t parse_head(self, const char* buf, Py_ssize_t n) noexcept


cdef class ResponseParser(MessageHead):
    cdef int status
    cdef Span reason

    # Same return convention as RequestParser.parse_head. request_was_head / request_method_connect
    # decide the framing (RFC 9112 §6.3): HEAD responses, 1xx, 204 and 304 carry no body.
    cdef Py_ssize_t parse_head(self, const char* buf, Py_ssize_t n, bint request_was_head) noexcept


cdef class ChunkedDecoder:
    cdef int state
    cdef int64_t remaining        # payload bytes left in the current chunk
    cdef Py_ssize_t trailer_bytes # trailer section size so far (bounded by max_trailer)
    cdef Py_ssize_t max_trailer
    cdef int64_t max_chunk_size
    cdef Py_ssize_t data_off      # output of the last CHUNK_DATA
    cdef Py_ssize_t data_len
    cdef int error_status
    cdef str error_code
    cdef str error_message
    # Additions (parser.pyx internals): hex digits of the current chunk-size, bytes of the current
    # chunk-size line's extensions (bounded), and where the trailer section began in the buffer
    # of the step call that saw the last-chunk (so a caller holding one buffer can read trailers).
    cdef int size_digits
    cdef Py_ssize_t ext_bytes
    cdef Py_ssize_t trailer_start

    cdef void reset(self) noexcept
    # Consume from buf[0:n]; *consumed says how many bytes belong to the chunked body so far.
    # CHUNK_DATA: payload at buf[data_off:data_off+data_len], call again with buf+*consumed.
    # CHUNK_DONE: the body ended; bytes after *consumed belong to the next message.
    cdef int step(self, const char* buf, Py_ssize_t n, Py_ssize_t* consumed) noexcept
