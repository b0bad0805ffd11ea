"""Turn leadstream's ``lead-scores`` and ``agent-insights`` into GoHighLevel CRM updates.

A consumer example (README "For consumers"): it reads both topics with aiokafka, in a
consumer group of its own, and calls HighLevel's API (v2, ``services.leadconnectorhq.com``):

- every score: the contact's custom fields ``leadstream_score``, ``leadstream_tier``,
  ``leadstream_contact_at`` and ``leadstream_reasons`` (``PUT /contacts/{id}``; create the
  fields with these keys in HighLevel first);
- a first score or a tier change: the tag ``leadstream-<tier>`` added and the other tiers'
  tags removed (``POST`` / ``DELETE /contacts/{id}/tags``), and for a lead that became hot,
  a task due at its ``contact_at`` with the reasons (``POST /contacts/{id}/tasks``);
- a preference drift: a note on the contact for its agent (``POST /contacts/{id}/notes``);
- an agent insight with coaching hints: posted to ``--insights-webhook`` (e.g. the URL of a
  HighLevel workflow's Inbound Webhook trigger, which can message the agent), else skipped.

The lead id is the HighLevel contact id (what ``POST /webhooks/gohighlevel`` maps
``contactId`` to). Offsets are committed once a record's calls are done (at least once: a
crash between a call and the commit repeats it; field and tag updates are idempotent, a
task or note may be created twice). A 429 or 5xx is retried with back-off (honouring
``Retry-After``); another 4xx is logged and skipped (a 404, an unknown contact: a lead not from
HighLevel, skips the record's other calls too).

    python examples/crm_sync.py --bootstrap 127.0.0.1:9092 --token "$GHL_TOKEN" \\
        [--topic-prefix prod-] [--crm-url https://services.leadconnectorhq.com] \\
        [--insights-webhook URL] [--group leadstream-crm-sync] [--idle-exit SECONDS]

>>> calls = plan_score({"lead_id": "c1", "score": 78.4, "tier": "hot", "trigger": "tier_changed",
...     "reasons": ["requested 1 viewing"], "contact_at": "2026-03-02T19:00:00-06:00",
...     "contact_reason": "most active around 19:00", "source_event_id": "e1"})
>>> [(m, p) for m, p, _ in calls]
[('PUT', '/contacts/c1'), ('POST', '/contacts/c1/tags'), ('DELETE', '/contacts/c1/tags'), \
('POST', '/contacts/c1/tasks')]
>>> calls[1][2], calls[3][2]["dueDate"]
({'tags': ['leadstream-hot']}, '2026-03-02T19:00:00-06:00')
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
import time
from urllib.parse import quote

log = logging.getLogger("crm_sync")
TIERS = ("hot", "warm", "cold")
API_VERSION = "2021-07-28"  # HighLevel's API version header for contacts


def _contact(lead_id: str) -> str:
    return f"/contacts/{quote(lead_id, safe='')}"


def plan_score(rec: dict) -> list[tuple[str, str, dict]]:
    """The CRM calls for one ``lead-scores`` record: (method, path, JSON body)."""
    path = _contact(rec["lead_id"])
    calls = [("PUT", path, {"customFields": [
        {"key": "leadstream_score", "field_value": round(float(rec["score"]), 1)},
        {"key": "leadstream_tier", "field_value": rec["tier"]},
        {"key": "leadstream_contact_at", "field_value": rec.get("contact_at")},
        {"key": "leadstream_reasons", "field_value": "; ".join(rec.get("reasons") or [])},
    ]})]
    if rec.get("trigger") in ("first_score", "tier_changed"):
        calls.append(("POST", f"{path}/tags", {"tags": [f"leadstream-{rec['tier']}"]}))
        calls.append(("DELETE", f"{path}/tags",
                      {"tags": [f"leadstream-{t}" for t in TIERS if t != rec["tier"]]}))
        if rec["tier"] == "hot":
            why = "; ".join(rec.get("reasons") or [])
            calls.append(("POST", f"{path}/tasks", {
                "title": f"Call now: hot lead (score {float(rec['score']):.0f})",
                "body": f"{why}. Best time: {rec.get('contact_reason', '')} "
                        f"(leadstream event {rec.get('source_event_id')})",
                "dueDate": rec.get("contact_at"), "completed": False}))
    return calls


def plan_insight(rec: dict, insights_webhook: str | None) -> list[tuple[str, str, dict]]:
    """The CRM calls for one ``agent-insights`` record (a path starting with ``http`` is
    the full URL of the insights webhook).

    >>> plan_insight({"type": "preference_drift", "lead_id": "c1", "agent_id": "u1",
    ...               "message": "c1's taste changed"}, None)
    [('POST', '/contacts/c1/notes', {'body': "c1's taste changed", 'userId': 'u1'})]
    >>> plan_insight({"type": "agent_insight", "agent_id": "u1", "hints": []}, "http://x")
    []
    """
    if rec.get("type") == "preference_drift":
        body = {"body": rec["message"]}
        if rec.get("agent_id"):
            body["userId"] = rec["agent_id"]
        return [("POST", f"{_contact(rec['lead_id'])}/notes", body)]
    if rec.get("type") == "agent_insight" and rec.get("hints") and insights_webhook:
        return [("POST", insights_webhook, {
            "agent_id": rec["agent_id"], "generated_at": rec.get("generated_at"),
            "hints": rec["hints"], "figures": rec.get("figures", {}),
            "message": "leadstream coaching: " + "; ".join(rec["hints"])})]
    return []


class CRM:
    """HighLevel's API over one aiohttp session, with retries on 429 and 5xx."""

    def __init__(self, session, base_url: str, token: str, retries: int = 5):
        self.session, self.base_url, self.retries = session, base_url.rstrip("/"), retries
        self.headers = {"Authorization": f"Bearer {token}", "Version": API_VERSION,
                        "Accept": "application/json"}
        self.calls = self.failed = 0

    async def call(self, method: str, path: str, body: dict) -> int:
        url = path if path.startswith("http") else self.base_url + path
        delay = 0.5
        for attempt in range(self.retries + 1):
            try:
                async with self.session.request(method, url, json=body,
                                                headers=self.headers) as resp:
                    status = resp.status
                    await resp.read()
                    retry_after = resp.headers.get("Retry-After")
            except OSError as exc:  # connection refused, reset: retried like a 5xx
                status, retry_after = 599, None
                log.warning("%s %s: %s", method, url, exc)
            if status < 400:
                self.calls += 1
                return status
            if status != 429 and status < 500 or attempt == self.retries:
                self.failed += 1
                log.warning("%s %s answered %d: skipped", method, url, status)
                return status
            wait = float(retry_after) if retry_after and retry_after.isdigit() else delay
            await asyncio.sleep(min(wait, 30.0))
            delay = min(delay * 2, 30.0)
        return status


