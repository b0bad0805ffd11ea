"""Patches that make Faust's at-least-once delivery hold across crashes and rebalances.

The pipeline is idempotent per lead by input offset (``streams.step``), so reading an
event twice is harmless; what must never happen is a committed offset whose event never
reached the tables. In faust-streaming 0.15 four paths do exactly that; each was found
with ``tests/integration/test_reliability.py`` (two SIGKILLs mid-stream) and per-offset
logging of the worker:

1. **Flush before commit.** Faust commits a source offset after ``producer.flush()``,
   so every changelog write of the events before it is on the broker first. But
   ``ProducerBuffer.flush()`` waits for one message at a time with a 0.1 s timeout and
   returns on the first timeout with messages still queued, and it ignores the message
   its sending task has taken off the queue but not yet handed to the Kafka client.
   :func:`make_flush_durable` drains both before returning; ``Producer.flush()`` then
   waits for the aiokafka client's acks.

2. **Seek when nothing is committed.** After every rebalance Faust seeks each partition
   to its committed offset, because records fetched while the partition was paused for
   table recovery were dropped. aiokafka's ``seek_to_committed`` does nothing for a
   partition with no committed offset (or offset 0), so those dropped records are lost:
   a worker replacing one killed before its first commit started at offset 360 (then
   232) of every partition instead of 0. :func:`make_seek_complete` seeks such
   partitions to the beginning (``auto_offset_reset=earliest``); replays are skipped.

3. **A seek is not undone by the batch in flight.** Faust's fetch loop drops every record
   below the partition's "read offset" and sets that offset after delivering each record.
   A seek resets it, but the loop goes on delivering the rest of the batch it fetched
   before the seek (the stream skips those records: recovery is not finished) and sets
   the read offset again, so the records the seek asked for are then dropped as old:
   a replacement worker logged ``read offset 152 -> None`` (the seek) then
   ``None -> 153`` (the stale batch) and never processed offsets 0-152; with nothing
   committed yet, Faust's commit does not see that gap at the head and commits past it.
   :func:`make_seek_complete` drops what a batch fetched before a seek still holds for
   the partitions the seek moved, and ignores read offsets such a batch sets. (It also
   runs seeks on the consumer's thread, where fetches run: Faust calls the Kafka
   client's ``seek`` from the event loop's thread while a fetch may be running.) Which
   batch is stale is decided on the consumer's thread too, in the same step as the seek
   and as the fetch's return: deciding it on the event loop's thread after the seek had
   returned let a fetch from the *new* position finish in between and be dropped as
   stale. That was the loss behind three failures of the SIGKILL test on fresh clones
   (two CI runs and one here; each time one input partition's leads short or never
   processed, lag 0): the broker's data of the last
   one shows input partition 1 processed up to offset 187 by the killed worker, its
   changelog complete up to there, and nothing of that partition ever processed or
   committed by the replacement (the order guard of (5) refused every record after the
   dropped ones, waiting for the sought offset 0; before the guard, Faust committed
   past them).

4. **No commit for skipped events.** After a generation change Faust's pure-Python stream
   iterator skips the events fetched under the previous generation and *acks* them; the
   next commit then moves past events that were never processed. :func:`make_acks_safe`
   refuses those acks (the seek of (2) reads them again). The compiled iterator that
   faust-streaming ships for CPython inlines the ack and already skips without acking;
   the patch covers installs without it (``NO_CYTHON``).

5. **Every offset, in order.** The four above are the holes found so far; a record that
   still goes missing between the Kafka client and the agent would otherwise be committed
   past (Faust takes a jump in offsets for a gap, e.g. a transaction marker, and commits
   across it) and, worse, the lead's later offsets would make the per-lead idempotency
   skip it for good. :class:`InputOrder` and :class:`OrderGuard` make the interactions
   agent take each partition's offsets in order: a record past a hole is refused (not
   acked, so never committed) until the broker says the hole is real (no records there)
   or the partition has been sought back and has read the missing records again. One CI
   run of the SIGKILL test ended with 39 events of three leads missing although the
   worker had read every offset, and no traced run has reproduced it since; whatever the
   cause, a record that does not reach the agent now ends in a warning, a count in
   ``leadstream_input_gaps_total`` and a re-read, never in a commit past it.

6. **Lead state restored by the worker, not by Faust's recovery.** Faust's restore of a
   table from its changelog is an intricate per-generation state machine in
   faust-streaming 0.15 (offsets kept across rebalances, buffers applied late, a memory
   store that deletes keys of partitions it considers gone); it was suspected of the
   losses of (3) until the broker's data showed the changelog and the restored state
   complete; it also hung once here on the agent-stats table, waiting for changelog
   records that never came. :class:`Ownership` and :class:`StateRestorer` replace it for
   both tables with a rule that can be checked: a partition's leads
   are trusted only if this worker held the partition in every generation since it last
   read the partition's changelog; on any other assignment its in-memory copy is dropped
   and the changelog partition is read again from its start to its end offset (with a
   consumer of its own) before the agent handles any event of that partition. Faust's
   recovery is switched off for them (:func:`make_restore_owned`).

7. **No commit after a failed delivery.** ``Producer.flush()`` returns when every record
   handed to the Kafka client is done, delivered or failed; a failed changelog write
   would then be committed past like a delivered one. :func:`make_delivery_checked`
   makes the flush before each commit raise once any watched record failed, so the
   worker stops (and is restarted from the last good commit) instead of committing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable

import faust

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
    """Per input partition, the next offset the agent must handle (point 5 above).

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


