"""The ``leadstream`` command line."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson

from leadstream.contract.resources import SOURCE_ROOT, bundled
from leadstream.contract.settings import Settings

# the experiment the demo runs unless LEADSTREAM_EXPERIMENTS_FILE names another
DEMO_EXPERIMENTS = Path(__file__).resolve().parents[1] / "demo-experiments.yaml"


def _console():
    """Rich output: the terminal's width, or no wrapping at all when piped."""
    from leadstream.console import console

    return console()


def _print_json(obj) -> None:
    print(json.dumps(obj, indent=2, default=str), flush=True)


# ---------------------------------------------------------------------------------------
# broker helpers


@contextlib.contextmanager
def bootstrap_or_embedded(settings: Settings, port: int | None = None, quiet: bool = False):
    """Yield settings with a bootstrap server, starting the embedded broker if none is set."""
    if settings.kafka_bootstrap:
        yield settings, None
        return
    from leadstream.ops.broker import free_port, port_is_free, start_broker

    if port is None:
        port = settings.broker_port if port_is_free(settings.broker_port) else free_port()
    if not quiet:
        print(f"starting the embedded broker on 127.0.0.1:{port} …", file=sys.stderr)
    broker = start_broker(settings, port=port)
    update: dict = {"kafka_bootstrap": broker.bootstrap}
    if broker.kind == "tansu":  # no transactional producer (docs: brokers)
        update["changelog_transactions"] = False
    try:
        yield settings.model_copy(update=update), broker
    finally:
        broker.stop()


def _apply_topics(settings: Settings, verbose: bool = True):
    """Create topics.yaml's missing topics; prints what it did when ``verbose``."""
    from leadstream.streams.topics import apply_topics

    report = asyncio.run(apply_topics(settings))
    if verbose:
        for line in report.lines():
            print(line)
    return report


def _report_json(report) -> dict:
    return {"created": report.created, "unchanged": report.unchanged,
            "missing": report.missing, "differences": report.differences}


# ---------------------------------------------------------------------------------------
# commands


def cmd_broker(args, settings: Settings) -> int:
    from leadstream.ops.broker import BrokerError, start_broker

    try:
        broker = start_broker(settings, port=args.port,
                              data_dir=Path(args.data_dir) if args.data_dir else None)
    except BrokerError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    ready = settings.model_copy(update={"kafka_bootstrap": broker.bootstrap})
    if args.json:  # one JSON document once the broker is ready (and its topics are there)
        report = None if args.no_topics else _apply_topics(ready, verbose=False)
        print(json.dumps({"kind": broker.kind, "bootstrap": broker.bootstrap,  # one line
                          "topics": None if report is None else _report_json(report)}),
              flush=True)
    else:
        print(f"{broker.kind} broker ready: bootstrap {broker.bootstrap}")
        print(f"export LEADSTREAM_KAFKA_BOOTSTRAP={broker.bootstrap}", flush=True)
        if not args.no_topics:
            _apply_topics(ready)
        sys.stdout.flush()
    stop = False

    def _stop(*_):
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    try:
        while not stop and broker.alive():
            time.sleep(0.5)
    finally:
        broker.stop()
    return 0


def cmd_topics(args, settings: Settings) -> int:
    """``list``: what topics.yaml declares and, with a broker configured, how the broker's
    topics differ (missing, partitions, config); ``apply``: create the missing ones on
    the configured broker (never on a throwaway one)."""
    from leadstream.streams.topics import apply_topics, load_topics

    if args.action == "apply" and not settings.kafka_bootstrap:
        print("leadstream topics: error: no broker configured: set LEADSTREAM_KAFKA_BOOTSTRAP "
              "(topics apply creates topics on your cluster; `leadstream broker` starts a "
              "local one and creates its topics itself)", file=sys.stderr)
        return 2
    if args.action == "apply":
        report = asyncio.run(apply_topics(settings))
    else:
        report = asyncio.run(apply_topics(settings, create=False)) if (
            settings.kafka_bootstrap) else None
    status = {}
    if report is not None:
        status.update({n: "created" for n in report.created})
        status.update({n: "missing" for n in report.missing})
        status.update({n: "ok" for n in report.unchanged})
        status.update({d.split(": ", 1)[0]: "differs: " + d.split(": ", 1)[1]
                       for d in report.differences})
    rows = [{"topic": t.full_name, "partitions": t.partitions, "key": t.key,
             "cleanup_policy": t.config.get("cleanup.policy", "-"),
             "on_broker": status.get(t.full_name), "description": t.description}
            for t in load_topics(settings).values()]
    if args.json:
        print(json.dumps({"broker": settings.kafka_bootstrap, "topics": rows}, indent=2))
    else:
        from rich.table import Table

        t = Table("topic", "partitions", "key", "policy", "on the broker", "description",
                  title="topics.yaml" + (f" against {settings.kafka_bootstrap}"
                                         if report is not None else
                                         " (no broker configured: declared topics only)"))
        for r in rows:
            t.add_row(r["topic"], str(r["partitions"]), r["key"], r["cleanup_policy"],
                      r["on_broker"] or "-", r["description"])
        _console().print(t)
    return 1 if report is not None and (report.differences or report.missing) else 0


def cmd_worker(args, settings: Settings) -> int:
    from leadstream.streams.app import run_worker

    with bootstrap_or_embedded(settings) as (s, broker):
        if broker is not None:
            _apply_topics(s, verbose=False)
            print(f"embedded broker at {s.kafka_bootstrap}", file=sys.stderr)
        try:
            run_worker(s, loglevel=args.loglevel)
        except SystemExit as exc:
            return int(exc.code or 0)
    return 0


def _lead_key(line: bytes) -> bytes | None:
    try:
        obj = orjson.loads(line)
    except orjson.JSONDecodeError:
        return None
    if isinstance(obj, dict):
        for field in ("lead_id", "property_id"):
            v = obj.get(field)
            if isinstance(v, str) and v:
                return v.encode()
    return None


