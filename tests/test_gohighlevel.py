"""GoHighLevel webhooks, pure parts: every example payload maps to events the worker's own
validation accepts, a retried webhook maps to the same event ids, signatures of both
schemes verify and forged ones do not; the /events body splitter."""

from __future__ import annotations

from datetime import UTC, datetime

import orjson
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from leadstream import gohighlevel as ghl
from leadstream.contract.settings import (
    GHL_ED25519_PUBLIC_KEY,
    GHL_RSA_PUBLIC_KEY,
    Settings,
    load_public_key,
)
from leadstream.streams.intake import split_body
from leadstream.streams.step import Step
from tests.ghl_examples import ORDER, load, public_pem, sign_ed25519, sign_rsa

EXPECTED = {
    "contact-create": [("outcome_recorded", {"outcome": "nurturing"})],
    "outbound-message": [("agent_contacted_lead", {"channel": "sms"})],
    "inbound-message": [("lead_responded", {"channel": "sms"})],
    "appointment-create": [("booking_requested", None), ("booking_confirmed", None)],
    "appointment-update-cancelled": [("booking_cancelled", {
        "booking_id": "0007BWpSzSwfiuSl0tR3", "reason": "cancelled"})],
    "appointment-update-showed": [("booking_completed", None)],
    "opportunity-status-won": [("outcome_recorded", {"outcome": "converted",
                                                     "value": 412000})],
}


def _map(doc, now):
    return ghl.map_webhook(doc, received=now)


@pytest.mark.parametrize("name", ORDER)
def test_every_example_maps_to_events_the_worker_accepts(name):
    now = datetime.now(UTC)
    doc = load(name, now)
    m = _map(doc, now)
    assert m.webhook_type == doc["type"] and m.ignored is None and m.unmappable is None
    assert [e["event_type"] for e in m.events] == [t for t, _ in EXPECTED[name]]
    step = Step(Settings(), 4)
    for ev, (_, payload) in zip(m.events, EXPECTED[name], strict=True):
        parsed = step.validate(orjson.dumps(ev))  # the worker's check, freshness included
        assert parsed.lead_id == "9NkT25Vor1v4aQatFsv2"
        assert parsed.source == "gohighlevel"
        # messages by HighLevel's message id, the rest by the webhook's id
        assert parsed.event_id.startswith("ghl-" + doc.get("messageId", doc["webhookId"]))
        if payload is not None:
            assert ev["payload"] == payload
        if parsed.event_type.startswith("booking_"):
            assert parsed.property_id in ("GP1", "GP2")
        if parsed.event_type in ("outcome_recorded", "agent_contacted_lead"):
            assert parsed.agent_id == "YlWd2wuCAZQzh2cH1fVZ"


def test_booking_times_come_from_the_appointment():
    now = datetime.now(UTC)
    doc = load("appointment-create", now)
    req, conf = _map(doc, now).events
    assert req["timestamp"] == datetime.fromisoformat(
        doc["appointment"]["dateAdded"]).isoformat()
    assert req["payload"]["scheduled_for"] == datetime.fromisoformat(
        doc["appointment"]["startTime"]).isoformat()
    assert req["event_id"] != conf["event_id"]


def test_a_retried_webhook_maps_to_the_same_event_ids():
    now = datetime.now(UTC)
    for name in ORDER:
        doc = load(name, now)
        first = [e["event_id"] for e in _map(doc, now).events]
        later = datetime(2030, 1, 1, tzinfo=UTC)
        assert [e["event_id"] for e in _map(doc, later).events] == first, name
        doc.pop("webhookId")  # without HighLevel's id: the record's id and its change
        a = [e["event_id"] for e in _map(doc, now).events]
        assert a == [e["event_id"] for e in _map(dict(doc), later).events], name


def test_what_is_not_mapped_says_why():
    now = datetime.now(UTC)
    task = load("task-create", now)
    assert "TaskCreate" in _map(task, now).ignored
    assert "OpportunityStatusUpdate" in _map(task, now).ignored  # lists the mapped types
    appt = load("appointment-create", now)
    appt["appointment"]["title"] = "Viewing"
    appt["appointment"].pop("notes")
    assert "names no listing" in _map(appt, now).unmappable
    appt["appointment"]["appointmentStatus"] = "new"
    appt["type"] = "AppointmentUpdate"
    assert "no booking event" in _map(appt, now).ignored
    no_lead = load("inbound-message", now)
    no_lead.pop("contactId")
    assert "contactId" in _map(no_lead, now).unmappable
    robot = load("outbound-message", now)
    robot.pop("userId")
    assert "automation" in _map(robot, now).ignored
    assert _map([1, 2], now).unmappable and _map({"x": 1}, now).unmappable
    opp = load("opportunity-status-won", now)
    opp["status"] = "weird"
    assert "weird" in _map(opp, now).unmappable
    opp.pop("assignedTo")
    opp["status"] = "lost"
    assert _map(opp, now).events[0]["agent_id"] == "ghl-unassigned"


