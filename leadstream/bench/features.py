"""``leadstream bench features``: per-event cost of the incremental feature update on a
simulated stream (pure code, no broker), the cost with the table round trip (decode,
update, encode) and of reading all features, and the memory the ``features_by_lead``
table needs per lead at a given number of leads. The reference is the batch engine's
1.5 ms per feature extraction (its hand-off note); the ratio is printed beside it.
"""

from __future__ import annotations

import gc
import statistics
import time
import tracemalloc
from datetime import UTC, datetime, timedelta

import orjson

from leadstream.bench.common import console, machine, pct, published_frames, simulated_events

BATCH_ENGINE_MS = 1.5  # the batch engine's feature extraction, from its hand-off note


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
        "update_us_p99": round(pct(us, 0.99), 2),
        "update_us_mean": round(statistics.fmean(us), 2),
        "roundtrip_us_p50": round(statistics.median(rts), 2),
        "roundtrip_us_p99": round(pct(rts, 0.99), 2),
        "read_us_p50": round(statistics.median(rd), 2),
        "read_us_p99": round(pct(rd, 0.99), 2),
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
