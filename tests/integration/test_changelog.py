"""The fenced changelog (streams/changelog.py) on the real broker: a second holder of a
partition's producer fences the first, whose open transaction is aborted and never read
back, and whose later writes and commits are refused."""

from __future__ import annotations

import asyncio

import pytest
from aiokafka import AIOKafkaProducer

from leadstream.streams.changelog import ChangelogFenced, FencedChangelog
from leadstream.streams.readers import read_partition

pytestmark = pytest.mark.integration


def _changelog(settings, topic: str) -> FencedChangelog:
    return FencedChangelog(topic, f"{settings.topic_prefix}fence-test", lambda tid:
                           AIOKafkaProducer(transactional_id=tid,
                                            **settings.kafka_client_kwargs()))


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
