"""Patches that make Faust's at-least-once delivery hold across crashes and rebalances.

The pipeline is idempotent per lead by input offset (``streams.pipeline``), so reading an
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
   client's ``seek`` from the event loop's thread while a fetch may be running.)

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
"""

from __future__ import annotations

import asyncio
import logging
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

    __slots__ = ("_next", "_sought")

    def __init__(self) -> None:
        self._next: dict = {}
        self._sought: dict = {}

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

    def rewinding(self, tp) -> bool:
        """Whether a seek to the expected offset is in effect (stale records may arrive)."""
        want = self._next.get(tp)
        return want is not None and self._sought.get(tp) == want

    def accept(self, tp, offset: int) -> None:
        self._next[tp] = offset + 1


class OrderGuard:
    """Admit a partition's records to the agent only in offset order (point 5 above).

    ``first_offset(tp, offset)`` asks the broker for the first offset at or after
    ``offset`` that holds a record (None if it cannot tell); ``on_gap(tp, kind)`` counts
    ``"verified"`` gaps (nothing there: a transaction marker, compaction, retention) and
    ``"reread"`` ones (records that never reached the agent, read again).
    """

    def __init__(self, app: faust.App, order: InputOrder,
                 first_offset: Callable[..., Awaitable[int | None]],
                 on_gap: Callable[..., None] = lambda tp, kind: None):
        self.app, self.order = app, order
        self.first_offset, self.on_gap = first_offset, on_gap
        self._first: dict = {}  # tp -> (expected offset, first offset there)

    async def admit(self, message) -> str:
        """``"next"``: handle ``message``. ``"again"``: it was handled before (skip it; it is
        acked). ``"gap"``: refused, not acked; it comes again once the hole is read."""
        tp, offset = message.tp, message.offset
        verdict = self.order.check(tp, offset)
        if verdict is not GAP:
            return verdict
        want = self.order.expected(tp)
        cached = self._first.get(tp)
        first = cached[1] if cached and cached[0] == want else None
        if first is None:
            first = await self.first_offset(tp, want)
            self._first[tp] = (want, first)
        if first == offset:  # nothing between: a real gap
            self.order.accept(tp, offset)
            self.on_gap(tp, "verified")
            return NEXT
        message.acked = True  # refused: Faust neither acks nor commits it
        self.app.consumer._unacked_messages.discard(message)
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
    and only a record of the current epoch may move Faust's read offset. Seeks run on
    the consumer's thread like fetches, so a batch drained before a seek is tagged
    before that seek raises the epoch. Call it before the app starts: the fetch loop
    binds ``getmany`` and the read-offset mapping when it starts. Every seek also sets
    the next offset ``order`` expects of the partition.
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

    async def fetch_tagged(active_partitions, timeout):
        records = await fetch(active_partitions, timeout)
        tagged["fetch"] = epoch.copy()  # in the step that receives the batch
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

    thread = consumer._thread

    async def seek_now(tp, offset: int) -> None:
        key = (tp.topic, tp.partition)
        seeking[key] += 1
        try:
            await thread.call_thread(thread.seek, tp, offset)
            epoch[key] += 1
            order.sought(tp, offset)
            consumer._read_offset[tp] = offset if offset else None
        finally:
            seeking[key] -= 1

    seek_to_committed = consumer.seek_to_committed

    async def seek_complete():
        committed = await seek_to_committed()  # seeks those with an offset > 0
        changelogs = app.tables.changelog_topics
        for tp, offset in committed.items():
            if offset:
                epoch[(tp.topic, tp.partition)] += 1
                order.sought(tp, offset)
            elif tp.topic not in changelogs:
                await seek_now(tp, 0)
        return committed

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
