"""Every use of Faust's and aiokafka's internals, each behind one small function.

Nothing else in leadstream reaches past Faust's public API: the patches that close the
gaps of faust-streaming 0.15's at-least-once delivery (``make_*``) and the accessors for
what Faust keeps private (read positions, committed offsets, the assignor's partitions,
unacked messages) are all here, each with its contract. The rules they serve are the
pure state machines of ``streams.durable``; how each gap was found is told in
``docs/reliability.md``. A Faust or aiokafka upgrade starts by reading this module and
running ``tests/test_faust_internals.py`` (one test per patch that fails without it)
and ``tests/integration/test_reliability.py``.

Apply the patches before the app starts: Faust's fetch loop and the producer buffer's
sending task bind the methods they call when they start.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter, defaultdict
from collections.abc import Callable

import faust
from aiokafka import errors as Errors
from aiokafka.client import ConnectionGroup, CoordinationType
from aiokafka.protocol.api import Request, RequestStruct, Response
from aiokafka.protocol.transaction import EndTxnRequest
from aiokafka.protocol.types import CompactString, Int16, Int32, Int64, Schema, TaggedFields
from faust.types import TP

from leadstream.streams.durable import InputOrder
from leadstream.streams.step import partition_for

log = logging.getLogger(__name__)


# ---- what the agents and timers read and do through Faust's consumer ------------------

def refuse(app: faust.App, message) -> None:
    """Leave ``message`` unhandled and uncommitted: Faust neither acks it nor commits past
    it (the partition is read again from there, here or by its new owner)."""
    message.acked = True
    app.consumer._unacked_messages.discard(message)


def current(app: faust.App, message) -> bool:
    """Whether ``message`` may be handled now: fetched in the consumer's current
    generation, with the flow running (Faust's stream skips the others unacked; the seek
    after a rebalance reads them again)."""
    return (message.generation_id == app.consumer_generation_id
            and app.flow_control.is_active())


def input_positions(app: faust.App, topic: str) -> dict:
    """Per assigned partition of ``topic``: ``(next offset to read, end offset)``. Faust
    keeps the last offset it delivered (``_read_offset``) and the last it committed
    privately; a partition with no metadata yet is left out."""
    consumer = app.consumer
    out = {}
    for tp in consumer.assignment():
        if tp.topic != topic:
            continue
        try:
            end = consumer.highwater(tp)
        except Exception:  # noqa: BLE001 (no metadata yet)
            continue
        read = consumer._read_offset.get(tp)
        pos = read + 1 if read is not None else consumer._committed_offset.get(tp) or 0
        out[tp] = (pos, end or 0)
    return out


def committed_offset(app: faust.App, tp) -> int:
    """The offset of ``tp`` this worker last committed (0 if none)."""
    return app.consumer._committed_offset.get(tp) or 0


def consuming(app: faust.App) -> bool:
    """Whether records flow to the agents now: not paused, not rebalancing (read positions
    legitimately stand still otherwise)."""
    return bool(app.consumer.flow_active and app.flow_control.is_active()
                and not app.rebalancing)


async def seek_back(app: faust.App, tp, offset: int) -> None:
    """Resume fetching ``tp`` and seek it to ``offset``: how a stalled partition (no fetch
    requests after a rebalance, faust-streaming issues 166 and 629) is made to fetch
    again. The seek is the patched one (:func:`make_seek_complete`). No test makes a
    partition stall on demand; the timer's decision is ``StallWatch``'s doctest."""
    consumer = app.consumer
    consumer.resume_partitions({tp})
    await consumer.seek(tp, offset)


def held_partitions(app: faust.App, topic: str) -> set[int] | None:
    """The partitions of ``topic`` this worker holds as active now (None while
    rebalancing), as Faust's partition assignor says."""
    if app.rebalancing:
        return None
    return {tp.partition for tp in app.assignor.assigned_actives() if tp.topic == topic}


# ---- the patches -----------------------------------------------------------------------

def make_at_least_once(app: faust.App, drop_one_in: int = 0,
                       drop_topic: str | None = None) -> InputOrder:
    """Apply the consumer and producer-buffer patches to ``app`` (before it starts):
    :func:`make_flush_durable`, :func:`make_seek_complete`, :func:`make_acks_safe`.
    Returns the seek-aware :class:`~streams.durable.InputOrder` for an
    :class:`~streams.durable.OrderGuard`. ``drop_one_in`` > 0 (tests only) makes the
    fetch lose, once, every record of ``drop_topic`` whose offset is ``n - 1`` modulo
    ``drop_one_in``: the loss the guard exists to catch."""
    order = InputOrder()
    make_flush_durable(app)
    make_seek_complete(app, order, drop_one_in, drop_topic)
    make_acks_safe(app)
    return order


