"""The worker's step, without a broker (streams/step.py)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import numpy as np
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from leadstream.contract.settings import Settings
from leadstream.streams.step import (
    ALERT,
    DEAD_LETTER,
    FACT,
    RECOMMENDATION,
    SCORE,
    DeadLetter,
    LeadStore,
    Record,
    Rekey,
    Step,
    partition_for,
    replay,
)

T0 = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=2)


def listing(pid, price, city="Austin", ptype="condo", beds=2, status="active"):
    return orjson.dumps({"property_id": pid, "status": status, "price": price, "bedrooms": beds,
                         "bathrooms": 1, "property_type": ptype, "city": city})


def event(et, eid, lead="L1", dt=0.0, **kw):
    ev = {"event_id": eid, "lead_id": lead, "event_type": et, "session_id": "s1",
          "timestamp": (T0 + timedelta(seconds=dt)).isoformat()}
    ev.update(kw)
    return orjson.dumps(ev)


@pytest.fixture
def pipe():
    p = Step(Settings(recommend_min_interval_seconds=5, recommend_every_n_events=3,
                      allowed_lateness_seconds=3600), 4)
    p.store = LeadStore()
    p.next_offset = 0
    rows = [(300e3, "Austin", "condo"), (320e3, "Austin", "condo"), (900e3, "Denver", "house"),
            (310e3, "Austin", "house"), (305e3, "Austin", "condo")]
    for i, (price, city, ptype) in enumerate(rows):
        assert p.load_listing(listing(f"P{i}", price, city, ptype), f"P{i}".encode())
    return p


@dataclass
class Out:
    """One step's outputs by kind, and the lead's state after it."""

    kinds: dict
    state: object
    changed: bool

    @property
    def recommendation(self):
        return self.kinds.get(RECOMMENDATION, [None])[-1]

    @property
    def score(self):
        return self.kinds.get(SCORE, [None])[-1]

    @property
    def facts(self):
        return self.kinds.get(FACT)

    @property
    def alerts(self):
        return self.kinds.get(ALERT)

    @property
    def dead(self):
        return self.kinds.get(DEAD_LETTER)


def run_batch(pipe, raws, lead="L1", offset=None) -> Out:
    """One step over ``raws`` of one lead (the next offsets, or from ``offset``); the
    changed leads written to the pipe's store as the agent does."""
    if not hasattr(pipe, "store"):
        pipe.store, pipe.next_offset = LeadStore(), 0
    key = lead.encode()
    start = pipe.next_offset if offset is None else offset
    records = [Record(key, raw, start + i) for i, raw in enumerate(raws)]
    pipe.next_offset = max(pipe.next_offset, start + len(raws))
    res = pipe.run(partition_for(key, pipe.n_partitions), records, pipe.store)
    for k, st_ in res.changed.items():
        pipe.store.put(k, st_)
    kinds: dict = {}
    for o in res.outputs:
        kinds.setdefault(o.kind, []).append(
            (o.key, o.value) if o.kind in (FACT, ALERT) else
            o if o.kind == DEAD_LETTER else o.value)
    return Out(kinds, pipe.store.get(key), key in res.changed)


def run(pipe, raw, lead="L1", offset=None) -> Out:
    """Ingest and apply one record as a batch of its own."""
    return run_batch(pipe, [raw], lead, offset)


def test_wrong_key_or_partition_is_rekeyed_by_lead():
    p = Step(Settings(), 4)
    raw = event("session_started", "e1", lead="L9")
    right = partition_for(b"L9", 4)
    assert p.ingest(raw, b"L9", right).lead_id == "L9"
    for key, part in ((None, right), (b"other", right), (b"L9", (right + 1) % 4)):
        res = p.ingest(raw, key, part)
        assert isinstance(res, Rekey) and res == Rekey(b"L9", right)


def test_invalid_records_become_dead_letters_with_source_headers():
    p = Step(Settings(), 4)
    res = p.ingest(b"{oops", b"k", 0)
    assert isinstance(res, DeadLetter) and res.reason == "not_json"
    h = dict(res.headers("interactions", 2, 41))
    assert (h["leadstream.dlq.partition"], h["leadstream.dlq.offset"]) == (b"2", b"41")
    assert p.ingest(None, b"k", 0).reason == "schema"
    future = event("session_started", "e1", dt=3 * 86400)
    assert p.ingest(future, b"L1", partition_for(b"L1", 4)).reason == "timestamp_in_future"


