"""Online model quality and drift: each model's hit rate on live positive events.

At a sample of positive events on a listing, each model ranks the listings for the lead
*before* learning from the event (prequential, as ``leadstream evaluate`` does); the hit
indicator (listing in the top 10) feeds River's ADWIN drift detector per model, whose
window mean is the model's current HR@10. NDCG@10 is an exponentially weighted mean. A
detected change is a drift: counted, timestamped, and visible in metrics and snapshots.

>>> q = OnlineQuality(("hybrid",))
>>> for i in range(400):
...     _ = q.observe("hybrid", 0 if i < 300 else None)   # always a hit, then never
>>> q.state["hybrid"]["drifts"] >= 1, q.state["hybrid"]["hr@10"] < 0.5
(True, True)
"""

from __future__ import annotations

import math
import time

from river import drift, stats


class OnlineQuality:
    def __init__(self, models: tuple[str, ...], delta: float = 0.002):
        self.models = models
        self.delta = delta
        self._adwin = {m: drift.ADWIN(delta=delta) for m in models}
        self._ndcg = {m: stats.EWMean(fading_factor=0.02) for m in models}
        self.state = {m: {"hr@10": 0.0, "ndcg@10": 0.0, "observed": 0, "drifts": 0,
                          "last_drift": None} for m in models}

    def observe(self, model: str, rank: int | None) -> bool:
        """One prequential outcome (0-based rank in the top 10, or None); True on drift."""
        hit = 1.0 if rank is not None else 0.0
        ad = self._adwin[model]
        ad.update(hit)
        self._ndcg[model].update(1.0 / math.log2(rank + 2) if rank is not None else 0.0)
        st = self.state[model]
        st["observed"] += 1
        st["hr@10"] = round(float(ad.estimation), 4)
        st["ndcg@10"] = round(float(self._ndcg[model].get()), 4)
        if ad.drift_detected:
            st["drifts"] += 1
            st["last_drift"] = time.time()
            return True
        return False
