"""HTTP intake against a real worker on the embedded broker, over TCP: POST /events answers
per line, its accepted events reach the lead's state and its refused lines the dead-letter
topic with the worker's headers; GoHighLevel's example webhooks, signed with a throwaway
key, are mapped and applied, a retried one applied once, forged ones refused."""

from __future__ import annotations

import asyncio
import urllib.request
from datetime import UTC, datetime, timedelta

import orjson
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from leadstream.contract.events import make_event
from leadstream.streams.step import partition_for
from tests.ghl_examples import ORDER, load, public_pem, sign_ed25519, sign_rsa

from .conftest import read_topic

pytestmark = pytest.mark.integration
CONTACT = "9NkT25Vor1v4aQatFsv2"


def post(w, path: str, body: bytes, headers: dict[str, str]) -> tuple[int, dict]:
    req = urllib.request.Request(w.url + path, data=body, method="POST", headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, orjson.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, orjson.loads(e.read())


def _event(et, lead, n, ts, **kw) -> bytes:
    return orjson.dumps(make_event(et, event_id=f"{lead}-{n}", lead_id=lead, session_id="s1",
                                   timestamp=ts, **kw).model_dump(mode="json"))


def test_events_are_answered_per_line_applied_and_dead_lettered(settings, worker_factory):
    s = settings.model_copy(update={"http_max_body_bytes": 100_000})
    w = worker_factory(s)
    now = datetime.now(UTC).replace(microsecond=0)
    t = now - timedelta(minutes=10)
    good = [_event("session_started", "HL1", 0, t),
            _event("property_viewed", "HL1", 1, t + timedelta(seconds=5), property_id="P1",
                   payload={"duration_seconds": 30.5}),
            _event("search_performed", "HL1", 2, t + timedelta(seconds=9),
                   payload={"query": "2 bed condo", "result_count": 14}),
            _event("session_started", "HL2", 0, t)]
    bad = {  # index in the batch -> the reason the worker gives
        2: (b'{"event_id": "x1", "lead_id": "HL1"', "not_json"),
        4: (orjson.dumps({"event_id": "x2", "lead_id": "HL1", "event_type": "teleported",
                          "timestamp": t.isoformat(), "session_id": "s1"}), "unknown_event_type"),
        5: (orjson.dumps({"event_id": "x3", "lead_id": "HL1", "event_type": "property_viewed",
                          "timestamp": t.isoformat(), "session_id": "s1"}), "schema"),
        6: (orjson.dumps({"event_id": "x4", "lead_id": "HL2", "event_type": "session_started",
                          "timestamp": (now + timedelta(days=2)).isoformat(),
                          "session_id": "s1"}), "timestamp_in_future"),
        7: (b"[1, 2]", "not_an_object"),
    }
    lines, g = [], iter(good)
    for i in range(len(good) + len(bad)):
        lines.append(bad[i][0] if i in bad else next(g))
    body = b"\n".join(lines[:3]) + b"\n\n" + b"\n".join(lines[3:]) + b"\n"  # a blank line
    status, ans = post(w, "/events", body, {"Content-Type": "application/x-ndjson"})
    assert status == 207, ans
    assert (ans["accepted"], ans["refused"], ans["failed"]) == (4, 5, 0)
    assert [a["index"] for a in ans["lines"]] == list(range(9))
    assert [a["line"] for a in ans["lines"]] == [1, 2, 3, 5, 6, 7, 8, 9, 10]
    for i, a in enumerate(ans["lines"]):
        if i in bad:
            assert (a["status"], a["reason"]) == ("refused", bad[i][1]), a
            assert a["message"] and a["dead_letter"]["offset"] >= 0
        else:
            assert a["status"] == "accepted", a
            key = a["lead_id"].encode()
            assert a["partition"] == partition_for(key, 4) and a["offset"] >= 0

    # the accepted events are the lead's state
    w.wait_for(lambda: w.total("leadstream_events_processed_total") == 4, what="4 applied")
    code, feats = w.get("/leads/HL1/features")
    assert code == 200 and orjson.loads(feats)["metadata"]["event_count"] == 3
    assert orjson.loads(w.get("/leads/HL2/features")[1])["metadata"]["event_count"] == 1
    # on the input topic as sent, keyed by lead id; nothing rekeyed, nothing dead-lettered
    # by the worker (the intake dead-lettered the refused lines itself)
    inter = asyncio.run(read_topic(s, "interactions", idle=1.0))
    assert sorted(m.value for m in inter) == sorted(good)
    assert all(m.key == orjson.loads(m.value)["lead_id"].encode() for m in inter)
    assert w.total("leadstream_events_rekeyed_total") == 0
    assert w.total("leadstream_events_dead_lettered_total") == 0
    dlq = asyncio.run(read_topic(s, "interactions-dlq", idle=1.0))
    assert sorted(m.value for m in dlq) == sorted(v for v, _ in bad.values())
    for m in dlq:
        h = {k: v.decode() for k, v in m.headers}
        i = next(i for i, (v, _) in bad.items() if v == m.value)
        assert h["leadstream.dlq.reason"] == bad[i][1] and h["leadstream.dlq.error"]
        assert h["leadstream.dlq.topic"] == "http:/events"
        assert (h["leadstream.dlq.partition"], h["leadstream.dlq.offset"]) == ("-1", "-1")
        assert h["leadstream.dlq.request_id"] == ans["request_id"]
        assert h["leadstream.dlq.line"] == str(ans["lines"][i]["line"])
        assert h["leadstream.dlq.index"] == str(i)
        assert "leadstream.dlq.at" in h
    assert w.total("leadstream_intake_lines_total", endpoint="/events", outcome="accepted") == 4
    assert w.total("leadstream_intake_refused_total", endpoint="/events", reason="schema") == 1

    # a JSON array, all accepted; all refused; nothing; too much
    arr = b"[" + b",".join([_event("session_ended", "HL3", 0, t)]) + b"]"
    status, ans = post(w, "/events", arr, {"Content-Type": "application/json"})
    assert status == 200 and ans["accepted"] == 1 and ans["lines"][0]["event_id"] == "HL3-0"
    status, ans = post(w, "/events", b'[{"lead_id": "HL1"}]', {"Content-Type": "application/json"})
    assert status == 422 and ans["lines"][0]["reason"] == "schema"
    assert post(w, "/events", b" \n ", {"Content-Type": "application/x-ndjson"})[0] == 400
    status, ans = post(w, "/events", b"[" + b" " * 120_000 + b"]",
                       {"Content-Type": "application/json"})
    assert status == 413 and "limit of 100000" in ans["error"]
    w.wait_for(lambda: w.total("leadstream_events_processed_total") == 5, what="the array")
    assert w.total("leadstream_intake_requests_total", endpoint="/events", status="413") == 1


def test_gohighlevel_webhooks_are_verified_mapped_and_applied(settings, worker_factory):
    ed, rs = Ed25519PrivateKey.generate(), rsa.generate_private_key(65537, 2048)
    s = settings.model_copy(update={"ghl_webhook_public_key": public_pem(ed),
                                    "ghl_webhook_legacy_public_key": public_pem(rs)})
    w = worker_factory(s)
    now = datetime.now(UTC)
    sent, events = {}, 0
    for name in ORDER:
        body = orjson.dumps(load(name, now))
        sign = sign_rsa if name == "inbound-message" else sign_ed25519  # the legacy scheme too
        status, ans = post(w, "/webhooks/gohighlevel", body,
                           {"Content-Type": "application/json", **sign(ed if sign is
                                                                      sign_ed25519 else rs, body)})
        assert status == 200 and ans["status"] == "accepted", (name, ans)
        assert ans["signature"] == ("rsa-sha256" if sign is sign_rsa else "ed25519")
        assert ans["refused"] == 0 and all(a["lead_id"] == CONTACT for a in ans["lines"])
        sent[name] = (body, ans)
        events += ans["accepted"]
    assert events == 8
    # HighLevel sending a webhook again: accepted again, applied once (same event id)
    body, first = sent["opportunity-status-won"]
    status, again = post(w, "/webhooks/gohighlevel", body, sign_ed25519(ed, body))
    assert status == 200
    assert [a["event_id"] for a in again["lines"]] == [a["event_id"] for a in first["lines"]]
    w.wait_for(lambda: w.total("leadstream_events_processed_total") == 8
               and w.total("leadstream_events_duplicate_total") == 1,
               what="8 events applied, the retry dropped as a duplicate")
    feats = orjson.loads(w.get(f"/leads/{CONTACT}/features")[1])
    assert feats["metadata"]["event_count"] == 8
    for et in ("booking_requested", "booking_confirmed", "booking_completed",
               "booking_cancelled", "outcome_recorded", "lead_responded",
               "agent_contacted_lead"):
        assert w.total("leadstream_events_processed_total", event_type=et) >= 1, et
    scores = [m for m in asyncio.run(read_topic(s, "lead-scores", idle=1.0))
              if m.key == CONTACT.encode()]
    assert scores and orjson.loads(scores[-1].value)["trigger"] in (
        "crm_event", "tier_changed", "first_score")

    # forged, unsigned, replayed: 401, and nothing stored
    body = orjson.dumps(load("contact-create"))
    forged = body.replace(CONTACT.encode(), b"someone-else")
    assert post(w, "/webhooks/gohighlevel", forged, sign_ed25519(ed, body))[0] == 401
    other = Ed25519PrivateKey.generate()
    status, ans = post(w, "/webhooks/gohighlevel", body, sign_ed25519(other, body))
    assert (status, ans["reason"]) == (401, "bad_signature")
    assert post(w, "/webhooks/gohighlevel", body, {})[1]["reason"] == "missing_signature"
    old = load("contact-create", now - timedelta(hours=3))
    old_body = orjson.dumps(old)
    status, ans = post(w, "/webhooks/gohighlevel", old_body, sign_ed25519(ed, old_body))
    assert (status, ans["reason"]) == (401, "stale_webhook")
    assert w.total("leadstream_intake_requests_total", endpoint="/webhooks/gohighlevel",
                   status="401") == 4

    # a type nothing maps: a clear answer; one that cannot be mapped: dead-lettered
    task = orjson.dumps(load("task-create"))
    status, ans = post(w, "/webhooks/gohighlevel", task, sign_ed25519(ed, task))
    assert (status, ans["status"]) == (200, "ignored") and "TaskCreate" in ans["message"]
    appt = load("appointment-create")
    appt["appointment"].update(title="Viewing", notes="")
    appt_body = orjson.dumps(appt)
    status, ans = post(w, "/webhooks/gohighlevel", appt_body, sign_ed25519(ed, appt_body))
    assert (status, ans["status"], ans["reason"]) == (422, "refused", "unmappable")
    dlq = asyncio.run(read_topic(s, "interactions-dlq", idle=1.0))
    assert [m.value for m in dlq] == [appt_body]  # forged and replayed ones are not kept
    h = {k: v.decode() for k, v in dlq[0].headers}
    assert h["leadstream.dlq.reason"] == "unmappable"
    assert h["leadstream.dlq.topic"] == "http:/webhooks/gohighlevel"
    assert h["leadstream.dlq.webhook_type"] == "AppointmentCreate"
    assert "names no listing" in h["leadstream.dlq.error"]
    assert w.total("leadstream_events_processed_total") == 8
