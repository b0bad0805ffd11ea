"""Python's garbage collector in a worker: every pause measured, and the full collections
run at a chosen interval instead of whenever the collector decides.

A worker keeps its recently active leads decoded in memory and its models' per-listing
structures: a few hundred thousand tracked objects. CPython collects in three
generations; the young two are cheap (they walk the objects created since), but a full
(generation 2) collection walks every tracked object, and CPython starts one whenever a
quarter more objects have survived since the last. In ``bench pipeline``'s worker that
was a pause of 100-220 ms every 3-20 s under load, finding nothing to free (the state
has no reference cycles), and each pause holds up every event waiting behind it
(docs/benchmarks.md, "Full collections off the event path").

With a policy installed, the young generations stay automatic and full collections
happen only when :meth:`CollectorPolicy.collect` is called (the worker calls it every
``LEADSTREAM_GC_FULL_INTERVAL_SECONDS``): the same pause, once in that interval, at a
moment the worker knows about. Cyclic garbage that outlives the young generations waits
for it (a few hundred objects a minute in the benchmark's worker).

Each pause is noted by the collector's callback and handed over by :meth:`pauses` (the
worker observes them into ``leadstream_gc_pause_seconds`` once a second): a metric's
lock is never taken from inside a collection, which can start in the middle of any
allocation, that lock's holder included.

>>> import gc
>>> before = gc.get_threshold()
>>> policy = CollectorPolicy()
>>> policy.install()
>>> gc.get_threshold()[2] == NEVER
True
>>> policy.collect() >= 0 and 2 in [gen for gen, _ in policy.pauses()]
True
>>> policy.uninstall()
>>> gc.get_threshold() == before
True
"""

from __future__ import annotations

import gc
import time
from collections import deque

#: a generation-2 threshold no count reaches: no automatic full collection
NEVER = 2**31 - 1


class CollectorPolicy:
    """Every collection's pause noted; with ``scheduled``, full collections only from
    :meth:`collect`."""

    def __init__(self, scheduled: bool = True, keep: int = 10_000):
        self.scheduled = scheduled
        self.saved: tuple[int, int, int] | None = None
        self._noted: deque[tuple[int, float]] = deque(maxlen=keep)
        self._started = 0.0
        self._installed = False

    def _callback(self, phase: str, info: dict) -> None:
        if phase == "start":
            self._started = time.perf_counter()
        else:
            self._noted.append((info["generation"], time.perf_counter() - self._started))

    def install(self) -> None:
        """Note every pause; with ``scheduled``, young collections as before and full ones
        only from :meth:`collect`."""
        if self._installed:
            return
        self._installed = True
        gc.callbacks.append(self._callback)
        if self.scheduled:
            self.saved = gc.get_threshold()
            gc.set_threshold(self.saved[0], self.saved[1], NEVER)

    def uninstall(self) -> None:
        """Python's own schedule again, pauses no longer noted."""
        if not self._installed:
            return
        self._installed = False
        if self.saved is not None:
            gc.set_threshold(*self.saved)
            self.saved = None
        if self._callback in gc.callbacks:
            gc.callbacks.remove(self._callback)

    def collect(self) -> int:
        """One full collection now; the number of unreachable objects found."""
        return gc.collect()

    def pauses(self) -> list[tuple[int, float]]:
        """The ``(generation, seconds)`` of the collections since the last call (at most
        ``keep``, the latest)."""
        out = []
        noted = self._noted
        while noted:
            out.append(noted.popleft())
        return out
