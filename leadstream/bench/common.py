"""Benchmarks: commands that print figures (``leadstream bench ...``), never timed tests.

``bench features``: per-event cost of the incremental feature update on a simulated
stream (pure code, no broker), the cost with the table round trip (decode, update,
encode) and of reading all features, and the memory the ``features_by_lead`` table
needs per lead at a given number of leads. The reference is the batch engine's 1.5 ms
per feature extraction (its hand-off note); the ratio is printed beside it.
"""

from __future__ import annotations

import gc
import os
import platform
import statistics
import time
import tracemalloc
from datetime import UTC, datetime, timedelta

import orjson

BATCH_ENGINE_MS = 1.5  # the batch engine's feature extraction, from its hand-off note


def machine() -> dict:
    return {"python": platform.python_version(), "cpus": os.cpu_count(),
            "machine": platform.machine(), "date": datetime.now(UTC).date().isoformat()}


def rss_bytes(pid: int | str = "self") -> int:
    """Resident memory of a process (Linux ``/proc``), in bytes."""
    with open(f"/proc/{pid}/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def cpu_seconds(pid: int | str = "self") -> float:
    """CPU time (user + system) a process has used so far (Linux ``/proc``), in seconds."""
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()  # after the command name
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def console(name: str, detail: str, r: dict):
    """A rich console, after the benchmark's header line (what ran, on which machine)."""
    from leadstream.console import console as _console

    c = _console()
    c.print(f"[bold]leadstream bench {name}[/]  {detail}; Python {r['machine']['python']}, "
            f"{r['machine']['cpus']} CPUs")
    return c


def _pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(int(q * len(xs)), len(xs) - 1)]


