"""The event contract: every interaction type, the property listing, and ingest validation.

Each event is one JSON object: a common envelope (``event_id``, ``lead_id``,
``event_type``, ``timestamp``, ``session_id``, optional ``property_id``, ``agent_id``,
``source``) and a type-specific ``payload``. ``schemas/`` holds the JSON Schema of every
record, generated from these classes (``leadstream schemas --write``); a test fails when
they drift apart.

>>> raw = (b'{"event_id":"e1","lead_id":"L1","event_type":"property_saved",'
...        b'"timestamp":"2026-03-01T18:04:05Z","session_id":"s1","property_id":"P9"}')
>>> ev = parse_event(raw)
>>> ev.event_type, ev.lead_id, ev.property_id
('property_saved', 'L1', 'P9')
>>> try:
...     parse_event(b'{"event_id":"e1"')
... except InvalidRecord as err:
...     print(err.reason)
not_json
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Annotated, Any, Literal, Union

import orjson
from pydantic import (
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    model_validator,
)

# ---------------------------------------------------------------------------------------
# shared pieces

Id = Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[^\x00-\x1f]+$")]
Price = Annotated[float, Field(ge=0, le=1e10, allow_inf_nan=False)]
Seconds = Annotated[float, Field(ge=0, le=7 * 86_400, allow_inf_nan=False)]
ShortText = Annotated[str, Field(max_length=200)]
PropertyType = Literal["house", "condo", "townhouse", "apartment", "multi_family", "land", "other"]
PROPERTY_TYPES: tuple[str, ...] = PropertyType.__args__  # type: ignore[attr-defined]

# RFC 3339 ``date-time`` with its offset required (JSON Schema's ``format: date-time`` is an
# annotation most validators do not check, and Python's parser accepts more: a missing
# offset, ``+0100``, no seconds, a unix time in a string). The worker checks the same
# expression before parsing, so the schema and the worker agree.
_CLOCK = (r"[Tt]([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](\.[0-9]+)?"
          r"([Zz]|[+-]([01][0-9]|2[0-3]):[0-5][0-9])$")
_DATE = r"-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])"
DATE_TIME_PATTERN = r"^[0-9]{4}" + _DATE + _CLOCK
EVENT_TIME_PATTERN = r"^[2-9][0-9]{3}" + _DATE + _CLOCK  # and not before the year 2000
DATE_PATTERN = r"^[0-9]{4}" + _DATE + "$"
_DATE_TIME_RE = re.compile(DATE_TIME_PATTERN)
_DATE_RE = re.compile(DATE_PATTERN)


def _rfc3339(value: Any) -> Any:
    # parsed here: a value a validator returns is no longer JSON, so strict mode would
    # refuse the string
    if not isinstance(value, str):
        return value  # a datetime from Python; a JSON number is refused by strict mode
    if not _DATE_TIME_RE.fullmatch(value):
        raise ValueError("not an RFC 3339 date-time with a time zone, e.g. 2026-03-01T18:04:05Z")
    return datetime.fromisoformat(value.upper())


def _iso_date(value: Any) -> Any:
    if not isinstance(value, str):
        return value
    if not _DATE_RE.fullmatch(value):
        raise ValueError("not a date YYYY-MM-DD")
    return date.fromisoformat(value)


DateTime = Annotated[AwareDatetime, BeforeValidator(_rfc3339),
                     Field(json_schema_extra={"pattern": DATE_TIME_PATTERN})]
EventTime = Annotated[AwareDatetime, BeforeValidator(_rfc3339),
                      Field(json_schema_extra={"pattern": EVENT_TIME_PATTERN})]
Date = Annotated[date, BeforeValidator(_iso_date),
                 Field(json_schema_extra={"pattern": DATE_PATTERN})]


class _Strict(BaseModel):
    # the docstring under a field is its description in the JSON Schema
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False,
                              use_attribute_docstrings=True)


class EmptyPayload(_Strict):
    """No type-specific fields."""


# ---------------------------------------------------------------------------------------
# payloads


class SessionStartedPayload(_Strict):
    device: Literal["web", "ios", "android", "other"] | None = None
    """the kind of client the session runs in"""
    referrer: ShortText | None = None
    """where the lead came from (a URL, a campaign name)"""


class SessionEndedPayload(_Strict):
    duration_seconds: Seconds | None = None
    """the session's length as the client measured it"""


