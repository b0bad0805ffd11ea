"""The worker's Faust app: ``create_app`` wires it, the parts live one hop away.

- ``streams/agents.py``: the agents (interactions through :meth:`streams.step.Step.run`,
  agent facts, listings); ``streams/timers.py``: the catalog read, the idle-lead sweep,
  model snapshots, stalled partitions; ``streams/web.py``: the HTTP views;
  ``streams/context.py``: what they share; ``streams/readers.py``: reads with consumers
  of the worker's own (changelog partitions, the catalog).
- ``streams/faust_internals.py``: every use of Faust's internals, among them the patches
  that make at-least-once hold; ``streams/durable.py``: the pure delivery rules (order
  guard, ownership, restorer, stall watch); ``docs/reliability.md``: why.

Per-lead state lives in one changelog-backed table co-partitioned with ``interactions``
and keyed by the raw lead id, ``features_by_lead``: the rolling features
(``features/lead.py`` bytes) and what the recommender needs (``features/profile.py``
JSON) in one value (``features/record.py``), written once per commit for each lead
changed since the last one, by the partition's own transactional producer so that a worker cut off
from its group cannot leave stale leads behind (``streams/changelog.py``); recently
active leads stay decoded in memory
(:class:`streams.step.LeadStore`). What every worker needs whole (the catalog index, the
models) lives in the step object held by the app, never in module globals.
"""

from __future__ import annotations

import asyncio
import logging
import os
from importlib import metadata

import faust
from aiokafka import AIOKafkaProducer

from leadstream.models.snapshot import SnapshotStore
from leadstream.streams import agents, readers, timers, web
from leadstream.streams.api import ApiDoc, bearer_auth, json_errors
from leadstream.streams.changelog import FencedChangelog
from leadstream.streams.context import Context, emitter
from leadstream.streams.durable import OrderGuard, StateRestorer
from leadstream.streams.faust_internals import (
    make_at_least_once,
    make_delivery_checked,
    make_fetch_prompt,
    make_flush_commits,
    make_lane,
    make_restore_owned,
    make_tables_routed,
    refuse,
)
from leadstream.streams.intake import ROUTES as INTAKE_ROUTES
from leadstream.streams.intake import add_routes as add_intake_routes
from leadstream.streams.step import LeadStore, Step, partition_for
from leadstream.streams.topics import load_topics

TOPICS = ("interactions", "properties", "recommendations", "lead-scores", "agent-insights",
          "agent-facts", "interactions-dlq")  # of topics.yaml, the ones the worker uses


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


log = logging.getLogger("leadstream.worker")


def _version() -> str:
    try:
        return metadata.version("leadstream")
    except metadata.PackageNotFoundError:  # pragma: no cover - run from a bare checkout
        return "0"


