"""The commands a user types: broker, topics apply, demo."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import pytest

from leadstream.contract.settings import Settings
from leadstream.ops.broker import free_port
from leadstream.simulate import SimConfig, Simulator
from leadstream.streams.topics import apply_topics, load_topics

from .conftest import HOME, publish, recent_start, settings_env

pytestmark = pytest.mark.integration


def test_broker_reports_a_taken_port_clearly():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        out = subprocess.run([sys.executable, "-m", "leadstream", "broker", "--port", str(port)],
                             capture_output=True, text=True, timeout=60,
                             env={**os.environ, "LEADSTREAM_HOME": str(HOME)})
    assert out.returncode == 2
    assert f"port {port}" in out.stderr and "already in use" in out.stderr


def test_topics_apply_is_idempotent_and_reports_differences(kafka):
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    s = Settings(kafka_bootstrap=kafka.bootstrap, topic_prefix=f"a{uuid.uuid4().hex[:6]}-")

    async def go():
        admin = AIOKafkaAdminClient(bootstrap_servers=kafka.bootstrap)
        await admin.start()
        try:  # someone created the recommendations topic by hand, with 2 partitions
            await admin.create_topics([NewTopic(s.topic("recommendations"), 2, 1)])
        finally:
            await admin.close()
        return await apply_topics(s), await apply_topics(s)

    first, second = asyncio.run(go())
    declared = len(load_topics(s))
    assert len(first.created) == declared - 1 and s.topic("recommendations") not in first.created
    assert second.created == [] and len(second.unchanged) == declared - 1
    assert len(second.differences) == 1
    assert "partitions 2 (declared 4)" in second.differences[0]


def test_topics_list_asks_the_broker_and_apply_needs_one(kafka):
    """``topics list`` shows what the broker holds against topics.yaml; ``topics apply``
    without a configured broker refuses instead of starting a throwaway one."""
    import json

    s = Settings(kafka_bootstrap=kafka.bootstrap, topic_prefix=f"l{uuid.uuid4().hex[:6]}-")
    env = {k: v for k, v in os.environ.items() if not k.startswith("LEADSTREAM_")}
    env.update(LEADSTREAM_HOME=str(HOME), LEADSTREAM_TOPIC_PREFIX=s.topic_prefix)

    def leadstream(*args, bootstrap=True):
        e = {**env, "LEADSTREAM_KAFKA_BOOTSTRAP": kafka.bootstrap} if bootstrap else env
        return subprocess.run([sys.executable, "-m", "leadstream", *args], env=e,
                              capture_output=True, text=True, timeout=120)

    before = leadstream("topics", "list", "--json")
    assert before.returncode == 1  # nothing of this prefix exists yet
    rows = json.loads(before.stdout)["topics"]
    assert {r["on_broker"] for r in rows} == {"missing"} and len(rows) == len(load_topics(s))
    refused = leadstream("topics", "apply", bootstrap=False)
    assert refused.returncode == 2 and "LEADSTREAM_KAFKA_BOOTSTRAP" in refused.stderr
    assert "Traceback" not in refused.stderr
    assert leadstream("topics", "apply").returncode == 0
    after = leadstream("topics", "list", "--json")
    assert after.returncode == 0
    assert {r["on_broker"] for r in json.loads(after.stdout)["topics"]} == {"ok"}
    offline = leadstream("topics", "list", "--json", bootstrap=False)
    assert offline.returncode == 0
    assert {r["on_broker"] for r in json.loads(offline.stdout)["topics"]} == {None}


def test_demo_command_shows_recommendations_and_stops_by_itself(tmp_path):
    """The README's first command, on its own embedded broker."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LEADSTREAM_")}
    env.update(LEADSTREAM_HOME=str(HOME), LEADSTREAM_BROKER_PORT=str(free_port()),
               LEADSTREAM_WEB_PORT=str(free_port()), COLUMNS="160")
    log = tmp_path / "demo.out"
    with open(log, "w") as fh:
        demo = subprocess.Popen([sys.executable, "-m", "leadstream", "demo", "--duration", "30",
                                 "--rate", "30"], env={**env, "PYTHONUNBUFFERED": "1"},
                                stdout=fh, stderr=subprocess.PIPE, text=True)
    try:
        # it runs the repository's example experiment: the report answers while it runs
        deadline = time.monotonic() + 120
        while "leadstream experiments report" not in log.read_text():
            assert demo.poll() is None and time.monotonic() < deadline, log.read_text()[-2000:]
            time.sleep(0.5)
        line = next(x for x in log.read_text().splitlines() if "experiments report" in x)
        report_env = dict(kv.split("=", 1) for kv in line.split() if kv.startswith("LEADSTREAM_"))
        time.sleep(20)
        report = subprocess.run([sys.executable, "-m", "leadstream", "experiments", "report",
                                 "--json"], env={**env, **report_env}, capture_output=True,
                                text=True, timeout=60)
        assert report.returncode == 0, report.stderr
        arms = json.loads(report.stdout)["arms"]
        assert set(arms) == {"popularity", "hybrid"}
        assert all(a["recommendations"] > 0 for a in arms.values())
        assert sum(a["impressions"] for a in arms.values()) > 0
        _, err = demo.communicate(timeout=120)
    finally:
        if demo.poll() is None:
            demo.kill()
            demo.wait(10)
    out = log.read_text()
    assert demo.returncode == 0, out[-2000:] + err[-2000:]
    assert "embedded kafka broker" in out
    assert "conf " in out and " 1. P" in out  # a ranked list on screen
    done = [line for line in out.splitlines() if line.startswith("done:")]
    assert done, out[-2000:]
    n_recs = int(done[0].split(",")[2].split()[0])
    assert n_recs > 0
    assert "clicked" in done[0]  # what the simulated leads did with their lists, per arm


