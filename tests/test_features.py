"""Incremental lead features against a batch recomputation (tests/features_reference.py).

Random streams have many sessions (some reusing a session id after a long gap), gaps
from seconds to weeks, sparse leads, off-session CRM events, events arriving out of
order within and beyond the allowed lateness, duplicates, properties without a listing
and listings without size or coordinates, and several UTC offsets. The state goes
through encode/decode between every event, as it does in the worker's table.

Tolerance: relative 1e-6 (absolute 1e-6 near zero) for every numerical feature; 2e-4
absolute for the standard deviations (they are square roots of variances computed from
running sums); 3 % for the distinct-property sketch. Categorical features are equal.
"""

from __future__ import annotations

import math
import zlib
from datetime import UTC, datetime, timedelta, timezone

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from leadstream.contract.events import make_event
from leadstream.features import lead as F
from leadstream.features import record
from leadstream.features.catalog import BY_NAME, FEATURES, catalog_json, catalog_markdown
from leadstream.features.idset import EventIdSet, fingerprint
from tests.features_reference import accepted_events, reference_features

LATENESS = 2 * 3600.0
GAP = 1800.0
BASE = datetime(2026, 3, 2, 9, 0, tzinfo=UTC).timestamp()
ZONES = [UTC, timezone(timedelta(hours=5, minutes=30)), timezone(timedelta(hours=-6))]
CITIES = ["Austin", "Dallas", "Houston", "Denver", "Boise"]
PIDS = [f"P{i}" for i in range(40)]
# the distinct-property sketch is exact up to its estimator only when ids do not collide
assert len({zlib.crc32(p.encode()) % F.SEEN_BITS for p in PIDS}) == len(PIDS)


def _listing(i: int) -> dict | None:
    if i % 9 == 8:
        return None  # a property the catalog does not know
    return {
        "price": 150_000.0 + 37_500.0 * (i % 13) + 1000.0 * i,
        "bedrooms": 1 + i % 5,
        "bathrooms": 1.0 + 0.5 * (i % 4),
        "square_feet": None if i % 4 == 0 else 600.0 + 75.0 * i,
        "latitude": None if i % 5 == 0 else 30.0 + 0.05 * (i % 7),
        "longitude": None if i % 5 == 0 else -97.0 - 0.04 * (i % 6),
        "property_type": ["condo", "house", "townhouse", "apartment"][i % 4],
        "city": CITIES[i % len(CITIES)],
        "active": True,
    }


LISTINGS = {p: _listing(i) for i, p in enumerate(PIDS) if _listing(i) is not None}

PROPERTY_TYPES = ["property_viewed", "property_detail_opened", "property_swiped",
                  "property_liked", "property_unliked", "property_saved", "property_unsaved",
                  "property_shared", "recommendation_shown", "recommendation_clicked",
                  "property_compared"]
OFF_SESSION = ["booking_requested", "booking_confirmed", "booking_completed",
               "booking_cancelled", "offer_made", "agent_contacted_lead", "lead_responded",
               "outcome_recorded"]
OTHER = ["session_started", "session_ended", "search_performed", "filter_applied",
         "filter_cleared", "contact_agent_clicked", "map_area_viewed"]
GAPS = [0, 3, 40, 300, 1500, 1900, 3600, 3 * 3600, 9 * 3600, 86_400, 3 * 86_400, 9 * 86_400,
        20 * 86_400]


