"""What a worker reads from Kafka with consumers of its own, outside Faust's consumer
group (public aiokafka API only): a changelog partition back for a restore, the first
record at an offset for the order guard, and the whole catalog."""

from __future__ import annotations

import asyncio
import logging

from aiokafka import AIOKafkaConsumer, TopicPartition

log = logging.getLogger("leadstream.worker")


async def read_partition(settings, topic: str, partition: int):
    """The committed ``(key, value)`` records of one partition of ``topic``, from its start
    to the end offset it has when the read begins (value None: a deletion), with a consumer
    of its own: how a worker reads a partition of the lead table's changelog back. Records
    of aborted transactions (a fenced worker's, ``streams.changelog``) are never read; the
    end is the last stable offset, so an open transaction of another writer would hold
    the read there (the reader takes the partition's producer first, which ends it)."""
    consumer = AIOKafkaConsumer(enable_auto_commit=False, group_id=None,
                                auto_offset_reset="earliest", isolation_level="read_committed",
                                **settings.kafka_client_kwargs())
    try:
        await asyncio.wait_for(consumer.start(), 30)
        tp = TopicPartition(topic, partition)
        consumer.assign([tp])
        await consumer.seek_to_beginning(tp)
        end = (await consumer.end_offsets([tp]))[tp]
        while await consumer.position(tp) < end:
            batch = await consumer.getmany(tp, timeout_ms=1000, max_records=10_000)
            for m in batch.get(tp, ()):
                if m.offset < end:
                    yield m.key, m.value
    finally:
        await consumer.stop()


async def first_offset(settings, tp, offset: int) -> int | None:
    """The first offset at or after ``offset`` of ``tp`` holding a record, as the broker
    says (None if it cannot tell within 5 s: the order guard then reads the hole again)."""
    consumer = AIOKafkaConsumer(enable_auto_commit=False, group_id=None,
                                auto_offset_reset="earliest",
                                **settings.kafka_client_kwargs())
    try:
        await asyncio.wait_for(consumer.start(), 5)
        part = TopicPartition(tp.topic, tp.partition)
        consumer.assign([part])
        consumer.seek(part, offset)
        batch = await consumer.getmany(part, timeout_ms=5000, max_records=1)
        return batch[part][0].offset if batch.get(part) else None
    except Exception as err:
        log.warning("could not ask the broker about offset %d of %s: %r", offset, tp, err)
        return None
    finally:
        await consumer.stop()


class CatalogFeed:
    """How far the worker's catalog reader has read ``properties``, for a batch that names
    a listing the catalog lacks: :meth:`caught_up` waits until the reader has read every
    record the topic held when it was called (a listing published just before its first
    interactions, which the interactions agent can otherwise overtake)."""

    def __init__(self):
        self.consumer = None
        self.tps: list = []
        self.positions: dict = {}
        self.moved = asyncio.Event()

    def read(self, consumer, positions: dict) -> None:
        self.consumer, self.positions = consumer, positions
        self.tps = list(positions)
        self.moved.set()

    async def caught_up(self, timeout: float) -> bool:
        """True once the reader is at the end offsets the topic has now (False: not within
        ``timeout`` seconds, or the reader has not started)."""
        if self.consumer is None:
            return False
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        try:
            end = await asyncio.wait_for(self.consumer.end_offsets(self.tps), timeout)
            while any(self.positions.get(tp, 0) < end[tp] for tp in self.tps):
                self.moved.clear()
                await asyncio.wait_for(self.moved.wait(), max(deadline - loop.time(), 0))
        except TimeoutError:
            return False
        except Exception as err:  # noqa: BLE001 (the batch goes on without: never lost)
            log.warning("could not ask the broker how far properties goes: %r", err)
            return False
        return True


async def load_catalog(settings, spec, step, catalog_ready: asyncio.Event,
                       feed: CatalogFeed | None = None) -> None:
    """Every worker keeps the whole catalog: read all of ``properties`` (``spec``) from the
    start into ``step``, set ``catalog_ready`` once the end offsets of the read's start
    are reached, and go on reading for as long as the worker runs (its positions in
    ``feed``, after each fetch)."""
    consumer = AIOKafkaConsumer(
        enable_auto_commit=False, group_id=None, **settings.kafka_client_kwargs()
    )
    await consumer.start()
    try:
        tps = [TopicPartition(spec.full_name, p) for p in range(spec.partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        end = await consumer.end_offsets(tps)
        while True:
            batch = await consumer.getmany(timeout_ms=500, max_records=5000)
            for msgs in batch.values():
                for m in msgs:
                    step.load_listing(m.value, m.key, m.partition, m.offset)
            pos = {tp: await consumer.position(tp) for tp in tps}
            if feed is not None:
                feed.read(consumer, pos)
            if not catalog_ready.is_set():
                if all(pos[tp] >= end[tp] for tp in tps):
                    catalog_ready.set()
                    log.info("catalog loaded: %d listings (%d active)",
                             len(step.catalog), step.catalog.n_active)
            cat = step.catalog
            step.metrics.catalog_size.labels(status="active").set(cat.n_active)
            step.metrics.catalog_size.labels(status="all").set(len(cat))
    finally:
        await consumer.stop()