class PropertyViewedPayload(_Strict):
    duration_seconds: Annotated[float, Field(ge=0, le=86_400, allow_inf_nan=False)]
    """how long the listing was on screen"""
    photos_viewed: Annotated[int, Field(ge=0, le=10_000)] = 0
    """photos of the listing looked at during the view"""


class PropertyDetailOpenedPayload(_Strict):
    section: ShortText | None = None
    """which part of the details was opened (floor plan, taxes, …)"""


class PropertyComparedPayload(_Strict):
    compared_with: Annotated[list[Id], Field(min_length=1, max_length=20)]
    """the other listings' property ids"""


class BoundingBox(_Strict):
    min_lat: Annotated[float, Field(ge=-90, le=90)]
    """southern edge, degrees (not above max_lat)"""
    min_lon: Annotated[float, Field(ge=-180, le=180)]
    """western edge, degrees (not above max_lon)"""
    max_lat: Annotated[float, Field(ge=-90, le=90)]
    """northern edge, degrees"""
    max_lon: Annotated[float, Field(ge=-180, le=180)]
    """eastern edge, degrees"""

    @model_validator(mode="after")
    def _ordered(self):
        if self.min_lat > self.max_lat or self.min_lon > self.max_lon:
            raise ValueError("bounding box min must not exceed max")
        return self


class MapAreaViewedPayload(_Strict):
    bbox: BoundingBox
    """the area on screen"""
    zoom: Annotated[float, Field(ge=0, le=30)] | None = None
    """the map's zoom level"""


class PropertySwipedPayload(_Strict):
    direction: Literal["left", "right"]
    """right = interested, left = not interested"""


class PropertySharedPayload(_Strict):
    channel: Literal["email", "sms", "whatsapp", "link", "social", "other"]
    """how the listing was shared"""


class SearchPerformedPayload(_Strict):
    query: Annotated[str, Field(max_length=500)]
    """the search text as typed"""
    result_count: Annotated[int, Field(ge=0, le=10_000_000)]
    """how many listings the search found"""


class FilterAppliedPayload(_Strict):
    price_min: Price | None = None
    """lowest price wanted (not above price_max)"""
    price_max: Price | None = None
    """highest price wanted"""
    beds_min: Annotated[int, Field(ge=0, le=50)] | None = None
    """fewest bedrooms wanted (not above beds_max)"""
    beds_max: Annotated[int, Field(ge=0, le=50)] | None = None
    """most bedrooms wanted"""
    baths_min: Annotated[float, Field(ge=0, le=50)] | None = None
    """fewest bathrooms wanted"""
    property_types: Annotated[list[PropertyType], Field(max_length=10)] | None = None
    """property types wanted"""
    cities: Annotated[list[ShortText], Field(max_length=50)] | None = None
    """cities wanted"""
    zips: Annotated[list[Annotated[str, Field(max_length=16)]], Field(max_length=100)] | None = (
        None
    )
    """zip codes wanted"""

    @model_validator(mode="after")
    def _ranges(self):
        if self.price_min is not None and self.price_max is not None:
            if self.price_min > self.price_max:
                raise ValueError("price_min exceeds price_max")
        if self.beds_min is not None and self.beds_max is not None:
            if self.beds_min > self.beds_max:
                raise ValueError("beds_min exceeds beds_max")
        return self


class FilterClearedPayload(_Strict):
    fields: Annotated[list[ShortText], Field(max_length=20)] | None = None
    """the filter fields removed (price_min, cities, …); absent: all filters"""


class ContactAgentClickedPayload(_Strict):
    channel: Literal["call", "sms", "email", "chat", "form", "other"] | None = None
    """how the lead asked to be contacted"""


