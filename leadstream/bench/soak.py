"""``leadstream bench soak``: a bounded soak of one worker on a real broker.

Leads join and go idle: at any moment ``active`` leads send events, and every
``rotate_seconds`` a fifth of them stop for good and as many new ones start, so the
worker's idle-lead sweep (``LEADSTREAM_LEAD_TTL_SECONDS``, short here) must forget the
old ones for its memory to stay flat. Every ``sample_seconds`` it records the worker's
resident memory (``/proc``), the leads it holds, its consumer lag, the events processed
and the error lines in its log since it became ready; at the end it prints them with
the verdicts: memory after warm-up within a band, lag bounded, no errors. Bounded by
``minutes``.

Uses the embedded Apache Kafka unless ``LEADSTREAM_KAFKA_BOOTSTRAP`` is set.
"""

from __future__ import annotations

import asyncio
import statistics
import time
import uuid
from datetime import UTC, datetime, timedelta

import orjson

from leadstream.bench.common import (
    bench_worker,
    console,
    embedded_or_configured,
    finish_work,
    machine,
    produce,
    rss_bytes,
)
from leadstream.bench.harness import Worker
from leadstream.scrape import scrape, total


async def _offer(s, worker: Worker, rate: float, minutes: float, active: int,
                 rotate_seconds: float, properties: list[str], since: int,
                 sample_seconds: float) -> list[dict]:
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(linger_ms=5, **s.kafka_client_kwargs())
    await producer.start()
    samples: list[dict] = []
    t0 = time.monotonic()
    end = t0 + minutes * 60
    next_sample = t0
    i = 0
    try:
        while (now := time.monotonic()) < end:
            due = t0 + i / rate
            if due > now:
                await asyncio.sleep(due - now)
            # the active window of lead numbers slides by a fifth every rotate_seconds
            first = int((time.monotonic() - t0) / rotate_seconds * active / 5)
            lead = f"SK{first + i % active:07d}"
            session = f"{lead}-{int((time.monotonic() - t0) // 600)}"
            kind = "property_saved" if i % 10 == 0 else "property_viewed"
            body = {"event_id": f"soak-{i}", "lead_id": lead, "event_type": kind,
                    "timestamp": datetime.now(UTC).isoformat(), "session_id": session,
                    "property_id": properties[(i * 7919) % len(properties)]}
            if kind == "property_viewed":
                body["payload"] = {"duration_seconds": 5 + i % 90}
            await producer.send(s.topic("interactions"), orjson.dumps(body), key=lead.encode())
            i += 1
            if time.monotonic() >= next_sample:
                await producer.flush()
                m = scrape(worker.url)
                samples.append({
                    "t_seconds": round(time.monotonic() - t0, 1),
                    "sent": i,
                    "processed": total(m, "leadstream_events_processed_total"),
                    "lag": total(m, "leadstream_consumer_lag"),
                    "leads": total(m, "leadstream_leads"),
                    "rss_mb": round(rss_bytes(worker.pid) / 2**20, 1),
                    "errors": len(worker.errors(since)),
                })
                next_sample += sample_seconds
    finally:
        await producer.stop()
    return samples


