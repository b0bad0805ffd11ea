"""A seeded synthetic stream: leads with latent tastes browsing a changing catalog.

Each lead has a hidden taste (a home city, a property type, a price centre, a bed count)
and a daily rhythm (a preferred hour, a session rate). Sessions run the funnel: filters
and searches, views (mostly of listings near the lead's taste), swipes, likes, saves,
shares, comparisons, bookings (requested, confirmed, completed or cancelled), offers, and
CRM follow-up by agents with outcomes. The catalog changes while it runs: new listings
appear and listings sell. The same seed gives the same stream.

>>> sim = Simulator(SimConfig(leads=20, properties=50, seed=3, days=2))
>>> first = list(sim.listings())
>>> len(first), first[0]["status"]
(50, 'active')
>>> evs = [r for r in sim.records() if r.topic == "interactions"]
>>> evs == [r for r in Simulator(SimConfig(leads=20, properties=50, seed=3, days=2)).records()
...         if r.topic == "interactions"]
True
>>> all(a.ts <= b.ts for a, b in zip(evs, evs[1:]))
True
"""

from __future__ import annotations

import heapq
import math
import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import orjson

CITIES = {  # name: (median price, latitude, longitude, zip prefix)
    "Austin": (450_000, 30.27, -97.74, "787"),
    "Denver": (560_000, 39.74, -104.99, "802"),
    "Miami": (520_000, 25.76, -80.19, "331"),
    "Seattle": (780_000, 47.61, -122.33, "981"),
    "Phoenix": (420_000, 33.45, -112.07, "850"),
    "Raleigh": (400_000, 35.78, -78.64, "276"),
}
TYPES = ("house", "condo", "townhouse", "apartment")
TYPE_PRICE = {"house": 1.25, "condo": 0.8, "townhouse": 1.0, "apartment": 0.65}
AMENITIES = ("pool", "garage", "gym", "garden", "balcony", "fireplace", "doorman", "ev charger",
             "washer/dryer", "rooftop", "pet friendly", "home office")
WORDS = ("bright", "renovated", "quiet", "spacious", "modern", "cozy", "walkable", "sunny",
         "open-plan", "updated", "charming", "new")


@dataclass
class SimConfig:
    leads: int = 200
    properties: int = 500
    agents: int = 8
    seed: int = 7
    days: float = 14.0
    start: datetime = field(default_factory=lambda: datetime(2026, 3, 1, tzinfo=UTC))
    bad_ratio: float = 0.0  # share of interaction records replaced by malformed ones
    duplicate_ratio: float = 0.0  # share of events sent twice (same event_id)
    new_listings_per_day: float = 10.0
    sold_per_day: float = 6.0
    # no invented recommendation_shown / _clicked (with made-up list ids): the leads react
    # to the lists really published for them instead (leadstream.closedloop)
    closed_loop: bool = False


def restamp(value: bytes, event_id: str | None = None) -> bytes:
    """A simulated event as live traffic: the current time (and a fresh ``event_id``).

    >>> ev = orjson.loads(restamp(b'{"event_id": "e1", "timestamp": "2026-03-01T00:00:00Z"}',
    ...                           "mx-1"))
    >>> ev["event_id"], ev["timestamp"] > "2026-03-02"
    ('mx-1', True)
    """
    ev = orjson.loads(value)
    if event_id is not None:
        ev["event_id"] = event_id
    ev["timestamp"] = datetime.now(UTC).isoformat()
    return orjson.dumps(ev)