def refuse(app: faust.App, message) -> None:
    """Leave ``message`` unhandled and uncommitted: Faust neither acks it nor commits past
    it (the partition is read again from there, here or by its new owner)."""
    message.acked = True
    app.consumer._unacked_messages.discard(message)


class OrderGuard:
    """Admit a partition's records to the agent only in offset order (point 5 above).

    ``first_offset(tp, offset)`` asks the broker for the first offset at or after
    ``offset`` that holds a record (None if it cannot tell); ``on_gap(tp, kind)`` counts
    ``"verified"`` gaps (nothing there: a transaction marker, compaction, retention) and
    ``"reread"`` ones (records that never reached the agent, read again).
    """

    def __init__(self, app: faust.App, order: InputOrder,
                 first_offset: Callable[..., Awaitable[int | None]],
                 on_gap: Callable[..., None] = lambda tp, kind: None,
                 patience: float = 5.0):
        self.app, self.order = app, order
        self.first_offset, self.on_gap = first_offset, on_gap
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
                refuse(self.app, message)
                return GAP
            self._first[tp] = (want, first)
        if first == offset:  # nothing between: a real gap
            self.order.accept(tp, offset)
            self.on_gap(tp, "verified")
            return NEXT
        refuse(self.app, message)
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
                await self.app.consumer.seek(tp, want)
            except Exception as err:  # e.g. revoked meanwhile: the rebalance seeks it
                log.warning("input partition %d: seek to %d failed: %r", tp.partition, want,
                            err)
        return GAP


class Ownership:
    """Which input partitions' lead state this worker holds whole (point 6 above).

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
    partitions this worker owns, each read whole from its changelog partition (point 6).

    ``partition_of(key)`` is a key's partition; ``read(partition)`` is an async iterator
    of the ``(key, value or None)`` records of that changelog partition from its start
    to the end offset it had when the read began. :meth:`on_assigned` drops every lead
    of a partition not trusted (``on_dropped(keys)`` gets those of partitions no longer
    assigned) and starts the restores (``on_restored(partition, leads, seconds)`` after
    each); :meth:`ready` waits for one. ``settle()``, awaited before each read, delivers
    what this worker itself still has on its way to the changelog (the producer's flush).
    A read that fails is retried; any other error of a restore goes to
    ``on_failure(exc)`` (the worker stops) rather than leaving a partition silently
    unserved. Nothing else may write the leads of a partition that is not trusted.
    """

    def __init__(self, data, partition_of: Callable, read: Callable, on_restored=None,
                 on_dropped=None, retry_delay: float = 1.0, settle=None, on_failure=None,
                 what: str = "lead state"):
        self.data, self.partition_of, self.read = data, partition_of, read
        self.what = what
        self.settle = settle
        self.retry_delay = retry_delay
        self.on_restored = on_restored or (lambda partition, n_keys, seconds: None)
        self.on_dropped = on_dropped or (lambda keys: None)
        self.on_failure = on_failure
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


