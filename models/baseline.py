"""The baseline recommender: recency-weighted popularity, shaped by the lead's own taste.

Every listing carries an exponentially decayed sum of the implicit-feedback weights of
all leads' events on it (half-life ``half_life`` seconds of event time). A lead's score
for a listing multiplies that popularity by how well the listing matches the lead's
price band, preferred types, cities and bed counts (learned from its positive events),
over active listings that pass the lead's filters, minus everything the lead rejected
or already booked. One vectorised numpy pass over the catalog columns.

>>> from datetime import datetime, UTC
>>> from leadstream.events import make_event, parse_listing
>>> from features.profile import LeadProfile, update
>>> from models.catalog import Catalog
>>> cat, model = Catalog(), PopularityRecommender()
>>> for pid, price, city in [("A", 300e3, "Austin"), ("B", 900e3, "Austin"), ("C", 310e3, "Denver")]:
...     _ = cat.upsert(parse_listing(('{"property_id":"%s","status":"active","price":%d,"bedrooms":2,'
...         '"bathrooms":1,"property_type":"condo","city":"%s"}' % (pid, price, city)).encode()))
>>> lead = LeadProfile()
>>> t = datetime(2026, 3, 1, tzinfo=UTC)
>>> ev = make_event("property_saved", event_id="e1", lead_id="L", session_id="s", timestamp=t,
...                 property_id="A")
>>> _ = update(lead, ev, cat.attributes("A")); model.learn_one(cat, ev)
>>> rec = model.recommend(lead, cat, k=2)
>>> [item["property_id"] for item in rec.items]   # A is saved already; C matches the price band
['C', 'B']
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from features.profile import LeadProfile
from models.catalog import TYPE_CODE, Catalog, money
from models.weights import feedback_weight

MODEL_VERSION = "baseline-popularity-1"


@dataclass
class Ranked:
    items: list[dict]
    confidence: float
    explanation: str
    model_version: str = MODEL_VERSION


class PopularityRecommender:
    """Recency-weighted popularity per listing; ``learn_one`` per event, ``recommend`` per lead.

    Scores are kept relative to a reference time ``t0`` so decay costs nothing per
    event: ``s_i = sum(w * 2 ** ((t - t0) / half_life))``, rebased when the exponent grows.
    """

    def __init__(self, half_life: float = 7 * 86_400.0):
        self.half_life = half_life
        self.t0: float | None = None
        self.score = np.zeros(0)
        self.hits = np.zeros(0)  # decayed count of positive events, for explanations
        self.t_max = 0.0

    def _ensure(self, n: int) -> None:
        if n > len(self.score):
            cap = max(n, 2 * len(self.score), 1024)
            for name in ("score", "hits"):
                old = getattr(self, name)
                new = np.zeros(cap)
                new[: len(old)] = old
                setattr(self, name, new)

    def learn_one(self, catalog: Catalog, event) -> None:
        if event.property_id is None:
            return
        w = feedback_weight(event.event_type, getattr(event.payload, "direction", None))
        if w == 0.0:
            return
        ts = event.timestamp.timestamp()
        if self.t0 is None:
            self.t0 = ts
        self.t_max = max(self.t_max, ts)
        exponent = (ts - self.t0) / self.half_life
        if exponent > 200:  # rebase to keep floats finite
            shift = 2.0 ** (-exponent)
            self.score *= shift
            self.hits *= shift
            self.t0, exponent = ts, 0.0
        i = catalog.index_of(event.property_id)
        self._ensure(i + 1)
        g = 2.0**exponent
        self.score[i] += w * g
        if w > 0:
            self.hits[i] += g

    def recent_hits(self, i: int) -> float:
        """Decayed count of positive events on row ``i`` as of the newest event."""
        if self.t0 is None or i >= len(self.hits):
            return 0.0
        return float(self.hits[i] * 2.0 ** (-(self.t_max - self.t0) / self.half_life))

    def candidate_mask(self, lead: LeadProfile, catalog: Catalog) -> np.ndarray:
        n = len(catalog)
        mask = catalog.active[:n].copy()
        f = lead.filters
        if f:
            if "price_min" in f:
                mask &= catalog.price[:n] >= f["price_min"]
            if "price_max" in f:
                mask &= catalog.price[:n] <= f["price_max"]
            if "beds_min" in f:
                mask &= catalog.beds[:n] >= f["beds_min"]
            if "beds_max" in f:
                mask &= catalog.beds[:n] <= f["beds_max"]
            if "baths_min" in f:
                mask &= catalog.baths[:n] >= f["baths_min"]
            if f.get("property_types"):
                codes = [TYPE_CODE[t] for t in f["property_types"]]
                mask &= np.isin(catalog.type_code[:n], codes)
            if f.get("cities"):
                codes = [catalog._city_code[c] for c in f["cities"] if c in catalog._city_code]
                mask &= np.isin(catalog.city_code[:n], codes)
        for excluded in (lead.rejected, lead.saved, lead.booked):
            for pid in excluded:
                i = catalog.index.get(pid)
                if i is not None:
                    mask[i] = False
        return mask

    def scores(self, lead: LeadProfile, catalog: Catalog) -> np.ndarray:
        n = len(catalog)
        self._ensure(n)
        pop = np.log1p(np.maximum(self.score[:n], 0.0) / max(self.score[:n].max(initial=0), 1e-9))
        s = 0.1 + pop
        if lead.price_w > 0:
            z = (catalog.log_price[:n] - lead.price_mean) / lead.price_spread()
            s = s * (0.2 + np.exp(-0.5 * z * z))
        total = sum(lead.type_w.values())
        if total > 0:
            aff = np.zeros(len(TYPE_CODE) + 1)
            for t, w in lead.type_w.items():
                aff[TYPE_CODE[t]] = max(w, 0.0) / total
            s = s * (0.3 + aff[catalog.type_code[:n]])
        total = sum(lead.city_w.values())
        if total > 0:
            aff = np.zeros(len(catalog.cities) + 1)
            for c, w in lead.city_w.items():
                code = catalog._city_code.get(c)
                if code is not None:
                    aff[code] = max(w, 0.0) / total
            s = s * (0.3 + aff[catalog.city_code[:n]])
        return s

    def recommend(self, lead: LeadProfile, catalog: Catalog, k: int = 10) -> Ranked:
        n = len(catalog)
        if n == 0:
            return Ranked([], 0.0, "no active listings yet")
        mask = self.candidate_mask(lead, catalog)
        s = np.where(mask, self.scores(lead, catalog), -np.inf)
        m = int(mask.sum())
        k = min(k, m)
        if k == 0:
            return Ranked([], 0.0, "no active listing matches the lead's filters")
        top = np.argpartition(-s, k - 1)[:k]
        top = top[np.argsort(-s[top], kind="stable")]
        items = []
        for rank, i in enumerate(top, start=1):
            i = int(i)
            items.append(
                {
                    "property_id": catalog.ids[i],
                    "rank": rank,
                    "score": round(float(s[i]), 6),
                    "reason": self._reason(lead, catalog, i),
                    "price": float(catalog.price[i]),
                    "bedrooms": int(catalog.beds[i]),
                    "property_type": catalog.type_of(i),
                    "city": catalog.city_of(i),
                }
            )
        evidence = lead.positive_weight
        confidence = round(0.1 + 0.8 * (1.0 - math.exp(-evidence / 10.0)), 3)
        return Ranked(items, confidence, self.explain(lead))

    def _reason(self, lead: LeadProfile, catalog: Catalog, i: int) -> str:
        parts = []
        t, c = catalog.type_of(i), catalog.city_of(i)
        if lead.price_w > 0:
            lo = math.exp(lead.price_mean - lead.price_spread())
            hi = math.exp(lead.price_mean + lead.price_spread())
            inside = lo <= catalog.price[i] <= hi
            parts.append(
                f"{money(catalog.price[i])} {'within' if inside else 'near'} your "
                f"{money(lo)}–{money(hi)} range"
            )
        if t and t == lead.top("type_w"):
            parts.append(f"a {t} like those you engage with")
        if c and c == lead.top("city_w"):
            parts.append(f"in {c}, your most viewed city")
        hits = self.recent_hits(i)
        if hits >= 1:
            parts.append(f"{hits:.0f} recent interactions from other leads")
        return "; ".join(parts) or "popular active listing"

    @staticmethod
    def explain(lead: LeadProfile) -> str:
        saves = lead.counts.get("property_saved", 0)
        t, c, beds = lead.top("type_w"), lead.top("city_w"), lead.top("beds_w")
        center = lead.price_center()
        if center is None:
            return "new lead: popular active listings" + (
                " within your filters" if lead.filters else ""
            )
        what = f"{beds}-bed {t}s" if beds and t else (f"{t}s" if t else "listings")
        where = f" in {c}" if c else ""
        lead_in = f"you saved {saves} " if saves else "you engaged with "
        return f"{lead_in}{what}{where} around {money(center)}"
