"""``leadstream bench pipeline``: the worker against its own ceiling, on a real broker.

1. **ceiling**: an aiokafka consume-decode-produce passthrough of the same events
   (no processing), measured in the same run; and the **Faust floor**
   (:mod:`leadstream.bench.floor`): the same passthrough as a Faust agent configured like
   the worker, which splits the gap between the ceiling and the pipeline into Faust's
   share and leadstream's;
2. **pipeline**: a worker process, once ready (catalog read, partitions held), given the
   events as fast as the producer sends them; events per second from the first send
   until every offset is accounted for, and the worker process's CPU time per event
   over the same span (a worker started on a topic already holding them would have
   worked through part of it before it answered ready);
3. **latency**: a running worker fed at fixed offered loads (strong-signal events of
   ``latency_leads`` leads, each due a recommendation); producer send to the
   recommendation's arrival at a consumer, p50/p95/p99, and event time to emission;
   then the same loads of simulated traffic of every kind (views, swipes, searches,
   sessions, saves, ...) of ``latency_leads`` leads, sent as live events
   (:func:`restamp`), where only the events due a list (a session start, a strong signal,
   a lead's first event, a changed top-k) are timed;
4. **two workers**: the same backlog split over two worker processes.

Both backlog runs report ``cores_busy``: the CPU seconds the workers, the broker (the
embedded one) and the benchmark's own process (its producer and scrapes) spent over
the run, per second of it. Where that total is near the machine's cores, a second
worker has no core of its own to run on. ``gc_pauses``: the one worker's garbage
collections per generation over its backlog and latency runs (``leadstream_gc_pause_seconds``;
with ``LEADSTREAM_GC_FULL_INTERVAL_SECONDS=0``, CPython's own schedule).

Uses the embedded Apache Kafka unless ``LEADSTREAM_KAFKA_BOOTSTRAP`` is set.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
import urllib.error
import urllib.request
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson

from leadstream.bench.common import (
    bench_worker,
    console,
    cpu_seconds,
    embedded_or_configured,
    finish_work,
    machine,
    pct,
    produce,
    rss_bytes,
    save_event,
)
from leadstream.bench.harness import Process, ProcessFailed, stop_all, wait_ready
from leadstream.ops.metrics import GC_GENERATIONS
from leadstream.scrape import scrape, total
from leadstream.simulate import restamp


async def _ceiling(s, values: list[tuple[bytes, bytes]]) -> float:
    """Consume-decode-produce passthrough of ``values``: events per second."""
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    src, dst = f"{s.topic_prefix}bench-in", f"{s.topic_prefix}bench-out"
    admin = AIOKafkaAdminClient(bootstrap_servers=s.kafka_bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(src, 4, 1), NewTopic(dst, 4, 1)])
    finally:
        await admin.close()
    await produce(s, src, values)
    consumer = AIOKafkaConsumer(src, group_id=f"{s.topic_prefix}ceiling",
                                auto_offset_reset="earliest", max_poll_records=5000,
                                **s.kafka_client_kwargs())
    producer = AIOKafkaProducer(linger_ms=5, max_batch_size=262_144, **s.kafka_client_kwargs())
    await consumer.start()
    await producer.start()
    n, t0 = 0, None
    try:
        while n < len(values):
            batch = await consumer.getmany(timeout_ms=1000, max_records=5000)
            for msgs in batch.values():
                for m in msgs:
                    if t0 is None:
                        t0 = time.perf_counter()
                    ev = orjson.loads(m.value)
                    await producer.send(dst, orjson.dumps(ev), key=m.key)
                    n += 1
        await producer.flush()
        return n / (time.perf_counter() - t0)
    finally:
        await consumer.stop()
        await producer.stop()


def _floor(s, work: Path, n: int, mode: str = "events", limit: float = 300.0) -> float:
    """The Faust floor (:mod:`leadstream.bench.floor`, ``mode`` events or batches) on the
    ceiling's input topic, which holds ``n`` events: events per second."""
    import selectors

    cmd = [sys.executable, "-m", "leadstream.bench.floor", s.kafka_bootstrap,
           f"{s.topic_prefix}floor-{mode}", f"{s.topic_prefix}bench-in",
           f"{s.topic_prefix}bench-out", str(n), str(work / f"floor-{mode}"), mode]
    floor = Process(cmd, work / "floor.log", stdout_pipe=True)
    try:
        sel = selectors.DefaultSelector()
        sel.register(floor.proc.stdout, selectors.EVENT_READ)
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline and floor.proc.poll() is None:
            line = floor.proc.stdout.readline() if sel.select(timeout=1.0) else b""
            if line.strip():
                r = orjson.loads(line)
                return r["events"] / r["seconds"]
        raise ProcessFailed("the Faust floor gave no figure:\n" + floor.log_tail(2000))
    finally:
        floor.stop()


