"""``leadstream bench mf``: the matrix factorisation alone, and variants of it, replayed on
an event file with the research protocol, beside River's references.

The protocol is ``leadstream evaluate --targets property_saved --exclude-seen`` without a
catalog, for one model at a time and no other: prequential (each save of a listing the
lead had not interacted with is ranked before it is learnt) and leave-last-out (each
lead's last such save held out, the lead's later events unseen). Candidates are every
listing seen so far minus those the lead interacted with; a lead the model does not know
is ranked by popularity. Each variant is a set of ``CollaborativeModel`` parameters
(``negatives=4,pop_negatives=0``) or the name of a reference (``river_funkmf``); the learn
step of each is timed per event.
"""

from __future__ import annotations

import statistics
import time

import numpy as np

from leadstream.bench.common import console, machine
from leadstream.contract.events import feedback_weight
from leadstream.models.collaborative import CollaborativeModel
from leadstream.models.evaluate import load_events
from leadstream.models.references import REFERENCES, RiverReference
from leadstream.models.suite import rank_of


def parse_variant(spec: str):
    """A model from ``default``, a reference name, or ``name=value,...`` parameters.

    >>> parse_variant("negatives=4,lr=0.1")._get_params()["negatives"]
    4
    >>> parse_variant("river_funkmf").kind
    'funkmf'
    """
    if spec in REFERENCES:
        return RiverReference(**REFERENCES[spec])
    params: dict = {}
    for part in filter(None, (p.strip() for p in spec.split(","))):
        if part == "default":
            continue
        name, _, value = part.partition("=")
        params[name] = int(value) if value.lstrip("-").isdigit() else float(value)
    return CollaborativeModel(**params)


def replay(events: list, model, protocol: str, k: int = 10,
           targets: frozenset = frozenset({"property_saved"})) -> dict:
    index: dict[str, int] = {}
    ids: list[str] = []
    seen: dict[str, set[str]] = {}
    pop = np.zeros(max(len(events), 1))
    held: dict[str, int] = {}
    if protocol == "leave-last-out":
        before: dict[str, set[str]] = {}
        for i, ev in enumerate(events):
            if ev.property_id is None:
                continue
            b = before.setdefault(ev.lead_id, set())
            if ev.event_type in targets and ev.property_id not in b:
                held[ev.lead_id] = i
            b.add(ev.property_id)
    hits, n, learn = 0, 0, []

    def score(lead: str, pid: str) -> None:
        nonlocal hits, n
        n += 1
        row = index.get(pid)
        if row is None:  # a listing nobody interacted with yet: a miss
            return
        s = model.scores(lead, len(ids))
        s = np.array(pop[: len(ids)] if s is None else s[: len(ids)], dtype=np.float64)
        s[[index[p] for p in seen.get(lead, ())]] = -np.inf
        hits += rank_of(s, row, k) is not None  # a diverged model's NaN: a miss

    for i, ev in enumerate(events):
        pid = ev.property_id
        if pid is None:
            continue
        h = held.get(ev.lead_id)
        if h is not None and i >= h:
            continue
        if (protocol == "prequential" and ev.event_type in targets
                and pid not in seen.get(ev.lead_id, ())):
            score(ev.lead_id, pid)
        w = feedback_weight(ev.event_type, getattr(ev.payload, "direction", None))
        row = index.get(pid)
        if row is None:
            row = index[pid] = len(ids)
            ids.append(pid)
        if w > 0:
            pop[row] += w
        pool = np.arange(len(ids))
        t = time.perf_counter_ns()
        model.learn_one(ev.lead_id, row, pid, w, pool, ids)
        learn.append((time.perf_counter_ns() - t) / 1000)
        seen.setdefault(ev.lead_id, set()).add(pid)
    for lead, i in held.items():
        score(lead, events[i].property_id)
    return {"hr@10": round(hits / n, 4) if n else 0.0, "evaluated": n,
            "learn_us_p50": round(statistics.median(learn), 1) if learn else 0.0}


def bench_mf(path: str, variants: list[str]) -> dict:
    with open(path, "rb") as fh:
        events, _ = load_events(fh)
    out = {"benchmark": "mf", "machine": machine(), "events": len(events), "file": path,
           "variants": {}}
    for spec in variants:
        r = {p: replay(events, parse_variant(spec), p)
             for p in ("prequential", "leave-last-out")}
        out["variants"][spec] = r
    return out


def print_mf(r: dict) -> None:
    from rich.table import Table

    c = console("mf", f"{r['events']:,} events of {r['file']}, saves scored, seen listings "
                "excluded", r)
    t = Table("variant", "prequential HR@10", "n", "leave-last-out HR@10", "n",
              "learn p50 µs")
    for spec, f in r["variants"].items():
        pq, lo = f["prequential"], f["leave-last-out"]
        t.add_row(spec, f"{pq['hr@10']:.4f}", f"{pq['evaluated']:,}", f"{lo['hr@10']:.4f}",
                  f"{lo['evaluated']:,}", f"{pq['learn_us_p50']}")
    c.print(t)
