"""The worker's background work: the catalog read, idle leads forgotten, model snapshots
(and rollbacks followed), model refits off the event loop, stalled input partitions
unstuck, agent insights published, and Python's full garbage collections
(:func:`add_collector`)."""

from __future__ import annotations

import asyncio
import logging
import time

from leadstream.features import record
from leadstream.models.snapshot import SnapshotStore
from leadstream.ops.gcpolicy import CollectorPolicy
from leadstream.ops.metrics import GC_GENERATIONS
from leadstream.streams import faust_internals as internals
from leadstream.streams import readers
from leadstream.streams.agents import publish_insights
from leadstream.streams.context import Context
from leadstream.streams.durable import StallWatch
from leadstream.streams.step import Step, partition_for

log = logging.getLogger("leadstream.worker")


class ModelSnapshots:
    """The models of ``step`` and their snapshots in ``store``: restored from the current
    snapshot when built, saved on :meth:`save`, a rollback followed on :meth:`follow`."""

    def __init__(self, settings, step: Step, store: SnapshotStore):
        self.settings, self.step, self.store = settings, step, store
        self._events = -1  # events learned at the last snapshot (or rollback)
        self._at: float | None = None  # monotonic time of the last periodic snapshot
        if store.manifest()["current"] is not None:
            suite, rows, entry = store.load()
            step.restore(suite, rows, entry["version"], entry.get("catalog_offsets"))
            step.metrics.model_version.set(entry["version"])
            log.info("models restored from snapshot v%d (%d events learned)",
                     entry["version"], suite.events_learned)

    def save(self, reason: str) -> None:
        step = self.step
        if step.models.events_learned == self._events:
            return
        version = self.store.save(step.models, step.catalog.ids[:],
                                  {**step.snapshot_meta(), "reason": reason})
        self._events = step.models.events_learned
        step.model_version = version
        step.metrics.model_version.set(version)
        step.metrics.snapshot_time.set(time.time())
        log.info("models snapshotted as v%d (%s)", version, reason)

    def follow(self) -> None:
        """Follow a rollback made with `leadstream models rollback`; snapshot periodically."""
        step = self.step
        current = self.store.manifest()["current"]
        if current is not None and current != step.model_version:
            suite, rows, entry = self.store.load(current)
            step.restore(suite, rows, current, entry.get("catalog_offsets"))
            self._events = suite.events_learned
            step.metrics.model_version.set(current)
            log.warning("models rolled back to snapshot v%d", current)
            return
        if self._at is None:
            self._at = time.monotonic()
        elif time.monotonic() - self._at >= self.settings.snapshot_interval_seconds:
            self._at = time.monotonic()
            self.save("periodic")


async def sweep_idle_leads(ctx: Context) -> None:
    """Delete leads idle for longer than the TTL from the table (and its changelog).

    Only leads of partitions whose state this worker holds whole (restored from the
    changelog, or held since): copies of other partitions are dropped at each
    rebalance (``streams.durable.StateRestorer``) and never tombstoned from here."""
    leads, restorer, step, store, n = ctx.leads, ctx.restorer, ctx.step, ctx.store, ctx.n
    keys = list(leads.data.keys())
    total = sessions = 0
    for start in range(0, len(keys), 5000):
        chunk = []
        for k in keys[start:start + 5000]:
            blob = leads.data.get(k)
            if not blob or not restorer.trusted(partition_for(k, n)):
                continue
            total += len(blob)
            sessions += record.peek(blob)[1]
            chunk.append((k, blob))
        for k in step.expired(chunk, time.time()):
            # a staged lead changed after its record was packed: not idle
            if k in leads.data and restorer.trusted(partition_for(k, n)) and not store.staged(k):
                step.forget(k.decode("utf-8", "replace"))
                del leads.data[k]
                store.forget_decoded((k,))
                step.metrics.leads_expired.inc()
                # the producer the agent writes through, so a lead's later value never
                # lands in the changelog ahead of this tombstone (if the partition moved
                # meanwhile, its new owner keeps the lead until its own sweep)
                await ctx.write_leads(partition_for(k, n), [(k, None)])
        await asyncio.sleep(0)
    step.metrics.lead_state_bytes.set(total)
    step.metrics.open_sessions.set(sessions)
    step.metrics.leads.set(len(leads.data))


