"""The offset-order guard in front of the interactions agent (streams/durable.py), with a
stand-in for Faust's consumer: which records it admits, refuses and reads again."""

from __future__ import annotations

import asyncio
from collections import namedtuple

from streams.durable import AGAIN, GAP, NEXT, InputOrder, OrderGuard

TP = namedtuple("TP", "topic partition")
P0 = TP("interactions", 0)


class Message:
    def __init__(self, offset: int, tp=P0):
        self.tp, self.offset, self.acked = tp, offset, False


class Consumer:
    def __init__(self, order: InputOrder, fail: bool = False):
        self.order, self.fail = order, fail
        self.seeks: list = []
        self._unacked_messages: set = set()

    async def seek(self, tp, offset):  # like the patched seek: the order learns of it
        self.seeks.append((tp.partition, offset))
        if self.fail:
            raise RuntimeError("partition revoked")
        self.order.sought(tp, offset)


class App:
    def __init__(self, consumer):
        self.consumer = consumer


def _guard(first: dict, fail: bool = False):
    """A guard whose broker holds a record at the offsets ``first`` maps to."""
    order = InputOrder()
    consumer = Consumer(order, fail)
    gaps: list = []
    asked: list = []

    async def first_offset(tp, offset):
        asked.append(offset)
        return first.get(offset)

    guard = OrderGuard(App(consumer), order, first_offset, lambda tp, kind: gaps.append(kind))
    return guard, order, consumer, gaps, asked


def _admit(guard, *offsets):
    async def run():
        return [await guard.admit(m) for m in map(Message, offsets)]
    return asyncio.run(run())


def test_records_in_order_pass_and_redeliveries_are_skipped():
    guard, order, consumer, gaps, _ = _guard({})
    order.sought(P0, 10)
    assert _admit(guard, 10, 11, 12, 11) == [NEXT, NEXT, NEXT, AGAIN]
    assert consumer.seeks == [] and gaps == []


def test_a_lost_record_is_read_again_and_what_follows_it_waits():
    guard, order, consumer, gaps, asked = _guard({11: 11})  # offset 11 exists
    order.sought(P0, 10)
    msgs = [Message(o) for o in (10, 12, 13, 14)]

    async def run():
        return [await guard.admit(m) for m in msgs]

    assert asyncio.run(run()) == [NEXT, GAP, GAP, GAP]
    assert consumer.seeks == [(0, 11)]  # one seek back, not one per stale record
    assert asked == [11]  # the broker asked once
    assert gaps == ["reread"]
    assert [m.acked for m in msgs] == [False, True, True, True]  # refused: never acked
    # the records read again from 11 come in order
    assert _admit(guard, 11, 12, 13) == [NEXT, NEXT, NEXT]


def test_a_hole_the_broker_confirms_is_taken_once():
    guard, order, consumer, gaps, _ = _guard({11: 12})  # nothing at 11 (a marker)
    order.sought(P0, 10)
    assert _admit(guard, 10, 12, 13) == [NEXT, NEXT, NEXT]
    assert consumer.seeks == [] and gaps == ["verified"]


def test_after_a_seek_stale_records_wait_and_a_real_hole_at_the_seek_is_taken():
    guard, order, consumer, gaps, _ = _guard({20: 21})  # the committed offset 20 is a marker
    order.sought(P0, 5)
    assert _admit(guard, 5, 6) == [NEXT, NEXT]
    order.sought(P0, 20)  # a rebalance: sought to the committed offset
    assert _admit(guard, 7, 21, 22) == [AGAIN, NEXT, NEXT]
    assert consumer.seeks == [] and gaps == ["verified"]


def test_an_unanswered_broker_means_read_again_and_a_failed_seek_does_not_raise():
    guard, order, consumer, gaps, _ = _guard({}, fail=True)  # the broker cannot tell
    order.sought(P0, 0)
    assert _admit(guard, 0, 3) == [NEXT, GAP]
    assert consumer.seeks == [(0, 1)] and gaps == ["reread"]


# ---- lead state restored by the worker (point 6) ---------------------------------------