def test_duplicate_event_changes_nothing(pipe):
    out = run(pipe, event("property_saved", "e1", property_id="P0"))
    again = run(pipe, event("property_saved", "e1", property_id="P0"))
    assert again.kinds == {}  # nothing published; only the offset it records changed
    assert again.state.profile.event_count == 1 == out.state.profile.event_count
    assert again.state.features.last_offset == 1
    assert pipe.metrics.duplicates._value.get() == 1


def test_redelivered_offsets_change_nothing(pipe):
    run(pipe, event("property_saved", "e1", property_id="P0"), offset=10)
    b = run(pipe, event("property_viewed", "e2", dt=1, property_id="P1",
                        payload={"duration_seconds": 4}), offset=11)
    before = b.state.pack()
    # a crash before the commit: offsets 10 and 11 come again; the state already has them
    again = run_batch(pipe, [event("property_saved", "e1", property_id="P0"),
                             event("property_viewed", "e2", dt=1, property_id="P1",
                                   payload={"duration_seconds": 4})], offset=10)
    assert not again.changed and again.kinds == {}
    assert pipe.metrics.replayed._value.get() == 2
    assert pipe.store.get(b"L1").pack() == before
    # an old event id arriving at a new offset is a duplicate whose offset is recorded
    dup = run(pipe, event("property_saved", "e1", property_id="P0"), offset=12)
    assert dup.changed and dup.kinds == {}
    assert dup.state.features.last_offset == 12 and dup.state.features.event_count == 2


def test_late_event_is_dead_lettered_and_in_lateness_is_applied(pipe):
    run(pipe, event("property_viewed", "e1", dt=7200, property_id="P0",
                    payload={"duration_seconds": 5}))
    in_time = run(pipe, event("property_saved", "e2", dt=7200 - 3600, property_id="P0"))
    assert in_time.dead is None and in_time.state.profile.event_count == 2
    late = run(pipe, event("property_saved", "e3", dt=0, property_id="P1"))
    (dead,) = late.dead
    headers = dict(dead.headers)
    assert headers["leadstream.dlq.reason"] == b"late_event"
    assert b"allowed lateness of 3600 s" in headers["leadstream.dlq.error"]
    assert headers["leadstream.dlq.offset"] == b"2"
    assert late.recommendation is None and late.state.profile.event_count == 2
    from leadstream.features.lead import compute
    f = compute(late.state.features)
    assert f.metadata["event_count"] == 2 and f.numerical["saves_30d"] > 0


def test_a_batch_applies_each_event_exactly_as_one_at_a_time():
    """Features stay exact per event: a stream stepped in batches of 200 leaves every
    lead's features and profile as one event per step does; only how often a list is
    published changes (at most one per lead per batch)."""
    from leadstream.simulate import SimConfig, Simulator

    sim = Simulator(SimConfig(leads=30, properties=80, days=1.0, seed=5,
                              start=datetime.now(UTC) - timedelta(days=3)))
    catalog, stream = [], []
    for r in sim.records():
        (catalog if r.topic == "properties" else stream).append((r.key, r.value))
    results = []
    for batch in (1, 200):
        step, store = Step(Settings(), 4), LeadStore()
        for k, v in catalog:
            step.load_listing(v, k)
        lists: dict = {}
        for res in replay(step, stream, store, batch=batch):
            for o in res.outputs:
                if o.kind == RECOMMENDATION:
                    lists[o.key] = lists.get(o.key, 0) + 1
        results.append((store, lists))
    (one, lists_one), (many, lists_many) = results
    assert one.packed.keys() == many.packed.keys() and len(one.packed) >= 15
    from leadstream.features.lead import compute
    for key in one.packed:
        a, b = one.get(key), many.get(key)
        assert compute(a.features).numerical == compute(b.features).numerical, key
        assert a.features.last_offset == b.features.last_offset
        assert (a.profile.event_count, a.profile.counts, a.profile.saved) == \
            (b.profile.event_count, b.profile.counts, b.profile.saved)
        assert lists_many.get(key, 0) <= lists_one.get(key, 0) + 1
    assert sum(lists_many.values()) < sum(lists_one.values())


