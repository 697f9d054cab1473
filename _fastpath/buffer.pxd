# A growable byte buffer for building message heads and holding unparsed input, managed with
# malloc/realloc so the hot path creates no Python objects until it hands bytes to a transport.

from cpython.bytes cimport PyBytes_FromStringAndSize
from libc.stdlib cimport free, realloc
from libc.string cimport memcpy, memmove


cdef struct ByteBuffer:
    char* data
    Py_ssize_t start      # first unconsumed byte
    Py_ssize_t end        # one past the last byte
    Py_ssize_t cap


cdef inline int bb_reserve(ByteBuffer* b, Py_ssize_t extra) except -1:
    cdef Py_ssize_t need
    cdef Py_ssize_t cap
    cdef char* grown
    if b.end + extra <= b.cap:
        return 0
    if b.start > 0:
        # Compact before growing: consumed bytes at the front are dead.
        if b.end > b.start:
            memmove(b.data, b.data + b.start, b.end - b.start)
        b.end -= b.start
        b.start = 0
        if b.end + extra <= b.cap:
            return 0
    need = b.end + extra
    cap = b.cap if b.cap > 0 else 512
    while cap < need:
        cap *= 2
    grown = <char*>realloc(b.data, cap)
    if grown == NULL:
        raise MemoryError()
    b.data = grown
    b.cap = cap
    return 0


cdef inline int bb_append(ByteBuffer* b, const char* p, Py_ssize_t n) except -1:
    if n <= 0:
        return 0
    bb_reserve(b, n)
    memcpy(b.data + b.end, p, n)
    b.end += n
    return 0


cdef inline int bb_append_str(ByteBuffer* b, bytes s) except -1:
    return bb_append(b, <const char*>s, len(s))


cdef inline int bb_append_uint(ByteBuffer* b, unsigned long long v) except -1:
    cdef char tmp[24]
    cdef int i = 24
    if v == 0:
        return bb_append(b, "0", 1)
    while v:
        i -= 1
        tmp[i] = <char>(48 + v % 10)
        v //= 10
    return bb_append(b, tmp + i, 24 - i)


cdef inline int bb_append_hex(ByteBuffer* b, unsigned long long v) except -1:
    cdef char tmp[24]
    cdef int i = 24
    cdef const char* digits = "0123456789abcdef"
    if v == 0:
        return bb_append(b, "0", 1)
    while v:
        i -= 1
        tmp[i] = digits[v & 15]
        v >>= 4
    return bb_append(b, tmp + i, 24 - i)


cdef inline Py_ssize_t bb_len(ByteBuffer* b) noexcept:
    return b.end - b.start


cdef inline void bb_consume(ByteBuffer* b, Py_ssize_t n) noexcept:
    b.start += n
    if b.start >= b.end:
        b.start = 0
        b.end = 0


cdef inline void bb_clear(ByteBuffer* b) noexcept:
    b.start = 0
    b.end = 0


cdef inline bytes bb_take(ByteBuffer* b):
    """The unconsumed bytes as a new bytes object; the buffer is emptied."""
    cdef bytes out = PyBytes_FromStringAndSize(b.data + b.start, b.end - b.start)
    b.start = 0
    b.end = 0
    return out


cdef inline void bb_free(ByteBuffer* b) noexcept:
    if b.data != NULL:
        free(b.data)
    b.data = NULL
    b.start = 0
    b.end = 0
    b.cap = 0
