"""The feature catalog: name, family, kind, window, range and definition of every feature.

``docs/features.md`` is generated from :data:`FEATURES` (``leadstream features --catalog
--write``) and a test fails when it is stale or when :func:`features.lead.compute`
returns a feature this list does not document.

Windows: ``1h``/``24h``/``7d``/``30d`` are exponentially decayed counts or weighted
averages (an event of age ``a`` weighs ``exp(-a / window)``); ``lifetime`` is every
applied event; ``session`` is per session; ``current`` is the lead's open session with
the latest event; ``now`` is read at the query time. "Positive" interactions are those
with a positive implicit-feedback weight (``leadstream/contract/events.py``): views, details,
likes, saves, shares, right swipes, bookings, offers; the weight is the event's weight.

>>> len([f for f in FEATURES if f.kind == "numerical"]) >= 54
True
>>> {f.family for f in FEATURES} == {"property", "engagement", "session", "time"}
True
>>> catalog_markdown().splitlines()[0]
'# Lead feature catalog'
"""

from __future__ import annotations

from dataclasses import asdict

from leadstream.features.lead import FEATURE_VERSION, Feature

_P, _E, _S, _T = "property", "engagement", "session", "time"
_N, _C = "numerical", "categorical"
_W = "weighted by implicit-feedback weight over positive interactions with a known listing"