def _restorer(changelog: dict, data: dict, gate: asyncio.Event | None = None):
    """A restorer over ``data`` whose changelog partition p holds ``changelog[p]`` (a list
    of (key, value) records); keys are b"<partition>:<name>". ``gate`` holds reads back."""
    from streams.durable import StateRestorer

    dropped, restored = [], []

    async def read(p):
        if gate is not None:
            await gate.wait()
        for kv in changelog.get(p, []):
            yield kv

    r = StateRestorer(data, lambda k: int(k.split(b":")[0]), read,
                      on_restored=lambda p, n, s: restored.append((p, n)),
                      on_dropped=dropped.extend)
    return r, dropped, restored


def test_restore_reads_each_partition_whole_with_deletions_and_drops_moved_leads():
    async def run():
        changelog = {0: [(b"0:a", b"1"), (b"0:b", b"1"), (b"0:a", b"2"), (b"0:b", None)],
                     1: [(b"1:c", b"5")]}
        data = {b"0:a": b"stale", b"0:old": b"x", b"2:z": b"copy"}  # a previous owner's copy
        r, dropped, restored = _restorer(changelog, data)
        r.on_assigned(1, {0, 1})
        assert data == {}  # nothing trusted yet: every copy is dropped before the reads
        assert dropped == [b"2:z"]  # of a partition moved away: its model state goes too
        assert await r.ready(0) and await r.ready(1)
        assert data == {b"0:a": b"2", b"1:c": b"5"}  # last value wins, tombstones delete
        assert sorted(restored) == [(0, 1), (1, 1)]

        data[b"1:c"] = b"6"  # the agent writes on
        r.on_assigned(2, {1})  # the next generation keeps 1 and gives 0 away
        assert data == {b"1:c": b"6"} and dropped == [b"2:z", b"0:a"]
        assert r.trusted(1) and not await r.ready(0)  # an event of 0: not ours any more
        assert len(restored) == 2  # 1 was held throughout: not read again

        r.on_assigned(4, {1})  # generation 3 missed: another worker may have held 1
        assert not r.trusted(1) and await r.ready(1)
        assert data == {b"1:c": b"5"}  # the changelog's value, not the local copy

    asyncio.run(run())


def test_a_restore_overtaken_by_a_rebalance_is_dropped_and_waiters_follow_the_new_one():
    async def run():
        gate = asyncio.Event()
        changelog = {0: [(b"0:a", b"1")]}
        data: dict = {}
        r, _, restored = _restorer(changelog, data, gate)
        r.on_assigned(1, {0})
        waiter = asyncio.ensure_future(r.ready(0))
        assert not await r.ready(0, timeout=0.05)  # still reading
        changelog[0].append((b"0:a", b"2"))
        r.on_assigned(2, {0})  # reassigned mid-read: the first read is cancelled
        gate.set()
        assert await waiter  # the agent waiting on partition 0 goes on after the new read
        assert data == {b"0:a": b"2"} and restored == [(0, 1)]

    asyncio.run(run())


def test_a_failed_read_is_retried_until_it_succeeds():
    async def run():
        from streams.durable import StateRestorer

        calls = []

        async def read(p):
            calls.append(p)
            if len(calls) == 1:
                raise ConnectionError("broker away")
            yield b"0:a", b"1"

        data: dict = {}
        r = StateRestorer(data, lambda k: 0, read, retry_delay=0.01)
        r.on_assigned(1, {0})
        assert await r.ready(0, timeout=5) and data == {b"0:a": b"1"} and len(calls) == 2

    asyncio.run(run())


def test_a_failed_delivery_makes_the_flush_before_a_commit_raise():
    from streams.durable import make_delivery_checked

    class Producer:
        async def flush(self):
            pass

    class FaustApp:
        producer = Producer()

    async def run():
        app = FaustApp()
        watch = make_delivery_checked(app)
        ok, lost = asyncio.get_running_loop().create_future(), \
            asyncio.get_running_loop().create_future()
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
        else:
            raise AssertionError("flush must refuse once a record was lost")

    asyncio.run(run())


def test_the_workers_own_writes_are_settled_before_each_read():
    async def run():
        from streams.durable import StateRestorer

        log: list = []

        async def settle():
            log.append("settle")

        async def read(p):
            log.append(f"read {p}")
            yield b"0:a", b"1"

        r = StateRestorer({}, lambda k: 0, read, settle=settle)
        r.on_assigned(1, {0})
        assert await r.ready(0) and log == ["settle", "read 0"]

    asyncio.run(run())
