"""``leadstream bench stages``: where the worker's time goes, per batch and per event, with
no broker.

Runs the worker's step (:meth:`streams.step.Step.run`, fed by
:func:`streams.step.replay` in batches of ``batch`` records grouped by partition, as the
agent takes them) on two streams and times each stage by wrapping the functions that
implement it with a timer:

- **mixed**: the simulator's events of ``leads`` leads (one day), as ``bench pipeline``
  feeds its backlog;
- **saves**: then ``saves`` saves of 10,000 fresh leads, as ``bench pipeline`` offers
  load for its latency figures (every one is due a new, explained list).

EASE's refits run between batches and are reported apart (``model_refits``: how many, the
median seconds each), outside the per-event figures: the worker computes them in a thread,
off the event path. Stages nest (``suite.reasons`` is inside ``suite.recommend_many``,
inside ``lists``); the wrappers add about a microsecond per call, so the total is a little
above an unwrapped run's.
"""

from __future__ import annotations

import logging
import statistics
import time
from collections import Counter
from datetime import UTC, datetime, timedelta

from leadstream.bench.common import console, machine, save_event, simulated_step

# (label, owner, attribute): the stages timed, outermost first
_STAGES = [
    ("step (all of it)", "Step", "run"),
    ("ingest: parse and validate", "Step", "ingest"),
    ("lists: rank + explain the due", "Step", "_lists"),
    ("  rank + explain all due", "ModelSuite", "recommend_many"),
    ("    explain (reasons)", "ModelSuite", "reasons"),
    ("lead score (when due)", "Step", "_finish"),
    ("features: compute all", "features", "compute"),
    ("features: update", "features", "update"),
    ("features: preferences", "features", "preferences"),
    ("models: learn", "ModelSuite", "learn_one"),
    ("online quality sampling", "Step", "_measure"),
    ("record pack (write)", "LeadState", "pack"),
    ("record unpack (read)", "LeadState", "unpack"),
]


def bench_stages(leads: int = 1000, saves: int = 10_000, seed: int = 7,
                 batch: int = 500) -> dict:
    from leadstream.features import lead as features
    from leadstream.models.suite import ModelSuite
    from leadstream.simulate import SimConfig, Simulator
    from leadstream.streams import step as S

    owners = {"Step": S.Step, "ModelSuite": ModelSuite, "features": features,
              "LeadState": S.LeadState}
    spent: Counter = Counter()
    calls: Counter = Counter()
    originals = []

    def timed(label: str, fn):
        def wrapper(*a, **kw):
            t = time.perf_counter()
            try:
                return fn(*a, **kw)
            finally:
                spent[label] += time.perf_counter() - t
                calls[label] += 1
        return wrapper

    days = 1.0
    sim = Simulator(SimConfig(leads=leads, properties=1000, days=days, seed=seed,
                              start=datetime.now(UTC) - timedelta(days=days + 3)))
    step, mixed = simulated_step(sim)
    save_stream = [(f"BL{i % 10_000:06d}".encode(),
                    save_event(f"lat-{i}", f"BL{i % 10_000:06d}", f"P{i % 900:06d}"))
                   for i in range(saves)]
    store = S.LeadStore()
    step.offload_refits()  # as the worker: EASE's refits are not on the event path
    refits: list[float] = []

    def run(stream) -> tuple[int, float]:
        n, start = 0, time.perf_counter()
        for res in S.replay(step, stream, store, batch=batch, received=time.time()):
            n += sum(o.kind in (S.DEAD_LETTER, S.REKEY) for o in res.outputs)
            for job in step.models.refits():  # the worker computes these in a thread
                t = time.perf_counter()
                job.run()
                refits.append(time.perf_counter() - t)
        return len(stream) - n, time.perf_counter() - start - sum(refits)

    quiet = logging.getLogger("leadstream.worker")
    level = quiet.level
    quiet.setLevel(logging.ERROR)  # online-quality drift warnings: not this run's point
    for label, owner, attr in _STAGES:
        obj = owners[owner]
        raw = vars(obj)[attr]  # as defined (a classmethod stays one)
        originals.append((obj, attr, raw))
        setattr(obj, attr, timed(label, getattr(obj, attr)))
    out = {"benchmark": "stages", "machine": machine(), "batch": batch, "streams": {}}
    try:
        for name, stream in (("mixed", mixed), ("saves", save_stream)):
            spent.clear()
            calls.clear()
            refits.clear()
            n, seconds = run(stream)
            batches = max(calls["step (all of it)"], 1)
            out["streams"][name] = {
                "events": n, "batches": batches,
                "events_per_batch": round(n / batches, 1),
                "us_per_event": round(1e6 * seconds / n, 1),
                "us_per_batch": round(1e6 * seconds / batches, 1),
                "stages": {label: {"us_per_event": round(1e6 * spent[label] / n, 1),
                                   "us_per_batch": round(1e6 * spent[label] / batches, 1),
                                   "calls": calls[label],
                                   "us_per_call": round(1e6 * spent[label] / calls[label], 1)
                                   if calls[label] else 0.0}
                           for label, _, _ in _STAGES},
                # off the event path (the worker: a thread), so not in the figures above
                "model_refits": {"count": len(refits),
                                 "seconds_median": round(statistics.median(refits), 3)
                                 if refits else 0.0}}
    finally:
        for obj, attr, raw in reversed(originals):
            setattr(obj, attr, raw)
        quiet.setLevel(level)
    return out


def print_stages(r: dict) -> None:
    from rich.table import Table

    c = console("stages", f"the worker's step in batches of up to {r['batch']} records, "
                "no broker", r)
    for name, v in r["streams"].items():
        t = Table("stage", "µs per event", "µs per batch", "calls", "µs per call",
                  title=f"{name}: {v['events']:,} events in {v['batches']:,} steps "
                        f"({v['events_per_batch']} per step), {v['us_per_event']} µs per "
                        "event")
        for label, st in v["stages"].items():
            t.add_row(label, f"{st['us_per_event']}", f"{st['us_per_batch']:,}",
                      f"{st['calls']:,}", f"{st['us_per_call']}")
        c.print(t)
        mr = v["model_refits"]
        if mr["count"]:
            c.print(f"{name}: {mr['count']} EASE refits between steps, {mr['seconds_median']} s "
                    "each (median; a thread in the worker, not in the figures above)")