def make_flush_durable(app: faust.App) -> None:
    """Make ``app.producer.buffer.flush()`` drain the buffer completely (reliability
    point 1).

    Faust's ``ProducerBuffer.flush()``, which every offset commit awaits, returns on the
    first 0.1 s without a message sent although messages are still queued, and ignores
    the message its sending task has taken off the queue but not yet handed to the Kafka
    client. Patched, it returns only when the queue is empty and nothing is in flight.
    Call it before the app starts: the buffer's sending task binds ``_send_pending``.
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
    """Make every seek of ``app``'s consumer take effect (reliability points 2 and 3).

    Faust wrongly (2) leaves a partition with nothing committed where its fetch stopped
    when it seeks to the committed offsets after a rebalance (aiokafka's
    ``seek_to_committed`` skips offset 0 and none), and (3) lets the rest of a batch
    fetched before a seek set the read offset again, so the records the seek asked for
    are dropped as old. Patched: such partitions are sought to 0; each partition has an
    epoch, raised on the consumer's thread in the same step as its seek, each fetched
    batch carries the epochs of the step it was fetched in, a record of an older epoch is
    dropped (it is fetched again) and only a record of the current epoch moves the read
    offset. Every seek also sets the next offset ``order`` expects of the partition.
    Call it before the app starts: the fetch loop binds ``getmany`` and the read-offset
    mapping when it starts. The unit tests run Faust's fetch loop with calls to the
    consumer thread made on the event loop; the race between a seek and a fetch on the
    real thread is covered by the SIGKILL test of ``tests/integration/test_reliability.py``
    (where it was found).
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
    """Make ``app``'s consumer refuse the ack of an event it skips on a generation change
    (reliability point 4).

    Faust's pure-Python stream iterator skips the events fetched under the previous
    generation and acks them, so the next commit moves past events never processed.
    Patched, an ack of a message of an older generation, or while the flow is stopped,
    is refused and the message stays uncommitted (the seek after the rebalance reads it
    again). The compiled iterator faust-streaming ships for CPython already skips without
    acking; the patch covers installs without it (``NO_CYTHON``).
    """
    consumer = app.consumer
    ack = consumer.ack

    def safe_ack(message) -> bool:
        if (message.generation_id != app.consumer_generation_id
                or not app.flow_control.is_active()):
            consumer._unacked_messages.discard(message)
            return False  # read again after the seek to the committed offset
        return ack(message)

    consumer.ack = safe_ack