class BookingPayload(_Strict):
    booking_id: Id
    """the booking's id in the scheduling system (the same across its events)"""
    scheduled_for: DateTime | None = None
    """when the viewing is to take place (RFC 3339 with a time zone)"""


class BookingCancelledPayload(_Strict):
    booking_id: Id
    """the id of the booking cancelled"""
    reason: ShortText | None = None
    """why, as the lead or agent gave it"""


class OfferMadePayload(_Strict):
    amount: Annotated[float, Field(gt=0, le=1e10, allow_inf_nan=False)]
    """the offered price"""
    currency: Annotated[str, Field(pattern=r"^[A-Z]{3}$")] = "USD"
    """ISO 4217 currency code"""


class RecommendationShownPayload(_Strict):
    recommendation_id: Id
    """the recommendation_id of the published list the listing came from"""
    rank: Annotated[int, Field(ge=1, le=1000)]
    """its position in that list, from 1"""


class RecommendationClickedPayload(_Strict):
    recommendation_id: Id
    """the recommendation_id of the published list the listing came from"""
    rank: Annotated[int, Field(ge=1, le=1000)] | None = None
    """its position in that list, from 1"""


class AgentContactedLeadPayload(_Strict):
    channel: Literal["call", "sms", "email", "whatsapp", "in_person", "other"]
    """how the agent reached out"""


class LeadRespondedPayload(_Strict):
    channel: Literal["call", "sms", "email", "whatsapp", "in_person", "app", "other"] | None = None
    """how the lead answered"""


class OutcomeRecordedPayload(_Strict):
    outcome: Literal["converted", "lost", "nurturing", "unqualified", "unreachable"]
    """the lead's state as the CRM recorded it"""
    value: Price | None = None
    """the deal's value, for a conversion"""


# ---------------------------------------------------------------------------------------
# envelopes


class _Event(_Strict):
    """The fields every interaction event carries."""

    event_id: Id
    """unique per event: an event sent again with the same id is applied once"""
    lead_id: Id
    """the lead (also the record's key)"""
    timestamp: EventTime
    """event time: RFC 3339 with a time zone, e.g. 2026-03-01T18:04:05.123Z (from 2000)"""
    session_id: Id
    """the app or site session the event belongs to"""
    property_id: Id | None = None
    """the listing the event is about"""
    agent_id: Id | None = None
    """the agent involved"""
    source: ShortText | None = None
    """where in the product it happened: feed, search, map, recommendation, email…"""


class _PropertyEvent(_Event):
    property_id: Id
    """the listing the event is about (required for this type)"""


class _OffSessionEvent(_Event):
    """Conversion and CRM events can happen outside an app session."""

    session_id: Id | None = None
    """the app or site session, if the event happened in one"""


class _OffSessionPropertyEvent(_OffSessionEvent):
    property_id: Id
    """the listing the event is about (required for this type)"""


class _CrmEvent(_OffSessionEvent):
    agent_id: Id
    """the agent involved (required for this type)"""


def _event(name: str, base: type, payload: type, required_payload: bool = True, doc: str = ""):
    ann = {"event_type": Literal[name], "payload": payload}  # type: ignore[valid-type]
    ns: dict[str, Any] = {"__annotations__": ann, "__doc__": doc, "__module__": __name__}
    ns["event_type"] = Field(description="the kind of event; selects the payload's fields")
    what = payload.__doc__ if payload is EmptyPayload else "type-specific fields"
    ns["payload"] = (Field(default_factory=payload, description=f"{what} (may be omitted)")
                     if not required_payload else Field(description=what))
    cls_name = "".join(p.title() for p in name.split("_"))
    return type(cls_name, (base,), ns)


