"""The Faust application: topics from topics.yaml, the lead table, agents, web views.

Agents only wire: take a batch of records, call :meth:`streams.step.Step.run`, write the
table and send what it returns. Per-lead state lives in one changelog-backed table
co-partitioned with ``interactions`` and keyed by the raw lead id, ``features_by_lead``:
the rolling features (``features/lead.py`` bytes) and what the recommender needs
(``features/profile.py`` JSON) in one value (``features/record.py``), written once per
batch for each lead the batch changed; recently active leads stay decoded in memory
(:class:`streams.step.LeadStore`). A timer forgets leads idle for longer than
``lead_ttl_seconds``. What every worker needs whole (the catalog index, the models)
lives in the step object held by the app, never in module globals.
"""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import UTC, datetime

import faust
import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition
from faust.web import View

from features import lead as features
from features import record
from leadstream.outputs import AgentInsight
from models.agents import AgentStats, insights
from models.experiments import KINDS
from models.snapshot import SnapshotStore
from models.suite import MODELS
from ops.metrics import CONTENT_TYPE_LATEST
from streams.durable import (
    AGAIN,
    NEXT,
    OrderGuard,
    StallWatch,
    StateRestorer,
    make_at_least_once,
    make_delivery_checked,
    make_restore_owned,
    refuse,
)
from streams.step import (
    ALERT,
    DEAD_LETTER,
    FACT,
    RECOMMENDATION,
    REKEY,
    SCORE,
    LeadStore,
    Record,
    Step,
    partition_for,
)
from streams.topics import load_topics

log = logging.getLogger("leadstream.worker")


def _credentials(settings):
    if settings.security_protocol == "PLAINTEXT":
        return None
    kw = settings.kafka_client_kwargs()
    if settings.security_protocol.startswith("SASL"):
        return faust.SASLCredentials(
            username=kw["sasl_plain_username"],
            password=kw["sasl_plain_password"],
            ssl_context=kw.get("ssl_context"),
            mechanism=kw["sasl_mechanism"],
        )
    return faust.SSLCredentials(kw["ssl_context"])


async def read_partition(settings, topic: str, partition: int):
    """The ``(key, value)`` records of one partition of ``topic``, from its start to the end
    offset it has when the read begins (value None: a deletion), with a consumer of its own:
    how a worker reads a partition of the lead table's changelog back."""
    consumer = AIOKafkaConsumer(enable_auto_commit=False, group_id=None,
                                auto_offset_reset="earliest", **settings.kafka_client_kwargs())
    try:
        await asyncio.wait_for(consumer.start(), 30)
        tp = TopicPartition(topic, partition)
        consumer.assign([tp])
        await consumer.seek_to_beginning(tp)
        end = (await consumer.end_offsets([tp]))[tp]
        while await consumer.position(tp) < end:
            batch = await consumer.getmany(tp, timeout_ms=1000, max_records=10_000)
            for m in batch.get(tp, ()):
                if m.offset < end:
                    yield m.key, m.value
    finally:
        await consumer.stop()


