"""``leadstream top``: a live terminal view of one worker, for people without Grafana.

Every interval it scrapes the worker's ``/metrics`` and shows rates from counter deltas,
latency percentiles from histogram bucket deltas, consumer lag, state sizes and each
model's online quality (:func:`leadstream.scrape.summary`); with a Kafka bootstrap it
also shows the latest recommendations.
"""

from __future__ import annotations

import sys
import time

from leadstream.cli.common import format_recommendation
from leadstream.contract.settings import Settings
from leadstream.scrape import scrape, summary


def render(s: dict, recs: list[str], url: str):
    from rich.console import Group
    from rich.panel import Panel
    from rich.table import Table

    t = Table.grid(padding=(0, 3))
    lat = s["latency_ms"]
    fmt = lambda v: "-" if v is None else f"{v:g} ms"  # noqa: E731
    t.add_row("events in/s", f"{s['events_in_per_s']:,.0f}", "processed/s",
              f"{s['processed_per_s']:,.0f}", "recommendations/s",
              f"{s['recommendations_per_s']:,.1f}")
    t.add_row("dead letters/s", f"{s['dead_letters_per_s']:,.1f}", "duplicates/s",
              f"{s['duplicates_per_s']:,.1f}", "lag", f"{s['lag']:,.0f}")
    t.add_row("latency p50", fmt(lat["p50"]), "p95", fmt(lat["p95"]), "p99", fmt(lat["p99"]))
    t.add_row("leads", f"{s['leads']:,.0f}", "active listings", f"{s['catalog_active']:,.0f}",
              "processed", f"{s['processed_total']:,.0f}")
    m = Table("model", "online HR@10", "drifts", box=None)
    for name, q in s["models"].items():
        m.add_row(name, f"{q['hr@10']:.3f}", f"{q['drifts']:.0f}")
    parts = [t, m]
    if recs:
        parts.append(Panel("\n".join(recs[-5:]), title="latest recommendations"))
    return Panel(Group(*parts), title=f"leadstream top — {url}")


def run_json(url: str, interval: float = 1.0, duration: float | None = None) -> int:
    """``top --json``: every ``interval`` seconds one line of JSON, ``summary``'s figures
    over the interval with ``at`` (ISO time) and ``url``; until Ctrl-C or ``duration``."""
    import json
    from datetime import UTC, datetime

    prev, t_prev = scrape(url), time.monotonic()
    t_end = None if duration is None else t_prev + duration
    try:
        while t_end is None or time.monotonic() < t_end:
            time.sleep(interval if t_end is None else
                       max(0.0, min(interval, t_end - time.monotonic())))
            cur, now = scrape(url), time.monotonic()
            line = {"at": datetime.now(UTC).isoformat(timespec="seconds"), "url": url,
                    **summary(prev, cur, max(now - t_prev, 1e-9))}
            print(json.dumps(line), flush=True)
            prev, t_prev = cur, now
    except KeyboardInterrupt:
        pass
    return 0


def run(url: str, interval: float = 1.0, duration: float | None = None,
        bootstrap_settings=None) -> int:
    """Refresh until Ctrl-C (or ``duration`` seconds)."""
    import asyncio

    from rich.live import Live

    recs: list[str] = []

    async def follow():
        import orjson
        from aiokafka import AIOKafkaConsumer

        s = bootstrap_settings
        consumer = AIOKafkaConsumer(s.topic("recommendations"), group_id=None,
                                    auto_offset_reset="latest", **s.kafka_client_kwargs())
        await consumer.start()
        try:
            while True:
                batch = await consumer.getmany(timeout_ms=500)
                for msgs in batch.values():
                    for msg in msgs:
                        recs.append(format_recommendation(orjson.loads(msg.value), 1))
                        del recs[:-5]
        finally:
            await consumer.stop()

    async def main():
        task = asyncio.create_task(follow()) if bootstrap_settings is not None else None
        prev, t_prev = scrape(url), time.monotonic()
        t_end = None if duration is None else t_prev + duration
        with Live(render(summary(prev, prev, 1.0), recs, url), refresh_per_second=4) as live:
            while t_end is None or time.monotonic() < t_end:
                await asyncio.sleep(interval)
                cur, now = scrape(url), time.monotonic()
                live.update(render(summary(prev, cur, now - t_prev), recs, url))
                prev, t_prev = cur, now
        if task is not None:
            task.cancel()
        return 0

    try:
        return asyncio.run(main())
    except KeyboardInterrupt:
        return 0


def cmd_top(args, settings: Settings) -> int:
    """A live terminal view of one worker (and, with a bootstrap, its recommendations)."""
    url = args.url or f"http://{settings.web_host}:{settings.web_port}"
    try:
        scrape(url)
    except OSError as err:
        print(f"error: no worker answers at {url} ({err}); start one with `leadstream worker`"
              " or pass --url", file=sys.stderr)
        return 1
    if args.json:
        return run_json(url, interval=args.interval, duration=args.duration)
    return run(url, interval=args.interval, duration=args.duration,
                   bootstrap_settings=settings if settings.kafka_bootstrap else None)


def register(sub) -> None:
    tp = sub.add_parser("top", help="live terminal view of a worker: rates, lag, latency, models")
    tp.add_argument("--url", help="the worker's web address (default: LEADSTREAM_WEB_HOST/PORT)")
    tp.add_argument("--interval", type=float, default=1.0)
    tp.add_argument("--duration", type=float, default=None, help="stop after S seconds")
    tp.add_argument("--json", action="store_true",
                    help="no live view: one JSON object of the figures per interval")
    tp.set_defaults(func=cmd_top)