@st.composite
def payloads(draw, et: str) -> dict:
    if et == "property_viewed":
        return {"duration_seconds": draw(st.integers(0, 600)),
                "photos_viewed": draw(st.integers(0, 30))}
    if et == "property_swiped":
        return {"direction": draw(st.sampled_from(["left", "right"]))}
    if et == "property_shared":
        return {"channel": "sms"}
    if et == "property_compared":
        return {"compared_with": ["P1"]}
    if et in ("recommendation_shown", "recommendation_clicked"):
        return {"recommendation_id": "r1", "rank": draw(st.integers(1, 10))}
    if et.startswith("booking"):
        return {"booking_id": "b1"}
    if et == "offer_made":
        return {"amount": 300_000}
    if et == "agent_contacted_lead":
        return {"channel": "call"}
    if et == "outcome_recorded":
        return {"outcome": draw(st.sampled_from(["converted", "lost", "nurturing"]))}
    if et == "search_performed":
        return {"query": "2 bed", "result_count": draw(st.sampled_from([0, 0, 3, 50, 900]))}
    if et == "session_ended":  # the client's measure of the session, or none
        dur = draw(st.sampled_from([None, 0, 60, 900, 5000]))
        return {} if dur is None else {"duration_seconds": dur}
    if et == "map_area_viewed":
        return {"bbox": {"min_lat": 30.0, "min_lon": -98.0, "max_lat": 30.5, "max_lon": -97.5}}
    if et == "filter_applied":
        d = {}
        if draw(st.booleans()):
            d["price_min"] = draw(st.sampled_from([100_000, 200_000]))
        if draw(st.booleans()):
            d["price_max"] = draw(st.sampled_from([400_000, 900_000]))
        if draw(st.booleans()):
            d["beds_min"] = draw(st.integers(0, 3))
        if draw(st.booleans()):
            d["cities"] = ["Austin"]
        return d
    if et == "filter_cleared":
        return draw(st.sampled_from([{}, {"fields": ["price_min"]},
                                     {"fields": ["beds_min", "cities"]}]))
    return {}


@st.composite
def streams(draw):
    """(arrival-ordered events, the lateness used)."""
    n = draw(st.integers(1, 70))
    t = BASE + draw(st.integers(0, 86_400))
    sessions = ["s0"]
    zone = draw(st.sampled_from(ZONES))
    pids = draw(st.lists(st.sampled_from(PIDS), min_size=1, max_size=12, unique=True))
    events = []
    for i in range(n):
        t += draw(st.sampled_from(GAPS)) + draw(st.integers(0, 59))
        group = draw(st.sampled_from(["prop"] * 5 + ["off"] + ["other"] * 2))
        et = draw(st.sampled_from({"prop": PROPERTY_TYPES, "off": OFF_SESSION,
                                   "other": OTHER}[group]))
        choice = draw(st.integers(0, 9))
        if choice == 0:
            sessions.append(f"s{len(sessions)}")
        sid = sessions[-1] if choice > 1 else draw(st.sampled_from(sessions))  # reuse an old id
        if et in OFF_SESSION and draw(st.booleans()):
            sid = None
        if draw(st.integers(0, 6)) == 0:
            zone = draw(st.sampled_from(ZONES))
        fields = {"event_id": f"e{i}", "lead_id": "L1", "session_id": sid,
                  "timestamp": datetime.fromtimestamp(t, UTC).astimezone(zone),
                  "payload": draw(payloads(et))}
        if et in PROPERTY_TYPES or et.startswith(("booking", "offer")):
            fields["property_id"] = draw(st.sampled_from(pids))
        if et in ("agent_contacted_lead", "outcome_recorded"):
            fields["agent_id"] = "A1"
        events.append(make_event(et, **fields))
    # arrival order: each event is delayed by up to 1.5 x the lateness (some arrive late)
    delays = [draw(st.sampled_from([0, 0, 0, 60, 900, 4000, 7500, 10_000])) for _ in events]
    arrivals = [e for _, _, e in sorted(
        ((e.timestamp.timestamp() + d, i, e) for i, (e, d) in enumerate(zip(events, delays,
                                                                             strict=True))),
        key=lambda x: (x[0], x[1]))]
    # duplicates: re-deliver some events right after they arrive
    out = []
    for e in arrivals:
        out.append(e)
        if draw(st.integers(0, 9)) == 0:
            out.append(e)
    return out


def _run(arrivals):
    s = F.LeadFeatures()
    outcomes = []
    for ev in arrivals:
        listing = LISTINGS.get(ev.property_id) if ev.property_id else None
        outcomes.append(F.update(s, ev, listing, lateness=LATENESS, session_gap=GAP))
        s = F.decode(F.encode(s))
    return s, outcomes


def _close(name: str, got: float, want: float) -> bool:
    if name.endswith(("_spread_30d", "spread_km_30d")):
        return abs(got - want) <= 2e-4
    if name in ("distinct_properties_lifetime", "exploration_ratio_lifetime"):
        return abs(got - want) <= 0.03 * abs(want) + 1e-9
    return math.isclose(got, want, rel_tol=1e-6, abs_tol=1e-6)


def _compare(state, accepted, as_of=None):
    got = F.compute(state, as_of, lateness=LATENESS, session_gap=GAP)
    num, cat, meta = reference_features(accepted, LISTINGS, lateness=LATENESS,
                                        session_gap=GAP, as_of=as_of)
    assert set(got.numerical) == set(num)
    bad = {k: (got.numerical[k], num[k]) for k in num if not _close(k, got.numerical[k], num[k])}
    assert not bad, bad
    assert got.categorical == cat
    assert got.metadata["event_count"] == meta["event_count"]


