# cython: freethreading_compatible=False
"""HTTP/1.1 message parser: request heads, response heads and chunked bodies (RFC 9112).

The C surface (RequestParser, ResponseParser, ChunkedDecoder) is declared in parser.pxd and used
by the connection protocol. It parses in one pass over the caller's buffer, never allocates and
never copies: results are Spans (offset, length) into that buffer.

Strictness: wherever RFC 9112 lets a recipient either reject or "repair" a message, this parser
rejects, because a gateway that repairs a message differently from the server behind it is how
request smuggling happens. Every rejection carries an HTTP status, a stable snake_case code and a
sentence for people.

The Python-level helpers at the end (parse_request, parse_response, ...) wrap the C surface for
tests and tools; they build Python objects and are not the hot path.
"""

from libc.stdint cimport int64_t, uint64_t, INT64_MAX
from libc.string cimport memcmp, memcpy
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE

# --- byte classes -------------------------------------------------------------------------------

cdef enum:
    CR = 13
    LF = 10
    SP = 32
    HTAB = 9

cdef enum:
    C_TOKEN = 1       # tchar (RFC 9110 §5.6.2)
    C_VALUE = 2       # field-vchar / obs-text / SP / HTAB (RFC 9110 §5.5)
    C_TARGET = 4      # request-target octets: visible ASCII except '#' (no fragments on the wire)
    C_HOST = 8        # uri-host / port octets (RFC 3986: unreserved, pct, sub-delims, ':', '[', ']')
    C_SCHEME = 16     # scheme octets after the first ALPHA (RFC 3986 §3.1)
    C_QDTEXT = 32     # quoted-string text (RFC 9110 §5.6.4)
    C_DIGIT = 64

cdef unsigned char CHAR_CLASS[256]
cdef signed char HEX_VALUE[256]
cdef unsigned char LOWER[256]

# Chunk extensions are not used by anything we forward; bound one chunk-size line's extensions so
# they cannot be used to make us scan forever without progress.
cdef enum:
    MAX_CHUNK_EXTENSIONS = 4096


cdef void init_tables() noexcept:
    cdef int c
    cdef const char* tchar_punct = b"!#$%&'*+-.^_`|~"
    cdef const char* host_punct = b"-._~%!$&'()*+,;=:[]"
    for c in range(256):
        CHAR_CLASS[c] = 0
        HEX_VALUE[c] = -1
        LOWER[c] = c + 32 if 65 <= c <= 90 else c
    for c in range(256):
        if (48 <= c <= 57) or (65 <= c <= 90) or (97 <= c <= 122):
            CHAR_CLASS[c] |= C_TOKEN | C_HOST | C_SCHEME
        if 48 <= c <= 57:
            CHAR_CLASS[c] |= C_DIGIT
            HEX_VALUE[c] = c - 48
        if 65 <= c <= 70:
            HEX_VALUE[c] = c - 55
        if 97 <= c <= 102:
            HEX_VALUE[c] = c - 87
        if 0x21 <= c <= 0x7E or c >= 0x80 or c == SP or c == HTAB:
            CHAR_CLASS[c] |= C_VALUE
        if 0x21 <= c <= 0x7E and c != 35:
            CHAR_CLASS[c] |= C_TARGET
        if c == HTAB or c == SP or c == 0x21 or (0x23 <= c <= 0x5B) or (0x5D <= c <= 0x7E) or c >= 0x80:
            CHAR_CLASS[c] |= C_QDTEXT
    for c in range(15):
        CHAR_CLASS[<unsigned char>tchar_punct[c]] |= C_TOKEN
    for c in range(19):
        CHAR_CLASS[<unsigned char>host_punct[c]] |= C_HOST
    CHAR_CLASS[43] |= C_SCHEME   # +
    CHAR_CLASS[45] |= C_SCHEME   # -
    CHAR_CLASS[46] |= C_SCHEME   # .


init_tables()


cdef inline bint is_token(unsigned char c) noexcept:
    return CHAR_CLASS[c] & C_TOKEN


cdef inline bint is_ows(unsigned char c) noexcept:
    return c == SP or c == HTAB


cdef inline bint ieq(const unsigned char* b, Py_ssize_t length, const char* lower_literal,
                     Py_ssize_t literal_len) noexcept:
    """Case-insensitive compare of b[0:length] with an all-lowercase ASCII literal."""
    cdef Py_ssize_t i
    if length != literal_len:
        return False
    for i in range(length):
        if LOWER[b[i]] != <unsigned char>lower_literal[i]:
            return False
    return True


cdef inline Py_ssize_t skip_value_bytes(const unsigned char* b, Py_ssize_t p, Py_ssize_t n) noexcept:
    """Index of the first byte at or after p that is not a field-value byte (or n).

    Eight bytes at a time while none of them is a control byte (< 0x20, which includes HTAB and
    sends that word to the byte loop) or DEL: long values such as Cookie and User-Agent dominate
    a head. Bytes >= 0x80 are obs-text and pass.
    """
    cdef uint64_t x, y
    while p + 8 <= n:
        memcpy(&x, b + p, 8)
        y = x ^ 0x7F7F7F7F7F7F7F7FULL
        if ((x - 0x2020202020202020ULL) & ~x | (y - 0x0101010101010101ULL) & ~y) & 0x8080808080808080ULL:
            break
        p += 8
    while p < n and CHAR_CLASS[b[p]] & C_VALUE:
        p += 1
    return p


cdef inline Py_ssize_t skip_target_bytes(const unsigned char* b, Py_ssize_t p, Py_ssize_t end) noexcept:
    """Index of the first byte at or after p that is not a request-target byte (or end).

    Eight at a time while all are in 0x21-0x7E and none is '#'.
    """
    cdef uint64_t x, d, h
    while p + 8 <= end:
        memcpy(&x, b + p, 8)
        d = x ^ 0x7F7F7F7F7F7F7F7FULL
        h = x ^ 0x2323232323232323ULL
        if (x | (x - 0x2121212121212121ULL) & ~x | (d - 0x0101010101010101ULL) & ~d
                | (h - 0x0101010101010101ULL) & ~h) & 0x8080808080808080ULL:
            break
        p += 8
    while p < end and CHAR_CLASS[b[p]] & C_TARGET:
        p += 1
    return p


# --- header field semantics ---------------------------------------------------------------------

