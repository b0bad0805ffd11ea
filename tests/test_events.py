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

from leadstream.contract.events import (
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


# ---- the JSON Schemas agree with the worker ------------------------------------------
# A plain validator (no format assertion, as most are by default) over every good and
# every refused case must give the worker's verdict. What the schema cannot express is
# listed here with the reason; each listed case must really be refused by the worker and
# accepted by the schema, so the list cannot go stale.
SCHEMA_CANNOT_EXPRESS = {
    "calendar: 30 February": "a pattern checks each field's range, not days per month; "
                             "format: date-time says it to validators that assert formats",
    "cross-field: bbox min above max": "JSON Schema cannot compare two fields",
    "cross-field: price_min above price_max": "JSON Schema cannot compare two fields",
    "cross-field: beds_min above beds_max": "JSON Schema cannot compare two fields",
    "integral float for an integer": "1.0 is the integer 1 in JSON Schema's data model (a "
                                     "value, not a spelling); the worker wants 1",
    "python re: id with a final newline": "python-jsonschema's `$` matches before a final "
                                          "newline (Python re); ECMA-262's, which JSON Schema "
                                          "specifies, does not",
    "python re: timestamp with a final newline": "the same `$`",
    "size: over 64 KiB": "maxLength counts one string, not the record's bytes",
}
# also outside the schema, because they depend on the clock or on the lead's state, not
# on the record: timestamp_in_future / timestamp_too_old against the worker's clock
# (test_freshness_rules_apply_to_live_ingestion_only), late_event and duplicates
# (features/lead.py)


def _event_cases(sim_events):
    """(name, raw JSON bytes) of good and of refused events."""
    by_type = {}
    for e in sim_events:
        by_type.setdefault(e["event_type"], []).append(e)
    good = [(f"sim {e['event_type']} {i}", orjson.dumps(e))
            for evs in by_type.values() for i, e in enumerate(evs[:5])]
    for ts in ("2026-03-01T18:04:05Z", "2026-03-01t18:04:05z", "2026-03-01T18:04:05.123456789Z",
               "2026-03-01T18:04:05+05:30", "2026-03-01T18:04:05-00:00", "2000-01-01T00:00:00Z",
               "2026-02-28T23:59:59.5+23:59"):
        good.append((f"timestamp {ts}", orjson.dumps(dict(GOOD, timestamp=ts))))
    good.append(("integer as a float field", orjson.dumps(
        dict(GOOD, payload={"duration_seconds": 12, "photos_viewed": 3}))))
    bad = []
    for e in (evs[0] for evs in by_type.values()):
        bad += [(f"mutated {e['event_type']} {i}", orjson.dumps(b))
                for i, b in enumerate(_mutations(e))]
    for ts in ("2026-03-01T18:04:05", "2026-03-01T18:04:05+0100", "2026-03-01T18:04:05+01",
               "2026-03-01T18:04Z", "2026-03-01 18:04:05Z", "1772388245", "20260301T180405Z",
               "2026-03-01T18:04:05,5Z", "2026-13-01T18:04:05Z", "2026-03-01T24:00:00Z",
               "2026-03-01T18:04:60Z", "1999-12-31T23:59:59Z", "1970-01-02T00:00:00Z",
               " 2026-03-01T18:04:05Z", "", "yesterday"):
        bad.append((f"timestamp {ts!r}", orjson.dumps(dict(GOOD, timestamp=ts))))
    bad.append(("timestamp as unix seconds", orjson.dumps(dict(GOOD, timestamp=1772388245))))
    for payload in ({"duration_seconds": "12.5"}, {"duration_seconds": True},
                    {"duration_seconds": 5, "photos_viewed": "3"},
                    {"duration_seconds": 5, "photos_viewed": 2.5},
                    {"duration_seconds": 5, "photos_viewed": False}, {"duration_seconds": None}):
        bad.append((f"payload {payload}", orjson.dumps(dict(GOOD, payload=payload))))
    bad += [("id with a tab", orjson.dumps(dict(GOOD, lead_id="L\t1"))),
            ("id too long", orjson.dumps(dict(GOOD, event_id="e" * 129))),
            ("null session", orjson.dumps(dict(GOOD, session_id=None))),
            ("NaN", b'{"event_id":"e","lead_id":"L","event_type":"offer_made",'
                    b'"timestamp":"2026-03-01T00:00:00Z","session_id":"s","property_id":"P",'
                    b'"payload":{"amount":NaN}}'),
            ("booking scheduled_for without a zone", orjson.dumps(dict(
                GOOD, event_type="booking_requested",
                payload={"booking_id": "b1", "scheduled_for": "2026-03-04T10:00:00"})))]
    exceptions = [
        ("calendar: 30 February", orjson.dumps(dict(GOOD, timestamp="2026-02-30T10:00:00Z"))),
        ("cross-field: bbox min above max", orjson.dumps(dict(
            GOOD, event_type="map_area_viewed", payload={"bbox": {
                "min_lat": 31, "min_lon": -98, "max_lat": 30, "max_lon": -97}}))),
        ("cross-field: price_min above price_max", orjson.dumps(dict(
            GOOD, event_type="filter_applied", payload={"price_min": 9, "price_max": 1}))),
        ("cross-field: beds_min above beds_max", orjson.dumps(dict(
            GOOD, event_type="filter_applied", payload={"beds_min": 3, "beds_max": 1}))),
        ("integral float for an integer", orjson.dumps(
            dict(GOOD, payload={"duration_seconds": 5, "photos_viewed": 3.0}))),
        ("python re: id with a final newline", orjson.dumps(dict(GOOD, lead_id="L1\n"))),
        ("python re: timestamp with a final newline", orjson.dumps(
            dict(GOOD, timestamp="2026-03-01T18:04:05Z\n"))),
        ("size: over 64 KiB", orjson.dumps(GOOD)[:-1] + b" " * 70_000 + b"}"),
    ]
    return good, bad, exceptions


def _schema_verdict(validator, raw: bytes) -> bool:
    try:
        doc = orjson.loads(raw)  # RFC 8259 JSON: no NaN, as for any JSON Schema validator
    except orjson.JSONDecodeError:
        return False
    return validator.is_valid(doc)


def _worker_verdict(parse, raw: bytes) -> bool:
    try:
        parse(raw)
    except InvalidRecord:
        return False
    return True


def test_a_plain_json_schema_validator_agrees_with_the_worker_on_events(sim_events):
    validator = jsonschema.Draft202012Validator(_schema("interaction.json"))
    good, bad, exceptions = _event_cases(sim_events)
    assert len(good) > 100 and len(bad) > 200
    for expected, cases in ((True, good), (False, bad)):
        for name, raw in cases:
            assert _worker_verdict(parse_event, raw) is expected, name
            assert _schema_verdict(validator, raw) is expected, name
            if expected:
                assert _schema_verdict(jsonschema.Draft202012Validator(
                    _schema(f"events/{orjson.loads(raw)['event_type']}.json")), raw), name
    assert {name for name, _ in exceptions} == set(SCHEMA_CANNOT_EXPRESS)
    for name, raw in exceptions:
        assert not _worker_verdict(parse_event, raw), name
        assert _schema_verdict(validator, raw), name


def test_a_plain_json_schema_validator_agrees_with_the_worker_on_listings():
    validator = jsonschema.Draft202012Validator(_schema("property.json"))
    sim = Simulator(SimConfig(leads=1, properties=30, seed=4))
    listings = list(sim.listings())
    good = [orjson.dumps(x) for x in listings]
    one = listings[0]
    good += [orjson.dumps(dict(one, listing_date="2026-02-28", updated_at="2026-03-01T10:00:00Z",
                               price=350000, bathrooms=2))]
    bad = [orjson.dumps(dict(one, **change)) for change in (
        {"price": -1}, {"price": 0}, {"price": "350000"}, {"bedrooms": 2.5}, {"bedrooms": True},
        {"status": "rented"}, {"property_type": "castle"}, {"city": ""}, {"extra": 1},
        {"listing_date": "2026-03-01T00:00:00Z"}, {"listing_date": "2026-3-1"},
        {"listing_date": 20260301}, {"updated_at": "2026-03-01T10:00:00"},
        {"updated_at": "1772388245"}, {"latitude": 91}, {"amenities": "pool"})]
    bad.append(orjson.dumps({k: v for k, v in one.items() if k != "price"}))
    for expected, cases in ((True, good), (False, bad)):
        for raw in cases:
            assert _worker_verdict(parse_listing, raw) is expected, raw
            assert _schema_verdict(validator, raw) is expected, raw


def _fields(doc, where=""):
    """(location, field schema) of every property of every object in a schema document."""
    if isinstance(doc, dict):
        for name, sub in doc.get("properties", {}).items():
            yield f"{where}.{name}", sub
        for key, sub in doc.items():
            yield from _fields(sub, f"{where}/{key}")
    elif isinstance(doc, list):
        for sub in doc:
            yield from _fields(sub, where)


def test_every_field_of_every_schema_is_described():
    for rel, doc in json_schemas().items():
        missing = [loc for loc, sub in _fields(doc) if not sub.get("description")]
        assert not missing, (rel, missing)


def test_input_schemas_are_closed_and_output_schemas_open_to_added_fields():
    from leadstream.contract.outputs import OUTPUT_RECORDS

    def objects(doc):
        if isinstance(doc, dict):
            if "properties" in doc:
                yield doc
            for sub in doc.values():
                yield from objects(sub)
        elif isinstance(doc, list):
            for sub in doc:
                yield from objects(sub)

    for rel, doc in json_schemas().items():
        closed = [o.get("additionalProperties") is False for o in objects(doc)]
        assert closed, rel
        # inputs: the worker refuses unknown fields, so the schema says so; outputs: a field
        # added later must not break a consumer that validates
        assert all(closed) if rel not in OUTPUT_RECORDS else not any(closed), rel
    later = {"recommendation_id": "r", "lead_id": "L1", "score": 50, "tier": "warm",
             "reasons": [], "model": "heuristic-1", "contact_at": "2026-03-01T10:00:00Z",
             "contact_reason": "x", "source_event_id": "e1", "event_time": "2026-03-01T10:00:00Z",
             "emitted_at": "2026-03-01T10:00:01Z", "trigger": "first_score", "new_field": 1}
    jsonschema.validate(later, _schema("lead-score.json"))


def test_every_date_time_of_an_input_schema_carries_a_pattern():
    for rel, doc in json_schemas().items():
        if rel in ("recommendation.json", "lead-score.json", "agent-insights.json"):
            continue
        stack = [doc]
        while stack:
            node = stack.pop()
            if isinstance(node, dict):
                if node.get("format") in ("date-time", "date"):
                    assert "pattern" in node, (rel, node)
                stack.extend(node.values())
            elif isinstance(node, list):
                stack.extend(node)


# ---- Confluent's wire format -----------------------------------------------------------
def _framed(body: bytes, schema_id: int = 42) -> bytes:
    return b"\x00" + schema_id.to_bytes(4, "big") + body


@pytest.mark.parametrize("schema_id", [0, 1, 42, 2**32 - 1])
def test_confluent_framed_values_are_read_like_plain_json(schema_id):
    raw = orjson.dumps(GOOD)
    assert parse_event(_framed(raw, schema_id)) == parse_event(raw)
    listing = (b'{"property_id":"P1","status":"active","price":350000,"bedrooms":2,'
               b'"bathrooms":1.5,"property_type":"condo","city":"Austin"}')
    assert parse_listing(_framed(listing, schema_id)) == parse_listing(listing)


@pytest.mark.parametrize("raw,reason", [
    (b"\x00", "bad_wire_format"),
    (b"\x00\x00\x00\x2a", "bad_wire_format"),  # header cut short
    (_framed(b""), "bad_wire_format"),  # a header and nothing after it
    (_framed(b"\x02\x06L42\x0eproperty"), "bad_wire_format"),  # an Avro body
    (_framed(b"\x00\x0a\x03e1"), "bad_wire_format"),  # a Protobuf body (message index 0)
    (_framed(b"\xff\xfe{}"), "bad_wire_format"),  # not UTF-8
    (_framed(b'{"event_id": "e1"'), "bad_wire_format"),  # broken JSON
    (_framed(orjson.dumps(dict(GOOD, event_type="teleported"))), "unknown_event_type"),
    (_framed(orjson.dumps(dict(GOOD, timestamp="2026-03-01T18:04:05"))), "schema"),
    (_framed(b"[1]"), "not_an_object"),
    (_framed(b"{}" + b" " * 70_000), "oversized"),
])
def test_a_bad_frame_gets_its_own_reason_and_a_framed_bad_event_the_usual_one(raw, reason):
    for parse in (parse_event, parse_listing):
        with pytest.raises(InvalidRecord) as info:
            parse(raw, max_bytes=65_536)
        if parse is parse_event or reason in ("bad_wire_format", "oversized", "not_an_object"):
            assert info.value.reason == reason, (parse, raw[:40])
        assert len(info.value.message) > 20


def test_tail_prints_a_framed_value_as_its_json():
    from types import SimpleNamespace

    from leadstream.cli.common import describe_record

    def shown(value):
        return describe_record("interactions", SimpleNamespace(headers=[], value=value))

    assert json.loads(shown(_framed(orjson.dumps(GOOD)))) == GOOD
    assert shown(b"\x00\x01") == repr(b"\x00\x01")  # a bad frame: its bytes


def test_the_readme_lists_every_event_type_of_the_table_in_its_group():
    """The producers' table in README.md: one row per group of the event-type table, each
    type in its group's row, every required payload field in bold."""
    import re
    from pathlib import Path

    from leadstream.contract.events import EVENT_TYPES

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    rows = {}
    for line in readme.split("| group | event types (payload fields) |")[1].splitlines()[2:]:
        if not line.startswith("|"):
            break
        group, text = (c.strip() for c in line.strip("|").split("|"))
        rows[group.lower()] = text
    assert set(rows) == {t.group for t in EVENT_TYPES}
    for group, text in rows.items():
        names, prefix = [], ""
        for name in re.findall(r"`(\w+)`", text):  # `booking_requested` / `_confirmed`
            if name.startswith("_"):
                name = prefix + name
            else:
                prefix = name.rsplit("_", 1)[0]
            names.append(name)
        assert sorted(names) == sorted(t.name for t in EVENT_TYPES if t.group == group)
        bold = set(re.findall(r"\*\*(\w+)\*\*", text))
        required = {f for t in EVENT_TYPES if t.group == group for f in t.required_fields}
        assert bold == required, group
