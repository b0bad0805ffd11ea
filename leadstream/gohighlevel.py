"""GoHighLevel (HighLevel / LeadConnector) webhooks: signature check and mapping to events.

Pure functions, no broker and no web server: ``streams/intake.py`` serves
``POST /webhooks/gohighlevel`` with them, and every event they build goes through the
worker's own validation (:meth:`streams.step.Step.validate`) like any other input.

**Signatures** (HighLevel's Webhook Integration Guide): the raw body is signed with
HighLevel's private key; ``X-GHL-Signature`` carries a base64 Ed25519 signature, the legacy
``X-WH-Signature`` (deprecated by HighLevel on 2026-07-01) a base64 RSA-SHA256 (PKCS #1
v1.5) one. The public keys are settings whose defaults are the ones HighLevel publishes.
When ``X-GHL-Signature`` is present only it is checked.

**Mapping** (the contact is the lead: ``lead_id`` = ``contactId``):

========================  ===============================================================
webhook ``type``          event(s)
========================  ===============================================================
AppointmentCreate         ``booking_requested``, and ``booking_confirmed`` when its status
                          is ``confirmed``
AppointmentUpdate         by ``appointmentStatus``: confirmed -> ``booking_confirmed``,
                          showed -> ``booking_completed``, cancelled / noshow / invalid ->
                          ``booking_cancelled`` (reason = the status); new: nothing
AppointmentDelete         ``booking_cancelled`` (reason ``deleted``)
OpportunityStatusUpdate   ``outcome_recorded``: won -> converted (value = monetaryValue),
                          lost -> lost, abandoned -> unreachable, open -> nurturing
InboundMessage            ``lead_responded`` (channel from ``messageType``)
OutboundMessage           ``agent_contacted_lead`` when a user (``userId``) sent it;
                          automated messages: nothing
ContactCreate             ``outcome_recorded`` with outcome ``nurturing`` (a new lead in
                          the CRM: the worker scores it at once)
========================  ===============================================================

A booking needs the listing: its ``property_id`` is found in the appointment's title, then
its notes, by ``ghl_property_id_pattern`` (default: an id in square brackets, ``Viewing
[P17]``). CRM events need an agent: ``assignedTo`` / ``assignedUserId`` / ``userId``, else
``ghl_unassigned_agent_id``. Event ids come from the webhook (a message's ``messageId``,
else the ``webhookId``, else the record's id and the change it reports), each with the event
type appended, so HighLevel sending a webhook again gives the same ``event_id`` and the
worker applies it once.

>>> from datetime import UTC, datetime
>>> now = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
>>> m = map_webhook({"type": "InboundMessage", "contactId": "c1", "messageType": "SMS",
...                  "direction": "inbound", "messageId": "m9",
...                  "dateAdded": "2026-12-01T11:59:00.000Z"}, received=now)
>>> [(e["event_type"], e["lead_id"], e["event_id"], e["payload"]) for e in m.events]
[('lead_responded', 'c1', 'ghl-m9-lead_responded', {'channel': 'sms'})]
>>> map_webhook({"type": "TaskCreate"}, received=now).ignored
"webhook type 'TaskCreate' is not mapped to any event (mapped: AppointmentCreate, \
AppointmentDelete, AppointmentUpdate, ContactCreate, InboundMessage, OpportunityStatusUpdate, \
OutboundMessage)"
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

SOURCE = "gohighlevel"
SIGNATURE_HEADER = "X-GHL-Signature"  # Ed25519
LEGACY_SIGNATURE_HEADER = "X-WH-Signature"  # RSA-SHA256, deprecated 2026-07-01
DEFAULT_PROPERTY_ID_PATTERN = r"\[(?P<property_id>[^\]\s]{1,128})\]"

#: HighLevel's opportunity status -> outcome_recorded's outcome
OPPORTUNITY_OUTCOMES = {"won": "converted", "lost": "lost", "abandoned": "unreachable",
                        "open": "nurturing"}
#: appointmentStatus of an update -> the booking event it reports
APPOINTMENT_EVENTS = {"confirmed": "booking_confirmed", "showed": "booking_completed",
                      "cancelled": "booking_cancelled", "noshow": "booking_cancelled",
                      "invalid": "booking_cancelled"}
#: messageType (lower case, ``TYPE_`` dropped) -> the channel of lead_responded /
#: agent_contacted_lead
CHANNELS = {"sms": "sms", "email": "email", "call": "call", "voicemail": "call",
            "whatsapp": "whatsapp", "phone": "call"}


# ---------------------------------------------------------------------------------------
# signatures


class SignatureError(Exception):
    """A webhook whose signature is missing or does not verify (``reason``: a short code)."""

    def __init__(self, reason: str, message: str):
        super().__init__(f"{reason}: {message}")
        self.reason = reason
        self.message = message


def _header(headers: Mapping[str, str], name: str) -> str | None:
    for k, v in headers.items():
        if k.lower() == name.lower():
            return v
    return None


def _b64(sig: str, header: str) -> bytes:
    try:
        return base64.b64decode(sig.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise SignatureError("bad_signature", f"{header} is not base64") from None


def verify_signature(body: bytes, headers: Mapping[str, str], *, public_key,
                     legacy_public_key=None, accept_legacy: bool = True) -> str:
    """Check a webhook's signature over its raw ``body``; returns the scheme that verified
    (``ed25519`` or ``rsa-sha256``) or raises :class:`SignatureError`.

    ``public_key`` / ``legacy_public_key``: keys from
    :func:`leadstream.contract.settings.load_public_key` (Ed25519 for ``X-GHL-Signature``,
    RSA for ``X-WH-Signature``).

    >>> from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    >>> key = Ed25519PrivateKey.generate()
    >>> sig = base64.b64encode(key.sign(b'{"type":"ContactCreate"}')).decode()
    >>> verify_signature(b'{"type":"ContactCreate"}', {"x-ghl-signature": sig},
    ...                  public_key=key.public_key())
    'ed25519'
    >>> try:
    ...     verify_signature(b'{"type":"ContactDelete"}', {"x-ghl-signature": sig},
    ...                      public_key=key.public_key())
    ... except SignatureError as err:
    ...     print(err.reason)
    bad_signature
    """
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import padding

    sig = _header(headers, SIGNATURE_HEADER)
    if sig:
        try:
            public_key.verify(_b64(sig, SIGNATURE_HEADER), body)
        except InvalidSignature:
            raise SignatureError("bad_signature", f"{SIGNATURE_HEADER} does not verify with "
                                 "the configured Ed25519 key") from None
        return "ed25519"
    legacy = _header(headers, LEGACY_SIGNATURE_HEADER)
    if legacy and accept_legacy and legacy_public_key is not None:
        try:
            legacy_public_key.verify(_b64(legacy, LEGACY_SIGNATURE_HEADER), body,
                                     padding.PKCS1v15(), hashes.SHA256())
        except InvalidSignature:
            raise SignatureError("bad_signature", f"{LEGACY_SIGNATURE_HEADER} does not verify "
                                 "with the configured RSA key") from None
        return "rsa-sha256"
    if legacy:
        raise SignatureError("legacy_signature_refused", (
            f"only {LEGACY_SIGNATURE_HEADER} (RSA, deprecated) was sent and legacy "
            f"signatures are not accepted; HighLevel signs with {SIGNATURE_HEADER}"))
    raise SignatureError("missing_signature",
                         f"no {SIGNATURE_HEADER} (or {LEGACY_SIGNATURE_HEADER}) header")


# ---------------------------------------------------------------------------------------
# mapping


@dataclass
class Mapped:
    """What a webhook maps to: ``events`` (JSON-ready event dicts, not yet validated), or
    why there are none: ``ignored`` (a type or state nothing maps, nothing to keep) or
    ``unmappable`` (a mapped type lacking what its events need: dead-lettered)."""

    webhook_type: str | None
    events: list[dict[str, Any]] = field(default_factory=list)
    ignored: str | None = None
    unmappable: str | None = None


def parse_time(value: Any) -> datetime | None:
    """HighLevel's times: ISO 8601 (``Z`` or an offset; without one, UTC) or epoch
    milliseconds.

    >>> parse_time("2023-09-25T16:00:00+05:30").isoformat()
    '2023-09-25T16:00:00+05:30'
    >>> parse_time("2021-11-26 12:41:02").isoformat(), parse_time(1795701271200).year
    ('2021-11-26T12:41:02+00:00', 2026)
    """
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int | float):
        try:
            return datetime.fromtimestamp(value / 1000.0, UTC)
        except (OverflowError, OSError, ValueError):
            return None
    if not isinstance(value, str) or not value:
        return None
    try:
        t = datetime.fromisoformat(value.strip().replace("z", "Z"))
    except ValueError:
        return None
    return t if t.tzinfo is not None else t.replace(tzinfo=UTC)


def _iso(t: datetime) -> str:
    # whole microseconds with an offset: what the event contract's pattern accepts
    return t.isoformat()


def _event_id(*parts: Any) -> str:
    """``ghl-`` and the parts (a hash of them once longer than the contract's 128 chars)."""
    raw = "-".join(str(p) for p in parts if p not in (None, ""))
    eid = f"ghl-{raw}"
    if len(eid) <= 128 and all(ord(c) >= 0x20 for c in eid):
        return eid
    return "ghl-" + hashlib.sha256(raw.encode("utf-8", "replace")).hexdigest()


def _str(d: Mapping, *keys: str) -> str | None:
    for k in keys:
        v = d.get(k)
        if isinstance(v, str) and v.strip():
            return v.strip()
    return None


def _channel(message_type: Any) -> str:
    """The event contract's channel for a HighLevel ``messageType``.

    >>> _channel("TYPE_SMS"), _channel("Email"), _channel("CALL"), _channel("FB")
    ('sms', 'email', 'call', 'other')
    """
    if not isinstance(message_type, str):
        return "other"
    t = message_type.strip().lower()
    t = t[5:] if t.startswith("type_") else t
    return CHANNELS.get(t, "other")


def map_webhook(payload: Any, *, received: datetime,
                property_id_pattern: str = DEFAULT_PROPERTY_ID_PATTERN,
                unassigned_agent_id: str = "ghl-unassigned") -> Mapped:
    """Map one decoded webhook ``payload`` to events (see the module's table).

    ``received``: when the webhook arrived, the event time of last resort (HighLevel's
    payloads carry their own times for most types).

    >>> from datetime import UTC, datetime
    >>> now = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
    >>> appt = {"type": "AppointmentCreate", "webhookId": "w1", "appointment": {
    ...     "id": "a1", "contactId": "c1", "title": "Viewing [P17]",
    ...     "appointmentStatus": "confirmed", "assignedUserId": "u1",
    ...     "startTime": "2026-12-03T16:00:00+05:30", "dateAdded": "2026-12-01T11:58:00Z"}}
    >>> for e in map_webhook(appt, received=now).events:
    ...     print(e["event_type"], e["event_id"], e["property_id"], e["payload"])
    booking_requested ghl-w1-booking_requested P17 {'booking_id': 'a1', \
'scheduled_for': '2026-12-03T16:00:00+05:30'}
    booking_confirmed ghl-w1-booking_confirmed P17 {'booking_id': 'a1', \
'scheduled_for': '2026-12-03T16:00:00+05:30'}
    >>> opp = {"type": "OpportunityStatusUpdate", "id": "o1", "contactId": "c1",
    ...        "status": "won", "monetaryValue": 412000, "assignedTo": "u1"}
    >>> e, = map_webhook(opp, received=now).events
    >>> e["event_type"], e["agent_id"], e["payload"], e["timestamp"]
    ('outcome_recorded', 'u1', {'outcome': 'converted', 'value': 412000}, \
'2026-12-01T12:00:00+00:00')
    >>> map_webhook({"type": "AppointmentCreate", "appointment": {"id": "a2",
    ...     "contactId": "c1", "title": "Call"}}, received=now).unmappable
    "appointment 'a2' names no listing: put its property id in the title or notes, e.g. \
'Viewing [P17]'"
    """
    if not isinstance(payload, Mapping):
        return Mapped(None, unmappable="the webhook body is not a JSON object")
    wtype = payload.get("type")
    if not isinstance(wtype, str) or not wtype:
        return Mapped(None, unmappable="the webhook has no type")
    handler = _HANDLERS.get(wtype)
    if handler is None:
        return Mapped(wtype, ignored=(f"webhook type {wtype[:64]!r} is not mapped to any event "
                                      f"(mapped: {', '.join(sorted(_HANDLERS))})"))
    ctx = _Ctx(payload, received, re.compile(property_id_pattern), unassigned_agent_id)
    out = Mapped(wtype)
    try:
        handler(ctx, out)
    except _Unmappable as err:
        out.events.clear()
        out.unmappable = str(err)
    return out


class _Unmappable(Exception):
    pass


@dataclass
class _Ctx:
    payload: Mapping
    received: datetime
    pattern: re.Pattern
    unassigned: str

    def when(self, *values: Any) -> datetime:
        """The first of ``values`` that is a time, else the webhook's own ``timestamp``,
        else its receipt."""
        for v in (*values, self.payload.get("timestamp")):
            t = parse_time(v)
            if t is not None:
                return t
        return self.received

    def base_id(self, *fallback: Any) -> str:
        wid = _str(self.payload, "webhookId")
        return _event_id(wid) if wid else _event_id(*fallback)

    def event(self, event_type: str, base: str, lead_id: str, ts: datetime,
              **fields: Any) -> dict[str, Any]:
        ev = {"event_id": f"{base}-{event_type}" if len(base) < 100 else
              _event_id(base, event_type),
              "lead_id": lead_id, "event_type": event_type, "timestamp": _iso(ts),
              "source": SOURCE}
        ev.update({k: v for k, v in fields.items() if v is not None})
        return ev


def _lead(d: Mapping, what: str) -> str:
    lead = _str(d, "contactId", "contact_id")
    if lead is None:
        raise _Unmappable(f"{what} has no contactId (the lead)")
    return lead


def _appointment(ctx: _Ctx, out: Mapped) -> None:
    p = ctx.payload
    a = p.get("appointment") if isinstance(p.get("appointment"), Mapping) else p
    aid = _str(a, "id")
    if aid is None:
        raise _Unmappable("the appointment has no id")
    lead = _lead(a, f"appointment {aid!r}")
    status = (_str(a, "appointmentStatus", "status") or "").lower()
    wtype = out.webhook_type
    if wtype == "AppointmentCreate":
        kinds = ["booking_requested"] + (["booking_confirmed"] if status == "confirmed" else [])
    elif wtype == "AppointmentDelete":
        kinds, status = ["booking_cancelled"], "deleted"
    else:
        kind = APPOINTMENT_EVENTS.get(status)
        if kind is None:
            out.ignored = (f"appointment {aid!r} updated with status {status or None!r}: no "
                           f"booking event (mapped: {', '.join(APPOINTMENT_EVENTS)})")
            return
        kinds = [kind]
    pid = None
    for text in (_str(a, "title"), _str(a, "notes")):
        m = ctx.pattern.search(text or "")
        if m:
            pid = m.groupdict().get("property_id") or m.group(0)
            break
    if pid is None:
        raise _Unmappable(f"appointment {aid!r} names no listing: put its property id in the "
                          "title or notes, e.g. 'Viewing [P17]'")
    ts = ctx.when(a.get("dateUpdated"), a.get("dateAdded")) if wtype != "AppointmentCreate" \
        else ctx.when(a.get("dateAdded"), a.get("dateUpdated"))
    base = ctx.base_id(aid, status, a.get("dateUpdated") or a.get("dateAdded"))
    agent = _str(a, "assignedUserId")
    start = parse_time(a.get("startTime"))
    for kind in kinds:
        payload: dict[str, Any] = {"booking_id": aid}
        if kind == "booking_cancelled":
            payload["reason"] = status
        elif start is not None:
            payload["scheduled_for"] = _iso(start)
        out.events.append(ctx.event(kind, base, lead, ts, property_id=pid, agent_id=agent,
                                    payload=payload))


def _opportunity(ctx: _Ctx, out: Mapped) -> None:
    p = ctx.payload
    oid = _str(p, "id") or "?"
    lead = _lead(p, f"opportunity {oid!r}")
    status = (_str(p, "status") or "").lower()
    outcome = OPPORTUNITY_OUTCOMES.get(status)
    if outcome is None:
        raise _Unmappable(f"opportunity {oid!r} has status {status or None!r} (known: "
                          f"{', '.join(OPPORTUNITY_OUTCOMES)})")
    changed = p.get("lastStatusChangeAt") or p.get("dateUpdated")
    payload: dict[str, Any] = {"outcome": outcome}
    value = p.get("monetaryValue")
    if outcome == "converted" and isinstance(value, int | float) and not isinstance(
            value, bool) and value >= 0:
        payload["value"] = value
    out.events.append(ctx.event(
        "outcome_recorded", ctx.base_id(oid, status, changed), lead, ctx.when(changed),
        agent_id=_str(p, "assignedTo", "assignedUserId") or ctx.unassigned, payload=payload))


def _message(ctx: _Ctx, out: Mapped) -> None:
    p = ctx.payload
    mid = _str(p, "messageId", "id")
    lead = _lead(p, f"message {mid!r}")
    direction = (_str(p, "direction") or "").lower()
    inbound = out.webhook_type == "InboundMessage"
    if direction and direction != ("inbound" if inbound else "outbound"):
        out.ignored = f"a {out.webhook_type} with direction {direction!r}"
        return
    base = _event_id(mid) if mid else ctx.base_id(p.get("conversationId"), p.get("dateAdded"))
    ts = ctx.when(p.get("dateAdded"))
    channel = _channel(p.get("messageType"))
    if inbound:
        out.events.append(ctx.event("lead_responded", base, lead, ts,
                                    agent_id=_str(p, "userId"),
                                    payload={"channel": "other" if channel not in (
                                        "sms", "email", "call", "whatsapp") else channel}))
        return
    user = _str(p, "userId")
    if user is None:
        out.ignored = (f"outbound message {mid!r} was sent by an automation (no userId), not "
                       "by an agent")
        return
    out.events.append(ctx.event("agent_contacted_lead", base, lead, ts, agent_id=user,
                                payload={"channel": channel}))


def _contact(ctx: _Ctx, out: Mapped) -> None:
    p = ctx.payload
    cid = _str(p, "id", "contactId")
    if cid is None:
        raise _Unmappable("the contact has no id")
    out.events.append(ctx.event(
        "outcome_recorded", ctx.base_id(cid, "created"), cid, ctx.when(p.get("dateAdded")),
        agent_id=_str(p, "assignedTo") or ctx.unassigned, payload={"outcome": "nurturing"}))


_HANDLERS = {"AppointmentCreate": _appointment, "AppointmentUpdate": _appointment,
             "AppointmentDelete": _appointment, "OpportunityStatusUpdate": _opportunity,
             "InboundMessage": _message, "OutboundMessage": _message,
             "ContactCreate": _contact}
MAPPED_TYPES = tuple(sorted(_HANDLERS))