cdef struct FieldScan:
    # What the framing-relevant fields said, collected while scanning and judged at the end.
    int host_count
    int host_index
    int content_length_count
    int64_t content_length
    int te_count             # Transfer-Encoding field lines
    int chunked_count        # "chunked" elements across all of them
    bint final_chunked       # the last coding seen is chunked
    bint other_coding        # some coding other than chunked was listed
    bint conn_close
    bint conn_keep_alive
    bint conn_upgrade
    bint conn_other
    int connection_index
    bint upgrade_header
    bint expect_continue


cdef inline void scan_reset(FieldScan* s) noexcept:
    s.host_count = 0
    s.host_index = -1
    s.content_length_count = 0
    s.content_length = -1
    s.te_count = 0
    s.chunked_count = 0
    s.final_chunked = False
    s.other_coding = False
    s.conn_close = False
    s.conn_keep_alive = False
    s.conn_upgrade = False
    s.conn_other = False
    s.connection_index = -1
    s.upgrade_header = False
    s.expect_continue = False


cdef int parse_content_length(MessageHead h, const unsigned char* v, Py_ssize_t vlen,
                              FieldScan* s) noexcept:
    # RFC 9112 §6.3 (5): anything but one 1*DIGIT value is unrecoverable framing. A list such as
    # "5, 5" is allowed to be repaired by the RFC; we reject it, as we do an exact duplicate line,
    # because the server behind us might pick a different element.
    cdef Py_ssize_t i
    cdef int64_t value = 0
    cdef int d
    s.content_length_count += 1
    if s.content_length_count > 1:
        h.set_error(400, "duplicate_content_length", "Content-Length must appear only once")
        return -1
    if vlen == 0:
        h.set_error(400, "invalid_content_length", "Content-Length must be a non-negative decimal integer")
        return -1
    for i in range(vlen):
        if not (CHAR_CLASS[v[i]] & C_DIGIT):
            h.set_error(400, "invalid_content_length", "Content-Length must be a non-negative decimal integer")
            return -1
        d = v[i] - 48
        if value > (INT64_MAX - d) // 10:
            h.set_error(400, "invalid_content_length", "Content-Length is too large")
            return -1
        value = value * 10 + d
    s.content_length = value
    return 0


cdef int parse_transfer_encoding(MessageHead h, const unsigned char* v, Py_ssize_t vlen,
                                 FieldScan* s) noexcept:
    # A comma list of codings across all Transfer-Encoding lines (RFC 9110 §5.3). Elements must be
    # bare tokens: an empty element or a parameter is not something a smuggler should get to vary.
    cdef Py_ssize_t i = 0, start, end
    s.te_count += 1
    while True:
        while i < vlen and is_ows(v[i]):
            i += 1
        start = i
        while i < vlen and is_token(v[i]):
            i += 1
        end = i
        while i < vlen and is_ows(v[i]):
            i += 1
        if end == start or (i < vlen and v[i] != 44):
            h.set_error(400, "invalid_transfer_encoding",
                        "Transfer-Encoding must be a comma-separated list of transfer codings")
            return -1
        if ieq(v + start, end - start, b"chunked", 7):
            s.chunked_count += 1
            s.final_chunked = True
        else:
            s.other_coding = True
            s.final_chunked = False
        if i >= vlen:
            return 0
        i += 1   # the comma


cdef void parse_connection(const unsigned char* v, Py_ssize_t vlen, FieldScan* s) noexcept:
    # Connection options (RFC 9110 §7.6.1). Anything besides close / keep-alive names a hop-by-hop
    # field the proxy must drop, so only its presence is recorded here.
    cdef Py_ssize_t i = 0, start, end
    while i <= vlen:
        while i < vlen and is_ows(v[i]):
            i += 1
        start = i
        while i < vlen and v[i] != 44:
            i += 1
        end = i
        while end > start and is_ows(v[end - 1]):
            end -= 1
        if end > start:
            if ieq(v + start, end - start, b"close", 5):
                s.conn_close = True
            elif ieq(v + start, end - start, b"keep-alive", 10):
                s.conn_keep_alive = True
            elif ieq(v + start, end - start, b"upgrade", 7):
                s.conn_upgrade = True
                s.conn_other = True
            else:
                s.conn_other = True
        i += 1


cdef bint valid_host(const unsigned char* v, Py_ssize_t vlen) noexcept:
    # RFC 9112 §3.2: a Host with an invalid value is a 400. uri-host [":" port] octets only; an
    # empty value is allowed (a target without an authority).
    cdef Py_ssize_t i
    for i in range(vlen):
        if not (CHAR_CLASS[v[i]] & C_HOST):
            return False
    return True


cdef int classify_field(MessageHead h, const unsigned char* b, Header* f, int index, FieldScan* s,
                        bint is_request) noexcept:
    """Record what a framing/connection-relevant field says. 0 ok, -1 error."""
    cdef const unsigned char* name = b + f.name.off
    cdef const unsigned char* value = b + f.value.off
    cdef Py_ssize_t nlen = f.name.len
    cdef unsigned char first = LOWER[name[0]]
    if nlen == 4 and first == 104 and ieq(name, 4, b"host", 4):   # h
        s.host_count += 1
        if s.host_count == 1:
            s.host_index = index
        if is_request and not valid_host(value, f.value.len):
            h.set_error(400, "invalid_host", "Host must be a valid host name with an optional port")
            return -1
    elif nlen == 14 and first == 99 and ieq(name, 14, b"content-length", 14):   # c
        return parse_content_length(h, value, f.value.len, s)
    elif nlen == 17 and first == 116 and ieq(name, 17, b"transfer-encoding", 17):   # t
        return parse_transfer_encoding(h, value, f.value.len, s)
    elif nlen == 10 and first == 99 and ieq(name, 10, b"connection", 10):
        if s.connection_index < 0:
            s.connection_index = index
        parse_connection(value, f.value.len, s)
    elif nlen == 7 and first == 117 and ieq(name, 7, b"upgrade", 7):   # u
        s.upgrade_header = True
    elif nlen == 6 and first == 101 and ieq(name, 6, b"expect", 6):   # e
        if ieq(value, f.value.len, b"100-continue", 12):
            s.expect_continue = True
    return 0


# --- the field section, shared by requests and responses ----------------------------------------

cdef Py_ssize_t incomplete(MessageHead h, Py_ssize_t n) noexcept:
    # Everything seen so far is valid but the head has not ended: enforce the size limit on what
    # we have, so a client trickling an endless head is refused instead of buffered forever.
    if n > h.max_head:
        h.set_error(431, "header_fields_too_large", "The header section is too large")
        return -1
    return 0