def soak(minutes: float = 10.0, rate: float = 300.0, active: int = 2000,
         rotate_seconds: float = 60.0, lead_ttl_seconds: float = 120.0,
         sample_seconds: float = 10.0, seed: int = 7) -> dict:
    """Run the soak; returns samples and verdicts (see the module docstring)."""
    from leadstream.ops.broker import free_port
    from leadstream.simulate import SimConfig, Simulator
    from leadstream.streams.topics import apply_topics

    base, work, broker = embedded_or_configured("soak")
    s = base.model_copy(update={"topic_prefix": f"soak{uuid.uuid4().hex[:6]}-",
                                "web_port": free_port(), "worker_data_dir": work / "w1",
                                "lead_ttl_seconds": lead_ttl_seconds})
    proc = None
    try:
        asyncio.run(apply_topics(s))
        sim = Simulator(SimConfig(leads=10, properties=1000, days=1, seed=seed,
                                  start=datetime.now(UTC) - timedelta(days=4)))
        catalog = [(r.key, r.value) for r in sim.records() if r.topic == "properties"]
        asyncio.run(produce(s, s.topic("properties"), catalog))
        properties = sorted({orjson.loads(v)["property_id"] for _k, v in catalog})
        proc = bench_worker(s, work / "worker.log", extra_env={
            "LEADSTREAM_LEAD_TTL_SECONDS": str(lead_ttl_seconds)})
        # startup noise (e.g. coordinator not yet elected) aside
        ready_at = proc.log.stat().st_size
        samples = asyncio.run(_offer(s, proc, rate, minutes, active, rotate_seconds,
                                     properties, ready_at, sample_seconds))
        errors = proc.errors(ready_at)
    except BaseException:
        finish_work(work, keep=True)
        raise
    finally:
        if proc is not None:
            proc.stop()
        if broker is not None:
            broker.stop()
    # warm-up: until the first leads could have expired (TTL + a rotation) and 20 % in
    warm = max(lead_ttl_seconds + rotate_seconds, 0.2 * minutes * 60)
    steady = [x for x in samples if x["t_seconds"] >= warm] or samples[-1:]
    rss = [x["rss_mb"] for x in steady]
    half = len(rss) // 2 or 1
    first_half, second_half = statistics.median(rss[:half]), statistics.median(rss[half:] or rss)
    total_s = samples[-1]["t_seconds"] if samples else 0.0
    sent = samples[-1]["sent"] if samples else 0
    growth = round(second_half / first_half, 3) if first_half else None
    lag_steady = max(x["lag"] for x in steady) if steady else 0
    # RSS slope after the warm-up (least squares, MB per minute) and the lag's p99
    slope = (statistics.linear_regression([x["t_seconds"] / 60 for x in steady], rss).slope
             if len(steady) >= 2 else 0.0)
    lags = sorted(x["lag"] for x in steady)
    lag_p99 = lags[min(int(0.99 * len(lags)), len(lags) - 1)] if lags else 0
    verdicts = {  # memory within 10 % after warm-up, lag under 10 s of input, no errors
        "memory_flat": growth is not None and growth <= 1.10,
        "lag_bounded": lag_steady <= 10 * rate,
        "no_errors": not errors,
    }
    finish_work(work, keep=not all(verdicts.values()))  # a failed soak keeps its logs
    return {
        "benchmark": "soak", "verdicts": verdicts, "passed": all(verdicts.values()),
        "machine": machine(), "minutes": minutes,
        "offered_events_per_second": round(sent / max(total_s, 1e-9), 1),
        "active_leads": active, "rotate_seconds": rotate_seconds,
        "lead_ttl_seconds": lead_ttl_seconds, "warmup_seconds": warm,
        "rss_mb_steady_median_first_half": first_half,
        "rss_mb_steady_median_second_half": second_half,
        "rss_growth_ratio": growth,
        "rss_slope_mb_per_minute": round(slope, 3),
        "lag_p99_steady": lag_p99,
        "leads_held_max_steady": max(x["leads"] for x in steady) if steady else 0,
        "lag_max": max(x["lag"] for x in samples) if samples else 0,
        "lag_max_steady": lag_steady,
        "error_lines": len(errors), "first_errors": errors[:5],
        "samples": samples,
    }


def print_soak(r: dict) -> None:
    from rich.table import Table

    c = console("soak", f"{r['minutes']:g} min at {r['offered_events_per_second']:,.0f} "
                f"events/s, {r['active_leads']:,} active leads rotating every "
                f"{r['rotate_seconds']:g} s, lead TTL {r['lead_ttl_seconds']:g} s", r)
    t = Table("t (s)", "sent", "processed", "lag", "leads held", "RSS MB", "error lines")
    for x in r["samples"]:
        t.add_row(f"{x['t_seconds']:g}", f"{x['sent']:,}", f"{x['processed']:,.0f}",
                  f"{x['lag']:,.0f}", f"{x['leads']:,.0f}", f"{x['rss_mb']}", str(x["errors"]))
    c.print(t)
    c.print(f"after {r['warmup_seconds']:g} s warm-up: RSS median "
            f"{r['rss_mb_steady_median_first_half']} MB, then "
            f"{r['rss_mb_steady_median_second_half']} MB (x{r['rss_growth_ratio']}, slope "
            f"{r['rss_slope_mb_per_minute']} MB/min); lag p99 {r['lag_p99_steady']:,.0f}; "
            f"leads held at most {r['leads_held_max_steady']:,.0f}; lag max "
            f"{r['lag_max_steady']:,.0f} (whole run {r['lag_max']:,.0f}); "
            f"error lines {r['error_lines']}")
    for e in r["first_errors"]:
        c.print(f"  {e}")
    c.print("verdicts: " + ", ".join(f"{k} {'[green]yes[/]' if v else '[red]NO[/]'}"
                                     for k, v in r["verdicts"].items()))