def test_online_quality_is_measured_every_nth_positive_event_and_at_most_once_per_batch():
    """Each measurement ranks the catalog with every model: one batch holding 60 saves
    (every 20th measured) measures once, not three times; one save per step measures
    every 20th."""

    def observed(batch: int) -> int:
        step, store = Step(Settings(quality_sample_every=20), 1), LeadStore()
        for i in range(80):
            step.load_listing(listing(f"P{i}", 300e3 + i), f"P{i}".encode())
        saves = [(b"L1", event("property_saved", f"e{i}", dt=i, property_id=f"P{i}"))
                 for i in range(60)]
        for _ in replay(step, saves, store, batch=batch):
            pass
        return step.quality.state["hybrid"]["observed"]

    assert observed(batch=60) <= 1
    assert observed(batch=1) == 3


def test_online_quality_is_measured_at_most_once_per_interval_of_event_time():
    """Live traffic comes in small batches: 40 saves 0.05 s apart in event time, one per
    step and every one due a measurement, measure once per 0.25 s (8 times), not 40."""

    def observed(interval: float) -> int:
        step = Step(Settings(quality_sample_every=1, quality_min_interval_seconds=interval), 1)
        store = LeadStore()
        for i in range(40):
            step.load_listing(listing(f"P{i}", 300e3 + i), f"P{i}".encode())
        saves = [(f"L{i}".encode(), event("property_saved", f"e{i}", lead=f"L{i}",
                                          dt=0.05 * i, property_id=f"P{i}"))
                 for i in range(40)]
        for _ in replay(step, saves, store, batch=1):
            pass
        return step.quality.state["hybrid"]["observed"]

    assert observed(0.0) == 40
    assert 7 <= observed(0.25) <= 9


def test_recommendation_triggers_and_minimum_interval(pipe):
    out = run(pipe, event("session_started", "e1"))
    assert out.recommendation is not None  # a new session
    out = run(pipe, event("property_saved", "e2", dt=2, property_id="P0"))
    assert out.recommendation is None  # strong signal, but within the 5 s interval
    out = run(pipe, event("property_saved", "e3", dt=6, property_id="P1"))
    rec = orjson.loads(out.recommendation)
    assert rec["trigger"] == "strong_signal" and rec["source_event_id"] == "e3"
    ids = [it["property_id"] for it in rec["items"]]
    assert "P0" not in ids and "P1" not in ids  # saved already
    assert ids[0] == "P4"  # Austin condo at the saved price: the closest match
    assert rec["explanation"] == "you saved 2 two-bed condos around $310k in Austin"
    assert rec["model_version"].startswith("hybrid-1:hybrid@v")
    assert all(it["reason"] for it in rec["items"])
    # every third ordinary event the list is recomputed; views of the top listing change
    # nothing material, so nothing is published
    for i, dt in enumerate((20, 21, 22)):
        out = run(pipe, event("property_viewed", f"v{i}", dt=dt, property_id="P4",
                              payload={"duration_seconds": 3}))
        assert out.recommendation is None
    assert pipe.metrics.recommendations_skipped._value.get() == 1
    # a left swipe on the top listing: the next check finds a new list and publishes it
    out = run(pipe, event("property_swiped", "w1", dt=30, property_id="P4",
                          payload={"direction": "left"}))
    for i, dt in enumerate((31, 32)):
        out = run(pipe, event("property_viewed", f"x{i}", dt=dt, property_id="P3",
                              payload={"duration_seconds": 3}))
    rec = orjson.loads(out.recommendation)
    assert rec["trigger"] == "top_k_changed"
    assert "P4" not in [it["property_id"] for it in rec["items"]]