def test_top_shows_rates_models_and_recommendations_of_a_live_worker(settings, worker_factory):
    w = worker_factory(settings.model_copy(update={"quality_sample_every": 1}))
    env = {**settings_env(settings), "COLUMNS": "160"}
    top = subprocess.Popen([sys.executable, "-m", "leadstream", "top", "--duration", "8"],
                           env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(3)  # let it subscribe to the latest recommendations
    sim = Simulator(SimConfig(leads=10, properties=60, days=1, seed=4, start=recent_start(1)))
    asyncio.run(publish(settings, [(r.topic, r.key, r.value) for r in sim.records()]))
    out, err = top.communicate(timeout=60)
    assert top.returncode == 0, err
    assert "leadstream top" in out and "events in/s" in out and "latency p50" in out
    assert "latest recommendations" in out and "conf " in out
    assert "hybrid" in out  # online quality per model
    assert w.total("leadstream_events_processed_total") > 0


def test_bench_pipeline_accounts_for_every_event_with_one_and_two_workers(kafka, monkeypatch):
    from leadstream.bench.pipeline import bench_pipeline

    monkeypatch.setenv("LEADSTREAM_KAFKA_BOOTSTRAP", kafka.bootstrap)
    monkeypatch.setenv("LEADSTREAM_HOME", str(HOME))
    before = set(Path(tempfile.gettempdir()).glob("leadstream-bench-*"))
    r = bench_pipeline(events=800, leads=60, loads=(40.0,), seconds=2.0, latency_leads=100)
    assert set(Path(tempfile.gettempdir()).glob("leadstream-bench-*")) == before  # cleaned up
    assert 0 < r["pipeline_events_per_second"] < r["ceiling_events_per_second"]
    # the Faust floors (a Faust agent passing the same events through, one at a time and
    # in batches) ran and finished, and the worker is reported against each
    for floor, ratio in (("faust_floor_events_per_second", "ratio_to_faust_floor"),
                         ("faust_floor_batched_events_per_second",
                          "ratio_to_faust_floor_batched")):
        assert r[floor] > 0
        assert abs(r[ratio] - r["pipeline_events_per_second"] / r[floor]) < 1e-3
    assert r["worker_cpu_us_per_event"] > 0
    assert r["bytes_per_lead"] > 0 and r["worker_rss_mb"] > 0
    lat = r["latency"]["40"]
    assert lat["recommendations"] == lat["events"] == 80  # every save got its list
    assert 0 < lat["latency_ms"]["p50"] <= lat["latency_ms"]["p99"]
    mixed = r["latency_mixed"]["40"]  # simulated traffic: only some events are due a list
    assert mixed["events"] == 80 and 0 < mixed["recommendations"] < 80
    assert 0 < mixed["latency_ms"]["p50"] <= mixed["latency_ms"]["p99"]
    two = r["two_workers"]
    assert two["accounted"] == two["input"] == r["events"]
    assert two["leads_compared"] > 0 and two["leads_differing"] == 0
    assert two["events_per_second"] > 0
    # hits (a positive event on a listing of the lead's latest list) can be 0 on a small
    # backlog taken in a few large batches (one list per lead per batch, made after it)
    hits1, hits2 = two["recommendation_hits_one_worker"], two["recommendation_hits"]
    assert hits1 >= 0 and hits2 >= 0
    assert two["hits_ratio_to_one"] == (round(hits2 / hits1, 3) if hits1 else None)


def test_bench_restore_reads_every_lead_back(kafka, monkeypatch):
    from leadstream.bench.restore import bench_restore

    monkeypatch.setenv("LEADSTREAM_KAFKA_BOOTSTRAP", kafka.bootstrap)
    monkeypatch.setenv("LEADSTREAM_HOME", str(HOME))
    r = bench_restore(leads=3000, sim_leads=40, days=3.0)
    full = r["restore"]
    assert r["every_lead_restored"] and full["leads_held"] == 3000
    assert full["restored_leads"] >= 3000 and full["restores"] >= 4  # each partition read
    assert r["reference_empty"]["leads_held"] == 0
    assert full["changelog_bytes"] > 3000 * 500 and r["leads_per_second"] > 0
