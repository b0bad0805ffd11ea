"""``leadstream simulate`` (synthetic leads and catalog, published or written) and
``leadstream demo`` (broker + worker + simulator, recommendations on screen)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson

from leadstream.bench.harness import Worker
from leadstream.cli.common import (
    bootstrap_or_embedded,
    describe_record,
    ensure_topics,
    format_recommendation,
    get_console,
    print_json,
)
from leadstream.contract.settings import Settings

# the experiment the demo runs unless LEADSTREAM_EXPERIMENTS_FILE names another
DEMO_EXPERIMENTS = Path(__file__).resolve().parents[1] / "demo-experiments.yaml"


def _sim_config(args):
    from leadstream.simulate import SimConfig

    start = (datetime.fromisoformat(args.start) if args.start
             # booking follow-ups run up to 3 days past the last session: keep all in the past
             else datetime.now(UTC).replace(microsecond=0) - timedelta(days=args.days + 3))
    return SimConfig(leads=args.leads, properties=args.properties, seed=args.seed,
                     days=args.days, start=start, bad_ratio=args.bad_ratio,
                     duplicate_ratio=args.duplicate_ratio,
                     closed_loop=getattr(args, "closed_loop", False))


async def publish_simulation(settings: Settings, sim, *, rate: float | None, realtime: bool,
                             limit: int | None = None, stop: asyncio.Event | None = None,
                             counts: dict | None = None) -> dict:
    """Publish a simulator's records; ``realtime`` restamps interactions with the clock."""
    from aiokafka import AIOKafkaProducer

    from leadstream.simulate import restamp

    counts = counts if counts is not None else {}
    producer = AIOKafkaProducer(linger_ms=5, **settings.kafka_client_kwargs())
    await producer.start()
    t0, sent = time.monotonic(), 0
    try:
        for rec in sim.records():
            if stop is not None and stop.is_set():
                break
            value = rec.value
            if rec.topic == "interactions":
                if limit is not None and sent >= limit:
                    break
                if realtime and rec.valid:
                    value = restamp(value)
                sent += 1
                counts["valid" if rec.valid else "invalid"] = counts.get(
                    "valid" if rec.valid else "invalid", 0) + 1
                if rate:
                    ahead = sent / rate - (time.monotonic() - t0)
                    if ahead > 0:
                        await asyncio.sleep(ahead)
            else:
                counts["listings"] = counts.get("listings", 0) + 1
            await producer.send(settings.topic(rec.topic), value, key=rec.key)
        await producer.flush()
    finally:
        await producer.stop()
    return counts


def cmd_simulate(args, settings: Settings) -> int:
    from leadstream.simulate import Simulator

    sim = Simulator(_sim_config(args))
    if args.out:
        n = 0
        cat_out = open(args.catalog_out, "wb") if args.catalog_out else None  # noqa: SIM115
        kept, listings = [], 0
        with open(args.out, "wb") as out:
            for rec in sim.records():
                if rec.topic == "interactions":
                    if args.one_per_listing:
                        kept.append(rec.value)
                    else:
                        out.write(rec.value + b"\n")
                    n += 1
                    if args.limit and n >= args.limit:
                        break
                elif cat_out is not None:
                    cat_out.write(rec.value + b"\n")
                    listings += 1
            if args.one_per_listing:
                from leadstream.simulate import one_per_listing

                kept = one_per_listing(kept)
                out.writelines(v + b"\n" for v in kept)
                n = len(kept)
        if cat_out is not None:
            cat_out.close()
        print(f"wrote {n} events to {args.out}", file=sys.stderr)
        if args.json:
            print_json({"events": n, "out": args.out, "catalog_out": args.catalog_out,
                         "listing_records": listings if cat_out is not None else None})
        return 0
    if not settings.kafka_bootstrap:
        print("error: set LEADSTREAM_KAFKA_BOOTSTRAP or use --out FILE", file=sys.stderr)
        return 2
    leads = None
    if args.closed_loop:
        if not args.realtime:
            print("error: --closed-loop needs --realtime (the leads react now, to the lists "
                  "published now)", file=sys.stderr)
            return 2
        from leadstream.closedloop import ClosedLoop

        leads = ClosedLoop(settings, sim, seed=args.seed)

        async def both():
            stop = asyncio.Event()
            closed = asyncio.create_task(leads.run(stop))
            try:
                return await publish_simulation(settings, sim, rate=args.rate, realtime=True,
                                                limit=args.limit)
            finally:
                await asyncio.sleep(5)  # the last lists' reactions
                stop.set()
                await closed

        counts = asyncio.run(both())
    else:
        counts = asyncio.run(publish_simulation(settings, sim, rate=args.rate,
                                                realtime=args.realtime, limit=args.limit))
    print(f"published {counts}" + (f"; from lists: {leads.stats.sent} events, "
                                   f"{leads.stats.summary()}" if leads else ""), file=sys.stderr)
    if args.json:
        body = {"published": {"valid": counts.get("valid", 0),
                              "invalid": counts.get("invalid", 0),
                              "listings": counts.get("listings", 0)},
                "topics": {"interactions": settings.topic("interactions"),
                           "properties": settings.topic("properties")}}
        if leads is not None:
            body["closed_loop"] = {"events": leads.stats.sent, "lists_seen": leads.stats.looked,
                                   "per_arm": [{"arm": arm, **c} for arm, c
                                               in leads.stats.per_arm.items()]}
        print_json(body)
    return 0