@settings(max_examples=800, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(streams())
def test_incremental_features_equal_batch_recomputation(arrivals):
    state, outcomes = _run(arrivals)
    accepted, want = accepted_events(arrivals, LATENESS)
    assert outcomes == want  # the same events are applied, duplicate or late
    _compare(state, accepted)


@settings(max_examples=60, deadline=None)
@given(streams(), st.sampled_from([600.0, 5 * 3600.0, 2 * 86_400.0, 20 * 86_400.0]))
def test_features_read_later_decay_like_the_batch(arrivals, later):
    state, _ = _run(arrivals)
    accepted, _ = accepted_events(arrivals, LATENESS)
    wm = max(e.timestamp.timestamp() for e in accepted)
    _compare(state, accepted, as_of=wm + later)


def test_late_event_changes_nothing_and_is_reported():
    t = datetime(2026, 3, 2, 12, tzinfo=UTC)
    s = F.LeadFeatures()
    ev = lambda i, dt: make_event("property_viewed", event_id=f"e{i}", lead_id="L",  # noqa: E731
                                  session_id="s", timestamp=t + dt, property_id="P1",
                                  payload={"duration_seconds": 5})
    assert F.update(s, ev(1, timedelta(hours=10)), None, lateness=3600) == "applied"
    before = F.encode(s)
    assert F.update(s, ev(2, timedelta(hours=8, minutes=59)), None, lateness=3600) == "late"
    assert F.encode(s) == before
    assert F.update(s, ev(3, timedelta(hours=9, minutes=1)), None, lateness=3600) == "applied"


def test_state_is_bounded_whatever_the_lead_does():
    """A hostile lead (new session and property every event, for months) keeps a small state."""
    t = datetime(2026, 1, 1, tzinfo=UTC)
    s = F.LeadFeatures()
    for i in range(5000):
        ev = make_event("property_saved", event_id=f"e{i}", lead_id="L", session_id=f"s{i}",
                        timestamp=t + timedelta(minutes=7 * i), property_id=f"P{i}")
        F.update(s, ev, {**LISTINGS["P1"], "city": f"city{i}"})
    assert len(s.sessions) <= F.MAX_OPEN_SESSIONS
    assert len(s.ids) <= F.DEDUP_MAX_IDS and len(s.cities) <= F.MAX_CITIES
    assert len(s.starts) <= F.RECENT_STARTS
    # the event ids of the last 24 h (12 bytes each), then everything else
    assert len(F.encode(s)) < 3328 + 16 * len(s.ids)
    f = F.compute(s)
    assert f.numerical["sessions_lifetime"] == 5000
    assert 4000 < f.numerical["distinct_properties_lifetime"] <= 1024 * math.log(1024) + 1


def test_sparse_lead_has_defined_values():
    ev = make_event("lead_responded", event_id="e1", lead_id="L", session_id=None,
                    timestamp=datetime(2026, 3, 1, tzinfo=UTC))
    s = F.LeadFeatures()
    F.update(s, ev, None)
    f = F.compute(s)
    assert all(math.isfinite(x) for x in f.numerical.values())
    assert f.numerical["swipe_right_ratio_30d"] == 0.5
    assert f.numerical["hours_since_save"] == F.CAP_HOURS
    assert f.categorical["preferred_property_type"] == "unknown"
    assert f.categorical["lifecycle_stage"] == "browsing"
    empty = F.compute(F.LeadFeatures())
    assert empty.categorical["lifecycle_stage"] == "new"
    assert all(math.isfinite(x) for x in empty.numerical.values())


def test_decode_refuses_other_versions():
    with pytest.raises(ValueError, match="unknown version"):
        F.decode(b"XX1" + bytes(20))
    blob = F.encode(F.LeadFeatures())
    with pytest.raises(ValueError, match="slots"):
        F.decode(blob[:-8])


def test_catalog_documents_exactly_the_computed_features():
    f = F.compute(F.LeadFeatures())
    documented_num = {x.name for x in FEATURES if x.kind == "numerical"}
    documented_cat = {x.name for x in FEATURES if x.kind == "categorical"}
    assert documented_num == set(f.numerical)
    assert documented_cat == set(f.categorical)
    assert len(documented_num) >= 54 and len(documented_cat) >= 3
    for row in catalog_json():
        assert {"name", "family", "kind", "window", "definition"} <= set(row)
        assert row["family"] in ("property", "engagement", "session", "time")
        assert row["definition"] and BY_NAME[row["name"]].window


def test_catalog_document_is_current():
    from pathlib import Path

    doc = Path(__file__).resolve().parents[1] / "docs" / "features.md"
    assert doc.read_text() == catalog_markdown() + "\n", (
        "docs/features.md is stale: run `leadstream features --catalog --write`")


def test_bench_features_command_reports_its_figures(capsys):
    from leadstream.cli import main

    assert main(["bench", "features", "--leads", "15", "--days", "2", "--memory-leads", "500",
                 "--json"]) == 0
    r = orjson.loads(capsys.readouterr().out)
    for key in ("update_us_p50", "update_us_p99", "bytes_per_lead", "roundtrip_us_p50"):
        assert r[key] > 0
    assert r["update_us_p99"] >= r["update_us_p50"]
    assert r["stream"]["events"] > 0 and r["features"]["numerical"] >= 54
    # the table holds the stored bytes plus the key and object overheads
    assert r["bytes_per_lead"] > r["stored_bytes_per_lead_mean"]
    # the last list and score published are stored compressed with the lead
    assert 0 < r["published_stored_bytes_per_lead_mean"] < r["published_json_bytes_per_lead_mean"]


def test_stored_record_is_compressed_and_old_records_still_read():
    from leadstream.features import record

    s = F.LeadFeatures()
    t0 = datetime(2026, 3, 1, tzinfo=UTC)
    for i in range(40):
        F.update(s, make_event("property_viewed", event_id=f"e{i}", lead_id="L", session_id="s",
                               timestamp=t0 + timedelta(minutes=i), property_id=f"P{i % 7}",
                               payload={"duration_seconds": 30}), None, now=1000.0 + i)
    feats = F.encode(s)
    profile = orjson.dumps({"saved": {f"P{i:06d}": 1.7e9 + i for i in range(100)}})
    blob = record.pack(feats, profile)
    assert record.unpack(blob) == (feats, profile)
    assert len(blob) < 0.8 * (len(feats) + len(profile))
    # the sweep reads the last update and open sessions without decompressing
    assert record.peek(blob) == F.peek(feats) == (1039.0, 1)
    # a record written before compression (LR1) is still read, and peeked
    old = b"LR1" + len(feats).to_bytes(4, "big") + feats + profile
    assert record.unpack(old) == (feats, profile)
    assert record.peek(old) == F.peek(feats)
    with pytest.raises(ValueError, match="unknown version"):
        record.unpack(b"XX9" + blob[3:])


def test_bench_scale_holds_every_lead_in_one_record_each():
    from leadstream.bench.scale import run_one

    r = run_one(300, window=300)
    assert r["leads_held"] == 300 and r["events_per_second"] > 0
    assert 0 < r["record_bytes_mean"] < 4096


# ---- de-duplication far back (issue 20) ---------------------------------------------
DATA = __import__("pathlib").Path(__file__).resolve().parent / "data"
FAR = 3 * 86_400.0  # a lateness that lets any resent event through unless its id is known


def _view(eid: str, ts: float):
    return make_event("property_viewed", event_id=eid, lead_id="L", session_id="s",
                      timestamp=datetime.fromtimestamp(ts, UTC), property_id="P1",
                      payload={"duration_seconds": 5})


@settings(max_examples=60, deadline=None)
@given(back=st.integers(1, 500), span=st.integers(0, 86_400), offset=st.integers(0, 59))
def test_a_duplicate_500_events_back_and_24h_later_is_applied_once(back, span, offset):
    """The original, then ``back`` events over ``span`` seconds of event time (up to 24 h),
    then the original again: a duplicate, with a lateness that would let it through."""
    t0 = BASE + offset
    s = F.LeadFeatures()
    assert F.update(s, _view("orig", t0), None, lateness=FAR) == "applied"
    for k in range(1, back + 1):
        ts = t0 + math.floor(span * k / back)
        assert F.update(s, _view(f"e{k}", ts), None, lateness=FAR) == "applied"
    s = F.decode(F.encode(s))
    before = F.encode(s)
    assert F.update(s, _view("orig", t0), None, lateness=FAR) == "duplicate"
    assert F.encode(s) == before


def test_a_slice_replayed_from_far_back_and_from_just_before_a_crash_changes_nothing():
    s = F.LeadFeatures()
    events = [_view(f"e{i}", BASE + 100 * i) for i in range(700)]  # 19.4 h of events
    for ev in events:
        assert F.update(s, ev, None, lateness=FAR) == "applied"
        s = F.decode(F.encode(s))
    before = F.encode(s)
    for ev in events[190:390] + events[-200:]:  # 510 to 310 events back; the last 200
        assert F.update(s, ev, None, lateness=FAR) == "duplicate"
    assert F.encode(s) == before
    # beyond the 512 latest, the oldest ids are forgotten (bounded memory)
    assert F.update(s, events[0], None, lateness=FAR) == "applied"


def test_ids_older_than_the_ttl_are_forgotten():
    s = F.LeadFeatures()
    assert F.update(s, _view("a", BASE), None, lateness=FAR) == "applied"
    assert F.update(s, _view("b", BASE + F.DEDUP_TTL), None, lateness=FAR) == "applied"
    assert F.update(s, _view("a", BASE), None, lateness=FAR) == "duplicate"  # 24 h: known
    assert F.update(s, _view("c", BASE + F.DEDUP_TTL + 1), None, lateness=FAR) == "applied"
    assert list(s.ids.ts) == [math.floor(BASE + F.DEDUP_TTL), math.floor(BASE + F.DEDUP_TTL + 1)]
    assert F.update(s, _view("a", BASE), None, lateness=FAR) == "applied"  # forgotten
    # a lead whose events are a day apart remembers one id at a time
    s = F.LeadFeatures()
    for i in range(50):
        F.update(s, _view(f"d{i}", BASE + i * (F.DEDUP_TTL + 1)), None)
        assert len(s.ids) == 1


@st.composite
def resent_streams(draw):
    """(arrivals, ttl, max_ids): events, some out of order, some sent again later."""
    n = draw(st.integers(1, 90))
    t, events = BASE, []
    for i in range(n):
        t += draw(st.sampled_from([0, 1, 30, 600, 3600, 5 * 3600, 30 * 3600]))
        events.append((t + draw(st.sampled_from([0, 0, 0, 40, 2000, 8000])), i,
                       _view(f"e{i}", t)))
    arrivals = [e for _, _, e in sorted(events, key=lambda x: x[:2])]
    for _ in range(draw(st.integers(0, 40))):
        i = draw(st.integers(0, len(arrivals) - 1))
        arrivals.insert(draw(st.integers(i + 1, len(arrivals))), arrivals[i])
    ttl = draw(st.sampled_from([60.0, 3600.0, 86_400.0]))
    return arrivals, ttl, draw(st.sampled_from([1, 3, 16, 512]))


@settings(max_examples=300, deadline=None)
@given(resent_streams(), st.sampled_from([LATENESS, FAR]))
def test_duplicates_far_back_agree_with_the_batch_reference(stream, lateness):
    arrivals, ttl, max_ids = stream
    s, outcomes = F.LeadFeatures(), []
    for ev in arrivals:
        outcomes.append(F.update(s, ev, LISTINGS["P1"], lateness=lateness, dedup_ttl=ttl,
                                 dedup_max_ids=max_ids))
        s = F.decode(F.encode(s))
        wm = s.v[F.L.watermark]
        times = [t for _, t in s.ids]
        assert len(s.ids) == len(times) <= max_ids
        assert times == sorted(times) and all(t >= wm - ttl for t in times)
    accepted, want = accepted_events(arrivals, lateness, dedup_ttl=ttl, dedup_max_ids=max_ids)
    assert outcomes == want
    if lateness == LATENESS:  # with days of lateness, more sessions stay open than the
        _compare(s, accepted)  # reference models (it keeps no bound on open sessions)


def test_the_id_set_is_bounded_and_costs_what_the_docs_say():
    """A lead with an event every 0-300 s (2.5 min on average) fills the set: 512 ids,
    16 bytes each in the state; in the stored (compressed) record 8 bytes of fingerprint
    plus about 2 of time each (README: about 10 bytes per id, at most 5.5 KB)."""
    import random

    r, t, s = random.Random(5), BASE, F.LeadFeatures()
    for i in range(3000):
        t += r.randint(0, 300)
        F.update(s, _view(f"{i:08x}-6f1c-4f0e-9b2a", t), None)
        if i % 500 == 0:
            s = F.decode(F.encode(s))
    assert len(s.ids) == F.DEDUP_MAX_IDS
    empty = F.decode(F.encode(s))
    empty.ids = EventIdSet()
    assert len(F.encode(s)) - len(F.encode(empty)) == 16 * F.DEDUP_MAX_IDS
    stored = len(record.pack(F.encode(s), None)) - len(record.pack(F.encode(empty), None))
    assert 8 * F.DEDUP_MAX_IDS < stored <= 11 * F.DEDUP_MAX_IDS, stored


def test_a_record_of_the_previous_layout_reads_back_with_its_ids():
    """``data/lead-record-LR2-LF2.bin`` was written by commit b5b69e1 (features layout LF2:
    the last 64 ids in arrival order): 70 events of lead L-old, event ``old-i`` at 09:00 +
    5 i minutes, every 7th (i % 7 == 3) arriving 20 minutes late; last_offset 123."""
    blob = (DATA / "lead-record-LR2-LF2.bin").read_bytes()
    feats, profile = record.unpack(blob)
    assert feats[:3] == b"LF2" and profile
    s = F.decode(feats)
    arrival = sorted(range(70), key=lambda i: 5 * i + (20 if i % 7 == 3 else 0))
    kept = sorted(arrival[-64:])  # the last 64 arrivals, now ordered by event time
    t0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC).timestamp()
    assert list(s.ids) == [(fingerprint(f"old-{i}"), int(t0) + 300 * i) for i in kept]
    assert (s.event_count, s.last_offset) == (70, 123)
    assert F.compute(s).numerical["events_lifetime"] == 70
    for i in kept:
        ev = _view(f"old-{i}", t0 + 300 * i)
        assert F.update(s, ev, None) == "duplicate"
    assert F.update(s, _view("old-70", t0 + 300 * 70), None) == "applied"
    blob = F.encode(s)
    assert blob[:3] == b"LF4" and F.decode(blob) == s


