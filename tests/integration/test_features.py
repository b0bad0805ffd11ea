"""Lead features through a real worker: the CLI reads what the worker computed, the table
survives a restart, late events are dead-lettered, idle leads are forgotten for good."""

from __future__ import annotations

import asyncio
import math
import subprocess
import sys
from datetime import UTC, datetime, timedelta

import orjson
import pytest

from leadstream.contract.events import make_event, parse_event, parse_listing
from leadstream.features import lead as F
from leadstream.models.catalog import Catalog
from tests.integration.conftest import publish, read_topic, settings_env

pytestmark = pytest.mark.integration


def _listings():
    rows = [("FP1", 410_000, "condo", "Austin", 2), ("FP2", 395_000, "condo", "Austin", 2),
            ("FP3", 880_000, "house", "Denver", 4)]
    return [orjson.dumps({"property_id": p, "status": "active", "price": price, "bedrooms": beds,
                          "bathrooms": 2, "square_feet": 1000 + beds * 100,
                          "property_type": t, "city": c, "latitude": 30.3, "longitude": -97.7})
            for p, price, t, c, beds in rows]


def _events(lead: str, now: datetime):
    """A day of activity over three sessions, a CRM contact, one event past the lateness
    and one duplicate (arrival order)."""
    t = now - timedelta(hours=30)
    evs = []

    def add(et, dt_min, sid="a", **kw):
        evs.append(make_event(et, event_id=f"{lead}-{len(evs)}", lead_id=lead, session_id=sid,
                              timestamp=t + timedelta(minutes=dt_min), **kw))

    add("session_started", 0)
    add("property_viewed", 1, property_id="FP1", payload={"duration_seconds": 40,
                                                           "photos_viewed": 6})
    add("property_saved", 3, property_id="FP1")
    add("property_swiped", 4, property_id="FP3", payload={"direction": "left"})
    add("search_performed", 5, payload={"query": "condo", "result_count": 12})
    add("filter_applied", 6, payload={"price_max": 500_000, "beds_min": 2})
    add("property_viewed", 600, sid="b", property_id="FP2", payload={"duration_seconds": 90})
    add("agent_contacted_lead", 700, sid=None, agent_id="A1", payload={"channel": "call"})
    add("property_shared", 1500, sid="c", property_id="FP2", payload={"channel": "sms"})
    add("property_viewed", 1490, sid="c", property_id="FP1", payload={"duration_seconds": 12})
    late = make_event("property_liked", event_id=f"{lead}-late", lead_id=lead, session_id="a",
                      timestamp=t + timedelta(minutes=2), property_id="FP2")
    return evs + [late, evs[8]]


def _cli(s, *args):
    proc = subprocess.run([sys.executable, "-m", "leadstream", "features", *args],
                          env=settings_env(s), capture_output=True, text=True, timeout=60)
    return proc


def test_features_cli_matches_the_pure_computation_and_survives_restart(settings,
                                                                        worker_factory):
    s = settings
    w = worker_factory(s)
    asyncio.run(publish(s, [("properties", orjson.loads(v)["property_id"].encode(), v)
                            for v in _listings()]))
    w.wait_for(lambda: w.total("leadstream_catalog_listings", status="active") == 3,
               what="catalog")
    now = datetime.now(UTC).replace(microsecond=0)
    arrivals = _events("FL1", now)
    asyncio.run(publish(s, [("interactions", b"FL1", orjson.dumps(e.model_dump(mode="json")))
                            for e in arrivals]))
    w.wait_for(lambda: w.total("leadstream_events_processed_total") == 10
               and w.total("leadstream_events_duplicate_total") == 1
               and w.total("leadstream_events_dead_lettered_total", reason="late_event") == 1,
               what="10 applied, 1 duplicate, 1 late")

    # the same events through the pure code, with the catalog the worker saw
    cat = Catalog()
    for v in _listings():
        cat.upsert(parse_listing(v))
    want = F.LeadFeatures()
    for e in arrivals:
        F.update(want, e, cat.attributes(e.property_id) if e.property_id else None,
                 lateness=s.allowed_lateness_seconds, session_gap=s.session_gap_seconds)
    expected = F.compute(want, lateness=s.allowed_lateness_seconds,
                         session_gap=s.session_gap_seconds)

    proc = _cli(s, "FL1", "--json", "--at-last-event")
    assert proc.returncode == 0, proc.stderr
    got = orjson.loads(proc.stdout)
    assert got["lead_id"] == "FL1"
    assert got["metadata"]["event_count"] == 10
    assert got["metadata"]["feature_version"] == F.FEATURE_VERSION
    assert got["categorical"] == expected.categorical
    assert got["categorical"]["preferred_property_type"] == "condo"
    assert set(got["numerical"]) == set(expected.numerical)
    for k, v in expected.numerical.items():
        assert math.isclose(got["numerical"][k], v, rel_tol=1e-9, abs_tol=1e-9), k
    assert got["numerical"]["sessions_lifetime"] == 3
    assert got["numerical"]["filter_price_max"] == 500_000

    # read "now": 30 h windows have decayed further than at the last event
    now_view = orjson.loads(_cli(s, "FL1", "--json").stdout)
    assert now_view["numerical"]["events_1h"] < got["numerical"]["events_1h"]
    human = _cli(s, "FL1")
    assert human.returncode == 0 and "preferred_property_type" in human.stdout

    # the late event is in the dead-letter topic with its reason
    dlq = asyncio.run(read_topic(s, "interactions-dlq"))
    reasons = [dict(m.headers)["leadstream.dlq.reason"] for m in dlq]
    assert reasons == [b"late_event"]
    assert parse_event(dlq[0].value).event_id == "FL1-late"

    # a full restart: the new worker restores the table from its changelog
    w.stop()
    w2 = worker_factory(s)
    w2.wait_for(lambda: _cli(s, "FL1", "--json", "--at-last-event").returncode == 0,
                what="features after restart")
    again = orjson.loads(_cli(s, "FL1", "--json", "--at-last-event").stdout)
    assert again["numerical"] == got["numerical"]
    assert again["categorical"] == got["categorical"]

    missing = _cli(s, "NOBODY", "--json")
    assert missing.returncode == 1 and "unknown lead" in missing.stderr


def test_idle_leads_are_forgotten_and_stay_forgotten(settings, worker_factory):
    s = settings.model_copy(update={"lead_ttl_seconds": 4.0, "lead_sweep_interval_seconds": 1.0})
    w = worker_factory(s)
    now = datetime.now(UTC).replace(microsecond=0)
    ev = make_event("session_started", event_id="idle-1", lead_id="IDLE1", session_id="x",
                    timestamp=now - timedelta(minutes=5))
    asyncio.run(publish(s, [("interactions", b"IDLE1", orjson.dumps(ev.model_dump(mode="json")))]))
    w.wait_for(lambda: w.get("/leads/IDLE1/features")[0] == 200, what="lead state")
    assert w.get("/leads/IDLE1")[0] == 200
    w.wait_for(lambda: w.total("leadstream_leads_expired_total") >= 1, timeout=30,
               what="the idle lead to expire")
    assert w.get("/leads/IDLE1/features")[0] == 404
    assert w.get("/leads/IDLE1")[0] == 404
    assert w.total("leadstream_leads") == 0
    # the deletion reached the changelogs: a restarted worker does not bring it back
    w.stop()
    w2 = worker_factory(s.model_copy(update={"lead_ttl_seconds": 86_400.0}))
    assert w2.get("/leads/IDLE1/features")[0] == 404
    assert w2.get("/leads/IDLE1")[0] == 404
