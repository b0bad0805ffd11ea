"""``leadstream produce`` and ``leadstream tail``: records into a topic and out of one."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import time

import orjson

from leadstream.cli.common import (
    describe_record,
    get_console,
    print_json,
)
from leadstream.contract.settings import Settings


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
            print_json(summary(0))
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
        print_json(summary(len(records)))
    return 0


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

    console = get_console()
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
                                          + describe_record(topic, m))
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


def register(sub) -> None:
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