cdef Py_ssize_t scan_fields(MessageHead h, const unsigned char* b, Py_ssize_t p, Py_ssize_t n,
                            FieldScan* s, bint is_request) noexcept:
    """Parse field lines from b[p:] up to and including the empty line.

    Returns the head length (> 0), 0 when incomplete (limits enforced), -1 on error.
    """
    cdef Py_ssize_t start, vstart, vend
    cdef unsigned char c
    cdef int r
    cdef Header* f
    while True:
        if p >= n:
            return incomplete(h, n)
        c = b[p]
        if c == CR:
            if p + 1 >= n:
                return incomplete(h, n)
            if b[p + 1] != LF:
                h.set_error(400, "bare_cr", "A CR must be followed by LF")
                return -1
            p += 2
            if p > h.max_head:
                h.set_error(431, "header_fields_too_large", "The header section is too large")
                return -1
            return p
        if c == LF:
            h.set_error(400, "bare_lf", "Lines must end in CRLF, not a bare LF")
            return -1
        if c == SP or c == HTAB:
            # RFC 9112 §5.2 obs-fold, and §2.2 whitespace before the first field line.
            h.set_error(400, "obs_fold", "A header line must not start with whitespace (obsolete line folding)")
            return -1
        if h.nheaders >= h.max_fields:
            h.set_error(431, "header_fields_too_large", "Too many header fields")
            return -1
        # field-name
        start = p
        while p < n and CHAR_CLASS[b[p]] & C_TOKEN:
            p += 1
        if p >= n:
            return incomplete(h, n)
        if b[p] != 58 or p == start:
            if b[p] == SP or b[p] == HTAB:
                h.set_error(400, "invalid_header_name",
                            "Whitespace between a header field name and the colon is not allowed")
            else:
                h.set_error(400, "invalid_header_name", "A header field name must be a non-empty token")
            return -1
        f = &h.headers[h.nheaders]
        f.name.off = start
        f.name.len = p - start
        p += 1
        # field-value: leading and trailing OWS are not part of it
        while p < n and (b[p] == SP or b[p] == HTAB):
            p += 1
        vstart = p
        p = skip_value_bytes(b, p, n)
        r = check_line_end(h, b, p, n, "invalid_header_value",
                           "A header field value contains a control character")
        if r <= 0:
            return incomplete(h, n) if r == 0 else -1
        vend = p
        while vend > vstart and (b[vend - 1] == SP or b[vend - 1] == HTAB):
            vend -= 1
        f.value.off = vstart
        f.value.len = vend - vstart
        p += 2
        if p < n and (b[p] == SP or b[p] == HTAB):
            # Report a folded value as folding, before judging the unfolded part of it.
            h.set_error(400, "obs_fold", "A header line must not start with whitespace (obsolete line folding)")
            return -1
        if classify_field(h, b, f, h.nheaders, s, is_request) < 0:
            return -1
        h.nheaders += 1


cdef void reset_head(MessageHead h) noexcept:
    h.nheaders = 0
    h.version = 0
    h.body_kind = BODY_NONE
    h.content_length = -1
    h.keep_alive = False
    h.upgrade = False
    h.connection_tokens = False
    h.connection_index = -1
    h.head_len = 0
    h.error_status = 0


cdef Py_ssize_t scan_version(MessageHead h, const unsigned char* b, Py_ssize_t p, Py_ssize_t n,
                             int* version) noexcept:
    """Match "HTTP/" DIGIT "." DIGIT at b[p:]. Returns 8 (matched), 0 (incomplete), -1 (error).

    version receives major*10+minor; checking which versions are supported is the caller's job.
    """
    cdef const char* name = b"HTTP/"
    cdef Py_ssize_t i, avail = n - p
    for i in range(8 if avail >= 8 else avail):
        if i < 5:
            if b[p + i] != <unsigned char>name[i]:
                h.set_error(400, "invalid_version", "The HTTP version must look like HTTP/1.1")
                return -1
        elif i == 6:
            if b[p + i] != 46:
                h.set_error(400, "invalid_version", "The HTTP version must look like HTTP/1.1")
                return -1
        elif not (CHAR_CLASS[b[p + i]] & C_DIGIT):
            h.set_error(400, "invalid_version", "The HTTP version must look like HTTP/1.1")
            return -1
    if avail < 8:
        return 0
    version[0] = (b[p + 5] - 48) * 10 + (b[p + 7] - 48)
    return 8


cdef int check_line_end(MessageHead h, const unsigned char* b, Py_ssize_t p, Py_ssize_t n,
                        str stray_code, str stray_message) noexcept:
    """CRLF at b[p:]: 2 matched, 0 incomplete, -1 error. A byte there that is neither CR nor a
    bare LF is the caller's error (stray_code, stray_message): what it means depends on the line."""
    if p >= n:
        return 0
    if b[p] != CR:
        if b[p] == LF:
            h.set_error(400, "bare_lf", "Lines must end in CRLF, not a bare LF")
        else:
            h.set_error(400, stray_code, stray_message)
        return -1
    if p + 1 >= n:
        return 0
    if b[p + 1] != LF:
        h.set_error(400, "bare_cr", "A CR must be followed by LF")
        return -1
    return 2


cdef class MessageHead:
    cdef void set_error(self, int status, str code, str message) noexcept:
        self.error_status = status
        self.error_code = code
        self.error_message = message


# --- requests -----------------------------------------------------------------------------------

