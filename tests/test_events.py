"""The event contract: records, JSON Schemas in schemas/, and validation reasons."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import jsonschema
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from leadstream.events import (
    EVENT_CLASSES,
    InvalidRecord,
    event_to_dict,
    json_schemas,
    parse_event,
    parse_listing,
)
from leadstream.simulate import SimConfig, Simulator

REPO = Path(__file__).resolve().parents[1]
SPEC_EVENT_TYPES = """session_started session_ended property_viewed property_detail_opened
property_compared map_area_viewed property_swiped property_liked property_unliked
property_saved property_unsaved property_shared search_performed filter_applied
filter_cleared contact_agent_clicked booking_requested booking_confirmed booking_completed
booking_cancelled offer_made recommendation_shown recommendation_clicked
agent_contacted_lead lead_responded outcome_recorded""".split()


def _schema(rel: str) -> dict:
    return json.loads((REPO / "schemas" / rel).read_text())


@pytest.fixture(scope="module")
def sim_events():
    sim = Simulator(SimConfig(leads=120, properties=200, days=10, seed=1))
    return [orjson.loads(r.value) for r in sim.records() if r.topic == "interactions"]


@pytest.fixture(scope="module")
def interaction_validator():
    return jsonschema.Draft202012Validator(_schema("interaction.json"))


def test_every_event_type_of_the_spec_has_a_record_and_a_schema_file():
    assert set(SPEC_EVENT_TYPES) <= set(EVENT_CLASSES)
    for name in EVENT_CLASSES:
        assert (REPO / "schemas" / "events" / f"{name}.json").exists()


def test_schema_files_are_the_ones_the_records_generate():
    for rel, doc in json_schemas().items():
        on_disk = (REPO / "schemas" / rel).read_text()
        assert json.loads(on_disk) == doc, f"schemas/{rel} is stale: run leadstream schemas --write"


def test_simulator_covers_every_event_type(sim_events):
    assert {e["event_type"] for e in sim_events} == set(EVENT_CLASSES)


def test_valid_events_pass_both_the_records_and_the_schemas(sim_events, interaction_validator):
    seen: dict[str, int] = {}
    for e in sim_events:
        seen[e["event_type"]] = seen.get(e["event_type"], 0) + 1
        if seen[e["event_type"]] > 25:  # jsonschema is slow; 25 of each type is plenty
            continue
        raw = orjson.dumps(e)
        ev = parse_event(raw)
        assert event_to_dict(ev)["event_id"] == e["event_id"]
        interaction_validator.validate(e)
        jsonschema.validate(e, _schema(f"events/{e['event_type']}.json"))


def _mutations(e: dict):
    """Invalid variants of a valid event that both the records and the schemas must refuse."""
    yield {k: v for k, v in e.items() if k != "lead_id"}
    yield {k: v for k, v in e.items() if k != "event_id"}
    yield dict(e, lead_id=123)
    yield dict(e, lead_id="")
    yield dict(e, event_type="property_teleported")
    yield dict(e, unexpected_field=1)
    yield dict(e, timestamp=[2026])
    if "payload" in e and e["payload"]:
        yield dict(e, payload={**e["payload"], "bogus": True})


def test_records_and_schemas_agree_on_invalid_events(sim_events, interaction_validator):
    by_type = {}
    for e in sim_events:
        by_type.setdefault(e["event_type"], e)
    for e in by_type.values():
        for bad in _mutations(e):
            with pytest.raises(InvalidRecord):
                parse_event(orjson.dumps(bad))
            assert not interaction_validator.is_valid(bad), bad


def test_property_listing_schema_agrees():
    sim = Simulator(SimConfig(leads=1, properties=30, seed=4))
    schema = _schema("property.json")
    for listing in sim.listings():
        parse_listing(orjson.dumps(listing))
        jsonschema.validate(listing, schema)
        bad = dict(listing, price=-1)
        with pytest.raises(InvalidRecord):
            parse_listing(orjson.dumps(bad))
        assert not jsonschema.Draft202012Validator(schema).is_valid(bad)


GOOD = {"event_id": "e1", "lead_id": "L1", "event_type": "property_viewed",
        "timestamp": "2026-03-01T18:04:05.123Z", "session_id": "s1", "property_id": "P1",
        "payload": {"duration_seconds": 12.5, "photos_viewed": 3}}


@pytest.mark.parametrize("raw,reason", [
    (b"{not json", "not_json"),
    (b"\xff\xfe\x00", "not_utf8"),
    (b"[1, 2, 3]", "not_an_object"),
    (orjson.dumps(dict(GOOD, event_type="teleported")), "unknown_event_type"),
    (orjson.dumps({k: v for k, v in GOOD.items() if k != "session_id"}), "schema"),
    (orjson.dumps(dict(GOOD, payload={"duration_seconds": "long"})), "schema"),
    (orjson.dumps(dict(GOOD, payload={"duration_seconds": -3})), "schema"),
    (orjson.dumps(dict(GOOD, timestamp="2026-03-01T18:04:05")), "schema"),  # no time zone
    (orjson.dumps(dict(GOOD, timestamp="1970-01-02T00:00:00Z")), "timestamp_too_old"),
    (b'{"event_id": "e1", "x": "' + b"a" * 70_000 + b'"}', "oversized"),
    (b'{"event_id":"e","lead_id":"L","event_type":"offer_made","timestamp":"2026-03-01T00:00:00Z",'
     b'"session_id":"s","property_id":"P","payload":{"amount":NaN}}', "schema"),
])
def test_invalid_input_gets_a_reason_and_a_readable_message(raw, reason):
    with pytest.raises(InvalidRecord) as info:
        parse_event(raw)
    assert info.value.reason == reason
    assert len(str(info.value)) > len(reason) + 5


def test_freshness_rules_apply_to_live_ingestion_only():
    now = datetime(2026, 3, 1, 18, tzinfo=UTC)
    future = orjson.dumps(dict(GOOD, timestamp="2026-03-05T00:00:00Z"))
    old = orjson.dumps(dict(GOOD, timestamp="2024-01-01T00:00:00Z"))
    assert parse_event(future).event_id == "e1"  # replay: no clock
    for raw, reason in ((future, "timestamp_in_future"), (old, "timestamp_too_old")):
        with pytest.raises(InvalidRecord) as info:
            parse_event(raw, now=now, max_future_skew=timedelta(hours=1),
                        max_age=timedelta(days=365))
        assert info.value.reason == reason
    ok = orjson.dumps(dict(GOOD, timestamp="2026-03-01T18:30:00+00:00"))
    assert parse_event(ok, now=now, max_future_skew=timedelta(hours=1)).event_id == "e1"


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400))
def test_arbitrary_bytes_never_crash_validation(raw):
    try:
        parse_event(raw)
    except InvalidRecord as err:
        assert err.reason
