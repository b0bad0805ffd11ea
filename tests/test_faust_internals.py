"""Each patch of streams/faust_internals.py against Faust's own classes, with fakes for the
Kafka client only: every test runs the failure with Faust alone (``patched=False``: the
gap shows) and with the patch (it is closed), so a Faust upgrade that fixes a gap, or
breaks a patch, shows here. Patches no unit test can show name the integration test
that covers them (docs/reliability.md)."""

from __future__ import annotations

import asyncio

import faust
import pytest
from aiokafka.structs import ConsumerRecord
from faust.types import TP

from leadstream.streams import faust_internals as fi
from leadstream.streams.durable import InputOrder

INPUT = TP("interactions", 0)


def _app() -> faust.App:
    return faust.App("patch-test", broker="kafka://127.0.0.1:1", store="memory://",
                     autodiscover=False, web_enabled=False)


def _record(tp, offset: int) -> ConsumerRecord:
    return ConsumerRecord(tp.topic, tp.partition, offset, 0, 0, b"k", b"v", None, 1, 1, [])


class Kafka:
    """A stand-in for the aiokafka consumer behind Faust's consumer thread: one partition's
    log of ``size`` records, a fetch position, committed offsets, aiokafka's seek rules."""

    def __init__(self, size: int, position: int = 0, committed=None, batch: int = 10):
        self.size, self.batch = size, batch
        self.position = {INPUT: position}
        self.committed = {INPUT: committed}

    def seek(self, tp, offset: int) -> None:
        self.position[tp] = offset

    async def seek_to_committed(self):  # aiokafka: seeks only to offsets > 0
        for tp, offset in self.committed.items():
            if offset and offset > 0:
                self.seek(tp, offset)
        return dict(self.committed)

    def fetch(self) -> dict:
        pos = self.position[INPUT]
        end = min(pos + self.batch, self.size)
        self.position[INPUT] = end
        return {INPUT: [_record(INPUT, o) for o in range(pos, end)]} if end > pos else {}


class Thread:
    """Faust's consumer thread, run on the event loop: ``call_thread`` calls at once."""

    def __init__(self, kafka: Kafka):
        self.kafka = kafka

    async def call_thread(self, fun, *args, **kwargs):
        result = fun(*args, **kwargs)
        return await result if asyncio.iscoroutine(result) else result

    def _ensure_consumer(self) -> Kafka:
        return self.kafka

    def seek(self, tp, offset: int) -> None:
        self.kafka.seek(tp, offset)

    async def seek_to_committed(self):
        return await self.call_thread(self.kafka.seek_to_committed)

    async def _fetch_records(self, consumer, active_partitions, timeout=None, max_records=None):
        records = consumer.fetch()
        if not records:
            await asyncio.sleep(0.01)
        return records

    async def getmany(self, active_partitions, timeout):
        return await self.call_thread(self._fetch_records, self.kafka, active_partitions,
                                      timeout=timeout)

    def highwater(self, tp) -> int:
        return self.kafka.size

    def assignment(self) -> set:
        return {INPUT}


def _consumer(app: faust.App, kafka: Kafka, patched: bool):
    consumer = app.consumer
    consumer._thread = Thread(kafka)
    consumer._set_active_tps({INPUT})
    order = InputOrder()
    if patched:
        fi.make_seek_complete(app, order)
    return consumer, order


# ---- point 1: flush before commit drains the producer buffer --------------------------

@pytest.mark.parametrize("patched", [False, True])
def test_flush_waits_for_every_queued_and_in_flight_message(patched):
    """Faust's ``ProducerBuffer.flush()`` returns after 0.1 s without a send, with
    messages still queued, and ignores the one its sending task holds."""

    async def run():
        app = _app()
        buffer = app.producer.buffer
        sent: list = []

        async def slow_send(fut) -> None:  # the Kafka client takes its time
            await asyncio.sleep(0.15)
            sent.append(fut)

        buffer._send_pending = slow_send
        if patched:
            fi.make_flush_durable(app)
        await buffer.start()
        try:
            for i in range(3):
                buffer.put(i)
            await asyncio.sleep(0.01)  # the sending task takes the first one
            await buffer.flush()
            return len(sent)
        finally:
            while len(sent) < 3:  # let Faust's own flush on stop find the queue empty
                await asyncio.sleep(0.05)
            await buffer.stop()

    assert (asyncio.run(run()) == 3) is patched


# ---- point 2: a partition with nothing committed is sought to its start ---------------

