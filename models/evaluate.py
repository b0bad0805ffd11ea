"""Offline evaluation: replay an event file through the same model code, no broker.

Events are read from JSON lines in the project's event schema (any year: freshness rules
belong to live ingestion, not to a replay), de-duplicated by ``event_id`` and replayed in
time order. Every model learns from every event, as the worker does.

- **targets**: the events that are scored; by default every positive event on a listing
  (positive implicit-feedback weight), or the given event types (``targets``).
- **prequential** (test, then train): at each target event, each model ranks the listings
  for that lead *before* learning from the event; a hit is the event's listing in the
  top ``k``. Events on a listing the lead had already rejected, saved or booked are not
  scored (the live ranking excludes those listings).
- **leave-last-out**: each lead's last target event is held out; the models learn from
  every other lead's events and from the lead's events before it, then rank once per lead.
- **exclude_seen** (the research protocol): every listing the lead interacted with before
  (views included) is left out of its ranking; a target event on such a listing is not
  scored (counted in ``not_scored``), and in leave-last-out the held-out event is the
  lead's last target on a listing it had not interacted with before.

Without a catalog file every listing seen in an event is a candidate (without
attributes: no content signal). Figures: HR@k, NDCG@k, catalog coverage (share of
candidate listings that appeared in some top-k) and events per second (learning plus
that model's ranking). ``references`` are River's own matrix factorisations
(``models/references.py``), replayed on the same stream and scored the same way.

With ``series_points``, the prequential replay also keeps, per model and reference, its
hit count along the stream ([stream position, targets scored so far, hits so far]),
downsampled to at most twice that many points plus the last (what ``models/report.py``
draws): HR@k so far is hits / scored, and HR@k over any stretch between two points is
the difference of hits over the difference of scored, exactly. Lead scores are
reported with their calibration: the prequential predictions of the heuristic and the
online scorer in score buckets of 10 (the published 0-100 score) against the observed
conversion rate of each bucket.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import numpy as np
from river import metrics

from leadstream.contract.events import (
    InvalidRecord,
    LeadstreamError,
    direction_of,
    feedback_weight,
    parse_event,
    parse_listing,
)
from leadstream.features import lead as F
from leadstream.features.profile import LeadProfile, update
from leadstream.models import registry
from leadstream.models.catalog import Catalog
from leadstream.models.references import RiverReference
from leadstream.models.scoring import LABELS
from leadstream.models.suite import MODELS, ModelSuite, rank_of


class Downsampled:
    """At most ``2 * points`` (x, y) pairs, evenly spaced over however many are added
    (every ``stride``-th; the stride doubles when the buffer is full), plus the last.

    >>> d = Downsampled(4)
    >>> for i in range(1, 101):
    ...     d.add(i, i * 10)
    >>> d.stride, len(d.xs) <= 8, d.pairs()[-1]
    (16, True, [100, 1000])
    """

    def __init__(self, points: int):
        self.points = max(int(points), 1)
        self.stride, self.count = 1, 0
        self.xs: list = []
        self.ys: list = []
        self.last: tuple | None = None

    def add(self, x, y) -> None:
        self.count += 1
        self.last = (x, y)
        if self.count % self.stride:
            return
        self.xs.append(x)
        self.ys.append(y)
        if len(self.xs) >= 2 * self.points:  # keep every other one: counts 2s, 4s, ...
            self.xs, self.ys = self.xs[1::2], self.ys[1::2]
            self.stride *= 2

    def pairs(self) -> list[list]:
        """[x, y] pairs (a tuple y is spread: [x, *y])."""
        out = [[x, *y] if isinstance(y, tuple) else [x, y]
               for x, y in zip(self.xs, self.ys, strict=True)]
        if self.last is not None and (not out or out[-1][0] != self.last[0]):
            x, y = self.last
            out.append([x, *y] if isinstance(y, tuple) else [x, y])
        return out


@dataclass
class _Acc:
    hits: int = 0
    ndcg: float = 0.0
    n: int = 0
    seconds: float = 0.0
    shown: set = field(default_factory=set)
    series: Downsampled | None = None  # cumulative HR@k along the stream

    def add(self, rank: int | None, position: int = 0) -> None:
        self.n += 1
        if rank is not None:
            self.hits += 1
            self.ndcg += 1.0 / math.log2(rank + 2)
        if self.series is not None:
            self.series.add(position, (self.n, self.hits))

    def figures(self) -> dict:
        return {"hr@10": round(self.hits / self.n, 4) if self.n else 0.0,
                "ndcg@10": round(self.ndcg / self.n, 4) if self.n else 0.0,
                "evaluated": self.n}


def load_events(lines: Iterable[bytes], reasons: dict[str, int] | None = None,
                ) -> tuple[list, int]:
    """Parse JSON lines (any year); returns (events in time order, invalid lines).

    ``reasons`` (a dict) receives the count of invalid lines per reason.

    >>> ok = (b'{"event_id":"e1","lead_id":"L","event_type":"property_saved",'
    ...       b'"timestamp":"1997-09-20T22:57:09Z","session_id":"s","property_id":"P1"}')
    >>> why = {}
    >>> events, bad = load_events([ok, ok, b"{oops", b"[1]", b""], why)
    >>> len(events), events[0].timestamp.year, bad, why
    (1, 1997, 2, {'not_json': 1, 'not_an_object': 1})
    """
    events, bad, seen = [], 0, set()
    for raw in lines:
        raw = raw.strip()
        if not raw:
            continue
        try:
            ev = parse_event(raw, min_year=None)
        except InvalidRecord as err:
            bad += 1
            if reasons is not None:
                reasons[err.reason] = reasons.get(err.reason, 0) + 1
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


class NoEvents(LeadstreamError):
    """Nothing to evaluate: no valid event in the input."""


def evaluate(events: list, catalog_lines: Iterable[bytes] | None = None, *,
             protocols: tuple[str, ...] = ("prequential",), k: int = 10, seed: int = 42,
             models: tuple[str, ...] = MODELS, suite_params: dict | None = None,
             targets: Iterable[str] | None = None, exclude_seen: bool = False,
             references: dict[str, dict] | None = None,
             progress: Callable[[int], None] | None = None, score_from: float = 0.0,
             series_points: int = 0) -> dict:
    """Figures per model for the given protocols (see the module docstring).

    ``references``: name -> ``RiverReference`` parameters (e.g. ``REFERENCES``), reported
    under ``result["references"]``; ``progress`` is called with the number of events
    replayed so far (over all protocols), every 1,000 events and at the end;
    ``score_from``: the share of the stream (in events) whose targets are not scored (the
    models still learn from it), e.g. 0.5 to report on the second half only;
    ``series_points``: if > 0, ``result["series"]["hr@10"][model]`` is the prequential
    hit count along the stream as [stream position, scored so far, hits so far] (a few
    hundred points at most)."""
    if not events:
        raise NoEvents("no valid event to evaluate")
    first_scored = int(len(events) * score_from)
    targets = frozenset(targets) if targets is not None else None
    refs = references or {}
    result: dict = {"events": len(events), "k": k, "models": {m: {} for m in models},
                    "protocol": {"targets": sorted(targets) if targets else "positive",
                                 "exclude_seen": exclude_seen},
                    "not_scored": {}}
    if first_scored:
        result["scored_from_event"] = first_scored
    if refs:
        result["references"] = {
            r: {"settings": RiverReference(seed=seed, **p).settings()} for r, p in refs.items()}
    has_catalog = catalog_lines is not None
    if has_catalog:
        catalog_lines = list(catalog_lines)
    done = 0
    for protocol in protocols:
        suite = ModelSuite(seed=seed, **(suite_params or {}))
        cat = Catalog()
        if has_catalog:
            result["catalog_listings"] = load_catalog(catalog_lines, suite, cat)
        ref_models = {r: RiverReference(seed=seed, **p) for r, p in refs.items()}
        keep = series_points > 0 and protocol == "prequential"
        accs = {m: _Acc(series=Downsampled(series_points) if keep else None)
                for m in (*models, *ref_models)}
        scores: list | None = [] if protocol == "prequential" else None
        run = _Run(suite, cat, accs, k, not has_catalog, ref_models, targets, exclude_seen,
                   first_scored)

        def tick(n: int, base: int = done) -> None:
            if progress is not None:
                progress(base + n)

        learn_s = run.replay(events, protocol, scores, tick)
        done += len(events)
        if scores is not None:
            result["lead_scores"] = _score_figures(scores)
        result["not_scored"][protocol.replace("-", "_")] = dict(run.not_scored)
        n_candidates = max(int((cat.active | ~cat.known)[: len(cat)].sum()
                               if not has_catalog else cat.n_active), 1)
        for m, acc in accs.items():
            out = result["models"][m] if m in models else result["references"][m]
            out[protocol.replace("-", "_")] = acc.figures()
            if protocol == "prequential":
                out["coverage"] = round(len(acc.shown) / n_candidates, 4)
                spent = learn_s[m if m in ref_models else "suite"] + acc.seconds
                out["events_per_second"] = round(len(events) / spent, 1) if spent else 0.0
            if acc.series is not None:
                result.setdefault("series", {
                    "columns": ["position", "scored", "hits"], "hr@10": {}})["hr@10"][m] = (
                    acc.series.pairs())
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
                     "auc": round(auc.get(), 4) if both else None,
                     "calibration": calibration([(row[i], row[0]) for row in scores])}
    return out


def calibration(pairs: list[tuple[float, bool]], buckets: int = 10) -> list[dict]:
    """Predicted probability against outcome, in score buckets of equal width (score =
    100 x probability, as published): per non-empty bucket its score range, the number
    of outcomes, the mean predicted score and the observed conversion rate.

    >>> calibration([(0.05, False), (0.08, True), (0.93, True)], buckets=10)
    ... # doctest: +NORMALIZE_WHITESPACE
    [{'score_from': 0, 'score_to': 10, 'n': 2, 'mean_score': 6.5, 'converted_rate': 0.5},
     {'score_from': 90, 'score_to': 100, 'n': 1, 'mean_score': 93.0, 'converted_rate': 1.0}]
    """
    width = 100 / buckets
    acc: dict[int, list] = {}
    for p, y in pairs:
        b = min(int(100 * p / width), buckets - 1)
        a = acc.setdefault(b, [0, 0.0, 0])
        a[0] += 1
        a[1] += 100 * p
        a[2] += bool(y)
    return [{"score_from": round(b * width, 1) if width % 1 else int(b * width),
             "score_to": round((b + 1) * width, 1) if width % 1 else int((b + 1) * width),
             "n": n, "mean_score": round(total / n, 1), "converted_rate": round(conv / n, 4)}
            for b, (n, total, conv) in sorted(acc.items())]


class _Run:
    """One protocol's replay: the suite and the references learn, target events are scored."""

    def __init__(self, suite: ModelSuite, cat: Catalog, accs: dict, k: int, unlisted: bool,
                 refs: dict, targets: frozenset | None, exclude_seen: bool,
                 first_scored: int = 0):
        self.suite, self.cat, self.accs, self.k = suite, cat, accs, k
        self.unlisted, self.refs = unlisted, refs
        self.targets, self.exclude_seen = targets, exclude_seen
        self.first_scored = first_scored
        self.names = tuple(n for n in accs if n not in refs)
        self.seen: dict[str, set[str]] = {}  # listings each lead interacted with
        self.not_scored: dict[str, int] = {}
        self.position = 0  # the scored event's index in the stream

    def is_target(self, ev) -> bool:
        if ev.property_id is None:
            return False
        if self.targets is not None:
            return ev.event_type in self.targets
        return feedback_weight(ev.event_type, direction_of(ev)) > 0

    def _held_out(self, events) -> dict[str, int]:
        """Each lead's held-out event: its last target (on a listing new to it, with
        ``exclude_seen``)."""
        held: dict[str, int] = {}
        seen: dict[str, set] = {}
        for i, ev in enumerate(events):
            if ev.property_id is None:
                continue
            before = seen.setdefault(ev.lead_id, set())
            if self.is_target(ev) and not (self.exclude_seen and ev.property_id in before):
                held[ev.lead_id] = i
            before.add(ev.property_id)
        return held

    def replay(self, events, protocol: str, scores: list | None, tick) -> dict[str, float]:
        """Learn from ``events`` and score the targets; seconds spent learning per learner."""
        suite, cat = self.suite, self.cat
        profiles: dict[str, LeadProfile] = {}
        feats: dict[str, F.LeadFeatures] = {}
        held = self._held_out(events) if protocol == "leave-last-out" else {}
        learn_s = dict.fromkeys(("suite", *self.refs), 0.0)
        for i, ev in enumerate(events):
            if i % 1000 == 0:
                tick(i)
            lead = profiles.get(ev.lead_id)
            if lead is None:
                lead = profiles[ev.lead_id] = LeadProfile()
            h = held.get(ev.lead_id)
            if h is not None and i >= h:  # the held-out event and the lead's later events
                continue
            pid = ev.property_id
            if protocol == "prequential" and i >= self.first_scored and self.is_target(ev):
                self.position = i
                self.score_one(ev.lead_id, lead, pid)
            t = time.perf_counter()
            listing = cat.attributes(pid) if pid is not None else None
            suite.learn_one(cat, ev.lead_id, lead, ev)
            update(lead, ev, listing)
            t2 = time.perf_counter()
            learn_s["suite"] += t2 - t
            if pid is not None:
                self.seen.setdefault(ev.lead_id, set()).add(pid)
                if self.refs:
                    self._learn_refs(ev, pid, learn_s, t2)
            if scores is not None:
                _learn_scores(suite, feats, ev, listing, scores)
        for lead_id, i in held.items():
            if i >= self.first_scored:
                self.score_one(lead_id, profiles[lead_id], events[i].property_id)
        tick(len(events))
        return learn_s

    def _learn_refs(self, ev, pid: str, learn_s: dict, t: float) -> None:
        w = feedback_weight(ev.event_type, direction_of(ev))
        if w == 0:
            return
        cat = self.cat
        row = cat.index_of(pid)
        pool = cat.active_rows()
        if len(pool) == 0:
            pool = np.arange(len(cat))
        for name, ref in self.refs.items():
            ref.learn_one(ev.lead_id, row, pid, w, pool, cat.ids)
            t2 = time.perf_counter()
            learn_s[name] += t2 - t
            t = t2

    def _skip(self, why: str) -> None:
        self.not_scored[why] = self.not_scored.get(why, 0) + 1

    def score_one(self, lead_id: str, lead: LeadProfile, pid: str) -> None:
        suite, cat, accs, k = self.suite, self.cat, self.accs, self.k
        if pid in lead.rejected or pid in lead.saved or pid in lead.booked:
            self._skip("rejected_saved_or_booked")
            return
        seen = self.seen.get(lead_id, ())
        if self.exclude_seen and pid in seen:
            self._skip("seen_before")
            return
        row = cat.index.get(pid)
        t = time.perf_counter()
        mask = suite.candidate_mask(cat, lead, include_unlisted=self.unlisted)
        if self.exclude_seen and seen:
            rows = [r for p in seen if (r := cat.index.get(p)) is not None and r < len(mask)]
            mask[rows] = False
        shared = time.perf_counter() - t
        if row is None or row >= len(mask) or not mask[row]:
            for acc in accs.values():  # a listing the models cannot rank yet: a miss for all
                acc.add(None, self.position)
            return
        t = time.perf_counter()
        all_scores = suite.all_scores(cat, lead_id, lead, mask, self.names)
        per_model = (time.perf_counter() - t) / len(self.names) + shared
        n = len(cat)
        prior = None
        for name, ref in self.refs.items():
            t = time.perf_counter()
            s = ref.scores(lead_id, n)
            if s is None:  # River knows nothing about this lead: popularity, as ours
                s = prior if prior is not None else suite.scores(registry.PRIOR, cat,
                                                                 lead_id, lead, mask)
                prior = s
            all_scores[name] = s[: len(mask)]
            accs[name].seconds += time.perf_counter() - t + shared
        m = int(mask.sum())
        kk = min(k, m)
        for name, acc in accs.items():
            t = time.perf_counter()
            s = np.where(mask, all_scores[name], -np.inf)
            acc.add(rank_of(s, row, k), self.position)
            top = np.argpartition(-s, kk - 1)[:kk] if kk else []
            acc.shown.update(int(x) for x in top)
            acc.seconds += time.perf_counter() - t + (per_model if name in self.names else 0.0)