def add_timers(ctx: Context, snapshots: ModelSnapshots) -> None:
    """Declare the catalog task, the timers and the shutdown snapshot on ``ctx.app``."""
    app, settings = ctx.app, ctx.settings
    interactions = ctx.topics["interactions"].get_topic_name()

    @app.timer(interval=settings.agent_insights_interval_seconds)
    async def publish_agent_insights():
        await publish_insights(ctx)

    @app.task
    async def load_catalog():
        await readers.load_catalog(settings, ctx.specs["properties"], ctx.step,
                                   ctx.catalog_ready, ctx.catalog_feed)

    @app.timer(interval=settings.lead_sweep_interval_seconds)
    async def forget_idle_leads():
        await sweep_idle_leads(ctx)

    if ctx.fence is not None:
        @app.timer(interval=min(1.0, settings.commit_interval_seconds))
        async def commit_changelog():
            """Commit what the changelog staged at least once a second, also when
            no offset commit comes (tombstones of the sweep), well inside the broker's
            transaction timeout. A fenced partition stops the worker."""
            try:
                await ctx.fence.commit()
            except Exception as err:
                log.error("%s", err)
                await app.crash(err)

    ctx.step.offload_refits()

    @app.timer(interval=1.0)
    async def refit_models():
        """Model refits that are due (EASE's inverse: about 0.3-0.7 s at 1,700-2,048
        listings, examples/ease_costs.py) are computed in a thread, off the event loop
        (numpy releases the GIL), and installed between batches; a rollback meanwhile
        discards the result."""
        suite = ctx.step.models
        for job in suite.refits():
            t = time.perf_counter()
            result = await asyncio.to_thread(job.compute)
            if ctx.step.models is suite:
                job.install(result)
                ctx.step.metrics.model_refit.observe(time.perf_counter() - t)

    @app.timer(interval=min(settings.snapshot_interval_seconds, 10.0))
    async def snapshot_models():
        snapshots.follow()

    @app.on_before_shutdown.connect
    async def snapshot_on_shutdown(app, **kwargs):
        snapshots.save("shutdown")

    stall_watch = StallWatch(patience=3)

    @app.timer(interval=5.0)
    async def unstick_partitions():
        """Seek an input partition that stopped moving for 15 s back to its committed
        offset (see ``streams.durable.StallWatch``)."""
        if not (ctx.catalog_ready.is_set() and internals.consuming(app)):
            stall_watch.reset()
            return
        pos = internals.input_positions(app, interactions)
        for tp in stall_watch.check(pos):
            committed = internals.committed_offset(app, tp)
            log.warning("input partition %d stalled at offset %d with %d records waiting "
                        "for 15 s: seeking it to its committed offset %d", tp.partition,
                        pos[tp][0], pos[tp][1] - pos[tp][0], committed)
            ctx.step.metrics.partition_stalls.labels(partition=str(tp.partition)).inc()
            await internals.seek_back(app, tp, committed)


def add_collector(app, settings) -> CollectorPolicy:
    """The worker process's garbage-collector policy (ops/gcpolicy.py): a full collection
    every ``gc_full_interval_seconds`` and none in between (0: CPython's own schedule),
    and every pause in ``leadstream_gc_pause_seconds{generation}``. Process-wide, so
    installed by ``run_worker``, not by ``create_app``."""
    interval = settings.gc_full_interval_seconds
    policy = CollectorPolicy(scheduled=interval > 0)
    policy.install()
    histogram = app.step.metrics.gc_pause
    children = {int(g): histogram.labels(generation=g) for g in GC_GENERATIONS}

    @app.timer(interval=1.0)
    async def gc_pauses():
        for gen, seconds in policy.pauses():
            children[gen].observe(seconds)

    if interval > 0:
        @app.timer(interval=interval)
        async def full_collection():
            found = policy.collect()
            log.debug("full garbage collection: %d unreachable objects", found)

    return policy
