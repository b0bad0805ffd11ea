"""Fixtures that run real processes: one Apache Kafka broker per test session (KRaft, on
127.0.0.1, a random port) and leadstream workers as subprocesses. Each test gets its own
topic prefix and consumer group, so tests never see each other's data."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families
from pydantic import SecretStr

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


def settings_env(s: Settings) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LEADSTREAM_")}
    env.update(
        LEADSTREAM_KAFKA_BOOTSTRAP=s.kafka_bootstrap,
        LEADSTREAM_TOPIC_PREFIX=s.topic_prefix,
        LEADSTREAM_WEB_PORT=str(s.web_port),
        LEADSTREAM_HOME=str(s.home),
        LEADSTREAM_WORKER_DATA_DIR=str(s.worker_data_dir),
    )
    for name in s.model_fields_set:  # whatever else the test set explicitly
        value = getattr(s, name)
        if isinstance(value, SecretStr):
            value = value.get_secret_value()
        env.setdefault(f"LEADSTREAM_{name.upper()}", str(value))
    return env


class Worker:
    """A `leadstream worker` subprocess."""

    def __init__(self, s: Settings, log: Path):
        self.s = s
        self.log = log
        with open(log, "ab") as fh:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "leadstream", "worker", "--loglevel", "info"],
                env=settings_env(s),
                stdout=fh, stderr=subprocess.STDOUT, start_new_session=True)
        self.url = f"http://127.0.0.1:{s.web_port}"

    def get(self, path: str) -> tuple[int, bytes]:
        try:
            with urllib.request.urlopen(self.url + path, timeout=5) as r:
                return r.status, r.read()
        except urllib.error.HTTPError as e:
            return e.code, e.read()

    def wait_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.log.read_text()[-3000:]
            try:
                if self.get("/health/ready")[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.3)
        raise AssertionError("worker not ready:\n" + self.log.read_text()[-3000:])

    def metrics(self) -> dict[tuple[str, tuple], float]:
        out = {}
        for fam in text_string_to_metric_families(self.get("/metrics")[1].decode()):
            for smp in fam.samples:
                out[(smp.name, tuple(sorted(smp.labels.items())))] = smp.value
        return out

    def total(self, name: str, **labels) -> float:
        return sum(v for (n, lab), v in self.metrics().items()
                   if n == name and all(dict(lab).get(k) == x for k, x in labels.items()))

    def wait_for(self, predicate, timeout: float = 90, what: str = "condition",
                 every: float = 0.5) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.log.read_text()[-3000:]
            if predicate():
                return
            time.sleep(every)
        raise AssertionError(f"timed out waiting for {what}; metrics: "
                             + str({k: v for k, v in self.metrics().items()
                                    if k[0].startswith("leadstream_events")}))

    def stop(self, sig=signal.SIGTERM) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        return self.proc.returncode


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