@pytest.mark.parametrize("patched", [False, True])
def test_the_seek_after_a_rebalance_moves_a_partition_with_nothing_committed(patched):
    """Records fetched while the partition was paused for recovery are dropped; Faust then
    seeks every partition to its committed offset, which for none is no seek at all."""

    async def run():
        app = _app()
        kafka = Kafka(size=400, position=360, committed=None)  # fetched up to 360, dropped
        consumer, order = _consumer(app, kafka, patched)
        await consumer.perform_seek()  # what Faust does after every rebalance
        return kafka.position[INPUT], order.expected(INPUT)

    position, expected = asyncio.run(run())
    assert (position, expected) == ((0, 0) if patched else (360, None))


# ---- point 3: a seek is not undone by the batch fetched before it ---------------------

@pytest.mark.parametrize("patched", [False, True])
def test_a_seek_during_a_batch_reads_the_sought_records(patched):
    """Faust's fetch loop (``Consumer._drain_messages``, run here as it is) delivers a
    batch fetched before a seek to 0 and sets the read offset after each record, so the
    records from 0 are dropped as older than the read offset when they come."""

    async def run():
        app = _app()
        kafka = Kafka(size=200, position=150)
        consumer, _ = _consumer(app, kafka, patched)
        seen: list[int] = []
        fetcher = type("Fetcher", (), {})()
        fetcher._stopped = asyncio.Event()

        async def callback(message) -> None:  # the agents' side of the loop
            seen.append(message.offset)
            if message.offset == 152 and seen.count(152) == 1:
                await consumer.seek(INPUT, 0)  # e.g. recovery, after a rebalance
            if message.offset == 199:  # the end of the log
                fetcher._stopped.set()

        consumer.callback = callback
        await asyncio.wait_for(consumer._drain_messages(fetcher), 10)
        return seen[seen.index(152) + 1:]

    after_seek = asyncio.run(run())
    if patched:
        assert after_seek == list(range(200))  # the stale rest of the batch skipped
    else:
        assert 0 not in after_seek and after_seek[:7] == list(range(153, 160))


# ---- the lane: records of the interactions topic in batches, past Faust's per-record path

def _fetcher():
    fetcher = type("Fetcher", (), {})()
    fetcher._stopped = asyncio.Event()
    return fetcher


@pytest.mark.parametrize("patched", [False, True])
def test_the_lane_hands_over_each_fetch_as_a_batch_and_every_record_commits(patched):
    """Faust's fetch loop hands each record to the conductor's callback on its own (four
    tasks per record, then the stream); the lane takes what a fetch brought at once, in
    offset order, and the records acked by the agent are committed up to the last."""

    async def run():
        app = _app()
        app.topics._acking_topics.add(INPUT.topic)
        app.flow_control.resume()
        kafka = Kafka(size=200, batch=50)
        consumer, _ = _consumer(app, kafka, patched)
        lane = fi.make_lane(app, INPUT.topic, max_events=40) if patched else None
        fetcher = _fetcher()
        one_by_one: list[int] = []

        async def callback(message) -> None:  # Faust's conductor: the stream's side
            one_by_one.append(message.offset)
            consumer.ack(message)
            if message.offset == 199:
                fetcher._stopped.set()

        consumer.callback = callback
        batches: list[list[int]] = []

        async def agent() -> None:
            while True:
                messages = await lane.take()
                assert all(m in consumer._unacked_messages for m in messages)
                batches.append([m.offset for m in messages])
                for m in messages:
                    consumer.ack(m)
                if messages[-1].offset == 199:
                    fetcher._stopped.set()
                    return

        task = asyncio.ensure_future(agent()) if patched else None
        await asyncio.wait_for(consumer._drain_messages(fetcher), 10)
        if task is not None:
            await asyncio.wait_for(task, 1)
        return one_by_one, batches, consumer._new_offset(INPUT)

    one_by_one, batches, commit_at = asyncio.run(run())
    assert commit_at == 200  # every record handled is committed, whichever path
    if patched:
        assert one_by_one == [] and [o for b in batches for o in b] == list(range(200))
        assert max(map(len, batches)) <= 40 and len(batches) < 200 / 10
    else:
        assert one_by_one == list(range(200))