cdef int split_target(RequestParser self, const unsigned char* b) noexcept:
    """Classify the target form (RFC 9112 §3.2) and set path/query spans."""
    cdef Py_ssize_t off = self.target.off, tlen = self.target.len, i, auth_start, path_start
    cdef const unsigned char* t = b + off
    cdef bint is_connect = self.method.len == 7 and memcmp(b + self.method.off, b"CONNECT", 7) == 0
    cdef bint is_options = self.method.len == 7 and memcmp(b + self.method.off, b"OPTIONS", 7) == 0
    if is_connect:
        return split_authority_form(self, t, tlen)
    if t[0] == 47:   # '/': origin-form
        path_start = 0
    elif tlen == 1 and t[0] == 42:   # '*': asterisk-form
        if not is_options:
            self.set_error(400, "invalid_target", "The asterisk-form target '*' is only allowed with OPTIONS")
            return -1
        self.path = self.target
        return 0
    else:
        # absolute-form: scheme "://" authority path-abempty [ "?" query ]
        if not 97 <= LOWER[t[0]] <= 122:   # scheme starts with ALPHA
            self.set_error(400, "invalid_target", "The request target must start with '/' or be an absolute URI")
            return -1
        i = 1
        while i < tlen and CHAR_CLASS[t[i]] & C_SCHEME:
            i += 1
        if i + 3 > tlen or t[i] != 58 or t[i + 1] != 47 or t[i + 2] != 47:
            self.set_error(400, "invalid_target", "The request target must start with '/' or be an absolute URI")
            return -1
        auth_start = i + 3
        i = auth_start
        while i < tlen and t[i] != 47 and t[i] != 63:
            if not (CHAR_CLASS[t[i]] & C_HOST) or t[i] == 64:   # no userinfo '@' (RFC 9110 §4.2.4)
                self.set_error(400, "invalid_target", "The authority of the request target is invalid")
                return -1
            i += 1
        if i == auth_start:
            self.set_error(400, "invalid_target", "An absolute request target must name a host")
            return -1
        path_start = i
    # path up to '?', query after it; an absolute-form without a path has an empty path span,
    # which means "/" (RFC 9112 §3.2.2).
    i = path_start
    while i < tlen and t[i] != 63:
        i += 1
    self.path.off = off + path_start
    self.path.len = i - path_start
    if i < tlen:
        self.query.off = off + i + 1
        self.query.len = tlen - i - 1
    return 0

cdef int split_authority_form(RequestParser self, const unsigned char* t, Py_ssize_t tlen) noexcept:
    # CONNECT host:port (RFC 9112 §3.2.3); the port is mandatory.
    cdef Py_ssize_t i, colon = -1
    for i in range(tlen):
        if not (CHAR_CLASS[t[i]] & C_HOST):
            colon = -2
            break
        if t[i] == 58:
            colon = i
    if colon <= 0 or colon == tlen - 1:
        self.set_error(400, "invalid_target", "CONNECT needs a request target of the form host:port")
        return -1
    for i in range(colon + 1, tlen):
        if not (CHAR_CLASS[t[i]] & C_DIGIT):
            self.set_error(400, "invalid_target", "CONNECT needs a request target of the form host:port")
            return -1
    self.path = self.target
    return 0

cdef int judge_request(RequestParser self, FieldScan* s) noexcept:
    # RFC 9112 §3.2: exactly one Host in HTTP/1.1 (and never more than one).
    if s.host_count > 1:
        self.set_error(400, "duplicate_host", "Host must appear only once")
        return -1
    if s.host_count == 0 and self.version == 11:
        self.set_error(400, "missing_host", "An HTTP/1.1 request must have a Host header")
        return -1
    self.host_index = s.host_index
    if s.te_count:
        # RFC 9112 §6.1: TE in HTTP/1.0 means faulty framing; CL with TE is a smuggling attempt.
        if self.version == 10:
            self.set_error(400, "transfer_encoding_in_http10",
                           "Transfer-Encoding is not allowed in an HTTP/1.0 request")
            return -1
        if s.content_length_count:
            self.set_error(400, "content_length_with_transfer_encoding",
                           "Content-Length and Transfer-Encoding must not both be present")
            return -1
        if not s.final_chunked:
            self.set_error(400, "unsupported_transfer_encoding",
                           "The final transfer coding of a request must be chunked")
            return -1
        if s.chunked_count > 1:
            self.set_error(400, "duplicate_chunked", "The chunked transfer coding must be applied only once")
            return -1
        if s.other_coding:
            self.set_error(501, "not_implemented", "Only the chunked transfer coding is supported")
            return -1
        self.body_kind = BODY_CHUNKED
    elif s.content_length_count:
        self.content_length = s.content_length
        self.body_kind = BODY_LENGTH if s.content_length > 0 else BODY_NONE
    set_connection(self, s)
    # RFC 9110 §10.1.1: a 100-continue expectation in an HTTP/1.0 request is ignored.
    self.expect_continue = s.expect_continue and self.version == 11
    return 0


cdef class RequestParser(MessageHead):
    """Parses request heads (RFC 9112 §2-3, §5-7). Limits are fixed at construction."""

    def __init__(self, Py_ssize_t max_target=8192, Py_ssize_t max_head=16384, int max_fields=100):
        if max_target < 1 or max_head < 1:
            raise ValueError("max_target and max_head must be positive")
        if not 1 <= max_fields <= HEADER_CAPACITY:
            raise ValueError(f"max_fields must be between 1 and {HEADER_CAPACITY}")
        self.max_target = max_target
        self.max_head = max_head
        self.max_fields = max_fields
        self.error_code = ""
        self.error_message = ""
        self.query.off = -1

    cdef Py_ssize_t parse_head(self, const char* buf, Py_ssize_t n) noexcept:
        cdef const unsigned char* b = <const unsigned char*>buf
        cdef Py_ssize_t p = 0, start, end, r
        cdef int version = 0
        cdef FieldScan s
        reset_head(self)
        self.host_index = -1
        self.expect_continue = False
        self.query.off = -1
        self.query.len = 0

        # RFC 9112 §2.2: ignore empty lines before the request line (bounded by max_head).
        while p + 1 < n and b[p] == CR and b[p + 1] == LF:
            p += 2
        if p >= n or (p + 1 == n and b[p] == CR):
            return incomplete(self, n)

        # method SP
        start = p
        while p < n and CHAR_CLASS[b[p]] & C_TOKEN:
            p += 1
        if p >= n:
            return incomplete(self, n)
        if b[p] != SP or p == start:
            self.set_error(400, "bad_request_line",
                           "The request line must be: method SP request-target SP HTTP-version CRLF")
            return -1
        self.method.off = start
        self.method.len = p - start
        p += 1

        # request-target SP, with the 414 limit applied even before the target has ended
        start = p
        end = n if n - p <= self.max_target else p + self.max_target + 1
        p = skip_target_bytes(b, p, end)
        if p - start > self.max_target:
            self.set_error(414, "uri_too_long", "The request target is too long")
            return -1
        if p >= n:
            return incomplete(self, n)
        if b[p] != SP or p == start:
            if b[p] == SP or b[p] == CR or b[p] == LF:
                self.set_error(400, "bad_request_line",
                               "The request line must be: method SP request-target SP HTTP-version CRLF")
            else:
                self.set_error(400, "invalid_target", "The request target contains a byte that is not allowed")
            return -1
        self.target.off = start
        self.target.len = p - start
        p += 1

        # HTTP-version CRLF
        r = scan_version(self, b, p, n, &version)
        if r <= 0:
            return incomplete(self, n) if r == 0 else -1
        p += 8
        r = check_line_end(self, b, p, n, "bad_request_line",
                           "The start line has unexpected bytes after the version")
        if r <= 0:
            return incomplete(self, n) if r == 0 else -1
        p += 2
        if version != 10 and version != 11:
            self.set_error(505, "http_version_not_supported", "Only HTTP/1.0 and HTTP/1.1 are supported")
            return -1
        self.version = version
        if split_target(self, b) < 0:
            return -1

        scan_reset(&s)
        r = scan_fields(self, b, p, n, &s, True)
        if r <= 0:
            return r
        if judge_request(self, &s) < 0:
            return -1
        self.head_len = r
        return r