def cmd_demo(args, settings: Settings) -> int:
    """Broker + topics + worker + simulator, recommendations on screen."""
    from leadstream.ops.broker import free_port, port_is_free

    console = get_console()
    # a fresh namespace per run, so earlier runs' state never mixes in
    run_id = datetime.now(UTC).strftime("%H%M%S")
    if not os.environ.get("LEADSTREAM_TOPIC_PREFIX"):
        settings = settings.model_copy(update={"topic_prefix": f"demo{run_id}-"})
    web_port = settings.web_port if port_is_free(settings.web_port) else free_port()
    with bootstrap_or_embedded(settings) as (s, broker):
        s = s.model_copy(update={"web_port": web_port})
        if broker is not None:
            console.print(f"[bold]embedded {broker.kind} broker[/] at {s.kafka_bootstrap}")
        ensure_topics(s, verbose=False)
        log_path = Path(s.home) / "demo-worker.log"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        experiments = s.experiments_file or DEMO_EXPERIMENTS
        worker = Worker(s, log_path, inherit_env=True, extra_env={
            "LEADSTREAM_CHANGELOG_TRANSACTIONS": str(s.changelog_transactions).lower(),
            "LEADSTREAM_EXPERIMENTS_FILE": str(experiments)})
        console.print(f"worker pid {worker.pid}, metrics http://127.0.0.1:{web_port}/metrics, "
                      f"log {log_path}")
        console.print(f"experiment from {experiments}; per-arm report while it runs:\n  "
                      f"LEADSTREAM_KAFKA_BOOTSTRAP={s.kafka_bootstrap} LEADSTREAM_TOPIC_PREFIX="
                      f"{s.topic_prefix} LEADSTREAM_EXPERIMENTS_FILE={experiments} "
                      "leadstream experiments report", soft_wrap=True)
        try:
            return _demo_loop(args, s, console, worker)
        finally:
            worker.stop(timeout=20)
            console.print("[bold]stopped[/]")