@dataclass(frozen=True)
class EventType:
    """One row of the event-type table: everything the layers above need to know of a
    type. Adding an event type is one row here plus its payload model above (and
    ``leadstream schemas --write``, ``leadstream features --catalog --write`` for the
    generated files; README, "Adding an event type").

    >>> t = EVENT_TYPE["booking_completed"]
    >>> t.group, t.weight, t.strong, t.booking, t.crm
    ('conversion', 6.0, True, True, False)
    >>> EVENT_TYPE["search_performed"].engagement, EVENT_TYPE["outcome_recorded"].crm
    (0.5, True)
    >>> EVENT_TYPE["property_viewed"].required_fields
    ('duration_seconds',)
    """

    name: str
    envelope: type
    """which ids the event carries: a session, a listing, an agent"""
    payload: type
    payload_required: bool
    group: str
    """session, browsing, decisions, search, conversion, feedback or crm"""
    doc: str
    weight: float = 0.0
    """implicit feedback for the listing it names: interest (a booking says more than a
    view) or, negative, evidence against (an unsave, a cancelled booking)"""
    strong: bool = False
    """a strong signal: the lead's next list is due at once and its score re-computed"""
    engagement: float | None = None
    """weight in the engagement features (None: the weight when positive, else 0)"""
    content: float = 0.0
    """for an event that names no listing: the weight of what it says the lead looks for
    (a search's words, a map area's listings) in the content profile (a view counts 1)"""
    booking: bool = False
    """a booking or an offer: the lead's last-booking time and booked listings"""
    directions: tuple[tuple[str, float], ...] = ()
    """the weight by the payload's ``direction`` instead of ``weight`` (a swipe)"""

    @property
    def crm(self) -> bool:
        """Sent by a CRM, not by the lead's app: a lead score is due at once."""
        return self.group == "crm"

    @property
    def required_fields(self) -> tuple[str, ...]:
        """The payload fields a producer must send."""
        return tuple(n for n, f in self.payload.model_fields.items() if f.is_required())


_T = EventType
EVENT_TYPES: tuple[EventType, ...] = (
    _T("session_started", _Event, SessionStartedPayload, False, "session",
       "a lead opened the app or site"),
    _T("session_ended", _Event, SessionEndedPayload, False, "session", "the session closed"),
    _T("property_viewed", _PropertyEvent, PropertyViewedPayload, True, "browsing",
       "a listing was viewed", weight=1.0),
    _T("property_detail_opened", _PropertyEvent, PropertyDetailOpenedPayload, False,
       "browsing", "details of a listing were opened", weight=1.5),
    _T("property_compared", _PropertyEvent, PropertyComparedPayload, True, "browsing",
       "a listing was compared with others", weight=1.5),
    _T("map_area_viewed", _Event, MapAreaViewedPayload, True, "browsing",
       "a map area was looked at", content=0.5),
    _T("property_swiped", _PropertyEvent, PropertySwipedPayload, True, "decisions",
       "right = interested, left = not", directions=(("right", 2.0), ("left", -1.5))),
    _T("property_liked", _PropertyEvent, EmptyPayload, False, "decisions",
       "a listing was liked", weight=2.0, strong=True),
    _T("property_unliked", _PropertyEvent, EmptyPayload, False, "decisions",
       "a like was taken back", weight=-1.0),
    _T("property_saved", _PropertyEvent, EmptyPayload, False, "decisions",
       "a listing was saved", weight=3.0, strong=True),
    _T("property_unsaved", _PropertyEvent, EmptyPayload, False, "decisions",
       "a save was taken back", weight=-2.0),
    _T("property_shared", _PropertyEvent, PropertySharedPayload, True, "decisions",
       "a listing was shared", weight=3.0, strong=True),
    _T("search_performed", _Event, SearchPerformedPayload, True, "search",
       "a text search ran", engagement=0.5, content=0.5),
    _T("filter_applied", _Event, FilterAppliedPayload, True, "search",
       "search filters were set", strong=True, engagement=0.5),
    _T("filter_cleared", _Event, FilterClearedPayload, False, "search",
       "filters were removed", strong=True),
    _T("contact_agent_clicked", _Event, ContactAgentClickedPayload, False, "conversion",
       "the lead asked to contact an agent", weight=3.0),
    _T("booking_requested", _OffSessionPropertyEvent, BookingPayload, True, "conversion",
       "a viewing was requested", weight=5.0, strong=True, booking=True),
    _T("booking_confirmed", _OffSessionPropertyEvent, BookingPayload, True, "conversion",
       "a viewing was confirmed", weight=5.0, booking=True),
    _T("booking_completed", _OffSessionPropertyEvent, BookingPayload, True, "conversion",
       "a viewing took place", weight=6.0, strong=True, booking=True),
    _T("booking_cancelled", _OffSessionPropertyEvent, BookingCancelledPayload, True,
       "conversion", "a viewing was cancelled", weight=-2.0, strong=True),
    _T("offer_made", _OffSessionPropertyEvent, OfferMadePayload, True, "conversion",
       "an offer was made", weight=8.0, strong=True, booking=True),
    _T("recommendation_shown", _PropertyEvent, RecommendationShownPayload, True, "feedback",
       "a recommended listing was shown"),
    _T("recommendation_clicked", _PropertyEvent, RecommendationClickedPayload, True,
       "feedback", "a recommended listing was clicked", weight=1.5),
    _T("agent_contacted_lead", _CrmEvent, AgentContactedLeadPayload, True, "crm",
       "an agent reached out"),
    _T("lead_responded", _OffSessionEvent, LeadRespondedPayload, False, "crm",
       "the lead answered an agent", engagement=2.0),
    _T("outcome_recorded", _CrmEvent, OutcomeRecordedPayload, True, "crm",
       "the CRM recorded an outcome"),
)
EVENT_TYPE: dict[str, EventType] = {t.name: t for t in EVENT_TYPES}
EVENT_CLASSES: dict[str, type[_Event]] = {
    t.name: _event(t.name, t.envelope, t.payload, t.payload_required, t.doc)
    for t in EVENT_TYPES
}
globals().update({cls.__name__: cls for cls in EVENT_CLASSES.values()})