cdef void set_connection(MessageHead h, FieldScan* s) noexcept:
    h.connection_index = s.connection_index
    h.connection_tokens = s.conn_other
    h.upgrade = s.conn_upgrade and s.upgrade_header
    if s.conn_close:
        h.keep_alive = False
    elif h.version == 11:
        h.keep_alive = True
    else:
        h.keep_alive = s.conn_keep_alive


# --- responses ----------------------------------------------------------------------------------

cdef Py_ssize_t parse_response_head(ResponseParser self, const unsigned char* b, Py_ssize_t n,
                                    bint request_was_head) noexcept:
    cdef Py_ssize_t p = 0, r, start
    cdef int version = 0, status
    cdef FieldScan s
    reset_head(self)
    self.status = 0
    self.reason.off = 0
    self.reason.len = 0

    r = scan_version(self, b, 0, n, &version)
    if r <= 0:
        return incomplete(self, n) if r == 0 else -1
    if version != 10 and version != 11:
        self.set_error(502, "http_version_not_supported", "Only HTTP/1.0 and HTTP/1.1 responses are supported")
        return -1
    self.version = version
    p = 8
    # SP 3DIGIT
    if n - p < 4:
        if n > p and b[p] != SP:
            self.set_error(400, "bad_status_line", "The status line must be: HTTP-version SP status SP reason")
            return -1
        for r in range(p + 1, n):
            if not (CHAR_CLASS[b[r]] & C_DIGIT):
                self.set_error(400, "bad_status_line", "The status code must be three digits")
                return -1
        return incomplete(self, n)
    if b[p] != SP:
        self.set_error(400, "bad_status_line", "The status line must be: HTTP-version SP status SP reason")
        return -1
    if not (CHAR_CLASS[b[p + 1]] & C_DIGIT and CHAR_CLASS[b[p + 2]] & C_DIGIT
            and CHAR_CLASS[b[p + 3]] & C_DIGIT) or b[p + 1] == 48:
        self.set_error(400, "bad_status_line", "The status code must be three digits from 100 to 999")
        return -1
    status = (b[p + 1] - 48) * 100 + (b[p + 2] - 48) * 10 + (b[p + 3] - 48)
    p += 4
    # [ SP reason-phrase ] CRLF; a missing reason is tolerated with or without the space.
    if p < n and b[p] == SP:
        p += 1
    elif p < n and b[p] != CR:
        if b[p] == LF:
            self.set_error(400, "bare_lf", "Lines must end in CRLF, not a bare LF")
        else:
            self.set_error(400, "bad_status_line", "The status code must be followed by SP or CRLF")
        return -1
    start = p
    while p < n and CHAR_CLASS[b[p]] & C_VALUE:
        p += 1
    r = check_line_end(self, b, p, n, "bad_status_line", "The reason phrase contains a control character")
    if r <= 0:
        return incomplete(self, n) if r == 0 else -1
    self.status = status
    self.reason.off = start
    self.reason.len = p - start
    p += 2

    scan_reset(&s)
    r = scan_fields(self, b, p, n, &s, False)
    if r <= 0:
        return r
    if judge_response(self, &s, request_was_head) < 0:
        return -1
    self.head_len = r
    return r

cdef int judge_response(ResponseParser self, FieldScan* s, bint request_was_head) noexcept:
    # Framing errors are errors whatever the status: they show the upstream is confused.
    if s.te_count and s.content_length_count:
        self.set_error(502, "content_length_with_transfer_encoding",
                       "Content-Length and Transfer-Encoding must not both be present")
        return -1
    if s.te_count and self.version == 10:
        self.set_error(502, "transfer_encoding_in_http10",
                       "Transfer-Encoding is not allowed in an HTTP/1.0 response")
        return -1
    if s.chunked_count > 1:
        self.set_error(502, "duplicate_chunked", "The chunked transfer coding must be applied only once")
        return -1
    set_connection(self, s)
    if request_was_head or self.status < 200 or self.status == 204 or self.status == 304:
        self.body_kind = BODY_NONE
        if s.content_length_count:
            self.content_length = s.content_length
    elif s.te_count:
        self.body_kind = BODY_CHUNKED if s.final_chunked else BODY_UNTIL_CLOSE
    elif s.content_length_count:
        self.content_length = s.content_length
        self.body_kind = BODY_LENGTH if s.content_length > 0 else BODY_NONE
    else:
        self.body_kind = BODY_UNTIL_CLOSE
    if self.body_kind == BODY_UNTIL_CLOSE:
        self.keep_alive = False
    return 0


cdef class ResponseParser(MessageHead):
    """Parses response heads and decides their framing (RFC 9112 §4, §6.3).

    Every error is reported with status 502: a gateway answers a broken upstream response so.
    """

    def __init__(self, Py_ssize_t max_head=65536, int max_fields=100):
        if max_head < 1:
            raise ValueError("max_head must be positive")
        if not 1 <= max_fields <= HEADER_CAPACITY:
            raise ValueError(f"max_fields must be between 1 and {HEADER_CAPACITY}")
        self.max_head = max_head
        self.max_fields = max_fields
        self.error_code = ""
        self.error_message = ""

    cdef Py_ssize_t parse_head(self, const char* buf, Py_ssize_t n, bint request_was_head) noexcept:
        cdef Py_ssize_t r = parse_response_head(self, <const unsigned char*>buf, n, request_was_head)
        if r < 0:
            self.error_status = 502
        return r




# --- chunked bodies -----------------------------------------------------------------------------

