"""A batch reference for the lead features, written separately from features/lead.py.

It takes the whole event list (in arrival order) and recomputes every feature from
scratch with plain loops over the accepted events: no running sums, no decay origin, no
session buffer. Only the constants (windows, bounds) and the feedback weights are shared
with the incremental code, because they are part of the feature definitions.
"""

from __future__ import annotations

import math
import zlib
from collections import defaultdict

from leadstream.contract.events import (
    ENGAGEMENT_WEIGHTS,
    EVENT_TYPES,
    PROPERTY_TYPES,
    feedback_weight,
)
from leadstream.features.lead import (
    CAP_HOURS,
    DAY,
    DEDUP_MAX_IDS,
    DEDUP_TTL,
    HOUR,
    RECENT_STARTS,
    SEEN_BITS,
)

TAU = {"1h": HOUR, "24h": DAY, "7d": 7 * DAY, "30d": 30 * DAY}
FILTER_FIELDS = ("price_min", "price_max", "beds_min", "beds_max", "baths_min",
                 "property_types", "cities", "zips")


def accepted_events(arrivals, lateness, *, dedup_ttl=DEDUP_TTL, dedup_max_ids=DEDUP_MAX_IDS):
    """Which events the lead applies: not a repeat of an id it still remembers, not later
    than the lateness.

    The lead remembers the ids of the events it applied whose event time (whole seconds)
    is at most ``dedup_ttl`` behind the latest applied event time, and of those only the
    ``dedup_max_ids`` latest (by event time, then arrival). Recomputed from the whole
    history at every arrival.
    """
    applied = []  # (whole-second event time, arrival index, event_id)
    out, outcome, wm = [], [], None
    for n, ev in enumerate(arrivals):
        ts = ev.timestamp.timestamp()
        remembered = set()
        if wm is not None:
            live = sorted(a for a in applied if a[0] >= wm - dedup_ttl)
            remembered = {a[2] for a in live[max(len(live) - dedup_max_ids, 0):]}
        if ev.event_id in remembered:
            outcome.append("duplicate")
        elif wm is not None and ts < wm - lateness:
            outcome.append("late")
        else:
            applied.append((math.floor(ts), n, ev.event_id))
            out.append(ev)
            wm = ts if wm is None else max(wm, ts)
            outcome.append("applied")
    return out, outcome


def _label(weights: dict, default="unknown"):
    best = max(weights.values(), default=0.0)
    if best <= 0:
        return default
    return sorted(k for k, w in weights.items() if w >= best * (1 - 1e-9))[0]


def _entropy(values, n_categories):
    vals = [x for x in values if x > 0]
    if len(vals) < 2:
        return 0.0
    tot = sum(vals)
    return min(-sum(x / tot * math.log(x / tot) for x in vals) / math.log(n_categories), 1.0)


def _div(a, b):
    return a / b if b > 0 else 0.0


def _weighted(pairs):
    """(mean, std) of values under weights, two-pass."""
    w = sum(p[0] for p in pairs)
    if w <= 0:
        return 0.0, 0.0, 0.0
    m = sum(p[0] * p[1] for p in pairs) / w
    var = sum(p[0] * (p[1] - m) ** 2 for p in pairs) / w
    return w, m, math.sqrt(var)


