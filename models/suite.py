"""All recommendation models together, the hybrid that blends them, ranking and explanations.

Models (each learns on every event that names a listing):

- ``popularity``: all-time positive weight per listing (a baseline);
- ``recent_popularity``: the same with a 7-day half-life (a baseline);
- ``itemitem``: co-occurrence among leads' recent positive listings (``itemitem.py``);
- ``mf``: online matrix factorisation over implicit feedback, pairwise with sampled
  negatives (``collaborative.py``);
- ``content``: attribute and description vectors against the lead's decayed profile
  (``content.py``);
- ``hybrid``: a weighted sum of the models' scores, each standardised over the candidate
  listings, with weights that follow how much is known: popularity dominates for a new
  lead, content and item-to-item as soon as it engaged with a few listings, matrix
  factorisation once it has enough observations; a listing nobody engaged with yet gets
  its score from content alone (cold start).

Ranking covers active listings that pass the lead's filters, minus what it rejected,
saved or booked: one vectorised pass over contiguous arrays per model.

>>> from datetime import datetime, UTC
>>> from leadstream.contract.events import make_event, parse_listing
>>> from leadstream.features.profile import LeadProfile, update
>>> from leadstream.models.catalog import Catalog
>>> cat, suite = Catalog(), ModelSuite(seed=1)
>>> for pid, price, city in [("A", 300e3, "Austin"), ("B", 900e3, "Denver"),
...                          ("C", 310e3, "Austin")]:
...     row = cat.upsert(parse_listing(('{"property_id":"%s","status":"active","price":%d,'
...         '"bedrooms":2,"bathrooms":1,"property_type":"condo","city":"%s"}'
...         % (pid, price, city)).encode()))
...     suite.on_listing(cat, row, {"description": ""})
>>> lead = LeadProfile()
>>> ev = make_event("property_saved", event_id="e1", lead_id="L", session_id="s",
...                 timestamp=datetime(2026, 3, 1, tzinfo=UTC), property_id="A")
>>> suite.learn_one(cat, "L", lead, ev); update(lead, ev, cat.attributes("A"))
>>> rec = suite.recommend(cat, "L", lead, k=2)
>>> [it["property_id"] for it in rec.items]   # A is saved; C is the Austin condo at A's price
['C', 'B']
>>> rec.explanation
'you saved 1 two-bed condo around $300k in Austin'
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from river import base

from leadstream.contract.events import CONTENT_SIGNALS, direction_of, feedback_weight
from leadstream.features.profile import LeadProfile
from leadstream.models.catalog import TYPE_CODE, Catalog, money
from leadstream.models.collaborative import CollaborativeModel
from leadstream.models.content import BLOCKS, ContentModel
from leadstream.models.itemitem import ItemItemModel
from leadstream.models.scoring import LeadScorer

SUITE_VERSION = "hybrid-1"
MODELS = ("popularity", "recent_popularity", "itemitem", "mf", "content", "hybrid")
_COMPONENTS = ("recent_popularity", "content", "itemitem", "mf")
#: the explanation of an empty list: the lead's filters leave no active listing
NO_MATCH = "no active listing matches the lead's filters"

NUMBER_WORDS = {0: "studio", 1: "one", 2: "two", 3: "three", 4: "four", 5: "five", 6: "six"}
_BLOCK_NAMES = list(BLOCKS)


@dataclass
class Ranked:
    items: list[dict]
    confidence: float
    explanation: str
    model_version: str = SUITE_VERSION


def _standardise(S: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Each row of ``S`` minus its mean over the ``mask``ed columns, over their standard
    deviation (a row without spread over fewer than two candidates becomes 0).

    >>> Z = _standardise(np.array([[1.0, 2.0, 3.0, 100.0], [5.0, 5.0, 5.0, 0.0]]),
    ...                  np.array([True, True, True, False]))
    >>> Z.round(3).tolist()
    [[-1.225, 0.0, 1.225, 120.025], [0.0, 0.0, 0.0, 0.0]]
    """
    m = int(np.count_nonzero(mask))
    if m < 2:
        return np.zeros(S.shape, dtype=np.float64)
    w = mask.astype(np.float64)  # masked sums as matrix-vector products: no fancy indexing
    D = S - ((S @ w) / m)[:, None]
    sd = np.sqrt(((D * D) @ w) / m)
    flat = sd < 1e-12
    D /= np.where(flat, 1.0, sd)[:, None]
    D[flat] = 0.0
    return D