# what the table says, as the lookups the per-event code uses
EVENT_WEIGHTS: dict[str, float] = {t.name: t.weight for t in EVENT_TYPES if t.weight}
STRONG_SIGNALS = frozenset(t.name for t in EVENT_TYPES if t.strong)
ENGAGEMENT_WEIGHTS: dict[str, float] = {
    t.name: t.engagement for t in EVENT_TYPES if t.engagement is not None}
_BY_DIRECTION = {t.name: dict(t.directions) for t in EVENT_TYPES if t.directions}
CONTENT_SIGNALS: dict[str, float] = {t.name: t.content for t in EVENT_TYPES if t.content}
BOOKINGS = frozenset(t.name for t in EVENT_TYPES if t.booking)
CRM_EVENTS = frozenset(t.name for t in EVENT_TYPES if t.crm)

InteractionEvent = Annotated[Union[tuple(EVENT_CLASSES.values())],  # noqa: UP007
                             Field(discriminator="event_type")]
_EVENT_ADAPTER: TypeAdapter = TypeAdapter(InteractionEvent)


def direction_of(event) -> str | None:
    """A swipe's direction, None for any other event: read without asking a payload for
    a field it lacks (a pydantic model answers a missing attribute slowly, through an
    exception).

    >>> from datetime import UTC, datetime
    >>> ev = make_event("property_swiped", event_id="e1", lead_id="L1", session_id="s",
    ...                 timestamp=datetime(2026, 3, 1, tzinfo=UTC), property_id="P1",
    ...                 payload={"direction": "left"})
    >>> direction_of(ev)
    'left'
    """
    return event.payload.direction if event.event_type == "property_swiped" else None


def feedback_weight(event_type: str, direction: str | None = None) -> float:
    """Weight of one event for the listing it names (0.0 when it names none)."""
    by = _BY_DIRECTION.get(event_type)
    if by is not None:
        return by.get(direction or "", 0.0)
    return EVENT_WEIGHTS.get(event_type, 0.0)


