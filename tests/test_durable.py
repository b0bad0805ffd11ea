"""The pure state machines of streams/durable.py: the offset-order guard in front of the
interactions agent, with a stand-in for Faust's consumer (which records it admits,
refuses and reads again), and the restore of lead state from the changelog."""

from __future__ import annotations

import asyncio
import time
from collections import namedtuple

from leadstream.streams.durable import AGAIN, GAP, NEXT, InputOrder, OrderGuard

TP = namedtuple("TP", "topic partition")
P0 = TP("interactions", 0)


class Message:
    def __init__(self, offset: int, tp=P0):
        self.tp, self.offset, self.acked = tp, offset, False


class Consumer:
    def __init__(self, order: InputOrder, fail: bool = False):
        self.order, self.fail = order, fail
        self.seeks: list = []

    async def seek(self, tp, offset):  # like the patched seek: the order learns of it
        self.seeks.append((tp.partition, offset))
        if self.fail:
            raise RuntimeError("partition revoked")
        self.order.sought(tp, offset)


def refuse(message) -> None:  # as streams.faust_internals.refuse marks a refused record
    message.acked = True


def _guard(first: dict, fail: bool = False):
    """A guard whose broker holds a record at the offsets ``first`` maps to."""
    order = InputOrder()
    consumer = Consumer(order, fail)
    gaps: list = []
    asked: list = []

    async def first_offset(tp, offset):
        asked.append(offset)
        return first.get(offset)

    guard = OrderGuard(order, first_offset, refuse=refuse, seek=consumer.seek,
                       on_gap=lambda tp, kind: gaps.append(kind))
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


def test_a_seek_while_the_broker_is_asked_refuses_the_record_instead_of_taking_the_hole():
    order = InputOrder()
    consumer = Consumer(order)

    async def first_offset(tp, offset):  # a rebalance seeks the partition meanwhile
        order.sought(tp, 10)
        return 13  # the broker's answer (13 follows the hole) is about the old position

    guard = OrderGuard(order, first_offset, refuse=refuse, seek=consumer.seek)
    order.sought(P0, 10)
    held = Message(13)
    assert _admit(guard, 10, 11) == [NEXT, NEXT]
    assert asyncio.run(guard.admit(held)) == GAP and held.acked  # refused, not applied
    assert order.expected(P0) == 10  # the sought position stands: 10, 11, 12 come again
    assert _admit(guard, 10, 11, 12, 13) == [NEXT] * 4


def test_a_sought_offset_that_never_comes_back_is_sought_again():
    """Records past a seek target are refused while the target is awaited; if it does not
    come (the seek's records were lost too), the partition is sought again, not starved."""
    order = InputOrder()
    consumer = Consumer(order)

    async def first_offset(tp, offset):
        return offset  # the broker holds the sought record

    guard = OrderGuard(order, first_offset, refuse=refuse, seek=consumer.seek,
                       patience=0.05)
    order.sought(P0, 0)
    assert _admit(guard, 7, 8) == [GAP, GAP]  # stale: waiting for 0
    assert consumer.seeks == []
    time.sleep(0.1)
    assert _admit(guard, 9) == [GAP] and consumer.seeks == [(0, 0)]  # sought again
    assert _admit(guard, 0, 1) == [NEXT, NEXT]


# ---- lead state restored by the worker (point 6) ---------------------------------------

def _restorer(changelog: dict, data: dict, gate: asyncio.Event | None = None):
    """A restorer over ``data`` whose changelog partition p holds ``changelog[p]`` (a list
    of (key, value) records); keys are b"<partition>:<name>". ``gate`` holds reads back."""
    from leadstream.streams.durable import StateRestorer

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


def test_a_read_goes_on_through_a_rebalance_that_keeps_its_partition_here():
    async def run():
        from leadstream.streams.durable import StateRestorer

        gate, reads = asyncio.Event(), []

        async def read(p):
            reads.append(p)
            await gate.wait()
            yield b"0:a", b"1"

        data: dict = {}
        r = StateRestorer(data, lambda k: 0, read)
        r.on_assigned(1, {0})
        assert not await r.ready(0, timeout=0.05)  # still reading
        r.on_assigned(2, {0, 1})  # the next generation keeps 0 here: nobody else wrote it
        gate.set()
        assert await r.ready(0) and await r.ready(1) and data == {b"0:a": b"1"}
        assert reads == [0, 1]  # 0 was read once

    asyncio.run(run())


def test_a_read_overtaken_by_a_missed_generation_is_closed_and_waiters_follow_the_new_one():
    async def run():
        from leadstream.streams.durable import StateRestorer

        gate, reads, closed = asyncio.Event(), [], []
        changelog = [(b"0:a", b"1")]

        async def read(p):
            reads.append(p)
            try:
                await gate.wait()
                for kv in list(changelog):
                    yield kv
            finally:
                closed.append(len(reads))

        data: dict = {}
        r = StateRestorer(data, lambda k: 0, read)
        r.on_assigned(1, {0})
        waiter = asyncio.ensure_future(r.ready(0))  # the agent, holding an event of 0
        await asyncio.sleep(0.01)
        changelog.append((b"0:a", b"2"))  # another worker held 0 meanwhile and wrote on
        r.on_assigned(3, {0})  # generation 2 missed: the read under way is not to be trusted
        await asyncio.sleep(0.01)
        assert len(closed) == 1  # the first read was closed when it was cancelled
        gate.set()
        assert await waiter  # the waiting agent goes on after the new read
        assert data == {b"0:a": b"2"} and len(reads) == 2

    asyncio.run(run())


def test_a_failed_read_is_retried_until_it_succeeds():
    async def run():
        from leadstream.streams.durable import StateRestorer

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


def test_the_workers_own_writes_are_settled_before_each_read():
    async def run():
        from leadstream.streams.durable import StateRestorer

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