def test_the_default_keys_are_highlevels_published_ones():
    s = Settings()
    assert type(load_public_key(s.ghl_webhook_public_key)).__name__ == "Ed25519PublicKey"
    assert load_public_key(s.ghl_webhook_legacy_public_key).key_size == 4096
    assert s.ghl_webhook_public_key == GHL_ED25519_PUBLIC_KEY
    assert s.ghl_webhook_legacy_public_key == GHL_RSA_PUBLIC_KEY


def test_signatures_of_both_schemes():
    ed, rs = Ed25519PrivateKey.generate(), rsa.generate_private_key(65537, 2048)
    keys = {"public_key": load_public_key(public_pem(ed)),
            "legacy_public_key": load_public_key(public_pem(rs).replace("\n", "\\n"))}
    body = orjson.dumps(load("contact-create"))
    assert ghl.verify_signature(body, sign_ed25519(ed, body), **keys) == "ed25519"
    assert ghl.verify_signature(body, sign_rsa(rs, body), **keys) == "rsa-sha256"
    both = {**sign_ed25519(ed, body), **sign_rsa(rs, body)}
    assert ghl.verify_signature(body, both, **keys) == "ed25519"

    def refused(headers, data=body, **kw) -> str:
        with pytest.raises(ghl.SignatureError) as err:
            ghl.verify_signature(data, headers, **{**keys, **kw})
        return err.value.reason

    assert refused({}) == "missing_signature"
    assert refused(sign_ed25519(ed, body), data=body + b" ") == "bad_signature"
    assert refused(sign_ed25519(Ed25519PrivateKey.generate(), body)) == "bad_signature"
    assert refused(sign_rsa(rsa.generate_private_key(65537, 2048), body)) == "bad_signature"
    assert refused({"X-GHL-Signature": "not base64!"}) == "bad_signature"
    # an Ed25519 signature that fails is not rescued by a valid legacy one
    assert refused({**sign_ed25519(Ed25519PrivateKey.generate(), body),
                    **sign_rsa(rs, body)}) == "bad_signature"
    assert refused(sign_rsa(rs, body), accept_legacy=False) == "legacy_signature_refused"


def test_split_body_reads_arrays_lines_and_single_objects():
    assert [i.raw for i in split_body(b' [{"a":1}, {"b": [2]}] ', "application/json")] == [
        b'{"a":1}', b'{"b":[2]}']
    lines = split_body(b'{"a":1}\n\n  \n{"b":2}\n', "application/x-ndjson; charset=utf-8")
    assert [(i.index, i.line) for i in lines] == [(0, 1), (1, 4)]
    # JSON lines that start with an array are lines, when declared as lines
    assert len(split_body(b'[1]\n[2]', "application/x-ndjson")) == 2
    assert split_body(b"  \n", None) == []
    assert [i.raw for i in split_body(b'{"a":1}\n{"b":2}', "application/json")] == [
        b'{"a":1}', b'{"b":2}']


def test_webhook_settings_are_checked_when_read():
    from pydantic import ValidationError

    ed = Ed25519PrivateKey.generate()
    body = "".join(public_pem(ed).splitlines()[1:-1])  # the base64 body alone is enough
    assert Settings(ghl_webhook_public_key=body).ghl_webhook_public_key == body
    assert Settings(ghl_webhook_legacy_public_key="").ghl_webhook_legacy_public_key == ""
    for bad in ({"ghl_webhook_public_key": "junk"},
                {"ghl_webhook_public_key": GHL_RSA_PUBLIC_KEY},  # the wrong kind of key
                {"ghl_webhook_legacy_public_key": GHL_ED25519_PUBLIC_KEY},
                {"ghl_property_id_pattern": "(unclosed"},
                {"ghl_property_id_pattern": r"\[\w+\]"}):  # no property_id group
        with pytest.raises(ValidationError):
            Settings(**bad)
