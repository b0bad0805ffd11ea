"""The worker's HTTP views: health, Prometheus metrics, models, agent insights, and a
lead's state, features and current list (each routed to the worker holding the lead)."""

from __future__ import annotations

import time

from faust.web import View

from features import lead as features
from models.suite import MODELS
from ops.metrics import CONTENT_TYPE_LATEST
from streams import faust_internals as internals
from streams.agents import team_insights
from streams.context import Context
from streams.step import partition_for


def declare_series(ctx: Context) -> None:
    """Every labelled counter's series at 0 for the labels the worker can emit (so
    panels and alerts start from 0, not from no data), and the snapshot time."""
    metrics = ctx.step.metrics
    metrics.init_labels(interactions_topic=ctx.topics["interactions"].get_topic_name(),
                        properties_topic=ctx.topics["properties"].get_topic_name(),
                        partitions=ctx.n, models=MODELS, experiment=ctx.step.experiment)
    metrics.snapshot_time.set(time.time())  # models as of start (restored or new)


def add_views(ctx: Context) -> None:
    """Declare the views on ``ctx.app``."""
    app, settings, step, store, restorer = ctx.app, ctx.settings, ctx.step, ctx.store, \
        ctx.restorer
    leads, snapshots, n = ctx.leads, ctx.snapshots, ctx.n
    interactions = ctx.topics["interactions"].get_topic_name()
    declare_series(ctx)

    @app.page("/agents")
    class AgentsView(View):
        """Insights of every agent, from the worker holding the agent-facts partition."""

        async def get(self, request):
            return self.json({"agents": team_insights(ctx)})

    @app.page("/models")
    class ModelsView(View):
        async def get(self, request):
            m = snapshots.manifest()
            return self.json({"version": step.model_version,
                              "events_learned": step.models.events_learned,
                              "quality": step.quality.state,
                              "snapshots": m["versions"][-5:], "current": m["current"]})

    def update_lag() -> None:
        metrics = step.metrics
        metrics.consumer_lag.clear()
        metrics.uncommitted.clear()
        for tp, (pos, end) in internals.input_positions(app, interactions).items():
            labels = {"topic": tp.topic, "partition": str(tp.partition)}
            metrics.consumer_lag.labels(**labels).set(max(end - pos, 0))
            metrics.uncommitted.labels(**labels).set(
                max(end - internals.committed_offset(app, tp), 0))

    @app.page("/metrics")
    class MetricsView(View):
        async def get(self, request):
            update_lag()
            step.metrics.leads.set(len(leads.data))
            return self.bytes(step.metrics.exposition(),
                              content_type=CONTENT_TYPE_LATEST.split(";")[0])

    @app.page("/health/live")
    class Live(View):
        async def get(self, request):
            return self.json({"status": "alive"})

    def readiness() -> tuple[bool, set | None, list]:
        """(ready, partitions held, partitions being restored): the catalog is loaded,
        partitions are assigned and their lead state is whole here."""
        held = internals.held_partitions(app, interactions)
        restoring = sorted(p for p in held or () if not restorer.trusted(p))
        return ctx.catalog_ready.is_set() and bool(held) and not restoring, held, restoring

    step.metrics.track_readiness(lambda: readiness()[0])

    @app.page("/health/ready")
    class Ready(View):
        async def get(self, request):
            ready, held, restoring = readiness()
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
