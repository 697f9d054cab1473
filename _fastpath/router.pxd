# Augmenting declarations for router.py (Cython pure-Python mode): the classes become cdef classes
# with typed attributes and the per-request functions become C functions. Cython code (http.pyx)
# may `from .router cimport Router` and call Router.match at C speed.

cimport cython


cdef class _Route:
    cdef readonly object target
    cdef readonly tuple param_names
    cdef readonly tuple param_depths
    cdef readonly bint greedy
    cdef readonly Py_ssize_t params_count


cdef class _Endpoint:
    cdef dict by_method
    cdef _Route any_method
    cdef set allowed

    cdef _Route lookup(self, str method)


cdef class _Node:
    cdef dict static
    cdef tuple few_keys
    cdef tuple few_children
    cdef _Node param
    cdef _Endpoint greedy
    cdef _Endpoint end

    @cython.locals(keys=tuple, length=Py_ssize_t, i=Py_ssize_t, key=str)
    cdef _Node static_child(self, str path, Py_ssize_t start, Py_ssize_t end)


cdef class _Table:
    cdef _Node root
    cdef dict exact

    @cython.locals(endpoint=_Endpoint, route=_Route, n=Py_ssize_t)
    cdef _Route find(self, str method, str path)


@cython.locals(end=Py_ssize_t)
cdef Py_ssize_t _segment_end(str path, Py_ssize_t start, Py_ssize_t n)

@cython.locals(start=Py_ssize_t, end=Py_ssize_t, child=_Node, route=_Route)
cdef _Route _walk(_Node node, str path, Py_ssize_t pos, Py_ssize_t n, str method)

@cython.locals(
    params=dict, names=tuple, depths=tuple, last=Py_ssize_t, k=Py_ssize_t, wanted=Py_ssize_t,
    depth=Py_ssize_t, pos=Py_ssize_t, n=Py_ssize_t, start=Py_ssize_t, end=Py_ssize_t,
)
cdef dict _extract_params(_Route route, str path)

cdef tuple _result(_Route route, str path)


cdef class Router:
    cdef _Table _any_host
    cdef dict _exact_hosts
    cdef dict _wildcard_hosts
    cdef _Route _default
    cdef tuple _any_host_only
    cdef dict _tiers_by_host

    @cython.locals(tiers=tuple, table=_Table, route=_Route)
    cpdef object match(self, str host, str method, str path)

    @cython.locals(tiers=tuple)
    cdef tuple _tiers_for(self, str host)


@cython.locals(i=Py_ssize_t)
cpdef object match_repeatedly(Router router, str host, str method, str path, Py_ssize_t times)
