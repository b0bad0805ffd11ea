"""Several hybrid blends side by side on one replay (issue 18 item 4; docs/benchmarks.md).

``evaluate``'s research protocol (save targets, ``--exclude-seen``, both protocols, no
references) with extra hybrid variants computed from the same component scores at every
scored event, so a variant's figure differs from the hybrid's only by its blend:

    PYTHONPATH=. python examples/hybrid_variants.py first.jsonl [listings1000.jsonl]

``VARIANTS=full,top50`` selects variants (default: all). A research script: it replaces
``ModelSuite.all_scores`` in its own process only.
"""

from __future__ import annotations

import os
import sys
import time

import numpy as np

from leadstream.models import evaluate as E
from leadstream.models.suite import ModelSuite, _standardise

COMPONENTS = ("popularity", "content", "itemitem", "mf")


def _factors(suite: ModelSuite, adapt: float) -> dict[str, float]:
    """``ModelSuite.blend_factors`` with another exponent."""
    rates = {n: (h + 1.0) / (t + 2.0) for n, (h, t) in suite.reliability.items() if t >= 20}
    if len(rates) < 2 or not adapt:
        return dict.fromkeys(suite.reliability, 1.0)
    mean = sum(rates.values()) / len(rates)
    return {n: (rates[n] / mean) ** adapt if n in rates else 1.0 for n in suite.reliability}


def content_rising(cap: float):
    """Content's weight rising with the lead's positives up to ``cap`` x its scale."""
    return lambda scale, lead_id, lead, comp: scale * min(cap, 0.4 + lead.n_positive / 5.0)


def mf_after(n: float):
    """The MF's full weight after ``n`` observations of the lead (20 in the suite)."""
    return lambda scale, lead_id, lead, comp: scale * min(
        1.0, comp.model.lead_support.get(lead_id, 0) / n)


def blend(suite, cat, lead_id, lead, mask, comps, scales=None, adapt=1.0, rules=None,
          method="full"):
    """One hybrid: ``method`` "full" (z-scores over every candidate: the blend before
    this work), "topN" (over each component's N best candidates: the suite's, ``TOP``)
    or "rrfK" (reciprocal ranks 1 / (K + rank), then z-scored over every candidate)."""
    n = len(cat)
    f = _factors(suite, adapt)
    found, ws, rows = [], [], []
    for comp, wname in suite._blended:
        scale = f[comp.name] * (scales or {}).get(wname, suite.weights[wname])
        rule = (rules or {}).get(comp.name)
        w = rule(scale, lead_id, lead, comp) if rule else comp.weigh(scale, lead_id, lead)
        s = comps[comp.name]
        if w <= 0 or s is None:
            continue
        found.append(comp)
        ws.append(w)
        rows.append(np.asarray(s[:n], dtype=np.float64))
    total = suite._prior(cat).copy()
    if not found:
        return total
    R = np.array(rows)
    if method == "full":
        Z = _standardise(R, mask, top=n)
    elif method.startswith("top"):
        Z = _standardise(R, mask, top=int(method[3:]))
    elif method.startswith("rrf"):
        k = float(method[3:])
        idx = np.flatnonzero(mask)
        Z = np.zeros_like(R)
        for j in range(len(R)):
            rank = np.empty(len(idx))
            rank[np.argsort(-R[j, idx], kind="stable")] = np.arange(len(idx))
            Z[j, idx] = 1.0 / (k + rank)
        Z = _standardise(Z, mask, top=n)
    else:
        raise ValueError(method)
    for j, comp in enumerate(found):
        ok = comp.trusted(n)
        if ok is not None:
            Z[j] = np.where(ok, Z[j], 0.0)
    for j in range(len(found)):
        total = total + ws[j] * Z[j]
    return total