def make_restore_owned(app: faust.App, owned: list) -> None:
    """Switch Faust's changelog recovery off for the tables of ``owned``, a list of
    ``(table, restorer, input topic name)``, and hand each assignment of a table's input
    topic to its :class:`~streams.durable.StateRestorer` instead (reliability point 6).

    Faust's per-generation recovery state machine is hard to check and once hung waiting
    for changelog records that never came. Patched, Faust never reads those tables'
    changelog partitions (they stay paused; the restorers read them with consumers of
    their own) and never deletes their keys; each restorer sees every assignment of the
    current generation before Faust's own rebalance handling runs. No unit test can show
    a hang of Faust's recovery; ``test_workers_joining_leaving_and_killed_move_tables_
    with_their_partitions`` and the SIGKILL test (every partition restored by the last
    worker) in ``tests/integration/test_reliability.py`` cover the whole path.
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
    """Make ``app.producer.flush()`` raise once a watched record failed to be delivered
    (reliability point 7). Returns ``watch(future)`` for the futures the producer's
    ``send`` returns.

    Faust's ``Producer.flush()``, which every offset commit awaits first, returns when
    every record handed to the Kafka client is done, delivered or failed, so a failed
    changelog write would be committed past like a delivered one. Patched, the flush
    raises instead: the worker stops and is restarted from the last good commit.
    """
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


def make_flush_commits(app: faust.App, commit: Callable) -> None:
    """Make ``app.producer.flush()`` also await ``commit()`` (the changelog's open
    transactions, ``streams.changelog``) once everything the producer holds is delivered.

    Faust awaits the producer's flush before every offset commit and on revocation, and
    the restorer before each read: the points where the changelog must hold what the
    offsets about to be committed (or the partition about to be handed over) produced. A
    failed commit raises there, so no offset is committed past state never written.
    """
    producer = app.producer
    flush = producer.flush

    async def flush_and_commit() -> None:
        await flush()
        await commit()

    producer.flush = flush_and_commit


class Lane:
    """Records of one topic, handed from Faust's fetch loop to one agent in batches
    (:func:`make_lane`). ``take()`` waits for records and returns up to ``max_events`` of
    them (Faust ``Message`` objects, in the order fetched); the agent acks each one it
    handled with ``app.consumer.ack`` and leaves the others to :func:`refuse`.

    >>> lane = Lane(max_events=2)
    >>> for offset in range(3):
    ...     lane.put(offset)
    >>> lane.fetched()
    >>> asyncio.run(lane.take()), asyncio.run(lane.take())
    ([0, 1], [2])
    """

    def __init__(self, max_events: int):
        self.max_events = max_events
        self.limit = 4 * max_events  # the fetch loop waits above this
        self.buffer: list = []
        self.ready = asyncio.Event()  # records to take: a fetch ended, or a batch is full
        self.space = asyncio.Event()  # below the limit again

    def put(self, message) -> None:
        buffer = self.buffer
        buffer.append(message)
        if len(buffer) >= self.max_events:
            self.ready.set()

    def fetched(self) -> None:
        """The end of one fetched batch: what it brought can be taken."""
        if self.buffer:
            self.ready.set()

    def full(self) -> bool:
        return len(self.buffer) >= self.limit

    async def take(self) -> list:
        while not self.buffer:
            self.ready.clear()
            await self.ready.wait()
        buffer, n = self.buffer, self.max_events
        batch = buffer[:n]
        del buffer[:n]
        if len(buffer) < self.limit:
            self.space.set()
        if not buffer:
            self.ready.clear()
        return batch


def make_lane(app: faust.App, topic: str, max_events: int) -> Lane:
    """Hand the records of ``topic`` from Faust's fetch loop straight to a :class:`Lane`,
    past the conductor, the channel queue and the stream (issue 16 item 5).

    Faust's fetch loop (``Consumer._drain_messages``) awaits ``wait_first(callback(
    message), suspend_flow.wait())`` for every record: four tasks created and three
    cancelled per record, then the conductor's decode, the stream's queue and iterator
    and the sensors, about as much CPU per record as the worker's whole step. Patched,
    the loop is Faust's own for every other topic; a record of ``topic`` is tracked as
    unacked and appended to the lane without an ``await``, its read offset set as Faust
    sets it, and the agent is woken at the end of each fetch (or when a batch is full).
    The loop waits only when the lane holds ``4 x max_events`` records (back pressure:
    fetching pauses, as Faust's full stream buffer pauses it), or while the flow is
    stopped for a rebalance (as the conductor waits for flow control); a record whose
    wait the rebalance cut short is not buffered (the seek after the rebalance reads it
    again, as for Faust's own callback). The agent must still subscribe ``topic`` (an
    agent on it keeps the consumer subscribed and acks enabled); its stream stays empty.
    Apply before the app starts; :func:`make_seek_complete` first (its ``getmany``).
    """
    consumer = app.consumer
    lane = Lane(max_events)

    async def drain_messages(fetcher) -> None:
        try:
            await _drain(fetcher)
        except consumer.consumer_stopped_errors:
            if app.should_stop:  # stopping anyway (as Faust's loop returns then)
                return
            raise

    async def _drain(fetcher) -> None:
        callback = consumer.callback
        getmany = consumer.getmany
        consumer_stopped = consumer._stopped.is_set
        fetcher_stopped = fetcher._stopped.is_set
        get_read_offset = consumer._read_offset.__getitem__
        set_read_offset = consumer._read_offset.__setitem__
        acks_enabled_for = app.topics.acks_enabled_for
        unacked_add = consumer._unacked_messages.add
        flow = app.flow_control
        suspend = consumer.suspend_flow
        commit_every = consumer._commit_every
        put = lane.put
        since_yield = 0
        while not (consumer_stopped() or fetcher_stopped()):
            batch = getmany(timeout=1.0)
            await asyncio.sleep(0)
            if consumer.should_stop:
                continue
            try:
                async for tp, message in batch:
                    since_yield += 1
                    if since_yield > 100:
                        await asyncio.sleep(0)
                        since_yield = 0
                    offset = message.offset
                    read = get_read_offset(tp)
                    if read is not None and offset < read:
                        continue  # older than what was delivered: Faust drops it too
                    if read and offset - read > 1 and acks_enabled_for(tp.topic):
                        await consumer._add_gap(tp, read + 1, offset)
                    if commit_every is not None and consumer._n_acked >= commit_every:
                        consumer._n_acked = 0
                        lane.fetched()
                        await consumer.commit()
                    if tp.topic != topic:
                        lane.fetched()  # the callback may wait: let the agent take meanwhile
                        await consumer.wait_first(callback(message), suspend.wait())
                    elif _lane_open(lane, flow) or await _lane_wait(consumer, lane, flow):
                        message.tracked = True
                        unacked_add(message)
                        put(message)
                    set_read_offset(tp, offset)
            finally:
                await batch.aclose()
            lane.fetched()

    consumer._drain_messages = drain_messages
    return lane


def _lane_open(lane: Lane, flow) -> bool:
    return flow.is_active() and not lane.full()


async def _lane_wait(consumer, lane: Lane, flow) -> bool:
    """Wait for room in the lane and for the flow (False: a rebalance cut it short)."""
    lane.fetched()  # let the agent take what is there
    while not _lane_open(lane, flow):
        if consumer.suspend_flow.is_set():
            return False
        if not flow.is_active():
            await consumer.wait_first(flow.acquire(), consumer.suspend_flow.wait())
        else:
            lane.space.clear()
            await consumer.wait_first(lane.space.wait(), consumer.suspend_flow.wait())
        if consumer.should_stop:
            return False
    return True


def make_fetch_prompt(app: faust.App, max_wait_ms: int, min_bytes: int = 1) -> None:
    """Let the broker hold a fetch of ``app``'s consumer at most ``max_wait_ms`` (Faust
    fixes aiokafka's ``fetch_max_wait_ms`` at 1,500 ms), or until ``min_bytes`` are there
    to return.

    aiokafka leaves a partition whose fetched records are still unconsumed out of its next
    fetch request, and sends that request for the node's other partitions once its
    prefetch backoff (0.1 s) has passed; a node has one fetch in flight at a time. A step
    longer than 0.1 s (a batch of a few hundred events, or of saves due lists) is enough:
    the request goes out without the busy interactions partitions, the broker holds it the
    whole wait when the partitions it names are idle (the agent-facts and properties
    topics), and the interactions records that arrive meanwhile wait behind it. Each fetch
    then brings 1.5 s of records, whose step takes long enough to start the next such
    fetch: at 1,000 events/s of simulated traffic the recommendations' p50 stayed at 1.3-
    1.5 s while the worker kept 0.6 of a core busy (docs/benchmarks.md, 2026-12-08), and a
    plain consumer of the same topic read each record within 6 ms. With a short wait the
    stall is bounded by it; ``min_bytes`` then keeps fetches from returning a record or
    two each under load (each fetch costs the consumer's thread a round of its own), for
    at most ``max_wait_ms`` more latency when the input is quiet. Apply before the app
    starts (the consumer is created when it does).
    """
    thread = app.consumer._thread
    create = thread._create_worker_consumer

    def create_prompt(transport):
        consumer = create(transport)
        consumer._fetch_max_wait_ms = int(max_wait_ms)  # read by its fetcher at start()
        consumer._fetch_min_bytes = int(min_bytes)
        return consumer

    thread._create_worker_consumer = create_prompt


def make_tables_routed(app: faust.App, partitions: Callable[[str], int | None]) -> None:
    """Make Faust's table routes (``@app.table_route``: the ``/leads/{id}`` views) find a
    key's partition without the producer's metadata: ``partitions(topic)`` the partition
    count of a table's changelog topic (None: ask the producer, as Faust does).

    Faust's router hashes the key with ``app.producer.key_partition``, which reads the
    aiokafka producer's cluster metadata for the changelog topic. That producer keeps
    metadata only for the topics it sends to once it tracks any, and the lead table's
    changelog is written by the fence's own transactional producers
    (``streams.changelog``), never by it: after a metadata refresh without the topic
    every lead route answered 500 (``TypeError: 'NoneType' object is not iterable``;
    found by ``leadstream bench pipeline``). The partition is Kafka's default
    partitioner of the raw key, as the lead's changelog records are written.
    """
    producer = app.producer
    key_partition = producer.key_partition

    def routed(topic: str, key: bytes):
        n = partitions(topic)
        if n is None:
            return key_partition(topic, key)
        return TP(topic, partition_for(key, n))

    producer.key_partition = routed


# ---- aiokafka: a transactional producer renewed without fencing the partition's owner ----

class _InitProducerIdResponse_v3(Response):
    API_KEY, API_VERSION = 22, 3
    SCHEMA = Schema(("throttle_time_ms", Int32), ("error_code", Int16),
                    ("producer_id", Int64), ("producer_epoch", Int16), ("tags", TaggedFields))


class _InitProducerIdRequest_v3(RequestStruct):
    FLEXIBLE_VERSION = True
    API_KEY, API_VERSION = 22, 3
    RESPONSE_TYPE = _InitProducerIdResponse_v3
    SCHEMA = Schema(("transactional_id", CompactString("utf-8")),
                    ("transaction_timeout_ms", Int32), ("producer_id", Int64),
                    ("producer_epoch", Int16), ("tags", TaggedFields))


class _BumpEpochRequest(Request[_InitProducerIdRequest_v3]):
    """InitProducerId naming the epoch it expects (KIP-360, Kafka 2.5+): the coordinator
    bumps that epoch, or answers PRODUCER_FENCED if the id has moved on since."""

    API_KEY = 22

    def __init__(self, transactional_id: str, timeout_ms: int, pid: int, epoch: int):
        self.args = (transactional_id, timeout_ms, pid, epoch, {})

    def build(self, request_struct_class):
        return request_struct_class(*self.args)


_RETRY = (Errors.CoordinatorNotAvailableError, Errors.NotCoordinatorError,
          Errors.CoordinatorLoadInProgressError, Errors.ConcurrentTransactions)
_FENCED = (Errors.ProducerFenced, Errors.InvalidProducerEpoch)
_PRODUCER_FENCED = 90  # an error code aiokafka 0.14 does not name


async def renew_producer(failed, fresh, *, backoff: float = 0.2) -> None:
    """Start ``fresh`` (an unstarted ``AIOKafkaProducer`` with the same
    ``transactional_id``) in place of ``failed``, a started one whose sending task died on
    an error that was not a fence (aiokafka 0.14 gives up on some retriable errors: a
    coordinator connection cut as the broker stops, aio-libs/aiokafka#1151 and #1004).

    ``fresh.start()`` alone would send a plain InitProducerId, which bumps whatever epoch
    the id has: had another worker taken the partition over meanwhile, that would fence
    the rightful owner and let this worker write over its state. Instead the failed
    producer's epoch is ended and bumped only if it is still current: its open
    transaction is aborted (EndTxn), then InitProducerId names the epoch it expects, and
    ``fresh`` starts with the epoch the coordinator returns (so its sequence numbers start
    afresh). Raises ``aiokafka.errors.ProducerFenced`` if another producer took the id;
    waits, retrying, while the coordinator is away.
    """
    txn = failed._txn_manager
    tid, pid, epoch = txn.transactional_id, txn.producer_id, txn.producer_epoch
    client = failed.client
    requests = (lambda: EndTxnRequest(tid, pid, epoch, False),
                lambda: _BumpEpochRequest(tid, txn.transaction_timeout_ms, pid, epoch))
    for i, make in enumerate(requests):
        while True:
            try:
                node = await client.coordinator_lookup(CoordinationType.TRANSACTION, tid)
                resp = await client.send(node, make(), group=ConnectionGroup.COORDINATION)
            except Errors.KafkaError as err:  # the broker away or moving: ask again
                log.info("transactional id %s: renewal waits (%r)", tid, err)
                await asyncio.sleep(backoff)
                continue
            error = Errors.for_code(resp.error_code)
            if error in _FENCED or resp.error_code == _PRODUCER_FENCED:
                raise Errors.ProducerFenced()
            if error in _RETRY:
                await asyncio.sleep(backoff)
                continue
            if error is Errors.NoError or (i == 0 and error is Errors.InvalidTxnState):
                break  # aborted (or nothing was open: committed or never begun)
            raise error()
    fresh._txn_manager.set_pid_and_epoch(resp.producer_id, resp.producer_epoch)
    await fresh.start()  # its sender finds a producer id and sends no InitProducerId


def producer_failure(producer) -> BaseException | None:
    """Why ``producer``'s sending task died (aiokafka fails every later call of a
    transactional producer with a bare assertion or "not in transaction" then), or None
    while it runs."""
    task = producer._sender.sender_task
    if task is None or not task.done() or task.cancelled():
        return None
    return task.exception()