def create_app(settings) -> faust.App:
    """Build the worker's Faust app for ``settings`` (bootstrap must be set)."""
    if not settings.kafka_bootstrap:
        raise ValueError("settings.kafka_bootstrap must be set to build the app")
    if settings.web_bind_refused():
        log.warning("no LEADSTREAM_API_TOKEN set: the web server binds 127.0.0.1 only, not "
                    "%s as asked (set a token to serve other hosts)",
                    settings.web_bind or settings.web_host)
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
        web_bind=settings.web_bind_address(),  # loopback only without an API token
        web_host=settings.web_host,
        web_port=settings.web_port,
        web_in_thread=False,
        web_tables_enabled=False,  # Faust's /table/ would serve raw lead records
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
        broker_commit_interval=settings.commit_interval_seconds,
    )
    # Faust gaps that lose events across crashes and rebalances (docs/reliability.md)
    order = make_at_least_once(app, settings.fault_drop_one_in, specs["interactions"].full_name)
    # the interactions records from the fetch loop to the agent in batches, past Faust's
    # per-record conductor, queue and stream
    lane = make_lane(app, specs["interactions"].full_name, settings.batch_max_events)
    # no 1.5 s fetch stalls (Faust's wait), and fetches of some size under load
    make_fetch_prompt(app, settings.fetch_max_wait_ms, settings.fetch_min_bytes)
    step = Step(settings, n, interactions_topic=specs["interactions"].full_name)
    app.step = step  # type: ignore[attr-defined]
    snapshots = timers.ModelSnapshots(settings, step, SnapshotStore(settings.snapshot_dir()))

    topics = {name: app.topic(specs[name].full_name, partitions=specs[name].partitions,
                              key_type=bytes, value_type=bytes, key_serializer="raw",
                              value_serializer="raw", internal=False) for name in TOPICS}
    # raw keys: the changelog partition of a lead is its interactions partition, and
    # Faust's router finds the worker holding a lead from the same bytes. One value per
    # lead (features + profile, features/record.py): one atomic changelog write per commit
    leads = app.Table("features_by_lead", default=None, partitions=n, key_type=bytes,
                      value_type=bytes, help="per lead: LeadFeatures bytes + LeadProfile JSON "
                      "(features/record.py)")
    agent_stats = app.Table("agent_stats_v1", default=None, partitions=1, key_type=bytes,
                            value_type=bytes, help="AgentStats JSON per agent id")

    # the lead routes find a lead's partition as its changelog records are keyed
    make_tables_routed(app, {leads.changelog_topic.get_topic_name(): n}.get)
    store = LeadStore(leads.data, cache_size=settings.lead_cache_size)
    producer = app.producer
    outputs = (*topics.values(), leads.changelog_topic)
    emit = emitter(producer, make_delivery_checked(app),
                   {t: t.get_topic_name() for t in outputs})
    fence = None  # the changelog's writes fenced by the broker (streams/changelog.py)
    if settings.changelog_transactions:
        fence = FencedChangelog(
            leads.changelog_topic.get_topic_name(), f"{app.conf.id}-features_by_lead",
            lambda tid: AIOKafkaProducer(transactional_id=tid,
                                         linger_ms=settings.producer_linger_ms,
                                         **settings.kafka_client_kwargs()),
            on_renewed=lambda p: step.metrics.changelog_renewals.labels(
                partition=str(p)).inc())
        make_flush_commits(app, fence.commit)
    guard = OrderGuard(
        order, lambda tp, offset: readers.first_offset(settings, tp, offset),
        refuse=lambda message: refuse(app, message),
        seek=lambda tp, offset: app.consumer.seek(tp, offset),  # the patched seek
        on_gap=lambda tp, kind: (
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

    def crash(err: BaseException) -> None:
        asyncio.ensure_future(app.crash(err))

    def changelog_of(table, fence=None):
        async def read(p):
            if fence is not None:  # every older writer of the partition fenced first
                await fence.acquire(p)
            async for kv in readers.read_partition(
                    settings, table.changelog_topic.get_topic_name(), p):
                yield kv
        return read

    def released(partitions) -> None:
        if fence is not None:
            # what this worker staged for them is not written: their new owner replays it
            gone = set(partitions)
            store.discard_staged(lambda k: partition_for(k, n) in gone)
            asyncio.ensure_future(fence.release(partitions))

    restorer = StateRestorer(leads.data, lambda k: partition_for(k, n),
                             changelog_of(leads, fence), on_restored=restored,
                             on_dropped=handed_over, on_released=released,
                             settle=producer.flush, on_failure=crash)
    stats_restorer = StateRestorer(agent_stats.data, lambda k: 0, changelog_of(agent_stats),
                                   settle=producer.flush, on_failure=crash,
                                   what="agent stats")
    make_restore_owned(app, [(leads, restorer, topics["interactions"].get_topic_name()),
                             (agent_stats, stats_restorer,
                              topics["agent-facts"].get_topic_name())])

    ctx = Context(settings=settings, app=app, specs=specs, n=n, step=step, topics=topics,
                  leads=leads, agent_stats=agent_stats, store=store, restorer=restorer,
                  stats_restorer=stats_restorer, guard=guard, snapshots=snapshots.store,
                  emit=emit, fence=fence, lane=lane, api=ApiDoc(_version()))
    # one gate in front of every route, whichever module adds it (streams/api.py)
    middlewares = app.web.web_app.middlewares
    middlewares.append(json_errors)
    if settings.api_token is not None:
        middlewares.append(bearer_auth(settings.api_token.get_secret_value(),
                                       ctx.api.is_open))
    app.leadstream_agents = agents.add_agents(ctx)  # type: ignore[attr-defined]
    timers.add_timers(ctx, snapshots)
    web.add_views(ctx)
    add_intake_routes(ctx)  # POST /events, POST /webhooks/gohighlevel (streams/intake.py)
    for path, item in INTAKE_ROUTES.items():  # ... in the OpenAPI document (the webhook,
        for method, operation in item.items():  # x-auth signature, open to the token gate)
            ctx.api.add(path, method, operation)
    return app


def run_worker(settings, loglevel: str = "warning") -> None:
    """Run one worker until SIGINT/SIGTERM, or until it crashes: then the process exits
    with code 1 at once (a fenced changelog partition, a record not delivered, a failed
    restore), so that its supervisor restarts it. Left to itself, the interpreter would
    wait for Faust's consumer thread, which a crash leaves running, and hang."""
    from faust.worker import Worker

    class _Worker(Worker):
        def on_setup_root_logger(self, logger, level: int) -> None:
            # Faust's progress spinner sets the root logger to DEBUG and filters in its
            # handler, so every debug call in Faust and aiokafka built a record: none here
            self.spinner = None

    app = create_app(settings)
    timers.add_collector(app, settings)  # process-wide: here, not in create_app
    worker = _Worker(app, loglevel=loglevel, quiet=True, redirect_stdouts=False)
    try:
        worker.execute_from_commandline()
    except SystemExit as stop:
        if stop.code not in (0, None):
            logging.shutdown()  # the log's last lines say why
            os._exit(stop.code if isinstance(stop.code, int) else 1)
        raise
