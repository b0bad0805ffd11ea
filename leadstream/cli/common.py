"""What the commands share: the terminal, JSON output, the broker they run against
(configured or embedded), the declared topics, and how a recommendation or a dead
letter reads on screen. No command module imports another: they import this."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys

import orjson

from leadstream.contract.settings import Settings


def get_console():
    """Rich output: the terminal's width, or no wrapping at all when piped."""
    from leadstream.console import console

    return console()


def print_json(obj) -> None:
    print(json.dumps(obj, indent=2, default=str), flush=True)


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


def ensure_topics(settings: Settings, verbose: bool = True):
    """Create topics.yaml's missing topics; prints what it did when ``verbose``."""
    from leadstream.streams.topics import apply_topics

    report = asyncio.run(apply_topics(settings))
    if verbose:
        for line in report.lines():
            print(line)
    return report


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


def describe_record(topic: str, msg) -> str:
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