def _drain(s, urls: list[str], n_input: int, limit: float = 1800.0,
           t0: float | None = None) -> dict:
    """Wait until the workers at ``urls`` accounted for ``n_input`` interactions; their
    summed counters and the seconds it took (since ``t0``, default now)."""
    t0 = time.perf_counter() if t0 is None else t0
    names = ("leadstream_events_processed_total", "leadstream_events_duplicate_total",
             "leadstream_events_replayed_total", "leadstream_recommendation_hits_total")
    while True:
        ms = [scrape(u) for u in urls]
        sums = {n: sum(total(m, n) for m in ms) for n in names}
        sums["dead_lettered"] = sum(total(m, "leadstream_events_dead_lettered_total",
                                           topic=s.topic("interactions")) for m in ms)
        done = (sums["leadstream_events_processed_total"]
                + sums["leadstream_events_duplicate_total"] + sums["dead_lettered"])
        if done >= n_input or time.perf_counter() - t0 > limit:
            each = [total(m, "leadstream_events_processed_total") for m in ms]
            return {"seconds": time.perf_counter() - t0, "accounted": done, **sums,
                    "processed_per_worker": each}
        time.sleep(0.2)


def _cpu(pids: dict[str, list[int]]) -> dict[str, float]:
    """CPU seconds used so far by each named group of processes."""
    return {name: sum(cpu_seconds(p) for p in group) for name, group in pids.items()}


def _cores_busy(before: dict[str, float], after: dict[str, float], seconds: float
                ) -> dict[str, float]:
    """Cores each group kept busy between two :func:`_cpu` readings ``seconds`` apart,
    and their total.

    >>> _cores_busy({"worker": 1.0, "broker": 0.5}, {"worker": 2.5, "broker": 1.0}, 2.0)
    {'worker': 0.75, 'broker': 0.25, 'total': 1.0}
    """
    out = {k: round((after[k] - before[k]) / seconds, 2) for k in before}
    out["total"] = round(sum(out.values()), 2)
    return out


def _gc_pauses(m) -> dict[str, dict]:
    """Per generation, from a worker's scrape: its garbage collections so far, the
    seconds spent in them, and how many took over 50 ms (ops/gcpolicy.py)."""
    name = "leadstream_gc_pause_seconds"
    out = {}
    for g in GC_GENERATIONS:
        n = total(m, f"{name}_count", generation=g)
        out[g] = {"collections": int(n), "seconds": round(total(m, f"{name}_sum", generation=g), 3),
                  "over_50ms": int(n - total(m, f"{name}_bucket", generation=g, le="0.05"))}
    return out


def _event_counts(url: str, leads: list[str]) -> dict[str, int]:
    """Events applied per lead, from ``GET /leads/{id}`` (any worker routes it)."""
    out = {}
    for lead in leads:
        try:
            with urllib.request.urlopen(f"{url}/leads/{lead}", timeout=10) as r:
                out[lead] = orjson.loads(r.read())["profile"]["event_count"]
        except urllib.error.HTTPError as err:
            if err.code != 404:
                raise
            out[lead] = 0
    return out