def make_restore_owned(app: faust.App, owned: list) -> None:
    """Switch Faust's changelog recovery off for the tables of ``owned``, a list of
    ``(table, restorer, input topic name)``, and hand each assignment of a table's input
    topic to its :class:`StateRestorer` instead (point 6 above).

    Faust then never reads those tables' changelog partitions (they stay paused; the
    restorers read them with consumers of their own) and never deletes their keys.
    """
    tables = app.tables
    on_rebalance = tables.on_rebalance

    def skip(add):
        def wrapped(t, tp) -> None:
            if not any(t is table for table, _, _ in owned):
                add(t, tp)
        wrapped.skips = True  # type: ignore[attr-defined]
        return wrapped

    async def rebalanced(assigned, revoked, newly_assigned, generation_id=0) -> None:
        recovery = tables.recovery  # created when the table manager starts
        if not getattr(recovery.add_active, "skips", False):
            recovery.add_active = skip(recovery.add_active)
            recovery.add_standby = skip(recovery.add_standby)
        if generation_id == app.consumer_generation_id:  # else Faust ignores it too
            for _, restorer, topic in owned:
                restorer.on_assigned(generation_id,
                                     {tp.partition for tp in assigned if tp.topic == topic})
        await on_rebalance(assigned, revoked, newly_assigned, generation_id)

    tables.on_rebalance = rebalanced


def make_delivery_checked(app: faust.App) -> Callable[[asyncio.Future], None]:
    """Patch ``app``'s producer so ``flush()`` (which every offset commit awaits first)
    raises once a watched record failed to be delivered (point 7 above). Returns
    ``watch(future)`` for the futures the producer's ``send`` returns."""
    producer = app.producer
    flush = producer.flush
    failed: list = []

    def done(fut: asyncio.Future) -> None:
        if not fut.cancelled() and fut.exception() is not None:
            if not failed:
                log.error("a record was not delivered (%r): no offset is committed from "
                          "now on, the worker stops", fut.exception())
            failed.append(fut.exception())

    async def checked_flush() -> None:
        await flush()
        if failed:
            raise RuntimeError(f"{len(failed)} records were not delivered (first: "
                               f"{failed[0]!r}): refusing to commit past them")

    producer.flush = checked_flush
    return lambda fut: fut.add_done_callback(done)


def make_at_least_once(app: faust.App, drop_one_in: int = 0,
                       drop_topic: str | None = None) -> InputOrder:
    """Apply the patches to ``app`` (before it starts); returns the seek-aware
    :class:`InputOrder` for an :class:`OrderGuard`. ``drop_one_in`` > 0 (tests only) makes
    the fetch lose, once, every record of ``drop_topic`` whose offset is ``n - 1`` modulo
    ``drop_one_in``: the loss the guard exists to catch."""
    order = InputOrder()
    make_flush_durable(app)
    make_seek_complete(app, order, drop_one_in, drop_topic)
    make_acks_safe(app)
    return order


def make_flush_durable(app: faust.App) -> None:
    """Patch ``app``'s producer buffer so ``flush()`` drains it completely.

    Call it before the app starts: the buffer's sending task picks up the wrapped
    ``_send_pending`` when it starts.
    """
    buffer = app.producer.buffer
    in_flight = 0
    send = buffer._send_pending

    async def send_pending(fut) -> None:
        nonlocal in_flight
        in_flight += 1
        try:
            await send(fut)
        finally:
            in_flight -= 1

    async def flush() -> None:
        while buffer.size or in_flight:
            if buffer.state != "running":
                raise RuntimeError("Cannot flush: producer buffer not running")
            buffer.message_sent.clear()
            try:
                await asyncio.wait_for(buffer.message_sent.wait(), timeout=0.1)
            except TimeoutError:
                continue

    buffer._send_pending = send_pending
    buffer.flush = flush


