"""``leadstream bench restore``: how long a worker takes to read its leads back.

A worker that starts, or that a rebalance hands a partition, reads that partition of the
lead table's changelog whole before it handles the partition's events
(``streams/durable.py``; docs/reliability.md, point 6). This measures that on the embedded broker:

1. ``leads`` lead records, each the stored value of a simulated lead with ``days`` of
   history (``features/record.py``; a few hundred distinct ones, reused under distinct
   keys), are written to the table's changelog topic, partitioned by key as the worker
   writes them;
2. the restore itself: the worker's code (``StateRestorer`` reading every partition with
   ``streams.readers.read_partition``, all partitions at once as after a worker's start),
   timed in this process from the assignment until every partition is ready;
3. a worker is started on that changelog and timed from its start to ``/health/ready``
   (which waits for every restore); it must hold every lead. The reference, in the same
   run: a worker started on an empty changelog.

The changelog holds one
record per lead here, as after compaction; before the broker compacts it, it holds one
record per applied event since the last compaction, and reading takes longer in
proportion.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path

from leadstream.bench.common import (
    bench_worker,
    console,
    embedded_or_configured,
    finish_work,
    lead_records,
    machine,
    produce,
    rss_bytes,
)
from leadstream.scrape import scrape, total


async def _write_changelog(s, topic: str, partitions: int, values: list[bytes],
                           leads: int) -> int:
    """Create ``topic`` as Faust would (compacted) and write ``leads`` records to it;
    returns the bytes of values written."""
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    admin = AIOKafkaAdminClient(**s.kafka_client_kwargs())
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, partitions, 1,
                                            topic_configs={"cleanup.policy": "compact"})])
    finally:
        await admin.close()
    await produce(s, topic, ((f"L{i:08d}".encode(), values[i % len(values)])
                              for i in range(leads)))
    return sum(len(values[i % len(values)]) for i in range(leads))


async def _restore_here(s, topic: str, partitions: int) -> tuple[float, int]:
    """(seconds, leads): the worker's restore of every partition of ``topic``, here."""
    from leadstream.streams.durable import StateRestorer
    from leadstream.streams.readers import read_partition
    from leadstream.streams.step import partition_for

    data: dict = {}
    restorer = StateRestorer(data, lambda k: partition_for(k, partitions),
                             lambda p: read_partition(s, topic, p))
    t0 = time.perf_counter()
    restorer.on_assigned(1, range(partitions))
    for p in range(partitions):
        await restorer.ready(p)
    return time.perf_counter() - t0, len(data)


def _start(base, work: Path, name: str, values: list[bytes], leads: int) -> dict:
    from leadstream.ops.broker import free_port
    from leadstream.streams.topics import apply_topics, load_topics

    s = base.model_copy(update={"topic_prefix": f"restore-{uuid.uuid4().hex[:8]}-{name}-",
                                "web_port": free_port(),
                                "worker_data_dir": work / name})
    asyncio.run(apply_topics(s))
    partitions = load_topics(s)["interactions"].partitions
    changelog = f"{s.topic_prefix}{s.app_id}-features_by_lead-changelog"
    written = asyncio.run(_write_changelog(s, changelog, partitions, values, leads))
    here_seconds, here_leads = asyncio.run(_restore_here(s, changelog, partitions))
    t0 = time.monotonic()
    worker = bench_worker(s, work / f"worker-{name}.log", ready=False)
    try:
        worker.wait_ready(900.0)
        ready = time.monotonic() - t0
        m = scrape(worker.url)
        rss = rss_bytes(worker.pid)
    finally:
        worker.stop()
    return {"leads": leads, "changelog_bytes": written,
            "restore_seconds": round(here_seconds, 3), "restore_leads": here_leads,
            "ready_seconds": round(ready, 2),
            "leads_held": int(total(m, "leadstream_leads")),
            "restored_leads": int(total(m, "leadstream_state_restored_leads_total")),
            "restores": int(total(m, "leadstream_state_restores_total")),
            "restore_seconds_sum": round(total(m, "leadstream_state_restore_seconds_sum"), 2),
            "worker_rss_bytes": rss}


def bench_restore(leads: int = 100_000, sim_leads: int = 300, days: float = 14.0,
                  seed: int = 7) -> dict:
    values = lead_records(sim_leads, days, seed)
    base, work, broker = embedded_or_configured("restore")
    ok = False
    try:
        empty = _start(base, work, "empty", values, 0)
        full = _start(base, work, "full", values, leads)
        ok = (full["leads_held"] == full["restore_leads"] == leads
              and empty["leads_held"] == empty["restore_leads"] == 0)
    finally:
        if broker is not None:
            broker.stop()
        finish_work(work, keep=not ok)
    cost = max(full["restore_seconds"], 1e-9)
    return {
        "benchmark": "restore",
        "machine": machine(),
        "record_bytes_mean": round(sum(map(len, values)) / len(values)),
        "sim": {"leads": sim_leads, "days": days, "seed": seed},
        "reference_empty": empty,
        "restore": full,
        "restore_seconds": round(cost, 3),
        "ready_seconds_over_reference": round(full["ready_seconds"] - empty["ready_seconds"], 2),
        "leads_per_second": round(leads / cost),
        "megabytes_per_second": round(full["changelog_bytes"] / cost / 1e6, 1),
        "every_lead_restored": ok,
        "passed": ok,
    }


def print_restore(r: dict) -> None:
    full, empty = r["restore"], r["reference_empty"]
    c = console("restore", f"{full['leads']:,} leads of {r['record_bytes_mean']:,} B each "
                f"({full['changelog_bytes'] / 1e6:,.0f} MB) read back from the changelog, broker "
                "on the same machine", r)
    for name, value in (
            ("restore, every partition at once (the worker's code)",
             f"[bold]{r['restore_seconds']:.2f} s[/]"),
            ("leads restored per second", f"{r['leads_per_second']:,}"),
            ("changelog read", f"{r['megabytes_per_second']:.1f} MB/s"),
            ("worker start to ready: empty changelog (reference) / with the leads",
             f"{empty['ready_seconds']:.2f} s / {full['ready_seconds']:.2f} s "
             f"(+{r['ready_seconds_over_reference']:.2f} s)"),
            ("the worker's own restores (metrics)",
             f"{full['restores']} partitions, {full['restore_seconds_sum']:.2f} s summed"),
            ("worker RSS after the restore", f"{full['worker_rss_bytes'] / 1e6:,.0f} MB"),
            ("every lead restored", "yes" if r["every_lead_restored"] else "NO")):
        c.print(f"  {name}: {value}")
