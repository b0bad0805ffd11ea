"""The fenced changelog (streams/changelog.py) on the real broker: a second holder of a
partition's producer fences the first, whose open transaction is aborted and never read
back, and whose later writes and commits are refused."""

from __future__ import annotations

import asyncio

import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaConnectionError

from leadstream.streams.changelog import ChangelogFenced, FencedChangelog
from leadstream.streams.readers import read_partition

pytestmark = pytest.mark.integration


def _changelog(settings, topic: str, on_renewed=None) -> FencedChangelog:
    return FencedChangelog(topic, f"{settings.topic_prefix}fence-test", lambda tid:
                           AIOKafkaProducer(transactional_id=tid,
                                            **settings.kafka_client_kwargs()),
                           on_renewed=on_renewed)


async def _read(settings, topic: str, partition: int) -> dict:
    return {k: v async for k, v in read_partition(settings, topic, partition)}


def test_the_new_holder_of_a_partition_fences_the_old_one(settings):
    topic = settings.topic("interactions")  # any topic of the test's own namespace

    async def run():
        old, new = _changelog(settings, topic), _changelog(settings, topic)
        try:
            await old.acquire(1)
            assert old.write(1, [(b"L1", b"v0"), (b"L2", b"v1")])
            assert old.write(1, [(b"L1", b"v1")])  # staged again: replaces v0
            await old.commit()  # committed: read back by anyone
            assert old.records_written == 2  # once per lead per commit
            assert await _read(settings, topic, 1) == {b"L1": b"v1", b"L2": b"v1"}
            assert old.write(1, [(b"L1", b"v2-held")])  # held by a worker that froze

            await new.acquire(1)  # the partition moved
            assert await _read(settings, topic, 1) == {b"L1": b"v1", b"L2": b"v1"}
            assert new.write(1, [(b"L2", b"v3")])
            await new.commit()

            # the old holder resumes and commits what it held: the broker refuses it, and
            # nothing of it reaches a restore
            with pytest.raises(ChangelogFenced, match="taken over|fenced"):
                assert old.write(1, [(b"L1", b"v4-stale")])
                await old.commit()
            assert await _read(settings, topic, 1) == {b"L1": b"v1", b"L2": b"v3"}
            assert not new.write(2, [(b"L9", b"x")])  # a partition not held
            assert new.held() == {1}
        finally:
            await old.close()
            await new.close()

    asyncio.run(run())


def _break(producer, step: str) -> None:
    """Make ``producer``'s sending task die at its next ``step`` (a transactional request)
    on a connection error, as aiokafka 0.14's does when the broker stops while it looks up
    or talks to the transaction coordinator (aio-libs/aiokafka#1151): the CI failure of
    the broker-outage test."""
    sender = producer._sender

    async def cut(*args):
        raise KafkaConnectionError("Connection at 127.0.0.1 closed")

    setattr(sender, step, cut)


def test_a_producer_that_died_on_a_broker_error_is_renewed_and_its_writes_committed(settings):
    """The commit whose producer died mid-transaction (records sent, EndTxn lost) keeps its
    writes, renews the producer and commits them: the half-written transaction is aborted
    and never read back, nothing staged is lost, and the worker goes on (it used to stop:
    the first commit after the failure raised)."""
    topic = settings.topic("interactions")

    async def run():
        renewed = []
        cl = _changelog(settings, topic, on_renewed=renewed.append)
        try:
            await cl.acquire(2)
            cl.write(2, [(b"L1", b"v1"), (b"L2", b"v1")])
            await cl.commit()
            first = cl._producers[2]
            _break(first, "_do_txn_commit")  # the records reach the broker, the commit not
            cl.write(2, [(b"L1", b"v2"), (b"L3", b"v2")])
            await cl.commit()
            assert cl.renewals == 1 and renewed == [2] and cl._producers[2] is not first
            assert await _read(settings, topic, 2) == {b"L1": b"v2", b"L2": b"v1",
                                                       b"L3": b"v2"}
            assert cl.write(2, [(b"L2", b"v3")])  # the renewed producer goes on
            await cl.commit()
            assert await _read(settings, topic, 2) == {b"L1": b"v2", b"L2": b"v3",
                                                       b"L3": b"v2"}
            assert cl.pending() == 0
        finally:
            await cl.close()

    asyncio.run(run())


def test_a_renewal_never_fences_the_partitions_new_owner(settings):
    """A worker whose producer died after another worker took the partition over must not
    take it back: renewing by a plain InitProducerId would fence the new owner and let the
    old one write over its state. The renewal names the epoch it had, the broker refuses
    it, the old worker stops, and the new owner's commits go on."""
    topic = settings.topic("interactions")

    async def run():
        old, new = _changelog(settings, topic), _changelog(settings, topic)
        try:
            await old.acquire(3)
            old.write(3, [(b"L1", b"v1")])
            await old.commit()
            await new.acquire(3)  # the partition moved while the old worker was cut off
            new.write(3, [(b"L1", b"v2")])
            await new.commit()
            _break(old._producers[3], "_do_add_partitions_to_txn")
            old.write(3, [(b"L1", b"v-stale")])
            with pytest.raises(ChangelogFenced, match="taken over"):
                await old.commit()
            assert old.held() == set()
            new.write(3, [(b"L1", b"v3")])
            await new.commit()  # not fenced by the old worker's attempt
            assert await _read(settings, topic, 3) == {b"L1": b"v3"}
        finally:
            await old.close()
            await new.close()

    asyncio.run(run())