def one_per_listing(values: list[bytes]) -> list[bytes]:
    """The shape of public rating data sets (one interaction per user and item): each
    lead's first event on each listing, as ``property_saved`` if the lead saved that
    listing at some point and as ``property_viewed`` otherwise; events that name no
    listing are dropped. Lines that are not valid JSON objects are kept as they are.

    >>> ev = lambda i, t, p: orjson.dumps({"event_id": i, "lead_id": "L", "event_type": t,
    ...     "timestamp": f"2026-03-01T00:0{i}:00Z", "session_id": "s", "property_id": p,
    ...     "payload": {"duration_seconds": 9.0} if t == "property_viewed" else {}})
    >>> out = one_per_listing([ev("1", "property_viewed", "A"), ev("2", "property_saved", "A"),
    ...                        ev("3", "property_liked", "B")])
    >>> [(orjson.loads(x)["event_id"], orjson.loads(x)["event_type"]) for x in out]
    [('1', 'property_saved'), ('3', 'property_viewed')]
    """
    first: dict[tuple, dict] = {}
    saved: set[tuple] = set()
    out: list = []
    for raw in values:
        try:
            ev = orjson.loads(raw)
        except orjson.JSONDecodeError:
            out.append(raw)
            continue
        if not isinstance(ev, dict):
            out.append(raw)
            continue
        if not ev.get("property_id"):
            continue
        key = (ev.get("lead_id"), ev["property_id"])
        if ev.get("event_type") == "property_saved":
            saved.add(key)
        if key not in first:
            first[key] = ev
            out.append(key)
    result = []
    for x in out:
        if isinstance(x, bytes):
            result.append(x)
            continue
        ev = first[x]
        if x in saved:
            ev.update(event_type="property_saved", payload={})
        else:
            ev.update(event_type="property_viewed", payload={
                "duration_seconds": ev.get("payload", {}).get("duration_seconds") or 30.0})
        result.append(orjson.dumps(ev))
    return result


@dataclass(slots=True)
class Record:
    """One record to publish: topic ('interactions' or 'properties'), key, raw value."""

    topic: str
    key: bytes | None
    value: bytes | None
    ts: float  # event time, epoch seconds
    valid: bool = True


@dataclass(slots=True)
class _Lead:
    lead_id: str
    city: str
    ptype: str
    log_price: float
    beds: int
    hour: float
    rate: float  # sessions per day
    agent: str
    saved: list = field(default_factory=list)