def test_filters_rejections_and_delistings_shape_the_list(pipe):
    out = run(pipe, event("filter_applied", "f1", payload={"property_types": ["condo"]}))
    ids = [it["property_id"] for it in orjson.loads(out.recommendation)["items"]]
    assert set(ids) == {"P0", "P1", "P4"}
    out = run(pipe, event("property_swiped", "s1", dt=10, property_id="P4",
                          payload={"direction": "left"}))
    pipe.load_listing(listing("P1", 320e3, status="sold"), b"P1")
    pipe.load_listing(None, b"P0")  # tombstone
    out = run(pipe, event("filter_cleared", "f2", dt=20))
    ids = [it["property_id"] for it in orjson.loads(out.recommendation)["items"]]
    assert set(ids) == {"P2", "P3"}


def test_catalog_records_are_checked_per_record(pipe):
    assert pipe.check_listing(listing("P7", 100e3), b"P7", "properties") is None
    bad = pipe.check_listing(listing("P8", -1), b"P8", "properties")
    assert bad.reason == "schema"
    assert pipe.check_listing(listing("P9", 100e3), b"other", "properties").reason == "key_mismatch"
    assert not pipe.load_listing(listing("P8", -1), b"P8")
    assert "P8" not in pipe.catalog.index


def test_idle_leads_are_chosen_by_the_wall_clock_of_their_last_update():
    from leadstream.contract.events import parse_event
    from leadstream.features import lead as F
    from leadstream.features import record

    pipe = Step(Settings(lead_ttl_seconds=100.0), 4)
    items = []
    for lead, touched in (("OLD", 1000.0), ("NEW", 1090.0)):
        s = F.LeadFeatures()
        F.update(s, parse_event(event("session_started", "e1", lead=lead)), None, now=touched)
        items.append((lead.encode(), record.pack(F.encode(s), None)))
    assert pipe.expired(items, 1099.0) == []
    assert pipe.expired(items, 1101.0) == [b"OLD"]
    assert pipe.expired(items, 1191.0) == [b"OLD", b"NEW"]


def test_top_summarises_two_scrapes_like_promql():
    from leadstream.scrape import parse, quantile, summary

    def text(n_in, le_counts, hr):
        lines = [f'leadstream_events_in_total{{topic="t-interactions"}} {n_in}',
                 f'leadstream_model_hr_at_10{{model="hybrid"}} {hr}',
                 'leadstream_consumer_lag{topic="t-interactions",partition="0"} 7']
        for le, c in le_counts.items():
            lines.append(f'leadstream_receipt_to_recommendation_seconds_bucket{{le="{le}"}} {c}')
        return "\n".join(lines) + "\n"

    prev = parse(text(100, {"0.001": 0, "0.01": 0, "0.1": 0, "+Inf": 0}, 0.1))
    # 100 new observations: 50 under 1 ms, 40 more under 10 ms, 10 more under 100 ms
    cur = parse(text(300, {"0.001": 50, "0.01": 90, "0.1": 100, "+Inf": 100}, 0.4))
    s = summary(prev, cur, 2.0)
    assert s["events_in_per_s"] == 100.0 and s["lag"] == 7
    assert s["latency_ms"] == {"p50": 1.0, "p95": 55.0, "p99": 91.0}
    assert s["models"] == {"hybrid": {"hr@10": 0.4, "drifts": 0.0}}
    assert quantile(0.5, {}) is None


def test_lead_scores_are_published_when_they_are_news(pipe):
    out = run(pipe, event("session_started", "s0"))
    first = orjson.loads(out.score)
    assert first["trigger"] == "first_score" and first["model"] == "heuristic-1"
    assert first["tier"] == "cold" and 0 <= first["score"] < 40 and first["reasons"]
    out = run(pipe, event("property_viewed", "v1", dt=1, property_id="P0",
                          payload={"duration_seconds": 5}))
    assert out.score is None  # nothing new to say
    out = run(pipe, orjson.dumps({"event_id": "c1", "lead_id": "L1",
                                  "event_type": "agent_contacted_lead", "agent_id": "A1",
                                  "timestamp": (T0 + timedelta(seconds=2)).isoformat(),
                                  "payload": {"channel": "call"}}))
    crm = orjson.loads(out.score)
    assert crm["trigger"] == "crm_event"
    assert "answers 0% of agent contacts" in crm["contact_reason"]
    for i in range(3):  # bookings and an offer make the lead hot
        out = run(pipe, event("booking_requested", f"b{i}", dt=10 + i, property_id=f"P{i}",
                              payload={"booking_id": f"bk{i}"}))
    out = run(pipe, event("offer_made", "o1", dt=20, property_id="P1",
                          payload={"amount": 300000}))
    hot = orjson.loads(out.score) if out.score else None
    tier = out.state.profile.last_tier
    assert tier in ("warm", "hot")
    assert hot is None or hot["trigger"] in ("tier_changed", "score_changed")
    assert pipe.metrics.scores.labels(tier="cold")._value.get() >= 1


