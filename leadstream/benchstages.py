"""``leadstream bench stages``: where the per-event time goes, with no broker.

Runs the worker's per-record code (``Pipeline.ingest`` + ``apply``, the lead's record
packed as the table holds it) on two streams and times each stage by wrapping the
methods that implement it with a timer:

- **mixed**: the simulator's events of ``leads`` leads (one day), as ``bench pipeline``
  feeds its backlog;
- **saves**: then ``saves`` saves of 10,000 fresh leads, as ``bench pipeline`` offers
  load for its latency figures (every one is due a new, explained list).

Stages nest (``suite.top_k`` is inside ``suite.recommend``, inside ``recommend``); the
wrappers add about a microsecond per call, so the total is a little above an
unwrapped run's.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from datetime import UTC, datetime, timedelta

from leadstream.bench import console, machine
from leadstream.benchpipe import save_event

# (label, owner, attribute): the stages timed, outermost first
_STAGES = [
    ("apply (all of it)", "Pipeline", "apply"),
    ("ingest: parse and validate", "Pipeline", "ingest"),
    ("recommend", "Pipeline", "_recommend"),
    ("  rank + explain", "ModelSuite", "recommend"),
    ("    rank (top_k)", "ModelSuite", "top_k"),
    ("    explain (reasons)", "ModelSuite", "reasons"),
    ("features: compute all", "features", "compute"),
    ("features: update", "features", "update"),
    ("models: learn", "ModelSuite", "learn_one"),
    ("online quality sampling", "Pipeline", "_measure"),
    ("lead score", "Pipeline", "_score"),
    ("record pack (compress)", "record", "pack"),
    ("record unpack (decompress)", "record", "unpack"),
]


def bench_stages(leads: int = 1000, saves: int = 10_000, seed: int = 7) -> dict:
    from features import lead as features
    from features import record
    from leadstream.settings import Settings
    from leadstream.simulate import SimConfig, Simulator
    from models.suite import ModelSuite
    from streams import pipeline as P

    owners = {"Pipeline": P.Pipeline, "ModelSuite": ModelSuite, "features": features,
              "record": record}
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
    catalog, mixed = [], []
    for r in sim.records():
        (catalog if r.topic == "properties" else mixed).append((r.key, r.value))
    save_stream = [(f"BL{i % 10_000:06d}".encode(),
                    save_event(f"lat-{i}", f"BL{i % 10_000:06d}", f"P{i % 900:06d}"))
                   for i in range(saves)]
    pipe = P.Pipeline(Settings(), 4)
    for key, value in catalog:
        pipe.load_listing(value, key)
    table: dict[bytes, bytes] = {}

    def run(stream) -> tuple[int, float]:
        n, start = 0, time.perf_counter()
        for key, raw in stream:
            res = pipe.handle(raw, key, table, time.time())
            n += not isinstance(res, P.DeadLetter | P.Rekey)
        return n, time.perf_counter() - start

    quiet = logging.getLogger("leadstream.worker")
    level = quiet.level
    quiet.setLevel(logging.ERROR)  # online-quality drift warnings: not this run's point
    for label, owner, attr in _STAGES:
        obj = owners[owner]
        fn = getattr(obj, attr)
        originals.append((obj, attr, fn))
        setattr(obj, attr, timed(label, fn))
    out = {"benchmark": "stages", "machine": machine(), "streams": {}}
    try:
        for name, stream in (("mixed", mixed), ("saves", save_stream)):
            spent.clear()
            calls.clear()
            n, seconds = run(stream)
            out["streams"][name] = {
                "events": n, "us_per_event": round(1e6 * seconds / n, 1),
                "stages": {label: {"us_per_event": round(1e6 * spent[label] / n, 1),
                                   "calls": calls[label],
                                   "us_per_call": round(1e6 * spent[label] / calls[label], 1)
                                   if calls[label] else 0.0}
                           for label, _, _ in _STAGES}}
    finally:
        for obj, attr, fn in reversed(originals):
            setattr(obj, attr, fn)
        quiet.setLevel(level)
    return out


def print_stages(r: dict) -> None:
    from rich.table import Table

    c = console("stages", "the worker's per-record code, no broker", r)
    for name, v in r["streams"].items():
        t = Table("stage", "µs per event", "calls", "µs per call",
                  title=f"{name}: {v['events']:,} events, {v['us_per_event']} µs per event")
        for label, st in v["stages"].items():
            t.add_row(label, f"{st['us_per_event']}", f"{st['calls']:,}", f"{st['us_per_call']}")
        c.print(t)