def engagement_weight(event_type: str, direction: str | None = None) -> float:
    """Weight of one event in the engagement features (never negative): the row's
    ``engagement``, else its positive feedback weight.

    >>> engagement_weight("property_saved"), engagement_weight("property_swiped", "left")
    (3.0, 0.0)
    >>> engagement_weight("lead_responded"), engagement_weight("property_swiped", "right")
    (2.0, 2.0)
    """
    w = ENGAGEMENT_WEIGHTS.get(event_type)
    return w if w is not None else max(feedback_weight(event_type, direction), 0.0)


class PropertyListing(_Strict):
    """A listing upsert on the compacted ``properties`` topic (key = property_id).

    A delisting is an upsert with ``status`` sold/withdrawn, or a tombstone (null value).
    """

    property_id: Id
    """the listing's id (also the record's key)"""
    status: Literal["active", "pending", "sold", "withdrawn"]
    """only active listings are recommended"""
    price: Annotated[float, Field(gt=0, le=1e10, allow_inf_nan=False)]
    """asking price"""
    bedrooms: Annotated[int, Field(ge=0, le=50)]
    """number of bedrooms"""
    bathrooms: Annotated[float, Field(ge=0, le=50)]
    """number of bathrooms (1.5: one full, one half)"""
    square_feet: Annotated[float, Field(gt=0, le=1e6, allow_inf_nan=False)] | None = None
    """living area in square feet"""
    property_type: PropertyType
    """the kind of property"""
    city: Annotated[str, Field(min_length=1, max_length=100)]
    """city the listing is in"""
    zip: Annotated[str, Field(max_length=16)] | None = None
    """postal code"""
    latitude: Annotated[float, Field(ge=-90, le=90)] | None = None
    """WGS 84 latitude, degrees"""
    longitude: Annotated[float, Field(ge=-180, le=180)] | None = None
    """WGS 84 longitude, degrees"""
    listing_date: Date | None = None
    """the day it was listed, YYYY-MM-DD"""
    description: Annotated[str, Field(max_length=20_000)] = ""
    """free text, used by the content model"""
    amenities: Annotated[list[ShortText], Field(max_length=100)] = []
    """amenities as short labels (pool, garage, …), used by the content model"""
    address: Annotated[str, Field(max_length=300)] | None = None
    """street address, shown to leads and agents"""
    updated_at: DateTime | None = None
    """when the listing last changed at its source (RFC 3339 with a time zone)"""


_LISTING_ADAPTER: TypeAdapter = TypeAdapter(PropertyListing)


# ---------------------------------------------------------------------------------------
# validation


class LeadstreamError(Exception):
    """Root of every error leadstream raises on purpose."""


class InvalidRecord(LeadstreamError):
    """A record that failed validation. ``reason`` is a short code; str() is readable.

    Reasons: ``oversized``, ``bad_wire_format`` (a value starting with byte 0 that is not
    Confluent's framing of JSON), ``not_utf8``, ``not_json``, ``not_an_object``,
    ``unknown_event_type``, ``schema`` (missing or wrongly typed field, value out of
    range), ``timestamp_in_future``, ``timestamp_too_old``.
    """

    def __init__(self, reason: str, message: str):
        super().__init__(f"{reason}: {message}")
        self.reason = reason
        self.message = message


def _describe(err: ValidationError, limit: int = 3) -> tuple[str, str]:
    parts, reason = [], "schema"
    for e in err.errors(include_url=False)[:limit]:
        loc = ".".join(str(x) for x in e["loc"]) or "(record)"
        if e["type"] == "union_tag_invalid":
            reason = "unknown_event_type"
            tag = str(e.get("ctx", {}).get("tag", "?"))[:64]
            parts.append(f"unknown event_type {tag!r} (see schemas/interaction.json)")
            continue
        if e["type"] == "union_tag_not_found":
            parts.append("missing field event_type")
            continue
        if e["type"] in ("json_invalid",):
            reason = "not_json"
        if e["type"] in ("dict_type", "model_type", "model_attributes_type") and not e["loc"]:
            reason = "not_an_object"
        # pydantic puts the union tag first in discriminated locations; drop it
        loc = loc.split(".", 1)[1] if "." in loc and loc.split(".", 1)[0] in EVENT_CLASSES else loc
        if loc in EVENT_CLASSES:
            loc = "(record)"
        parts.append(f"{loc}: {e['msg']}")
    more = len(err.errors()) - limit
    if more > 0:
        parts.append(f"and {more} more")
    return reason, "; ".join(parts)