def test_the_lane_stops_fetching_while_it_is_full():
    """Back pressure: with nobody taking, the fetch loop stops once the lane holds four
    batches (as Faust's full stream buffer pauses a partition), and goes on after takes."""

    async def run():
        app = _app()
        app.flow_control.resume()
        kafka = Kafka(size=1000, batch=10)
        consumer, _ = _consumer(app, kafka, True)
        lane = fi.make_lane(app, INPUT.topic, max_events=20)
        fetcher = _fetcher()
        loop = asyncio.ensure_future(consumer._drain_messages(fetcher))
        await asyncio.sleep(0.3)
        held, position = len(lane.buffer), kafka.position[INPUT]
        taken = [m.offset for _ in range(3) for m in await lane.take()]
        await asyncio.sleep(0.3)
        loop.cancel()  # how Faust stops its fetcher
        await asyncio.gather(loop, return_exceptions=True)
        return held, position, taken, kafka.position[INPUT]

    held, position, taken, later = asyncio.run(run())
    assert held == 80 and position <= 90  # four batches of 20, plus the fetch on hand
    assert taken == list(range(60)) and later > position


# ---- point 4: events skipped on a generation change are not acked ---------------------

def fi_message(tp, offset: int, generation: int):
    from faust.transport.consumer import ConsumerMessage

    return ConsumerMessage(tp.topic, tp.partition, offset, 0.0, 0, [], b"k", b"v", None, 1, 1,
                           tp, generation_id=generation)


@pytest.mark.parametrize("patched", [False, True])
def test_an_event_of_a_previous_generation_is_never_acked(patched):
    """Faust's pure-Python stream iterator acks the events it skips after a generation
    change; an acked offset is committed past."""
    app = _app()
    app.topics._acking_topics.add(INPUT.topic)  # an agent's topic: acks count
    consumer = app.consumer
    if patched:
        fi.make_acks_safe(app)
    app.flow_control.resume()  # records flow (not paused for a rebalance)
    app.consumer_generation_id = 2
    old = fi_message(INPUT, 5, generation=1)
    consumer.track_message(old)
    acked = consumer.ack(old)
    assert acked is not patched
    assert (5 in consumer._acked.get(INPUT, [])) is not patched
    current = fi_message(INPUT, 6, generation=2)
    consumer.track_message(current)
    assert consumer.ack(current)  # an event of this generation is acked as before


def test_a_refused_message_is_neither_acked_nor_waited_for():
    app = _app()
    app.topics._acking_topics.add(INPUT.topic)
    consumer = app.consumer
    msg = fi_message(INPUT, 3, generation=0)
    consumer.track_message(msg)
    fi.refuse(app, msg)
    assert msg not in consumer._unacked_messages  # shutdown does not wait for it
    assert not consumer.ack(msg) and 3 not in consumer._acked.get(INPUT, [])  # not committed


# ---- point 7: no commit after a failed delivery ---------------------------------------

@pytest.mark.parametrize("patched", [False, True])
def test_a_failed_delivery_makes_the_flush_before_a_commit_raise(patched):
    """Faust's ``Producer.flush()`` returns once every record is done, failed or not."""

    async def run():
        app = _app()

        async def flush() -> None:  # the Kafka client's flush: every record is done
            pass

        app.producer.flush = flush
        watch = fi.make_delivery_checked(app) if patched else (lambda fut: None)
        loop = asyncio.get_running_loop()
        ok, lost = loop.create_future(), loop.create_future()
        watch(ok)
        watch(lost)
        ok.set_result("metadata")
        await asyncio.sleep(0)
        await app.producer.flush()  # everything delivered so far: the commit may go on
        lost.set_exception(TimeoutError("no broker"))
        await asyncio.sleep(0)
        try:
            await app.producer.flush()
        except RuntimeError as err:
            assert "1 records were not delivered" in str(err)
            return "refused"
        return "committed"

    assert asyncio.run(run()) == ("refused" if patched else "committed")


# ---- point 8: the changelog's transactions committed before the offsets ----------------

@pytest.mark.parametrize("patched", [False, True])
def test_an_offset_commit_first_commits_the_changelog_transactions(patched):
    """Faust's offset commit (``Consumer._commit_offsets``) awaits the producer's flush and
    then commits; the changelog's open transactions (``streams.changelog``) must be
    committed in between, and a failed one must stop the offset commit."""

    async def run(fail: bool):
        app = _app()
        consumer, _ = _consumer(app, Kafka(size=10), patched=False)
        done: list[str] = []

        async def flush() -> None:
            done.append("flush")

        async def commit_changelog() -> None:
            if fail:
                raise RuntimeError("fenced")
            done.append("changelog")

        async def commit_offsets(offsets) -> bool:
            done.append("offsets")
            return True

        app.producer.flush = flush
        consumer._commit = commit_offsets
        if patched:
            fi.make_flush_commits(app, commit_changelog)
        try:
            await consumer._commit_offsets({INPUT: 5})
        except RuntimeError:
            done.append("refused")
        return done

    assert asyncio.run(run(fail=False)) == (["flush", "changelog", "offsets"] if patched
                                            else ["flush", "offsets"])
    assert asyncio.run(run(fail=True)) == (["flush", "refused"] if patched
                                           else ["flush", "offsets"])


