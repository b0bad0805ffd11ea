"""The worker's HTTP views: health, Prometheus metrics, models, agent insights, the
OpenAPI document, and a lead's state, features, last list and last score (each routed
to the worker holding the lead). Every view declares its operation in ``ctx.api``
(``streams/api.py``), which ``/openapi.json`` serves."""

from __future__ import annotations

import logging
import time

from faust.web import View

from leadstream.features import lead as features
from leadstream.models.suite import MODELS
from leadstream.ops.metrics import CONTENT_TYPE_LATEST
from leadstream.streams import faust_internals as internals
from leadstream.streams.agents import team_insights
from leadstream.streams.api import LEAD_ID
from leadstream.streams.changelog import ChangelogFenced
from leadstream.streams.context import Context
from leadstream.streams.step import partition_for

log = logging.getLogger("leadstream.worker")
_BOOL = {"true": True, "1": True, "false": False, "0": False}


def declare_series(ctx: Context) -> None:
    """Every labelled counter's series at 0 for the labels the worker can emit (so
    panels and alerts start from 0, not from no data), and the snapshot time."""
    metrics = ctx.step.metrics
    metrics.init_labels(interactions_topic=ctx.topics["interactions"].get_topic_name(),
                        properties_topic=ctx.topics["properties"].get_topic_name(),
                        partitions=ctx.n, models=MODELS, experiment=ctx.step.experiment)
    metrics.snapshot_time.set(time.time())  # models as of start (restored or new)


_OBJECT = {"type": "object"}


def busy_answer(view):
    return view.json({"error": "this lead's partition is being restored or moving to "
                               "another worker; retry"}, status=503)


def _ok(api, description: str, schema: dict | None = None) -> dict:
    return api.json_response(description, schema or _OBJECT)