cdef enum ChunkState:
    S_SIZE_FIRST = 0       # first hex digit of chunk-size
    S_SIZE                 # more hex digits, ';' or CR
    S_EXT_NAME_START       # after ';'
    S_EXT_NAME
    S_EXT_VALUE_START      # after '='
    S_EXT_VALUE_TOKEN
    S_EXT_QUOTED
    S_EXT_QUOTED_ESCAPE
    S_EXT_AFTER_QUOTE      # right after a closing quote: ';' or CR
    S_SIZE_LF
    S_DATA
    S_DATA_CR
    S_DATA_LF
    S_TRAILER_START
    S_TRAILER_NAME
    S_TRAILER_VALUE
    S_TRAILER_LF
    S_FINAL_LF
    S_DONE
    S_ERROR


cdef int chunk_fail(ChunkedDecoder self, int status, str code, str message) noexcept:
    self.state = S_ERROR
    self.error_status = status
    self.error_code = code
    self.error_message = message
    return CHUNK_ERROR


cdef class ChunkedDecoder:
    """Incremental decoder of the chunked transfer coding (RFC 9112 §7.1).

    It keeps only a small state between calls, so input may be split at any byte; payload is
    returned as spans into the buffer of the current step call.

    Whitespace in a chunk-size line (the BWS that RFC 9112 §7.1.1 lets a recipient remove) is
    refused outside quoted strings: parsers disagree about "5 ;x" and "5 ", which makes it a
    smuggling lever, and llhttp refuses it too.
    """

    def __init__(self, Py_ssize_t max_trailer=16384, int64_t max_chunk_size=4611686018427387904):
        if max_trailer < 2 or max_chunk_size < 1:
            raise ValueError("max_trailer must be >= 2 and max_chunk_size >= 1")
        self.max_trailer = max_trailer
        self.max_chunk_size = max_chunk_size
        self.reset()

    cdef void reset(self) noexcept:
        self.state = S_SIZE_FIRST
        self.remaining = 0
        self.trailer_bytes = 0
        self.data_off = 0
        self.data_len = 0
        self.error_status = 0
        self.error_code = ""
        self.error_message = ""
        self.size_digits = 0
        self.ext_bytes = 0
        self.trailer_start = -1


    cdef int step(self, const char* buf, Py_ssize_t n, Py_ssize_t* consumed) noexcept:
        cdef const unsigned char* b = <const unsigned char*>buf
        cdef Py_ssize_t p = 0, take
        cdef unsigned char c, cls
        cdef int d
        cdef int st = self.state
        consumed[0] = 0
        if st == S_DONE:
            return CHUNK_DONE
        if st == S_ERROR:
            return CHUNK_ERROR
        while p < n:
            if st == S_DATA:
                take = n - p
                if take > self.remaining:
                    take = <Py_ssize_t>self.remaining
                self.data_off = p
                self.data_len = take
                self.remaining -= take
                p += take
                self.state = S_DATA_CR if self.remaining == 0 else S_DATA
                consumed[0] = p
                return CHUNK_DATA
            c = b[p]
            cls = CHAR_CLASS[c]
            if st >= S_EXT_NAME_START and st <= S_EXT_AFTER_QUOTE:
                self.ext_bytes += 1
                if self.ext_bytes > MAX_CHUNK_EXTENSIONS:
                    return chunk_fail(self, 400, "chunk_extensions_too_long", "Chunk extensions are too long")
            elif st >= S_TRAILER_START and st <= S_FINAL_LF:
                self.trailer_bytes += 1
                if self.trailer_bytes > self.max_trailer:
                    return chunk_fail(self, 431, "trailer_fields_too_large", "The trailer section is too large")

            if st == S_SIZE_FIRST or st == S_SIZE:
                d = HEX_VALUE[c]
                if d >= 0:
                    self.size_digits += 1
                    if self.size_digits > 16 or d > self.max_chunk_size \
                            or self.remaining > (self.max_chunk_size - d) >> 4:
                        return chunk_fail(self, 400, "chunk_size_too_large", "The chunk size is too large")
                    self.remaining = self.remaining * 16 + d
                    st = S_SIZE
                elif st == S_SIZE_FIRST:
                    return chunk_fail(self, 400, "invalid_chunk_size", "A chunk must start with a hexadecimal size")
                elif c == CR:
                    st = S_SIZE_LF
                elif c == 59:   # ';'
                    self.ext_bytes = 0
                    st = S_EXT_NAME_START
                elif c == LF:
                    return chunk_fail(self, 400, "bare_lf", "Chunk lines must end in CRLF, not a bare LF")
                else:
                    return chunk_fail(self, 400, "invalid_chunk_size", "The chunk size contains a byte that is not a hex digit")
            elif st == S_EXT_NAME_START:
                if cls & C_TOKEN:
                    st = S_EXT_NAME
                else:
                    return chunk_fail(self, 400, "invalid_chunk_extension", "A chunk extension name must be a token")
            elif st == S_EXT_NAME:
                if cls & C_TOKEN:
                    pass
                elif c == 61:   # '='
                    st = S_EXT_VALUE_START
                elif c == 59:
                    st = S_EXT_NAME_START
                elif c == CR:
                    st = S_SIZE_LF
                else:
                    return chunk_fail(self, 400, "invalid_chunk_extension", "A chunk extension contains an invalid byte")
            elif st == S_EXT_VALUE_START:
                if cls & C_TOKEN:
                    st = S_EXT_VALUE_TOKEN
                elif c == 34:   # '"'
                    st = S_EXT_QUOTED
                else:
                    return chunk_fail(self, 400, "invalid_chunk_extension",
                                     "A chunk extension value must be a token or a quoted string")
            elif st == S_EXT_VALUE_TOKEN:
                if cls & C_TOKEN:
                    pass
                elif c == 59:
                    st = S_EXT_NAME_START
                elif c == CR:
                    st = S_SIZE_LF
                else:
                    return chunk_fail(self, 400, "invalid_chunk_extension", "A chunk extension contains an invalid byte")
            elif st == S_EXT_QUOTED:
                if c == 34:
                    st = S_EXT_AFTER_QUOTE
                elif c == 92:   # backslash
                    st = S_EXT_QUOTED_ESCAPE
                elif not (cls & C_QDTEXT):
                    return chunk_fail(self, 400, "invalid_chunk_extension",
                                     "A quoted chunk extension value contains a control character")
            elif st == S_EXT_QUOTED_ESCAPE:
                if not (cls & C_VALUE):
                    return chunk_fail(self, 400, "invalid_chunk_extension",
                                     "A quoted chunk extension value contains a control character")
                st = S_EXT_QUOTED
            elif st == S_EXT_AFTER_QUOTE:
                if c == 59:
                    st = S_EXT_NAME_START
                elif c == CR:
                    st = S_SIZE_LF
                else:
                    return chunk_fail(self, 400, "invalid_chunk_extension", "A chunk extension contains an invalid byte")
            elif st == S_SIZE_LF:
                if c != LF:
                    return chunk_fail(self, 400, "bare_cr", "Chunk lines must end in CRLF")
                if self.size_digits == 0:
                    return chunk_fail(self, 400, "invalid_chunk_size", "A chunk must start with a hexadecimal size")
                self.size_digits = 0
                if self.remaining == 0:
                    self.trailer_start = p + 1
                    self.trailer_bytes = 0
                    st = S_TRAILER_START
                else:
                    st = S_DATA
            elif st == S_DATA_CR:
                if c != CR:
                    return chunk_fail(self, 400, "missing_chunk_crlf", "Chunk data must be followed by CRLF")
                st = S_DATA_LF
            elif st == S_DATA_LF:
                if c != LF:
                    return chunk_fail(self, 400, "missing_chunk_crlf", "Chunk data must be followed by CRLF")
                st = S_SIZE_FIRST
            elif st == S_TRAILER_START:
                if c == CR:
                    st = S_FINAL_LF
                elif cls & C_TOKEN:
                    st = S_TRAILER_NAME
                elif c == SP or c == HTAB:
                    return chunk_fail(self, 400, "obs_fold",
                                     "A trailer line must not start with whitespace (obsolete line folding)")
                elif c == LF:
                    return chunk_fail(self, 400, "bare_lf", "Lines must end in CRLF, not a bare LF")
                else:
                    return chunk_fail(self, 400, "invalid_header_name", "A trailer field name must be a non-empty token")
            elif st == S_TRAILER_NAME:
                if c == 58:
                    st = S_TRAILER_VALUE
                elif not (cls & C_TOKEN):
                    return chunk_fail(self, 400, "invalid_header_name", "A trailer field name must be a non-empty token")
            elif st == S_TRAILER_VALUE:
                if c == CR:
                    st = S_TRAILER_LF
                elif c == LF:
                    return chunk_fail(self, 400, "bare_lf", "Lines must end in CRLF, not a bare LF")
                elif not (cls & C_VALUE):
                    return chunk_fail(self, 400, "invalid_header_value", "A trailer field value contains a control character")
            elif st == S_TRAILER_LF:
                if c != LF:
                    return chunk_fail(self, 400, "bare_cr", "A CR must be followed by LF")
                st = S_TRAILER_START
            elif st == S_FINAL_LF:
                if c != LF:
                    return chunk_fail(self, 400, "bare_cr", "A CR must be followed by LF")
                self.state = S_DONE
                consumed[0] = p + 1
                return CHUNK_DONE
            p += 1
        self.state = st
        consumed[0] = n
        return CHUNK_NEED_MORE


