"""``leadstream experiments report`` (per arm) and ``leadstream agents report`` (per
agent against the team median), recomputed from the topics."""

from __future__ import annotations

import asyncio
import json
import sys
import time
from datetime import datetime, timedelta

import orjson

from leadstream.cli.common import (
    get_console,
)
from leadstream.contract.settings import Settings


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
    get_console().print(t)
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
    get_console().print(t)
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


def register(sub) -> None:
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
