# Augmenting declarations for cache.py (Cython pure-Python mode): the store's classes become cdef
# classes with typed attributes. The engine may `from .cache cimport ResponseCache, Variants, Entry,
# Fill` and call find/get/begin/append/commit/join/release at C speed, and read an Entry's head,
# body and age bookkeeping without attribute lookups.

cimport cython


cdef class Variants:
    cdef readonly object key            # primary key (Python int)
    cdef readonly bytes primary         # primary material, compared on lookup (collision-proof)
    cdef readonly bytes host
    cdef readonly bytes path
    cdef readonly tuple vary_names      # lowercased bytes names; () when the response had no Vary
    cdef readonly dict entries          # vary material -> Entry


cdef class Entry:
    cdef readonly Variants variants
    cdef readonly bytes vary            # vary material this entry answers
    cdef readonly object key            # entry key (Python int)
    cdef readonly int status
    cdef readonly bytes head            # status line + fields + Content-Length + X-Cache: HIT, CRLF each
    cdef readonly bytes body
    cdef readonly double stored_at
    cdef readonly double ttl
    cdef readonly double initial_age
    cdef readonly double expires_at
    cdef readonly Py_ssize_t size
    cdef Entry newer
    cdef Entry older

    @cython.locals(current=double)
    cpdef Py_ssize_t age(self, double now)
    cpdef bint fresh(self, double now)
    cpdef bytes response(self, double now, bytes date_line, bint keep_alive, bint head_only)


cdef class Fill:
    cdef readonly ResponseCache cache
    cdef readonly object key
    cdef readonly bytes primary
    cdef readonly bytes host
    cdef readonly bytes path
    cdef readonly tuple vary_names
    cdef readonly bytes vary
    cdef readonly bytes head
    cdef readonly int status
    cdef readonly double ttl
    cdef readonly double initial_age
    cdef readonly double stored_at
    cdef list chunks
    cdef readonly Py_ssize_t size
    cdef readonly bint active

    cpdef bint append(self, bytes chunk)
    @cython.locals(body=bytes, head=bytes, entry=Entry, cache=ResponseCache)
    cpdef Entry commit(self, double now)
    cpdef void abort(self)


cdef class ResponseCache:
    cdef readonly Py_ssize_t max_bytes
    cdef readonly Py_ssize_t max_entry_size
    cdef readonly Py_ssize_t used_bytes
    cdef readonly Py_ssize_t count
    cdef dict _variants
    cdef Entry _sentinel
    cdef object _paths
    cdef dict _waiters
    cdef public object on_store         # callable(Entry) after each Fill.commit, or None

    @cython.locals(variants=Variants)
    cpdef Variants find(self, bytes primary)
    @cython.locals(entry=Entry)
    cpdef Entry get(self, Variants variants, bytes vary, double now)
    @cython.locals(variants=Variants, vary=bytes)
    cpdef Entry lookup(self, bytes primary, object header, double now)
    cpdef Fill begin(self, bytes primary, bytes host, bytes path, tuple vary_names, bytes vary, bytes head,
                     int status, double ttl, double initial_age, double now)
    cpdef Entry put(self, bytes primary, bytes host, bytes path, tuple vary_names, bytes vary, int status,
                    bytes head, bytes body, double stored_at, double ttl, double initial_age)
    @cython.locals(size=Py_ssize_t, variants=Variants, entry=Entry, old=Entry)
    cdef Entry _insert(self, object key, bytes primary, bytes host, bytes path, tuple vary_names, bytes vary,
                       int status, bytes head, bytes body, double stored_at, double ttl, double initial_age)
    @cython.locals(victim=Entry)
    cdef void _evict(self)
    @cython.locals(variants=Variants)
    cpdef Py_ssize_t purge(self, bytes primary)
    @cython.locals(dropped=Py_ssize_t, variants=Variants)
    cpdef Py_ssize_t purge_prefix(self, bytes prefix, bytes host=*)
    @cython.locals(dropped=Py_ssize_t, entry=Entry)
    cdef Py_ssize_t _remove_variants(self, Variants variants)
    @cython.locals(variants=Variants)
    cdef void _remove(self, Entry entry)
    cdef void _drop_variants(self, Variants variants)
    @cython.locals(sentinel=Entry, first=Entry)
    cdef void _link_front(self, Entry entry)
    @cython.locals(newer=Entry, older=Entry)
    cdef void _unlink(self, Entry entry)
    @cython.locals(sentinel=Entry, first=Entry, newer=Entry, older=Entry)
    cdef void _touch(self, Entry entry)
    @cython.locals(waiters=list)
    cpdef bint join(self, object key, object callback)
    @cython.locals(waiters=list)
    cpdef Py_ssize_t release(self, object key, Entry entry)
    cpdef bint in_flight(self, object key)
    @cython.locals(waiters=list)
    cpdef Py_ssize_t waiting(self, object key)


cpdef bytes primary_material(bytes method, bytes host, bytes path, bytes query)
cpdef object primary_key(bytes material)

@cython.locals(i=Py_ssize_t, variants=Variants, entry=Entry)
cpdef object lookup_repeatedly(ResponseCache cache, bytes primary, bytes vary, double now, Py_ssize_t times)
