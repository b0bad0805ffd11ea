"""All recommendation models together, the hybrid that blends them, ranking and explanations.

The models are the components of ``models/registry.py`` (each a module of
``models/components/`` implementing ``models/component.py``'s protocol; the suite
iterates the list and names none of them). Today (each learns on every event that names
a listing):

- ``popularity``: all-time positive weight per listing (a baseline);
- ``recent_popularity``: the same with a 7-day half-life (a baseline);
- ``itemitem``: co-occurrence among leads' recent positive listings (``itemitem.py``);
- ``mf``: online matrix factorisation over implicit feedback, pairwise with sampled
  negatives (``collaborative.py``);
- ``content``: attribute and description vectors against the lead's decayed profile
  (``content.py``);
- ``hybrid``: a weighted sum of the models' scores, each standardised over the head of
  its own ranking (its ``TOP`` best candidate listings), with weights that follow how
  much is known: popularity dominates for a new lead, content and item-to-item as soon
  as it engaged with a few listings, matrix factorisation once it has enough
  observations; a listing nobody engaged with yet gets its score from content alone
  (cold start).

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

from leadstream.contract.events import direction_of, feedback_weight
from leadstream.features.profile import LeadProfile
from leadstream.models import registry
from leadstream.models.catalog import TYPE_CODE, Catalog, money
from leadstream.models.component import Component, Observed
from leadstream.models.ease import REFIT_EVERY
from leadstream.models.scoring import LeadScorer

SUITE_VERSION = "hybrid-1"
#: every model ``recommend`` ranks with: the registry's components, then the hybrid
MODELS = (*registry.NAMES, "hybrid")
#: the explanation of an empty list: the lead's filters leave no active listing
NO_MATCH = "no active listing matches the lead's filters"

NUMBER_WORDS = {0: "studio", 1: "one", 2: "two", 3: "three", 4: "four", 5: "five", 6: "six"}


@dataclass
class Ranked:
    items: list[dict]
    confidence: float
    explanation: str
    model_version: str = SUITE_VERSION


#: the hybrid standardises each component's scores over its own top ``TOP`` candidates
TOP = 100


def rank_of(scores: np.ndarray, row: int, k: int) -> int | None:
    """0-based rank of ``row`` if it is in the top ``k`` of ``scores`` (ties count against
    it); None otherwise, and for a score that is not finite (masked, or a diverged
    model's NaN, which compares false with everything and would otherwise rank first).

    >>> rank_of(np.array([0.1, 0.9, 0.5]), 2, 2), rank_of(np.array([np.nan, 1.0]), 0, 2)
    (1, None)
    """
    s = scores[row]
    if not np.isfinite(s):
        return None
    better = int(np.count_nonzero(scores > s))
    return better if better < k else None


def _standardise(S: np.ndarray, mask: np.ndarray, top: int = TOP) -> np.ndarray:
    """Each row of ``S`` (in place) minus the mean of its ``top`` highest scores among the
    ``mask``ed columns, over their standard deviation (a row without spread there, or with
    fewer than two candidates, becomes 0). Over the head of each component's ranking, not over every
    candidate: what a component says about its best listings is what the blend compares,
    so a component whose head stands out from its tail no longer drowns the others.

    >>> Z = _standardise(np.array([[1.0, 2.0, 3.0, 100.0], [5.0, 5.0, 5.0, 0.0]]),
    ...                  np.array([True, True, True, False]), top=2)
    >>> Z.round(3).tolist()
    [[-3.0, -1.0, 1.0, 195.0], [0.0, 0.0, 0.0, 0.0]]
    """
    return _standardise_many(S[None], mask[None], top)[0]


def _standardise_many(S: np.ndarray, M: np.ndarray, top: int = TOP) -> np.ndarray:
    """:func:`_standardise` of each lead's rows at once: ``S`` is (leads x components x
    listings), ``M`` (leads x listings) each lead's candidate mask. ``S`` (float64) is
    standardised in place and returned: a batch's copy of it would be a fresh array of
    several MB, whose page faults cost more than the arithmetic.

    >>> S = np.array([[[1.0, 2.0, 3.0, 100.0], [5.0, 5.0, 5.0, 0.0]]])
    >>> M = np.array([[True, True, True, False]])
    >>> Z = _standardise_many(S, M, top=3)  # every candidate: the plain z-score
    >>> Z[0, 0, :3].round(3).tolist(), Z[0, 1].tolist()
    ([-1.225, 0.0, 1.225], [0.0, 0.0, 0.0, 0.0])
    """
    n = S.shape[2]
    t = min(top, n)
    if t < 1:
        S[...] = 0.0
        return S
    buf = np.negative(S, dtype=np.float32)  # negated: the head sorts first
    np.copyto(buf, np.float32(np.inf), where=~M[:, None, :])
    if t < n:
        buf.partition(t - 1, axis=2)  # in place
    head = buf[:, :, :t]
    ok = head < np.inf
    cnt = np.maximum(ok.sum(axis=2, keepdims=True), 1)
    head = np.where(ok, head, 0.0)
    mu = -head.sum(axis=2, keepdims=True) / cnt
    dev = np.where(ok, head + mu, 0.0)
    sd = np.sqrt((dev * dev).sum(axis=2, keepdims=True) / cnt)
    flat = sd < 1e-12
    S -= mu
    S /= np.where(flat, 1.0, sd)
    S[np.broadcast_to(flat, S.shape)] = 0.0
    S[M.sum(axis=1) < 2] = 0.0
    return S


class ModelSuite(base.Base):
    """Every model component (``models/registry.py``), learning from the same events;
    ``recommend`` with any of them or with the hybrid that blends them.

    ``weights``: the hybrid's weight scales by weight name (``w_content=3.0``), each
    component's default for the others. ``suite.<component name>`` is that component's
    underlying model (``suite.mf``: the ``CollaborativeModel``)."""

    def __init__(self, seed: int = 42, n_factors: int = 32, negatives: int = 24,
                 half_life: float = 7 * 86_400.0, feedback_every: int = 10,
                 adapt: float = 1.0, refit_every: int = REFIT_EVERY, **weights: float):
        unknown = registry.unknown_weights(weights)
        if unknown:
            raise TypeError(f"unknown hybrid weight(s) {unknown}; "
                            f"known: {sorted(registry.WEIGHTS)}")
        self.seed = seed
        self.n_factors = n_factors
        self.negatives = negatives
        self.half_life = half_life
        self.feedback_every = feedback_every
        self.adapt = adapt
        self.refit_every = refit_every
        self.weights = {**registry.WEIGHTS, **weights}
        self._fb_tick = 0
        self.refit_inline = True
        self.components = {c.name: c.create(self) for c in registry.COMPONENTS}
        # online reliability of each blended component: exponentially weighted hits@10 / trials
        self.reliability = {c.name: [0.0, 0.0] for c in registry.BLENDED}
        self.scorer = LeadScorer()
        self.events_learned = 0
        self._wire()

    def _wire(self) -> None:
        """The per-call lookups the hot path uses, from ``components``."""
        comps = self.components
        self._learners = list(comps.values())
        self._refitters = [c for c in self._learners
                           if type(c).refit_job is not Component.refit_job]
        self._signal_learners: dict[str, list] = {}
        for c in self._learners:
            for et in c.signals:
                self._signal_learners.setdefault(et, []).append(c)
        self._blended = [(comps[c.name], c.weight) for c in registry.BLENDED]
        self._prior_c = comps[registry.PRIOR]
        self._fallback_c = comps[registry.FALLBACK]

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        for k in ("_learners", "_refitters", "_signal_learners", "_blended", "_prior_c",
                  "_fallback_c", "refit_inline"):
            state.pop(k, None)
        return state

    def __setstate__(self, state: dict) -> None:
        """A snapshot of any version: one pickled before the registry (the models as
        attributes, ``w_*`` weights) is moved into components; a component the snapshot
        lacks starts empty, one no longer registered is dropped."""
        state = dict(state)
        old = state.pop("components", None) or {}
        weights = state.pop("weights", None) or {}
        for c in registry.BLENDED:
            if c.weight in state:  # before the registry: one attribute per weight
                weights.setdefault(c.weight, state.pop(c.weight))
        legacy = {c.name: got for c in registry.COMPONENTS
                  if c.name not in old and (got := c.from_legacy(state)) is not None}
        state.setdefault("refit_every", REFIT_EVERY)
        self.__dict__.update(state)
        self.refit_inline = True  # the runtime's choice, not the model's
        self.weights = {**registry.WEIGHTS, **weights}
        self.components = {c.name: old.get(c.name) or legacy.get(c.name) or c.create(self)
                           for c in registry.COMPONENTS}
        known = self.__dict__.get("reliability") or {}
        self.reliability = {c.name: known.get(c.name, [0.0, 0.0]) for c in registry.BLENDED}
        self._wire()

    def __getattr__(self, name: str):
        comps = self.__dict__.get("components")
        if comps is None or name not in comps:
            raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")
        comp = comps[name]
        return getattr(comp, "model", comp)

    # ---- learning -------------------------------------------------------------------
    def on_listing(self, catalog: Catalog, row: int, extra: dict | None = None) -> None:
        """A listing was upserted at ``row`` (``extra``: description, amenities)."""
        a = catalog.attributes(catalog.ids[row])
        if a is not None:
            attributes = {**a, **(extra or {})}
            for comp in self.components.values():
                comp.on_listing(catalog, row, attributes)

    def learn_one(self, catalog: Catalog, lead_id: str, profile: LeadProfile, event) -> None:
        """Learn from one applied event; ``profile`` is the lead's state *before* it."""
        self.events_learned += 1
        pid = event.property_id
        w = feedback_weight(event.event_type, direction_of(event)) if pid is not None else 0
        if w == 0:  # no listing to learn about: only the components this event type signals
            learners = self._signal_learners.get(event.event_type)
            if learners:
                obs = Observed(catalog, lead_id, profile, event, None, 0.0,
                               event.timestamp.timestamp())
                for comp in learners:
                    comp.learn(obs)
            return
        row = catalog.index_of(pid)
        if w > 0 and self.feedback_every:
            self._fb_tick += 1
            if self._fb_tick >= self.feedback_every:
                self._fb_tick = 0
                self._feedback(catalog, lead_id, profile, row)
        obs = Observed(catalog, lead_id, profile, event, row, w, event.timestamp.timestamp())
        for comp in self._learners:
            comp.learn(obs)
        if self.refit_inline and self._refitters:
            for job in self.refits():
                job.run()

    def refits(self) -> list:
        """The components' refits that are due (``Refit`` jobs). With ``refit_inline``
        (the default: an offline replay) ``learn_one`` runs them at once; a runtime that
        sets it False runs ``job.compute()`` where it likes (the worker: a thread) and
        then ``job.install(result)``."""
        return [job for c in self._refitters if (job := c.refit_job()) is not None]

    def _feedback(self, catalog: Catalog, lead_id: str, profile: LeadProfile, row: int) -> None:
        """Test-then-train for the blend: would each component have ranked this listing in
        the lead's top 10? The hybrid leans on the components that keep being right."""
        if row >= len(catalog):
            return
        mask = self.candidate_mask(catalog, profile, include_unlisted=True)
        if not mask[row]:
            return
        for comp, _ in self._blended:
            s = comp.scores(catalog, lead_id, profile)
            if s is None:
                continue
            s = np.asarray(s[: len(mask)], dtype=np.float64)
            hit = float(rank_of(np.where(mask, s, -np.inf), row, 10) is not None)
            r = self.reliability[comp.name]
            r[0] = 0.99 * r[0] + hit
            r[1] = 0.99 * r[1] + 1.0

    def blend_factors(self) -> dict[str, float]:
        """Each component's weight factor from its online reliability (1.0 until known)."""
        rates = {n: (h + 1.0) / (t + 2.0) for n, (h, t) in self.reliability.items() if t >= 20}
        if len(rates) < 2 or not self.adapt:
            return {n: 1.0 for n in self.reliability}
        mean = sum(rates.values()) / len(rates)
        return {n: (rates[n] / mean) ** self.adapt if n in rates else 1.0
                for n in self.reliability}

    def forget(self, lead_id: str) -> None:
        """Drop a lead's per-lead model state (idle-lead expiry)."""
        for comp in self.components.values():
            comp.forget(lead_id)

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

    def _prior(self, catalog: Catalog) -> np.ndarray:
        """The small popularity prior (``registry.PRIOR``'s scores, which need no lead)."""
        return 1e-3 * self._prior_c.scores(catalog, None, None)

    def component_scores(self, name: str, catalog: Catalog, lead_id: str,
                         lead: LeadProfile) -> np.ndarray | None:
        comp = self.components.get(name)
        if comp is None:
            raise ValueError(f"unknown model {name!r}")
        return comp.scores(catalog, lead_id, lead)

    def hybrid_parts(self, catalog: Catalog, lead_id: str, lead: LeadProfile,
                     mask: np.ndarray, comps: dict | None = None,
                     overrides: dict | None = None) -> dict[str, tuple[float, np.ndarray]]:
        """The weighted, standardised component scores the hybrid adds up."""
        n = len(catalog)
        found, ws, rows = self._hybrid_rows(catalog, lead_id, lead, comps, overrides)
        if not found:
            return {}
        Z = _standardise(np.array(rows, dtype=np.float64), mask)  # all components at once
        for j, comp in enumerate(found):
            ok = comp.trusted(n)  # e.g. listings nobody engaged with have untrained factors
            if ok is not None:
                Z[j] = np.where(ok, Z[j], 0.0)
        return {comp.name: (w, Z[j]) for j, (comp, w) in enumerate(zip(found, ws, strict=True))}

    def _weights(self, lead_id: str, lead: LeadProfile, overrides: dict | None,
                 factors: dict) -> list[float]:
        """Each blended component's weight for the lead (the evidence rules)."""
        over = overrides or {}
        weights = self.weights
        return [comp.weigh(factors[comp.name] * over.get(wname, weights[wname]), lead_id, lead)
                for comp, wname in self._blended]

    def _hybrid_rows(self, catalog: Catalog, lead_id: str, lead: LeadProfile,
                     comps: dict | None, overrides: dict | None,
                     factors: dict | None = None) -> tuple[list, list, list]:
        """The hybrid's components for one lead: the components, weights and raw score
        rows (those with a positive weight and a signal for the lead)."""
        n = len(catalog)
        f = factors if factors is not None else self.blend_factors()
        found, ws, rows = [], [], []
        for (comp, _), w in zip(self._blended, self._weights(lead_id, lead, overrides, f),
                                strict=True):
            if w <= 0:
                continue
            s = comps[comp.name] if comps is not None else comp.scores(catalog, lead_id, lead)
            if s is None:
                continue
            found.append(comp)
            ws.append(w)
            rows.append(s[:n])
        return found, ws, rows

    def _blend(self, parts: dict, catalog: Catalog) -> np.ndarray:
        """The hybrid: weighted standardised components plus a small popularity prior that
        breaks ties among listings no model knows about."""
        total = self._prior(catalog)
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
            return self._blend(found, catalog)
        s = self.component_scores(name, catalog, lead_id, lead)
        if s is None:  # the model knows nothing about this lead: fall back to popularity
            s = self._prior(catalog)
        return np.asarray(s[:n], dtype=np.float64)

    def all_scores(self, catalog: Catalog, lead_id: str, lead: LeadProfile,
                   mask: np.ndarray, names=MODELS) -> dict[str, np.ndarray]:
        """Scores of several models at once, each component computed once."""
        n = len(catalog)
        prior = self._prior(catalog)
        comps = {name: c.scores(catalog, lead_id, lead) for name, c in self.components.items()}
        out = {name: np.asarray(comps[name][:n], dtype=np.float64)
               if comps[name] is not None else prior
               for name in names if name != "hybrid"}
        if "hybrid" in names:
            out["hybrid"] = self._blend(self.hybrid_parts(catalog, lead_id, lead, mask, comps),
                                        catalog)
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
        lead) instead of one pass per lead, and each component scores its leads together
        (``scores_many``). Other models are ranked one lead at a time. Each result is the
        one :meth:`recommend` gives (the same items, scores to 6 places and reasons;
        summation order may differ in the last bits of a score)."""
        out: list[Ranked | None] = [None] * len(requests)
        n = len(catalog)
        for i, (lead_id, lead, model, over) in enumerate(requests):
            if model != "hybrid" or n == 0:
                out[i] = self.recommend(catalog, lead_id, lead, k, model, over)
        hybrid = [i for i, r in enumerate(out) if r is None]
        if not hybrid:
            return out
        blended = self._blended
        L, C = len(hybrid), len(blended)
        M = np.zeros((L, n), dtype=bool)
        S = np.zeros((L, C, n))
        W = np.zeros((L, C))  # 0: the component is not part of that lead's blend
        factors = self.blend_factors()
        for j, i in enumerate(hybrid):
            lead_id, lead, _, over = requests[i]
            M[j] = self.candidate_mask(catalog, lead)
            W[j] = self._weights(lead_id, lead, over, factors)
        for c, (comp, _) in enumerate(blended):
            js = np.flatnonzero(W[:, c] > 0).tolist()
            got = comp.scores_many(catalog, [requests[hybrid[j]][:2] for j in js])
            for j, s in zip(js, got, strict=True):
                if s is None:
                    W[j, c] = 0.0
                else:
                    S[j, c] = s[:n]
        W[W < 0] = 0.0
        Z = _standardise_many(S, M)
        for c, (comp, _) in enumerate(blended):
            ok = comp.trusted(n)
            if ok is not None:
                Z[:, c] = np.where(ok, Z[:, c], 0.0)
        total = np.broadcast_to(self._prior(catalog), (L, n)).copy()
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
            parts = {blended[c][0].name: (float(W[j, c]), Z[j, c])
                     for c in range(C) if present[j, c]}
            out[i] = self._ranked(catalog, lead_id, lead, top, row[top], parts, "hybrid")
        return out

    def _ranked(self, catalog: Catalog, lead_id: str, lead: LeadProfile, top: np.ndarray,
                scores: np.ndarray, parts: dict, model: str) -> Ranked:
        """The explained list of ranked ``top`` rows."""
        items = []
        why = self.reasons(catalog, lead_id, lead, top, parts)
        ids, attributes = catalog.ids, catalog.attributes
        for rank, (i, sc) in enumerate(zip(top.tolist(), scores.tolist(), strict=True), start=1):
            pid = ids[i]
            a = attributes(pid)  # cached per listing (None: a row only seen in events)
            items.append({
                "property_id": pid,
                "rank": rank,
                "score": round(sc, 6),
                "reason": why[rank - 1],
                "price": a["price"] if a else float(catalog.price[i]),
                "bedrooms": a["bedrooms"] if a else int(catalog.beds[i]),
                "property_type": a["property_type"] if a else catalog.type_of(i),
                "city": a["city"] if a else catalog.city_of(i),
            })
        return Ranked(items, self.confidence(lead, scores, parts), explain(lead),
                      f"{SUITE_VERSION}:{model}")

    def confidence(self, lead: LeadProfile, top_scores: np.ndarray, parts: dict) -> float:
        """How sure the ranking is, 0..1: evidence about the lead, models agreeing, margin.

        ``0.1 + 0.85 * (1 - exp(-positives / 8)) * (0.5 + 0.5 * share of the blended
        components with a signal)``, the share among the components that are fitted at
        all (EASE before its first refit is not)
        """
        evidence = 1.0 - math.exp(-lead.n_positive / 8.0)
        blended = max(1, sum(1 for comp, _ in self._blended if comp.fitted()))
        coverage = len(parts) / blended if parts else 1.0 / blended
        return round(0.1 + 0.85 * evidence * (0.5 + 0.5 * min(coverage, 1.0)), 3)

    # ---- explanations -----------------------------------------------------------------
    def reasons(self, catalog: Catalog, lead_id: str, lead: LeadProfile, rows: np.ndarray,
                parts: dict) -> list[str]:
        """Why each of ``rows`` is recommended: the (at most two) hybrid components adding
        most to its score, in words; ``registry.FALLBACK``'s words (its popularity) when
        no component adds anything. ``parts``: the weighted components ``hybrid_parts``
        returned for this ranking."""
        rows = np.asarray(rows, dtype=np.int64)
        names = list(parts)
        contrib = (np.array([w * z[rows] for w, z in parts.values()]) if names
                   else np.zeros((0, len(rows))))
        says: list = [None] * len(names)  # each explainer made when a row first needs it

        def say(a: int, j: int, i: int) -> str | None:
            fn = says[a]
            if fn is None:
                fn = says[a] = self.components[names[a]].explainer(catalog, lead_id, lead,
                                                                   rows)
            return fn(j, i)

        fallback = None
        # per row, the two largest positive contributions (components in ``parts`` order
        # on a tie), as component indices
        top2 = np.argsort(-contrib, axis=0, kind="stable")[:2].T.tolist()
        positive = (contrib > 0).T.tolist()
        out = []
        for j, i in enumerate(rows.tolist()):
            texts = [t for a in top2[j] if positive[j][a] if (t := say(a, j, i))]
            if texts:
                out.append("; ".join(texts))
            else:
                if fallback is None:
                    fallback = self._fallback_c.explainer(catalog, lead_id, lead, rows)
                out.append(fallback(j, i))
        return out


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
