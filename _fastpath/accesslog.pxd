# Access-log lines formatted in C: one JSON object per request appended to a byte buffer that
# gateway.accesslog.AccessLog writes out in batches, so a logged request creates no Python tuple
# and costs no JSON encoder call.

from .buffer cimport ByteBuffer


cdef class LogLines:
    cdef ByteBuffer buf
    cdef long long cached_second
    cdef char time_prefix[20]     # "YYYY-MM-DDTHH:MM:SS" of cached_second
    cdef dict escaped             # str (route names, upstream addresses) -> JSON string bytes
    cdef readonly long long lines

    cdef int append(self, double unix_time, bytes request_id, str route, const char* method,
                    Py_ssize_t method_len, const char* target, Py_ssize_t target_len, int status,
                    long long bytes_sent, str upstream, long long duration_us, bytes client) except -1
    cdef bytes json_str(self, str value)