VARIANTS = {
    "full": {},
    "full_adapt2": dict(adapt=2.0),
    "full_adapt3": dict(adapt=3.0),
    "full_c3": dict(scales={"w_content": 3.0}),
    "full_c3_i05_m05": dict(scales={"w_content": 3.0, "w_itemitem": 0.5, "w_mf": 0.5}),
    "full_crise2": dict(rules={"content": content_rising(2.0)}),
    "full_crise3": dict(rules={"content": content_rising(3.0)}),
    "full_mf10": dict(rules={"mf": mf_after(10.0)}),
    "full_mf40": dict(rules={"mf": mf_after(40.0)}),
    "rrf60": dict(method="rrf60"),
    "rrf10": dict(method="rrf10"),
    "top20": dict(method="top20"),
    "top30": dict(method="top30"),
    "top50": dict(method="top50"),
    "top75": dict(method="top75"),
    "top100": dict(method="top100"),
    "top50_adapt2": dict(method="top50", adapt=2.0),
    "top50_c3": dict(method="top50", scales={"w_content": 3.0}),
    "top50_crise3": dict(method="top50", rules={"content": content_rising(3.0)}),
    "top100_c3": dict(method="top100", scales={"w_content": 3.0}),
    "top100_crise2": dict(method="top100", rules={"content": content_rising(2.0)}),
    "top100_crise3": dict(method="top100", rules={"content": content_rising(3.0)}),
    # tried on MovieLens 100K (docs/benchmarks.md, "On real data")
    "top200": dict(method="top200"),
    "top100_adapt0": dict(method="top100", adapt=0.0),
    "top100_adapt2": dict(method="top100", adapt=2.0),
    "top100_p0": dict(method="top100", scales={"w_popularity": 0.0}),
    "top100_p1": dict(method="top100", scales={"w_popularity": 1.0}),
    "top100_p2": dict(method="top100", scales={"w_popularity": 2.0}),
    "top100_i2": dict(method="top100", scales={"w_itemitem": 2.0}),
    "top100_m05": dict(method="top100", scales={"w_mf": 0.5}),
    "top100_mf5": dict(method="top100", rules={"mf": mf_after(5.0)}),
    "top100_mf60": dict(method="top100", rules={"mf": mf_after(60.0)}),
    "top100_iiflat": dict(method="top100", rules={"itemitem": lambda sc, lid, lead, c: sc}),
}


def all_scores(self, cat, lead_id, lead, mask, names=()):
    comps = {name: c.scores(cat, lead_id, lead) for name, c in self.components.items()}
    prior = self._prior(cat)
    n = len(cat)
    out = {m: np.asarray(comps[m][:n], dtype=np.float64) if comps[m] is not None else prior
           for m in names if m in comps}
    if "hybrid" in names:
        out["hybrid"] = self._blend(self.hybrid_parts(cat, lead_id, lead, mask, comps), cat)
    for v, kw in VARIANTS.items():
        if v in names:
            out[v] = blend(self, cat, lead_id, lead, mask, comps, **kw)
    return out


def main(argv: list[str]) -> None:
    global VARIANTS
    if os.environ.get("VARIANTS"):
        VARIANTS = {k: VARIANTS[k] for k in os.environ["VARIANTS"].split(",")}
    ModelSuite.all_scores = all_scores
    with open(argv[0], "rb") as fh:
        events, _ = E.load_events(fh)
    catalog = open(argv[1], "rb").read().splitlines() if len(argv) > 1 else None
    t = time.time()
    r = E.evaluate(events, catalog, protocols=("prequential", "leave-last-out"),
                   models=(*COMPONENTS, "hybrid", *VARIANTS), targets=["property_saved"],
                   exclude_seen=True)
    print(f"# {argv} {time.time() - t:.0f} s; prequential / leave-last-out HR@10")
    for m, f in r["models"].items():
        p, o = f["prequential"], f["leave_last_out"]
        print(f"{m:16s} {p['hr@10']:.3f} {o['hr@10']:.3f}  ({p['evaluated']} / {o['evaluated']})")


if __name__ == "__main__":
    main(sys.argv[1:])