async def run(args) -> dict:
    import aiohttp
    from aiokafka import AIOKafkaConsumer

    scores, insights = f"{args.topic_prefix}lead-scores", f"{args.topic_prefix}agent-insights"
    consumer = AIOKafkaConsumer(scores, insights, bootstrap_servers=args.bootstrap,
                                group_id=args.group, enable_auto_commit=False,
                                auto_offset_reset="earliest")
    await consumer.start()
    records = 0
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
            crm = CRM(session, args.crm_url, args.token)
            idle_since = time.monotonic()
            while args.idle_exit is None or time.monotonic() - idle_since < args.idle_exit:
                batch = await consumer.getmany(timeout_ms=500, max_records=100)
                if not batch:
                    continue
                idle_since = time.monotonic()
                for msgs in batch.values():
                    for msg in msgs:
                        rec = json.loads(msg.value)
                        calls = (plan_score(rec) if msg.topic == scores
                                 else plan_insight(rec, args.insights_webhook))
                        for method, path, body in calls:
                            if await crm.call(method, path, body) == 404:
                                break  # not a HighLevel contact: the rest would fail too
                        records += 1
                await consumer.commit()  # the batch's calls are done
                idle_since = time.monotonic()
    finally:
        await consumer.stop()
    return {"records": records, "calls": crm.calls, "failed": crm.failed}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--bootstrap", default=os.environ.get("LEADSTREAM_KAFKA_BOOTSTRAP"),
                   help="Kafka bootstrap servers (default: $LEADSTREAM_KAFKA_BOOTSTRAP)")
    p.add_argument("--topic-prefix", default=os.environ.get("LEADSTREAM_TOPIC_PREFIX", ""))
    p.add_argument("--group", default="leadstream-crm-sync", help="consumer group")
    p.add_argument("--crm-url", default="https://services.leadconnectorhq.com")
    p.add_argument("--token", default=os.environ.get("GHL_TOKEN"),
                   help="HighLevel private integration or OAuth token (default: $GHL_TOKEN)")
    p.add_argument("--insights-webhook", default=None,
                   help="URL agent insights with coaching hints are posted to")
    p.add_argument("--idle-exit", type=float, default=None,
                   help="stop after this many seconds without a record (default: run on)")
    args = p.parse_args(argv)
    if not args.bootstrap or not args.token:
        p.error("--bootstrap and --token (or LEADSTREAM_KAFKA_BOOTSTRAP and GHL_TOKEN) are "
                "needed")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    print(json.dumps(asyncio.run(run(args))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
