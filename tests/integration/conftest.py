"""Fixtures that run real processes: one Apache Kafka broker per test session (KRaft, on
127.0.0.1, a random port) and leadstream workers as subprocesses. Each test gets its own
topic prefix and consumer group, so tests never see each other's data."""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest

from leadstream.bench import harness
from leadstream.bench.harness import worker_env
from leadstream.contract.settings import Settings
from leadstream.ops.broker import free_port, start_kafka
from leadstream.streams.topics import apply_topics

HOME = Path(os.environ.get("LEADSTREAM_HOME", Path.home() / ".cache" / "leadstream"))


@pytest.fixture(scope="session")
def kafka(tmp_path_factory):
    broker = start_kafka(HOME, free_port(), tmp_path_factory.mktemp("kafka"))
    yield broker
    broker.stop()


@pytest.fixture
def settings(kafka, tmp_path) -> Settings:
    s = Settings(
        kafka_bootstrap=kafka.bootstrap,
        topic_prefix=f"t{uuid.uuid4().hex[:8]}-",
        web_port=free_port(),
        home=HOME,
        worker_data_dir=tmp_path / "worker",
    )
    asyncio.run(apply_topics(s))
    return s


settings_env = worker_env  # a worker's (or any command's) environment for settings ``s``


class Worker(harness.Worker):
    """A `leadstream worker` subprocess (log level info)."""

    def __init__(self, s: Settings, log: Path):
        super().__init__(s, log, loglevel="info")


@pytest.fixture
def worker_factory(tmp_path):
    started = []

    def start(s: Settings, ready: bool = True) -> Worker:
        w = Worker(s, tmp_path / f"worker{len(started)}.log")
        started.append(w)
        if ready:
            w.wait_ready()
        return w

    yield start
    for w in started:
        w.stop()


async def publish(s: Settings, records) -> None:
    """records: iterable of (logical topic, key, value bytes)."""
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(linger_ms=5, max_request_size=11_000_000,
                                **s.kafka_client_kwargs())
    await producer.start()
    try:
        futs = [await producer.send(s.topic(t), v, key=k) for t, k, v in records]
        await asyncio.gather(*futs)
    finally:
        await producer.stop()


async def read_topic(s: Settings, logical: str, idle: float = 2.0, timeout: float = 30.0):
    """Every record of a topic, read from the beginning until ``idle`` seconds pass."""
    from aiokafka import AIOKafkaConsumer

    consumer = AIOKafkaConsumer(s.topic(logical), group_id=None, auto_offset_reset="earliest",
                                enable_auto_commit=False, **s.kafka_client_kwargs())
    await consumer.start()
    out = []
    try:
        t_end = time.monotonic() + timeout
        last = time.monotonic()
        while time.monotonic() < t_end and time.monotonic() - last < idle:
            batch = await consumer.getmany(timeout_ms=300)
            for msgs in batch.values():
                out.extend(msgs)
                if msgs:
                    last = time.monotonic()
    finally:
        await consumer.stop()
    return out


def recent_start(days: float = 2.0) -> datetime:
    """A simulation start so that all of a ``days``-long run lies in the past (booking
    follow-ups run up to three days past the last session)."""
    return datetime.now(UTC).replace(microsecond=0) - timedelta(days=days + 3)


def decode(msg) -> dict:
    return orjson.loads(msg.value)