CONFLUENT_HEADER = 5  # magic byte 0, then the schema id as 4 bytes big-endian


def unframe(raw: bytes) -> tuple[bytes, int | None]:
    """The JSON of a value and, for Confluent's wire format, the schema id before it.

    A value that starts with byte 0 is read as Confluent Schema Registry framing (what
    its JSON Schema serializers write): the magic byte, a 4-byte big-endian schema id, then
    the JSON. The id is returned but not looked up: the worker validates against its own
    contract. JSON never starts with byte 0, so plain values are unambiguous.

    >>> unframe(b'\\x00\\x00\\x00\\x01\\x07{"a": 1}')
    (b'{"a": 1}', 263)
    >>> unframe(b'{"a": 1}')
    (b'{"a": 1}', None)
    >>> try:
    ...     unframe(b'\\x00\\x00\\x01')
    ... except InvalidRecord as err:
    ...     print(err.reason)
    bad_wire_format
    """
    if raw[:1] != b"\x00":
        return raw, None
    if len(raw) < CONFLUENT_HEADER:
        raise InvalidRecord("bad_wire_format", (
            f"{len(raw)} bytes starting with magic byte 0: Confluent's wire format needs "
            f"{CONFLUENT_HEADER} bytes (magic byte, 4-byte schema id) before the JSON"))
    return raw[CONFLUENT_HEADER:], int.from_bytes(raw[1:CONFLUENT_HEADER], "big")


def _check_utf8(raw: bytes) -> None:
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidRecord("not_utf8", f"invalid UTF-8 at byte {exc.start}") from None


def _validate_json(adapter: TypeAdapter, raw: bytes):
    try:
        # strict: a number is not taken from a string, nor a boolean as a number, as in
        # the JSON Schemas
        return adapter.validate_json(raw, strict=True)
    except ValidationError as err:
        if err.errors()[0]["type"] == "json_invalid":
            # pydantic's message for broken JSON is terse; orjson says where
            try:
                orjson.loads(raw)
            except orjson.JSONDecodeError as jerr:
                raise InvalidRecord("not_json", str(jerr)) from None
        reason, msg = _describe(err)
        raise InvalidRecord(reason, msg) from None


def _parse(adapter: TypeAdapter, raw: bytes, max_bytes: int):
    if len(raw) > max_bytes:
        raise InvalidRecord("oversized", f"{len(raw)} bytes exceeds the limit of {max_bytes}")
    body, schema_id = unframe(raw)
    if schema_id is None:
        _check_utf8(body)
        return _validate_json(adapter, body)
    try:
        _check_utf8(body)
        return _validate_json(adapter, body)
    except InvalidRecord as err:
        if err.reason not in ("not_utf8", "not_json"):
            raise
        raise InvalidRecord("bad_wire_format", (
            f"magic byte 0 and schema id {schema_id}, then not JSON ({err.message}); only "
            "the JSON Schema serializer's framing is read, not Avro or Protobuf")) from None


