"""Rolling lead features, updated in O(1) per event and read as a table lookup.

A :class:`LeadFeatures` is everything leadstream keeps to describe one lead's behaviour:
fixed-size running sums and a few small bounded structures (open sessions, the last
event ids, filter registers). :func:`update` applies one validated event to it;
:func:`compute` reads the feature values at a given time; :func:`encode` /
:func:`decode` turn it into the compact bytes stored in the ``features_by_lead`` table.
The list of features, with family, window and definition, is :data:`FEATURES` (``docs/
features.md`` is generated from it).

**Windows are exponentially decayed**, not exact sliding: an event of age ``a`` counts
``exp(-a / tau)`` in the window of length ``tau`` (1 h, 24 h, 7 d, 30 d). Decayed sums
cost one number per window whatever the lead does (an exact 30-day sliding window would
have to keep every event of the last 30 days), they are commutative, so an
out-of-order event is added exactly, and they never drop an event at a cliff edge.
They are kept as *forward-decayed* sums ``sum w * exp((t - t0) / tau)`` with a per-lead
origin ``t0`` that moves forward when the numbers grow large, so an in-order event is a
few additions and reading at time ``T`` multiplies by ``exp(-(T - t0) / tau)``.

**Lateness**: an event more than ``lateness`` seconds older than the lead's latest event
time (its watermark) is *late*: :func:`update` returns ``'late'`` and changes nothing;
the worker dead-letters it with reason ``late_event``. Events within the lateness are
applied exactly as if they had arrived in order.

**Sessions** are the events sharing a ``session_id``, split where two consecutive events
(in event time) are more than ``session_gap`` seconds apart. A session is final once its
last event is more than ``lateness + session_gap`` behind the watermark: no acceptable
event can join it any more. At most :data:`MAX_OPEN_SESSIONS` sessions are open at once
(bounded memory); beyond that the stalest is finalised early.

**De-duplication**: every applied event's id is remembered (:mod:`features.idset`: an
8-byte fingerprint and the event time, ordered by event time) for ``dedup_ttl`` seconds
of event time behind the watermark (24 h), at most the ``dedup_max_ids`` latest (512);
an event id seen again returns ``'duplicate'`` and changes nothing. 16 bytes per
remembered id in the state (at most 8 KiB), about 10 in the stored record.

>>> from datetime import datetime, timedelta, UTC
>>> from leadstream.contract.events import make_event
>>> t = datetime(2026, 3, 2, 18, 0, tzinfo=UTC)
>>> s = LeadFeatures()
>>> listing = {"price": 400_000.0, "bedrooms": 2, "bathrooms": 1.0, "property_type": "condo",
...            "city": "Austin", "square_feet": 900.0, "latitude": 30.27, "longitude": -97.74}
>>> update(s, make_event("property_viewed", event_id="e1", lead_id="L1", session_id="s1",
...        timestamp=t, property_id="P1", payload={"duration_seconds": 40}), listing)
'applied'
>>> update(s, make_event("property_saved", event_id="e2", lead_id="L1", session_id="s1",
...        timestamp=t + timedelta(minutes=2), property_id="P1"), listing)
'applied'
>>> update(s, make_event("property_saved", event_id="e2", lead_id="L1", session_id="s1",
...        timestamp=t + timedelta(minutes=2), property_id="P1"), listing)
'duplicate'
>>> f = compute(s)
>>> f.numerical["events_lifetime"], round(f.numerical["price_level_30d"])
(2.0, 400000)
>>> f.categorical["preferred_property_type"], f.categorical["preferred_time_of_day"]
('condo', 'evening')
>>> decode(encode(s)) == s
True
"""

from __future__ import annotations

import math
import struct
import zlib
from array import array
from dataclasses import dataclass, field
from typing import Any

import orjson

from leadstream.contract.events import (
    BOOKINGS,
    EVENT_TYPES,
    PROPERTY_TYPES,
    engagement_weight,
    feedback_weight,
)
from leadstream.features.idset import EventIdSet, fingerprint
from leadstream.features.layout import LayoutHistory, SlotLayout

FEATURE_VERSION = 1
HOUR, DAY = 3600.0, 86400.0
WINDOWS: tuple[tuple[str, float], ...] = (
    ("1h", HOUR), ("24h", DAY), ("7d", 7 * DAY), ("30d", 30 * DAY))
TAUS = tuple(t for _, t in WINDOWS)
TAU30 = 30 * DAY
DEFAULT_LATENESS = 6 * HOUR
DEFAULT_SESSION_GAP = 30 * 60.0
MAX_OPEN_SESSIONS = 16
RECENT_STARTS = 16  # session starts kept for the regularity feature
MAX_CITIES = 16
SEEN_BITS = 1024  # linear-counting sketch of distinct properties
CAP_HOURS = 720.0  # "hours since" features when it never happened
DEDUP_TTL = DAY  # event ids are remembered this long behind the watermark (event time)
DEDUP_MAX_IDS = 512  # and at most this many per lead, the latest in event time
_RENORM = 300.0  # move t0 when (t - t0) / tau exceeds this (exp(300) ~ 1e130)

