# cython: language_level=3
"""The access log's hot half: JSON lines built in C (see accesslog.pxd)."""

import time as _time

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_GET_SIZE
from libc.math cimport llrint
from libc.stdint cimport uint8_t

from .buffer cimport bb_append, bb_append_str, bb_append_uint, bb_clear, bb_free, bb_len, bb_take

import msgspec

_encode = msgspec.json.encode

cdef const char* HEX = "0123456789abcdef"


cdef inline int _append_escaped(ByteBuffer* b, const char* p, Py_ssize_t n) except -1:
    """A JSON string body from latin-1 bytes: quotes, backslashes, controls and bytes >= 0x80
    escaped (\\u00XX keeps the line valid UTF-8 whatever the client sent)."""
    cdef Py_ssize_t i
    cdef Py_ssize_t start = 0
    cdef uint8_t c
    cdef char esc[6]
    for i in range(n):
        c = <uint8_t>p[i]
        if c >= 0x20 and c < 0x80 and c != 34 and c != 92:
            continue
        bb_append(b, p + start, i - start)
        start = i + 1
        if c == 34:
            bb_append(b, "\\\"", 2)
        elif c == 92:
            bb_append(b, "\\\\", 2)
        else:
            esc[0] = b'\\'
            esc[1] = b'u'
            esc[2] = b'0'
            esc[3] = b'0'
            esc[4] = HEX[c >> 4]
            esc[5] = HEX[c & 15]
            bb_append(b, esc, 6)
    bb_append(b, p + start, n - start)
    return 0


cdef class LogLines:
    def __cinit__(self):
        self.cached_second = -1
        self.escaped = {}
        self.lines = 0

    def __dealloc__(self):
        bb_free(&self.buf)

    def __len__(self):
        return bb_len(&self.buf)

    def take(self):
        """Everything appended since the last take, as bytes (the buffer is emptied)."""
        return bb_take(&self.buf)

    def add(self, double unix_time, bytes request_id, str route, bytes method, bytes target, int status,
            long long bytes_sent, str upstream, long long duration_us, bytes client):
        """Python access to append() (tests)."""
        self.append(unix_time, request_id, route, PyBytes_AS_STRING(method), PyBytes_GET_SIZE(method),
                    PyBytes_AS_STRING(target), PyBytes_GET_SIZE(target), status, bytes_sent, upstream,
                    duration_us, client)

    cdef bytes json_str(self, str value):
        cdef bytes quoted = self.escaped.get(value)
        if quoted is None:
            quoted = _encode(value)  # config-controlled strings: escaped once, then reused
            if len(self.escaped) < 4096:
                self.escaped[value] = quoted
        return quoted

    cdef int append(self, double unix_time, bytes request_id, str route, const char* method,
                    Py_ssize_t method_len, const char* target, Py_ssize_t target_len, int status,
                    long long bytes_sent, str upstream, long long duration_us, bytes client) except -1:
        cdef ByteBuffer* b = &self.buf
        # Round to whole microseconds first (as the Python encoder does), then split: 1.9999996
        # is 2.000000, not 1.999999 plus a carry that went nowhere.
        cdef long long total = llrint(unix_time * 1e6)  # half to even, like round()
        cdef long long second = total // 1000000
        cdef long long micros = total - second * 1000000
        cdef char frac[7]
        cdef int i
        if second != self.cached_second:
            prefix = _time.strftime("%Y-%m-%dT%H:%M:%S", _time.gmtime(second)).encode("ascii")
            for i in range(19):
                self.time_prefix[i] = (<char*>prefix)[i]
            self.cached_second = second
        if micros > 999999:
            micros = 999999
        frac[0] = b'.'
        for i in range(6, 0, -1):
            frac[i] = <char>(48 + micros % 10)
            micros //= 10
        bb_append(b, '{"time":"', 9)
        bb_append(b, self.time_prefix, 19)
        bb_append(b, frac, 7)
        bb_append(b, 'Z","request_id":"', 17)
        _append_escaped(b, PyBytes_AS_STRING(request_id), PyBytes_GET_SIZE(request_id))
        bb_append(b, '","route":', 10)
        bb_append_str(b, self.json_str(route))
        bb_append(b, ',"method":"', 11)
        _append_escaped(b, method, method_len)
        bb_append(b, '","path":"', 10)
        _append_escaped(b, target, target_len)
        bb_append(b, '","status":', 11)
        bb_append_uint(b, <unsigned long long>status)
        bb_append(b, ',"bytes":', 9)
        bb_append_uint(b, <unsigned long long>(bytes_sent if bytes_sent > 0 else 0))
        bb_append(b, ',"upstream":', 12)
        if upstream is None:
            bb_append(b, "null", 4)
        else:
            bb_append_str(b, self.json_str(upstream))
        bb_append(b, ',"duration_us":', 15)
        bb_append_uint(b, <unsigned long long>(duration_us if duration_us > 0 else 0))
        bb_append(b, ',"client":"', 11)
        _append_escaped(b, PyBytes_AS_STRING(client), PyBytes_GET_SIZE(client))
        bb_append(b, '"}\n', 3)
        self.lines += 1
        return 0