def test_a_lead_score_is_computed_only_when_due(pipe):
    """First event, strong signals and CRM events compute the score; other events only
    once the last computation is ``score_refresh_seconds`` of event time old."""
    t0 = T0.timestamp()
    run(pipe, event("session_started", "s0"))
    state = pipe.store.get(b"L1").profile
    assert state.score_checked_ts == t0
    for i, dt in enumerate((10, 100, 299)):  # views within the refresh: not computed
        run(pipe, event("property_viewed", f"v{i}", dt=dt, property_id="P0",
                        payload={"duration_seconds": 5}))
        assert pipe.store.get(b"L1").profile.score_checked_ts == t0
    run(pipe, event("property_viewed", "v9", dt=301, property_id="P0",
                    payload={"duration_seconds": 5}))
    assert pipe.store.get(b"L1").profile.score_checked_ts == t0 + 301
    run(pipe, event("property_saved", "s1", dt=302, property_id="P1"))  # strong: at once
    assert pipe.store.get(b"L1").profile.score_checked_ts == t0 + 302


def test_agent_facts_and_preference_drift(pipe):
    denver = [(1.2e6, "Denver", "house"), (1.3e6, "Denver", "house"),
              (1.25e6, "Denver", "house")]
    for i, (price, city, ptype) in enumerate(denver):
        assert pipe.load_listing(listing(f"D{i}", price, city, ptype), f"D{i}".encode())
    pipe.settings = pipe.settings.model_copy(update={"drift_min_positives": 3})

    def crm(et, eid, dt, **payload):
        return orjson.dumps({"event_id": eid, "lead_id": "L1", "event_type": et,
                             "agent_id": "A7", "payload": payload,
                             "timestamp": (T0 + timedelta(seconds=dt)).isoformat()})

    out = run(pipe, crm("agent_contacted_lead", "c1", 0, channel="call"))
    facts = [orjson.loads(v) for _, v in out.facts]
    assert [f["kind"] for f in facts] == ["lead", "contact"] and facts[1]["wait"] is None
    assert {k for k, _ in out.facts} == {b"A7"}
    out = run(pipe, crm("lead_responded", "r1", 5))
    assert [orjson.loads(v)["kind"] for _, v in out.facts] == ["response"]
    # three saves of Austin condos: the lead's taste is set (no alert the first time) ...
    for i in (0, 1, 4):
        out = run(pipe, event("property_saved", f"s{i}", dt=10 + i, property_id=f"P{i}"))
        assert out.alerts is None
    # ... then it saves Denver houses at three times the price: an alert, and a new list
    alerts = []
    for i in range(3):
        out = run(pipe, event("property_saved", f"d{i}", dt=3600 + i, property_id=f"D{i}"))
        alerts += out.alerts or []
        if out.alerts:
            assert orjson.loads(out.recommendation)["trigger"] == "preference_drift"
    assert len(alerts) >= 1
    key, body = alerts[0]
    alert = orjson.loads(body)
    assert key == b"A7" and alert["type"] == "preference_drift" and alert["agent_id"] == "A7"
    assert any(c.startswith(("area", "property type", "price level")) for c in alert["changes"])
    assert "re-ranked" in alert["message"]


