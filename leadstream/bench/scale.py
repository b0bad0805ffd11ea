"""``leadstream bench scale``: memory per lead and throughput as the number of leads grows.

Each size runs in a fresh process (so memory freed by one size is not reused by the next)
through the worker's step with no broker (:func:`streams.step.replay`, in batches of
``batch_max_events``), each changed lead packed into one record as the
``features_by_lead`` table stores it (``features/record.py``), the table a dict as in
Faust's memory store, and the ``lead_cache_size`` most recently active leads also kept
decoded (:class:`streams.step.LeadStore`).

1. **populate**: every lead gets one event (a 60-second listing view, which every model
   learns from and which triggers the lead's first recommendation);
2. **measure**: ``window`` events on leads drawn at random from all of them (views, saves,
   swipes, searches: the simulator's mix of listing events), events per second.

Memory per lead is the growth of the process's resident memory over the populate step
divided by the leads: table keys and values plus the per-lead model state (content
profile, matrix-factorisation factors and counts), plus the decoded copies of at most
``lead_cache_size`` leads (a fixed amount, so it weighs most at the smallest size). The
record of a lead with a month of history is larger than after one event: ``leadstream
bench features`` measures that.
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta

import orjson

from leadstream.bench.common import console, machine, rss_bytes


def _event(i: int, lead: str, et: str, pid: str, ts: datetime, **extra) -> bytes:
    return orjson.dumps({"event_id": f"s{i}", "lead_id": lead, "event_type": et,
                         "timestamp": ts.isoformat(), "session_id": f"S-{lead}",
                         "property_id": pid, **extra})


def run_one(leads: int, window: int = 20_000, seed: int = 7) -> dict:
    """One size, in this process: populate ``leads`` leads, then time ``window`` events."""
    from leadstream.contract.settings import Settings
    from leadstream.simulate import SimConfig, Simulator
    from leadstream.streams.step import DEAD_LETTER, REKEY, LeadStore, Step, replay

    settings = Settings()
    pipe = Step(settings, 4)
    sim = Simulator(SimConfig(leads=10, properties=1000, days=1, seed=seed))
    for r in sim.records():
        if r.topic == "properties":
            pipe.load_listing(r.value, r.key)
    pids = pipe.catalog.ids[:]
    store = LeadStore(cache_size=settings.lead_cache_size)
    table = store.packed
    t0 = datetime.now(UTC) - timedelta(hours=1)

    def handle(pairs) -> None:
        for res in replay(pipe, pairs, store, batch=settings.batch_max_events,
                          received=time.time()):
            for o in res.outputs:
                if o.kind in (DEAD_LETTER, REKEY):
                    raise RuntimeError(f"benchmark event refused: {o}")

    rng = random.Random(seed)
    base = rss_bytes()
    start = time.perf_counter()
    handle((f"SL{i:08d}".encode(),
            _event(i, f"SL{i:08d}", "property_viewed", rng.choice(pids), t0,
                   payload={"duration_seconds": 60})) for i in range(leads))
    populate_s = time.perf_counter() - start
    grown = rss_bytes() - base
    mix = [("property_viewed", {"duration_seconds": 45}),
           ("property_viewed", {"duration_seconds": 8}), ("property_saved", {}),
           ("property_swiped", {"direction": "right"}),
           ("property_swiped", {"direction": "left"}), ("property_detail_opened", {})]
    batch = []
    for j in range(window):
        lead = f"SL{rng.randrange(leads):08d}"
        et, payload = rng.choice(mix)
        ts = t0 + timedelta(seconds=1 + j * 0.01)
        batch.append((lead.encode(),
                      _event(leads + j, lead, et, rng.choice(pids), ts, payload=payload)))
    start = time.perf_counter()
    handle(batch)
    rate = window / (time.perf_counter() - start)
    sizes = [len(v) for v in table.values()]
    return {"leads": leads, "leads_held": len(table), "window_events": window,
            "events_per_second": round(rate, 1),
            "populate_events_per_second": round(leads / populate_s, 1),
            "rss_bytes_per_lead": round(grown / leads),
            "record_bytes_mean": round(sum(sizes) / len(sizes)),
            "rss_mb": round(rss_bytes() / 2**20, 1)}


def bench_scale(sizes=(10_000, 100_000, 1_000_000), window: int = 20_000,
                seed: int = 7) -> dict:
    out = {"benchmark": "scale", "machine": machine(), "window_events": window, "sizes": {}}
    for n in sizes:
        proc = subprocess.run([sys.executable, "-m", "leadstream.bench.scale", str(n),
                               str(window), str(seed)], capture_output=True, text=True,
                              check=True, timeout=7200)
        out["sizes"][str(n)] = json.loads(proc.stdout.strip().splitlines()[-1])
    first = out["sizes"][str(sizes[0])]["events_per_second"]
    for r in out["sizes"].values():
        r["throughput_vs_smallest"] = round(r["events_per_second"] / first, 3)
    return out


def print_scale(r: dict) -> None:
    from rich.table import Table

    c = console("scale", f"the worker's per-record code with no broker; "
                f"{r['window_events']:,} events on random leads per size", r)
    t = Table("leads", "events/s", "vs smallest", "memory per lead (RSS)", "record mean",
              "process RSS")
    for n, v in r["sizes"].items():
        t.add_row(f"{int(n):,}", f"{v['events_per_second']:,.0f}",
                  f"{v['throughput_vs_smallest']:.2f}", f"{v['rss_bytes_per_lead']:,} B",
                  f"{v['record_bytes_mean']:,} B", f"{v['rss_mb']:,.0f} MB")
    c.print(t)


if __name__ == "__main__":  # one size, in a fresh process: prints its JSON
    n, w, s = (int(x) for x in sys.argv[1:4])
    print(json.dumps(run_one(n, w, s)))
