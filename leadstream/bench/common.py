"""What the benchmarks share: the machine they ran on, a process's memory and CPU time,
the header of their output, percentiles, simulated streams and stored lead records, the
broker they run against (configured or embedded) in a work directory, a producer, and
the worker they start (through :mod:`leadstream.bench.harness`)."""

from __future__ import annotations

import os
import platform
import shutil
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson

from leadstream.bench.harness import Worker, start_worker


def machine() -> dict:
    return {"python": platform.python_version(), "cpus": os.cpu_count(),
            "machine": platform.machine(), "date": datetime.now(UTC).date().isoformat()}


def rss_bytes(pid: int | str = "self") -> int:
    """Resident memory of a process (Linux ``/proc``), in bytes."""
    with open(f"/proc/{pid}/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def cpu_seconds(pid: int | str = "self") -> float:
    """CPU time (user + system) a process has used so far (Linux ``/proc``), in seconds."""
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()  # after the command name
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def console(name: str, detail: str, r: dict):
    """A rich console, after the benchmark's header line (what ran, on which machine)."""
    from leadstream.console import console as _console

    c = _console()
    c.print(f"[bold]leadstream bench {name}[/]  {detail}; Python {r['machine']['python']}, "
            f"{r['machine']['cpus']} CPUs")
    return c


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(int(q * len(xs)), len(xs) - 1)]


def simulated_events(leads: int, days: float, seed: int):
    """(parsed events in time order, catalog attributes by property id)."""
    from leadstream.contract.events import parse_event, parse_listing
    from leadstream.models.catalog import Catalog
    from leadstream.simulate import SimConfig, Simulator

    start = datetime(2026, 3, 1, tzinfo=UTC)
    sim = Simulator(SimConfig(leads=leads, properties=max(200, leads // 2), days=days,
                              seed=seed, start=start))
    cat = Catalog()
    events = []
    far = timedelta(days=3650)
    for rec in sim.records():
        if rec.topic == "properties":
            if rec.value is not None:
                cat.upsert(parse_listing(rec.value))
        else:
            events.append(parse_event(rec.value, now=start + far, max_age=far))
    attrs = {pid: cat.attributes(pid) for pid in cat.index}
    return events, attrs


def lead_records(leads: int, days: float, seed: int) -> list[bytes]:
    """The table values (``features/record.py``: features, profile and the last list and
    score published in one record) of ``leads`` simulated leads after ``days`` of
    history, as the worker stores them (last updated now, so none is idle; the published
    frames from :func:`published_frames` of at most 200 leads over 3 days)."""
    from leadstream.features import lead as F
    from leadstream.features import record
    from leadstream.features.profile import LeadProfile
    from leadstream.features.profile import update as profile_update

    events, attrs = simulated_events(leads, days, seed)
    now = time.time()
    feats: dict[str, F.LeadFeatures] = {}
    profiles: dict[str, LeadProfile] = {}
    for ev in events:
        listing = attrs.get(ev.property_id) if ev.property_id else None
        F.update(feats.setdefault(ev.lead_id, F.LeadFeatures()), ev, listing, now=now)
        profile_update(profiles.setdefault(ev.lead_id, LeadProfile()), ev, listing)
    frames = published_frames(min(leads, 200), min(days, 3.0), seed)
    return [record.pack(F.encode(feats[lead]), orjson.dumps(p.to_dict()),
                        frames[i % len(frames)]) for i, (lead, p) in enumerate(profiles.items())]


def simulated_step(sim, settings=None):
    """A fresh worker step (:class:`streams.step.Step`, 4 partitions) holding the listings
    of simulator ``sim``, and its interactions as (key, value) pairs, in order: what a
    replay through the step (:func:`streams.step.replay`) takes."""
    from leadstream.contract.settings import Settings
    from leadstream.streams.step import Step

    step, pairs = Step(settings or Settings(), 4), []
    for rec in sim.records():
        if rec.topic == "properties":
            step.load_listing(rec.value, rec.key)
        else:
            pairs.append((rec.key, rec.value))
    return step, pairs


def published_frames(leads: int, days: float, seed: int) -> list[bytes]:
    """The stored frames of the last list and score published (``features/record.py``)
    of ``leads`` simulated leads replayed through the worker's step (``streams.step``),
    its catalog loaded from the same simulation."""
    from leadstream.features import record
    from leadstream.simulate import SimConfig, Simulator
    from leadstream.streams.step import LeadStore, replay

    start = datetime.now(UTC) - timedelta(days=days + 4)
    sim = Simulator(SimConfig(leads=leads, properties=max(200, leads // 2), days=days,
                              seed=seed, start=start))
    step, pairs = simulated_step(sim)
    store = LeadStore(cache_size=0)
    for _ in replay(step, pairs, store, batch=50):
        pass
    frames = [record.published(b) for b in store.packed.values()]
    return [f for f in frames if f]


def embedded_or_configured(kind: str):
    """(settings, work dir, broker or None): the configured Kafka, or the embedded one
    started in a fresh work directory when ``LEADSTREAM_KAFKA_BOOTSTRAP`` is unset."""
    from leadstream.contract.settings import Settings
    from leadstream.ops.broker import free_port, start_kafka

    base = Settings()
    work = Path(tempfile.mkdtemp(prefix=f"leadstream-{kind}-"))
    broker = None
    if not base.kafka_bootstrap:
        broker = start_kafka(base.home, free_port(), work / "kafka")
        base = base.model_copy(update={"kafka_bootstrap": broker.bootstrap})
    return base, work, broker


def finish_work(work: Path, keep: bool) -> None:
    """Remove a benchmark's work directory (broker data, worker logs), or, when ``keep``
    (the run failed), say where it is."""
    if keep:
        print(f"worker logs and broker data kept in {work}", file=sys.stderr)
    else:
        shutil.rmtree(work, ignore_errors=True)


def save_event(event_id: str, lead: str, property_id: str) -> bytes:
    """A ``property_saved`` event at the current time: each one is due a new list."""
    return orjson.dumps({
        "event_id": event_id, "lead_id": lead, "event_type": "property_saved",
        "timestamp": datetime.now(UTC).isoformat(), "session_id": "bench",
        "property_id": property_id})


async def produce(s, topic: str, records) -> None:
    """Send ``records`` ((key, value) pairs) to ``topic`` and wait for them."""
    from aiokafka import AIOKafkaProducer

    p = AIOKafkaProducer(linger_ms=5, max_batch_size=262_144, **s.kafka_client_kwargs())
    await p.start()
    try:
        for key, value in records:
            await p.send(topic, value, key=key)
        await p.flush()
    finally:
        await p.stop()


def bench_worker(s, log: Path, extra_env: dict | None = None, ready: bool = True,
                 timeout: float = 120.0) -> Worker:
    """A worker for a benchmark (settings ``s``, its models under its data directory, an
    idle-lead sweep every 5 s), logging to ``log``; once ready unless ``ready`` is
    false."""
    env = {"LEADSTREAM_MODEL_DIR": str(Path(s.worker_data_dir) / "models"),
           "LEADSTREAM_LEAD_SWEEP_INTERVAL_SECONDS": "5", **(extra_env or {})}
    if ready:
        return start_worker(s, log, env, timeout=timeout)
    return Worker(s, log, env)