class Simulator:
    def __init__(self, cfg: SimConfig):
        self.cfg = cfg
        self.rng = random.Random(cfg.seed)
        self._n_events = 0
        self._n_props = 0
        self.props: dict[str, dict] = {}
        self.active: list[str] = []
        self.by_city: dict[str, list[str]] = {c: [] for c in CITIES}
        for _ in range(cfg.properties):
            self._new_listing(cfg.start - timedelta(days=self.rng.uniform(0, 60)))
        self.leads = [self._new_lead(i) for i in range(cfg.leads)]

    # ---- catalog ----------------------------------------------------------------------
    def _new_listing(self, when: datetime) -> dict:
        r = self.rng
        self._n_props += 1
        pid = f"P{self._n_props:06d}"
        city = r.choice(list(CITIES))
        med, lat, lon, zp = CITIES[city]
        ptype = r.choices(TYPES, weights=(4, 3, 2, 2))[0]
        beds = max(0, min(6, int(round(r.gauss(2.8 if ptype == "house" else 1.8, 1.0)))))
        price = med * TYPE_PRICE[ptype] * (0.75 + 0.15 * beds) * math.exp(r.gauss(0, 0.25))
        words = r.sample(WORDS, 2)
        am = r.sample(AMENITIES, r.randint(1, 4))
        listing = {
            "property_id": pid,
            "status": "active",
            "price": round(price, -3),
            "bedrooms": beds,
            "bathrooms": max(1.0, beds - r.choice((0, 0.5, 1))),
            "square_feet": round(350 + 420 * beds * math.exp(r.gauss(0, 0.15))),
            "property_type": ptype,
            "city": city,
            "zip": f"{zp}{r.randint(0, 99):02d}",
            "latitude": round(lat + r.gauss(0, 0.05), 5),
            "longitude": round(lon + r.gauss(0, 0.05), 5),
            "listing_date": when.date().isoformat(),
            "description": f"{words[0].title()} {words[1]} {beds}-bed {ptype} in {city} "
            f"with {', '.join(am)}.",
            "amenities": am,
            "updated_at": when.isoformat(),
        }
        self.props[pid] = listing
        self.active.append(pid)
        self.by_city[city].append(pid)
        return listing

    def listings(self) -> Iterator[dict]:
        """The catalog as it is now (initially: before any event)."""
        yield from (self.props[p] for p in self.active)

    def _sell(self, when: datetime) -> dict | None:
        if len(self.active) < 10:
            return None
        pid = self.active.pop(self.rng.randrange(len(self.active)))
        listing = self.props[pid]
        self.by_city[listing["city"]].remove(pid)
        listing = dict(listing, status="sold", updated_at=when.isoformat())
        self.props[pid] = listing
        return listing

    # ---- leads -----------------------------------------------------------------------
    def _new_lead(self, i: int) -> _Lead:
        r = self.rng
        city = r.choice(list(CITIES))
        ptype = r.choices(TYPES, weights=(4, 3, 2, 2))[0]
        beds = max(0, min(5, int(round(r.gauss(2.5, 1.0)))))
        center = CITIES[city][0] * TYPE_PRICE[ptype] * (0.75 + 0.15 * beds)
        return _Lead(
            lead_id=f"L{i:06d}",
            city=city,
            ptype=ptype,
            log_price=math.log(center) + r.gauss(0, 0.15),
            beds=beds,
            hour=r.choice((8.0, 12.5, 20.5)) + r.gauss(0, 1.0),
            rate=math.exp(r.gauss(math.log(0.8), 0.6)),
            agent=f"A{i % self.cfg.agents:03d}",
        )

    def utility(self, lead: _Lead, pid: str) -> float:
        """How much a lead likes a listing (hidden from the engine; used by tests)."""
        p = self.props[pid]
        z = (math.log(p["price"]) - lead.log_price) / 0.2
        return (-0.5 * z * z + 1.2 * (p["property_type"] == lead.ptype)
                + 1.0 * (p["city"] == lead.city) + 0.4 * (p["bedrooms"] == lead.beds))

    def _pick(self, lead: _Lead) -> str:
        r = self.rng
        home = self.by_city[lead.city]
        pool = home if r.random() < 0.8 and home else self.active
        sample = [pool[r.randrange(len(pool))] for _ in range(8)]
        return max(sample, key=lambda p: self.utility(lead, p) + r.gauss(0, 0.7))

    def _ev(self, lead: _Lead, et: str, t: datetime, sid: str | None, **kw) -> dict:
        self._n_events += 1
        ev = {"event_id": f"ev-{self.cfg.seed}-{self._n_events:09d}", "lead_id": lead.lead_id,
              "event_type": et, "timestamp": t.isoformat().replace("+00:00", "Z")}
        if sid is not None:
            ev["session_id"] = sid
        ev.update(kw)
        return ev

    def _session(self, lead: _Lead, t: datetime) -> list[dict]:
        r = self.rng
        sid = f"S-{lead.lead_id}-{int(t.timestamp())}"
        out = [self._ev(lead, "session_started", t, sid,
                        payload={"device": r.choice(("web", "ios", "android"))})]

        def step(lo=5.0, hi=90.0):
            nonlocal t
            t = t + timedelta(seconds=r.uniform(lo, hi))
            return t

        if r.random() < 0.3:
            center = math.exp(lead.log_price)
            out.append(self._ev(lead, "filter_applied", step(), sid, payload={
                "price_min": round(center * 0.6, -3), "price_max": round(center * 1.5, -3),
                "cities": [lead.city]}))
        if r.random() < 0.4:
            out.append(self._ev(lead, "search_performed", step(), sid, payload={
                "query": f"{lead.beds} bed {lead.ptype} {lead.city}".lower(),
                "result_count": r.randint(0, 400)}))
        if r.random() < 0.15:
            _, lat, lon, _ = CITIES[lead.city]
            out.append(self._ev(lead, "map_area_viewed", step(), sid, payload={
                "bbox": {"min_lat": lat - 0.1, "min_lon": lon - 0.1, "max_lat": lat + 0.1,
                         "max_lon": lon + 0.1}, "zoom": 12}))
        for _ in range(r.randint(2, 12)):
            if not self.active:
                break
            pid = self._pick(lead)
            u = self.utility(lead, pid)
            like = 1 / (1 + math.exp(-(u + 0.3) * 1.5))
            src = r.choice(("feed", "search", "map", "recommendation"))
            if src == "recommendation" and self.cfg.closed_loop:
                src = "feed"
            elif src == "recommendation":
                rid = f"R-{lead.lead_id}-{int(t.timestamp())}"
                rank = r.randint(1, 10)
                out.append(self._ev(lead, "recommendation_shown", step(1, 5), sid,
                                    property_id=pid, source=src,
                                    payload={"recommendation_id": rid, "rank": rank}))
                if r.random() < like:
                    out.append(self._ev(lead, "recommendation_clicked", step(1, 10), sid,
                                        property_id=pid, source=src,
                                        payload={"recommendation_id": rid, "rank": rank}))
                else:
                    continue
            out.append(self._ev(lead, "property_viewed", step(), sid, property_id=pid, source=src,
                                payload={"duration_seconds": round(r.uniform(5, 60) + 90 * like, 1),
                                         "photos_viewed": int(r.uniform(0, 6) + 12 * like)}))
            if r.random() < like:
                out.append(self._ev(lead, "property_detail_opened", step(), sid, property_id=pid))
            if r.random() < 0.6:
                d = "right" if r.random() < like else "left"
                out.append(self._ev(lead, "property_swiped", step(1, 8), sid, property_id=pid,
                                    payload={"direction": d}))
                if d == "left":
                    continue
            if r.random() < like * 0.5:
                out.append(self._ev(lead, "property_liked", step(1, 8), sid, property_id=pid))
                if r.random() < 0.06:
                    out.append(self._ev(lead, "property_unliked", step(5, 60), sid,
                                        property_id=pid))
                    continue
            if r.random() < like * 0.45:
                out.append(self._ev(lead, "property_saved", step(1, 8), sid, property_id=pid))
                lead.saved.append(pid)
                if r.random() < 0.1:
                    out.append(self._ev(lead, "property_shared", step(), sid, property_id=pid,
                                        payload={"channel": r.choice(("email", "sms", "link"))}))
                if len(lead.saved) >= 2 and r.random() < 0.15:
                    out.append(self._ev(lead, "property_compared", step(), sid, property_id=pid,
                                        payload={"compared_with": lead.saved[-3:-1]}))
            if lead.saved and r.random() < 0.04:
                gone = lead.saved.pop(0)
                out.append(self._ev(lead, "property_unsaved", step(1, 8), sid, property_id=gone))
            if u > 1.2 and r.random() < 0.12:
                out.extend(self._booking(lead, pid, step(), sid, like))
        if r.random() < 0.08:
            out.append(self._ev(lead, "contact_agent_clicked", step(), sid,
                                agent_id=lead.agent, payload={"channel": "form"}))
        if r.random() < 0.1:
            out.append(self._ev(lead, "filter_cleared", step(), sid))
        dur = (t - datetime.fromisoformat(out[0]["timestamp"])).total_seconds()
        out.append(self._ev(lead, "session_ended", step(1, 30), sid,
                            payload={"duration_seconds": round(dur, 1)}))
        return out

    def _booking(self, lead: _Lead, pid: str, t: datetime, sid: str, like: float) -> list[dict]:
        r = self.rng
        bid = f"B-{lead.lead_id}-{pid}"
        out = [self._ev(lead, "booking_requested", t, sid, property_id=pid,
                        payload={"booking_id": bid})]
        t2 = t + timedelta(minutes=r.uniform(5, 120))
        out.append(self._ev(lead, "agent_contacted_lead", t2, None, agent_id=lead.agent,
                            payload={"channel": r.choice(("call", "sms", "email"))}))
        if r.random() < 0.7:
            out.append(self._ev(lead, "lead_responded", t2 + timedelta(minutes=r.uniform(1, 60)),
                                None, agent_id=lead.agent, payload={"channel": "sms"}))
        if r.random() < 0.85:
            out.append(self._ev(lead, "booking_confirmed", t2 + timedelta(minutes=1), None,
                                property_id=pid, agent_id=lead.agent, payload={"booking_id": bid}))
            t3 = t2 + timedelta(hours=r.uniform(4, 48))
            if r.random() < 0.75:
                out.append(self._ev(lead, "booking_completed", t3, None, property_id=pid,
                                    agent_id=lead.agent, payload={"booking_id": bid}))
                if r.random() < like * 0.3:
                    out.append(self._ev(lead, "offer_made", t3 + timedelta(hours=2), None,
                                        property_id=pid, payload={"amount": round(
                                            self.props[pid]["price"] * r.uniform(0.93, 1.0), -3)}))
                    out.append(self._ev(lead, "outcome_recorded", t3 + timedelta(days=1), None,
                                        agent_id=lead.agent, property_id=pid,
                                        payload={"outcome": "converted"}))
                elif r.random() < 0.4:
                    out.append(self._ev(lead, "outcome_recorded", t3 + timedelta(hours=20), None,
                                        agent_id=lead.agent, property_id=pid,
                                        payload={"outcome": "lost"}))
            else:
                out.append(self._ev(lead, "booking_cancelled", t2 + timedelta(hours=2), None,
                                    property_id=pid,
                                    payload={"booking_id": bid, "reason": "schedule"}))
                if r.random() < 0.6:
                    out.append(self._ev(lead, "outcome_recorded", t2 + timedelta(days=1), None,
                                        agent_id=lead.agent, property_id=pid,
                                        payload={"outcome": r.choice(("lost", "unreachable"))}))
        return out

    # ---- malformed input --------------------------------------------------------------
    def _corrupt(self, ev: dict) -> bytes:
        r = self.rng
        kind = r.randrange(7)
        if kind == 0:
            return orjson.dumps(ev)[: r.randint(1, 40)]  # truncated JSON
        if kind == 1:
            return orjson.dumps(dict(ev, event_type="property_teleported"))
        if kind == 2:
            return orjson.dumps(dict(ev, timestamp="2099-01-01T00:00:00Z"))
        if kind == 3:
            return orjson.dumps({k: v for k, v in ev.items() if k != "lead_id"})
        if kind == 4:
            return b"\xff\xfe" + orjson.dumps(ev)[2:]
        if kind == 5:
            return orjson.dumps(dict(ev, event_type="offer_made", property_id="P000001",
                                     payload={"amount": -50000}))
        return orjson.dumps(dict(ev, timestamp=12 if r.random() < 0.5 else "yesterday"))

    # ---- the stream -------------------------------------------------------------------
    def records(self) -> Iterator[Record]:
        """Catalog first, then interactions and catalog changes in event-time order."""
        cfg, r = self.cfg, self.rng
        for listing in list(self.listings()):
            yield Record("properties", listing["property_id"].encode(), orjson.dumps(listing),
                         cfg.start.timestamp())
        end = cfg.start + timedelta(days=cfg.days)
        sessions: list[tuple[float, int]] = []
        for i, lead in enumerate(self.leads):
            first = self._next_session(lead, cfg.start)
            if first < end:
                heapq.heappush(sessions, (first.timestamp(), i))
        catalog_events = []
        for rate, kind in ((cfg.new_listings_per_day, "new"), (cfg.sold_per_day, "sold")):
            t = cfg.start
            while rate > 0:
                t += timedelta(days=r.expovariate(rate))
                if t >= end:
                    break
                catalog_events.append((t.timestamp(), kind))
        catalog_events.sort()
        pending: list[tuple[float, int, Record]] = []
        seq = 0
        ci = 0
        while sessions or pending:
            horizon = sessions[0][0] if sessions else math.inf
            while pending and pending[0][0] <= horizon:
                ts, _, rec = heapq.heappop(pending)
                while ci < len(catalog_events) and catalog_events[ci][0] <= ts:
                    yield from self._catalog_change(*catalog_events[ci])
                    ci += 1
                yield rec
            if not sessions:
                break
            start_ts, i = heapq.heappop(sessions)
            lead = self.leads[i]
            for ev in self._session(lead, datetime.fromtimestamp(start_ts, UTC)):
                ts = datetime.fromisoformat(ev["timestamp"]).timestamp()
                key = lead.lead_id.encode()
                if cfg.bad_ratio and r.random() < cfg.bad_ratio:
                    rec = Record("interactions", key, self._corrupt(ev), ts, valid=False)
                else:
                    rec = Record("interactions", key, orjson.dumps(ev), ts)
                seq += 1
                heapq.heappush(pending, (ts, seq, rec))
                if rec.valid and cfg.duplicate_ratio and r.random() < cfg.duplicate_ratio:
                    seq += 1
                    heapq.heappush(pending, (ts, seq, Record("interactions", key, rec.value, ts)))
            nxt = self._next_session(lead, datetime.fromtimestamp(start_ts, UTC)
                                     + timedelta(hours=1))
            if nxt < end:
                heapq.heappush(sessions, (nxt.timestamp(), i))
        while ci < len(catalog_events):
            yield from self._catalog_change(*catalog_events[ci])
            ci += 1

    def _catalog_change(self, ts: float, kind: str) -> Iterator[Record]:
        when = datetime.fromtimestamp(ts, UTC)
        listing = self._new_listing(when) if kind == "new" else self._sell(when)
        if listing is not None:
            yield Record("properties", listing["property_id"].encode(), orjson.dumps(listing), ts)

    def _next_session(self, lead: _Lead, after: datetime) -> datetime:
        r = self.rng
        t = after + timedelta(days=r.expovariate(lead.rate))
        # pull the session towards the lead's preferred hour of day
        day = t.replace(hour=0, minute=0, second=0, microsecond=0)
        hour = (lead.hour + r.gauss(0, 1.5)) % 24
        cand = day + timedelta(hours=hour)
        return cand if cand > after else cand + timedelta(days=1)


