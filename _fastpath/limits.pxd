# Augmenting declarations for limits.py (Cython pure-Python mode): RateLimiter and
# ConcurrencyLimiter become cdef classes with typed attributes, so the engine can
# `from .limits cimport RateLimiter, ConcurrencyLimiter` and call check()/acquire()/release() and
# read limit/remaining/reset_after at C speed; Python code sees the same names as attributes.

cimport cython


cdef double _SLACK
cdef Py_ssize_t _EVICTION_SAMPLES


cdef class _Bucket:
    cdef public double tat


cdef class RateLimiter:
    cdef readonly double rate
    cdef readonly Py_ssize_t burst
    cdef readonly Py_ssize_t max_keys
    cdef readonly double interval
    cdef readonly double tolerance
    cdef double _slack
    cdef dict _table
    cdef readonly Py_ssize_t limit
    cdef readonly Py_ssize_t remaining
    cdef readonly double reset_after
    cdef readonly Py_ssize_t evicted

    @cython.locals(bucket=_Bucket, tat=double, new_tat=double, wait=double, wait_ms=Py_ssize_t)
    cpdef Py_ssize_t check(self, object key, double now, Py_ssize_t cost=*) except -1

    @cython.locals(bucket=_Bucket, tat=double)
    cpdef void refund(self, object key, double now, Py_ssize_t cost=*) except *

    @cython.locals(owed=double, remaining=Py_ssize_t)
    cdef void _report(self, double tat, double now) noexcept

    @cython.locals(
        table=dict, doomed=list, samples=list, bucket=_Bucket, low_water=Py_ssize_t, excess=Py_ssize_t,
        stride=Py_ssize_t, skip=Py_ssize_t, rank=Py_ssize_t, threshold=double,
    )
    cdef void _make_room(self, double now) except *

    cpdef void clear(self) noexcept


cdef class ConcurrencyLimiter:
    cdef readonly Py_ssize_t limit
    cdef dict _in_flight

    @cython.locals(count=Py_ssize_t)
    cpdef bint acquire(self, object key) except -1

    @cython.locals(count=Py_ssize_t)
    cpdef void release(self, object key) except *

    cpdef Py_ssize_t in_use(self, object key) except -1


@cython.locals(refused=Py_ssize_t, _index=Py_ssize_t)
cpdef Py_ssize_t check_repeatedly(RateLimiter limiter, object key, double now, double step, Py_ssize_t times) except -1

@cython.locals(refused=Py_ssize_t)
cpdef Py_ssize_t check_keys(RateLimiter limiter, object keys, double now) except -1
