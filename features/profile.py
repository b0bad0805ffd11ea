"""Per-lead profile: the small state the recommender needs, updated in O(1) per event.

``update(profile, event, listing)`` applies one validated event (``listing`` is the
catalog attributes of the event's property, or None). De-duplication and lateness are
decided before, by :func:`features.lead.update`: only events it applied reach here.

>>> from datetime import datetime, UTC
>>> from leadstream.contract.events import make_event
>>> p = LeadProfile()
>>> ev = make_event("property_saved", event_id="e1", lead_id="L1", session_id="s1",
...                 timestamp=datetime(2026, 3, 1, tzinfo=UTC), property_id="P1")
>>> update(p, ev, {"price": 400000.0, "bedrooms": 2, "property_type": "condo",
...               "city": "Austin", "active": True})
>>> p.event_count, p.counts["property_saved"], round(p.price_center())
(1, 1, 400000)
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from typing import Any

from leadstream.contract.events import BOOKINGS, direction_of, feedback_weight

# bounds on per-lead collections (memory per lead stays small whatever the lead does)
MAX_PROPERTY_SETS = 100  # rejected / saved / booked ids remembered
MAX_AFFINITY_KEYS = 16  # cities, types, bed counts tracked
MAX_RECENT = 10  # recent positive listings, for the item-to-item model


def _bounded_put(d: dict, key: Any, value: Any, bound: int) -> None:
    d.pop(key, None)
    d[key] = value
    while len(d) > bound:
        del d[next(iter(d))]


def _bump(d: dict, key: Any, w: float) -> None:
    d[key] = d.get(key, 0.0) + w
    if len(d) > MAX_AFFINITY_KEYS:
        del d[min(d, key=d.get)]


@dataclass(slots=True)
class LeadProfile:
    """What one lead has shown so far. Plain data: JSON round-trips via to/from_dict."""

    event_count: int = 0
    first_ts: float = 0.0
    last_ts: float = 0.0
    session_id: str | None = None
    session_count: int = 0
    counts: dict[str, int] = field(default_factory=dict)  # events by type
    # weighted statistics of log(price) over positively weighted interactions
    price_w: float = 0.0
    price_mean: float = 0.0
    price_m2: float = 0.0
    type_w: dict[str, float] = field(default_factory=dict)
    city_w: dict[str, float] = field(default_factory=dict)
    beds_w: dict[str, float] = field(default_factory=dict)
    rejected: dict[str, float] = field(default_factory=dict)  # property_id -> ts
    saved: dict[str, float] = field(default_factory=dict)
    booked: dict[str, float] = field(default_factory=dict)
    filters: dict[str, Any] = field(default_factory=dict)
    recent_pos: list[list] = field(default_factory=list)  # [[property_id, weight]], newest last
    n_positive: int = 0
    rec_log: list[list] = field(default_factory=list)  # recent lists, for A/B attribution
    last_score: float | None = None  # last published lead score, its tier and event time
    last_tier: str | None = None
    last_score_ts: float = 0.0
    score_checked_ts: float = 0.0  # event time the score was last computed (published or not)
    agent_id: str | None = None  # the agent assigned (the latest one on the lead's events)
    hot_since: float | None = None  # first hot-lead activity not yet answered by a contact
    pref_announced: dict[str, Any] = field(default_factory=dict)  # type, city, price
    events_since_rec: int = 0
    last_rec_ts: float = -math.inf
    last_rec_items: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """The fields as a dict for JSON (shallow: the containers are shared, not copied)."""
        d = {name: getattr(self, name) for name in _FIELDS}
        if d["last_rec_ts"] == -math.inf:
            d["last_rec_ts"] = None
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> LeadProfile:
        d = dict(d)
        if d.get("last_rec_ts") is None:
            d["last_rec_ts"] = -math.inf
        return cls(**d)

    # ---- derived views --------------------------------------------------------------
    def price_center(self) -> float | None:
        return math.exp(self.price_mean) if self.price_w > 0 else None

    def price_spread(self) -> float:
        """Standard deviation of log price (0.25 ≈ ±25 %) with a floor for sparse leads."""
        if self.price_w <= 0:
            return 0.0
        var = self.price_m2 / self.price_w
        return max(math.sqrt(max(var, 0.0)), 0.12)

    def top(self, which: str) -> str | None:
        d = getattr(self, which)
        return max(d, key=d.get) if d else None

    @property
    def positive_weight(self) -> float:
        return self.price_w


_FIELDS = tuple(f.name for f in fields(LeadProfile))


def update(profile: LeadProfile, event, listing: dict | None) -> None:
    """Apply one (new, not late) event. Mutates ``profile``."""
    ts = event.timestamp.timestamp()
    et = event.event_type
    if profile.event_count == 0:
        profile.first_ts = ts
    profile.event_count += 1
    profile.last_ts = max(profile.last_ts, ts)
    profile.counts[et] = profile.counts.get(et, 0) + 1
    profile.events_since_rec += 1
    if event.session_id and event.session_id != profile.session_id:
        profile.session_id = event.session_id
        profile.session_count += 1

    payload = event.payload
    pid = event.property_id
    if pid is not None:
        w = feedback_weight(et, direction_of(event))
        if w < 0:
            _bounded_put(profile.rejected, pid, ts, MAX_PROPERTY_SETS)
            profile.saved.pop(pid, None)
        if et == "property_saved":
            _bounded_put(profile.saved, pid, ts, MAX_PROPERTY_SETS)
            profile.rejected.pop(pid, None)
        elif et in BOOKINGS:
            _bounded_put(profile.booked, pid, ts, MAX_PROPERTY_SETS)
        elif et == "booking_cancelled":
            profile.booked.pop(pid, None)
        if w > 0:
            profile.n_positive += 1
            prev = [r for r in profile.recent_pos if r[0] == pid]
            wmax = max([w, *(r[1] for r in prev)])
            profile.recent_pos = [r for r in profile.recent_pos if r[0] != pid][-(MAX_RECENT - 1):]
            profile.recent_pos.append([pid, wmax])
        if w > 0 and listing is not None:
            # weighted Welford update of log price
            x = math.log(listing["price"])
            profile.price_w += w
            delta = x - profile.price_mean
            profile.price_mean += delta * w / profile.price_w
            profile.price_m2 += w * delta * (x - profile.price_mean)
            _bump(profile.type_w, listing["property_type"], w)
            _bump(profile.city_w, listing["city"], w)
            _bump(profile.beds_w, str(listing["bedrooms"]), w)
    elif et == "filter_applied":
        profile.filters = payload.model_dump(exclude_none=True)
    elif et == "filter_cleared":
        if payload.fields is None:
            profile.filters = {}
        else:
            for f in payload.fields:
                profile.filters.pop(f, None)
