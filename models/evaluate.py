"""Offline evaluation: replay an event file through the same model code, no broker.

Events are read from JSON lines in the project's event schema (historical timestamps
are fine: freshness rules belong to live ingestion), de-duplicated by ``event_id`` and
replayed in time order. Every model learns from every event, as the worker does.

- **prequential** (test, then train): at each positive event on a listing (positive
  implicit-feedback weight), each model ranks the listings for that lead *before*
  learning from the event; a hit is the event's listing in the top ``k``. Events on a
  listing the lead had already rejected, saved or booked are not scored (the live ranking
  excludes those listings).
- **leave-last-out**: each lead's last positive event is held out; the models learn from
  everything else, then rank once per lead.

Without a catalog file every listing seen in an event is a candidate (without
attributes: no content signal). Figures: HR@k, NDCG@k, catalog coverage (share of
candidate listings that appeared in some top-k) and events per second (learning plus
that model's ranking).
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import timedelta

import numpy as np
from river import metrics

from features import lead as F
from features.profile import LeadProfile, update
from leadstream.events import InvalidRecord, parse_event, parse_listing
from models.catalog import Catalog
from models.scoring import LABELS
from models.suite import MODELS, ModelSuite
from models.weights import feedback_weight


@dataclass
class _Acc:
    hits: int = 0
    ndcg: float = 0.0
    n: int = 0
    seconds: float = 0.0
    shown: set = field(default_factory=set)

    def add(self, rank: int | None) -> None:
        self.n += 1
        if rank is not None:
            self.hits += 1
            self.ndcg += 1.0 / math.log2(rank + 2)

    def figures(self) -> dict:
        return {"hr@10": round(self.hits / self.n, 4) if self.n else 0.0,
                "ndcg@10": round(self.ndcg / self.n, 4) if self.n else 0.0,
                "evaluated": self.n}


def load_events(lines: Iterable[bytes]) -> tuple[list, int]:
    """Parse JSON lines (historical data allowed); returns (events in time order, invalid)."""
    far = timedelta(days=365 * 200)
    events, bad, seen = [], 0, set()
    for raw in lines:
        raw = raw.strip()
        if not raw:
            continue
        try:
            ev = parse_event(raw, max_future_skew=far, max_age=far)
        except InvalidRecord:
            bad += 1
            continue
        if ev.event_id in seen:
            continue
        seen.add(ev.event_id)
        events.append(ev)
    events.sort(key=lambda e: e.timestamp)
    return events, bad


def load_catalog(lines: Iterable[bytes], suite: ModelSuite, catalog: Catalog) -> int:
    n = 0
    for raw in lines:
        raw = raw.strip()
        if not raw:
            continue
        try:
            listing = parse_listing(raw)
        except InvalidRecord:
            continue
        row = catalog.upsert(listing)
        suite.on_listing(catalog, row, {"description": listing.description,
                                        "amenities": listing.amenities})
        n += 1
    return n


def _rank_of(scores: np.ndarray, row: int, k: int) -> int | None:
    """0-based rank of ``row`` if it is in the top ``k`` (ties count against it)."""
    s = scores[row]
    if not np.isfinite(s):
        return None
    better = int(np.count_nonzero(scores > s))
    return better if better < k else None


def evaluate(events: list, catalog_lines: Iterable[bytes] | None = None, *,
             protocols: tuple[str, ...] = ("prequential",), k: int = 10, seed: int = 42,
             models: tuple[str, ...] = MODELS, suite_params: dict | None = None) -> dict:
    """Figures per model for the given protocols (see the module docstring)."""
    result: dict = {"events": len(events), "k": k, "models": {m: {} for m in models}}
    has_catalog = catalog_lines is not None
    for protocol in protocols:
        suite = ModelSuite(seed=seed, **(suite_params or {}))
        cat = Catalog()
        if has_catalog:
            result["catalog_listings"] = load_catalog(catalog_lines, suite, cat)
            catalog_lines = None if protocol == protocols[-1] else catalog_lines
        accs = {m: _Acc() for m in models}
        scores: list | None = [] if protocol == "prequential" else None
        learn_s = _replay(events, suite, cat, accs, k, protocol, not has_catalog, scores)
        if scores is not None:
            result["lead_scores"] = _score_figures(scores)
        n_candidates = max(int((cat.active | ~cat.known)[: len(cat)].sum()
                               if not has_catalog else cat.n_active), 1)
        for m, acc in accs.items():
            out = result["models"][m]
            out[protocol.replace("-", "_")] = acc.figures()
            if protocol == "prequential":
                out["coverage"] = round(len(acc.shown) / n_candidates, 4)
                out["events_per_second"] = round(len(events) / (learn_s + acc.seconds), 1)
    return result


def _score_figures(scores: list) -> dict:
    """Log loss and ROC AUC of the heuristic and the online scorer, prequentially."""
    out = {"labels": len(scores), "converted": sum(1 for y, _, _ in scores if y)}
    for i, name in ((1, "heuristic"), (2, "online")):
        ll, auc = metrics.LogLoss(), metrics.ROCAUC()
        for row in scores:
            p = min(max(row[i], 1e-6), 1 - 1e-6)
            ll.update(row[0], {True: p, False: 1 - p})
            auc.update(row[0], {True: p, False: 1 - p})
        both = 0 < out["converted"] < len(scores)
        out[name] = {"log_loss": round(ll.get(), 4) if scores else None,
                     "auc": round(auc.get(), 4) if both else None}
    return out


def _replay(events, suite: ModelSuite, cat: Catalog, accs: dict, k: int, protocol: str,
            unlisted: bool, scores: list | None = None) -> float:
    profiles: dict[str, LeadProfile] = {}
    feats: dict[str, F.LeadFeatures] = {}
    held: dict[str, int] = {}
    if protocol == "leave-last-out":
        for i, ev in enumerate(events):
            if ev.property_id and feedback_weight(ev.event_type,
                                                  getattr(ev.payload, "direction", None)) > 0:
                held[ev.lead_id] = i
    held_idx = set(held.values())
    learn_s = 0.0
    names = tuple(accs)
    for i, ev in enumerate(events):
        lead = profiles.get(ev.lead_id)
        if lead is None:
            lead = profiles[ev.lead_id] = LeadProfile()
        if i in held_idx:
            continue
        pid = ev.property_id
        if protocol == "prequential" and pid is not None:
            w = feedback_weight(ev.event_type, getattr(ev.payload, "direction", None))
            if w > 0:
                _score_one(suite, cat, ev.lead_id, lead, pid, accs, names, k, unlisted)
        t = time.perf_counter()
        listing = cat.attributes(pid) if pid is not None else None
        suite.learn_one(cat, ev.lead_id, lead, ev)
        update(lead, ev, listing)
        learn_s += time.perf_counter() - t
        if scores is not None:
            f = feats.setdefault(ev.lead_id, F.LeadFeatures())
            F.update(f, ev, listing, lateness=float("inf"))
            if ev.event_type == "outcome_recorded" and ev.payload.outcome in LABELS:
                y = LABELS[ev.payload.outcome]
                num = F.compute(f).numerical
                scorer = suite.scorer
                p_online = (scorer.probability(num, use_model=True)
                            if sum(scorer.labels.values()) else 0.5)
                scores.append((y, scorer.probability(num, use_model=False), p_online))
                scorer.learn_one(num, y)
    for lead_id, i in held.items():
        _score_one(suite, cat, lead_id, profiles[lead_id], events[i].property_id, accs, names,
                   k, unlisted)
    return learn_s


def _score_one(suite, cat, lead_id, lead, pid, accs, names, k, unlisted) -> None:
    if pid in lead.rejected or pid in lead.saved or pid in lead.booked:
        return
    row = cat.index.get(pid)
    t = time.perf_counter()
    mask = suite.candidate_mask(cat, lead, include_unlisted=unlisted)
    shared = time.perf_counter() - t
    if row is None or row >= len(mask) or not mask[row]:
        for name in names:  # a listing the models cannot rank yet: a miss for everyone
            accs[name].add(None)
        return
    t = time.perf_counter()
    all_scores = suite.all_scores(cat, lead_id, lead, mask, names)
    per_model = (time.perf_counter() - t) / len(names) + shared
    for name in names:
        t = time.perf_counter()
        s = np.where(mask, all_scores[name], -np.inf)
        acc = accs[name]
        acc.add(_rank_of(s, row, k))
        m = int(mask.sum())
        kk = min(k, m)
        top = np.argpartition(-s, kk - 1)[:kk] if kk else []
        acc.shown.update(int(x) for x in top)
        acc.seconds += per_model + time.perf_counter() - t


TUNE_GRID = {"w_popularity": (0.25, 0.5, 1.0), "w_content": (1.0, 2.0, 3.0),
             "w_itemitem": (0.5, 1.0, 2.0), "w_mf": (0.5, 1.0, 2.0)}


def tune(events: list, catalog_lines: list[bytes] | None, *, k: int = 10, seed: int = 42,
         rounds: int = 2) -> dict:
    """Coordinate search over the hybrid's weight scales, by prequential HR@k.

    Starts from the defaults and, ``rounds`` times, tries every value of one weight with
    the others fixed, keeping the best. Returns the best weights and every trial."""
    best = {name: ModelSuite()._get_params()[name] for name in TUNE_GRID}
    trials = []
    seen: dict[tuple, float] = {}

    def score(params):
        key = tuple(sorted(params.items()))
        if key in seen:
            return seen[key]
        r = evaluate(events, catalog_lines, k=k, seed=seed, models=("hybrid",),
                     suite_params=params)
        hr = r["models"]["hybrid"]["prequential"]["hr@10"]
        trials.append({**params, "hr@10": hr})
        seen[key] = hr
        return hr

    best_hr = score(best)
    for _ in range(rounds):
        for name, values in TUNE_GRID.items():
            for v in values:
                cand = {**best, name: v}
                hr = score(cand)
                if hr > best_hr:
                    best, best_hr = cand, hr
    return {"best": best, "hr@10": best_hr, "trials": trials}