def cmd_produce(args, settings: Settings) -> int:
    from leadstream.contract.events import InvalidRecord, parse_event, parse_listing

    src = sys.stdin.buffer if args.file in (None, "-") else open(args.file, "rb")  # noqa: SIM115
    check = parse_listing if args.topic == "properties" else parse_event
    records, invalid, errors = [], 0, []
    with src:
        for n, line in enumerate(src, start=1):
            line = line.rstrip(b"\r\n")
            if not line.strip():
                continue
            try:
                check(line)
            except InvalidRecord as err:
                invalid += 1
                errors.append({"line": n, "reason": err.reason, "message": err.message})
                print(f"line {n}: {err.reason}: {err.message}", file=sys.stderr)
            records.append((_lead_key(line), line))

    def summary(sent: int) -> dict:
        return {"topic": settings.topic(args.topic), "records": len(records), "sent": sent,
                "invalid": invalid, "errors": errors}

    if invalid and args.strict:
        print(f"{invalid} invalid line(s): nothing sent (--strict)", file=sys.stderr)
        if args.json:
            _print_json(summary(0))
        return 1

    async def send(s: Settings):
        from aiokafka import AIOKafkaProducer

        producer = AIOKafkaProducer(linger_ms=5, max_request_size=11_000_000,
                                    **s.kafka_client_kwargs())
        await producer.start()
        try:
            futs = [await producer.send(s.topic(args.topic), value, key=key)
                    for key, value in records]
            await asyncio.gather(*futs)
        finally:
            await producer.stop()

    if not settings.kafka_bootstrap:
        print("error: set LEADSTREAM_KAFKA_BOOTSTRAP (e.g. 127.0.0.1:9092)", file=sys.stderr)
        return 2
    asyncio.run(send(settings))
    print(f"sent {len(records)} record(s) to {settings.topic(args.topic)}"
          + (f"; {invalid} invalid (they will be dead-lettered by the worker)" if invalid else ""),
          file=sys.stderr)
    if args.json:
        _print_json(summary(len(records)))
    return 0


def format_recommendation(rec: dict, max_items: int = 3) -> str:
    """Rich markup for one recommendation event."""
    when = rec.get("emitted_at", "")[11:19]
    lines = [f"[dim]{when}[/] [bold cyan]{rec['lead_id']}[/]  conf [yellow]{rec['confidence']:.2f}"
             f"[/]  [italic]{rec['explanation']}[/]  [dim]({rec['trigger']})[/]"]
    for it in rec["items"][:max_items]:
        desc = ""
        if it.get("property_type"):
            desc = f"{it.get('bedrooms')}-bed {it['property_type']} {it.get('city')} " \
                   f"${it.get('price', 0) / 1000:,.0f}k"
        lines.append(f"   {it['rank']:>2}. [green]{it['property_id']}[/] {desc:34} "
                     f"score {it['score']:.3f}  [dim]{it['reason']}[/]")
    return "\n".join(lines)


def _describe_record(topic: str, msg) -> str:
    headers = {k: v.decode("utf-8", "replace") for k, v in (msg.headers or [])}
    if "leadstream.dlq.reason" in headers:
        value = (msg.value or b"")[:200].decode("utf-8", "replace")
        return (f"[red]{headers['leadstream.dlq.reason']}[/] from "
                f"{headers.get('leadstream.dlq.topic')}"
                f"[{headers.get('leadstream.dlq.partition')}]@{headers.get('leadstream.dlq.offset')}"
                f": {headers.get('leadstream.dlq.error')}\n   [dim]{value!r}[/]")
    from leadstream.contract.events import InvalidRecord, unframe

    try:  # plain JSON, or JSON in Confluent's wire format
        obj = orjson.loads(unframe(msg.value)[0]) if msg.value is not None else None
    except (orjson.JSONDecodeError, InvalidRecord):
        return repr(msg.value[:200])
    if isinstance(obj, dict) and "items" in obj and "lead_id" in obj:
        return format_recommendation(obj)
    return json.dumps(obj)


def record_json(msg) -> str:
    """One line of ``tail --json``: the record's value as JSON (unframed if it came in
    Confluent's wire format; null for a tombstone); a dead letter as ``{"dead_letter":
    {reason, error, topic, partition, offset, at}, "value": original text}``; a value
    that is not JSON as ``{"undecodable": text}``."""
    from leadstream.contract.events import InvalidRecord, unframe

    headers = {k: v.decode("utf-8", "replace") for k, v in (msg.headers or [])}
    text = None if msg.value is None else msg.value.decode("utf-8", "replace")
    if "leadstream.dlq.reason" in headers:
        dl = {k.removeprefix("leadstream.dlq."): v for k, v in headers.items()
              if k.startswith("leadstream.dlq.")}
        for k in ("partition", "offset"):
            with contextlib.suppress(KeyError, ValueError):
                dl[k] = int(dl[k])
        return json.dumps({"dead_letter": dl, "value": text})
    if msg.value is None:
        return "null"
    try:
        return orjson.dumps(orjson.loads(unframe(msg.value)[0])).decode()
    except (orjson.JSONDecodeError, InvalidRecord):
        return json.dumps({"undecodable": text})