async def _latency(s, url: str, load: float, seconds: float, leads: int, start: int,
                   mixed: list[tuple[bytes, bytes]] | None = None,
                   pids: dict[str, list[int]] | None = None) -> dict:
    """Offer ``load`` events/s for ``seconds``; the latency of the lists they are due.

    Saves (each due a list) of ``leads`` leads; or, with ``mixed``, simulated traffic of
    all kinds (``restamp``ed, from ``start``), of which only some events are due a list.
    ``pids``: the process groups whose cores kept busy while the load was offered are
    reported (``cores_busy``)."""
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

    consumer = AIOKafkaConsumer(s.topic("recommendations"), group_id=None,
                                auto_offset_reset="latest", **s.kafka_client_kwargs())
    await consumer.start()
    await asyncio.sleep(1.0)
    producer = AIOKafkaProducer(linger_ms=0, **s.kafka_client_kwargs())
    await producer.start()
    sent: dict[str, float] = {}
    lat, lag = [], []

    async def receive():
        while True:
            batch = await consumer.getmany(timeout_ms=200)
            now = time.perf_counter()
            for msgs in batch.values():
                for m in msgs:
                    rec = orjson.loads(m.value)
                    t = sent.get(rec["source_event_id"])
                    if t is not None:
                        lat.append((now - t) * 1000)
                        e = datetime.fromisoformat(rec["event_time"])
                        lag.append((datetime.fromisoformat(rec["emitted_at"]) - e)
                                   .total_seconds() * 1000)

    rx = asyncio.create_task(receive())
    n_total = int(load * seconds)
    cpu0 = _cpu(pids or {})
    t0 = time.perf_counter()
    try:
        for i in range(n_total):
            due = t0 + i / load
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            if mixed is None:
                key = f"BL{(start + i) % leads:06d}".encode()
                eid = f"lat-{load:g}-{i}"
                body = save_event(eid, key.decode(), f"P{(start + i) % 900:06d}")
            else:
                key, value = mixed[(start + i) % len(mixed)]
                eid = f"mx-{load:g}-{i}"
                body = restamp(value, eid)
            sent[eid] = time.perf_counter()
            await producer.send(s.topic("interactions"), body, key=key)
        took = time.perf_counter() - t0
        offered = n_total / took
        cores = _cores_busy(cpu0, _cpu(pids or {}), took)
        deadline = time.perf_counter() + 30
        if mixed is None:  # every save gets its list
            while len(lat) < n_total and time.perf_counter() < deadline:
                await asyncio.sleep(0.2)
        else:  # only some events are due one: until none arrived for 3 s
            seen = -1
            while seen != len(lat) and time.perf_counter() < deadline:
                seen = len(lat)
                await asyncio.sleep(3.0)
    finally:
        rx.cancel()
        await producer.stop()
        await consumer.stop()
    return {"offered_events_per_second": round(offered, 1), "events": n_total,
            "recommendations": len(lat),
            "latency_ms": {"p50": round(pct(lat, 0.5), 2) if lat else None,
                           "p95": round(pct(lat, 0.95), 2) if lat else None,
                           "p99": round(pct(lat, 0.99), 2) if lat else None},
            "event_time_lag_ms_p99": round(pct(lag, 0.99), 2) if lag else None,
            "cores_busy": cores}


def _two_workers(base, work: Path, catalog: list, inter: list, one: dict,
                 counts_one: dict[str, int], broker_pids: list[int]) -> dict:
    """Two worker processes on a fresh copy of the backlog, against one worker's run."""
    from leadstream.ops.broker import free_port
    from leadstream.streams.topics import apply_topics

    s = base.model_copy(update={"topic_prefix": f"b{uuid.uuid4().hex[:6]}-",
                                "web_port": free_port(), "worker_data_dir": work / "w2a"})
    s2 = s.model_copy(update={"web_port": free_port(), "worker_data_dir": work / "w2b"})
    asyncio.run(apply_topics(s))
    asyncio.run(produce(s, s.topic("properties"), catalog))
    workers = [bench_worker(s, work / "worker-2a.log", ready=False),
               bench_worker(s2, work / "worker-2b.log", ready=False)]
    try:
        wait_ready(workers, 120.0)
        urls = [w.url for w in workers]
        pids = {"workers": [w.pid for w in workers], "broker": broker_pids, "bench": [os.getpid()]}
        cpu0, t0 = _cpu(pids), time.perf_counter()
        asyncio.run(produce(s, s.topic("interactions"), inter))
        two = _drain(s, urls, len(inter), t0=t0)
        cores = _cores_busy(cpu0, _cpu(pids), two["seconds"])
        counts = _event_counts(urls[0], list(counts_one))
    finally:
        stop_all(workers)
    rate = two["accounted"] / two["seconds"]
    hits1, hits2 = one["leadstream_recommendation_hits_total"], two[
        "leadstream_recommendation_hits_total"]
    differ = sorted(k for k in counts_one if counts.get(k) != counts_one[k])
    return {"events_per_second": round(rate, 1),
            "speedup_vs_one": round(rate / (one["accounted"] / one["seconds"]), 3),
            "accounted": int(two["accounted"]), "input": len(inter),
            "replayed": int(two["leadstream_events_replayed_total"]),
            "leads_compared": len(counts_one), "leads_differing": len(differ),
            "differing_examples": differ[:5],
            "recommendation_hits": int(hits2), "recommendation_hits_one_worker": int(hits1),
            "hits_ratio_to_one": round(hits2 / hits1, 3) if hits1 else None,
            "cores_busy": cores,
            "processed_per_worker": [int(x) for x in two["processed_per_worker"]]}


