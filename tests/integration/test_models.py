"""Models in a real worker: online quality metrics, snapshots on a timer and on shutdown,
restore on restart, and a rollback picked up by the running worker."""

from __future__ import annotations

import asyncio
import subprocess
import sys

import orjson
import pytest

from leadstream.simulate import SimConfig, Simulator

from .conftest import publish, read_topic, recent_start, settings_env

pytestmark = pytest.mark.integration


def _models_cli(s, *args):
    return subprocess.run([sys.executable, "-m", "leadstream", "models", *args],
                          env=settings_env(s), capture_output=True, text=True, timeout=60)


def test_snapshots_restore_and_rollback(settings, worker_factory, tmp_path):
    # quality measured on every positive event, at most once per step: small steps
    s = settings.model_copy(update={"snapshot_interval_seconds": 1.0, "quality_sample_every": 1,
                                    "batch_max_events": 4, "model_dir": tmp_path / "models"})
    sim = Simulator(SimConfig(leads=30, properties=120, days=2, seed=5, start=recent_start(2)))
    records = list(sim.records())
    n_events = sum(r.topic == "interactions" for r in records)
    first, second = records[: len(records) // 2], records[len(records) // 2:]
    n_first = sum(r.topic == "interactions" for r in first)
    w = worker_factory(s)
    asyncio.run(publish(s, [(r.topic, r.key, r.value) for r in first]))
    w.wait_for(lambda: w.total("leadstream_events_processed_total") == n_first, what="first half")

    def snapshot_of_first_half():
        snaps = orjson.loads(w.get("/models")[1])["snapshots"]
        return snaps and snaps[-1]["events_learned"] == n_first and snaps[-1]

    w.wait_for(snapshot_of_first_half, timeout=30, what="a periodic snapshot of the first half")
    status = orjson.loads(w.get("/models")[1])
    assert status["events_learned"] == n_first
    v_first = snapshot_of_first_half()["version"]
    assert snapshot_of_first_half()["reason"] == "periodic"
    q = status["quality"]["hybrid"]
    assert q["observed"] > 20 and 0 < q["hr@10"] <= 1
    assert w.total("leadstream_model_hr_at_10", model="content") > 0
    assert w.total("leadstream_model_learn_seconds_count") == n_first

    w.stop()

    # a worker with a long snapshot interval: restores v_first, learns, snapshots on SIGTERM
    s_long = s.model_copy(update={"snapshot_interval_seconds": 3600.0})
    w2 = worker_factory(s_long)
    assert orjson.loads(w2.get("/models")[1])["events_learned"] == n_first
    asyncio.run(publish(s, [(r.topic, r.key, r.value) for r in second]))
    w2.wait_for(lambda: w2.total("leadstream_events_processed_total") == n_events - n_first,
                what="second half")
    w2.stop()
    m = orjson.loads(_models_cli(s, "list", "--json").stdout)
    last = m["versions"][-1]
    assert m["current"] == last["version"] > v_first
    assert last["events_learned"] == n_events and last["reason"] == "shutdown"
    assert "hybrid" in last["quality"]
    table = _models_cli(s, "list")
    assert table.returncode == 0 and f"v{last['version']} (current)" in table.stdout

    # a new worker restores the latest snapshot
    w3 = worker_factory(s_long)
    status = orjson.loads(w3.get("/models")[1])
    assert (status["version"], status["events_learned"]) == (last["version"], n_events)
    # recommendations name the model version they came from
    recs = asyncio.run(read_topic(s, "recommendations"))
    assert recs and all("@v" in orjson.loads(r.value)["model_version"] for r in recs)

    # roll back to the first snapshot: the running worker follows
    out = _models_cli(s, "rollback", str(v_first))
    assert out.returncode == 0, out.stderr
    w3.wait_for(lambda: orjson.loads(w3.get("/models")[1])["version"] == v_first, timeout=30,
                what="the rollback to be loaded")
    assert orjson.loads(w3.get("/models")[1])["events_learned"] == n_first
    assert w3.total("leadstream_model_snapshot_version") == v_first
    bad = _models_cli(s, "rollback", "999")
    assert bad.returncode == 1 and "no snapshot version 999" in bad.stderr