def _learn_scores(suite: ModelSuite, feats: dict, ev, listing, scores: list) -> None:
    """Lead features and the lead scorer, test-then-train on CRM outcomes."""
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


#: the values ``tune`` tries for each hybrid weight (each component's ``grid()``)
TUNE_GRID = registry.TUNE_GRID


def tune(events: list, catalog_lines: list[bytes] | None, *, k: int = 10, seed: int = 42,
         rounds: int = 2, targets: Iterable[str] | None = None,
         exclude_seen: bool = False) -> dict:
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
                     suite_params=params, targets=targets, exclude_seen=exclude_seen)
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


def tune_split(events: list, catalog_lines: list[bytes] | None, *, k: int = 10, seed: int = 42,
               rounds: int = 1, targets: Iterable[str] | None = None,
               exclude_seen: bool = False,
               protocols: tuple[str, ...] = ("prequential", "leave-last-out"),
               references: dict[str, dict] | None = None,
               progress: Callable[[int], None] | None = None, series_points: int = 0) -> dict:
    """The hybrid's weights chosen on the first half of the stream, reported on the second.

    ``tune`` runs on the first half alone (the models learn and are scored there); then
    every model and reference replays the whole stream with the chosen weights and only
    the second half's targets are scored (``score_from=0.5``), so no figure is tuned on
    what it reports. ``result["tuned"]`` holds the weights, the first half's figure, the
    trials and the hybrid's second-half figures with the default weights."""
    if not events:
        raise NoEvents("no valid event to evaluate")
    protocol = {"targets": targets, "exclude_seen": exclude_seen}
    t = tune(events[: len(events) // 2], catalog_lines, k=k, seed=seed, rounds=rounds,
             **protocol)
    r = evaluate(events, catalog_lines, protocols=protocols, k=k, seed=seed,
                 suite_params=t["best"], references=references, progress=progress,
                 score_from=0.5, series_points=series_points, **protocol)
    base = evaluate(events, catalog_lines, protocols=protocols, k=k, seed=seed,
                    models=("hybrid",), score_from=0.5, **protocol)
    r["tuned"] = {"weights": t["best"], "first_half_hr@10": t["hr@10"], "trials": t["trials"],
                  "default_weights": base["models"]["hybrid"]}
    return r