EVENT_NAMES: tuple[str, ...] = tuple(t.name for t in EVENT_TYPES)
_ET = {n: i for i, n in enumerate(EVENT_NAMES)}
_TYPE = {n: i for i, n in enumerate(PROPERTY_TYPES)}
TIME_OF_DAY = ("night", "morning", "afternoon", "evening")  # 0-6, 6-12, 12-18, 18-24 local
_DECISIONS = ("property_swiped", "property_liked", "property_saved", "property_unsaved")

# ---- float slot layout (features/layout.py: named slots, versions recorded) ------------
L = SlotLayout()
_WINDOW_LABELS = tuple(w for w, _ in WINDOWS)
_WEST = ("w", "mean", "m2")
# metadata and lifetime sums (not decayed)
for _n in ("first_ts", "watermark", "t0", "last_save_ts", "last_booking_ts", "day_ref",
           "engage", "prop", "price_w", "price_m", "price_m2", "price_min", "price_max",
           "s_closed", "s_len_sum", "s_len_max", "s_events", "s_bounce", "s_start_min",
           "s_start_max"):
    L.add(_n)
L.add("life_et", len(EVENT_NAMES), EVENT_NAMES)
# decayed in all four windows: slot + k for window k
_WIN_SIGNALS = ("w_events", "w_engage", "w_views", "w_saves", "w_searches", "w_sessions",
                "w_prop")
for _n in _WIN_SIGNALS:
    L.add(_n, 4, _WINDOW_LABELS)
# decayed over 30 days only
L.add("m_et", len(EVENT_NAMES), EVENT_NAMES)
for _n in ("m_right", "m_left", "m_view_s", "m_photos", "m_zero_search", "m_search_log",
           "m_neg_w", "m_neg_x", "m_baths_w", "m_baths_x", "m_sqft_w", "m_sqft_x"):
    L.add(_n)
# weighted (mean, variance) statistics, by West's algorithm: [weight, mean, M2]; the weight
# and M2 are forward-decayed like the sums, the mean is not
for _n in ("p7", "p30", "beds", "lat", "lon"):
    L.add(_n, 3, _WEST)
L.add("m_type", len(PROPERTY_TYPES), PROPERTY_TYPES)
L.add("m_hour", 24)
L.add("m_dow", 7)
N_SLOTS = L.n
_HISTORY = LayoutHistory.load()
LAYOUT_VERSION = _HISTORY.version_of(L.names) or _HISTORY.latest + 1
"""The layout this code writes (``features/layouts.json``; an unrecorded layout is the
next version, and ``tests/test_features.py`` fails until it is recorded)."""
_WIN_SLOT_IDS = tuple(getattr(L, n) for n in _WIN_SIGNALS)
_M_FIRST = L.m_et
_MEANS = frozenset(getattr(L, n) + 1 for n in ("p7", "p30", "beds", "lat", "lon"))
_M_SCALED = tuple(i for i in range(_M_FIRST, N_SLOTS) if i not in _MEANS and i not in
                  range(L.p7, L.p7 + 3))


def _west(v: array, i: int, w: float, x: float) -> None:
    """Add ``x`` with weight ``w`` to the weighted [weight, mean, M2] at slot ``i``."""
    tot = v[i] + w
    if tot <= 0:  # a weight that underflowed to zero
        return
    d = x - v[i + 1]
    v[i + 1] += d * w / tot
    v[i + 2] += w * d * (x - v[i + 1])
    v[i] = tot


@dataclass(eq=True)
class LeadFeatures:
    """One lead's feature state. Plain data; :func:`encode` gives its stored bytes."""

    v: array = field(default_factory=lambda: array("d", bytes(8 * N_SLOTS)))
    event_count: int = 0
    last_update: float = 0.0  # wall clock of the last applied event (for the idle TTL)
    ids: EventIdSet = field(default_factory=EventIdSet)  # event ids applied, by event time
    # open: [sid, first, last, n, reported]: reported, the longest duration a
    # session_ended event of the segment gave (its length is the longer of it and the span)
    sessions: list[list] = field(default_factory=list)
    starts: list[float] = field(default_factory=list)  # latest final session starts, sorted
    cities: dict[str, float] = field(default_factory=dict)  # forward-decayed 30 d weight
    filters: dict[str, list] = field(default_factory=dict)  # field -> [value, ts, event_id]
    seen: int = 0  # SEEN_BITS-bit sketch of properties interacted with
    days: int = 0  # bit i: active on local day (day_ref - i)
    last_offset: int = -1  # highest input offset handled for this lead (replay detection)