def test_a_restarted_worker_rereading_the_catalog_keeps_the_snapshot_models():
    """After a restart the worker restores its snapshot, then re-reads the whole catalog
    topic (every version of every listing): records the snapshot saw rebuild the index
    but are not learned twice, so its lists equal those before the restart."""
    import pickle

    s = Settings()
    records = []  # (partition, offset, value, key): P0 is updated later in partition 0
    for i, (price, desc) in enumerate([(300e3, "sunny corner condo"), (320e3, "quiet condo"),
                                       (310e3, "garden house"), (305e3, "rooftop condo")]):
        raw = orjson.loads(listing(f"P{i}", price))
        raw["description"] = desc
        records.append((i % 2, i // 2, orjson.dumps(raw), f"P{i}".encode()))
    p0v2 = orjson.loads(records[0][2]) | {"price": 290e3, "description": "renovated condo"}
    records.append((0, 2, orjson.dumps(p0v2), b"P0"))
    a = Step(s, 4)
    for part, off, raw, key in records:
        assert a.load_listing(raw, key, part, off)
    out = None
    for i, pid in enumerate(["P0", "P1", "P0", "P3"]):
        out = run(a, event("property_saved", f"e{i}", dt=i * 10, property_id=pid))
    blob = pickle.dumps((a.models, a.catalog.ids[:], a.snapshot_meta()))
    before = a.current_recommendations("L1", out.state)

    b = Step(s, 4)
    models, ids, meta = pickle.loads(blob)
    b.restore(models, ids, 1, meta["catalog_offsets"])
    docs = b.models.content.tfidf.n
    for part, off, raw, key in records:  # the catalog topic from the beginning
        assert b.load_listing(raw, key, part, off)
    assert b.models.content.tfidf.n == docs
    after = b.current_recommendations("L1", out.state)
    assert [(i["property_id"], i["score"]) for i in after["items"]] == \
        [(i["property_id"], i["score"]) for i in before["items"]]
    # a record the snapshot did not see is learned
    new = orjson.loads(listing("P9", 315e3)) | {"description": "loft with terrace"}
    assert b.load_listing(orjson.dumps(new), b"P9", 1, 2)
    assert b.models.content.tfidf.n == docs + 1
    # the hybrid's weights are the restarted worker's settings, not the snapshot's
    c = Step(Settings(hybrid_w_content=0.25), 4)
    models, ids, meta = pickle.loads(blob)
    assert models.weights["w_content"] == s.hybrid_w_content
    c.restore(models, ids, 1, meta["catalog_offsets"])
    assert c.models.weights == {**a.models.weights, "w_content": 0.25}


# ---- hostile input at the ingest path (hypothesis) -------------------------------------

_JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=30),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                max_size=4),
    max_leaves=12)
_TIMES = st.sampled_from(["0001-01-01T00:00:00Z", "9999-12-31T23:59:59Z", "2026-02-30T00:00:00Z",
                          "1970-01-01T00:00:00Z", "yesterday", "", "2026-03-01T00:00:00+25:00"])
_TEXT = st.sampled_from(["\u202e", "\ud7ff", "\U0010ffff", "\x00", "e\u0301", "H" * 100_000,
                         "\ufeff", "💥"])


@st.composite
def _hostile(draw) -> bytes:
    """A good event, then broken: a field replaced, dropped or nested deep; hostile
    timestamps or text; the bytes truncated; or no JSON at all."""
    ev = orjson.loads(event("property_viewed", "h1", property_id="P1",
                            payload={"duration_seconds": 12}))
    how = draw(st.sampled_from(["replace", "drop", "timestamp", "text", "nest", "truncate",
                                "bytes", "unknown_type"]))
    if how == "replace":
        ev[draw(st.sampled_from([*ev, "payload", "junk"]))] = draw(_JSON)
    elif how == "drop":
        ev.pop(draw(st.sampled_from(sorted(ev))))
    elif how == "timestamp":
        ev["timestamp"] = draw(_TIMES)
    elif how == "text":
        ev[draw(st.sampled_from(["lead_id", "event_id", "session_id", "property_id"]))] = \
            draw(_TEXT)
    elif how == "nest":
        depth = draw(st.integers(10, 3000))
        return b'{"payload": ' + b"[" * depth + b"]" * depth + b"}"
    elif how == "unknown_type":
        ev["event_type"] = draw(st.text(max_size=20))
    elif how == "bytes":
        return draw(st.binary(max_size=200))
    raw = json.dumps(ev, allow_nan=True).encode("utf-8", "surrogatepass")  # NaN, Infinity
    if how == "truncate":
        raw = raw[: draw(st.integers(0, len(raw) - 1))]
    return raw