def bench_pipeline(events: int = 20_000, leads: int = 2000,
                   loads=(200.0, 500.0, 750.0, 1000.0),
                   seconds: float = 10.0, latency_leads: int = 10_000, seed: int = 7,
                   two_workers: bool = True) -> dict:
    from leadstream.ops.broker import free_port
    from leadstream.simulate import SimConfig, Simulator
    from leadstream.streams.topics import apply_topics

    base, work, broker = embedded_or_configured("bench")
    out = {"benchmark": "pipeline", "machine": machine(), "events": events, "leads": leads,
           "latency_leads": latency_leads}
    procs = []
    failed = True
    try:
        s = base.model_copy(update={"topic_prefix": f"b{uuid.uuid4().hex[:6]}-",
                                    "web_port": free_port(), "worker_data_dir": work / "w1"})
        asyncio.run(apply_topics(s))
        days = max(1.0, events / (leads * 40))
        sim = Simulator(SimConfig(leads=leads, properties=1000, days=days, seed=seed,
                                  start=datetime.now(UTC) - timedelta(days=days + 3)))
        catalog, inter = [], []
        for r in sim.records():
            if r.topic == "properties":
                catalog.append((r.key, r.value))
            elif len(inter) < events:
                inter.append((r.key, r.value))
        out["events"] = len(inter)  # what the simulator gave, at most ``events``
        # 1. ceiling, same events, same broker
        out["ceiling_events_per_second"] = round(asyncio.run(_ceiling(s, inter)), 1)
        # 1b. the Faust floor: a Faust agent doing the passthrough on the same topic, one
        # event at a time and in batches as the worker takes them
        out["faust_floor_events_per_second"] = round(_floor(s, work, len(inter)), 1)
        out["faust_floor_batched_events_per_second"] = round(
            _floor(s, work, len(inter), "batches"), 1)
        out["faust_floor_lane_events_per_second"] = round(
            _floor(s, work, len(inter), "lane"), 1)
        # 2. the worker on a backlog
        asyncio.run(produce(s, s.topic("properties"), catalog))
        log = work / "worker.log"
        proc = bench_worker(s, log)  # ready: the catalog read, its partitions held
        procs.append(proc)
        url = proc.url
        broker_pids = [broker.process.pid] if broker is not None else []
        pids = {"worker": [proc.pid], "broker": broker_pids, "bench": [os.getpid()]}
        cpu0, t0 = _cpu(pids), time.perf_counter()
        asyncio.run(produce(s, s.topic("interactions"), inter))
        one = _drain(s, [url], len(inter), t0=t0)
        cpu1 = _cpu(pids)
        # the worker's own CPU (its threads, not the broker's) per event of the backlog
        out["worker_cpu_us_per_event"] = round(
            1e6 * (cpu1["worker"] - cpu0["worker"]) / max(one["accounted"], 1), 1)
        out["cores_busy"] = _cores_busy(cpu0, cpu1, one["seconds"])
        rate = one["accounted"] / one["seconds"]
        out["pipeline_events_per_second"] = round(rate, 1)
        out["ratio_to_ceiling"] = round(rate / out["ceiling_events_per_second"], 4)
        out["ratio_to_faust_floor"] = round(rate / out["faust_floor_events_per_second"], 4)
        out["ratio_to_faust_floor_batched"] = round(
            rate / out["faust_floor_batched_events_per_second"], 4)
        out["ratio_to_faust_floor_lane"] = round(
            rate / out["faust_floor_lane_events_per_second"], 4)
        counts_one = _event_counts(url, sorted({k.decode() for k, _ in inter if k}))
        time.sleep(6)  # one idle-lead sweep measures the state
        m = scrape(url)
        n_leads = total(m, "leadstream_leads")
        out["bytes_per_lead"] = round(total(m, "leadstream_lead_state_bytes")
                                      / max(n_leads, 1))
        out["worker_rss_mb"] = round(rss_bytes(proc.pid) / 2**20, 1)  # after the backlog
        # 3. latency at offered loads, on the same (now idle) worker: saves, then the
        # same loads of simulated traffic of ``latency_leads`` leads (all kinds)
        n_mixed = int(sum(loads) * seconds)
        sim = Simulator(SimConfig(leads=latency_leads, properties=1000, days=1.0, seed=seed,
                                  new_listings_per_day=0, sold_per_day=0,
                                  start=datetime.now(UTC) - timedelta(days=4)))
        mixed = []
        for r in sim.records():
            if r.topic == "interactions":
                mixed.append((r.key, r.value))
                if len(mixed) >= n_mixed:
                    break
        for key, stream in (("latency", None), ("latency_mixed", mixed)):
            out[key] = {}
            start = 0
            for load in loads:
                r = asyncio.run(_latency(s, url, load, seconds, latency_leads, start, stream,
                                         pids))
                start += int(load * seconds)
                out[key][f"{load:g}"] = r
            out[f"{key}_ms"] = {k: v["latency_ms"] for k, v in out[key].items()}
        # the one worker's garbage-collection pauses over the backlog and the latency runs
        out["gc_pauses"] = _gc_pauses(scrape(url))
        # 4. the same backlog split over two workers: throughput, nothing lost, quality
        if two_workers:
            stop_all(procs)
            procs.clear()
            out["two_workers"] = _two_workers(base, work, catalog, inter, one, counts_one,
                                              broker_pids)
        failed = False
    finally:
        stop_all(procs)
        if broker is not None:
            broker.stop()
        finish_work(work, keep=failed)
    return out


