"""The Faust application: topics from topics.yaml, the lead table, agents, web views.

Agents only wire: take a record, call :class:`streams.pipeline.Pipeline`, write the
table or send, and the pipeline counts. State lives in the changelog-backed table
``lead_profiles_v1`` (co-partitioned with ``interactions``, keyed by lead id) and, for
what every worker needs whole (the catalog index, the popularity model), in the
pipeline object held by the app, never in module globals.
"""

from __future__ import annotations

import asyncio
import logging
import time

import faust
from aiokafka import AIOKafkaConsumer, TopicPartition
from faust.web import View

from ops.metrics import CONTENT_TYPE_LATEST
from streams.pipeline import DeadLetter, Pipeline, Rekey
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
        web_bind=settings.web_host,
        web_host=settings.web_host,
        web_port=settings.web_port,
        web_in_thread=False,
        datadir=str(settings.worker_data_dir or settings.home / "worker"),
        consumer_auto_offset_reset="earliest",
        processing_guarantee="at_least_once",
        autodiscover=False,
        table_standby_replicas=0,
        stream_wait_empty=False,
    )
    pipeline = Pipeline(settings, n, interactions_topic=specs["interactions"].full_name)
    app.pipeline = pipeline  # type: ignore[attr-defined]
    catalog_ready = asyncio.Event()

    def topic(name: str, **kw):
        s = specs[name]
        return app.topic(s.full_name, partitions=s.partitions, key_type=bytes, value_type=bytes,
                         key_serializer="raw", value_serializer="raw", internal=False, **kw)

    interactions = topic("interactions")
    properties = topic("properties")
    recommendations = topic("recommendations")
    dlq = topic("interactions-dlq")

    profiles = app.Table(
        "lead_profiles_v1",
        default=None,
        partitions=n,
        key_type=str,  # json-serialised keys and values (Faust's table default)
        help="LeadProfile per lead id (features/profile.py)",
    )

    @app.agent(interactions, name="process_interactions")
    async def process_interactions(stream):
        await catalog_ready.wait()
        async for event in stream.events():
            received = time.time()
            msg = event.message
            res = pipeline.ingest(event.value, event.key, msg.partition)
            if isinstance(res, DeadLetter):
                await dlq.send(key=event.key, value=event.value,
                               headers=res.headers(msg.topic, msg.partition, msg.offset))
                continue
            if isinstance(res, Rekey):
                await interactions.send(key=res.key, value=event.value, partition=res.partition)
                continue
            out = pipeline.apply(res, profiles.get(res.lead_id), received)
            if out.profile is not None:
                profiles[res.lead_id] = out.profile
            if out.recommendation is not None:
                await recommendations.send(key=event.key, value=out.recommendation)

    @app.agent(properties, name="validate_listings")
    async def validate_listings(stream):
        async for event in stream.events():
            msg = event.message
            res = pipeline.check_listing(event.value, event.key, msg.topic)
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
                        pipeline.load_listing(m.value, m.key)
                if not catalog_ready.is_set():
                    pos = {tp: await consumer.position(tp) for tp in tps}
                    if all(pos[tp] >= end[tp] for tp in tps):
                        catalog_ready.set()
                        log.info("catalog loaded: %d listings (%d active)",
                                 len(pipeline.catalog), pipeline.catalog.n_active)
                cat = pipeline.catalog
                pipeline.metrics.catalog_size.labels(status="active").set(cat.n_active)
                pipeline.metrics.catalog_size.labels(status="all").set(len(cat))
        finally:
            await consumer.stop()

    @app.page("/metrics")
    class MetricsView(View):
        async def get(self, request):
            pipeline.metrics.leads.set(len(profiles))
            return self.bytes(pipeline.metrics.exposition(),
                              content_type=CONTENT_TYPE_LATEST.split(";")[0])

    @app.page("/health/live")
    class Live(View):
        async def get(self, request):
            return self.json({"status": "alive"})

    @app.page("/health/ready")
    class Ready(View):
        async def get(self, request):
            ready = catalog_ready.is_set() and bool(app.assignor.assigned_actives())
            return self.json({"ready": ready, "catalog_listings": len(pipeline.catalog)},
                             status=200 if ready else 503)

    @app.page("/leads/{lead_id}")
    class LeadView(View):
        async def get(self, request, lead_id):
            state = profiles.get(lead_id)
            if state is None:
                return self.json({"error": f"lead {lead_id!r} not held by this worker"},
                                 status=404)
            return self.json({"lead_id": lead_id, "profile": state})

    app.leadstream_agents = (process_interactions, validate_listings)  # type: ignore[attr-defined]
    return app


def run_worker(settings, loglevel: str = "warning") -> None:
    """Run one worker until SIGINT/SIGTERM."""
    from faust.worker import Worker

    app = create_app(settings)
    worker = Worker(app, loglevel=loglevel, quiet=True, redirect_stdouts=False)
    worker.execute_from_commandline()