# (name, family, kind, window, range, definition)
_ROWS: list[tuple[str, str, str, str, str, str]] = [
    ("price_level_30d", _P, _N, "30d", "price, 0 if none",
     f"geometric mean listing price, {_W}"),
    ("price_spread_30d", _P, _N, "30d", ">= 0",
     f"standard deviation of log price ({_W}); 0.2 means about +-20 %"),
    ("price_level_lifetime", _P, _N, "lifetime", "price, 0 if none",
     f"geometric mean listing price, {_W}, never forgotten"),
    ("price_drift_7d_30d", _P, _N, "7d vs 30d", "log ratio",
     "log of the 7-day price level over the 30-day price level: > 0 when the lead moves up"),
    ("price_min_lifetime", _P, _N, "lifetime", "price, 0 if none",
     "lowest price among positively engaged listings"),
    ("price_max_lifetime", _P, _N, "lifetime", "price, 0 if none",
     "highest price among positively engaged listings"),
    ("rejected_price_gap_30d", _P, _N, "30d", "log ratio, 0 if none",
     "mean log price of rejected listings (left swipes, unsaves, unlikes, cancellations) "
     "minus mean log price of positive ones: > 0 when the lead rejects pricier listings"),
    ("beds_mean_30d", _P, _N, "30d", ">= 0", f"mean bedrooms, {_W}"),
    ("beds_spread_30d", _P, _N, "30d", ">= 0", f"standard deviation of bedrooms, {_W}"),
    ("baths_mean_30d", _P, _N, "30d", ">= 0", f"mean bathrooms, {_W}"),
    ("sqft_mean_30d", _P, _N, "30d", ">= 0",
     f"mean square feet over listings that state it, {_W}"),
    ("type_diversity_30d", _P, _N, "30d", "0..1",
     "normalised entropy of the property-type weights (0: one type, 1: all types alike)"),
    ("type_top_share_30d", _P, _N, "30d", "0..1", "share of the top property type's weight"),
    ("city_diversity_30d", _P, _N, "30d", "0..1",
     "normalised entropy of the city weights over up to 16 tracked cities"),
    ("city_top_share_30d", _P, _N, "30d", "0..1", "share of the top city's weight"),
    ("distinct_types_lifetime", _P, _N, "lifetime", "0..7",
     "number of property types positively engaged with"),
    ("distinct_cities_lifetime", _P, _N, "lifetime", "0..16",
     "number of cities positively engaged with (at most 16 are tracked; the lightest is "
     "forgotten)"),
    ("geo_lat_30d", _P, _N, "30d", "-90..90, 0 if none",
     f"latitude centroid of listings with coordinates, {_W}"),
    ("geo_lon_30d", _P, _N, "30d", "-180..180, 0 if none",
     f"longitude centroid of listings with coordinates, {_W}"),
    ("geo_spread_km_30d", _P, _N, "30d", ">= 0 km",
     "root-mean-square distance of engaged listings from the centroid (equirectangular)"),
    ("filter_price_min", _P, _N, "current", "price, 0 if unset",
     "active minimum-price filter (the latest filter event by event time wins)"),
    ("filter_price_max", _P, _N, "current", "price, 0 if unset", "active maximum-price filter"),
    ("filter_beds_min", _P, _N, "current", "0..50, 0 if unset", "active minimum-bedrooms filter"),
    ("filter_active_count", _P, _N, "current", "0..8", "number of filter fields set"),
    ("events_1h", _E, _N, "1h", ">= 0", "decayed count of all applied events"),
    ("events_24h", _E, _N, "24h", ">= 0", "decayed count of all applied events"),
    ("events_7d", _E, _N, "7d", ">= 0", "decayed count of all applied events"),
    ("events_30d", _E, _N, "30d", ">= 0", "decayed count of all applied events"),
    ("events_lifetime", _E, _N, "lifetime", ">= 0", "count of applied events"),
    ("engagement_24h", _E, _N, "24h", ">= 0",
     "decayed engagement score: sum of positive feedback weights (view 1, save 3, booking "
     "5 ...) plus 0.5 per search or filter and 2 per answer to an agent"),
    ("engagement_7d", _E, _N, "7d", ">= 0", "decayed engagement score"),
    ("engagement_30d", _E, _N, "30d", ">= 0", "decayed engagement score"),
    ("engagement_lifetime", _E, _N, "lifetime", ">= 0", "engagement score, not decayed"),
    ("views_7d", _E, _N, "7d", ">= 0", "decayed count of property_viewed"),
    ("views_30d", _E, _N, "30d", ">= 0", "decayed count of property_viewed"),
    ("view_seconds_mean_30d", _E, _N, "30d", "seconds", "mean view duration"),
    ("photos_per_view_30d", _E, _N, "30d", ">= 0", "mean photos viewed per view"),
    ("saves_7d", _E, _N, "7d", ">= 0", "decayed count of property_saved"),
    ("saves_30d", _E, _N, "30d", ">= 0", "decayed count of property_saved"),
    ("save_ratio_30d", _E, _N, "30d", "0..1", "saves per event that names a property"),
    ("like_ratio_30d", _E, _N, "30d", "0..1", "likes per event that names a property"),
    ("share_ratio_30d", _E, _N, "30d", "0..1", "shares per event that names a property"),
    ("unsave_ratio_30d", _E, _N, "30d", ">= 0", "unsaves / (saves + 1): second thoughts"),
    ("swipe_right_ratio_30d", _E, _N, "30d", "0..1",
     "(right + 1) / (right + left + 2): right-swipe share, 0.5 with no swipes"),
    ("decision_ratio_30d", _E, _N, "30d", "0..1",
     "decisions (swipes, likes, saves, unsaves) per event that names a property: swipe "
     "decisiveness"),
    ("searches_7d", _E, _N, "7d", ">= 0", "decayed count of search_performed"),
    ("search_refinement_ratio_30d", _E, _N, "30d", "0..1",
     "filter changes / (searches + filter changes): how much the lead refines"),
    ("zero_result_search_ratio_30d", _E, _N, "30d", "0..1", "share of searches with no result"),
    ("search_results_log_mean_30d", _E, _N, "30d", ">= 0", "mean log(1 + result_count)"),
    ("contact_clicks_30d", _E, _N, "30d", ">= 0", "decayed count of contact_agent_clicked"),
    ("bookings_lifetime", _E, _N, "lifetime", ">= 0", "count of booking_requested"),
    ("booking_completion_ratio_lifetime", _E, _N, "lifetime", "0..1",
     "booking_completed / booking_requested"),
    ("booking_cancel_ratio_lifetime", _E, _N, "lifetime", "0..1",
     "booking_cancelled / booking_requested"),
    ("offers_lifetime", _E, _N, "lifetime", ">= 0", "count of offer_made"),
    ("rec_click_through_30d", _E, _N, "30d", "0..1",
     "recommendation_clicked / recommendation_shown"),
    ("distinct_properties_lifetime", _E, _N, "lifetime", ">= 0",
     "distinct properties interacted with (linear-counting sketch of 1024 bits: within a "
     "few % up to several hundred)"),
    ("exploration_ratio_lifetime", _E, _N, "lifetime", "0..1",
     "distinct properties / property events: 1 explores new listings, near 0 returns to the "
     "same ones"),
    ("agent_contacts_30d", _E, _N, "30d", ">= 0", "decayed count of agent_contacted_lead"),
    ("response_ratio_lifetime", _E, _N, "lifetime", "0..1",
     "lead_responded / agent_contacted_lead"),
    ("sessions_lifetime", _S, _N, "lifetime", ">= 0",
     "sessions (events sharing a session_id, split at gaps over the session gap)"),
    ("sessions_7d", _S, _N, "7d", ">= 0", "decayed count of sessions by start time"),
    ("sessions_30d", _S, _N, "30d", ">= 0", "decayed count of sessions by start time"),
    ("session_length_mean_s", _S, _N, "session", "seconds",
     "mean session length: the time from its first to last event, or the duration its "
     "session_ended event reported if longer"),
    ("session_length_max_s", _S, _N, "session", "seconds", "longest session"),
    ("events_per_session_mean", _S, _N, "session", ">= 0", "mean events per session"),
    ("bounce_ratio", _S, _N, "session", "0..1", "share of sessions with a single event"),
    ("session_gap_mean_h", _S, _N, "lifetime", "hours",
     "mean time between consecutive session starts"),
    ("session_regularity", _S, _N, "last 16 sessions", "0..1",
     "1 / (1 + coefficient of variation of the gaps between the last 16 session starts); "
     "0 with fewer than 3 sessions"),
    ("current_session_events", _S, _N, "current", ">= 0", "events in the current session"),
    ("current_session_length_s", _S, _N, "current", "seconds", "length of the current session"),
    ("off_session_event_ratio", _S, _N, "lifetime", "0..1",
     "share of events without a session (CRM, bookings from other channels)"),
    ("recency_hours", _T, _N, "now", "hours", "time since the latest event"),
    ("tenure_days", _T, _N, "lifetime", "days", "time from the first to the latest event"),
    ("hours_since_save", _T, _N, "now", "0..720 hours", "time since the latest save, 720 if none"),
    ("hours_since_booking", _T, _N, "now", "0..720 hours",
     "time since the latest booking request, confirmation, completion or offer, 720 if none"),
    ("active_days_30d", _T, _N, "30 local days", "0..30",
     "distinct local days with an event among the 30 ending on the latest event's day"),
    ("night_share_30d", _T, _N, "30d", "0..1", "share of events at 0-6 h local time"),
    ("morning_share_30d", _T, _N, "30d", "0..1", "share of events at 6-12 h local time"),
    ("afternoon_share_30d", _T, _N, "30d", "0..1", "share of events at 12-18 h local time"),
    ("evening_share_30d", _T, _N, "30d", "0..1", "share of events at 18-24 h local time"),
    ("weekend_share_30d", _T, _N, "30d", "0..1", "share of events on Saturday or Sunday"),
    ("hour_sin_30d", _T, _N, "30d", "-1..1",
     "mean sine of the local hour angle (with hour_cos: the circular mean activity time)"),
    ("hour_cos_30d", _T, _N, "30d", "-1..1", "mean cosine of the local hour angle"),
    ("peak_hour_share_30d", _T, _N, "30d", "0..1",
     "share of events in the busiest local hour: periodicity of the daily rhythm"),
    ("day_of_week_diversity_30d", _T, _N, "30d", "0..1",
     "normalised entropy of activity over the days of the week"),
    ("activity_trend_1d_7d", _T, _N, "24h vs 7d", "log ratio",
     "log(1 + events_24h) - log(1 + events_7d / 7): > 0 when today is busier than usual"),
    ("activity_trend_7d_30d", _T, _N, "7d vs 30d", "log ratio",
     "log(1 + events_7d) - log(1 + events_30d * 7 / 30): the weekly trend"),
    ("preferred_property_type", _P, _C, "30d", "property type or unknown",
     "property type with the largest weight (ties: alphabetical)"),
    ("preferred_city", _P, _C, "30d", "city or unknown", "city with the largest weight"),
    ("preferred_time_of_day", _T, _C, "30d", "night|morning|afternoon|evening|unknown",
     "local time-of-day quarter with the most events"),
    ("primary_event_type", _E, _C, "30d", "event type or unknown",
     "most frequent event type (decayed count)"),
    ("lifecycle_stage", _E, _C, "lifetime", "new|browsing|engaged|booking|dormant",
     "booking: any booking or offer; engaged: a save, share or contact in 30 d; browsing: "
     "any other engagement; new: no engagement yet; dormant: no event for 14 days (at query "
     "time)"),
]