def create_app(settings) -> faust.App:
    """Build the worker's Faust app for ``settings`` (bootstrap must be set)."""
    if not settings.kafka_bootstrap:
        raise ValueError("settings.kafka_bootstrap must be set to build the app")
    specs = load_topics(settings)
    n = specs["interactions"].partitions
    app = faust.App(
        f"{settings.topic_prefix}{settings.app_id}",
        broker=[f"kafka://{b.strip()}" for b in settings.kafka_bootstrap.split(",")],
        broker_credentials=_credentials(settings),
        store="memory://",
        topic_partitions=n,
        topic_replication_factor=specs["interactions"].replication_factor,
        topic_allow_declare=True,
        value_serializer="raw",
        key_serializer="raw",
        web_bind=settings.web_bind or settings.web_host,
        web_host=settings.web_host,
        web_port=settings.web_port,
        web_in_thread=False,
        datadir=str(settings.worker_data_dir or settings.home / "worker"),
        consumer_auto_offset_reset="earliest",
        processing_guarantee="at_least_once",
        autodiscover=False,
        table_standby_replicas=0,
        stream_wait_empty=False,
        # dead letters keep the original bytes: up to the topics' max.message.bytes (10 MB)
        producer_max_request_size=11_000_000,
        producer_linger=settings.producer_linger_ms / 1000.0,
        broker_session_timeout=settings.kafka_session_timeout_seconds,
        broker_heartbeat_interval=min(3.0, settings.kafka_session_timeout_seconds / 3),
        broker_rebalance_timeout=max(settings.kafka_session_timeout_seconds, 10.0),
    )
    # Faust gaps that lose events across crashes and rebalances, and the offset-order guard
    order = make_at_least_once(app, settings.fault_drop_one_in, specs["interactions"].full_name)
    step = Step(settings, n, interactions_topic=specs["interactions"].full_name)
    app.step = step  # type: ignore[attr-defined]
    snapshots = SnapshotStore(settings.snapshot_dir())
    if snapshots.manifest()["current"] is not None:
        suite, rows, entry = snapshots.load()
        step.restore(suite, rows, entry["version"], entry.get("catalog_offsets"))
        step.metrics.model_version.set(entry["version"])
        log.info("models restored from snapshot v%d (%d events learned)", entry["version"],
                 suite.events_learned)
    catalog_ready = asyncio.Event()

    def topic(name: str, **kw):
        s = specs[name]
        return app.topic(s.full_name, partitions=s.partitions, key_type=bytes, value_type=bytes,
                         key_serializer="raw", value_serializer="raw", internal=False, **kw)

    interactions = topic("interactions")
    properties = topic("properties")
    recommendations = topic("recommendations")
    lead_scores = topic("lead-scores")
    agent_insights = topic("agent-insights")
    agent_facts = topic("agent-facts")
    dlq = topic("interactions-dlq")

    # raw keys: the changelog partition of a lead is its interactions partition, and
    # Faust's router finds the worker holding a lead from the same bytes. One value per
    # lead (features + profile, features/record.py): one atomic changelog write per batch
    leads = app.Table("features_by_lead", default=None, partitions=n, key_type=bytes,
                      value_type=bytes, help="per lead: LeadFeatures bytes + LeadProfile JSON "
                      "(features/record.py)")

    store = LeadStore(leads.data, cache_size=settings.lead_cache_size)
    producer = app.producer
    watch = make_delivery_checked(app)
    changelog = leads.changelog_topic
    out_topics = {t: t.get_topic_name() for t in (interactions, recommendations, lead_scores,
                                                   agent_insights, agent_facts, dlq, changelog)}

    async def emit(topic, key: bytes | None, value: bytes | None, partition: int | None = None,
                   headers=None) -> None:
        """Hand a record to the producer: cheaper than ``Topic.send`` per event, and as
        safe: every offset commit first waits for the producer to deliver all it holds, and
        refuses if any of these records failed (``streams.durable``, point 7)."""
        watch(await producer.send(out_topics[topic], key, value, partition, None, headers))

    async def first_offset(tp, offset: int) -> int | None:
        """The first offset at or after ``offset`` of ``tp`` holding a record, as the broker
        says (None if it cannot tell within 5 s: the guard then reads the hole again)."""
        consumer = AIOKafkaConsumer(enable_auto_commit=False, group_id=None,
                                    auto_offset_reset="earliest",
                                    **settings.kafka_client_kwargs())
        try:
            await asyncio.wait_for(consumer.start(), 5)
            part = TopicPartition(tp.topic, tp.partition)
            consumer.assign([part])
            consumer.seek(part, offset)
            batch = await consumer.getmany(part, timeout_ms=5000, max_records=1)
            return batch[part][0].offset if batch.get(part) else None
        except Exception as err:
            log.warning("could not ask the broker about offset %d of %s: %r", offset, tp, err)
            return None
        finally:
            await consumer.stop()

    guard = OrderGuard(app, order, first_offset, lambda tp, kind: (
        step.metrics.input_gaps.labels(partition=str(tp.partition), kind=kind).inc()))

    def restored(partition: int, n_leads: int, seconds: float) -> None:
        m = step.metrics
        m.state_restores.labels(partition=str(partition)).inc()
        m.state_restored_leads.inc(n_leads)
        m.state_restore_seconds.observe(seconds)

    def handed_over(keys: list) -> None:
        store.forget_decoded()  # at every assignment: leads re-read or moved away
        for k in keys:
            step.forget(k.decode("utf-8", "replace"))
        step.metrics.leads_handed_over.inc(len(keys))

    restorer = StateRestorer(leads.data, lambda k: partition_for(k, n),
                             lambda p: read_partition(settings, changelog.get_topic_name(), p),
                             on_restored=restored, on_dropped=handed_over,
                             settle=producer.flush,
                             on_failure=lambda err: asyncio.ensure_future(app.crash(err)))

    topic_of = {DEAD_LETTER: dlq, REKEY: interactions, RECOMMENDATION: recommendations,
                SCORE: lead_scores, FACT: agent_facts, ALERT: agent_insights}

    @app.agent(interactions, name="process_interactions")
    async def process_interactions(stream):
        """Per batch fetched (up to ``batch_max_events`` or ``batch_max_wait_ms``): the
        records each partition may take, in offset order, through one step; each changed
        lead written once; the outputs sent. Faust acks the batch's records after this
        body returns, so every commit covers only records whose writes the producer holds
        (the commit flushes it first)."""
        await catalog_ready.wait()
        within = settings.batch_max_wait_ms / 1000.0
        async for events in stream.take_events(settings.batch_max_events, within=within):
            received = time.time()
            parts: dict[int, list] = {}
            for event in events:
                msg = event.message
                p = msg.partition
                if not restorer.trusted(p) and (
                        not await restorer.ready(p)
                        or msg.generation_id != app.consumer_generation_id):
                    refuse(app, msg)  # not this worker's any more, or fetched before a
                    continue          # rebalance: read again from the committed offset
                verdict = await guard.admit(msg)
                if verdict is not NEXT:  # seen before, or past a hole being read again
                    if verdict is AGAIN:
                        step.replayed_again()
                    continue
                parts.setdefault(p, []).append(
                    (msg, Record(event.key, event.value, msg.offset, received)))
            for p, items in parts.items():
                if not restorer.trusted(p):  # moved while the guard asked the broker
                    for msg, _ in items:
                        refuse(app, msg)
                    continue
                # from the trust check to the table writes nothing is awaited
                try:
                    res = step.run(p, [r for _, r in items], store)
                except Exception:
                    store.forget_decoded()  # live copies may be half-updated
                    raise
                writes = [(key, store.put(key, state)) for key, state in res.changed.items()]
                for key, value in writes:
                    await emit(changelog, key, value, partition=p)
                for o in res.outputs:
                    await emit(topic_of[o.kind], o.key, o.value, o.partition, o.headers)

    agent_stats = app.Table("agent_stats_v1", default=None, partitions=1, key_type=bytes,
                            value_type=bytes, help="AgentStats JSON per agent id")

    stats_restorer = StateRestorer(
        agent_stats.data, lambda k: 0,
        lambda p: read_partition(settings, agent_stats.changelog_topic.get_topic_name(), p),
        settle=producer.flush, on_failure=lambda err: asyncio.ensure_future(app.crash(err)),
        what="agent stats")
    make_restore_owned(app, [(leads, restorer, interactions.get_topic_name()),
                             (agent_stats, stats_restorer, agent_facts.get_topic_name())])

    @app.agent(agent_facts, name="aggregate_agent_facts")
    async def aggregate_agent_facts(stream):
        """Every agent's running figures, on the worker that holds the agent-facts topic."""
        async for event in stream.events():
            msg = event.message
            if not stats_restorer.trusted(msg.partition) and (
                    not await stats_restorer.ready(msg.partition)
                    or msg.generation_id != app.consumer_generation_id):
                refuse(app, msg)
                continue
            fact = orjson.loads(event.value)
            key = fact["agent_id"].encode()
            stored = agent_stats.get(key)
            st = AgentStats.from_dict(orjson.loads(stored)) if stored else AgentStats()
            st.add(fact)
            agent_stats[key] = orjson.dumps(st.to_dict())

    def team_insights() -> dict[str, dict]:
        team = {k.decode(): AgentStats.from_dict(orjson.loads(v))
                for k, v in list(agent_stats.data.items())}
        return insights(team)

    @app.timer(interval=settings.agent_insights_interval_seconds)
    async def publish_agent_insights():
        now = datetime.now(UTC)
        for agent, ins in team_insights().items():
            rec = AgentInsight(generated_at=now, **ins)
            await agent_insights.send(key=agent.encode(),
                                      value=orjson.dumps(rec.model_dump(mode="json")))
            step.metrics.agent_insights.inc()

    @app.page("/agents")
    class AgentsView(View):
        """Insights of every agent, from the worker holding the agent-facts partition."""

        async def get(self, request):
            return self.json({"agents": team_insights()})

    @app.agent(properties, name="validate_listings")
    async def validate_listings(stream):
        async for event in stream.events():
            msg = event.message
            res = step.check_listing(event.value, event.key, msg.topic)
            if res is not None:
                await dlq.send(key=event.key, value=event.value,
                               headers=res.headers(msg.topic, msg.partition, msg.offset))

    @app.task
    async def load_catalog():
        """Every worker keeps the whole catalog: read all of ``properties`` from the start."""
        consumer = AIOKafkaConsumer(
            enable_auto_commit=False, group_id=None, **settings.kafka_client_kwargs()
        )
        await consumer.start()
        try:
            tps = [TopicPartition(specs["properties"].full_name, p)
                   for p in range(specs["properties"].partitions)]
            consumer.assign(tps)
            await consumer.seek_to_beginning(*tps)
            end = await consumer.end_offsets(tps)
            while True:
                batch = await consumer.getmany(timeout_ms=500, max_records=5000)
                for msgs in batch.values():
                    for m in msgs:
                        step.load_listing(m.value, m.key, m.partition, m.offset)
                if not catalog_ready.is_set():
                    pos = {tp: await consumer.position(tp) for tp in tps}
                    if all(pos[tp] >= end[tp] for tp in tps):
                        catalog_ready.set()
                        log.info("catalog loaded: %d listings (%d active)",
                                 len(step.catalog), step.catalog.n_active)
                cat = step.catalog
                step.metrics.catalog_size.labels(status="active").set(cat.n_active)
                step.metrics.catalog_size.labels(status="all").set(len(cat))
        finally:
            await consumer.stop()

    @app.timer(interval=settings.lead_sweep_interval_seconds)
    async def forget_idle_leads():
        """Delete leads idle for longer than the TTL from the table (and its changelog).

        Only leads of partitions whose state this worker holds whole (restored from the
        changelog, or held since): copies of other partitions are dropped at each
        rebalance (``streams.durable.StateRestorer``) and never tombstoned from here."""
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
                if k in leads.data and restorer.trusted(partition_for(k, n)):
                    step.forget(k.decode("utf-8", "replace"))
                    del leads.data[k]
                    store.forget_decoded((k,))
                    step.metrics.leads_expired.inc()
                    # the producer the agent writes through, so a lead's later value never
                    # lands in the changelog ahead of this tombstone
                    await emit(changelog, k, None, partition=partition_for(k, n))
            await asyncio.sleep(0)
        step.metrics.lead_state_bytes.set(total)
        step.metrics.open_sessions.set(sessions)
        step.metrics.leads.set(len(leads.data))

    def save_snapshot(reason: str) -> None:
        if step.models.events_learned == getattr(app, "_snapshot_events", -1):
            return
        version = snapshots.save(step.models, step.catalog.ids[:],
                                 {**step.snapshot_meta(), "reason": reason})
        app._snapshot_events = step.models.events_learned  # type: ignore[attr-defined]
        step.model_version = version
        step.metrics.model_version.set(version)
        step.metrics.snapshot_time.set(time.time())
        log.info("models snapshotted as v%d (%s)", version, reason)

    @app.timer(interval=min(settings.snapshot_interval_seconds, 10.0))
    async def snapshot_models():
        """Follow a rollback made with `leadstream models rollback`; snapshot periodically."""
        current = snapshots.manifest()["current"]
        if current is not None and current != step.model_version:
            suite, rows, entry = snapshots.load(current)
            step.restore(suite, rows, current, entry.get("catalog_offsets"))
            app._snapshot_events = suite.events_learned  # type: ignore[attr-defined]
            step.metrics.model_version.set(current)
            log.warning("models rolled back to snapshot v%d", current)
            return
        last = getattr(app, "_snapshot_at", None)
        if last is None:
            app._snapshot_at = time.monotonic()  # type: ignore[attr-defined]
        elif time.monotonic() - last >= settings.snapshot_interval_seconds:
            app._snapshot_at = time.monotonic()  # type: ignore[attr-defined]
            save_snapshot("periodic")

    @app.on_before_shutdown.connect
    async def snapshot_on_shutdown(app, **kwargs):
        save_snapshot("shutdown")

    @app.page("/models")
    class ModelsView(View):
        async def get(self, request):
            m = snapshots.manifest()
            return self.json({"version": step.model_version,
                              "events_learned": step.models.events_learned,
                              "quality": step.quality.state,
                              "snapshots": m["versions"][-5:], "current": m["current"]})

    metrics = step.metrics
    for name in MODELS:  # series exist (at 0) before the first drift / measurement
        metrics.model_drift.labels(model=name)
    metrics.snapshot_time.set(time.time())  # models as of start (restored or new)
    for label in ("converted", "not"):
        metrics.score_labels.labels(label=label)
    if step.experiment is not None:
        for arm in step.experiment.arms:
            for kind in (*KINDS, "saves_lists", "bookings_lists", "positives", "hits"):
                metrics.experiment.labels(experiment=step.experiment.name, arm=arm.name,
                                          kind=kind)

    def positions() -> dict:
        """Per assigned input partition: (next offset to read, end offset)."""
        consumer = app.consumer
        out = {}
        for tp in consumer.assignment():
            if tp.topic != interactions.get_topic_name():
                continue
            try:
                end = consumer.highwater(tp)
            except Exception:  # noqa: BLE001 (no metadata yet)
                continue
            read = consumer._read_offset.get(tp)
            pos = read + 1 if read is not None else consumer._committed_offset.get(tp) or 0
            out[tp] = (pos, end or 0)
        return out

    stall_watch = StallWatch(patience=3)

    @app.timer(interval=5.0)
    async def unstick_partitions():
        """Seek an input partition that stopped moving for 15 s back to its committed
        offset (see ``streams.durable.StallWatch``)."""
        consumer = app.consumer
        if not (catalog_ready.is_set() and consumer.flow_active
                and app.flow_control.is_active() and not app.rebalancing):
            stall_watch.reset()
            return
        pos = positions()
        for tp in stall_watch.check(pos):
            committed = consumer._committed_offset.get(tp) or 0
            log.warning("input partition %d stalled at offset %d with %d records waiting "
                        "for 15 s: seeking it to its committed offset %d", tp.partition,
                        pos[tp][0], pos[tp][1] - pos[tp][0], committed)
            step.metrics.partition_stalls.labels(partition=str(tp.partition)).inc()
            consumer.resume_partitions({tp})
            await consumer.seek(tp, committed)

    def update_lag() -> None:
        metrics.consumer_lag.clear()
        metrics.uncommitted.clear()
        committed = app.consumer._committed_offset
        for tp, (pos, end) in positions().items():
            labels = {"topic": tp.topic, "partition": str(tp.partition)}
            metrics.consumer_lag.labels(**labels).set(max(end - pos, 0))
            metrics.uncommitted.labels(**labels).set(max(end - (committed.get(tp) or 0), 0))

    @app.page("/metrics")
    class MetricsView(View):
        async def get(self, request):
            update_lag()
            step.metrics.leads.set(len(leads.data))
            return self.bytes(step.metrics.exposition(),
                              content_type=CONTENT_TYPE_LATEST.split(";")[0])

    def held_partitions() -> set[int] | None:
        """The input partitions this worker holds now (None while rebalancing)."""
        if app.rebalancing:
            return None
        return {tp.partition for tp in app.assignor.assigned_actives()
                if tp.topic == interactions.get_topic_name()}

    @app.page("/health/live")
    class Live(View):
        async def get(self, request):
            return self.json({"status": "alive"})

    @app.page("/health/ready")
    class Ready(View):
        async def get(self, request):
            held = held_partitions()
            restoring = sorted(p for p in held or () if not restorer.trusted(p))
            ready = catalog_ready.is_set() and bool(held) and not restoring
            return self.json({"ready": ready, "catalog_listings": len(step.catalog),
                              "partitions": sorted(held or ()),
                              "restoring_partitions": restoring},
                             status=200 if ready else 503)

    async def stored(view, lead_id: str):
        """The lead's live state once its partition's state is whole here (None: no such
        lead), or a 503 response while it is being read from the changelog."""
        key = lead_id.encode()
        if not await restorer.ready(partition_for(key, n), timeout=10.0):
            return None, view.json({"error": "this lead's partition is being restored or "
                                             "moving to another worker; retry"}, status=503)
        return store.get(key), None

    def unknown(view, lead_id: str):
        return view.json({"error": f"unknown lead {lead_id!r}"}, status=404)

    @app.page("/leads/{lead_id}")
    class LeadView(View):
        @app.table_route(table=leads, match_info="lead_id")
        async def get(self, request, lead_id):
            state, busy = await stored(self, lead_id)
            if busy is not None:
                return busy
            if state is None:
                return unknown(self, lead_id)
            return self.json({"lead_id": lead_id, "profile": state.profile.to_dict()})

    @app.page("/leads/{lead_id}/recommendations")
    class RecommendationsView(View):
        """The lead's top-K as the models rank it now (learns nothing, sends nothing)."""

        @app.table_route(table=leads, match_info="lead_id")
        async def get(self, request, lead_id):
            state, busy = await stored(self, lead_id)
            if busy is not None:
                return busy
            return self.json(step.current_recommendations(lead_id, state))

    @app.page("/leads/{lead_id}/features")
    class FeaturesView(View):
        """The lead's features now (``?at=last_event``: at its latest event time)."""

        @app.table_route(table=leads, match_info="lead_id")
        async def get(self, request, lead_id):
            state, busy = await stored(self, lead_id)
            if busy is not None:
                return busy
            if state is None:
                return unknown(self, lead_id)
            as_of = None if request.query.get("at") == "last_event" else time.time()
            s = settings
            values = features.compute(state.features, as_of,
                                      lateness=s.allowed_lateness_seconds,
                                      session_gap=s.session_gap_seconds)
            out = values.as_dict(lead_id)
            out["normalized"] = step.normalizer.transform(values.numerical)
            return self.json(out)

    app.leadstream_agents = (process_interactions, validate_listings)  # type: ignore[attr-defined]
    return app


def run_worker(settings, loglevel: str = "warning") -> None:
    """Run one worker until SIGINT/SIGTERM."""
    from faust.worker import Worker

    class _Worker(Worker):
        def on_setup_root_logger(self, logger, level: int) -> None:
            # Faust's progress spinner sets the root logger to DEBUG and filters in its
            # handler, so every debug call in Faust and aiokafka built a record: none here
            self.spinner = None

    app = create_app(settings)
    worker = _Worker(app, loglevel=loglevel, quiet=True, redirect_stdouts=False)
    worker.execute_from_commandline()