def print_pipeline(r: dict) -> None:
    from rich.table import Table

    c = console("pipeline", f"{r['events']:,} simulated events of {r['leads']:,} leads, "
                "broker on the same machine", r)
    c.print(f"ceiling (aiokafka consume-decode-produce): {r['ceiling_events_per_second']:,.0f}"
            f" events/s; Faust floor (the same in a Faust agent): "
            f"{r['faust_floor_events_per_second']:,.0f} events/s per event, "
            f"{r['faust_floor_batched_events_per_second']:,.0f} in Faust's batches, "
            f"{r['faust_floor_lane_events_per_second']:,.0f} through the lane; one worker: "
            f"[bold]{r['pipeline_events_per_second']:,.0f} events/s[/]"
            f" ({r['ratio_to_ceiling']:.1%} of the ceiling, {r['ratio_to_faust_floor']:.1%} of "
            f"the per-event Faust floor, {r['ratio_to_faust_floor_batched']:.1%} of the batched, "
            f"{r['ratio_to_faust_floor_lane']:.1%} of the lane floor;"
            f" {r['worker_cpu_us_per_event']:,.0f} µs of worker CPU per "
            "event); lead state (stored) "
            f"{r['bytes_per_lead']:,} B/lead; worker RSS {r['worker_rss_mb']:,} MB after the "
            "backlog")
    n = f"{r.get('latency_leads', 10_000):,} leads"
    for key, title in (("latency", f"every event a save (each due a list), {n}"),
                       ("latency_mixed", f"simulated traffic of all kinds (some due a list), {n}")):
        t = Table("offered events/s", "achieved", "events", "lists", "p50 ms", "p95 ms",
                  "p99 ms", "event-time lag p99 ms", "cores: worker / broker / bench",
                  title=f"event to list: {title}")
        for load, v in r.get(key, {}).items():
            lm, cb = v["latency_ms"], v.get("cores_busy") or {}
            t.add_row(load, f"{v['offered_events_per_second']:,.0f}", f"{v['events']:,}",
                      f"{v['recommendations']:,}", str(lm["p50"]), str(lm["p95"]),
                      str(lm["p99"]), str(v["event_time_lag_ms_p99"]),
                      " / ".join(str(cb.get(k, "-")) for k in ("worker", "broker", "bench")))
        c.print(t)
    gcp = r.get("gc_pauses")
    if gcp:
        c.print("one worker's garbage collections (generation: count, seconds, over 50 ms): "
                + "; ".join(f"{g}: {v['collections']:,}, {v['seconds']} s, {v['over_50ms']}"
                            for g, v in gcp.items()))
    w = r.get("two_workers")
    if w:
        c.print(f"two workers: {w['events_per_second']:,.0f} events/s ({w['speedup_vs_one']:.2f}x "
                f"one worker); {w['accounted']:,} of {w['input']:,} offsets accounted, "
                f"{w['replayed']} replayed; {w['leads_differing']} of {w['leads_compared']:,} "
                f"leads hold a different event count than with one worker; recommendation "
                f"hits {w['recommendation_hits']:,} vs {w['recommendation_hits_one_worker']:,} "
                f"({w['hits_ratio_to_one']}x); cores busy {w['cores_busy']['total']} of "
                f"{r['machine']['cpus']} (one worker's run: {r['cores_busy']['total']})")