FEATURES: tuple[Feature, ...] = tuple(Feature(*row) for row in _ROWS)
BY_NAME = {f.name: f for f in FEATURES}


def catalog_json() -> list[dict]:
    """The catalog as a list of plain objects (``leadstream features --catalog --json``)."""
    return [asdict(f) for f in FEATURES]


def catalog_markdown() -> str:
    """The catalog document (``docs/features.md``)."""
    n_num = sum(f.kind == "numerical" for f in FEATURES)
    n_cat = len(FEATURES) - n_num
    out = [
        "# Lead feature catalog",
        "",
        f"Generated from `features/catalog.py` (feature version {FEATURE_VERSION}) by "
        "`leadstream features --catalog --write`; a test fails when it is stale.",
        f"{n_num} numerical and {n_cat} categorical features in four families. Windows "
        "`1h`/`24h`/`7d`/`30d` are exponentially decayed (an event of age *a* weighs "
        "exp(-a / window)); the design and the lateness rule are in `features/lead.py`.",
        "",
    ]
    for family in ("property", "engagement", "session", "time"):
        out += [f"## {family}", "", "| name | kind | window | range | definition |",
                "|---|---|---|---|---|"]
        out += [f"| `{f.name}` | {f.kind} | {f.window} | {f.range} | {f.definition} |"
                for f in FEATURES if f.family == family]
        out.append("")
    return "\n".join(out)