_FUZZ_PIPE = Step(Settings(allowed_lateness_seconds=3600), 4)
_FUZZ_PIPE.load_listing(listing("P1", 300e3), b"P1")


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_hostile(), st.sampled_from([b"L1", b"", None, b"\xff\xfe"]))
def test_hostile_records_are_dead_lettered_with_a_reason_and_good_ones_still_apply(raw, key):
    p = _FUZZ_PIPE
    res = p.ingest(raw, key, 0)
    if isinstance(res, DeadLetter):
        assert res.reason and res.message
        headers = dict(res.headers("interactions", 0, 7))
        assert headers["leadstream.dlq.reason"] == res.reason.encode()
    elif not isinstance(res, Rekey):  # it validated: applying it must not fail either
        k = res.lead_id.encode()
        p.run(partition_for(k, 4), [Record(k, raw, 1)], LeadStore())
    lead = f"G{len(raw)}"
    good = run(p, event("property_viewed", f"g-{len(raw)}", lead=lead, property_id="P1",
                        payload={"duration_seconds": 3}), lead=lead, offset=0)
    assert good.state.profile.event_count == 1  # the step still works
    p.store = LeadStore()


def test_a_poisoned_catalog_is_rejected_per_record_and_leaves_the_models_untouched(pipe):
    before = (len(pipe.catalog), pipe.models.content.X.copy(), pipe.models.content.tfidf.n)
    ok = orjson.loads(listing("P1", 320e3))
    poisoned = [  # (key, value)
        (b"PN", listing("PN", -5)), (b"PZ", listing("PZ", 0)),
        (b"PM", b'{"property_id": "PM", "status": "active"}'),
        (b"PF", json.dumps(ok | {"property_id": "PF", "price": float("nan")}).encode()),
        (b"PI", json.dumps(ok | {"property_id": "PI", "price": float("inf")}).encode()),
        (b"PT", orjson.dumps(ok | {"property_id": "PT", "bedrooms": "two"})),
        (b"PS", orjson.dumps(ok | {"property_id": "PS", "status": "haunted"})),
        (b"PC", orjson.dumps(ok | {"property_id": "PC", "property_type": "castle"})),
        (b"PX", b"[]"), (b"PX", b"{"),
    ]
    for key, raw in poisoned:
        assert not pipe.load_listing(raw, key), raw
        assert pipe.check_listing(raw, key, "properties") is not None, raw
    # a duplicated id with another key is refused; the same id again is an update
    assert not pipe.load_listing(listing("P1", 330e3), b"P2")
    assert len(pipe.catalog) == before[0]
    assert np.array_equal(pipe.models.content.X, before[1])
    assert pipe.models.content.tfidf.n == before[2]
    assert pipe.load_listing(listing("P1", 330e3), b"P1")
    assert len(pipe.catalog) == before[0]
    assert pipe.catalog.attributes("P1")["price"] == 330e3


def test_bench_stages_times_nested_stages_and_restores_the_code():
    from leadstream.bench.stages import bench_stages
    from leadstream.streams.step import LeadState

    run_, unpack = Step.run, vars(LeadState)["unpack"]
    r = bench_stages(leads=20, saves=300, batch=50)
    assert Step.run is run_ and vars(LeadState)["unpack"] is unpack  # timers gone after
    for name in ("mixed", "saves"):
        v = r["streams"][name]
        st = {k: x["us_per_event"] for k, x in v["stages"].items()}
        assert v["events"] > 0 and v["stages"]["ingest: parse and validate"]["calls"] >= v[
            "events"]
        assert v["batches"] >= v["events"] / 50
        assert st["    explain (reasons)"] <= st["  rank + explain all due"] <= st[
            "lists: rank + explain the due"]
        assert st["lists: rank + explain the due"] <= st["step (all of it)"] <= v[
            "us_per_event"]
    # every save is a strong signal to a lead that had none: each gets a list
    saves = r["streams"]["saves"]["stages"]
    assert saves["    explain (reasons)"]["calls"] == 300
    # ranked together: one pass per step with a lead due a list
    assert saves["  rank + explain all due"]["calls"] <= r["streams"]["saves"]["batches"]


