# Augmenting declarations for balance.py (Cython pure-Python mode). Cython code may
# `from .balance cimport Balancer, Target` and call pick()/report_*() and touch a target's
# counters at C speed; Python code sees the same names as attributes.

cimport cython


cdef class Target:
    cdef readonly str addr
    cdef readonly str host
    cdef readonly int port
    cdef public Py_ssize_t in_flight
    cdef public Py_ssize_t consecutive_failures
    cdef public double down_until
    cdef public bint healthy

    cpdef bint available(self, double now)


cdef class Balancer:
    cdef readonly list targets
    cdef readonly str policy
    cdef readonly Py_ssize_t max_fails
    cdef readonly double fail_timeout
    cdef int _policy_code
    cdef Py_ssize_t _next
    cdef list _ring_points
    cdef list _ring_owners

    cpdef Target pick(self, double now, bytes hash_key=*, Target exclude=*)

    @cython.locals(count=Py_ssize_t, index=Py_ssize_t, target=Target)
    cdef Target _round_robin(self, double now, Target exclude)

    @cython.locals(count=Py_ssize_t, index=Py_ssize_t, best=Target, best_index=Py_ssize_t, target=Target)
    cdef Target _least_conn(self, double now, Target exclude)

    @cython.locals(points_count=Py_ssize_t, index=Py_ssize_t, target=Target)
    cdef Target _by_hash(self, double now, bytes hash_key, Target exclude)

    cpdef void report_success(self, Target target)
    cpdef void report_failure(self, Target target, double now)