# ---- update ---------------------------------------------------------------------------
def _renormalise(s: LeadFeatures, t_new: float) -> None:
    v = s.v
    dt = t_new - v[L.t0]
    f = [math.exp(-dt / tau) for tau in TAUS]
    for base in _WIN_SLOT_IDS:
        for k in range(4):
            v[base + k] *= f[k]
    f30 = f[3]
    for i in _M_SCALED:
        v[i] *= f30
    v[L.p7] *= f[2]
    v[L.p7 + 2] *= f[2]
    for c in s.cities:
        s.cities[c] *= f30
    v[L.t0] = t_new


def _finalise(s: LeadFeatures, seg: list) -> None:
    v = s.v
    _, first, last, n, reported = seg
    length = max(last - first, reported)
    v[L.s_closed] += 1
    v[L.s_len_sum] += length
    v[L.s_len_max] = max(v[L.s_len_max], length)
    v[L.s_events] += n
    v[L.s_bounce] += n == 1
    if v[L.s_closed] == 1:
        v[L.s_start_min] = v[L.s_start_max] = first
    else:
        v[L.s_start_min] = min(v[L.s_start_min], first)
        v[L.s_start_max] = max(v[L.s_start_max], first)
    t0 = v[L.t0]
    for k, tau in enumerate(TAUS):
        v[L.w_sessions + k] += math.exp((first - t0) / tau)
    st = s.starts
    if len(st) < RECENT_STARTS or first > st[0]:
        st.append(first)
        st.sort()
        if len(st) > RECENT_STARTS:
            del st[0]


def _session(s: LeadFeatures, sid: str, ts: float, gap: float, reported: float = 0.0) -> None:
    touching = [seg for seg in s.sessions
                if seg[0] == sid and seg[1] - gap <= ts <= seg[2] + gap]
    if not touching:
        s.sessions.append([sid, ts, ts, 1, reported])
        if len(s.sessions) > MAX_OPEN_SESSIONS:
            stalest = min(s.sessions, key=lambda g: (g[2], g[0]))
            s.sessions.remove(stalest)
            _finalise(s, stalest)
        return
    seg = touching[0]
    seg[1] = min(seg[1], ts)
    seg[2] = max(seg[2], ts)
    seg[3] += 1
    seg[4] = max(seg[4], reported)
    for other in touching[1:]:  # the event bridged two segments of one session
        seg[1] = min(seg[1], other[1])
        seg[2] = max(seg[2], other[2])
        seg[3] += other[3]
        seg[4] = max(seg[4], other[4])
        s.sessions.remove(other)