def test_a_session_ended_event_reports_the_session_length():
    """``session_ended``'s ``duration_seconds`` (the client's measure) is the session's
    length when it is longer than the span of the events seen; never shorter."""
    from leadstream.contract.events import make_event

    t0 = datetime(2026, 3, 1, 12, tzinfo=UTC)

    def ev(et, eid, dt, **payload):
        return make_event(et, event_id=eid, lead_id="L1", session_id="s1",
                          timestamp=t0 + timedelta(seconds=dt), payload=payload)

    s = F.LeadFeatures()
    F.update(s, ev("session_started", "a", 0), None)
    F.update(s, ev("session_ended", "b", 2, duration_seconds=600), None)
    f = F.compute(s).numerical
    assert f["current_session_length_s"] == 600 and f["session_length_max_s"] == 600
    t = F.LeadFeatures()
    F.update(t, ev("session_started", "a", 0), None)
    F.update(t, ev("session_ended", "b", 900, duration_seconds=60), None)
    assert F.compute(t).numerical["current_session_length_s"] == 900
    # stored and read back, the reported length stays
    assert F.compute(F.decode(F.encode(s))).numerical["session_length_max_s"] == 600


def test_a_record_written_before_the_published_outputs_were_kept_reads_back():
    """``data/lead-record-LR2-LF3.bin`` was written by commit 366a9d9 (record layout LR2,
    before the last published list and score were kept): 12 events of lead L-lr2. It
    reads with no published outputs, and writes back as LR3 with the same features and
    profile."""
    from leadstream.streams.step import LeadState

    blob = (DATA / "lead-record-LR2-LF3.bin").read_bytes()
    assert blob[:3] == b"LR2"
    feats, profile = record.unpack(blob)
    assert feats[:3] == b"LF3" and orjson.loads(profile)["event_count"] == 12
    assert record.peek(blob) == F.peek(feats)
    assert record.published(blob) is None
    st = LeadState.unpack(blob)
    assert st.last_published() == (None, None) and st.profile.event_count == 12
    st.set_published(score=b'{"score": 1}')
    new = st.pack()
    assert new[:3] == b"LR3" and record.unpack(new)[1] == profile
    assert F.decode(record.unpack(new)[0]) == F.decode(feats)  # written as LF4
    assert record.peek(new) == record.peek(blob)
    assert record.unpack_published(record.published(new)) == (None, b'{"score": 1}')