# ---- point 6: Faust's recovery off for the owned tables, assignments to the restorers --

def test_restore_owned_hands_assignments_to_the_restorer_and_skips_faust_recovery():
    """Only what the patch routes is shown here; that the worker's own restore keeps
    every lead through kills and rebalances is shown by the SIGKILL and join/leave/kill
    tests of tests/integration/test_reliability.py."""

    async def run():
        app = _app()
        owned = app.Table("owned", default=None, partitions=4)
        other = app.Table("other", default=None, partitions=4)
        calls: list = []

        class Restorer:
            def on_assigned(self, generation, partitions):
                calls.append(("restorer", generation, sorted(partitions)))

        class Recovery:
            def add_active(self, table, tp):
                calls.append(("faust recovery", table.name, tp.partition))

            add_standby = add_active

        async def faust_rebalance(assigned, revoked, newly_assigned, generation_id=0):
            for tp in assigned:
                tables.recovery.add_active(owned if tp.topic == "interactions" else other,
                                           tp)

        tables = app.tables
        tables._recovery = Recovery()
        tables.on_rebalance = faust_rebalance
        fi.make_restore_owned(app, [(owned, Restorer(), "interactions")])
        app.consumer_generation_id = 3
        assigned = {TP("interactions", 0), TP("interactions", 2), TP("facts", 0)}
        await tables.on_rebalance(assigned, set(), assigned, generation_id=3)
        await tables.on_rebalance(assigned, set(), assigned, generation_id=2)  # stale
        return calls

    calls = asyncio.run(run())
    assert calls[0] == ("restorer", 3, [0, 2])  # before Faust's own handling
    assert sorted(calls[1:]) == [("faust recovery", "other", 0)] * 2  # never "owned"


# ---- the accessors ---------------------------------------------------------------------

def test_input_positions_read_faust_s_read_and_committed_offsets():
    app = _app()
    consumer = app.consumer
    consumer._thread = Thread(Kafka(size=50))
    assert fi.input_positions(app, "interactions") == {INPUT: (0, 50)}  # nothing read yet
    consumer._committed_offset[INPUT] = 20
    assert fi.input_positions(app, "interactions") == {INPUT: (20, 50)}
    assert fi.committed_offset(app, INPUT) == 20
    consumer._read_offset[INPUT] = 31
    assert fi.input_positions(app, "interactions") == {INPUT: (32, 50)}
    assert fi.input_positions(app, "other") == {}


@pytest.mark.parametrize("patched", [False, True])
def test_a_table_route_finds_a_lead_s_partition_without_the_producer_s_metadata(patched):
    """Faust's router asks the producer's metadata for the changelog topic, which the
    fence's producers write, not it: with the patch the lead's partition is the one its
    changelog records (and its interactions) are keyed to, metadata or not."""
    from leadstream.streams.step import partition_for

    app = _app()
    if patched:
        fi.make_tables_routed(app, {"lead-changelog": 4}.get)
    if not patched:  # Faust alone: no metadata for the topic, no partition
        with pytest.raises(Exception):  # noqa: B017 - whichever Faust's producer raises
            app.producer.key_partition("lead-changelog", b"L1")
        return
    for key in (b"L1", b"lead-42", "Zoë".encode()):
        assert app.producer.key_partition("lead-changelog", key) == TP(
            "lead-changelog", partition_for(key, 4))
    with pytest.raises(Exception):  # noqa: B017 - another topic: Faust's own way
        app.producer.key_partition("other", b"L1")


@pytest.mark.parametrize("patched", [False, True])
async def test_the_worker_s_consumer_asks_the_broker_to_hold_a_fetch_briefly(patched):
    """Faust creates its aiokafka consumer with ``fetch_max_wait_ms=1500``: a fetch sent
    for idle partitions while the busy ones' records wait unconsumed holds their next
    records back 1.5 s (the latency plateau of docs/benchmarks.md, 2026-12-08). Patched,
    the consumer Faust's thread creates (its fetcher takes the values at start) waits at
    most the setting, for the bytes the other setting asks."""
    app = _app()
    if patched:
        fi.make_fetch_prompt(app, 20, 8192)
    consumer = app.consumer._thread._create_worker_consumer(app.transport)
    try:
        assert consumer._fetch_max_wait_ms == (20 if patched else 1500)
        assert consumer._fetch_min_bytes == (8192 if patched else 1)
    finally:
        await consumer._client.close()
