# cython: language_level=3
"""Deadline ticker: one loop.call_later chain per worker drives every connection timeout."""

import logging

_log = logging.getLogger("lambdagate.timers")


cdef class Watched:
    def __cinit__(self):
        self.deadline = 0.0
        self.watch_index = -1

    cdef void on_deadline(self, double now):
        pass


cdef class Ticker:
    def __cinit__(self, object loop, double interval=0.1, object on_tick=None):
        self.items = []
        self.loop = loop
        self.interval = interval
        self.handle = None
        self.on_tick = on_tick

    def start(self):
        if self.handle is None:
            self.handle = self.loop.call_later(self.interval, self._tick)

    def stop(self):
        if self.handle is not None:
            self.handle.cancel()
            self.handle = None

    def __len__(self):
        return len(self.items)

    cdef void add(self, Watched item):
        if item.watch_index >= 0:
            return
        item.watch_index = len(self.items)
        self.items.append(item)

    cdef void remove(self, Watched item):
        cdef Py_ssize_t i = item.watch_index
        cdef Py_ssize_t last
        cdef Watched moved
        if i < 0:
            return
        last = len(self.items) - 1
        if i != last:
            moved = <Watched>self.items[last]
            self.items[i] = moved
            moved.watch_index = i
        self.items.pop()
        item.watch_index = -1

    def _tick(self):
        cdef double now = monotonic()
        cdef Py_ssize_t i = len(self.items) - 1
        cdef Watched item
        self.handle = self.loop.call_later(self.interval, self._tick)
        if self.on_tick is not None:
            try:
                self.on_tick()
            except Exception:
                _log.exception("tick callback failed")
        # Walk backwards: removals swap the last item into the freed slot, and every item after
        # the cursor has been visited already, so nothing is skipped or visited twice.
        while i >= 0:
            if i >= len(self.items):
                i = len(self.items) - 1
                continue
            item = <Watched>self.items[i]
            if item.deadline != 0.0 and now >= item.deadline:
                item.deadline = 0.0
                try:
                    item.on_deadline(now)
                except Exception:
                    _log.exception("deadline handler failed")
            i -= 1