def add_views(ctx: Context) -> None:
    """Declare the views on ``ctx.app`` (and their operations in ``ctx.api``)."""
    app, settings, step, store, restorer = ctx.app, ctx.settings, ctx.step, ctx.store, \
        ctx.restorer
    leads, snapshots, n, api = ctx.leads, ctx.snapshots, ctx.n, ctx.api
    interactions = ctx.topics["interactions"].get_topic_name()
    declare_series(ctx)

    @app.page("/openapi.json")
    class OpenApiView(View):
        """This document: every route of the worker, as the modules serving them declared
        them (streams/api.py)."""

        async def get(self, request):
            return self.json(api.document())

    api.add("/openapi.json", "get", {
        "summary": "This API's OpenAPI 3.1 document", "operationId": "openapi",
        "responses": {"200": _ok(api, "the document")}})

    @app.page("/agents")
    class AgentsView(View):
        """Insights of every agent, from the worker holding the agent-facts partition."""

        async def get(self, request):
            return self.json({"agents": team_insights(ctx)})

    api.add("/agents", "get", {
        "summary": "Every agent's figures against the team median, with coaching hints "
                   "(this worker's copy of the agent statistics)", "operationId": "agents",
        "responses": {"200": _ok(api, "insights by agent id", {
            "type": "object", "required": ["agents"],
            "properties": {"agents": {"type": "object"}}})}})

    @app.page("/models")
    class ModelsView(View):
        async def get(self, request):
            m = snapshots.manifest()
            return self.json({"version": step.model_version,
                              "events_learned": step.models.events_learned,
                              "quality": step.quality.state,
                              "snapshots": m["versions"][-5:], "current": m["current"]})

    api.add("/models", "get", {
        "summary": "The loaded model version, events learned, each model's online quality "
                   "and the latest snapshots", "operationId": "models",
        "responses": {"200": _ok(api, "the worker's models", {
            "type": "object",
            "required": ["version", "events_learned", "quality", "snapshots", "current"]})}})

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

    api.add("/metrics", "get", {
        "summary": "Prometheus metrics (no token needed)", "operationId": "metrics",
        "responses": {"200": {"description": "the Prometheus text exposition format",
                              "content": {"text/plain": {"schema": {"type": "string"}}}}}})

    @app.page("/health/live")
    class Live(View):
        async def get(self, request):
            return self.json({"status": "alive"})

    api.add("/health/live", "get", {
        "summary": "The worker process answers (no token needed)", "operationId": "live",
        "responses": {"200": _ok(api, "alive", {
            "type": "object", "required": ["status"],
            "properties": {"status": {"const": "alive"}}})}})

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

    ready_body = {"type": "object",
                  "required": ["ready", "catalog_listings", "partitions",
                               "restoring_partitions"],
                  "properties": {"ready": {"type": "boolean"},
                                 "catalog_listings": {"type": "integer", "minimum": 0},
                                 "partitions": {"type": "array", "items": {"type": "integer"}},
                                 "restoring_partitions": {"type": "array",
                                                          "items": {"type": "integer"}}}}
    api.add("/health/ready", "get", {
        "summary": "Ready: catalog loaded, partitions assigned, their lead state restored "
                   "(no token needed)", "operationId": "ready",
        "responses": {"200": _ok(api, "ready", ready_body),
                      "503": _ok(api, "not ready yet (the body says what is missing)",
                                 ready_body)}})

    async def stored(view, lead_id: str):
        """``(state, None)``: the lead's live state once its partition's state is whole
        here; ``(None, answer)``: a 503 while it is being read from the changelog, a 404
        for an unknown lead."""
        key = lead_id.encode()
        if not await restorer.ready(partition_for(key, n), timeout=10.0):
            return None, busy_answer(view)
        state = store.get(key)
        return (state, None) if state is not None else (None, unknown(view, lead_id))

    def unknown(view, lead_id: str):
        return view.json({"error": f"unknown lead {lead_id!r}"}, status=404)

    def lead_operation(summary: str, op_id: str, ok: dict, parameters=(), extra=None) -> dict:
        return {"summary": summary, "operationId": op_id,
                "parameters": [LEAD_ID, *parameters],
                "responses": {"200": ok, **(extra or {}),
                              "404": api.error("unknown lead (or nothing published for it "
                                               "yet)"),
                              "503": api.error("the lead's partition is being restored or "
                                               "moving to another worker; retry")}}

    async def requested(view, lead_id: str):
        """A fresh list for the lead, published like any other (``?fresh=true``)."""
        key = lead_id.encode()
        p = partition_for(key, n)
        if not await restorer.ready(p, timeout=10.0):
            return None
        async with ctx.lead_writes:  # not within a batch of the interactions agent
            if not restorer.trusted(p):
                return None
            state = store.get(key)
            if state is None:
                return unknown(view, lead_id)
            rec = step.requested_recommendation(lead_id, state)
            blob = store.put(key, state)
            try:
                written = await ctx.write_leads(p, [(key, blob)])
            except ChangelogFenced as err:  # taken over: the worker stops (as the agent)
                log.error("%s", err)
                await app.crash(err)
                return None
            if not written:  # moved away meanwhile
                return None
            await ctx.emit(ctx.topics["recommendations"], key, rec)
        return view.bytes(rec, content_type="application/json")

    @app.page("/leads/{lead_id}")
    class LeadView(View):
        @app.table_route(table=leads, match_info="lead_id")
        async def get(self, request, lead_id):
            state, answer = await stored(self, lead_id)
            if answer is not None:
                return answer
            return self.json({"lead_id": lead_id, "profile": state.profile.to_dict()})

    api.add("/leads/{lead_id}", "get", lead_operation(
        "The lead's recommender state (its profile)", "lead",
        _ok(api, "the lead's profile", {
            "type": "object", "required": ["lead_id", "profile"],
            "properties": {"lead_id": {"type": "string"}, "profile": _OBJECT}})))

    @app.page("/leads/{lead_id}/recommendations")
    class RecommendationsView(View):
        """The last list published for the lead, byte for byte as it went to the
        ``recommendations`` topic; ``?fresh=true``: a new list, ranked now and published
        (streams.step.Step.requested_recommendation)."""

        @app.table_route(table=leads, match_info="lead_id")
        async def get(self, request, lead_id):
            fresh = request.query.get("fresh", "false").lower()
            if fresh not in _BOOL:
                return self.json({"error": "fresh must be true or false"}, status=400)
            if _BOOL[fresh]:
                answer = await requested(self, lead_id)
                return answer if answer is not None else busy_answer(self)
            state, answer = await stored(self, lead_id)
            if answer is not None:
                return answer
            rec, _ = state.last_published()
            if rec is None:
                return self.json({"error": f"no list published for lead {lead_id!r} yet "
                                           "(?fresh=true makes one)"}, status=404)
            return self.bytes(rec, content_type="application/json")

    api.add("/leads/{lead_id}/recommendations", "get", lead_operation(
        "The last list published for the lead (as sent to the recommendations topic, with "
        "its recommendation_id); with fresh=true a new list, ranked now, published to the "
        "recommendations topic like any other (trigger requested) and so known to the "
        "lead's experiment", "recommendations",
        api.json_response("the list", api.schema("recommendation.json")),
        parameters=[{"name": "fresh", "in": "query", "required": False,
                     "description": "true: rank and publish a new list (default false)",
                     "schema": {"type": "boolean", "default": False}}],
        extra={"400": api.error("fresh is not true or false")}))

    @app.page("/leads/{lead_id}/score")
    class ScoreView(View):
        """The last lead score published for the lead, as sent to ``lead-scores``."""

        @app.table_route(table=leads, match_info="lead_id")
        async def get(self, request, lead_id):
            state, answer = await stored(self, lead_id)
            if answer is not None:
                return answer
            _, score = state.last_published()
            if score is None:
                return self.json({"error": f"no score published for lead {lead_id!r} yet"},
                                 status=404)
            return self.bytes(score, content_type="application/json")

    api.add("/leads/{lead_id}/score", "get", lead_operation(
        "The last score published for the lead (as sent to the lead-scores topic)", "score",
        api.json_response("the score", api.schema("lead-score.json"))))

    @app.page("/leads/{lead_id}/features")
    class FeaturesView(View):
        """The lead's features now (``?at=last_event``: at its latest event time)."""

        @app.table_route(table=leads, match_info="lead_id")
        async def get(self, request, lead_id):
            state, answer = await stored(self, lead_id)
            if answer is not None:
                return answer
            as_of = None if request.query.get("at") == "last_event" else time.time()
            s = settings
            values = features.compute(state.features, as_of,
                                      lateness=s.allowed_lateness_seconds,
                                      session_gap=s.session_gap_seconds)
            out = values.as_dict(lead_id)
            out["normalized"] = step.normalizer.transform(values.numerical)
            return self.json(out)

    api.add("/leads/{lead_id}/features", "get", lead_operation(
        "The lead's features now (at=last_event: at its latest event time)", "features",
        _ok(api, "numerical and categorical features, metadata, normalized values", {
            "type": "object",
            "required": ["lead_id", "numerical", "categorical", "metadata", "normalized"]}),
        parameters=[{"name": "at", "in": "query", "required": False,
                     "description": "last_event: the features at the lead's latest event "
                                    "time instead of now",
                     "schema": {"type": "string", "enum": ["last_event"]}}]))