def _demo_loop(args, s: Settings, console, worker) -> int:
    from leadstream.closedloop import ClosedLoop
    from leadstream.simulate import SimConfig, Simulator

    sim = Simulator(SimConfig(leads=args.leads, properties=args.properties, seed=args.seed,
                              days=3650, start=datetime.now(UTC), bad_ratio=args.bad_ratio,
                              closed_loop=True))
    # the leads also see the lists published for them and act on them by their hidden taste
    leads = ClosedLoop(s, sim, seed=args.seed)

    async def run() -> int:
        from aiokafka import AIOKafkaConsumer

        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        counts: dict = {}
        pub = asyncio.create_task(publish_simulation(s, sim, rate=args.rate, realtime=True,
                                                     stop=stop, counts=counts))
        closed = asyncio.create_task(leads.run(stop))
        consumer = AIOKafkaConsumer(s.topic("recommendations"), s.topic("interactions-dlq"),
                                    group_id=None, auto_offset_reset="earliest",
                                    **s.kafka_client_kwargs())
        await consumer.start()
        t0 = time.monotonic()
        shown = recs = dead = 0
        last_status = 0.0
        try:
            while not stop.is_set():
                if args.duration and time.monotonic() - t0 >= args.duration:
                    break
                if worker.proc.poll() is not None:
                    console.print(f"[red]worker exited with {worker.proc.returncode}[/]")
                    return 1
                for task in (pub, closed):
                    if task.done() and task.exception():
                        raise task.exception()
                batch = await consumer.getmany(timeout_ms=300)
                for tp, msgs in batch.items():
                    for m in msgs:
                        if tp.topic.endswith("interactions-dlq"):
                            dead += 1
                            if dead <= 3 or dead % 20 == 0:
                                console.print(describe_record(tp.topic, m))
                            continue
                        recs += 1
                        rec = orjson.loads(m.value)
                        # show every recommendation at low rates, a sample at high rates
                        if recs <= 5 or recs % max(1, int(args.rate // 10)) == 0:
                            shown += 1
                            console.print(format_recommendation(rec))
                now = time.monotonic()
                if now - last_status > 5:
                    last_status = now
                    console.print(f"[dim]-- {now - t0:5.0f}s  sent {counts.get('valid', 0)} valid"
                                  f" + {counts.get('invalid', 0)} malformed events, "
                                  f"{recs} recommendations, {dead} dead letters; "
                                  f"from lists: {leads.stats.summary() or 'none yet'} --[/]")
        finally:
            stop.set()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(asyncio.gather(pub, closed), 10)
            await consumer.stop()
        console.print(f"[bold]done[/]: {counts.get('valid', 0)} events, "
                      f"{counts.get('invalid', 0)} malformed, {recs} recommendations, "
                      f"{dead} dead letters; {leads.stats.sent} events from "
                      f"{leads.stats.looked} lists seen: {leads.stats.summary()}")
        return 0

    return asyncio.run(run())


def register(sub) -> None:
    def sim_args(x, leads=200, props=500):
        x.add_argument("--leads", type=int, default=leads)
        x.add_argument("--properties", type=int, default=props)
        x.add_argument("--seed", type=int, default=7)
        x.add_argument("--bad-ratio", type=float, default=0.0,
                       help="share of interactions replaced by malformed records")

    sm = sub.add_parser("simulate", help="synthetic leads and catalog: publish or write a file")
    sim_args(sm)
    sm.add_argument("--days", type=float, default=14.0)
    sm.add_argument("--start", help="ISO time of the first event (default: now - days - 3d)")
    sm.add_argument("--duplicate-ratio", type=float, default=0.0)
    sm.add_argument("--limit", type=int, default=None, help="at most N interaction events")
    sm.add_argument("--out", help="write interactions as JSON lines here instead of publishing")
    sm.add_argument("--catalog-out", help="with --out: write the listings here")
    sm.add_argument("--one-per-listing", action="store_true",
                    help="with --out: each lead's first event per listing only, as a save "
                         "(if it ever saved it) or a view: the shape of rating data sets")
    sm.add_argument("--rate", type=float, default=None, help="events/s when publishing")
    sm.add_argument("--realtime", action="store_true", help="stamp events with the wall clock")
    sm.add_argument("--closed-loop", action="store_true",
                    help="with --realtime: the leads also see the lists published for them "
                         "and click, save and book from them by their hidden taste")
    sm.add_argument("--json", action="store_true", help="what was written or published")
    sm.set_defaults(func=cmd_simulate)

    d = sub.add_parser("demo", help="broker + worker + simulator, recommendations on screen")
    sim_args(d, leads=60, props=400)
    d.add_argument("--rate", type=float, default=20.0, help="events/s")
    d.add_argument("--duration", type=float, default=None, help="stop after S seconds")
    d.set_defaults(func=cmd_demo, bad_ratio=0.02)
