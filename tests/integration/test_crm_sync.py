"""examples/crm_sync.py against the embedded broker and a fake CRM: a real HTTP server on
127.0.0.1 that records every call. Records of both topics (valid against their schemas)
become the documented HighLevel API calls; a 429 is retried, a 404 skipped, and a second
run of the same consumer group makes no call (its offsets were committed)."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import threading
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import jsonschema
import orjson
import pytest

from .conftest import publish

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]
SCHEMAS = REPO / "schemas"


class FakeCRM:
    """HighLevel's API as far as the example uses it: records each call, answers 200, a
    404 for contact ``gone``, and a 429 to the first call to ``/contacts/c-hot``."""

    def __init__(self):
        self.calls: list[tuple[str, str, dict, dict]] = []
        self._throttled = False
        crm = self

        class Handler(BaseHTTPRequestHandler):
            def _handle(self):
                n = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(n) or b"null")
                if self.path == "/contacts/c-hot" and not crm._throttled:
                    crm._throttled = True
                    status = 429
                elif self.path.startswith("/contacts/gone"):
                    status = 404
                else:
                    status = 200
                crm.calls.append((self.command, self.path, dict(self.headers), body))
                out = b'{"succeded": true}'
                self.send_response(status)
                if status == 429:
                    self.send_header("Retry-After", "0")
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(out)))
                self.end_headers()
                self.wfile.write(out)

            do_PUT = do_POST = do_DELETE = _handle

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()


def _records(now: datetime):
    def score(lead, value, tier, trigger):
        return {"lead_id": lead, "score": value, "tier": tier, "model": "heuristic-1",
                "reasons": ["requested 1 viewing", "saved 3 listings this week"],
                "contact_at": (now + timedelta(hours=2)).isoformat(),
                "contact_reason": "most active around 19:00 local time",
                "trigger": trigger, "source_event_id": f"{lead}-e1",
                "event_time": now.isoformat(), "emitted_at": now.isoformat()}

    scores = [score("c-hot", 81.5, "hot", "tier_changed"),
              score("c-warm", 52.0, "warm", "score_changed"), score("gone", 12.0, "cold",
                                                                    "first_score")]
    insights = [
        {"type": "agent_insight", "agent_id": "u1", "generated_at": now.isoformat(),
         "figures": {"hot_response_minutes": {"value": 62, "team_median": 15}},
         "hints": ["answers hot leads 4.1 times slower than the team median"]},
        {"type": "agent_insight", "agent_id": "u2", "generated_at": now.isoformat(),
         "figures": {}, "hints": []},
        {"type": "preference_drift", "agent_id": "u1", "lead_id": "c-hot",
         "changes": ["area: Austin -> Denver"], "message": "c-hot's taste changed",
         "source_event_id": "c-hot-e9", "event_time": now.isoformat(),
         "emitted_at": now.isoformat()}]
    for rec in scores:
        jsonschema.validate(rec, json.loads((SCHEMAS / "lead-score.json").read_text()))
    for rec in insights:
        jsonschema.validate(rec, json.loads((SCHEMAS / "agent-insights.json").read_text()))
    return scores, insights


def _run(s, crm, group):
    proc = subprocess.run(
        [sys.executable, str(REPO / "examples" / "crm_sync.py"), "--bootstrap",
         s.kafka_bootstrap, "--topic-prefix", s.topic_prefix, "--group", group,
         "--crm-url", crm.url, "--token", "tok-123",
         "--insights-webhook", crm.url + "/hooks/coaching", "--idle-exit", "3"],
        capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_crm_sync_turns_scores_and_insights_into_crm_calls(settings):
    now = datetime.now(UTC).replace(microsecond=0)
    scores, insights = _records(now)
    asyncio.run(publish(settings, [("lead-scores", r["lead_id"].encode(), orjson.dumps(r))
                                   for r in scores]
                        + [("agent-insights", r["agent_id"].encode(), orjson.dumps(r))
                           for r in insights]))
    with FakeCRM() as crm:
        summary = _run(settings, crm, "crm-sync-test")
        calls = [(m, p, b) for m, p, _, b in crm.calls]
        assert all(h["Authorization"] == "Bearer tok-123" and h["Version"] == "2021-07-28"
                   for _, _, h, _ in crm.calls)
        # in topic order (the two topics interleave as they are fetched)
        hot = [c for c in calls if c[1].startswith("/contacts/c-hot")
               and not c[1].endswith("/notes")]
        # the 429 is retried: the first PUT twice
        assert [(m, p) for m, p, _ in hot] == [
            ("PUT", "/contacts/c-hot"), ("PUT", "/contacts/c-hot"),
            ("POST", "/contacts/c-hot/tags"), ("DELETE", "/contacts/c-hot/tags"),
            ("POST", "/contacts/c-hot/tasks")]
        fields = {f["key"]: f["field_value"] for f in hot[0][2]["customFields"]}
        assert fields == {"leadstream_score": 81.5, "leadstream_tier": "hot",
                          "leadstream_contact_at": scores[0]["contact_at"],
                          "leadstream_reasons": "requested 1 viewing; saved 3 listings this week"}
        assert hot[2][2] == {"tags": ["leadstream-hot"]}
        assert hot[3][2] == {"tags": ["leadstream-warm", "leadstream-cold"]}
        assert hot[4][2]["dueDate"] == scores[0]["contact_at"]
        assert hot[4][2]["completed"] is False and "requested 1 viewing" in hot[4][2]["body"]
        notes = [b for m, p, b in calls if p == "/contacts/c-hot/notes"]
        assert notes == [{"body": "c-hot's taste changed", "userId": "u1"}]
        # a score change updates the fields only
        assert [(m, p) for m, p, _ in calls if "c-warm" in p] == [("PUT", "/contacts/c-warm")]
        # an unknown contact: answered 404, not retried, its record's other calls skipped
        assert [(m, p) for m, p, _ in calls if "gone" in p] == [("PUT", "/contacts/gone")]
        coaching = [b for m, p, b in calls if p == "/hooks/coaching"]
        assert len(coaching) == 1 and coaching[0]["agent_id"] == "u1"
        assert coaching[0]["hints"] == insights[0]["hints"]
        assert summary == {"records": 6, "calls": 7, "failed": 1}

        # the same group again: everything was committed, nothing is called twice
        before = len(crm.calls)
        assert _run(settings, crm, "crm-sync-test")["records"] == 0
        assert len(crm.calls) == before
