"""Events in over a real broker, recommendations and dead letters out, every offset counted."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import jsonschema
import orjson
import pytest

from leadstream.client import EventCollector
from leadstream.contract.events import InvalidRecord, parse_event
from leadstream.models.suite import NO_MATCH, NUMBER_WORDS
from leadstream.ops.broker import java_command
from leadstream.simulate import SimConfig, Simulator

from .conftest import HOME, decode, publish, read_topic, recent_start, settings_env

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]
REC_SCHEMA = json.loads((REPO / "schemas" / "recommendation.json").read_text())
SCORE_SCHEMA = json.loads((REPO / "schemas" / "lead-score.json").read_text())
REASONS = {"oversized", "not_utf8", "not_json", "not_an_object", "unknown_event_type", "schema",
           "timestamp_in_future", "timestamp_too_old", "key_mismatch"}


def test_stream_with_bad_and_duplicate_events_is_fully_accounted(settings, worker_factory):
    sim = Simulator(SimConfig(leads=25, properties=120, days=2, seed=11, bad_ratio=0.08,
                              duplicate_ratio=0.05, start=recent_start(2)))
    records = list(sim.records())
    inter = [r for r in records if r.topic == "interactions"]
    n_bad = sum(not r.valid for r in inter)
    ids = Counter(orjson.loads(r.value)["event_id"] for r in inter if r.valid)
    n_dup = sum(c - 1 for c in ids.values())
    assert n_bad > 10 and n_dup > 10
    # a poisoned listing is dead-lettered too, and never enters the catalog
    poisoned = b'{"property_id":"PX","status":"active","price":-5,"bedrooms":2,' \
               b'"bathrooms":1,"property_type":"condo","city":"Austin"}'
    asyncio.run(publish(settings, [(r.topic, r.key, r.value) for r in records]
                        + [("properties", b"PX", poisoned)]))

    w = worker_factory(settings)
    w.wait_for(lambda: w.total("leadstream_events_processed_total")
               + w.total("leadstream_events_duplicate_total")
               + w.total("leadstream_events_dead_lettered_total",
                         topic=settings.topic("interactions")) >= len(inter),
               what="every interaction offset accounted for")
    time.sleep(1.0)  # nothing more may arrive: the sum must be exact, not just reached
    processed = w.total("leadstream_events_processed_total")
    dups = w.total("leadstream_events_duplicate_total")
    dead = w.total("leadstream_events_dead_lettered_total", topic=settings.topic("interactions"))
    assert w.total("leadstream_events_in_total", topic=settings.topic("interactions")) == len(inter)
    assert (processed, dups, dead) == (len(inter) - n_bad - n_dup, n_dup, n_bad)
    assert w.total("leadstream_events_rekeyed_total") == 0

    # dead letters: original bytes, a known reason, and the exact source offset
    originals = {(m.partition, m.offset): m.value
                 for m in asyncio.run(read_topic(settings, "interactions"))}
    dlq = asyncio.run(read_topic(settings, "interactions-dlq"))
    assert len(dlq) == n_bad + 1
    sources = Counter()
    for m in dlq:
        h = {k: v.decode() for k, v in m.headers}
        assert h["leadstream.dlq.reason"] in REASONS
        assert h["leadstream.dlq.error"]
        sources[h["leadstream.dlq.topic"]] += 1
        if h["leadstream.dlq.topic"] == settings.topic("interactions"):
            key = (int(h["leadstream.dlq.partition"]), int(h["leadstream.dlq.offset"]))
            assert originals[key] == m.value
            with pytest.raises(InvalidRecord) as refused:
                parse_event(m.value, now=datetime.now(UTC), max_future_skew=timedelta(hours=1),
                            max_age=timedelta(days=365))
            assert refused.value.reason == h["leadstream.dlq.reason"]
        else:
            assert m.key == b"PX" and h["leadstream.dlq.reason"] == "schema"
    assert sources[settings.topic("properties")] == 1

    # a lead's state counts each valid event_id once
    lead_id = "L000003"
    want = len({orjson.loads(r.value)["event_id"] for r in inter
                if r.valid and orjson.loads(r.value)["lead_id"] == lead_id})
    status, body = w.get(f"/leads/{lead_id}")
    assert status == 200 and orjson.loads(body)["profile"]["event_count"] == want

    # recommendations: schema-valid, active listings only, never what the lead rejected
    recs = [decode(m) for m in asyncio.run(read_topic(settings, "recommendations"))]
    valid = [orjson.loads(r.value) | {"_ts": r.ts} for r in inter if r.valid]
    assert {r["lead_id"] for r in recs} == {e["lead_id"] for e in valid}  # first event: cold start
    ever_listed = set(sim.props)
    ts_of = {e["event_id"]: e["_ts"] for e in valid}
    for rec in recs:
        jsonschema.validate(rec, REC_SCHEMA)
        assert rec["explanation"]
        if not rec["items"]:  # only when the lead's filters leave no active listing
            assert rec["explanation"] == NO_MATCH and any(
                e["event_type"] == "filter_applied" for e in valid
                if e["lead_id"] == rec["lead_id"] and e["_ts"] <= ts_of[rec["source_event_id"]])
            continue
        ids = [it["property_id"] for it in rec["items"]]
        assert set(ids) <= ever_listed and "PX" not in ids
        assert [it["rank"] for it in rec["items"]] == list(range(1, len(ids) + 1))
        # nothing the lead swiped left on, up to and including the triggering event
        t = ts_of[rec["source_event_id"]]
        rejected = {e["property_id"] for e in valid if e["lead_id"] == rec["lead_id"]
                    and e["_ts"] <= t and e["event_type"] == "property_swiped"
                    and e["payload"]["direction"] == "left"}
        assert not rejected & set(ids)

    # lead scores: schema-valid, a first score for every lead, CRM events re-score
    scores = [decode(m) for m in asyncio.run(read_topic(settings, "lead-scores"))]
    for sc in scores:
        jsonschema.validate(sc, SCORE_SCHEMA)
        assert sc["tier"] in ("hot", "warm", "cold") and sc["reasons"] and sc["contact_reason"]
        assert sc["contact_at"] >= sc["event_time"][:19]
    firsts = [sc["lead_id"] for sc in scores if sc["trigger"] == "first_score"]
    assert sorted(firsts) == sorted({e["lead_id"] for e in valid})
    crm_ids = {e["event_id"] for e in valid if e["event_type"] in (
        "agent_contacted_lead", "lead_responded", "outcome_recorded")}
    assert crm_ids and crm_ids <= {sc["source_event_id"] for sc in scores}
    assert w.total("leadstream_lead_scores_emitted_total") == len(scores)


def test_new_lead_gets_a_recommendation_quickly(settings, worker_factory):
    sim = Simulator(SimConfig(leads=5, properties=60, seed=2, start=recent_start(1)))
    asyncio.run(publish(settings, [("properties", r.key, r.value) for r in sim.records()
                                   if r.topic == "properties"]))
    w = worker_factory(settings)

    async def go():
        async with EventCollector(settings) as c:
            # the save comes after the per-lead minimum interval since the session's list
            await c.session_started(lead_id="NEW1", session_id="s1", device="web",
                                    timestamp=datetime.now(UTC) - timedelta(seconds=30))
            await c.property_saved(lead_id="NEW1", session_id="s1", property_id="P000007")
        t0 = time.monotonic()
        from aiokafka import AIOKafkaConsumer

        consumer = AIOKafkaConsumer(settings.topic("recommendations"), group_id=None,
                                    auto_offset_reset="earliest", **settings.kafka_client_kwargs())
        await consumer.start()
        try:
            while time.monotonic() - t0 < 20:
                batch = await consumer.getmany(timeout_ms=500)
                for msgs in batch.values():
                    for m in msgs:
                        rec = decode(m)
                        if rec["lead_id"] == "NEW1" and rec["trigger"] == "strong_signal":
                            return rec
        finally:
            await consumer.stop()

    rec = asyncio.run(go())
    assert rec is not None, "no recommendation for the new lead within 20 s"
    ids = [it["property_id"] for it in rec["items"]]
    assert "P000007" not in ids  # already saved
    saved = sim.props["P000007"]
    beds = NUMBER_WORDS[saved["bedrooms"]]
    assert rec["explanation"].startswith(f"you saved 1 {beds}-bed {saved['property_type']}")
    assert rec["items"][0]["city"] == saved["city"]
    # the session's list and the save's are one list when both arrive in one batch
    assert w.total("leadstream_recommendations_emitted_total") >= 1


@pytest.mark.skipif(java_command() is None, reason="the Java console producer needs Java")
def test_events_from_a_non_python_client_are_processed(settings, worker_factory, kafka, tmp_path):
    """Kafka's own Java console producer: keyed lines, and lines without a key (which the
    worker re-keys by lead id so the lead's state stays in one partition)."""
    w = worker_factory(settings)
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    lines = []
    for i in range(6):
        ev = {"event_id": f"java-{i}", "lead_id": "JAVA1", "event_type": "property_viewed",
              "timestamp": now, "session_id": "js", "property_id": f"P{i}",
              "payload": {"duration_seconds": 10}}
        value = orjson.dumps(ev).decode()
        lines.append(f"JAVA1|{value}" if i % 2 == 0 else f"|{value}")
    lines.append("JAVA1|{broken json")
    lib = HOME / "kafka-3.9.1" / "lib"
    proc = subprocess.run(
        [java_command(), "-cp", f"{lib}/*", "kafka.tools.ConsoleProducer",
         "--bootstrap-server", kafka.bootstrap, "--topic", settings.topic("interactions"),
         "--property", "parse.key=true", "--property", "key.separator=|",
         "--property", "null.marker="],
        input="\n".join(lines) + "\n", text=True, capture_output=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    w.wait_for(lambda: w.total("leadstream_events_processed_total") >= 6
               and w.total("leadstream_events_dead_lettered_total") >= 1,
               what="java-produced events")
    status, body = w.get("/leads/JAVA1")
    assert status == 200 and orjson.loads(body)["profile"]["event_count"] == 6
    assert w.total("leadstream_events_rekeyed_total") >= 1


def _valid_without_clock(raw: bytes) -> bool:
    try:
        parse_event(raw)
    except InvalidRecord:
        return False
    return True


def test_produce_cli_reports_bad_lines_and_everything_is_accounted(settings, worker_factory,
                                                                   tmp_path):
    sim = Simulator(SimConfig(leads=10, properties=50, days=1, seed=5, bad_ratio=0.1,
                              start=recent_start(1)))
    recs = list(sim.records())
    events = tmp_path / "events.jsonl"
    catalog = tmp_path / "catalog.jsonl"
    inter = [r for r in recs if r.topic == "interactions"]
    events.write_bytes(b"".join(r.value + b"\n" for r in inter))
    catalog.write_bytes(b"".join(r.value + b"\n" for r in recs if r.topic == "properties"))
    bad_lines = {i for i, r in enumerate(inter, start=1) if not r.valid}
    env = settings_env(settings)
    cli = [sys.executable, "-m", "leadstream", "produce"]
    out = subprocess.run(cli + [str(catalog), "--topic", "properties"], env=env,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    strict = subprocess.run(cli + [str(events), "--strict"], env=env, capture_output=True,
                            text=True, timeout=60)
    assert strict.returncode == 1 and "nothing sent" in strict.stderr
    out = subprocess.run(cli + [str(events)], env=env, capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    reported = {int(line.split(":")[0].split()[1]) for line in out.stderr.splitlines()
                if line.startswith("line ")}
    # freshness (future timestamps) is a live-ingestion rule: the file check reports the rest
    assert reported == {i for i in bad_lines if not _valid_without_clock(inter[i - 1].value)}
    assert len(reported) >= len(bad_lines) * 0.7
    w = worker_factory(settings)
    w.wait_for(lambda: w.total("leadstream_events_processed_total")
               + w.total("leadstream_events_dead_lettered_total") == len(inter),
               what="every line processed or dead-lettered")
    assert w.total("leadstream_events_dead_lettered_total") == len(bad_lines)
