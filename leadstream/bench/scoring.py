"""``leadstream bench scoring``: the learn step of every model, and the top-10 latency per
catalog size."""

from __future__ import annotations

import statistics
import time
from datetime import UTC, datetime, timedelta

import orjson

from leadstream.bench.common import console, machine, pct


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
            "top10_ms_p99": round(pct(lat_rank, 0.99), 3),
            "recommend_ms_p50": round(statistics.median(lat), 3),
            "recommend_ms_p99": round(pct(lat, 0.99), 3),
            "learn_us_p50": round(statistics.median(learn), 1),
            "learn_mf_us_p50": round(statistics.median(learn_mf), 1),
        }
    out["learn_us_p50"] = round(statistics.median(learn_all), 1)
    out["learn_us_p99"] = round(pct(learn_all, 0.99), 1)
    out["learn_mf_us_p50"] = round(statistics.median(learn_mf_all), 1)
    out["learn_mf_us_p99"] = round(pct(learn_mf_all, 0.99), 1)
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