# --- Python-level API (tests, tools; not the hot path) -------------------------------------------

class ParseError(Exception):
    """A message that must be refused: status is the HTTP status to answer with."""

    def __init__(self, status, code, message):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message

    def __repr__(self):
        return f"ParseError({self.status}, {self.code!r}, {self.message!r})"


class Incomplete(Exception):
    """The data ends before the message does."""


cdef class ParsedRequest:
    cdef readonly bytes method
    cdef readonly bytes target
    cdef readonly bytes path
    cdef readonly object query
    cdef readonly str version
    cdef readonly list headers
    cdef readonly bytes body
    cdef readonly list trailers
    cdef readonly bint keep_alive
    cdef readonly bint expect_continue
    cdef readonly bint upgrade
    cdef readonly bint connection_tokens
    cdef readonly str body_kind
    cdef readonly object content_length
    cdef readonly Py_ssize_t consumed

    def __repr__(self):
        return (f"ParsedRequest(method={self.method!r}, target={self.target!r}, version={self.version!r}, "
                f"headers={self.headers!r}, body={self.body!r}, keep_alive={self.keep_alive})")


cdef class ParsedResponse:
    cdef readonly int status
    cdef readonly bytes reason
    cdef readonly str version
    cdef readonly list headers
    cdef readonly bytes body
    cdef readonly list trailers
    cdef readonly str body_kind
    cdef readonly object content_length
    cdef readonly bint keep_alive
    cdef readonly bint upgrade
    cdef readonly Py_ssize_t consumed

    def __repr__(self):
        return (f"ParsedResponse(status={self.status}, reason={self.reason!r}, version={self.version!r}, "
                f"headers={self.headers!r}, body_kind={self.body_kind!r}, body={self.body!r})")


BODY_KIND_NAMES = ("none", "length", "chunked", "until_close")


cdef inline bytes span_bytes(bytes data, Py_ssize_t base, Span s):
    return PyBytes_FromStringAndSize(PyBytes_AS_STRING(data) + base + s.off, s.len)


cdef list header_list(MessageHead h, bytes data, Py_ssize_t base):
    cdef int i
    return [(span_bytes(data, base, h.headers[i].name), span_bytes(data, base, h.headers[i].value))
            for i in range(h.nheaders)]


cdef tuple dechunk(ChunkedDecoder decoder, bytes data, Py_ssize_t start, int error_status):
    """Decode the chunked body at data[start:]; returns (body, trailers, end offset)."""
    cdef const char* ptr = PyBytes_AS_STRING(data)
    cdef Py_ssize_t n = PyBytes_GET_SIZE(data), base = start, consumed = 0
    cdef int r
    cdef list parts = []
    cdef list trailers = []
    while True:
        r = decoder.step(ptr + base, n - base, &consumed)
        if r == CHUNK_DATA:
            parts.append(data[base + decoder.data_off: base + decoder.data_off + decoder.data_len])
            base += consumed
        elif r == CHUNK_DONE:
            section = data[base + decoder.trailer_start: base + consumed - 2]
            for line in section.split(b"\r\n"):
                if not line:   # the split leaves an empty piece after the last trailer line
                    continue
                name, _, value = line.partition(b":")
                trailers.append((name, value.strip(b" \t")))
            return b"".join(parts), trailers, base + consumed
        elif r == CHUNK_NEED_MORE:
            raise Incomplete("the chunked body is incomplete")
        else:
            raise ParseError(error_status or decoder.error_status, decoder.error_code, decoder.error_message)


