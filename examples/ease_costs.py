"""What the EASE model (``models/ease.py``) costs: a refit's inverse at two catalog sizes,
a lead's scores by the number of its positives, and the learn step (median seconds /
microseconds; figures in docs/benchmarks.md, "EASE landed").

    PYTHONPATH=. python examples/ease_costs.py
"""

from __future__ import annotations

import time

import numpy as np

from leadstream.models.ease import EaseModel


def main() -> None:
    rng = np.random.default_rng(1)
    for n in (1682, 2048):  # MovieLens 100K's films; the default bound
        m = EaseModel(max_items=n, refit_every=0)
        for lead in range(1000):
            for row in rng.choice(n, 60, replace=False):
                m.learn_one(f"L{lead}", int(row))
        took = []
        for _ in range(3):
            job = m.refit_job()
            t = time.perf_counter()
            result = job.compute()
            took.append(time.perf_counter() - t)
            job.install(result)
        print(f"refit at {n} listings: {np.median(took):.3f} s (median of 3)")
    for k in (10, 50, 200):
        lead = f"K{k}"
        for row in rng.choice(2048, k, replace=False):
            m.learn_one(lead, int(row))
        took = []
        for _ in range(300):
            t = time.perf_counter()
            m.scores(lead, 2048)
            took.append(time.perf_counter() - t)
        print(f"scores of a lead with {k} positives: {np.median(took) * 1e6:.0f} µs p50")
    took = []
    for i in range(5000):
        t = time.perf_counter()
        m.learn_one(f"L{i % 1000}", int(rng.integers(2048)))
        took.append(time.perf_counter() - t)
    print(f"learn_one: {np.median(took) * 1e6:.1f} µs p50, "
          f"{np.percentile(took, 99) * 1e6:.1f} µs p99")


if __name__ == "__main__":
    main()
