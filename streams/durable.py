"""The worker's delivery rules as pure state machines: no Faust, no Kafka client.

The pipeline is idempotent per lead by input offset (``streams.step``), so reading an
event twice is harmless; what must never happen is a committed offset whose event never
reached the tables, or a lead's state read from an incomplete copy. The classes here
decide what the worker does about that; ``streams.faust_internals`` patches Faust where it
would break the guarantee and feeds these classes from Faust's consumer. Each is driven
by plain values and callables, so its doctest and ``tests/test_durable.py`` need no
broker.

- :class:`InputOrder` and :class:`OrderGuard`: each input partition's offsets reach the
  agent in order and whole; a record past a hole is refused (never committed) until the
  broker confirms the hole empty or the partition has been sought back and read again.
- :class:`Ownership` and :class:`StateRestorer`: a partition's state is trusted only
  while every consumer-group generation assigns it here; otherwise it is dropped and
  read whole from its changelog partition before the agent takes its events.
- :class:`StallWatch`: input partitions whose read position stopped with records waiting.

How each gap they close was found: ``docs/reliability.md``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable

log = logging.getLogger(__name__)

NEXT, AGAIN, GAP = "next", "again", "gap"


class StallWatch:
    """Input partitions whose read position has not moved for ``patience`` checks in a
    row although the broker holds records past it.

    A stalled partition is a known failure of faust-streaming with aiokafka (no fetch
    requests for a partition after a rebalance, faust-streaming issues 166 and 629); the
    worker seeks it back to its committed offset, which restarts its fetching, and the
    replayed records are skipped by the per-lead offsets. Feed :meth:`check` one
    ``{partition: (next offset to read, end offset)}`` per check; it returns the
    partitions to unstick (and starts counting them afresh).

    >>> w = StallWatch(patience=2)
    >>> w.check({0: (5, 10), 1: (3, 3)})
    []
    >>> w.check({0: (5, 10), 1: (3, 3)})  # partition 1 is simply caught up
    []
    >>> w.check({0: (5, 10), 1: (3, 3)})
    [0]
    >>> w.check({0: (6, 10), 1: (3, 3)})  # it moved
    []
    """

    def __init__(self, patience: int = 3):
        self.patience = patience
        self._seen: dict = {}  # partition -> (position, checks without progress)

    def check(self, positions: dict) -> list:
        stalled, seen = [], {}
        for tp, (pos, end) in positions.items():
            last, n = self._seen.get(tp, (None, 0))
            n = n + 1 if pos == last and end > pos else 0
            if n >= self.patience:
                stalled.append(tp)
                n = 0
            seen[tp] = (pos, n)
        self._seen = seen
        return stalled

    def reset(self) -> None:
        """Forget the history (a rebalance or paused flow: positions legitimately stop)."""
        self._seen = {}


class InputOrder:
    """Per input partition, the next offset the agent must handle (reliability point 5).

    :meth:`check` sorts each delivered record: ``"next"`` (handle it), ``"again"`` (handled
    before, or before the position last sought: skip it) or ``"gap"`` (records before it
    never arrived). A seek (:meth:`sought`) sets the next offset; :meth:`accept` takes a
    gap the broker confirmed (no records in it). Partitions are any hashable key.

    >>> o = InputOrder()
    >>> o.sought("p0", 5)               # a seek: offset 5 comes next
    >>> o.check("p0", 5), o.check("p0", 6)
    ('next', 'next')
    >>> o.check("p0", 6)                # delivered twice
    'again'
    >>> o.check("p0", 9)                # 7 and 8 never arrived
    'gap'
    >>> o.expected("p0"), o.rewinding("p0")
    (7, False)
    >>> o.sought("p0", 7)               # read them again
    >>> o.rewinding("p0"), o.check("p0", 9), o.check("p0", 7)
    (True, 'gap', 'next')
    >>> o.accept("p0", 12)              # the broker holds nothing at 8 to 11
    >>> o.check("p0", 13)
    'next'
    >>> o.check("p1", 40)               # a partition never sought: its first record leads
    'next'
    """

    __slots__ = ("_next", "_seeks", "_sought")

    def __init__(self) -> None:
        self._next: dict = {}
        self._sought: dict = {}
        self._seeks: Counter = Counter()

    def check(self, tp, offset: int) -> str:
        want = self._next.get(tp)
        if want is None or offset == want:
            self._next[tp] = offset + 1
            return NEXT
        return AGAIN if offset < want else GAP

    def expected(self, tp) -> int | None:
        return self._next.get(tp)

    def sought(self, tp, offset: int) -> None:
        self._next[tp] = self._sought[tp] = offset
        self._seeks[tp] += 1

    def seek_failed(self, tp) -> None:
        """The last seek of ``tp`` did not happen: records are not being read again."""
        self._sought.pop(tp, None)

    def seeks(self, tp) -> int:
        """How many seeks of ``tp`` there have been (one moved it if this changed)."""
        return self._seeks[tp]

    def rewinding(self, tp) -> bool:
        """Whether a seek to the expected offset is in effect (stale records may arrive)."""
        want = self._next.get(tp)
        return want is not None and self._sought.get(tp) == want

    def accept(self, tp, offset: int) -> None:
        self._next[tp] = offset + 1


class OrderGuard:
    """Admit a partition's records to the agent only in offset order (reliability point 5).

    ``first_offset(tp, offset)`` asks the broker for the first offset at or after
    ``offset`` that holds a record (None if it cannot tell); ``refuse(message)`` leaves a
    record unacked and uncommitted; ``seek(tp, offset)`` reads a partition again from
    ``offset`` (and tells ``order``, as the worker's patched seek does); ``on_gap(tp,
    kind)`` counts ``"verified"`` gaps (nothing there: a transaction marker, compaction,
    retention) and ``"reread"`` ones (records that never reached the agent, read again).

    >>> import asyncio
    >>> from collections import namedtuple
    >>> p0 = namedtuple("TP", "topic partition")("interactions", 0)
    >>> class Msg:
    ...     def __init__(self, offset): self.tp, self.offset = p0, offset
    ...     def __repr__(self): return f"Msg({self.offset})"
    >>> order, refused, seeks = InputOrder(), [], []
    >>> async def first_offset(tp, offset): return offset   # the broker holds the record
    >>> async def seek(tp, offset): seeks.append(offset); order.sought(tp, offset)
    >>> guard = OrderGuard(order, first_offset, refuse=refused.append, seek=seek)
    >>> order.sought(p0, 10)
    >>> async def admit(*offsets): return [await guard.admit(Msg(o)) for o in offsets]
    >>> asyncio.run(admit(10, 12, 13))   # 11 never arrived: what follows waits
    ['next', 'gap', 'gap']
    >>> refused, seeks                   # refused (never committed), 11 read again once
    ([Msg(12), Msg(13)], [11])
    >>> asyncio.run(admit(11, 12, 10))
    ['next', 'next', 'again']
    """

    def __init__(self, order: InputOrder,
                 first_offset: Callable[..., Awaitable[int | None]],
                 refuse: Callable[..., None],
                 seek: Callable[..., Awaitable[None]],
                 on_gap: Callable[..., None] = lambda tp, kind: None,
                 patience: float = 5.0):
        self.order = order
        self.first_offset, self.on_gap = first_offset, on_gap
        self.refuse, self.seek = refuse, seek
        self.patience = patience
        self._first: dict = {}  # tp -> (expected offset, first offset there)
        self._waiting: dict = {}  # tp -> when records began to be refused awaiting a seek

    async def admit(self, message) -> str:
        """``"next"``: handle ``message``. ``"again"``: it was handled before (skip it; it is
        acked). ``"gap"``: refused, not acked; it comes again once the hole is read."""
        tp, offset = message.tp, message.offset
        verdict = self.order.check(tp, offset)
        if verdict is not GAP:
            if self._waiting and verdict is NEXT:
                self._waiting.pop(tp, None)
            return verdict
        want = self.order.expected(tp)
        cached = self._first.get(tp)
        first = cached[1] if cached and cached[0] == want else None
        if first is None:
            seeks = self.order.seeks(tp)
            first = await self.first_offset(tp, want)
            if self.order.seeks(tp) != seeks:  # sought meanwhile (a rebalance): it comes again
                self.refuse(message)
                return GAP
            self._first[tp] = (want, first)
        if first == offset:  # nothing between: a real gap
            self.order.accept(tp, offset)
            self.on_gap(tp, "verified")
            return NEXT
        self.refuse(message)
        now = time.monotonic()
        since = self._waiting.setdefault(tp, now)
        if self.order.rewinding(tp) and now - since > self.patience:
            log.warning("input partition %d: offset %d has not come back %.0f s after a seek "
                        "to it; seeking again", tp.partition, want, now - since)
            self._waiting[tp] = now
            self.order.seek_failed(tp)
        if not self.order.rewinding(tp):
            log.warning("input partition %d: offsets from %d never reached the agent (got %d);"
                        " reading them again", tp.partition, want, offset)
            self.on_gap(tp, "reread")
            try:
                await self.seek(tp, want)
            except Exception as err:  # e.g. revoked meanwhile: the rebalance seeks it
                log.warning("input partition %d: seek to %d failed: %r", tp.partition, want,
                            err)
        return GAP


class Ownership:
    """Which input partitions' lead state this worker holds whole (reliability point 6).

    Feed it each assignment, in order, with its consumer-group generation;
    :meth:`assigned` returns the partitions whose state must be read again from the
    changelog. A partition stays trusted only while every generation assigns it here: a
    generation missed (a jump in the numbers: this worker was out of the group while
    another may have held the partition) or a partition given away and back means
    another worker may have written its leads meanwhile.

    >>> o = Ownership()
    >>> sorted(o.assigned(1, {0, 1, 2, 3}))          # first assignment: restore everything
    [0, 1, 2, 3]
    >>> for p in (0, 1, 2, 3):
    ...     o.restored(1, p)
    >>> o.assigned(2, {0, 1}), sorted(o.trusted)     # 2 and 3 moved to another worker
    (set(), [0, 1])
    >>> sorted(o.assigned(3, {0, 1, 3}))              # 3 comes back: its leads moved on there
    [3]
    >>> o.restored(2, 3)                              # a restore of an older generation
    >>> sorted(o.trusted)
    [0, 1]
    >>> sorted(o.assigned(5, {0, 1}))                 # generation 4 missed: trust nothing
    [0, 1]
    """

    __slots__ = ("generation", "trusted")

    def __init__(self) -> None:
        self.generation: int | None = None
        self.trusted: set = set()

    def assigned(self, generation: int, partitions) -> set:
        partitions = set(partitions)
        follows = self.generation is not None and generation == self.generation + 1
        self.trusted = self.trusted & partitions if follows else set()
        self.generation = generation
        return partitions - self.trusted

    def restored(self, generation: int, partition) -> None:
        if generation == self.generation:
            self.trusted.add(partition)


class StateRestorer:
    """Keeps ``data`` (lead key -> stored value) holding exactly the leads of the input
    partitions this worker owns, each read whole from its changelog partition (reliability
    point 6).

    ``partition_of(key)`` is a key's partition; ``read(partition)`` is an async iterator
    of the ``(key, value or None)`` records of that changelog partition from its start
    to the end offset it had when the read began. :meth:`on_assigned` drops every lead
    of a partition not trusted (``on_dropped(keys)`` gets those of partitions no longer
    assigned; ``on_released(partitions)`` the partitions themselves) and starts the
    restores (``on_restored(partition, leads, seconds)`` after each); :meth:`ready` waits
    for one. ``settle()``, awaited before each read, delivers
    what this worker itself still has on its way to the changelog (the producer's flush).
    A read that fails is retried; any other error of a restore goes to
    ``on_failure(exc)`` (the worker stops) rather than leaving a partition silently
    unserved. Nothing else may write the leads of a partition that is not trusted.
    """

    def __init__(self, data, partition_of: Callable, read: Callable, on_restored=None,
                 on_dropped=None, retry_delay: float = 1.0, settle=None, on_failure=None,
                 what: str = "lead state", on_released=None):
        self.data, self.partition_of, self.read = data, partition_of, read
        self.what = what
        self.settle = settle
        self.retry_delay = retry_delay
        self.on_restored = on_restored or (lambda partition, n_keys, seconds: None)
        self.on_dropped = on_dropped or (lambda keys: None)
        self.on_failure = on_failure
        self.on_released = on_released or (lambda partitions: None)
        self.ownership = Ownership()
        self._assigned: set = set()
        self._tasks: dict = {}

    def on_assigned(self, generation: int, partitions) -> None:
        partitions = set(partitions)
        last = self.ownership.generation
        follows = last is not None and generation == last + 1
        restore = self.ownership.assigned(generation, partitions)
        keep = self.ownership.trusted
        gone = []  # leads of partitions moved away (the others are about to be read again)
        for k in list(self.data):
            p = self.partition_of(k)
            if p not in keep:
                del self.data[k]
                if p not in partitions:
                    gone.append(k)
        self.on_dropped(gone)
        if self._assigned - partitions:
            self.on_released(self._assigned - partitions)
        # a read under way goes on if the partition stayed here through the rebalance:
        # nobody else can have written it meanwhile
        tasks = {}
        for p, task in self._tasks.items():
            if follows and p in restore and p in self._assigned and not task.done():
                tasks[p] = task
            else:
                task.cancel()
        for p in restore - tasks.keys():
            tasks[p] = asyncio.ensure_future(self._restore(p))
        self._tasks, self._assigned = tasks, partitions

    async def _restore(self, partition) -> None:
        delay = self.retry_delay
        while True:
            started = time.monotonic()
            restored: dict = {}
            try:
                if self.settle is not None:  # this worker's own writes, still on their way
                    await self.settle()
                async with contextlib.aclosing(self.read(partition)) as records:
                    async for key, value in records:
                        if value is None:
                            restored.pop(key, None)
                        else:
                            restored[key] = value
            except asyncio.CancelledError:
                raise
            except Exception as err:  # broker away: keep trying, the agent waits
                log.warning("%s of partition %s: reading its changelog failed (%r); "
                            "trying again in %.1f s", self.what, partition, err, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 30.0)
                continue
            break
        try:
            if self._tasks.get(partition) is not asyncio.current_task():
                return  # superseded by a rebalance (normally cancelled before this)
            self.data.update(restored)
            self.ownership.restored(self.ownership.generation, partition)
            seconds = time.monotonic() - started
            self.on_restored(partition, len(restored), seconds)
            log.info("%s of partition %s restored: %d keys in %.2f s", self.what, partition,
                     len(restored), seconds)
        except Exception as err:
            log.exception("%s of partition %s: restore failed", self.what, partition)
            if self.on_failure is None:
                raise
            self.on_failure(err)

    def trusted(self, partition) -> bool:
        return partition in self.ownership.trusted

    async def ready(self, partition, timeout: float | None = None) -> bool:
        """Wait until ``partition``'s leads are restored: True; False if this worker does
        not own it (an event of a revoked partition), its restore failed, or ``timeout``
        seconds passed."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while partition not in self.ownership.trusted:
            task = self._tasks.get(partition)
            if task is None or task.done():
                return partition in self.ownership.trusted
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                return False
            try:
                await asyncio.wait_for(asyncio.shield(task), left)
            except TimeoutError:
                return False
            except asyncio.CancelledError:
                me = asyncio.current_task()
                if me is not None and me.cancelling():
                    raise  # the waiter itself was cancelled
            except Exception:  # noqa: BLE001 (the restore's own failure: see on_failure)
                return False
        return True
