"""A worker's ``/metrics``, scraped and read: samples by name and labels, their totals,
rates from counter deltas, and latency percentiles from histogram bucket deltas (the way
PromQL's ``histogram_quantile`` interpolates). ``leadstream top`` shows these figures;
the benchmarks and the integration tests read a worker's counters with them.

>>> prev = parse("leadstream_events_in_total{topic=\\"i\\"} 10\\n")
>>> cur = parse("leadstream_events_in_total{topic=\\"i\\"} 30\\n")
>>> rate(prev, cur, "leadstream_events_in_total", 2.0)
10.0
>>> quantile(0.5, {0.01: 5.0, 0.05: 10.0, 1.0: 10.0, float("inf"): 10.0})
0.01
"""

from __future__ import annotations

import math
import urllib.request
from collections import defaultdict

from prometheus_client.parser import text_string_to_metric_families

Samples = dict[tuple[str, tuple], float]


def parse(text: str) -> Samples:
    out: Samples = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def total(samples: Samples, name: str, **labels) -> float:
    return sum(v for (n, lab), v in samples.items()
               if n == name and all(dict(lab).get(k) == x for k, x in labels.items()))


def rate(prev: Samples, cur: Samples, name: str, dt: float, **labels) -> float:
    return max(total(cur, name, **labels) - total(prev, name, **labels), 0.0) / max(dt, 1e-9)


def buckets(prev: Samples, cur: Samples, name: str) -> dict[float, float]:
    """Cumulative bucket counts of a histogram added between two scrapes."""
    out: dict[float, float] = defaultdict(float)
    for (n, lab), v in cur.items():
        if n == f"{name}_bucket":
            le = float(dict(lab)["le"])
            out[le] += v - prev.get((n, lab), 0.0)
    return dict(out)


def quantile(q: float, cum: dict[float, float]) -> float | None:
    """``histogram_quantile`` over cumulative bucket counts (None without observations)."""
    if not cum:
        return None
    les = sorted(cum)
    n = cum[les[-1]]
    if n <= 0:
        return None
    rank = q * n
    lo_le, lo_c = 0.0, 0.0
    for le in les:
        c = cum[le]
        if c >= rank:
            if math.isinf(le):
                return lo_le
            if c == lo_c:
                return le
            return lo_le + (le - lo_le) * (rank - lo_c) / (c - lo_c)
        lo_le, lo_c = le, c
    return les[-1]


def summary(prev: Samples, cur: Samples, dt: float) -> dict:
    """The figures the view shows, from two scrapes ``dt`` seconds apart."""
    lat = buckets(prev, cur, "leadstream_receipt_to_recommendation_seconds")
    models = sorted({dict(lab)["model"] for (n, lab) in cur
                     if n == "leadstream_model_hr_at_10"})
    return {
        "events_in_per_s": rate(prev, cur, "leadstream_events_in_total", dt),
        "processed_per_s": rate(prev, cur, "leadstream_events_processed_total", dt),
        "dead_letters_per_s": rate(prev, cur, "leadstream_events_dead_lettered_total", dt),
        "duplicates_per_s": rate(prev, cur, "leadstream_events_duplicate_total", dt),
        "recommendations_per_s": rate(prev, cur, "leadstream_recommendations_emitted_total", dt),
        "lag": total(cur, "leadstream_consumer_lag"),
        "latency_ms": {f"p{int(q * 100)}": (None if (v := quantile(q, lat)) is None
                                            else round(v * 1000, 2))
                       for q in (0.5, 0.95, 0.99)},
        "leads": total(cur, "leadstream_leads"),
        "catalog_active": total(cur, "leadstream_catalog_listings", status="active"),
        "processed_total": total(cur, "leadstream_events_processed_total"),
        "models": {m: {"hr@10": total(cur, "leadstream_model_hr_at_10", model=m),
                       "drifts": total(cur, "leadstream_model_drift_detections_total", model=m)}
                   for m in models},
    }


def scrape(url: str) -> Samples:
    with urllib.request.urlopen(url.rstrip("/") + "/metrics", timeout=5) as r:
        return parse(r.read().decode())
