"""``--json`` of the commands that talk to a broker: ``broker`` (its own, started here),
``produce``, ``simulate`` (publishing) and ``tail`` against it. (``topics list``,
``experiments report`` and ``agents report`` have theirs in test_commands.py and
test_experiments.py.)"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import uuid

import orjson
import pytest

from leadstream.contract.settings import Settings
from leadstream.ops.broker import free_port

from .conftest import HOME

pytestmark = pytest.mark.integration


def test_broker_produce_simulate_and_tail_print_json(tmp_path):
    prefix = f"t{uuid.uuid4().hex[:8]}-"
    env = {k: v for k, v in os.environ.items() if not k.startswith("LEADSTREAM_")}
    env.update(LEADSTREAM_HOME=str(HOME), LEADSTREAM_TOPIC_PREFIX=prefix)
    broker = subprocess.Popen([sys.executable, "-m", "leadstream", "broker", "--port",
                               str(free_port()), "--json"], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        ready = json.loads(broker.stdout.readline())  # one line once ready
        assert set(ready) == {"kind", "bootstrap", "topics"} and ready["kind"] == "kafka"
        assert f"{prefix}interactions" in ready["topics"]["created"]
        assert ready["topics"]["missing"] == [] and ready["topics"]["differences"] == []
        env["LEADSTREAM_KAFKA_BOOTSTRAP"] = ready["bootstrap"]

        def leadstream(*args: str, stdin: bytes | None = None) -> dict | list:
            r = subprocess.run([sys.executable, "-m", "leadstream", *args], env=env,
                               capture_output=True, input=stdin, timeout=120)
            assert r.returncode == 0, r.stderr.decode()
            out = r.stdout.decode()
            return ([json.loads(line) for line in out.splitlines()] if "tail" in args
                    else json.loads(out))

        good = orjson.dumps({"event_id": "e1", "lead_id": "L1", "event_type": "property_saved",
                             "timestamp": "2026-03-01T18:04:05Z", "session_id": "s",
                             "property_id": "P1"})
        p = leadstream("produce", "-", "--json", stdin=good + b"\n{oops\n")
        assert p == {"topic": f"{prefix}interactions", "records": 2, "sent": 2, "invalid": 1,
                     "errors": [p["errors"][0]]} and p["errors"][0]["line"] == 2

        # 10 leads: a day of 3 leads gave 11 events on 2026-12-02 (the default start is
        # now minus 4 days, so the simulated day moves with the date)
        sim = leadstream("simulate", "--leads", "10", "--properties", "10", "--days", "1",
                         "--limit", "20", "--json")
        assert sim["published"]["valid"] == 20 and sim["published"]["listings"] >= 10
        assert sim["topics"]["interactions"] == f"{prefix}interactions"

        s = Settings(kafka_bootstrap=ready["bootstrap"], topic_prefix=prefix)
        asyncio.run(_dead_letter(s))
        tail = leadstream("tail", "interactions", "--from-beginning", "--max", "22",
                          "--timeout", "10", "--json")
        assert len(tail) == 22
        assert orjson.loads(good) in tail
        assert {"undecodable": "{oops"} in tail  # produced as sent, not JSON
        assert sum(1 for r in tail if isinstance(r, dict) and "event_type" in r) == 21
        dead = leadstream("tail", "interactions-dlq", "--from-beginning", "--max", "1",
                          "--timeout", "10", "--json")
        assert dead == [{"dead_letter": {"reason": "not_json", "topic": f"{prefix}interactions",
                                         "partition": 0, "offset": 1},
                         "value": "{oops"}]
    finally:
        os.killpg(broker.pid, signal.SIGTERM)
        try:
            broker.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(broker.pid, signal.SIGKILL)
            broker.wait(10)


async def _dead_letter(s: Settings) -> None:
    """A dead letter with the worker's headers, as the worker writes it."""
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(**s.kafka_client_kwargs())
    await producer.start()
    try:
        await producer.send_and_wait(s.topic("interactions-dlq"), b"{oops", key=b"L1", headers=[
            ("leadstream.dlq.reason", b"not_json"),
            ("leadstream.dlq.topic", s.topic("interactions").encode()),
            ("leadstream.dlq.partition", b"0"), ("leadstream.dlq.offset", b"1")])
    finally:
        await producer.stop()