def _standardise_many(S: np.ndarray, M: np.ndarray) -> np.ndarray:
    """:func:`_standardise` of each lead's rows at once: ``S`` is (leads x components x
    listings), ``M`` (leads x listings) each lead's candidate mask.

    >>> S = np.array([[[1.0, 2.0, 3.0, 100.0], [5.0, 5.0, 5.0, 0.0]]])
    >>> M = np.array([[True, True, True, False]])
    >>> bool(np.allclose(_standardise_many(S, M)[0], _standardise(S[0], M[0])))
    True
    """
    w = M.astype(np.float64)[:, :, None]  # (leads x listings x 1)
    m = w.sum(axis=1)  # (leads x 1)
    safe = np.maximum(m, 1.0)[:, :, None]
    D = S - np.matmul(S, w) / safe
    sd = np.sqrt(np.matmul(D * D, w) / safe)
    flat = sd < 1e-12
    D /= np.where(flat, 1.0, sd)
    D[np.broadcast_to(flat, D.shape)] = 0.0
    D[(m[:, 0] < 2)] = 0.0
    return D


class ModelSuite(base.Base):
    """Every model, learning from the same events; ``recommend`` with any of them."""

    def __init__(self, seed: int = 42, n_factors: int = 32, negatives: int = 24,
                 half_life: float = 7 * 86_400.0, w_popularity: float = 0.5,
                 w_content: float = 2.0, w_itemitem: float = 1.0, w_mf: float = 1.0,
                 feedback_every: int = 10, adapt: float = 1.0):
        self.seed = seed
        self.n_factors = n_factors
        self.negatives = negatives
        self.half_life = half_life
        self.w_popularity = w_popularity
        self.w_content = w_content
        self.w_itemitem = w_itemitem
        self.w_mf = w_mf
        self.feedback_every = feedback_every
        self.adapt = adapt
        self._fb_tick = 0
        # online reliability of each component: exponentially weighted hits@10 / trials
        self.reliability = {name: [0.0, 0.0] for name in _COMPONENTS}
        self.mf = CollaborativeModel(n_factors=n_factors, negatives=negatives, seed=seed)
        self.content = ContentModel()
        self.itemitem = ItemItemModel()
        self.scorer = LeadScorer()
        self.pop = np.zeros(0)  # all-time positive weight
        self.recent = np.zeros(0)  # forward-decayed positive weight (origin t0)
        self.t0: float | None = None
        self.t_max = 0.0
        self.events_learned = 0

    # ---- learning -------------------------------------------------------------------
    def _ensure(self, n: int) -> None:
        if n > len(self.pop):
            cap = max(n, 2 * len(self.pop), 1024)
            for name in ("pop", "recent"):
                old = getattr(self, name)
                new = np.zeros(cap)
                new[: len(old)] = old
                setattr(self, name, new)

    def on_listing(self, catalog: Catalog, row: int, extra: dict | None = None) -> None:
        """A listing was upserted at ``row`` (``extra``: description, amenities)."""
        a = catalog.attributes(catalog.ids[row])
        if a is not None:
            self.content.upsert(row, {**a, **(extra or {})})

    def learn_one(self, catalog: Catalog, lead_id: str, profile: LeadProfile, event) -> None:
        """Learn from one applied event; ``profile`` is the lead's state *before* it."""
        self.events_learned += 1
        pid = event.property_id
        if event.event_type in CONTENT_SIGNALS:
            self._looked_for(catalog, lead_id, event)
        if pid is None:
            return
        w = feedback_weight(event.event_type, direction_of(event))
        if w == 0:
            return
        row = catalog.index_of(pid)
        ts = event.timestamp.timestamp()
        self._ensure(row + 1)
        if w > 0 and self.feedback_every:
            self._fb_tick += 1
            if self._fb_tick >= self.feedback_every:
                self._fb_tick = 0
                self._feedback(catalog, lead_id, profile, row)
        if w > 0:
            self.pop[row] += w
            if self.t0 is None:
                self.t0 = ts
            if (ts - self.t0) / self.half_life > 200:
                self.recent *= 2.0 ** (-(ts - self.t0) / self.half_life)
                self.t0 = ts
            self.recent[row] += w * 2.0 ** ((ts - self.t0) / self.half_life)
            self.t_max = max(self.t_max, ts)
        recent = self._recent_rows(catalog, profile)
        self.itemitem.learn_one(recent, row, w)
        pool = catalog.active_rows()
        if len(pool) == 0:  # no catalog (offline replay): sample among every listing seen
            pool = np.arange(len(catalog))
        self.mf.learn_one(lead_id, row, pid, w, pool, catalog.ids)
        self.content.learn_one(lead_id, row, w, ts)

    def _looked_for(self, catalog: Catalog, lead_id: str, event) -> None:
        """A search or a map view: what the lead looks for, into its content profile (the
        types, cities, bedrooms and terms a query names; the location of the active
        listings inside a map area)."""
        payload = event.payload
        if event.event_type == "search_performed":
            vec = self.content.query_vector(payload.query or "", catalog.cities)
        else:
            b = payload.bbox
            n = len(catalog)
            inside = (catalog.active[:n] & (catalog.lat[:n] >= b.min_lat)
                      & (catalog.lat[:n] <= b.max_lat) & (catalog.lon[:n] >= b.min_lon)
                      & (catalog.lon[:n] <= b.max_lon))
            vec = self.content.area_vector(np.flatnonzero(inside))
        if vec is not None:
            self.content.learn_vector(lead_id, vec, CONTENT_SIGNALS[event.event_type],
                                      event.timestamp.timestamp())

    def _feedback(self, catalog: Catalog, lead_id: str, profile: LeadProfile, row: int) -> None:
        """Test-then-train for the blend: would each component have ranked this listing in
        the lead's top 10? The hybrid leans on the components that keep being right."""
        if row >= len(catalog):
            return
        mask = self.candidate_mask(catalog, profile, include_unlisted=True)
        if not mask[row]:
            return
        for name in _COMPONENTS:
            s = self.component_scores(name, catalog, lead_id, profile)
            if s is None:
                continue
            s = np.asarray(s[: len(mask)], dtype=np.float64)
            hit = float(np.count_nonzero(s[mask] > s[row]) < 10)
            r = self.reliability[name]
            r[0] = 0.99 * r[0] + hit
            r[1] = 0.99 * r[1] + 1.0

    def blend_factors(self) -> dict[str, float]:
        """Each component's weight factor from its online reliability (1.0 until known)."""
        rates = {n: (h + 1.0) / (t + 2.0) for n, (h, t) in self.reliability.items() if t >= 20}
        if len(rates) < 2 or not self.adapt:
            return {n: 1.0 for n in _COMPONENTS}
        mean = sum(rates.values()) / len(rates)
        return {n: (rates[n] / mean) ** self.adapt if n in rates else 1.0 for n in _COMPONENTS}

    def forget(self, lead_id: str) -> None:
        """Drop a lead's per-lead model state (idle-lead expiry)."""
        self.mf.forget(lead_id)
        self.content.forget(lead_id)

    @staticmethod
    def _recent_rows(catalog: Catalog, profile: LeadProfile) -> list[tuple[int, float]]:
        out = []
        for pid, w in profile.recent_pos:
            i = catalog.index.get(pid)
            if i is not None:
                out.append((i, w))
        return out

    # ---- scoring --------------------------------------------------------------------
    def candidate_mask(self, catalog: Catalog, lead: LeadProfile,
                       include_unlisted: bool = False) -> np.ndarray:
        """Active listings passing the lead's filters, minus rejected, saved, booked.

        ``include_unlisted``: also rows only seen in events (offline evaluation without a
        catalog file)."""
        n = len(catalog)
        mask = catalog.active[:n].copy()
        if include_unlisted:
            mask |= ~catalog.known[:n]
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
            # a lookup table per code, cheaper than np.isin; its last slot, never set,
            # is where an unknown row's code -1 looks
            if f.get("property_types"):
                ok = np.zeros(len(TYPE_CODE) + 1, dtype=bool)
                ok[[TYPE_CODE[t] for t in f["property_types"]]] = True
                mask &= ok[catalog.type_code[:n]]
            if f.get("cities"):
                ok = np.zeros(len(catalog.cities) + 1, dtype=bool)
                ok[[catalog._city_code[c] for c in f["cities"] if c in catalog._city_code]] = True
                mask &= ok[catalog.city_code[:n]]
        for excluded in (lead.rejected, lead.saved, lead.booked):
            for pid in excluded:
                i = catalog.index.get(pid)
                if i is not None and i < n:
                    mask[i] = False
        return mask

    def _recent_pop(self, n: int) -> np.ndarray:
        self._ensure(n)
        if self.t0 is None:
            return self.recent[:n]
        return self.recent[:n] * 2.0 ** (-(self.t_max - self.t0) / self.half_life)

    def component_scores(self, name: str, catalog: Catalog, lead_id: str,
                         lead: LeadProfile) -> np.ndarray | None:
        n = len(catalog)
        if name == "popularity":
            self._ensure(n)
            return np.log1p(self.pop[:n])
        if name == "recent_popularity":
            return np.log1p(self._recent_pop(n))
        if name == "itemitem":
            return self.itemitem.scores(self._recent_rows(catalog, lead), n)
        if name == "mf":
            return self.mf.scores(lead_id, n)
        if name == "content":
            return self.content.scores(lead_id, n)
        raise ValueError(f"unknown model {name!r}")

    def hybrid_parts(self, catalog: Catalog, lead_id: str, lead: LeadProfile,
                     mask: np.ndarray, comps: dict | None = None,
                     overrides: dict | None = None) -> dict[str, tuple[float, np.ndarray]]:
        """The weighted, standardised component scores the hybrid adds up."""
        n = len(catalog)
        names, ws, rows = self._hybrid_rows(catalog, lead_id, lead, comps, overrides)
        if not names:
            return {}
        Z = _standardise(np.array(rows, dtype=np.float64), mask)  # all components at once
        if "mf" in names:  # listings nobody engaged with have untrained factors
            self.mf._ensure(n)
            j = names.index("mf")
            Z[j] = np.where(self.mf.support[:n] > 0, Z[j], 0.0)
        return {name: (w, Z[j]) for j, (name, w) in enumerate(zip(names, ws, strict=True))}

    def _hybrid_rows(self, catalog: Catalog, lead_id: str, lead: LeadProfile,
                     comps: dict | None, overrides: dict | None,
                     factors: dict | None = None) -> tuple[list, list, list]:
        """The hybrid's components for one lead: names, weights and raw score rows (the
        components with a positive weight and a signal for the lead)."""
        n = len(catalog)
        evidence = lead.n_positive
        recent = len(lead.recent_pos)
        f = factors if factors is not None else self.blend_factors()
        over = overrides or {}

        def w(name: str) -> float:
            return over.get(name, getattr(self, name))

        weights = {
            "recent_popularity": f["recent_popularity"] * w("w_popularity") * 1.5
            / (1.0 + evidence / 2.0),
            "content": f["content"] * w("w_content") * min(1.0, 0.4 + evidence / 5.0),
            "itemitem": f["itemitem"] * w("w_itemitem") * 0.8 * min(1.0, recent / 3.0),
            "mf": f["mf"] * w("w_mf") * min(1.0, self.mf.lead_support.get(lead_id, 0) / 20.0),
        }
        names, ws, rows = [], [], []
        for name, w in weights.items():
            if w <= 0:
                continue
            s = (comps[name] if comps is not None
                 else self.component_scores(name, catalog, lead_id, lead))
            if s is None:
                continue
            names.append(name)
            ws.append(w)
            rows.append(s[:n])
        return names, ws, rows

    def _blend(self, parts: dict, n: int) -> np.ndarray:
        """The hybrid: weighted standardised components plus a small popularity prior that
        breaks ties among listings no model knows about."""
        total = 1e-3 * np.log1p(self._recent_pop(n))
        for w, z in parts.values():
            total = total + w * z
        return total

    def scores(self, name: str, catalog: Catalog, lead_id: str, lead: LeadProfile,
               mask: np.ndarray, parts: dict | None = None,
               overrides: dict | None = None) -> np.ndarray:
        """One model's scores over every row; for the hybrid, ``parts`` (a dict) receives
        the weighted components and ``overrides`` replaces weight scales."""
        n = len(catalog)
        if name == "hybrid":
            found = self.hybrid_parts(catalog, lead_id, lead, mask, overrides=overrides)
            if parts is not None:
                parts.update(found)
            return self._blend(found, n)
        s = self.component_scores(name, catalog, lead_id, lead)
        if s is None:  # the model knows nothing about this lead: fall back to popularity
            s = 1e-3 * np.log1p(self._recent_pop(n))
        return np.asarray(s[:n], dtype=np.float64)

    def all_scores(self, catalog: Catalog, lead_id: str, lead: LeadProfile,
                   mask: np.ndarray, names=MODELS) -> dict[str, np.ndarray]:
        """Scores of several models at once, each component computed once."""
        n = len(catalog)
        prior = 1e-3 * np.log1p(self._recent_pop(n))
        comps = {name: self.component_scores(name, catalog, lead_id, lead)
                 for name in MODELS if name != "hybrid"}
        out = {name: np.asarray(comps[name][:n], dtype=np.float64)
               if comps[name] is not None else prior
               for name in names if name != "hybrid"}
        if "hybrid" in names:
            out["hybrid"] = self._blend(self.hybrid_parts(catalog, lead_id, lead, mask, comps), n)
        return out

    # ---- ranking --------------------------------------------------------------------
    def top_k(self, name: str, catalog: Catalog, lead_id: str, lead: LeadProfile, k: int = 10,
              include_unlisted: bool = False, parts: dict | None = None,
              overrides: dict | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(top rows best first, their scores, the candidate mask).

        With ``parts`` (a dict) and the hybrid, the weighted components are left in it."""
        mask = self.candidate_mask(catalog, lead, include_unlisted)
        m = int(np.count_nonzero(mask))
        k = min(k, m)
        if k == 0:
            return np.zeros(0, dtype=np.int64), np.zeros(0), mask
        s = np.where(mask, self.scores(name, catalog, lead_id, lead, mask, parts, overrides),
                     -np.inf)
        top = np.argpartition(-s, k - 1)[:k]
        top = top[np.argsort(-s[top], kind="stable")]
        return top, s[top], mask

    def recommend(self, catalog: Catalog, lead_id: str, lead: LeadProfile, k: int = 10,
                  model: str = "hybrid", overrides: dict | None = None) -> Ranked:
        """Top ``k`` with ``model``; ``overrides``: hybrid weights for this call (A/B arms)."""
        if len(catalog) == 0:
            return Ranked([], 0.0, "no active listings yet")
        parts: dict = {}
        top, scores, mask = self.top_k(model, catalog, lead_id, lead, k, parts=parts,
                                       overrides=overrides)
        if len(top) == 0:
            return Ranked([], 0.0, NO_MATCH)
        return self._ranked(catalog, lead_id, lead, top, scores, parts, model)

    def recommend_many(self, catalog: Catalog, requests: list, k: int = 10) -> list[Ranked]:
        """:meth:`recommend` for several leads at once: ``requests`` holds ``(lead_id,
        profile, model, overrides)``; the hybrid's standardisation, blend and top-k run
        over all its leads in one pass of array operations over the catalog (one row per
        lead) instead of one pass per lead. Other models are ranked one lead at a time.
        Each result is the one :meth:`recommend` gives (the same items, scores to 6 places
        and reasons; summation order may differ in the last bits of a score)."""
        out: list[Ranked | None] = [None] * len(requests)
        n = len(catalog)
        for i, (lead_id, lead, model, over) in enumerate(requests):
            if model != "hybrid" or n == 0:
                out[i] = self.recommend(catalog, lead_id, lead, k, model, over)
        hybrid = [i for i, r in enumerate(out) if r is None]
        if not hybrid:
            return out
        order = list(_COMPONENTS)
        L, C = len(hybrid), len(order)
        M = np.zeros((L, n), dtype=bool)
        S = np.zeros((L, C, n))
        W = np.zeros((L, C))  # 0: the component is not part of that lead's blend
        factors = self.blend_factors()
        for j, i in enumerate(hybrid):
            lead_id, lead, _, over = requests[i]
            M[j] = self.candidate_mask(catalog, lead)
            names, ws, rows = self._hybrid_rows(catalog, lead_id, lead, None, over, factors)
            for name, w, row in zip(names, ws, rows, strict=True):
                c = order.index(name)
                W[j, c] = w
                S[j, c] = row
        Z = _standardise_many(S, M)
        self.mf._ensure(n)
        c_mf = order.index("mf")
        Z[:, c_mf] = np.where(self.mf.support[:n] > 0, Z[:, c_mf], 0.0)
        total = np.broadcast_to(1e-3 * np.log1p(self._recent_pop(n)), (L, n)).copy()
        present = W != 0
        for c in range(C):  # recommend's order of addition (an absent component adds 0)
            total += W[:, c, None] * Z[:, c]
        s = np.where(M, total, -np.inf)
        for j, i in enumerate(hybrid):
            lead_id, lead, _, _ = requests[i]
            m = int(np.count_nonzero(M[j]))
            kk = min(k, m)
            if kk == 0:
                out[i] = Ranked([], 0.0, NO_MATCH)
                continue
            row = s[j]
            top = np.argpartition(-row, kk - 1)[:kk]
            top = top[np.argsort(-row[top], kind="stable")]
            parts = {order[c]: (float(W[j, c]), Z[j, c]) for c in range(C) if present[j, c]}
            out[i] = self._ranked(catalog, lead_id, lead, top, row[top], parts, "hybrid")
        return out

    def _ranked(self, catalog: Catalog, lead_id: str, lead: LeadProfile, top: np.ndarray,
                scores: np.ndarray, parts: dict, model: str) -> Ranked:
        """The explained list of ranked ``top`` rows."""
        items = []
        why = self.reasons(catalog, lead_id, lead, top, parts)
        for rank, (i, sc) in enumerate(zip(top.tolist(), scores.tolist(), strict=True), start=1):
            items.append({
                "property_id": catalog.ids[i],
                "rank": rank,
                "score": round(sc, 6),
                "reason": why[rank - 1],
                "price": float(catalog.price[i]),
                "bedrooms": int(catalog.beds[i]),
                "property_type": catalog.type_of(i),
                "city": catalog.city_of(i),
            })
        return Ranked(items, self.confidence(lead, scores, parts), explain(lead),
                      f"{SUITE_VERSION}:{model}")

    @staticmethod
    def confidence(lead: LeadProfile, top_scores: np.ndarray, parts: dict) -> float:
        """How sure the ranking is, 0..1: evidence about the lead, models agreeing, margin.

        ``0.1 + 0.85 * (1 - exp(-positives / 8)) * (0.5 + 0.5 * share of models with signal)``
        """
        evidence = 1.0 - math.exp(-lead.n_positive / 8.0)
        coverage = len(parts) / 4.0 if parts else 0.25
        return round(0.1 + 0.85 * evidence * (0.5 + 0.5 * min(coverage, 1.0)), 3)

    # ---- explanations -----------------------------------------------------------------
    def reasons(self, catalog: Catalog, lead_id: str, lead: LeadProfile, rows: np.ndarray,
                parts: dict) -> list[str]:
        """Why each of ``rows`` is recommended: the (at most two) hybrid components adding
        most to its score, in words; its popularity when no component adds anything.
        ``parts``: the weighted components ``hybrid_parts`` returned for this ranking."""
        rows = np.asarray(rows, dtype=np.int64)
        names = list(parts)
        contrib = (np.array([w * z[rows] for w, z in parts.values()]) if names
                   else np.zeros((0, len(rows))))
        shares = self.content.importances(lead_id, rows) if "content" in parts else None
        ctx = {
            "recent": self._recent_rows(catalog, lead) if "itemitem" in parts else [],
            "shares": shares,  # and each row's blocks, largest share first
            "order": np.argsort(-shares, axis=1, kind="stable")[:, :3].tolist()
            if shares is not None else None,
            "week": self._recent_pop(len(catalog)) if "recent_popularity" in parts else None,
            "described": {},
        }
        # per row, the two largest positive contributions (components in ``parts`` order
        # on a tie), as component indices
        top2 = np.argsort(-contrib, axis=0, kind="stable")[:2].T.tolist()
        positive = (contrib > 0).T.tolist()
        out = []
        for j, i in enumerate(rows.tolist()):
            texts = [t for a in top2[j] if positive[j][a]
                     if (t := self._reason_text(names[a], catalog, i, j, ctx))]
            if texts:
                out.append("; ".join(texts))
            else:
                hits = self.pop[i] if i < len(self.pop) else 0.0
                out.append(f"popular with other leads ({hits:.0f} interactions)" if hits >= 1
                           else "a new active listing")
        return out

    def _reason_text(self, name: str, catalog: Catalog, i: int, j: int,
                     ctx: dict) -> str | None:
        if name == "itemitem":
            best = self.itemitem.best_reason(ctx["recent"], i)
            if best is None:
                return None
            described = ctx["described"]
            if best[0] not in described:
                described[best[0]] = catalog.describe(catalog.ids[best[0]])
            return f"leads who liked {described[best[0]]} also engaged with this"
        if name == "mf":
            return "leads with a taste like yours engaged with it"
        if name == "recent_popularity":
            return f"popular this week ({ctx['week'][i]:.0f} weighted interactions)"
        if name == "content":
            if ctx["shares"] is None:
                return None
            share = ctx["shares"][j]
            words = []
            for b in ctx["order"][j]:
                if share[b] < 0.15:
                    break
                block = _BLOCK_NAMES[b]
                if block == "price":
                    words.append(f"{money(catalog.price[i])} is in your price range")
                elif block == "type":
                    words.append(f"a {catalog.type_of(i)} like those you engage with")
                elif block == "city":
                    words.append(f"in {catalog.city_of(i)}, where you look")
                elif block == "bedrooms":
                    words.append(f"{int(catalog.beds[i])} bedrooms, as you prefer")
                elif block == "text":
                    words.append("described like listings you liked")
                elif block in ("size", "bathrooms"):
                    words.append(f"the {block} you go for")
            return ", ".join(words) if words else None
        return None


def explain(lead: LeadProfile) -> str:
    """The lead-level explanation, from the lead's own behaviour."""
    saves = lead.counts.get("property_saved", 0)
    t, c, beds = lead.top("type_w"), lead.top("city_w"), lead.top("beds_w")
    center = lead.price_center()
    if center is None:
        return "new lead: popular active listings" + (" within your filters" if lead.filters
                                                       else "")
    plural = "" if saves == 1 else "s"
    beds_word = NUMBER_WORDS.get(int(beds), beds) if beds is not None else None
    if t:
        what = f"{beds_word}-bed {t}{plural}" if beds_word and beds_word != "studio" else (
            f"{t}{plural}")
    else:
        what = "listings"
    where = f" in {c}" if c else ""
    if saves:
        return f"you saved {saves} {what} around {money(center)}{where}"
    return f"you engaged with {what.rstrip('s') + 's' if t else what} around {money(center)}{where}"
