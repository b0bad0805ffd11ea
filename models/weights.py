"""Implicit-feedback weights per event type: how much an event says about a listing.

Positive weights are interest (a booking says more than a view); negative weights are
evidence against (a left swipe, an unsave, a cancelled booking). Events that say nothing
about one listing are absent.

>>> feedback_weight("property_swiped", "left") < 0 < feedback_weight("property_viewed")
True
>>> feedback_weight("booking_completed") > feedback_weight("property_saved")
True
"""

from __future__ import annotations

EVENT_WEIGHTS: dict[str, float] = {
    "property_viewed": 1.0,
    "property_detail_opened": 1.5,
    "property_compared": 1.5,
    "property_liked": 2.0,
    "property_unliked": -1.0,
    "property_saved": 3.0,
    "property_unsaved": -2.0,
    "property_shared": 3.0,
    "recommendation_clicked": 1.5,
    "contact_agent_clicked": 3.0,
    "booking_requested": 5.0,
    "booking_confirmed": 5.0,
    "booking_completed": 6.0,
    "booking_cancelled": -2.0,
    "offer_made": 8.0,
}
SWIPE_WEIGHTS = {"right": 2.0, "left": -1.5}

# events strong enough to make a fresh recommendation due at once
STRONG_SIGNALS = frozenset(
    {
        "property_saved",
        "property_shared",
        "property_liked",
        "booking_requested",
        "booking_completed",
        "booking_cancelled",
        "offer_made",
        "filter_applied",
        "filter_cleared",
    }
)


# events that name no listing but say what the lead looks for: a search's words (types,
# cities, bedrooms, terms) and the area a lead viewed on the map feed its content profile
# with this weight (a listing view counts 1.0)
CONTENT_SIGNALS: dict[str, float] = {"search_performed": 0.5, "map_area_viewed": 0.5}


def direction_of(event) -> str | None:
    """A swipe's direction, None for any other event: read without asking a payload for
    a field it lacks (a pydantic model answers a missing attribute slowly, through an
    exception).

    >>> from datetime import UTC, datetime
    >>> from leadstream.events import make_event
    >>> ev = make_event("property_swiped", event_id="e1", lead_id="L1", session_id="s",
    ...                 timestamp=datetime(2026, 3, 1, tzinfo=UTC), property_id="P1",
    ...                 payload={"direction": "left"})
    >>> direction_of(ev)
    'left'
    """
    return event.payload.direction if event.event_type == "property_swiped" else None


def feedback_weight(event_type: str, direction: str | None = None) -> float:
    """Weight of one event for the listing it names (0.0 when it names none)."""
    if event_type == "property_swiped":
        return SWIPE_WEIGHTS.get(direction or "", 0.0)
    return EVENT_WEIGHTS.get(event_type, 0.0)
