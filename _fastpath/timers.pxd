# Coarse deadlines for connections: one periodic tick per worker checks every watched object,
# instead of a timer handle created and cancelled per request.

from posix.time cimport clock_gettime, timespec, CLOCK_MONOTONIC


cdef inline double monotonic() noexcept nogil:
    cdef timespec ts
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return ts.tv_sec + ts.tv_nsec * 1e-9


cdef class Watched:
    cdef double deadline          # monotonic seconds; 0 = nothing to watch
    cdef Py_ssize_t watch_index   # slot in the ticker's list, -1 when not watched

    cdef void on_deadline(self, double now)


cdef class Ticker:
    cdef list items
    cdef object loop
    cdef object handle
    cdef double interval
    cdef object on_tick           # optional Python callable run each tick (e.g. the Date cache)

    cdef void add(self, Watched item)
    cdef void remove(self, Watched item)