def test_published_records_are_exactly_what_their_output_models_would_write():
    """Recommendations and lead scores are encoded from plain dicts (no model built per
    event): every one a simulated stream produces validates against its model in
    ``leadstream.contract.outputs`` (the published schema: no missing or extra field, bounds) and
    is the JSON that model writes (datetimes in UTC as ...Z, field for field)."""
    from leadstream.bench.common import simulated_step
    from leadstream.contract.outputs import LeadScore, Recommendation
    from leadstream.simulate import SimConfig, Simulator

    sim = Simulator(SimConfig(leads=40, properties=120, days=1.0, seed=3,
                              start=datetime.now(UTC) - timedelta(days=2)))
    p, records = simulated_step(sim)
    outs = {Recommendation: [], LeadScore: []}
    for res in replay(p, records, LeadStore(), batch=20):
        for o in res.outputs:
            if o.kind == RECOMMENDATION:
                outs[Recommendation].append(o.value)
            elif o.kind == SCORE:
                outs[LeadScore].append(o.value)
    for model, raws in outs.items():
        assert len(raws) > 20, model
        for raw in raws:
            assert orjson.loads(raw) == model.model_validate_json(raw).model_dump(mode="json")


def test_the_last_list_and_score_sent_are_kept_with_the_lead_and_survive_a_reload(pipe):
    """What ``GET /leads/{id}/recommendations`` and ``/score`` serve: the last list and
    score published, byte for byte, in the lead's stored record (a restarted or
    rebalanced worker decodes them from the changelog)."""
    out = run(pipe, event("session_started", "e1"))
    rec0, score0 = out.recommendation, out.score
    assert out.state.last_published() == (rec0, score0)
    out = run(pipe, event("property_saved", "e2", dt=6, property_id="P0"))
    rec1 = out.recommendation
    assert rec1 is not None and rec1 != rec0
    sent_score = out.score or score0  # a strong signal re-scores; published only if news
    assert out.state.last_published() == (rec1, sent_score)
    # views that publish nothing leave both as they were
    out = run(pipe, event("property_viewed", "v1", dt=7, property_id="P0",
                          payload={"duration_seconds": 3}))
    assert out.recommendation is None
    assert out.state.last_published() == (rec1, out.score or sent_score)
    pipe.store.forget_decoded()  # decoded again from the stored record
    assert pipe.store.get(b"L1").last_published()[0] == rec1
    # a lead with nothing published yet has neither
    from leadstream.streams.step import LeadState
    assert LeadState().last_published() == (None, None)


def test_a_requested_list_is_a_new_published_list_known_to_the_experiment(tmp_path):
    from leadstream.contract.outputs import Recommendation
    from leadstream.streams.step import LeadState

    exp = tmp_path / "exp.yaml"
    exp.write_text("experiments:\n  - name: e\n    salt: s\n    arms:\n"
                   "      - {name: a, share: 0.5, model: hybrid}\n"
                   "      - {name: b, share: 0.5, model: content}\n")
    p = Step(Settings(experiments_file=exp), 4)
    for i in range(3):
        p.load_listing(listing(f"P{i}", 300e3 + i), f"P{i}".encode())
    out = run(p, event("session_started", "e1"))
    first = orjson.loads(out.recommendation)
    state = out.state
    raw = p.requested_recommendation("L1", state, now=T0.timestamp() + 60)
    rec = orjson.loads(raw)
    assert orjson.loads(raw) == Recommendation.model_validate_json(raw).model_dump(mode="json")
    assert rec["trigger"] == "requested" and rec["recommendation_id"] != first[
        "recommendation_id"] and rec["source_event_id"] == rec["recommendation_id"]
    arm = p.experiment.arm_for("L1").name
    assert (rec["experiment"], rec["arm"]) == ("e", arm)
    assert state.last_published()[0] == raw
    assert state.profile.rec_log[-1][0] == rec["recommendation_id"]
    # reported back as shown, it counts as an impression of its arm
    shown = run(p, event("recommendation_shown", "e2", dt=61, property_id="P0",
                         payload={"recommendation_id": rec["recommendation_id"], "rank": 1}))
    assert not shown.dead
    assert p.metrics.experiment.labels(experiment="e", arm=arm, kind="impressions"
                                       )._value.get() == 1
    assert LeadState.unpack(state.pack()).last_published()[0] == raw
