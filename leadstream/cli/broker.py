"""``leadstream broker`` (the embedded broker) and ``leadstream topics`` (topics.yaml
against the broker)."""

from __future__ import annotations

import asyncio
import json
import signal
import sys
import time
from pathlib import Path

from leadstream.cli.common import (
    ensure_topics,
    get_console,
)
from leadstream.contract.settings import Settings


def _report_json(report) -> dict:
    return {"created": report.created, "unchanged": report.unchanged,
            "missing": report.missing, "differences": report.differences}


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
        report = None if args.no_topics else ensure_topics(ready, verbose=False)
        print(json.dumps({"kind": broker.kind, "bootstrap": broker.bootstrap,  # one line
                          "topics": None if report is None else _report_json(report)}),
              flush=True)
    else:
        print(f"{broker.kind} broker ready: bootstrap {broker.bootstrap}")
        print(f"export LEADSTREAM_KAFKA_BOOTSTRAP={broker.bootstrap}", flush=True)
        if not args.no_topics:
            ensure_topics(ready)
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
        get_console().print(t)
    return 1 if report is not None and (report.differences or report.missing) else 0


def register(sub) -> None:
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