def cmd_tail(args, settings: Settings) -> int:
    from rich.markup import escape

    from leadstream.streams.topics import load_topics

    console = _console()
    specs = load_topics(settings)
    topic = specs[args.topic].full_name if args.topic in specs else args.topic

    async def run():
        from aiokafka import AIOKafkaConsumer

        consumer = AIOKafkaConsumer(
            topic, group_id=None, auto_offset_reset="earliest" if args.from_beginning else "latest",
            enable_auto_commit=False, **settings.kafka_client_kwargs())
        await consumer.start()
        n, last = 0, time.monotonic()
        try:
            while args.max is None or n < args.max:
                batch = await consumer.getmany(timeout_ms=500)
                if not batch and args.timeout and time.monotonic() - last > args.timeout:
                    break
                for msgs in batch.values():
                    for m in msgs:
                        last = time.monotonic()
                        n += 1
                        if args.json:
                            sys.stdout.write(record_json(m) + "\n")
                        else:
                            key = escape((m.key or b"").decode("utf-8", "replace"))
                            console.print(f"[dim]{m.partition}@{m.offset} {key}[/] "
                                          + _describe_record(topic, m))
                        if args.max is not None and n >= args.max:
                            break
                sys.stdout.flush()
        finally:
            await consumer.stop()

    if not settings.kafka_bootstrap:
        print("error: set LEADSTREAM_KAFKA_BOOTSTRAP (e.g. 127.0.0.1:9092)", file=sys.stderr)
        return 2
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run())
    return 0


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
            _print_json({"events": n, "out": args.out, "catalog_out": args.catalog_out,
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
        _print_json(body)
    return 0


def cmd_schemas(args, settings: Settings) -> int:
    from leadstream.contract.events import json_schemas

    if args.write and SOURCE_ROOT is None:
        print("leadstream schemas: error: --write writes the repository's schemas/: run it "
              "in a source checkout", file=sys.stderr)
        return 2
    root = bundled("schemas")
    stale = []
    for rel, doc in json_schemas().items():
        path = root / rel
        text = json.dumps(doc, indent=2, sort_keys=True) + "\n"
        if args.write:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
        elif not path.exists() or path.read_text() != text:
            stale.append(f"schemas/{rel}")
    if args.json:
        _print_json({"schemas": len(json_schemas()), "written": bool(args.write),
                     "stale": stale, "up_to_date": not stale})
        return 1 if stale else 0
    if stale:
        print("stale schemas (run `leadstream schemas --write`):\n  " + "\n  ".join(stale))
        return 1
    print("schemas written" if args.write else "schemas up to date")
    return 0


def cmd_settings(args, settings: Settings) -> int:
    print(json.dumps(settings.printable(), indent=2, default=str))
    return 0


def _wait_http(url: str, timeout: float, proc: subprocess.Popen | None = None) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            return False
        try:
            with urllib.request.urlopen(url, timeout=2) as r:  # noqa: S310 - loopback
                if r.status == 200:
                    return True
        except OSError:
            pass
        time.sleep(0.3)
    return False


def cmd_demo(args, settings: Settings) -> int:
    """Broker + topics + worker + simulator, recommendations on screen."""
    from leadstream.ops.broker import free_port, port_is_free

    console = _console()
    # a fresh namespace per run, so earlier runs' state never mixes in
    run_id = datetime.now(UTC).strftime("%H%M%S")
    if not os.environ.get("LEADSTREAM_TOPIC_PREFIX"):
        settings = settings.model_copy(update={"topic_prefix": f"demo{run_id}-"})
    web_port = settings.web_port if port_is_free(settings.web_port) else free_port()
    with bootstrap_or_embedded(settings) as (s, broker):
        s = s.model_copy(update={"web_port": web_port})
        if broker is not None:
            console.print(f"[bold]embedded {broker.kind} broker[/] at {s.kafka_bootstrap}")
        _apply_topics(s, verbose=False)
        log_path = Path(s.home) / "demo-worker.log"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        experiments = s.experiments_file or DEMO_EXPERIMENTS
        env = {**os.environ, "LEADSTREAM_KAFKA_BOOTSTRAP": s.kafka_bootstrap,
               "LEADSTREAM_TOPIC_PREFIX": s.topic_prefix, "LEADSTREAM_WEB_PORT": str(web_port),
               "LEADSTREAM_CHANGELOG_TRANSACTIONS": str(s.changelog_transactions).lower(),
               "LEADSTREAM_EXPERIMENTS_FILE": str(experiments)}
        with open(log_path, "ab") as log:
            worker = subprocess.Popen([sys.executable, "-m", "leadstream", "worker"], env=env,
                                      stdout=log, stderr=subprocess.STDOUT,
                                      start_new_session=True)
        console.print(f"worker pid {worker.pid}, metrics http://127.0.0.1:{web_port}/metrics, "
                      f"log {log_path}")
        console.print(f"experiment from {experiments}; per-arm report while it runs:\n  "
                      f"LEADSTREAM_KAFKA_BOOTSTRAP={s.kafka_bootstrap} LEADSTREAM_TOPIC_PREFIX="
                      f"{s.topic_prefix} LEADSTREAM_EXPERIMENTS_FILE={experiments} "
                      "leadstream experiments report", soft_wrap=True)
        try:
            return _demo_loop(args, s, console, worker)
        finally:
            if worker.poll() is None:
                worker.send_signal(signal.SIGTERM)
                try:
                    worker.wait(20)
                except subprocess.TimeoutExpired:
                    worker.kill()
                    worker.wait(5)
            console.print("[bold]stopped[/]")


def _demo_loop(args, s: Settings, console, worker: subprocess.Popen) -> int:
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
                if worker.poll() is not None:
                    console.print(f"[red]worker exited with {worker.returncode}[/]")
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
                                console.print(_describe_record(tp.topic, m))
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


def cmd_features(args, settings: Settings) -> int:
    """The feature catalog, or one lead's current features from the worker holding it."""
    if args.catalog:
        from leadstream.features.catalog import FEATURES, catalog_json, catalog_markdown

        if args.write:
            if SOURCE_ROOT is None:
                print("leadstream features: error: --write writes the repository's "
                      "docs/features.md: run it in a source checkout", file=sys.stderr)
                return 2
            path = SOURCE_ROOT / "docs" / "features.md"
            path.parent.mkdir(exist_ok=True)
            path.write_text(catalog_markdown() + "\n")
            print(f"wrote {path}")
        elif args.json:
            print(json.dumps(catalog_json(), indent=2))
        else:
            from rich.table import Table

            t = Table("name", "family", "kind", "window", "definition", show_lines=False)
            for f in FEATURES:
                t.add_row(f.name, f.family, f.kind, f.window, f.definition)
            _console().print(t)
        return 0
    if not args.lead_id:
        print("error: give a LEAD_ID, or --catalog", file=sys.stderr)
        return 2
    import urllib.error
    import urllib.parse

    base = (args.url or settings.web_url()).rstrip("/")
    url = f"{base}/leads/{urllib.parse.quote(args.lead_id, safe='')}/features"
    if args.at_last_event:
        url += "?at=last_event"
    req = urllib.request.Request(url, headers=settings.api_headers())
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            body = orjson.loads(resp.read())
    except urllib.error.HTTPError as err:
        detail = err.read().decode("utf-8", "replace")
        print(f"error: {err.code} from {url}: {detail}", file=sys.stderr)
        return 1
    except OSError as err:
        print(f"error: no worker answers at {base} ({err}); start one with `leadstream worker`"
              " or pass --url", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(body, indent=2))
        return 0
    _print_features(body)
    return 0


def _print_features(body: dict) -> None:
    from rich.table import Table

    from leadstream.features.catalog import BY_NAME

    console = _console()
    meta = body["metadata"]
    console.print(f"[bold]{body['lead_id']}[/]: {meta['event_count']} events, feature version "
                  f"{meta['feature_version']}, as of "
                  f"{datetime.fromtimestamp(meta['as_of'], UTC).isoformat(timespec='seconds')}")
    console.print("  ".join(f"{k} = [bold]{v}[/]" for k, v in body["categorical"].items()))
    z = body.get("normalized", {}).get("zscore", {})
    for family in ("property", "engagement", "session", "time"):
        t = Table(family, "value", "z-score", "window")
        for name, value in body["numerical"].items():
            f = BY_NAME.get(name)
            if f is not None and f.family == family:
                zs = f"{z[name]:+.2f}" if name in z else ""
                t.add_row(name, f"{value:,.4g}", zs, f.window)
        console.print(t)


def _invalid_summary(reasons: dict[str, int]) -> str:
    return ", ".join(f"{why} {n:,}" for why, n in sorted(reasons.items(), key=lambda x: -x[1]))


@contextlib.contextmanager
def _replay_progress(total: int, show: bool):
    """A progress bar with events/s on stderr (off when ``show`` is false); yields the
    callback ``evaluate`` reports the events replayed so far to."""
    if not show:
        yield None
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )

    class Rate(TextColumn):
        def render(self, task):
            speed = task.finished_speed or task.speed
            return super().render(task) if speed is None else f"{speed:,.0f} events/s"

    with Progress(TextColumn("replaying"), BarColumn(), MofNCompleteColumn(), Rate(""),
                  TimeRemainingColumn(), console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task("replay", total=total)
        yield lambda n: bar.update(task, completed=n)


REPORT_POINTS = 200  # evaluate --report: at most 2 x 200 + 1 points per curve


def cmd_evaluate(args, settings: Settings) -> int:
    """Replay an event file through every model and River's references; print prequential /
    leave-last-out figures."""
    from leadstream.models.evaluate import evaluate, load_events
    from leadstream.models.references import REFERENCES, RiverReference

    reasons: dict[str, int] = {}
    with open(args.events, "rb") as fh:
        events, bad = load_events(fh, reasons)
    if args.limit:
        events = events[: args.limit]
    if not events:
        why = f" ({bad:,} invalid lines: {_invalid_summary(reasons)})" if bad else ""
        print(f"error: no valid event in {args.events}{why}", file=sys.stderr)
        return 2
    protocols = {"prequential": ("prequential",), "leave-last-out": ("leave-last-out",),
                 "both": ("prequential", "leave-last-out")}[args.protocol]
    targets = None
    if args.targets:
        from leadstream.contract.events import EVENT_CLASSES

        targets = [t.strip() for t in args.targets.split(",") if t.strip()]
        unknown = [t for t in targets if t not in EVENT_CLASSES]
        if unknown or not targets:
            print(f"error: --targets: unknown event type {', '.join(unknown) or '(none)'}",
                  file=sys.stderr)
            return 2
    cat = open(args.catalog, "rb").read().splitlines() if args.catalog else None  # noqa: SIM115
    if args.tune and args.report:
        print("error: --report draws an evaluation; --tune prints a search", file=sys.stderr)
        return 2
    if args.report:
        try:  # before the replay, not after it
            import matplotlib  # noqa: F401
        except ImportError:
            print("error: --report needs matplotlib: pip install 'leadstream[report]'",
                  file=sys.stderr)
            return 2
        if not Path(args.report).resolve().parent.is_dir():
            print(f"error: --report: no directory {Path(args.report).resolve().parent}",
                  file=sys.stderr)
            return 2
    if args.tune:
        from leadstream.models.evaluate import tune

        r = tune(events, cat, seed=args.seed, targets=targets, exclude_seen=args.exclude_seen)
        if args.json:
            print(json.dumps(r, indent=2))
            return 0
        for trial in r["trials"]:
            print("  ".join(f"{k}={v}" for k, v in trial.items()))
        print(f"best prequential HR@10 {r['hr@10']:.4f} with:")
        for name, v in r["best"].items():
            print(f"  LEADSTREAM_HYBRID_{name.upper()}={v}")
        return 0
    refs = {} if args.no_references else REFERENCES
    points = REPORT_POINTS if args.report else 0  # the curves are collected for a report
    t = time.perf_counter()
    show = not args.json and sys.stderr.isatty()
    with _replay_progress(len(events) * len(protocols), show) as progress:
        if args.tune_half:
            from leadstream.models.evaluate import tune_split

            r = tune_split(events, cat, protocols=protocols, k=10, seed=args.seed,
                           targets=targets, exclude_seen=args.exclude_seen, references=refs,
                           progress=progress, series_points=points)
        else:
            r = evaluate(events, cat, protocols=protocols, k=10, seed=args.seed,
                         suite_params=settings.hybrid_weights(), targets=targets,
                         exclude_seen=args.exclude_seen, references=refs, progress=progress,
                         series_points=points)
    r["invalid_lines"] = bad
    r["invalid_reasons"] = reasons
    r["seconds"] = round(time.perf_counter() - t, 1)
    if args.report:
        from leadstream.models.report import write_report

        write_report(r, args.report, title=f"leadstream evaluate: {Path(args.events).name}")
        print(f"wrote {args.report}", file=sys.stderr)
    if args.json:
        print(json.dumps(r, indent=2))
        return 0
    from rich.table import Table

    cols = ["model"]
    for p in protocols:
        short = {"prequential": "preq", "leave-last-out": "LLO"}[p]
        cols += [f"{short} HR@10", f"{short} NDCG@10", f"{short} n"]
    cols += ["coverage", "ev/s"] if "prequential" in protocols else []
    what = ", ".join(targets) if targets else "positive events"
    title = (f"{r['events']:,} events, {r['seconds']} s; scored: {what}"
             f"{', seen listings excluded' if args.exclude_seen else ''}"
             f"{', second half only' if args.tune_half else ''}")
    t = Table(*cols, title=title)
    rows = list(r["models"].items())
    ref_rows = list(r.get("references", {}).items())
    for i, (name, m) in enumerate(rows + [(f"ref: {n}", m) for n, m in ref_rows]):
        row = [name]
        for p in protocols:
            f = m[p.replace("-", "_")]
            row += [f"{f['hr@10']:.4f}", f"{f['ndcg@10']:.4f}", f"{f['evaluated']:,}"]
        if "prequential" in protocols:
            row += [f"{m['coverage']:.3f}", f"{m['events_per_second']:,.0f}"]
        t.add_row(*row, end_section=i == len(rows) - 1)
    c = _console()
    c.print(t)
    if bad:
        c.print(f"{bad:,} invalid lines skipped: {_invalid_summary(reasons)}")
    for p, skipped in r["not_scored"].items():
        if skipped:
            c.print(f"{p}: targets not scored: "
                    + ", ".join(f"{why} {n:,}" for why, n in skipped.items()))
    for name, params in refs.items():
        c.print(f"ref: {name} = {RiverReference(**params).describe()} (a reference, not "
                "part of the recommender)")
    tuned = r.get("tuned")
    if tuned:
        base = "; ".join(f"{p} {f['hr@10']:.4f}" for p, f in tuned["default_weights"].items()
                         if isinstance(f, dict))
        c.print(f"hybrid weights chosen on the first half ({len(tuned['trials'])} trials, "
                f"prequential HR@10 {tuned['first_half_hr@10']:.4f} there): "
                + ", ".join(f"{k}={v}" for k, v in tuned["weights"].items())
                + f"; the default weights on the second half: {base}")
    ls = r.get("lead_scores")
    if ls and ls["labels"]:
        def fig(x):
            return "n/a" if x is None else f"{x:.3f}"

        c.print(
            f"lead scores on {ls['labels']} CRM outcomes ({ls['converted']} converted), "
            f"prequential: heuristic log loss {fig(ls['heuristic']['log_loss'])} / AUC "
            f"{fig(ls['heuristic']['auc'])}; online River model log loss "
            f"{fig(ls['online']['log_loss'])} / AUC {fig(ls['online']['auc'])}")
    return 0


def cmd_models(args, settings: Settings) -> int:
    """List model snapshots, or make an older one current (a running worker follows)."""
    from leadstream.models.snapshot import SnapshotError, SnapshotStore

    store = SnapshotStore(Path(args.dir) if args.dir else settings.snapshot_dir())
    if args.action == "rollback":
        if args.version is None:
            print("error: models rollback VERSION", file=sys.stderr)
            return 2
        try:
            m = store.rollback(args.version)
        except SnapshotError as err:
            print(f"error: {err}", file=sys.stderr)
            return 1
        if args.json:
            _print_json({"current": m["current"], "rolled_back_from": m["rolled_back_from"]})
            return 0
        print(f"current model version is now v{m['current']} (was v{m['rolled_back_from']}); "
              "running workers load it within 10 s")
        return 0
    m = store.manifest()
    if args.json:
        print(json.dumps(m, indent=2))
        return 0
    if not m["versions"]:
        print(f"no snapshots in {store.dir}")
        return 0
    from rich.table import Column, Table

    t = Table(Column("version", no_wrap=True), "created", "events learned", "hybrid HR@10",
              "drifts", "reason", "parent", title=str(store.dir))
    for v in m["versions"]:
        q = v.get("quality", {}).get("hybrid", {})
        drifts = sum(x.get("drifts", 0) for x in v.get("quality", {}).values())
        mark = " (current)" if v["version"] == m["current"] else ""
        t.add_row(f"v{v['version']}{mark}",
                  datetime.fromtimestamp(v["created"], UTC).isoformat(timespec="seconds"),
                  f"{v.get('events_learned', 0):,}", f"{q.get('hr@10', 0):.3f}", str(drifts),
                  v.get("reason", ""), f"v{v['parent']}" if v.get("parent") else "")
    _console().print(t)
    return 0


def cmd_experiments(args, settings: Settings) -> int:
    """Per-arm figures of the active experiment, recomputed from the topics."""
    from leadstream.models.experiments import load_experiments, replay_counts, report

    path = args.file or settings.experiments_file
    exp = load_experiments(path)
    if exp is None:
        print("error: no active experiment (set LEADSTREAM_EXPERIMENTS_FILE or --file)",
              file=sys.stderr)
        return 2
    if not settings.kafka_bootstrap:
        print("error: set LEADSTREAM_KAFKA_BOOTSTRAP", file=sys.stderr)
        return 2
    items = asyncio.run(_experiment_items(settings, args.timeout))
    r = report(replay_counts(items, exp.attribution_window_seconds), exp)
    if args.json:
        print(json.dumps(r, indent=2))
        return 0
    from rich.table import Table

    t = Table("arm", "lists", "impressions", "clicks", "click-through (95% CI)", "save rate",
              "booking rate", title=f"experiment {r['experiment']} (control: {r['control']})")

    def cell(e):
        sig = ""
        if "p_value" in e:
            sig = f"  p={e['p_value']:.3g}" + (" [bold green]significant[/]" if e["significant"]
                                               else "")
        return f"{e['value']:.3%} [{e['ci95'][0]:.2%}, {e['ci95'][1]:.2%}]{sig}"

    for arm, row in r["arms"].items():
        t.add_row(arm, str(row["recommendations"]), str(row["impressions"]), str(row["clicks"]),
                  cell(row["click_through"]), cell(row["save_rate"]), cell(row["booking_rate"]))
    _console().print(t)
    return 0


async def _experiment_items(settings: Settings, idle: float) -> list:
    """Recommendations and valid interactions of the topics, in event-time order."""
    from leadstream.contract.events import InvalidRecord, parse_event

    far = timedelta(days=365 * 200)
    items, seen = [], set()
    for topic, value in await _read_all(settings, ("recommendations", "interactions"), idle):
        if topic.endswith("recommendations"):
            rec = orjson.loads(value)
            if rec["recommendation_id"] in seen:  # a list re-sent after a crash
                continue
            seen.add(rec["recommendation_id"])
            items.append((datetime.fromisoformat(rec["event_time"]).timestamp(), 1,
                          ("rec", rec)))
            continue
        try:
            ev = parse_event(value, max_future_skew=far, max_age=far)
        except InvalidRecord:
            continue
        if ev.event_id not in seen:
            seen.add(ev.event_id)
            items.append((ev.timestamp.timestamp(), 0, ("event", ev)))
    items.sort(key=lambda x: (x[0], x[1]))
    return [x[2] for x in items]


def cmd_agents(args, settings: Settings) -> int:
    """Every agent's figures against the team median, from the agent-facts topic."""
    from leadstream.models.agents import insights, replay

    if not settings.kafka_bootstrap:
        print("error: set LEADSTREAM_KAFKA_BOOTSTRAP", file=sys.stderr)
        return 2
    facts = [orjson.loads(v) for _, v in
             asyncio.run(_read_all(settings, ("agent-facts",), args.timeout))]
    seen, unique = set(), []
    for f in facts:  # a fact re-sent after a worker crash counts once
        if (f["event_id"], f["kind"]) not in seen:
            seen.add((f["event_id"], f["kind"]))
            unique.append(f)
    r = insights(replay(unique))
    if args.json:
        print(json.dumps({"agents": r, "facts": len(unique)}, indent=2))
        return 0
    from rich.table import Table

    names = ("leads_handled", "hot_response_minutes", "contact_to_response", "booking_rate",
             "conversion_rate")
    t = Table("agent", *[n.replace("_", " ") for n in names], "hints",
              title=f"agents (team median in brackets) from {len(unique)} facts")

    def cell(f):
        def fmt(v):
            return "-" if v is None else f"{v:.3g}"

        return f"{fmt(f['value'])} ({fmt(f['team_median'])})"

    for agent, ins in sorted(r.items()):
        t.add_row(agent, *[cell(ins["figures"][n]) for n in names], "; ".join(ins["hints"]))
    _console().print(t)
    return 0


async def _read_all(settings: Settings, logical: tuple[str, ...],
                    idle: float) -> list[tuple[str, bytes]]:
    """(topic, value) of every record of the topics up to where they ended when the read
    began (so a live stream, such as the demo's, does not keep it reading), or until
    ``idle`` seconds bring nothing."""
    from aiokafka import AIOKafkaConsumer

    consumer = AIOKafkaConsumer(*(settings.topic(t) for t in logical), group_id=None,
                                auto_offset_reset="earliest", enable_auto_commit=False,
                                **settings.kafka_client_kwargs())
    await consumer.start()
    out = []
    try:
        last = time.monotonic()
        while not consumer.assignment() and time.monotonic() - last < idle:
            await asyncio.sleep(0.05)
        end = await consumer.end_offsets(list(consumer.assignment()))
        while time.monotonic() - last < idle:
            if end and all([await consumer.position(tp) >= n for tp, n in end.items()]):
                break
            batch = await consumer.getmany(timeout_ms=300, max_records=10_000)
            for tp, msgs in batch.items():
                for m in msgs:
                    last = time.monotonic()
                    out.append((tp.topic, m.value))
    finally:
        await consumer.stop()
    return out


def cmd_top(args, settings: Settings) -> int:
    """A live terminal view of one worker (and, with a bootstrap, its recommendations)."""
    from leadstream.cli import top

    url = args.url or f"http://{settings.web_host}:{settings.web_port}"
    try:
        top.scrape(url)
    except OSError as err:
        print(f"error: no worker answers at {url} ({err}); start one with `leadstream worker`"
              " or pass --url", file=sys.stderr)
        return 1
    if args.json:
        return top.run_json(url, interval=args.interval, duration=args.duration)
    return top.run(url, interval=args.interval, duration=args.duration,
                   bootstrap_settings=settings if settings.kafka_bootstrap else None)


def cmd_bench(args, settings: Settings) -> int:
    from leadstream.bench import common as bench

    if args.what == "features":
        r = bench.bench_features(leads=args.leads, days=args.days, seed=args.seed,
                                 memory_leads=args.memory_leads)
        show = bench.print_features
    elif args.what == "scoring":
        r = bench.bench_scoring(sizes=tuple(int(x) for x in args.sizes.split(",")),
                                seed=args.seed)
        show = bench.print_scoring
    elif args.what == "stages":
        from leadstream.bench import stages as benchstages

        r = benchstages.bench_stages(leads=args.leads, seed=args.seed, batch=args.batch)
        show = benchstages.print_stages
    elif args.what == "scale":
        from leadstream.bench import scale as benchscale

        r = benchscale.bench_scale(sizes=tuple(int(x) for x in args.lead_counts.split(",")),
                                   window=args.window, seed=args.seed)
        show = benchscale.print_scale
    elif args.what == "restore":
        from leadstream.bench import restore as benchrestore

        r = benchrestore.bench_restore(leads=args.restore_leads, sim_leads=args.leads,
                                       days=args.days, seed=args.seed)
        show = benchrestore.print_restore
    elif args.what == "mf":
        from leadstream.bench import mf as benchmf

        if not args.file:
            print("error: bench mf needs --file EVENTS.jsonl", file=sys.stderr)
            return 2
        r = benchmf.bench_mf(args.file, args.variant or ["default", "river_funkmf"])
        show = benchmf.print_mf
    elif args.what == "soak":
        from leadstream.bench import soak

        r = soak.soak(minutes=args.minutes, rate=args.rate, active=args.leads,
                      lead_ttl_seconds=args.lead_ttl, seed=args.seed)
        show = soak.print_soak
    else:
        from leadstream.bench import pipeline as benchpipe

        r = benchpipe.bench_pipeline(events=args.events, leads=args.leads,
                                     loads=tuple(float(x) for x in args.loads.split(",")),
                                     seconds=args.seconds, seed=args.seed)
        show = benchpipe.print_pipeline
    if args.json:
        print(json.dumps(r, indent=2))
    else:
        show(r)
    return 0 if r.get("passed", True) else 1  # the soak's verdicts


# ---------------------------------------------------------------------------------------


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("leadstream")
    except PackageNotFoundError:  # run from a checkout that is not installed
        return "unknown (not installed)"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="leadstream", description=__doc__)
    p.add_argument("--version", action="version", version=f"leadstream {_version()}")
    sub = p.add_subparsers(dest="command", required=True)

    b = sub.add_parser("broker",
                       help="run the embedded broker (Apache Kafka KRaft; Tansu w/o Java)")
    b.add_argument("--port", type=int, default=None, help="default: LEADSTREAM_BROKER_PORT / 9092")
    b.add_argument("--data-dir", help="keep the broker's data here (default: temporary)")
    b.add_argument("--no-topics", action="store_true", help="do not create topics.yaml's topics")
    b.add_argument("--json", action="store_true",
                   help="once ready: one JSON object (kind, bootstrap, topics applied)")
    b.set_defaults(func=cmd_broker)

    t = sub.add_parser("topics", help="topics from topics.yaml")
    t.add_argument("action", choices=["apply", "list"])
    t.add_argument("--json", action="store_true")
    t.set_defaults(func=cmd_topics)

    w = sub.add_parser("worker", help="run a Faust worker")
    w.add_argument("--loglevel", default="warning")
    w.set_defaults(func=cmd_worker)

    pr = sub.add_parser("produce", help="publish JSON-lines records from FILE or stdin")
    pr.add_argument("file", nargs="?", default="-")
    pr.add_argument("--topic", default="interactions", choices=["interactions", "properties"])
    pr.add_argument("--strict", action="store_true", help="send nothing if any line is invalid")
    pr.add_argument("--json", action="store_true",
                    help="a summary on stdout: topic, records, sent, invalid, errors")
    pr.set_defaults(func=cmd_produce)

    tl = sub.add_parser("tail", help="print decoded records of a topic")
    tl.add_argument("topic")
    tl.add_argument("--from-beginning", action="store_true")
    tl.add_argument("--max", type=int, default=None, help="stop after N records")
    tl.add_argument("--timeout", type=float, default=None, help="stop after S idle seconds")
    tl.add_argument("--json", action="store_true",
                    help="one JSON value per line (dead letters and non-JSON values wrapped)")
    tl.set_defaults(func=cmd_tail)

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

    sc = sub.add_parser("schemas", help="check (or --write) the JSON Schemas in schemas/")
    sc.add_argument("--write", action="store_true")
    sc.add_argument("--json", action="store_true")
    sc.set_defaults(func=cmd_schemas)

    st = sub.add_parser("settings", help="print the effective settings (secrets hidden)")
    st.add_argument("--json", action="store_true", help="(the output is always JSON)")
    st.set_defaults(func=cmd_settings)

    fe = sub.add_parser("features", help="one lead's current features, or the feature catalog")
    fe.add_argument("lead_id", nargs="?")
    fe.add_argument("--catalog", action="store_true", help="print the feature catalog")
    fe.add_argument("--write", action="store_true", help="with --catalog: write docs/features.md")
    fe.add_argument("--json", action="store_true")
    fe.add_argument("--at-last-event", action="store_true",
                    help="windows as of the lead's latest event time (default: now)")
    fe.add_argument("--url", help="a worker's web address (default: LEADSTREAM_WEB_HOST/PORT)")
    fe.set_defaults(func=cmd_features)

    ev = sub.add_parser("evaluate", help="replay an event file through every model, no broker")
    ev.add_argument("--events", required=True, help="JSON lines in the event schema")
    ev.add_argument("--catalog", help="JSON lines of listings (optional)")
    ev.add_argument("--protocol", default="prequential",
                    choices=["prequential", "leave-last-out", "both"])
    ev.add_argument("--limit", type=int, default=None, help="the first N events (by time)")
    ev.add_argument("--seed", type=int, default=42)
    ev.add_argument("--targets", metavar="TYPE[,TYPE...]",
                    help="event types that are scored (default: every positive event)")
    ev.add_argument("--exclude-seen", action="store_true",
                    help="leave every listing the lead interacted with before (views "
                         "included) out of its ranking")
    ev.add_argument("--no-references", action="store_true",
                    help="skip River's FunkMF and BiasedMF references (faster)")
    ev.add_argument("--tune-half", action="store_true",
                    help="choose the hybrid's weights on the first half of the stream and "
                         "report every figure on the second half")
    ev.add_argument("--tune", action="store_true",
                    help="search the hybrid's weights instead; prints the settings to use")
    ev.add_argument("--report", metavar="FILE.html",
                    help="also write the figures and charts (HR@10 along the stream, "
                         "coverage, lead-score calibration) to one self-contained HTML file")
    ev.add_argument("--json", action="store_true",
                    help="the figures as JSON (with --report: the curves too, as 'series')")
    ev.set_defaults(func=cmd_evaluate)

    ex = sub.add_parser("experiments", help="A/B experiments: report per arm")
    ex.add_argument("action", choices=["report"])
    ex.add_argument("--file", help="experiments YAML (default: LEADSTREAM_EXPERIMENTS_FILE)")
    ex.add_argument("--timeout", type=float, default=3.0, help="stop reading after S idle s")
    ex.add_argument("--json", action="store_true")
    ex.set_defaults(func=cmd_experiments)

    ag = sub.add_parser("agents", help="agent insights: report per agent vs the team median")
    ag.add_argument("action", choices=["report"])
    ag.add_argument("--timeout", type=float, default=3.0, help="stop reading after S idle s")
    ag.add_argument("--json", action="store_true")
    ag.set_defaults(func=cmd_agents)

    tp = sub.add_parser("top", help="live terminal view of a worker: rates, lag, latency, models")
    tp.add_argument("--url", help="the worker's web address (default: LEADSTREAM_WEB_HOST/PORT)")
    tp.add_argument("--interval", type=float, default=1.0)
    tp.add_argument("--duration", type=float, default=None, help="stop after S seconds")
    tp.add_argument("--json", action="store_true",
                    help="no live view: one JSON object of the figures per interval")
    tp.set_defaults(func=cmd_top)

    mo = sub.add_parser("models", help="model snapshots: list, rollback VERSION")
    mo.add_argument("action", choices=["list", "rollback"])
    mo.add_argument("version", nargs="?", type=int)
    mo.add_argument("--dir", help="snapshot directory (default: the worker's, from settings)")
    mo.add_argument("--json", action="store_true")
    mo.set_defaults(func=cmd_models)

    be = sub.add_parser("bench", help="benchmarks that print their figures")
    be.add_argument("what", choices=["features", "scoring", "pipeline", "stages", "scale", "soak",
                                     "restore", "mf"])
    be.add_argument("--events", type=int, default=20_000, help="pipeline: backlog size")
    be.add_argument("--loads", default="200,500,750,1000", help="pipeline: offered events/s")
    be.add_argument("--seconds", type=float, default=10.0, help="pipeline: per offered load")
    be.add_argument("--sizes", default="1000,10000,100000",
                    help="scoring: catalog sizes, comma-separated")
    be.add_argument("--lead-counts", default="10000,100000,1000000",
                    help="scale: numbers of leads, comma-separated")
    be.add_argument("--window", type=int, default=20_000,
                    help="scale: events timed per number of leads")
    be.add_argument("--leads", type=int, default=1000,
                    help="simulated leads (soak: leads active at once)")
    be.add_argument("--days", type=float, default=14.0, help="simulated days")
    be.add_argument("--seed", type=int, default=7)
    be.add_argument("--minutes", type=float, default=10.0, help="soak: duration")
    be.add_argument("--rate", type=float, default=300.0,
                    help="soak: offered events/s (default about 70%% of one worker's capacity)")
    be.add_argument("--lead-ttl", type=float, default=120.0,
                    help="soak: the worker's LEADSTREAM_LEAD_TTL_SECONDS")
    be.add_argument("--memory-leads", type=int, default=100_000,
                    help="leads in the memory measurement")
    be.add_argument("--restore-leads", type=int, default=100_000,
                    help="restore: leads in the changelog the worker reads back")
    be.add_argument("--batch", type=int, default=500,
                    help="stages: records per step (the worker's batch_max_events)")
    be.add_argument("--file", help="mf: an event file (JSON lines)")
    be.add_argument("--variant", action="append",
                    help="mf: 'default', a reference (river_funkmf, river_biasedmf) or "
                         "CollaborativeModel parameters 'negatives=4,lr=0.1'; repeatable")
    be.add_argument("--json", action="store_true")
    be.set_defaults(func=cmd_bench)
    return p


def _failure(err: BaseException) -> tuple[str, int] | None:
    """The one-line message and exit code for an error a user can meet (a missing file,
    an unreachable broker, invalid settings), None for a bug (its traceback is shown)."""
    from aiokafka.errors import KafkaConnectionError, KafkaError
    from pydantic import ValidationError

    if isinstance(err, OSError) and err.filename is not None:
        return f"{err.strerror or err}: {err.filename}", 2
    if isinstance(err, KafkaConnectionError):
        return f"cannot reach the Kafka broker ({err}); check LEADSTREAM_KAFKA_BOOTSTRAP", 3
    if isinstance(err, KafkaError):
        return f"Kafka refused the request: {err}", 3
    if isinstance(err, ValidationError):
        first = err.errors()[0]
        where = ".".join(str(x) for x in first["loc"]) or "settings"
        return f"invalid setting {where}: {first['msg']}", 2
    return None


def main(argv: list[str] | None = None) -> int:
    """Run one command. An error a user can meet ends in one line on stderr and a non-zero
    exit (2: a file or setting, 3: the broker); ``LEADSTREAM_DEBUG=1`` shows the traceback."""
    args = build_parser().parse_args(argv)
    try:
        settings = Settings()
        return int(args.func(args, settings) or 0)
    except KeyboardInterrupt:
        return 130
    except Exception as err:
        failure = _failure(err)
        if failure is None or os.environ.get("LEADSTREAM_DEBUG"):
            raise
        print(f"leadstream {args.command}: error: {failure[0]}", file=sys.stderr)
        return failure[1]


if __name__ == "__main__":
    sys.exit(main())