def update(
    s: LeadFeatures,
    event,
    listing: dict | None,
    *,
    lateness: float = DEFAULT_LATENESS,
    session_gap: float = DEFAULT_SESSION_GAP,
    dedup_ttl: float = DEDUP_TTL,
    dedup_max_ids: int = DEDUP_MAX_IDS,
    now: float = 0.0,
) -> str:
    """Apply one validated event: ``'applied'``, ``'duplicate'`` or ``'late'``.

    ``listing`` holds the catalog attributes of the event's property (None when unknown);
    ``now`` is the wall-clock time recorded as ``last_update``.
    """
    v = s.v
    ts = event.timestamp.timestamp()
    fp = fingerprint(event.event_id)
    if fp in s.ids:
        return "duplicate"
    first = s.event_count == 0
    wm = v[L.watermark]
    if not first and ts < wm - lateness:
        return "late"
    # remember the id (bounded by event time and by count)
    s.ids.add(fp, math.floor(ts), max(ts, wm) - dedup_ttl, dedup_max_ids)

    if first:
        v[L.first_ts] = v[L.watermark] = v[L.t0] = ts
    else:
        v[L.first_ts] = min(v[L.first_ts], ts)
        if ts > wm:
            v[L.watermark] = ts
            # sessions that no acceptable event can join any more are final
            horizon = ts - lateness - session_gap
            if any(seg[2] < horizon for seg in s.sessions):
                keep = []
                for seg in s.sessions:
                    (_finalise(s, seg) if seg[2] < horizon else keep.append(seg))
                s.sessions = keep
    if (ts - v[L.t0]) / TAUS[0] > _RENORM:
        _renormalise(s, ts)
    s.event_count += 1
    s.last_update = now

    t0 = v[L.t0]
    d = ts - t0
    g = (math.exp(d / TAUS[0]), math.exp(d / TAUS[1]), math.exp(d / TAUS[2]), math.exp(d / TAUS[3]))
    g30 = g[3]

    et = event.event_type
    payload = event.payload
    direction = payload.direction if et == "property_swiped" else None
    ei = _ET[et]
    v[L.life_et + ei] += 1
    v[L.m_et + ei] += g30
    for k in range(4):
        v[L.w_events + k] += g[k]
    ew = engagement_weight(et, direction)
    if ew:
        v[L.engage] += ew
        for k in range(4):
            v[L.w_engage + k] += ew * g[k]

    # time of day / week in the event's own local time (its UTC offset)
    off = event.timestamp.utcoffset()
    local = ts + (off.total_seconds() if off else 0.0)
    day = math.floor(local / DAY)
    v[L.m_hour + int(local % DAY // HOUR)] += g30
    v[L.m_dow + (day + 3) % 7] += g30  # 1970-01-01 was a Thursday (weekday 3)
    ref = int(v[L.day_ref])
    if first or day > ref:
        s.days = (s.days << (day - ref)) & 0xFFFFFFFF if not first else 0
        v[L.day_ref] = ref = day
    if ref - day < 32:
        s.days |= 1 << (ref - day)

    if event.session_id is not None:  # a session_ended event says how long it lasted
        _session(s, event.session_id, ts, session_gap,
                 (payload.duration_seconds or 0.0) if et == "session_ended" else 0.0)

    if et == "property_viewed":
        for k in range(4):
            v[L.w_views + k] += g[k]
        v[L.m_view_s] += payload.duration_seconds * g30
        v[L.m_photos] += payload.photos_viewed * g30
    elif et == "property_saved":
        for k in range(4):
            v[L.w_saves + k] += g[k]
        v[L.last_save_ts] = max(v[L.last_save_ts], ts)
    elif et == "search_performed":
        for k in range(4):
            v[L.w_searches + k] += g[k]
        if payload.result_count == 0:
            v[L.m_zero_search] += g30
        v[L.m_search_log] += math.log1p(payload.result_count) * g30
    elif et == "property_swiped":
        v[L.m_right if direction == "right" else L.m_left] += g30
    elif et in BOOKINGS:
        v[L.last_booking_ts] = max(v[L.last_booking_ts], ts)
    elif et == "filter_applied":
        _filters(s, payload.model_dump(exclude_none=True), ts, event.event_id, replace=True)
    elif et == "filter_cleared":
        fields = payload.fields if payload.fields is not None else list(_FILTER_FIELDS)
        _filters(s, {f: None for f in fields if f in _FILTER_FIELDS}, ts, event.event_id)

    pid = event.property_id
    if pid is not None:
        v[L.prop] += 1
        for k in range(4):
            v[L.w_prop + k] += g[k]
        s.seen |= 1 << (zlib.crc32(pid.encode()) % SEEN_BITS)
        if listing is not None:
            _listing(s, listing, feedback_weight(et, direction), g)
    return "applied"


_FILTER_FIELDS = ("price_min", "price_max", "beds_min", "beds_max", "baths_min",
                  "property_types", "cities", "zips")


def _filters(s: LeadFeatures, values: dict, ts: float, eid: str, replace: bool = False) -> None:
    """Last-writer-wins register per filter field, ordered by (event time, event id)."""
    if replace:
        values = {f: values.get(f) for f in _FILTER_FIELDS}
    for f, val in values.items():
        cur = s.filters.get(f)
        if cur is None or (ts, eid) >= (cur[1], cur[2]):
            s.filters[f] = [val, ts, eid]


def _listing(s: LeadFeatures, a: dict, w: float, g: tuple) -> None:
    v = s.v
    g30 = g[3]
    price = a["price"]
    x = math.log(price)
    if w < 0:
        v[L.m_neg_w] -= w * g30
        v[L.m_neg_x] -= w * x * g30
        return
    if w == 0:
        return
    _west(v, L.price_w, w, x)
    if v[L.price_min] == 0 or price < v[L.price_min]:
        v[L.price_min] = price
    v[L.price_max] = max(v[L.price_max], price)
    _west(v, L.p7, w * g[2], x)
    wg = w * g30
    _west(v, L.p30, wg, x)
    _west(v, L.beds, wg, a["bedrooms"])
    v[L.m_baths_w] += wg
    v[L.m_baths_x] += wg * a.get("bathrooms", 0.0)
    sq = a.get("square_feet")
    if sq:
        v[L.m_sqft_w] += wg
        v[L.m_sqft_x] += wg * sq
    lat, lon = a.get("latitude"), a.get("longitude")
    if lat is not None and lon is not None:
        _west(v, L.lat, wg, lat)
        _west(v, L.lon, wg, lon)
    v[L.m_type + _TYPE[a["property_type"]]] += wg
    cities = s.cities
    c = a["city"]
    cities[c] = cities.get(c, 0.0) + wg
    if len(cities) > MAX_CITIES:
        del cities[min(cities, key=lambda k: (cities[k], k))]


# ---- reading --------------------------------------------------------------------------
@dataclass(frozen=True)
class Feature:
    name: str
    family: str  # property | engagement | session | time
    kind: str  # numerical | categorical
    window: str  # 1h 24h 7d 30d lifetime session current now
    range: str
    definition: str


@dataclass
class FeatureValues:
    numerical: dict[str, float]
    categorical: dict[str, str]
    metadata: dict[str, Any]

    def as_dict(self, lead_id: str | None = None) -> dict[str, Any]:
        d = {"numerical": self.numerical, "categorical": self.categorical,
             "metadata": self.metadata}
        return {"lead_id": lead_id, **d} if lead_id is not None else d


def _ratio(a: float, b: float) -> float:
    return a / b if b > 0 else 0.0


def _entropy(weights) -> float:
    """Normalised Shannon entropy in [0, 1] (0 for one or no category)."""
    ws = [w for w in weights if w > 0]
    if len(ws) < 2:
        return 0.0
    tot = sum(ws)
    h = -sum(w / tot * math.log(w / tot) for w in ws)
    return min(h / math.log(len(weights)), 1.0)


def argmax_label(weights: dict[str, float], default: str = "unknown") -> str:
    """Label with the largest weight; near-ties (1e-9 relative) go to the first name.

    >>> argmax_label({"b": 2.0, "a": 2.0, "c": 1.0}), argmax_label({})
    ('a', 'unknown')
    """
    best = max(weights.values(), default=0.0)
    if best <= 0:
        return default
    return min(k for k, w in weights.items() if w >= best * (1 - 1e-9))


# the angle of each hour of the day's middle, for the circular mean of activity hours
_HOUR_SIN = [math.sin(2 * math.pi * (h + 0.5) / 24) for h in range(24)]
_HOUR_COS = [math.cos(2 * math.pi * (h + 0.5) / 24) for h in range(24)]


def _wstats(v: array, i: int) -> tuple[float, float]:
    """(mean, standard deviation) of the West statistics at slot ``i``."""
    w = v[i]
    if w <= 0:
        return 0.0, 0.0
    return v[i + 1], math.sqrt(max(v[i + 2] / w, 0.0))


def preferences(s: LeadFeatures) -> tuple[str, str, float, float, float]:
    """``(preferred_property_type, preferred_city, price_level_30d, type_top_share_30d,
    city_top_share_30d)``, exactly as :func:`compute` gives them, without computing every
    other feature: what a preference-drift check needs after every event. (None of the
    five depends on the time they are computed at: each is a ratio of weights decayed
    alike.)

    >>> s = LeadFeatures()
    >>> preferences(s)
    ('unknown', 'unknown', 0.0, 0.0, 0.0)
    """
    v = s.v
    types = {t: v[L.m_type + i] for i, t in enumerate(PROPERTY_TYPES)}
    p_mean_30, _ = _wstats(v, L.p30)
    cities = s.cities
    return (argmax_label(types), argmax_label(cities),
            math.exp(p_mean_30) if v[L.p30] > 0 else 0.0,
            _ratio(max(types.values()), sum(types.values())),
            _ratio(max(cities.values(), default=0.0), sum(cities.values())))


def compute(s: LeadFeatures, as_of: float | None = None, *,
            lateness: float = DEFAULT_LATENESS,
            session_gap: float = DEFAULT_SESSION_GAP) -> FeatureValues:
    """Every feature of one lead at event time ``as_of`` (default: its latest event)."""
    v = s.v
    wm = v[L.watermark]
    T = wm if as_of is None else max(as_of, wm)
    n_ev = s.event_count
    d = T - v[L.t0]
    f = [math.exp(-d / tau) for tau in TAUS]
    f30 = f[3]

    def win(base: int, k: int) -> float:
        return v[base + k] * f[k]

    def m30(i: int) -> float:
        return v[i] * f30

    life = lambda name: v[L.life_et + _ET[name]]  # noqa: E731
    et30 = {n: v[L.m_et + i] * f30 for i, n in enumerate(EVENT_NAMES)}

    # sessions: final ones plus the open ones
    open_ = s.sessions
    n_sess = v[L.s_closed] + len(open_)
    lens = [max(seg[2] - seg[1], seg[4]) for seg in open_]
    len_sum = v[L.s_len_sum] + sum(lens)
    len_max = max([v[L.s_len_max], *lens]) if n_sess else 0.0
    sess_events = v[L.s_events] + sum(seg[3] for seg in open_)
    bounces = v[L.s_bounce] + sum(1 for seg in open_ if seg[3] == 1)
    starts_all = [seg[1] for seg in open_]
    if v[L.s_closed]:
        starts_all += [v[L.s_start_min], v[L.s_start_max]]
    s_first, s_last = (min(starts_all), max(starts_all)) if starts_all else (0.0, 0.0)
    recent = sorted(s.starts + [seg[1] for seg in open_])[-RECENT_STARTS:]
    gaps = [b - a for a, b in zip(recent, recent[1:], strict=False)]
    if len(gaps) >= 2 and sum(gaps) > 0:
        mg = sum(gaps) / len(gaps)
        cv = math.sqrt(sum((x - mg) ** 2 for x in gaps) / len(gaps)) / mg
        regularity = 1.0 / (1.0 + cv)
    else:
        regularity = 0.0
    sess_win = [win(L.w_sessions, k) + sum(math.exp(-(T - seg[1]) / TAUS[k]) for seg in open_)
                for k in range(4)]
    cur = max(open_, key=lambda g: (g[2], g[0])) if open_ else None

    # property preferences
    p_mean_l, _ = _wstats(v, L.price_w)
    p_mean_7, _ = _wstats(v, L.p7)
    p_mean_30, p_sd_30 = _wstats(v, L.p30)
    has30 = v[L.p30] > 0
    beds_m, beds_sd = _wstats(v, L.beds)
    lat_m, lat_sd = _wstats(v, L.lat)
    lon_m, lon_sd = _wstats(v, L.lon)
    types = {t: v[L.m_type + i] for i, t in enumerate(PROPERTY_TYPES)}
    type_tot = sum(types.values())
    city_tot = sum(s.cities.values())
    neg_mean = _ratio(v[L.m_neg_x], v[L.m_neg_w])
    filt = {k: r[0] for k, r in s.filters.items() if r[0] is not None}

    # engagement
    prop30 = win(L.w_prop, 3)
    views30, saves30 = win(L.w_views, 3), win(L.w_saves, 3)
    right, left = m30(L.m_right), m30(L.m_left)
    decisions = sum(et30[n] for n in _DECISIONS)
    searches30 = win(L.w_searches, 3)
    refinements = et30["filter_applied"] + et30["filter_cleared"]
    zeros = m30(L.m_zero_search)
    requested = life("booking_requested")
    distinct = _distinct(s.seen)

    # time
    hours = [m30(L.m_hour + i) for i in range(24)]
    hour_tot = sum(hours)
    tod = {TIME_OF_DAY[q]: sum(hours[6 * q: 6 * q + 6]) for q in range(4)}
    dow = [m30(L.m_dow + i) for i in range(7)]
    dow_tot = sum(dow)
    hs = _ratio(sum(w * x for w, x in zip(hours, _HOUR_SIN, strict=True)), hour_tot)
    hc = _ratio(sum(w * x for w, x in zip(hours, _HOUR_COS, strict=True)), hour_tot)
    ev24, ev7, ev30 = win(L.w_events, 1), win(L.w_events, 2), win(L.w_events, 3)

    def since(t_slot: int) -> float:
        t = v[t_slot]
        return min((T - t) / HOUR, CAP_HOURS) if t else CAP_HOURS

    num = {
        # property
        "price_level_30d": math.exp(p_mean_30) if has30 else 0.0,
        "price_spread_30d": p_sd_30,
        "price_level_lifetime": math.exp(p_mean_l) if v[L.price_w] > 0 else 0.0,
        "price_drift_7d_30d": (p_mean_7 - p_mean_30) if v[L.p7] > 0 and has30 else 0.0,
        "price_min_lifetime": v[L.price_min],
        "price_max_lifetime": v[L.price_max],
        "rejected_price_gap_30d": (neg_mean - p_mean_30) if v[L.m_neg_w] > 0 and has30 else 0.0,
        "beds_mean_30d": beds_m,
        "beds_spread_30d": beds_sd,
        "baths_mean_30d": _ratio(v[L.m_baths_x], v[L.m_baths_w]),
        "sqft_mean_30d": _ratio(v[L.m_sqft_x], v[L.m_sqft_w]),
        "type_diversity_30d": _entropy(list(types.values())),
        "type_top_share_30d": _ratio(max(types.values()), type_tot),
        "city_diversity_30d": _entropy(
            list(s.cities.values()) + [0.0] * (MAX_CITIES - len(s.cities))),
        "city_top_share_30d": _ratio(max(s.cities.values(), default=0.0), city_tot),
        "distinct_types_lifetime": float(sum(1 for w in types.values() if w > 0)),
        "distinct_cities_lifetime": float(len(s.cities)),
        "geo_lat_30d": lat_m,
        "geo_lon_30d": lon_m,
        "geo_spread_km_30d": math.sqrt((lat_sd * 111.2) ** 2
                                       + (lon_sd * 111.2 * math.cos(math.radians(lat_m))) ** 2),
        "filter_price_min": float(filt.get("price_min", 0.0)),
        "filter_price_max": float(filt.get("price_max", 0.0)),
        "filter_beds_min": float(filt.get("beds_min", 0.0)),
        "filter_active_count": float(len(filt)),
        # engagement
        "events_1h": win(L.w_events, 0),
        "events_24h": ev24,
        "events_7d": ev7,
        "events_30d": ev30,
        "events_lifetime": float(n_ev),
        "engagement_24h": win(L.w_engage, 1),
        "engagement_7d": win(L.w_engage, 2),
        "engagement_30d": win(L.w_engage, 3),
        "engagement_lifetime": v[L.engage],
        "views_7d": win(L.w_views, 2),
        "views_30d": views30,
        "view_seconds_mean_30d": _ratio(m30(L.m_view_s), views30),
        "photos_per_view_30d": _ratio(m30(L.m_photos), views30),
        "saves_7d": win(L.w_saves, 2),
        "saves_30d": saves30,
        "save_ratio_30d": _ratio(saves30, prop30),
        "like_ratio_30d": _ratio(et30["property_liked"], prop30),
        "share_ratio_30d": _ratio(et30["property_shared"], prop30),
        "unsave_ratio_30d": _ratio(et30["property_unsaved"], saves30 + 1.0),
        "swipe_right_ratio_30d": (right + 1.0) / (right + left + 2.0),
        "decision_ratio_30d": _ratio(decisions, prop30),
        "searches_7d": win(L.w_searches, 2),
        "search_refinement_ratio_30d": _ratio(refinements, searches30 + refinements),
        "zero_result_search_ratio_30d": _ratio(zeros, searches30),
        "search_results_log_mean_30d": _ratio(m30(L.m_search_log), searches30),
        "contact_clicks_30d": et30["contact_agent_clicked"],
        "bookings_lifetime": requested,
        "booking_completion_ratio_lifetime": min(_ratio(life("booking_completed"), requested), 1.0),
        "booking_cancel_ratio_lifetime": min(_ratio(life("booking_cancelled"), requested), 1.0),
        "offers_lifetime": life("offer_made"),
        "rec_click_through_30d": min(_ratio(et30["recommendation_clicked"],
                                            et30["recommendation_shown"]), 1.0),
        "distinct_properties_lifetime": distinct,
        "exploration_ratio_lifetime": min(_ratio(distinct, v[L.prop]), 1.0),
        "agent_contacts_30d": et30["agent_contacted_lead"],
        "response_ratio_lifetime": min(_ratio(life("lead_responded"),
                                              life("agent_contacted_lead")), 1.0),
        # session
        "sessions_lifetime": n_sess,
        "sessions_7d": sess_win[2],
        "sessions_30d": sess_win[3],
        "session_length_mean_s": _ratio(len_sum, n_sess),
        "session_length_max_s": len_max,
        "events_per_session_mean": _ratio(sess_events, n_sess),
        "bounce_ratio": _ratio(bounces, n_sess),
        "session_gap_mean_h": _ratio(s_last - s_first, n_sess - 1) / HOUR if n_sess > 1 else 0.0,
        "session_regularity": regularity,
        "current_session_events": float(cur[3]) if cur else 0.0,
        "current_session_length_s": max(cur[2] - cur[1], cur[4]) if cur else 0.0,
        "off_session_event_ratio": _ratio(n_ev - sess_events, n_ev),
        # time
        "recency_hours": (T - wm) / HOUR if n_ev else CAP_HOURS,
        "tenure_days": (wm - v[L.first_ts]) / DAY if n_ev else 0.0,
        "hours_since_save": since(L.last_save_ts),
        "hours_since_booking": since(L.last_booking_ts),
        "active_days_30d": float(bin(s.days & ((1 << 30) - 1)).count("1")),
        "night_share_30d": _ratio(tod["night"], hour_tot),
        "morning_share_30d": _ratio(tod["morning"], hour_tot),
        "afternoon_share_30d": _ratio(tod["afternoon"], hour_tot),
        "evening_share_30d": _ratio(tod["evening"], hour_tot),
        "weekend_share_30d": _ratio(dow[5] + dow[6], dow_tot),
        "hour_sin_30d": hs,
        "hour_cos_30d": hc,
        "peak_hour_share_30d": _ratio(max(hours), hour_tot),
        "day_of_week_diversity_30d": _entropy(dow),
        "activity_trend_1d_7d": math.log1p(ev24) - math.log1p(ev7 / 7),
        "activity_trend_7d_30d": math.log1p(ev7) - math.log1p(ev30 * 7 / 30),
    }
    if n_ev and v[L.engage] > 0:
        stage = ("booking" if requested or life("offer_made") else
                 "engaged" if saves30 + et30["property_shared"] + et30["contact_agent_clicked"] > 0
                 else "browsing")
    else:
        stage = "new"
    if n_ev and T - wm > 14 * DAY:
        stage = "dormant"
    cat = {
        "preferred_property_type": argmax_label(types),
        "preferred_city": argmax_label(s.cities),
        "preferred_time_of_day": argmax_label(tod),
        "primary_event_type": argmax_label(et30),
        "lifecycle_stage": stage,
    }
    meta = {
        "event_count": n_ev,
        "feature_version": FEATURE_VERSION,
        "last_update": s.last_update,
        "last_event_time": wm if n_ev else None,
        "first_event_time": v[L.first_ts] if n_ev else None,
        "as_of": T if n_ev else as_of,
        "open_sessions": len(open_),
    }
    return FeatureValues(num, cat, meta)


def activity_hours(s: LeadFeatures) -> list[float]:
    """The lead's activity per local hour of day (30-day decayed, relative weights)."""
    return [s.v[L.m_hour + i] for i in range(24)]


def _distinct(seen: int) -> float:
    """Linear-counting estimate of the distinct properties in the sketch."""
    zeros = SEEN_BITS - bin(seen).count("1")
    if zeros == 0:
        return SEEN_BITS * math.log(SEEN_BITS)
    return SEEN_BITS * math.log(SEEN_BITS / zeros)


# ---- storage --------------------------------------------------------------------------
_MAGIC = b"LF4"  # LF3 and the slot layout's version (features/layout.py) after the header
_MAGIC_V3 = b"LF3"  # event ids by event time: fingerprints, then times (int64 seconds)
_MAGIC_V2 = b"LF2"  # ids in arrival order: 64-bit hashes, then ages (read, never written)
# last_update, open sessions, head length, id count, sketch length (LF2, LF3: layout 1)
_HEADER = struct.Struct(">dBIHH")
_VERSION = struct.Struct(">H")
_PEEK = struct.Struct(">dB")


def encode(s: LeadFeatures) -> bytes:
    """Compact bytes for the table: a small JSON head, the event ids, then the float slots
    (with the version of their layout)."""
    head = orjson.dumps([s.event_count, s.sessions, s.starts, s.cities, s.filters, s.days,
                         s.last_offset])
    seen = s.seen.to_bytes(SEEN_BITS // 8, "big") if s.seen else b""
    fps, times = s.ids.to_bytes()
    return b"".join((
        _MAGIC, _HEADER.pack(s.last_update, len(s.sessions), len(head), len(s.ids), len(seen)),
        _VERSION.pack(LAYOUT_VERSION), head, fps, times, seen, s.v.tobytes(),
    ))


def decode(blob: bytes) -> LeadFeatures:
    """Inverse of :func:`encode`. A state of an older slot layout (an event type or a
    feature added since) is migrated: each slot copied by name, new ones zero. Also reads
    the earlier formats (``LF3``: no layout version, layout 1; ``LF2``: the ids in
    arrival order as integers, their times as ages), ordering their ids by event time."""
    magic = blob[:3]
    if magic not in (_MAGIC, _MAGIC_V3, _MAGIC_V2):
        raise ValueError("not a leadstream feature state (unknown version)")
    last_update, _, n_head, n_ids, n_seen = _HEADER.unpack_from(blob, 3)
    i = 3 + _HEADER.size
    version = 1
    if magic == _MAGIC:
        (version,) = _VERSION.unpack_from(blob, i)
        i += _VERSION.size
    count, sessions, starts, cities, filters, days, last_offset = orjson.loads(
        blob[i:i + n_head])
    i += n_head
    fps = blob[i:i + 8 * n_ids]
    i += 8 * n_ids
    width = 4 if magic == _MAGIC_V2 else 8
    times = blob[i:i + width * n_ids]
    i += width * n_ids
    seen = int.from_bytes(blob[i:i + n_seen], "big")
    v = array("d")
    v.frombytes(blob[i + n_seen:])
    if version != LAYOUT_VERSION:
        v = L.migrate(v, _HISTORY.slots(version))
    elif len(v) != N_SLOTS:
        raise ValueError(f"feature state has {len(v)} slots, its layout {N_SLOTS}")
    if magic != _MAGIC_V2:
        ids = EventIdSet.from_bytes(fps, times)
    else:
        ids = _ids_v2(fps, times, math.floor(v[L.watermark]))
    for seg in sessions:  # written before sessions carried their reported duration
        if len(seg) == 4:
            seg.append(0.0)
    return LeadFeatures(v, count, last_update, ids, sessions, starts, cities, filters, seen,
                        days, last_offset)


def _ids_v2(hashes: bytes, ages: bytes, ref: int) -> EventIdSet:
    """The ids of an ``LF2`` state: native uint64 hashes (a big-endian fingerprint read as
    a number) and uint32 ages behind the watermark, in arrival order."""
    h, a = array("Q"), array("I")
    h.frombytes(hashes)
    a.frombytes(ages)
    return EventIdSet.from_pairs((x.to_bytes(8, "big"), ref - age)
                                 for x, age in zip(h, a, strict=True))


def peek(blob: bytes) -> tuple[float, int]:
    """(wall-clock ``last_update``, open sessions) of a stored state, without decoding it."""
    return _PEEK.unpack_from(blob, 3)
