"""HTTP intake on every worker, for producers that cannot speak Kafka.

- ``POST /events``: a JSON array of events, or JSON lines (``application/x-ndjson``).
  Every line is checked by the worker's own validation (:meth:`streams.step.Step.validate`,
  what the interactions agent applies to each record); accepted events are produced to
  ``interactions`` keyed by their ``lead_id`` (on the lead's partition), refused lines to
  ``interactions-dlq`` with the dead-letter headers the worker writes
  (:class:`streams.step.DeadLetter`), and the answer comes once the broker acknowledged
  every record: an accepted line is durable.
- ``POST /webhooks/gohighlevel``: a GoHighLevel webhook, its signature verified, mapped to
  events by :mod:`leadstream.gohighlevel`, then the same path as ``/events``.

:func:`add_routes` declares both on the Faust app (plain aiohttp views: a middleware on the
web app covers them); :data:`ROUTES` describes them as OpenAPI path items.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
from faust.web import View

from leadstream import gohighlevel as ghl
from leadstream.contract.events import InvalidRecord
from leadstream.contract.settings import load_public_key
from leadstream.streams.context import Context
from leadstream.streams.step import DeadLetter, partition_for

log = logging.getLogger("leadstream.intake")

EVENTS_PATH = "/events"
GHL_PATH = "/webhooks/gohighlevel"
NDJSON_TYPES = frozenset({"application/x-ndjson", "application/jsonl", "application/json-lines",
                          "application/jsonlines", "application/ndjson", "text/plain"})

_LINE = {
    "type": "object",
    "required": ["index", "status"],
    "properties": {
        "index": {"type": "integer", "description": "position in the batch, from 0"},
        "line": {"type": "integer", "description": "JSON lines: the line number, from 1"},
        "status": {"enum": ["accepted", "refused", "failed"], "description":
                   "accepted: on the input topic (acknowledged by the broker); refused: "
                   "invalid, dead-lettered; failed: not acknowledged in time, send it again"},
        "event_id": {"type": "string"}, "lead_id": {"type": "string"},
        "event_type": {"type": "string"},
        "partition": {"type": "integer"}, "offset": {"type": "integer"},
        "reason": {"type": "string", "description": "why it was refused (the dead-letter "
                   "reasons of README 'What is refused')"},
        "message": {"type": "string"},
        "dead_letter": {"type": ["object", "null"], "description": "where the refused line "
                        "was dead-lettered (partition, offset); null if that failed"},
    },
}
_ANSWER = {
    "type": "object",
    "required": ["request_id", "accepted", "refused", "failed", "lines"],
    "properties": {
        "request_id": {"type": "string", "description": "also in the dead letters' "
                       "leadstream.dlq.request_id header"},
        "accepted": {"type": "integer"}, "refused": {"type": "integer"},
        "failed": {"type": "integer"},
        "lines": {"type": "array", "items": _LINE},
    },
}
_WEBHOOK_ANSWER = {
    "type": "object",
    "required": ["request_id", "status"],
    "properties": {
        "request_id": {"type": "string"},
        "webhook_type": {"type": ["string", "null"]},
        "status": {"enum": ["accepted", "ignored", "refused", "failed"]},
        "signature": {"enum": ["ed25519", "rsa-sha256"]},
        "reason": {"type": "string"}, "message": {"type": "string"},
        "accepted": {"type": "integer"}, "refused": {"type": "integer"},
        "failed": {"type": "integer"},
        "lines": {"type": "array", "items": _LINE, "description": "the mapped events"},
    },
}
_ERROR = {"type": "object", "properties": {"error": {"type": "string"}}}


def _resp(description: str, schema: dict) -> dict:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


#: OpenAPI 3.1 path items of the intake routes (``x-auth`` says which authentication
#: applies: the bearer token, or for the webhook its signature)
ROUTES: dict[str, dict[str, Any]] = {
    EVENTS_PATH: {"post": {
        "operationId": "postEvents",
        "summary": "Publish interaction events over HTTP",
        "description": "A JSON array of events (application/json) or JSON lines "
                       "(application/x-ndjson); other types are detected from the first "
                       "byte. Each line is validated like a record of the interactions "
                       "topic; the answer comes once the broker acknowledged every record.",
        "x-auth": "bearer",
        "requestBody": {"required": True, "content": {
            "application/json": {"schema": {"type": "array", "items": {
                "type": "object", "description": "an interaction event (its JSON Schema: "
                "schemas/interaction.json)"}}},
            "application/x-ndjson": {"schema": {"type": "string",
                                                "description": "one event per line"}}}},
        "responses": {
            "200": _resp("every line accepted", _ANSWER),
            "207": _resp("some lines accepted, some refused (dead-lettered)", _ANSWER),
            "400": _resp("no event in the body", _ERROR),
            "413": _resp("body larger than http_max_body_bytes", _ERROR),
            "422": _resp("every line refused (dead-lettered)", _ANSWER),
            "503": _resp("the broker did not acknowledge every record in time; lines "
                         "'failed' may or may not be stored: send them again", _ANSWER),
        }}},
    GHL_PATH: {"post": {
        "operationId": "postGoHighLevelWebhook",
        "summary": "Take a GoHighLevel webhook",
        "description": "Verified by X-GHL-Signature (Ed25519) or the legacy X-WH-Signature "
                       "(RSA-SHA256) over the raw body; mapped to events "
                       "(leadstream/gohighlevel.py).",
        "x-auth": "signature",
        "parameters": [{"name": "X-GHL-Signature", "in": "header", "schema": {
            "type": "string"}}, {"name": "X-WH-Signature", "in": "header", "schema": {
                "type": "string"}}],
        "requestBody": {"required": True, "content": {"application/json": {"schema": {
            "type": "object", "required": ["type"]}}}},
        "responses": {
            "200": _resp("accepted (every mapped event on the input topic), or ignored: a "
                         "type or state nothing maps", _WEBHOOK_ANSWER),
            "401": _resp("signature missing or not verifying, or a stale timestamp "
                         "(a replay); nothing is stored", _WEBHOOK_ANSWER),
            "413": _resp("body larger than http_max_body_bytes", _ERROR),
            "422": _resp("refused: not JSON, lacking what its events need, or an event "
                         "invalid (dead-lettered)", _WEBHOOK_ANSWER),
            "429": _resp("the broker did not acknowledge in time: HighLevel retries a 429",
                         _WEBHOOK_ANSWER),
        }}},
}


class BodyTooLarge(Exception):
    pass


async def read_body(request, limit: int) -> bytes:
    """The request body, or BodyTooLarge past ``limit`` bytes (read in chunks: aiohttp's
    own ``client_max_size`` is not involved)."""
    if request.content_length is not None and request.content_length > limit:
        raise BodyTooLarge(f"body of {request.content_length} bytes exceeds the limit of "
                           f"{limit} (LEADSTREAM_HTTP_MAX_BODY_BYTES)")
    chunks, total = [], 0
    async for chunk in request.content.iter_chunked(65_536):
        total += len(chunk)
        if total > limit:
            raise BodyTooLarge(f"body exceeds the limit of {limit} bytes "
                               "(LEADSTREAM_HTTP_MAX_BODY_BYTES)")
        chunks.append(chunk)
    return b"".join(chunks)


@dataclass
class Item:
    """One line of a request: its bytes, as produced (or dead-lettered) if it passes."""

    index: int
    raw: bytes
    line: int | None = None


def split_body(body: bytes, content_type: str | None) -> list[Item]:
    """The lines of a ``POST /events`` body.

    JSON lines for the JSON-lines content types; otherwise a body starting with ``[`` is
    a JSON array (each element re-encoded compactly: those bytes are validated and sent),
    an ``application/json`` body holding one object is one event, and anything else is
    read as JSON lines. A body that is not the JSON it claims is one line, which the
    validation refuses (``not_json``). Blank lines are skipped.

    >>> [i.raw for i in split_body(b'[{"a": 1}, 2]', "application/json")]
    [b'{"a":1}', b'2']
    >>> [(i.index, i.line, i.raw) for i in split_body(b'{"a":1}\\r\\n\\n{"b"', None)]
    [(0, 1, b'{"a":1}'), (1, 3, b'{"b"')]
    >>> [i.raw for i in split_body(b'{\\n "a": 1\\n}', "application/json")]
    [b'{\\n "a": 1\\n}']
    >>> [i.raw for i in split_body(b'[{"a": 1}', "application/json")]
    [b'[{"a": 1}']
    """
    ctype = (content_type or "").split(";")[0].strip().lower()
    text = body.strip()
    if ctype not in NDJSON_TYPES:
        if text[:1] == b"[":
            try:
                doc = orjson.loads(text)
            except orjson.JSONDecodeError:
                return [Item(0, text)]
            if isinstance(doc, list):
                return [Item(i, orjson.dumps(el)) for i, el in enumerate(doc)]
        if ctype == "application/json" and text[:1] == b"{":
            try:
                if isinstance(orjson.loads(text), dict):
                    return [Item(0, text)]
            except orjson.JSONDecodeError:
                pass  # perhaps JSON lines sent as application/json
    items = []
    for n, line in enumerate(body.split(b"\n"), start=1):
        line = line.strip()
        if line:
            items.append(Item(len(items), line, n))
    return items


def _lead_key(raw: bytes) -> bytes | None:
    """The record key of a refused line: its lead id if it names one (else no key)."""
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    lead = doc.get("lead_id") if isinstance(doc, dict) else None
    return lead.encode() if isinstance(lead, str) and 0 < len(lead) <= 128 else None


class Intake:
    """Validate lines like the worker, produce them, wait for the broker."""

    def __init__(self, ctx: Context):
        self.ctx = ctx
        self.settings = ctx.settings
        self.step = ctx.step
        self.metrics = ctx.step.metrics
        self.interactions = ctx.topics["interactions"].get_topic_name()
        self.dlq = ctx.topics["interactions-dlq"].get_topic_name()

    def count(self, endpoint: str, status: int) -> None:
        self.metrics.intake_requests.labels(endpoint=endpoint, status=str(status)).inc()

    async def submit(self, endpoint: str, items: list[Item], request_id: str,
                     extra_headers: list[tuple[str, bytes]] = ()) -> tuple[list[dict], bool]:
        """Validate ``items``, produce each to the input topic or the dead-letter topic,
        and wait for the acknowledgements (at most ``http_ack_timeout_seconds``).

        Returns the per-line answers and whether every record was acknowledged."""
        clock = datetime.now(UTC)
        producer = self.ctx.app.producer
        deadline = time.monotonic() + self.settings.http_ack_timeout_seconds
        source = f"http:{endpoint}"
        answers: list[dict] = []
        sends: list[asyncio.Future | BaseException] = []
        for it in items:
            ans: dict[str, Any] = {"index": it.index}
            if it.line is not None:
                ans["line"] = it.line
            try:
                ev = self.step.validate(it.raw, clock)
            except InvalidRecord as err:
                dead = DeadLetter(err.reason, err.message)
                ans.update(status="refused", reason=err.reason, message=err.message)
                headers = [*dead.headers(source, -1, -1),
                           ("leadstream.dlq.request_id", request_id.encode()),
                           ("leadstream.dlq.index", str(it.index).encode()),
                           *([("leadstream.dlq.line", str(it.line).encode())]
                             if it.line is not None else []),
                           *extra_headers]
                args = (self.dlq, _lead_key(it.raw), it.raw, None, None, headers)
            else:
                key = ev.lead_id.encode()
                ans.update(status="accepted", event_id=ev.event_id, lead_id=ev.lead_id,
                           event_type=ev.event_type)
                args = (self.interactions, key, it.raw, partition_for(key, self.ctx.n), None,
                        None)
            try:
                left = max(deadline - time.monotonic(), 0.001)
                sends.append(await asyncio.wait_for(producer.send(*args), left))
            except Exception as exc:  # noqa: BLE001 - the line's answer says what happened
                sends.append(exc)
            answers.append(ans)
        pending = [f for f in sends if isinstance(f, asyncio.Future)]
        if pending:
            await asyncio.wait(pending, timeout=max(deadline - time.monotonic(), 0.001))
        all_acked = True
        for ans, fut in zip(answers, sends, strict=True):
            err: BaseException | None = None
            meta = None
            if isinstance(fut, BaseException):
                err = fut
            elif not fut.done():
                err = TimeoutError(f"no acknowledgement within "
                                   f"{self.settings.http_ack_timeout_seconds:g} s")
            elif fut.exception() is not None:
                err = fut.exception()
            else:
                meta = fut.result()
            if ans["status"] == "accepted":
                if err is None:
                    ans.update(partition=meta.partition, offset=meta.offset)
                else:
                    all_acked = False
                    ans.update(status="failed", message=(
                        f"not stored for certain ({err!r}); send it again: its event_id "
                        "makes a repeat harmless"))
            else:
                if err is None:
                    ans["dead_letter"] = {"partition": meta.partition, "offset": meta.offset}
                else:
                    all_acked = False
                    ans["dead_letter"] = None
                self.metrics.intake_refused.labels(endpoint=endpoint,
                                                   reason=ans["reason"]).inc()
            self.metrics.intake_lines.labels(endpoint=endpoint, outcome=ans["status"]).inc()
        return answers, all_acked

    async def submit_refusal(self, endpoint: str, body: bytes, request_id: str,
                              reason: str, message: str,
                              extra_headers: list[tuple[str, bytes]]) -> tuple[list[dict], bool]:
        """Dead-letter a whole webhook body that maps to no valid event (not JSON, or lacking
        what its events need), with the worker's dead-letter headers."""
        producer = self.ctx.app.producer
        headers = [*DeadLetter(reason, message).headers(f"http:{endpoint}", -1, -1),
                   ("leadstream.dlq.request_id", request_id.encode()), *extra_headers]
        ans: dict[str, Any] = {"index": 0, "status": "refused", "reason": reason,
                               "message": message}
        async def send():
            fut = await producer.send(self.dlq, None, body, None, None, headers)
            return await fut

        try:
            meta = await asyncio.wait_for(send(), self.settings.http_ack_timeout_seconds)
        except Exception:  # noqa: BLE001 - answered as not stored
            ans["dead_letter"] = None
            acked = False
        else:
            ans["dead_letter"] = {"partition": meta.partition, "offset": meta.offset}
            acked = True
        self.metrics.intake_refused.labels(endpoint=endpoint, reason=reason).inc()
        self.metrics.intake_lines.labels(endpoint=endpoint, outcome="refused").inc()
        return [ans], acked


def _counts(answers: list[dict]) -> dict[str, int]:
    out = {"accepted": 0, "refused": 0, "failed": 0}
    for a in answers:
        out[a["status"]] += 1
    return out


def add_routes(ctx: Context) -> None:
    """Declare ``POST /events`` and ``POST /webhooks/gohighlevel`` on ``ctx.app``."""
    app, settings = ctx.app, ctx.settings
    intake = Intake(ctx)
    limit = settings.http_max_body_bytes
    keys = (load_public_key(settings.ghl_webhook_public_key),
            load_public_key(settings.ghl_webhook_legacy_public_key)
            if settings.ghl_webhook_legacy_public_key else None)

    @app.page(EVENTS_PATH)
    class EventsView(View):
        """Events over HTTP (see :data:`ROUTES`)."""

        async def post(self, request):
            rid = str(uuid.uuid4())

            def answer(body: dict, status: int):
                intake.count(EVENTS_PATH, status)
                return self.json(body, status=status)

            try:
                body = await read_body(request, limit)
            except BodyTooLarge as err:
                return answer({"error": str(err), "request_id": rid}, 413)
            items = split_body(body, request.headers.get("Content-Type"))
            if not items:
                return answer({"error": "no event in the body: send a JSON array of events "
                                        "or one event per line", "request_id": rid}, 400)
            lines, acked = await intake.submit(EVENTS_PATH, items, rid)
            counts = _counts(lines)
            status = (503 if not acked else 200 if not counts["refused"]
                      else 207 if counts["accepted"] else 422)
            resp = answer({"request_id": rid, **counts, "lines": lines}, status)
            if status == 503:
                resp.headers["Retry-After"] = "5"
            return resp

    @app.page(GHL_PATH)
    class GoHighLevelView(View):
        """GoHighLevel webhooks (see :data:`ROUTES`)."""

        async def post(self, request):
            rid = str(uuid.uuid4())

            def answer(body: dict, status: int):
                intake.count(GHL_PATH, status)
                return self.json({"request_id": rid, **body}, status=status)

            try:
                body = await read_body(request, limit)
            except BodyTooLarge as err:
                return answer({"error": str(err)}, 413)
            try:
                scheme = ghl.verify_signature(
                    body, request.headers, public_key=keys[0], legacy_public_key=keys[1],
                    accept_legacy=settings.ghl_accept_legacy_signature)
            except ghl.SignatureError as err:
                log.warning("GoHighLevel webhook from %s refused: %s", request.remote, err)
                return answer({"status": "refused", "reason": err.reason,
                               "message": err.message}, 401)
            received = datetime.now(UTC)
            try:
                payload = orjson.loads(body)
            except orjson.JSONDecodeError as err:
                payload, bad = None, f"the webhook body is not JSON ({err})"
            else:
                bad = None
            wtype = payload.get("type") if isinstance(payload, dict) else None
            extra = [("leadstream.dlq.webhook", b"gohighlevel"),
                     ("leadstream.dlq.webhook_type", str(wtype or "")[:100].encode())]
            sent = _time_of(payload)
            if bad is None and sent is not None and settings.ghl_webhook_max_age_seconds and (
                    (received - sent).total_seconds() > settings.ghl_webhook_max_age_seconds):
                return answer({"webhook_type": wtype, "status": "refused",
                               "reason": "stale_webhook", "message": (
                                   f"its timestamp {sent.isoformat()} is older than "
                                   f"{settings.ghl_webhook_max_age_seconds:g} s: a replay?")},
                              401)
            mapped = ghl.map_webhook(payload, received=received,
                                     property_id_pattern=settings.ghl_property_id_pattern,
                                     unassigned_agent_id=settings.ghl_unassigned_agent_id) \
                if bad is None else None
            if mapped is not None and mapped.ignored is not None:
                intake.metrics.intake_lines.labels(endpoint=GHL_PATH, outcome="ignored").inc()
                return answer({"webhook_type": wtype, "status": "ignored",
                               "signature": scheme, "message": mapped.ignored}, 200)
            if mapped is None or mapped.unmappable is not None:
                reason, message = ("not_json", bad) if mapped is None else (
                    "unmappable", mapped.unmappable)
                lines, acked = await intake.submit_refusal(
                    GHL_PATH, body, rid, reason, message, extra)
                if not acked:
                    return answer({"webhook_type": wtype, "status": "failed", **_counts(lines),
                                   "lines": lines}, 429)
                return answer({"webhook_type": wtype, "status": "refused", "signature": scheme,
                               "reason": reason, "message": message, **_counts(lines),
                               "lines": lines}, 422)
            items = [Item(i, orjson.dumps(ev)) for i, ev in enumerate(mapped.events)]
            lines, acked = await intake.submit(GHL_PATH, items, rid, extra)
            counts = _counts(lines)
            status = 429 if not acked else 422 if counts["refused"] else 200
            resp = answer({"webhook_type": wtype, "signature": scheme, "status": {
                429: "failed", 422: "refused", 200: "accepted"}[status], **counts,
                "lines": lines}, status)
            if status == 429:
                resp.headers["Retry-After"] = "60"
            return resp

    ctx.app.leadstream_intake = intake  # type: ignore[attr-defined]


def _time_of(payload: Any) -> datetime | None:
    """The webhook's own ``timestamp`` (HighLevel's delivery time), if it has one."""
    if not isinstance(payload, dict):
        return None
    return ghl.parse_time(payload.get("timestamp"))