def make_seek_complete(app: faust.App, order: InputOrder, drop_one_in: int = 0,
                       drop_topic: str | None = None) -> None:
    """Patch ``app``'s consumer so a seek always takes effect (points 2 and 3 above).

    Each partition has an epoch, raised when a seek of it has completed; each fetched
    batch is tagged with the epochs current when the fetch completed. A record whose
    partition was seeked since is dropped (it is fetched again from the new position),
    and only a record of the current epoch may move Faust's read offset. Both steps run
    on the consumer's thread, in the same step as the seek and as the fetch's return:
    a batch fetched after a seek always carries that seek's epoch. (Raising the epoch on
    the event loop's thread once the seek had returned, as an earlier version did, let a
    fetch from the new position complete in between and be tagged with the old epoch:
    the records from the sought offset on were then dropped as stale, and the partition
    starved or, before the order guard, was committed past; CI lost every lead of one
    partition that way.) Call it before the app starts: the fetch loop binds ``getmany``
    and the read-offset mapping when it starts. Every seek also sets the next offset
    ``order`` expects of the partition.
    """
    consumer = app.consumer
    dropped: set = set()  # fault injection (tests): each record lost once
    epoch: Counter = Counter()  # per (topic, partition)
    tagged: dict[str, Counter] = {"fetch": Counter(), "delivered": Counter()}
    seeking: Counter = Counter()

    class ReadOffsets(defaultdict):
        """Faust's read offsets, refusing writes for records fetched before a seek."""

        def __setitem__(self, tp, offset) -> None:
            key = (tp.topic, tp.partition)
            if seeking[key] or tagged["delivered"][key] == epoch[key]:
                super().__setitem__(tp, offset)

        def update(self, offsets) -> None:  # only ``perform_seek`` writes in bulk
            for tp, offset in dict(offsets).items():
                super().__setitem__(tp, offset)

    consumer._read_offset = ReadOffsets(lambda: None, consumer._read_offset)
    fetch, getmany = consumer._getmany, consumer.getmany
    thread = consumer._thread
    fetch_records = thread._fetch_records

    class Tagged(dict):
        """A fetched batch with the epochs current when it was fetched."""

        epochs: Counter

    async def fetch_records_tagged(*args, **kwargs):
        records = Tagged(await fetch_records(*args, **kwargs))
        records.epochs = epoch.copy()  # consumer's thread, the step the fetch returned in
        return records

    async def fetch_tagged(active_partitions, timeout):
        records = await fetch(active_partitions, timeout)
        tagged["fetch"] = records.epochs if isinstance(records, Tagged) else epoch.copy()
        return records

    async def getmany_current(timeout: float):
        batch = getmany(timeout=timeout)
        try:
            async for tp, message in batch:
                key = (tp.topic, tp.partition)
                if epoch[key] != tagged["fetch"][key]:
                    continue  # fetched before a seek of this partition: read again
                if (drop_one_in and tp.topic == drop_topic
                        and message.offset % drop_one_in == drop_one_in - 1
                        and (key, message.offset) not in dropped):
                    dropped.add((key, message.offset))
                    continue
                tagged["delivered"][key] = epoch[key]
                yield tp, message
        finally:
            await batch.aclose()

    def seek_in_thread(tp, offset: int) -> None:
        thread.seek(tp, offset)
        epoch[(tp.topic, tp.partition)] += 1  # the same step: no fetch returns in between

    async def seek_now(tp, offset: int) -> None:
        key = (tp.topic, tp.partition)
        seeking[key] += 1
        # the order first: a record the agent gets from here on is measured against the
        # sought offset, whenever the event loop resumes after the seek
        order.sought(tp, offset)
        try:
            await thread.call_thread(seek_in_thread, tp, offset)
            consumer._read_offset[tp] = offset if offset else None
        except BaseException:
            order.seek_failed(tp)  # the next hole the guard sees seeks again
            raise
        finally:
            seeking[key] -= 1

    async def seek_to_committed_in_thread():
        committed = await thread._ensure_consumer().seek_to_committed()  # those > 0
        for tp, offset in committed.items():
            if offset:  # the step the seeks were made in: no fetch returned in between
                epoch[(tp.topic, tp.partition)] += 1
        return committed

    async def seek_complete():
        committed = await thread.call_thread(seek_to_committed_in_thread)
        changelogs = app.tables.changelog_topics
        for tp, offset in committed.items():
            if offset:
                order.sought(tp, offset)
            elif tp.topic not in changelogs:
                await seek_now(tp, 0)
        return committed

    thread._fetch_records = fetch_records_tagged
    consumer._getmany = fetch_tagged
    consumer.getmany = getmany_current
    consumer.seek = seek_now
    consumer.seek_to_committed = seek_complete


def make_acks_safe(app: faust.App) -> None:
    """Patch ``app``'s consumer so events skipped on a generation change stay uncommitted."""
    consumer = app.consumer
    ack = consumer.ack

    def safe_ack(message) -> bool:
        if (message.generation_id != app.consumer_generation_id
                or not app.flow_control.is_active()):
            consumer._unacked_messages.discard(message)
            return False  # read again after the seek to the committed offset
        return ack(message)

    consumer.ack = safe_ack