def simulated_events(leads: int, days: float, seed: int):
    """(parsed events in time order, catalog attributes by property id)."""
    from leadstream.contract.events import parse_event, parse_listing
    from leadstream.models.catalog import Catalog
    from leadstream.simulate import SimConfig, Simulator

    start = datetime(2026, 3, 1, tzinfo=UTC)
    sim = Simulator(SimConfig(leads=leads, properties=max(200, leads // 2), days=days,
                              seed=seed, start=start))
    cat = Catalog()
    events = []
    far = timedelta(days=3650)
    for rec in sim.records():
        if rec.topic == "properties":
            if rec.value is not None:
                cat.upsert(parse_listing(rec.value))
        else:
            events.append(parse_event(rec.value, now=start + far, max_age=far))
    attrs = {pid: cat.attributes(pid) for pid in cat.index}
    return events, attrs


def lead_records(leads: int, days: float, seed: int) -> list[bytes]:
    """The table values (``features/record.py``: features, profile and the last list and
    score published in one record) of ``leads`` simulated leads after ``days`` of
    history, as the worker stores them (last updated now, so none is idle; the published
    frames from :func:`published_frames` of at most 200 leads over 3 days)."""
    from leadstream.features import lead as F
    from leadstream.features import record
    from leadstream.features.profile import LeadProfile
    from leadstream.features.profile import update as profile_update

    events, attrs = simulated_events(leads, days, seed)
    now = time.time()
    feats: dict[str, F.LeadFeatures] = {}
    profiles: dict[str, LeadProfile] = {}
    for ev in events:
        listing = attrs.get(ev.property_id) if ev.property_id else None
        F.update(feats.setdefault(ev.lead_id, F.LeadFeatures()), ev, listing, now=now)
        profile_update(profiles.setdefault(ev.lead_id, LeadProfile()), ev, listing)
    frames = published_frames(min(leads, 200), min(days, 3.0), seed)
    return [record.pack(F.encode(feats[lead]), orjson.dumps(p.to_dict()),
                        frames[i % len(frames)]) for i, (lead, p) in enumerate(profiles.items())]


def published_frames(leads: int, days: float, seed: int) -> list[bytes]:
    """The stored frames of the last list and score published (``features/record.py``)
    of ``leads`` simulated leads replayed through the worker's step (``streams.step``),
    its catalog loaded from the same simulation."""
    from leadstream.contract.settings import Settings
    from leadstream.features import record
    from leadstream.simulate import SimConfig, Simulator
    from leadstream.streams.step import LeadStore, Step, replay

    start = datetime.now(UTC) - timedelta(days=days + 4)
    sim = Simulator(SimConfig(leads=leads, properties=max(200, leads // 2), days=days,
                              seed=seed, start=start))
    step, store = Step(Settings(), 4), LeadStore(cache_size=0)
    pairs = []
    for rec in sim.records():
        if rec.topic == "properties":
            step.load_listing(rec.value, rec.key)
        else:
            pairs.append((rec.key, rec.value))
    for _ in replay(step, pairs, store, batch=50):
        pass
    frames = [record.published(b) for b in store.packed.values()]
    return [f for f in frames if f]


def bench_features(leads: int = 2000, days: float = 30.0, seed: int = 7,
                   memory_leads: int = 100_000) -> dict:
    from leadstream.features import lead as F
    from leadstream.features import record
    from leadstream.features.profile import LeadProfile
    from leadstream.features.profile import update as profile_update

    t0 = time.perf_counter()
    events, attrs = simulated_events(leads, days, seed)
    sim_s = time.perf_counter() - t0

    # 1. the pure update, state kept as objects
    states: dict[str, F.LeadFeatures] = {}
    upd = []
    clock = time.perf_counter_ns
    gc.disable()
    try:
        for ev in events:
            s = states.get(ev.lead_id)
            if s is None:
                s = states[ev.lead_id] = F.LeadFeatures()
            listing = attrs.get(ev.property_id) if ev.property_id else None
            a = clock()
            F.update(s, ev, listing)
            upd.append(clock() - a)
        # 2. as the worker does it: decode the stored bytes, update, encode
        blobs: dict[str, bytes] = {}
        rt = []
        for ev in events:
            listing = attrs.get(ev.property_id) if ev.property_id else None
            a = clock()
            blob = blobs.get(ev.lead_id)
            s = F.decode(blob) if blob is not None else F.LeadFeatures()
            F.update(s, ev, listing)
            blobs[ev.lead_id] = F.encode(s)
            rt.append(clock() - a)
        # 3. reading every feature of a lead
        reads = []
        for s in states.values():
            a = clock()
            F.compute(s)
            reads.append(clock() - a)
    finally:
        gc.enable()

    # 4. memory of the table at memory_leads leads: distinct copies of the simulated
    #    states under distinct keys, measured with tracemalloc (keys, values, dict)
    sample = list(blobs.values())
    profiles = {}
    for ev in events:
        p = profiles.setdefault(ev.lead_id, LeadProfile())
        profile_update(p, ev, attrs.get(ev.property_id) if ev.property_id else None)
    psample = [orjson.dumps(p.to_dict()) for p in profiles.values()]
    # what the table holds: both in one record per lead (features/record.py), with the
    # last list and score published for the lead (frames of a replay through the step
    # of the first 200 leads over at most 3 days: a list's size does not grow with history)
    frames = published_frames(min(leads, 200), min(days, 3.0), seed)
    records = [record.pack(blobs[lead], orjson.dumps(p.to_dict()), frames[i % len(frames)])
               for i, (lead, p) in enumerate(profiles.items()) if lead in blobs]

    def table_bytes(values: list[bytes]) -> float:
        gc.collect()
        tracemalloc.start()
        base = tracemalloc.get_traced_memory()[0]
        table = {f"lead-{i:08d}".encode(): bytes(bytearray(values[i % len(values)]))
                 for i in range(memory_leads)}
        used = tracemalloc.get_traced_memory()[0] - base
        tracemalloc.stop()
        del table
        return used / memory_leads

    feat_bpl = table_bytes(sample)
    prof_bpl = table_bytes(psample)

    def decoded_bytes(values: list[bytes]) -> float:
        """What a lead costs kept decoded in the worker's cache (streams.step.LeadStore)."""
        from leadstream.streams.step import LeadState

        gc.collect()
        tracemalloc.start()
        base = tracemalloc.get_traced_memory()[0]
        live = [LeadState.unpack(v) for v in values]
        used = tracemalloc.get_traced_memory()[0] - base
        tracemalloc.stop()
        del live
        return used / len(values)

    full = _dedup_full_set()
    us = [x / 1000 for x in upd]
    rts = [x / 1000 for x in rt]
    rd = [x / 1000 for x in reads]
    return {
        "benchmark": "features",
        "machine": machine(),
        "stream": {"leads": len(states), "events": len(events), "days": days, "seed": seed,
                   "simulation_seconds": round(sim_s, 1)},
        "features": {"numerical": len(F.compute(F.LeadFeatures()).numerical),
                     "categorical": len(F.compute(F.LeadFeatures()).categorical)},
        "update_us_p50": round(statistics.median(us), 2),
        "update_us_p99": round(_pct(us, 0.99), 2),
        "update_us_mean": round(statistics.fmean(us), 2),
        "roundtrip_us_p50": round(statistics.median(rts), 2),
        "roundtrip_us_p99": round(_pct(rts, 0.99), 2),
        "read_us_p50": round(statistics.median(rd), 2),
        "read_us_p99": round(_pct(rd, 0.99), 2),
        "reference_ms": BATCH_ENGINE_MS,
        "speedup_vs_reference_p50": round(BATCH_ENGINE_MS * 1000 / statistics.median(us), 1),
        "memory_leads": memory_leads,
        "bytes_per_lead": round(feat_bpl),
        "stored_bytes_per_lead_mean": round(statistics.fmean(len(b) for b in sample)),
        "stored_bytes_per_lead_max": max(len(b) for b in sample),
        "profile_bytes_per_lead": round(prof_bpl),
        "published_stored_bytes_per_lead_mean": round(statistics.fmean(map(len, frames))),
        "published_json_bytes_per_lead_mean": round(statistics.fmean(
            sum(len(x or b"") for x in record.unpack_published(f)) for f in frames)),
        "total_state_bytes_per_lead": round(table_bytes(records)),
        "decoded_bytes_per_lead": round(decoded_bytes(records)),
        "ids_remembered_mean": round(statistics.fmean(
            len(F.decode(b).ids) for b in sample), 1),
        "dedup_full_set": full,
    }


def _dedup_full_set() -> dict:
    """The bound of the event-id set: a lead with more events in 24 h than the set holds;
    what its ids cost in its features state and in its stored record."""
    import random

    from leadstream.contract.events import make_event
    from leadstream.features import lead as F
    from leadstream.features import record
    from leadstream.features.idset import EventIdSet

    r, t = random.Random(5), datetime(2026, 3, 1, tzinfo=UTC)
    s = F.LeadFeatures()
    for i in range(3 * F.DEDUP_MAX_IDS):  # an event every 0-300 s: more than fit in 24 h
        t += timedelta(seconds=r.randint(0, 300))
        F.update(s, make_event("property_viewed", event_id=f"{i:08x}-6f1c-4f0e-9b2a-event",
                               lead_id="L", session_id="s", timestamp=t, property_id="P1",
                               payload={"duration_seconds": 5}), None)
    empty = F.decode(F.encode(s))
    empty.ids = EventIdSet()
    n = len(s.ids)
    state = len(F.encode(s)) - len(F.encode(empty))
    stored = len(record.pack(F.encode(s), None)) - len(record.pack(F.encode(empty), None))
    return {"ids": n, "ttl_seconds": F.DEDUP_TTL, "state_bytes": state,
            "stored_bytes": stored, "stored_bytes_per_id": round(stored / n, 2),
            "features_stored_bytes": len(record.pack(F.encode(s), None))}


def print_features(r: dict) -> None:
    from rich.table import Table

    st = r["stream"]
    c = console("features", f"{st['events']} events, {st['leads']} leads, {st['days']:g} "
                f"simulated days (seed {st['seed']}); {r['features']['numerical']} numerical + "
                f"{r['features']['categorical']} categorical features", r)
    t = Table("figure", "p50", "p99", "note")
    t.add_row("update (µs/event)", f"{r['update_us_p50']}", f"{r['update_us_p99']}",
              f"{r['speedup_vs_reference_p50']}x faster than the batch engine's "
              f"{r['reference_ms']} ms")
    t.add_row("decode+update+encode (µs/event)", f"{r['roundtrip_us_p50']}",
              f"{r['roundtrip_us_p99']}", "what the worker pays per event")
    t.add_row("read all features (µs)", f"{r['read_us_p50']}", f"{r['read_us_p99']}",
              "compute() from the state")
    c.print(t)
    c.print(f"memory at {r['memory_leads']:,} leads: features "
            f"[bold]{r['bytes_per_lead']} B/lead[/] (stored state mean "
            f"{r['stored_bytes_per_lead_mean']} B, max {r['stored_bytes_per_lead_max']} B); "
            f"profile {r['profile_bytes_per_lead']} B/lead; the last list and score "
            f"published {r['published_stored_bytes_per_lead_mean']} B stored "
            f"({r['published_json_bytes_per_lead_mean']} B of JSON); the features_by_lead "
            f"value (all in one record) {r['total_state_bytes_per_lead']} B/lead; kept "
            f"decoded in the worker's cache {r['decoded_bytes_per_lead']:,} B/lead")
    d = r["dedup_full_set"]
    c.print(f"event ids: {r['ids_remembered_mean']} remembered per lead on average; the bound, "
            f"a full set of {d['ids']} (within {d['ttl_seconds'] / 3600:g} h of event time): "
            f"{d['state_bytes']:,} B in the state, [bold]{d['stored_bytes']:,} B stored[/] "
            f"({d['stored_bytes_per_id']} B per id)")


def _synthetic_catalog(n: int, seed: int):
    """``n`` listings across the simulator's cities and types (fast to build)."""
    import random

    from leadstream.contract.events import parse_listing
    from leadstream.simulate import CITIES, TYPE_PRICE, TYPES, WORDS

    rng = random.Random(seed)
    cities = list(CITIES)
    out = []
    for i in range(n):
        city = rng.choice(cities)
        t = rng.choice(TYPES)
        median = CITIES[city][0] * TYPE_PRICE[t]
        out.append(parse_listing(orjson.dumps({
            "property_id": f"B{i:07d}", "status": "active",
            "price": round(median * rng.lognormvariate(0, 0.35), -3),
            "bedrooms": rng.randint(1, 5), "bathrooms": rng.choice([1, 1.5, 2, 2.5, 3]),
            "square_feet": rng.randint(500, 4000), "property_type": t, "city": city,
            "latitude": CITIES[city][1] + rng.uniform(-0.2, 0.2),
            "longitude": CITIES[city][2] + rng.uniform(-0.2, 0.2),
            "description": " ".join(rng.sample(WORDS, 4)),
        })))
    return out


def bench_scoring(sizes=(1_000, 10_000, 100_000), leads: int = 2000, events: int = 30_000,
                  queries: int = 300, seed: int = 7) -> dict:
    """Learn-step cost of all models, and top-10 latency per catalog size."""
    import random

    from leadstream.contract.events import make_event
    from leadstream.features.profile import LeadProfile
    from leadstream.features.profile import update as profile_update
    from leadstream.models.catalog import Catalog
    from leadstream.models.suite import ModelSuite

    out = {"benchmark": "scoring", "machine": machine(), "leads": leads,
           "events_learned": events, "queries": queries, "catalogs": {}}
    kinds = [("property_viewed", {"duration_seconds": 30}),
             ("property_viewed", {"duration_seconds": 60}), ("property_saved", {}),
             ("property_swiped", {"direction": "right"}),
             ("property_swiped", {"direction": "left"}), ("property_liked", {})]
    learn_all, learn_mf_all = [], []
    for n in sizes:
        rng = random.Random(seed)
        cat, suite = Catalog(capacity=n), ModelSuite(seed=seed)
        for listing in _synthetic_catalog(n, seed):
            row = cat.upsert(listing)
            suite.on_listing(cat, row, {"description": listing.description})
        profiles: dict[str, LeadProfile] = {}
        t = datetime(2026, 3, 1, tzinfo=UTC)
        learn, learn_mf = [], []
        mf_learn_one = suite.mf.learn_one

        def timed_mf(*a, _learn=mf_learn_one, _out=learn_mf):
            t0 = time.perf_counter_ns()
            _learn(*a)
            _out.append((time.perf_counter_ns() - t0) / 1000)

        suite.mf.learn_one = timed_mf  # the matrix factorisation's own step, inside the suite's
        # each lead has a home city block of listings it mostly interacts with
        for i in range(events):
            lead = f"L{rng.randrange(leads)}"
            home = hash(lead) % max(n // 50, 1)
            row = (home * 50 + rng.randrange(50)) % n if rng.random() < 0.8 else rng.randrange(n)
            et, payload = rng.choice(kinds)
            ev = make_event(et, event_id=f"e{i}", lead_id=lead, session_id="s",
                            timestamp=t + timedelta(seconds=10 * i), property_id=cat.ids[row],
                            payload=payload)
            p = profiles.setdefault(lead, LeadProfile())
            a = time.perf_counter_ns()
            suite.learn_one(cat, lead, p, ev)
            learn.append((time.perf_counter_ns() - a) / 1000)
            profile_update(p, ev, cat.attributes(cat.ids[row]))
        learn_all += learn
        learn_mf_all += learn_mf
        lat, lat_rank = [], []
        names = list(profiles)
        for q in range(queries):
            lead = names[q % len(names)]
            a = time.perf_counter()
            suite.top_k("hybrid", cat, lead, profiles[lead], 10)
            lat_rank.append((time.perf_counter() - a) * 1000)
            a = time.perf_counter()
            suite.recommend(cat, lead, profiles[lead], 10)
            lat.append((time.perf_counter() - a) * 1000)
        out["catalogs"][str(n)] = {
            "top10_ms_p50": round(statistics.median(lat_rank), 3),
            "top10_ms_p99": round(_pct(lat_rank, 0.99), 3),
            "recommend_ms_p50": round(statistics.median(lat), 3),
            "recommend_ms_p99": round(_pct(lat, 0.99), 3),
            "learn_us_p50": round(statistics.median(learn), 1),
            "learn_mf_us_p50": round(statistics.median(learn_mf), 1),
        }
    out["learn_us_p50"] = round(statistics.median(learn_all), 1)
    out["learn_us_p99"] = round(_pct(learn_all, 0.99), 1)
    out["learn_mf_us_p50"] = round(statistics.median(learn_mf_all), 1)
    out["learn_mf_us_p99"] = round(_pct(learn_mf_all, 0.99), 1)
    return out


def print_scoring(r: dict) -> None:
    from rich.table import Table

    c = console("scoring", f"{r['events_learned']:,} events learned per catalog, "
                f"{r['leads']:,} leads, {r['queries']} queries", r)
    t = Table("listings", "top-10 p50 ms", "top-10 p99 ms", "with explanations p50 ms",
              "p99 ms", "learn p50 µs", "MF learn p50 µs")
    for n, f in r["catalogs"].items():
        t.add_row(f"{int(n):,}", f"{f['top10_ms_p50']}", f"{f['top10_ms_p99']}",
                  f"{f['recommend_ms_p50']}", f"{f['recommend_ms_p99']}", f"{f['learn_us_p50']}",
                  f"{f['learn_mf_us_p50']}")
    c.print(t)
    c.print(f"learn step, all models: p50 {r['learn_us_p50']} µs, p99 {r['learn_us_p99']} µs; "
            f"matrix factorisation alone: p50 {r['learn_mf_us_p50']} µs, "
            f"p99 {r['learn_mf_us_p99']} µs")
