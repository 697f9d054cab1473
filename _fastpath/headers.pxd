# Classification of the header names the proxy treats specially (hop-by-hop fields, framing,
# forwarding headers), done once per field with a length switch and one case-insensitive compare.

from .parser cimport Header, MessageHead


cdef extern from "strings.h" nogil:
    int strncasecmp(const char* a, const char* b, size_t n)


cdef enum HeaderId:
    H_OTHER = 0
    H_HOST
    H_CONNECTION
    H_KEEP_ALIVE
    H_PROXY_CONNECTION
    H_TE
    H_TRANSFER_ENCODING
    H_UPGRADE
    H_CONTENT_LENGTH
    H_X_FORWARDED_FOR
    H_X_FORWARDED_PROTO
    H_X_FORWARDED_HOST
    H_X_REQUEST_ID
    H_EXPECT


cdef inline bint _is(const char* p, const char* name, Py_ssize_t n) noexcept nogil:
    return strncasecmp(p, name, n) == 0


cdef inline int header_id(const char* p, Py_ssize_t n) noexcept nogil:
    if n == 2:
        return H_TE if _is(p, "te", 2) else H_OTHER
    if n == 4:
        return H_HOST if _is(p, "host", 4) else H_OTHER
    if n == 6:
        return H_EXPECT if _is(p, "expect", 6) else H_OTHER
    if n == 7:
        return H_UPGRADE if _is(p, "upgrade", 7) else H_OTHER
    if n == 10:
        if _is(p, "connection", 10):
            return H_CONNECTION
        if _is(p, "keep-alive", 10):
            return H_KEEP_ALIVE
        return H_OTHER
    if n == 12:
        return H_X_REQUEST_ID if _is(p, "x-request-id", 12) else H_OTHER
    if n == 14:
        return H_CONTENT_LENGTH if _is(p, "content-length", 14) else H_OTHER
    if n == 15:
        if _is(p, "x-forwarded-for", 15):
            return H_X_FORWARDED_FOR
        return H_OTHER
    if n == 16:
        if _is(p, "proxy-connection", 16):
            return H_PROXY_CONNECTION
        if _is(p, "x-forwarded-host", 16):
            return H_X_FORWARDED_HOST
        return H_OTHER
    if n == 17:
        if _is(p, "transfer-encoding", 17):
            return H_TRANSFER_ENCODING
        if _is(p, "x-forwarded-proto", 17):
            return H_X_FORWARDED_PROTO
        return H_OTHER
    return H_OTHER


cdef inline bint is_hop_by_hop(int hid) noexcept nogil:
    # RFC 9110 §7.6.1: fields that describe one connection, never forwarded as received.
    return (hid == H_CONNECTION or hid == H_KEEP_ALIVE or hid == H_PROXY_CONNECTION
            or hid == H_TE or hid == H_TRANSFER_ENCODING or hid == H_UPGRADE)


cdef inline bint token_in_list(const char* lst, Py_ssize_t n, const char* tok, Py_ssize_t tn) noexcept nogil:
    """Case-insensitive membership of tok in a comma-separated list such as a Connection value."""
    cdef Py_ssize_t i = 0
    cdef Py_ssize_t start
    cdef Py_ssize_t end
    while i < n:
        while i < n and (lst[i] == b' ' or lst[i] == b'\t' or lst[i] == b','):
            i += 1
        start = i
        while i < n and lst[i] != b',':
            i += 1
        end = i
        while end > start and (lst[end - 1] == b' ' or lst[end - 1] == b'\t'):
            end -= 1
        if end - start == tn and tn > 0 and strncasecmp(lst + start, tok, tn) == 0:
            return True
    return False


cdef inline bint ascii_lower_equal(const char* a, const char* lower, Py_ssize_t n) noexcept nogil:
    """a[0:n] equals the lower-case `lower` ignoring ASCII case (header names are ASCII tokens)."""
    cdef Py_ssize_t i
    cdef char c
    for i in range(n):
        c = a[i]
        if c >= b'A' and c <= b'Z':
            c = c + 32
        if c != lower[i]:
            return False
    return True


cdef inline bint named_by_connection(MessageHead m, const char* base, Header* h) noexcept:
    """Whether the field h is named in a Connection header of m (so it is hop-by-hop too)."""
    cdef int i
    cdef Header* c
    for i in range(m.nheaders):
        c = &m.headers[i]
        if header_id(base + c.name.off, c.name.len) == H_CONNECTION:
            if token_in_list(base + c.value.off, c.value.len, base + h.name.off, h.name.len):
                return True
    return False