def experiment_records(experiment, *, leads: int = 2000, lists_per_lead: int = 3,
                       base_ctr: float = 0.05, base_save: float = 0.2,
                       lift: dict[str, float] | None = None, seed: int = 7,
                       start: datetime | None = None) -> list[Record]:
    """A stream whose true A/B effect is known: each lead is assigned its arm, is shown
    ``lists_per_lead`` lists of 5 listings (``recommendations`` records plus one
    ``recommendation_shown`` per listing) and clicks each with probability
    ``base_ctr * lift[arm]``; a click is followed by a save with probability ``base_save``.
    """
    rng = random.Random(seed)
    lift = lift or {}
    t = (start or datetime(2026, 3, 1, tzinfo=UTC)).timestamp()
    out: list[Record] = []
    n = 0

    def ev(lead, et, ts, **kw):
        nonlocal n
        n += 1
        body = {"event_id": f"x{n:08d}", "lead_id": lead, "event_type": et,
                "timestamp": datetime.fromtimestamp(ts, UTC).isoformat(), "session_id": "s",
                **kw}
        return Record("interactions", lead.encode(), orjson.dumps(body), ts)

    for i in range(leads):
        lead = f"X{i:06d}"
        arm = experiment.arm_for(lead).name
        p_click = base_ctr * lift.get(arm, 1.0)
        for j in range(lists_per_lead):
            ts = t + i * 60 + j * 3600
            rec_id = f"{lead}-r{j}"
            items = [f"P{rng.randrange(500):06d}" for _ in range(5)]
            rec = {"recommendation_id": rec_id, "lead_id": lead, "experiment": experiment.name,
                   "arm": arm, "event_time": datetime.fromtimestamp(ts, UTC).isoformat(),
                   "items": [{"property_id": p, "rank": r + 1} for r, p in enumerate(items)]}
            out.append(Record("recommendations", lead.encode(), orjson.dumps(rec), ts))
            for r, pid in enumerate(items):
                payload = {"recommendation_id": rec_id, "rank": r + 1}
                out.append(ev(lead, "recommendation_shown", ts + 1, property_id=pid,
                              payload=payload))
                if rng.random() < p_click:
                    out.append(ev(lead, "recommendation_clicked", ts + 2, property_id=pid,
                                  payload=payload))
                    if rng.random() < base_save:
                        out.append(ev(lead, "property_saved", ts + 3, property_id=pid))
    out.sort(key=lambda r: (r.ts, r.topic != "recommendations"))
    return out