cdef ParsedRequest request_at(RequestParser parser, bytes data, Py_ssize_t base):
    cdef const char* ptr = PyBytes_AS_STRING(data)
    cdef Py_ssize_t n = PyBytes_GET_SIZE(data)
    cdef Py_ssize_t r = parser.parse_head(ptr + base, n - base)
    cdef Py_ssize_t end
    cdef ParsedRequest req
    if r < 0:
        raise ParseError(parser.error_status, parser.error_code, parser.error_message)
    if r == 0:
        raise Incomplete("the request head is incomplete")
    req = ParsedRequest.__new__(ParsedRequest)
    req.method = span_bytes(data, base, parser.method)
    req.target = span_bytes(data, base, parser.target)
    req.path = span_bytes(data, base, parser.path) if parser.path.len else b"/"
    req.query = span_bytes(data, base, parser.query) if parser.query.off >= 0 else None
    req.version = "1.1" if parser.version == 11 else "1.0"
    req.headers = header_list(parser, data, base)
    req.trailers = []
    req.keep_alive = parser.keep_alive
    req.expect_continue = parser.expect_continue
    req.upgrade = parser.upgrade
    req.connection_tokens = parser.connection_tokens
    req.body_kind = BODY_KIND_NAMES[parser.body_kind]
    req.content_length = parser.content_length if parser.content_length >= 0 else None
    end = base + r
    if parser.body_kind == BODY_LENGTH:
        if n - end < parser.content_length:
            raise Incomplete("the request body is incomplete")
        req.body = data[end: end + parser.content_length]
        end += parser.content_length
    elif parser.body_kind == BODY_CHUNKED:
        req.body, req.trailers, end = dechunk(ChunkedDecoder(), data, end, 0)
    else:
        req.body = b""
    req.consumed = end - base
    return req


cdef RequestParser default_request_parser = RequestParser()


def parse_request(bytes data, *, Py_ssize_t max_target=8192, Py_ssize_t max_head=16384,
                  int max_fields=100):
    """Parse one request (head and body) at the start of data."""
    cdef RequestParser parser = default_request_parser
    if max_target != parser.max_target or max_head != parser.max_head or max_fields != parser.max_fields:
        parser = RequestParser(max_target, max_head, max_fields)
    return request_at(parser, data, 0)


def parse_requests(bytes data, *, Py_ssize_t max_target=8192, Py_ssize_t max_head=16384,
                   int max_fields=100):
    """Parse pipelined requests filling data exactly; every one must be complete."""
    cdef RequestParser parser = RequestParser(max_target, max_head, max_fields)
    cdef Py_ssize_t base = 0, n = len(data)
    cdef ParsedRequest req
    cdef list out = []
    while base < n:
        req = request_at(parser, data, base)
        out.append(req)
        base += req.consumed
    return out


def parse_response(bytes data, *, bint request_was_head=False, Py_ssize_t max_head=65536,
                   int max_fields=100):
    """Parse one response (head and body) at the start of data; until_close takes the rest."""
    cdef ResponseParser parser = ResponseParser(max_head, max_fields)
    cdef const char* ptr = PyBytes_AS_STRING(data)
    cdef Py_ssize_t n = PyBytes_GET_SIZE(data)
    cdef Py_ssize_t r = parser.parse_head(ptr, n, request_was_head)
    cdef Py_ssize_t end
    cdef ParsedResponse resp
    if r < 0:
        raise ParseError(parser.error_status, parser.error_code, parser.error_message)
    if r == 0:
        raise Incomplete("the response head is incomplete")
    resp = ParsedResponse.__new__(ParsedResponse)
    resp.status = parser.status
    resp.reason = span_bytes(data, 0, parser.reason)
    resp.version = "1.1" if parser.version == 11 else "1.0"
    resp.headers = header_list(parser, data, 0)
    resp.trailers = []
    resp.body_kind = BODY_KIND_NAMES[parser.body_kind]
    resp.content_length = parser.content_length if parser.content_length >= 0 else None
    resp.keep_alive = parser.keep_alive
    resp.upgrade = parser.upgrade
    end = r
    if parser.body_kind == BODY_LENGTH:
        if n - end < parser.content_length:
            raise Incomplete("the response body is incomplete")
        resp.body = data[end: end + parser.content_length]
        end += parser.content_length
    elif parser.body_kind == BODY_CHUNKED:
        resp.body, resp.trailers, end = dechunk(ChunkedDecoder(), data, end, 502)
    elif parser.body_kind == BODY_UNTIL_CLOSE:
        resp.body = data[end:]
        end = n
    else:
        resp.body = b""
    resp.consumed = end
    return resp


def decode_chunked(chunks, *, Py_ssize_t max_trailer=16384, int64_t max_chunk_size=4611686018427387904):
    """Feed an iterable of byte strings to one ChunkedDecoder, as a connection would.

    Returns (body, consumed, leftover): leftover is what followed the body in the last piece fed.
    Raises ParseError or Incomplete. The decoder's payload spans are checked to lie inside the piece
    given to each step call (zero copy means they must).
    """
    cdef ChunkedDecoder decoder = ChunkedDecoder(max_trailer, max_chunk_size)
    cdef Py_ssize_t consumed = 0, total = 0, base, n
    cdef int r
    cdef const char* ptr
    cdef list parts = []
    cdef bytes piece
    for piece in chunks:
        ptr = PyBytes_AS_STRING(piece)
        n = PyBytes_GET_SIZE(piece)
        base = 0
        while True:
            r = decoder.step(ptr + base, n - base, &consumed)
            if r == CHUNK_DATA:
                if decoder.data_off < 0 or decoder.data_off + decoder.data_len > n - base or decoder.data_len <= 0:
                    raise AssertionError("chunk data span outside the buffer")
                parts.append(piece[base + decoder.data_off: base + decoder.data_off + decoder.data_len])
                base += consumed
            elif r == CHUNK_DONE:
                total += base + consumed
                return b"".join(parts), total, piece[base + consumed:]
            elif r == CHUNK_NEED_MORE:
                if consumed != n - base:
                    raise AssertionError("NEED_MORE must consume everything")
                total += n
                break
            else:
                raise ParseError(decoder.error_status, decoder.error_code, decoder.error_message)
    raise Incomplete("the chunked body is incomplete")


def bench_parse_head(RequestParser p, bytes data, int iterations):
    """Parse the same head `iterations` times in C; returns the sum of the head lengths."""
    cdef const char* ptr = PyBytes_AS_STRING(data)
    cdef Py_ssize_t n = PyBytes_GET_SIZE(data), total = 0
    cdef int i
    for i in range(iterations):
        total += p.parse_head(ptr, n)
    return total