def reference_features(events, listings, *, lateness, session_gap, as_of=None,
                       max_open_sessions=16):
    """Every feature value, from the full list of accepted events."""
    n = len(events)
    times = [e.timestamp.timestamp() for e in events]
    wm = max(times) if n else 0.0
    T = wm if as_of is None else max(as_of, wm)
    first_ts = min(times) if n else 0.0

    def dec(t, w):
        return math.exp(-(T - t) / TAU[w])

    def count(pred, w):
        return sum(dec(t, w) for e, t in zip(events, times, strict=True) if pred(e))

    def life(et):
        return float(sum(1 for e in events if e.event_type == et))

    def is_(et):
        return lambda e: e.event_type == et

    direction = [getattr(e.payload, "direction", None) for e in events]
    fw = [feedback_weight(e.event_type, d) for e, d in zip(events, direction, strict=True)]
    ew = [ENGAGEMENT_WEIGHTS.get(e.event_type, max(w, 0.0))
          for e, w in zip(events, fw, strict=True)]
    has_p = [e.property_id is not None for e in events]
    lst = [listings.get(e.property_id) if e.property_id else None for e in events]

    # ---- property preferences ----
    pos = [(w, a, t) for w, a, t in zip(fw, lst, times, strict=True) if w > 0 and a]
    neg = [(w, a, t) for w, a, t in zip(fw, lst, times, strict=True) if w < 0 and a]
    w30, lp30, sd30 = _weighted([(w * dec(t, "30d"), math.log(a["price"])) for w, a, t in pos])
    w7, lp7, _ = _weighted([(w * dec(t, "7d"), math.log(a["price"])) for w, a, t in pos])
    wl, lpl, _ = _weighted([(w, math.log(a["price"])) for w, a, t in pos])
    wn, lpn, _ = _weighted([(-w * dec(t, "30d"), math.log(a["price"])) for w, a, t in neg])
    _, beds_m, beds_sd = _weighted([(w * dec(t, "30d"), a["bedrooms"]) for w, a, t in pos])
    _, baths_m, _ = _weighted([(w * dec(t, "30d"), a["bathrooms"]) for w, a, t in pos])
    _, sqft_m, _ = _weighted([(w * dec(t, "30d"), a["square_feet"]) for w, a, t in pos
                              if a["square_feet"]])
    geo = [(w * dec(t, "30d"), a) for w, a, t in pos if a["latitude"] is not None]
    _, lat_m, lat_sd = _weighted([(w, a["latitude"]) for w, a in geo])
    _, lon_m, lon_sd = _weighted([(w, a["longitude"]) for w, a in geo])
    types = {t: 0.0 for t in PROPERTY_TYPES}
    cities: dict[str, float] = defaultdict(float)
    for w, a, t in pos:
        types[a["property_type"]] += w * dec(t, "30d")
        cities[a["city"]] += w * dec(t, "30d")
    assert len(cities) <= 16, "the reference assumes at most 16 cities per lead"
    filters = {}
    for e, t in zip(events, times, strict=True):
        if e.event_type == "filter_applied":
            vals = e.payload.model_dump(exclude_none=True)
            changes = {f: vals.get(f) for f in FILTER_FIELDS}
        elif e.event_type == "filter_cleared":
            fields = e.payload.fields if e.payload.fields is not None else FILTER_FIELDS
            changes = {f: None for f in fields if f in FILTER_FIELDS}
        else:
            continue
        for f, val in changes.items():
            if f not in filters or (t, e.event_id) >= filters[f][1]:
                filters[f] = (val, (t, e.event_id))
    active = {f: v for f, (v, _) in filters.items() if v is not None}

    # ---- engagement ----
    prop30 = count(lambda e: e.property_id is not None, "30d")
    views30 = count(is_("property_viewed"), "30d")
    saves30 = count(is_("property_saved"), "30d")
    et30 = {t.name: count(is_(t.name), "30d") for t in EVENT_TYPES}
    right = sum(dec(t, "30d") for d, t in zip(direction, times, strict=True) if d == "right")
    left = sum(dec(t, "30d") for d, t in zip(direction, times, strict=True) if d == "left")
    searches = [(e, t) for e, t in zip(events, times, strict=True)
                if e.event_type == "search_performed"]
    s30 = sum(dec(t, "30d") for _, t in searches)
    refinements = et30["filter_applied"] + et30["filter_cleared"]
    distinct = len({e.property_id for e in events if e.property_id})
    requested = life("booking_requested")
    prop_life = float(sum(has_p))

    # ---- sessions ----
    by_sid = defaultdict(list)
    for e, t in zip(events, times, strict=True):
        if e.session_id is not None:
            reported = (e.payload.duration_seconds or 0.0) if (
                e.event_type == "session_ended") else 0.0
            by_sid[e.session_id].append((t, reported))
    segs = []  # (first, last, n, sid, length): length the longer of span and reported
    for sid, ts in by_sid.items():
        ts.sort()
        start = prev = ts[0][0]
        k, longest = 1, ts[0][1]
        for t, r in ts[1:]:
            if t - prev > session_gap:
                segs.append((start, prev, k, sid, max(prev - start, longest)))
                start, k, longest = t, 0, 0.0
            prev = t
            k += 1
            longest = max(longest, r)
        segs.append((start, prev, k, sid, max(prev - start, longest)))
    n_s = len(segs)
    open_ = [s for s in segs if s[1] >= wm - lateness - session_gap]
    assert len(open_) <= max_open_sessions, "the reference assumes no early session close"
    cur = max(open_, key=lambda s: (s[1], s[3])) if open_ else None
    starts = sorted(s[0] for s in segs)
    recent = starts[-RECENT_STARTS:]
    gaps = [b - a for a, b in zip(recent, recent[1:], strict=False)]
    if len(gaps) >= 2 and sum(gaps) > 0:
        mg = sum(gaps) / len(gaps)
        regularity = 1 / (1 + math.sqrt(sum((g - mg) ** 2 for g in gaps) / len(gaps)) / mg)
    else:
        regularity = 0.0
    in_sessions = sum(s[2] for s in segs)

    # ---- time ----
    local = []
    for e, t in zip(events, times, strict=True):
        off = e.timestamp.utcoffset()
        local.append(t + (off.total_seconds() if off else 0.0))
    hours = [0.0] * 24
    dow = [0.0] * 7
    for lt, t in zip(local, times, strict=True):
        hours[int(lt % DAY // HOUR)] += dec(t, "30d")
        dow[(math.floor(lt / DAY) + 3) % 7] += dec(t, "30d")
    days = {math.floor(lt / DAY) for lt in local}
    ref = max(days) if days else 0
    htot = sum(hours)
    quarters = {q: sum(hours[6 * i: 6 * i + 6])
                for i, q in enumerate(("night", "morning", "afternoon", "evening"))}
    ang = [2 * math.pi * (h + 0.5) / 24 for h in range(24)]
    ev24, ev7, ev30 = (count(lambda e: True, w) for w in ("24h", "7d", "30d"))
    save_t = [t for e, t in zip(events, times, strict=True) if e.event_type == "property_saved"]
    book_t = [t for e, t in zip(events, times, strict=True) if e.event_type in
              ("booking_requested", "booking_confirmed", "booking_completed", "offer_made")]

    def since(ts):
        return min((T - max(ts)) / HOUR, CAP_HOURS) if ts else CAP_HOURS

    num = {
        "price_level_30d": math.exp(lp30) if w30 > 0 else 0.0,
        "price_spread_30d": sd30,
        "price_level_lifetime": math.exp(lpl) if wl > 0 else 0.0,
        "price_drift_7d_30d": lp7 - lp30 if w7 > 0 and w30 > 0 else 0.0,
        "price_min_lifetime": min((a["price"] for _, a, _ in pos), default=0.0),
        "price_max_lifetime": max((a["price"] for _, a, _ in pos), default=0.0),
        "rejected_price_gap_30d": lpn - lp30 if wn > 0 and w30 > 0 else 0.0,
        "beds_mean_30d": beds_m,
        "beds_spread_30d": beds_sd,
        "baths_mean_30d": baths_m,
        "sqft_mean_30d": sqft_m,
        "type_diversity_30d": _entropy(types.values(), len(PROPERTY_TYPES)),
        "type_top_share_30d": _div(max(types.values()), sum(types.values())),
        "city_diversity_30d": _entropy(cities.values(), 16),
        "city_top_share_30d": _div(max(cities.values(), default=0.0), sum(cities.values())),
        "distinct_types_lifetime": float(len({a["property_type"] for _, a, _ in pos})),
        "distinct_cities_lifetime": float(len(cities)),
        "geo_lat_30d": lat_m,
        "geo_lon_30d": lon_m,
        "geo_spread_km_30d": math.hypot(lat_sd * 111.2,
                                        lon_sd * 111.2 * math.cos(math.radians(lat_m))),
        "filter_price_min": float(active.get("price_min", 0.0)),
        "filter_price_max": float(active.get("price_max", 0.0)),
        "filter_beds_min": float(active.get("beds_min", 0.0)),
        "filter_active_count": float(len(active)),
        "events_1h": count(lambda e: True, "1h"),
        "events_24h": ev24,
        "events_7d": ev7,
        "events_30d": ev30,
        "events_lifetime": float(n),
        "engagement_24h": sum(w * dec(t, "24h") for w, t in zip(ew, times, strict=True)),
        "engagement_7d": sum(w * dec(t, "7d") for w, t in zip(ew, times, strict=True)),
        "engagement_30d": sum(w * dec(t, "30d") for w, t in zip(ew, times, strict=True)),
        "engagement_lifetime": sum(ew),
        "views_7d": count(is_("property_viewed"), "7d"),
        "views_30d": views30,
        "view_seconds_mean_30d": _div(sum(e.payload.duration_seconds * dec(t, "30d")
                                          for e, t in zip(events, times, strict=True)
                                          if e.event_type == "property_viewed"), views30),
        "photos_per_view_30d": _div(sum(e.payload.photos_viewed * dec(t, "30d")
                                        for e, t in zip(events, times, strict=True)
                                        if e.event_type == "property_viewed"), views30),
        "saves_7d": count(is_("property_saved"), "7d"),
        "saves_30d": saves30,
        "save_ratio_30d": _div(saves30, prop30),
        "like_ratio_30d": _div(et30["property_liked"], prop30),
        "share_ratio_30d": _div(et30["property_shared"], prop30),
        "unsave_ratio_30d": et30["property_unsaved"] / (saves30 + 1),
        "swipe_right_ratio_30d": (right + 1) / (right + left + 2),
        "decision_ratio_30d": _div(et30["property_swiped"] + et30["property_liked"]
                                   + et30["property_saved"] + et30["property_unsaved"], prop30),
        "searches_7d": count(is_("search_performed"), "7d"),
        "search_refinement_ratio_30d": _div(refinements, s30 + refinements),
        "zero_result_search_ratio_30d": _div(sum(dec(t, "30d") for e, t in searches
                                                 if e.payload.result_count == 0), s30),
        "search_results_log_mean_30d": _div(sum(math.log1p(e.payload.result_count) * dec(t, "30d")
                                                for e, t in searches), s30),
        "contact_clicks_30d": et30["contact_agent_clicked"],
        "bookings_lifetime": requested,
        "booking_completion_ratio_lifetime": min(_div(life("booking_completed"), requested), 1),
        "booking_cancel_ratio_lifetime": min(_div(life("booking_cancelled"), requested), 1),
        "offers_lifetime": life("offer_made"),
        "rec_click_through_30d": min(_div(et30["recommendation_clicked"],
                                          et30["recommendation_shown"]), 1.0),
        "distinct_properties_lifetime": float(distinct),
        "exploration_ratio_lifetime": min(_div(distinct, prop_life), 1.0),
        "agent_contacts_30d": et30["agent_contacted_lead"],
        "response_ratio_lifetime": min(_div(life("lead_responded"),
                                            life("agent_contacted_lead")), 1.0),
        "sessions_lifetime": float(n_s),
        "sessions_7d": sum(dec(s[0], "7d") for s in segs),
        "sessions_30d": sum(dec(s[0], "30d") for s in segs),
        "session_length_mean_s": _div(sum(s[4] for s in segs), n_s),
        "session_length_max_s": max((s[4] for s in segs), default=0.0),
        "events_per_session_mean": _div(in_sessions, n_s),
        "bounce_ratio": _div(sum(1 for s in segs if s[2] == 1), n_s),
        "session_gap_mean_h": (starts[-1] - starts[0]) / (n_s - 1) / HOUR if n_s > 1 else 0.0,
        "session_regularity": regularity,
        "current_session_events": float(cur[2]) if cur else 0.0,
        "current_session_length_s": cur[4] if cur else 0.0,
        "off_session_event_ratio": _div(n - in_sessions, n),
        "recency_hours": (T - wm) / HOUR if n else CAP_HOURS,
        "tenure_days": (wm - first_ts) / DAY if n else 0.0,
        "hours_since_save": since(save_t),
        "hours_since_booking": since(book_t),
        "active_days_30d": float(sum(1 for d in days if ref - d < 30)),
        "night_share_30d": _div(quarters["night"], htot),
        "morning_share_30d": _div(quarters["morning"], htot),
        "afternoon_share_30d": _div(quarters["afternoon"], htot),
        "evening_share_30d": _div(quarters["evening"], htot),
        "weekend_share_30d": _div(dow[5] + dow[6], sum(dow)),
        "hour_sin_30d": _div(sum(h * math.sin(a) for h, a in zip(hours, ang, strict=True)), htot),
        "hour_cos_30d": _div(sum(h * math.cos(a) for h, a in zip(hours, ang, strict=True)), htot),
        "peak_hour_share_30d": _div(max(hours), htot),
        "day_of_week_diversity_30d": _entropy(dow, 7),
        "activity_trend_1d_7d": math.log1p(ev24) - math.log1p(ev7 / 7),
        "activity_trend_7d_30d": math.log1p(ev7) - math.log1p(ev30 * 7 / 30),
    }
    engaged = sum(ew) > 0
    if n and engaged:
        if requested or life("offer_made"):
            stage = "booking"
        elif saves30 + et30["property_shared"] + et30["contact_agent_clicked"] > 0:
            stage = "engaged"
        else:
            stage = "browsing"
    else:
        stage = "new"
    if n and T - wm > 14 * DAY:
        stage = "dormant"
    cat = {
        "preferred_property_type": _label(types),
        "preferred_city": _label(dict(cities)),
        "preferred_time_of_day": _label(quarters),
        "primary_event_type": _label(et30),
        "lifecycle_stage": stage,
    }
    return num, cat, {"event_count": n, "seen_bits": _bits(events)}


def _bits(events):
    return {zlib.crc32(e.property_id.encode()) % SEEN_BITS for e in events if e.property_id}