def parse_event(
    raw: bytes,
    *,
    now: datetime | None = None,
    max_bytes: int = 65_536,
    max_future_skew: timedelta | None = None,
    max_age: timedelta | None = None,
    min_year: int | None = 2000,
):
    """Validate one raw interaction and return its typed record, or raise InvalidRecord.

    Freshness is checked only when ``now`` is given (live ingestion); replaying a
    historical file passes ``now=None``. Timestamps before ``min_year`` are absurd for a
    live platform; a replay of any data set (``leadstream evaluate``) passes ``None``.

    >>> from datetime import datetime, timedelta, UTC
    >>> raw = (b'{"event_id":"e2","lead_id":"L1","event_type":"session_started",'
    ...        b'"timestamp":"2099-01-01T00:00:00+00:00","session_id":"s1"}')
    >>> try:
    ...     parse_event(raw, now=datetime(2026, 1, 1, tzinfo=UTC),
    ...                 max_future_skew=timedelta(hours=1))
    ... except InvalidRecord as err:
    ...     print(err.reason)
    timestamp_in_future
    """
    ev = _parse(_EVENT_ADAPTER, raw, max_bytes)
    ts = ev.timestamp
    if min_year is not None and ts.year < min_year:
        raise InvalidRecord("timestamp_too_old",
                            f"timestamp {ts.isoformat()} is before {min_year}")
    if now is not None:
        if max_future_skew is not None and ts - now > max_future_skew:
            raise InvalidRecord(
                "timestamp_in_future",
                f"timestamp {ts.isoformat()} is {(ts - now).total_seconds():.0f}s ahead of the "
                f"clock (limit {max_future_skew.total_seconds():.0f}s)",
            )
        if max_age is not None and now - ts > max_age:
            raise InvalidRecord(
                "timestamp_too_old",
                f"timestamp {ts.isoformat()} is older than {max_age.days} days",
            )
    return ev


def parse_listing(raw: bytes, *, max_bytes: int = 262_144) -> PropertyListing:
    """Validate one raw property listing.

    >>> parse_listing(b'{"property_id":"P1","status":"active","price":350000,"bedrooms":2,'
    ...               b'"bathrooms":1.5,"property_type":"condo","city":"Austin"}').price
    350000.0
    """
    return _parse(_LISTING_ADAPTER, raw, max_bytes)


def event_to_dict(ev) -> dict[str, Any]:
    """A record as the JSON-ready dict a producer would send (None fields dropped)."""
    return ev.model_dump(mode="json", exclude_none=True)


def event_to_json(ev) -> bytes:
    return orjson.dumps(event_to_dict(ev))


def make_event(event_type: str, **fields: Any):
    """Build and validate an event from Python values (used by the client and simulator).

    >>> ev = make_event("property_swiped", event_id="e3", lead_id="L1", session_id="s",
    ...                 timestamp=datetime(2026, 3, 1, tzinfo=UTC), property_id="P1",
    ...                 payload={"direction": "left"})
    >>> ev.payload.direction
    'left'
    """
    cls = EVENT_CLASSES.get(event_type)
    if cls is None:
        raise InvalidRecord("unknown_event_type", f"unknown event_type {event_type!r}")
    try:
        return cls.model_validate({"event_type": event_type, **fields})
    except ValidationError as err:
        reason, msg = _describe(err)
        raise InvalidRecord(reason, msg) from None


def json_schemas() -> dict[str, dict]:
    """JSON Schema documents, by relative file name under ``schemas/``."""
    out: dict[str, dict] = {}
    union = _EVENT_ADAPTER.json_schema(ref_template="#/$defs/{model}")
    union["title"] = "InteractionEvent"
    union["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    out["interaction.json"] = union
    for name, cls in EVENT_CLASSES.items():
        sch = cls.model_json_schema()
        sch["$schema"] = "https://json-schema.org/draft/2020-12/schema"
        out[f"events/{name}.json"] = sch
    listing = PropertyListing.model_json_schema()
    listing["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    out["property.json"] = listing
    from leadstream.contract.outputs import OUTPUT_RECORDS

    for fname, cls in OUTPUT_RECORDS.items():
        sch = cls.json_schema() if isinstance(cls, TypeAdapter) else cls.model_json_schema()
        sch["$schema"] = "https://json-schema.org/draft/2020-12/schema"
        out[fname] = sch
    return out


def utcnow() -> datetime:
    return datetime.now(UTC)
