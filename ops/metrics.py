"""Prometheus metrics of one worker. Names follow ``leadstream_<thing>_<unit>``.

Each :class:`Metrics` owns its registry, so several pipelines (tests) never collide.

A labelled counter has no series until its first increment, and ``increase()`` cannot see
that first increment, so :meth:`Metrics.init_labels` creates every series the worker can
emit at zero (panels show 0 rather than no data; an alert on the first stall fires).
:meth:`Metrics.track_readiness` makes ``leadstream_worker_ready`` follow ``/health/ready``.

>>> m = Metrics()
>>> m.events_in.labels(topic="interactions").inc()
>>> b"leadstream_events_in_total" in m.exposition()
True
>>> m.init_labels(interactions_topic="interactions", properties_topic="properties",
...               partitions=2, models=("hybrid",))
>>> b'leadstream_partition_stalls_total{partition="1"} 0.0' in m.exposition()
True
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

from prometheus_client import (
    CONTENT_TYPE_LATEST,  # noqa: F401  (re-exported for the web view)
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

# The closed label sets of the counters, as the code emits them (tests/test_metrics.py reads
# the sources and fails when a new value appears there but not here).
# Dead-letter reasons per source topic: leadstream/contract/events.py (InvalidRecord), and
# streams/step.py (late_event on interactions, key_mismatch on properties).
_PARSE_REASONS = ("oversized", "bad_wire_format", "not_utf8", "not_json", "not_an_object",
                  "schema")
INTERACTION_DLQ_REASONS = (*_PARSE_REASONS, "unknown_event_type", "timestamp_in_future",
                           "timestamp_too_old", "late_event")
PROPERTY_DLQ_REASONS = (*_PARSE_REASONS, "key_mismatch")
# streams/intake.py: the HTTP endpoints, what each line or webhook ends as, why a line is
# refused (the worker's reasons but lateness, which only the lead's worker knows), and the
# answers' status codes
INTAKE_ENDPOINTS = ("/events", "/webhooks/gohighlevel")
INTAKE_OUTCOMES = ("accepted", "refused", "failed", "ignored")
INTAKE_REFUSALS = (*INTERACTION_DLQ_REASONS[:-1], "unmappable")
INTAKE_STATUSES = ("200", "207", "400", "401", "413", "422", "429", "503")
# streams/step.py: Step._trigger, preference_drift in Step._apply, and requested (a fresh
# list asked for over HTTP: Step.requested_recommendation)
TRIGGERS = ("first_event", "session_started", "strong_signal", "top_k_changed",
            "preference_drift", "requested")
TIERS = ("hot", "warm", "cold")  # models/scoring.py: tier()
SCORE_LABELS = ("converted", "not")  # streams/step.py: the CRM outcomes learned
GAP_KINDS = ("verified", "reread")  # streams/durable.py: OrderGuard
GC_GENERATIONS = ("0", "1", "2")  # ops/gcpolicy.py: CPython's generations
# models/experiments.py: KINDS, then the per-list and online-HR@10 counts of attribute()
EXPERIMENT_KINDS = ("recommendations", "impressions", "clicks", "saves", "bookings",
                    "conversions", "saves_lists", "bookings_lists", "positives", "hits")

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None):
        r = self.registry = registry or CollectorRegistry()
        self.events_in = Counter(
            "leadstream_events_in", "Input records read, by topic", ["topic"], registry=r
        )
        self.events_processed = Counter(
            "leadstream_events_processed",
            "Valid interaction events applied to lead state, by event type",
            ["event_type"],
            registry=r,
        )
        self.dead_lettered = Counter(
            "leadstream_events_dead_lettered",
            "Records sent to the dead-letter topic, by source topic and reason",
            ["topic", "reason"],
            registry=r,
        )
        self.duplicates = Counter(
            "leadstream_events_duplicate", "Repeated event_ids dropped (applied once)", registry=r
        )
        self.rekeyed = Counter(
            "leadstream_events_rekeyed",
            "Events whose Kafka key or partition was not their lead's, re-published keyed by lead",
            registry=r,
        )
        self.replayed = Counter(
            "leadstream_events_replayed",
            "Offsets redelivered after a crash that the lead had already handled (skipped)",
            registry=r,
        )
        self.listings = Counter(
            "leadstream_listings_processed", "Valid catalog records applied", registry=r
        )
        self.recommendations = Counter(
            "leadstream_recommendations_emitted",
            "Recommendation events published, by trigger",
            ["trigger"],
            registry=r,
        )
        self.recommendations_skipped = Counter(
            "leadstream_recommendations_unchanged",
            "Lists recomputed after activity but not published: no material change",
            registry=r,
        )
        self.event_to_rec = Histogram(
            "leadstream_event_to_recommendation_seconds",
            "Event time of the triggering event to the recommendation being sent",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.receipt_to_rec = Histogram(
            "leadstream_receipt_to_recommendation_seconds",
            "Worker receipt of the triggering event to the recommendation being sent",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.catalog_size = Gauge(
            "leadstream_catalog_listings", "Listings known to this worker", ["status"], registry=r
        )
        self.leads = Gauge("leadstream_leads", "Leads whose state this worker holds", registry=r)
        self.leads_expired = Counter(
            "leadstream_leads_expired",
            "Idle leads forgotten (no event for lead_ttl_seconds)",
            registry=r,
        )
        self.leads_handed_over = Counter(
            "leadstream_leads_handed_over",
            "Copies of leads dropped from memory because their partition moved to another "
            "worker",
            registry=r,
        )
        self.state_restores = Counter(
            "leadstream_state_restores",
            "Input partitions whose lead state was read whole from the changelog",
            ["partition"],
            registry=r,
        )
        self.state_restored_leads = Counter(
            "leadstream_state_restored_leads",
            "Leads read from the changelog by those restores",
            registry=r,
        )
        self.state_restore_seconds = Histogram(
            "leadstream_state_restore_seconds",
            "Time to read one partition's lead state from the changelog",
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300),
            registry=r,
        )
        self.input_gaps = Counter(
            "leadstream_input_gaps",
            "Jumps in an input partition's offsets seen by the agent: verified (the broker "
            "holds no records there) or reread (records that never reached the agent)",
            ["partition", "kind"],
            registry=r,
        )
        self.partition_stalls = Counter(
            "leadstream_partition_stalls",
            "Input partitions found stalled (records waiting, read position not moving) "
            "and sought back to their committed offset",
            ["partition"],
            registry=r,
        )
        self.changelog_renewals = Counter(
            "leadstream_changelog_renewals",
            "Changelog producers renewed after dying on an error that was not a fence "
            "(the broker lost mid-commit; docs/reliability.md point 12)",
            ["partition"],
            registry=r,
        )
        self.model_refit = Histogram(
            "leadstream_model_refit_seconds",
            "Model refits computed in a thread off the event loop (EASE's inverse, every "
            "LEADSTREAM_MODEL_REFIT_EVERY new engagements; models/ease.py)",
            buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=r,
        )
        self.gc_pause = Histogram(
            "leadstream_gc_pause_seconds",
            "Python garbage-collection pauses by generation (2: the full collections, run "
            "every LEADSTREAM_GC_FULL_INTERVAL_SECONDS; ops/gcpolicy.py)",
            ["generation"],
            buckets=(1e-4, 5e-4, 1e-3, 5e-3, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
            registry=r,
        )
        self.model_learn = Histogram(
            "leadstream_model_learn_seconds",
            "Time to update every model with one event",
            buckets=(1e-5, 2e-5, 5e-5, 1e-4, 2e-4, 5e-4, 1e-3, 5e-3, 0.02, 0.1),
            registry=r,
        )
        self.model_hr = Gauge("leadstream_model_hr_at_10",
                              "Online prequential HR@10 per model (ADWIN window mean)",
                              ["model"], registry=r)
        self.model_ndcg = Gauge("leadstream_model_ndcg_at_10",
                                "Online prequential NDCG@10 per model (exponential mean)",
                                ["model"], registry=r)
        self.model_drift = Counter("leadstream_model_drift_detections",
                                   "Drifts in a model's online quality (River ADWIN)",
                                   ["model"], registry=r)
        self.model_version = Gauge("leadstream_model_snapshot_version",
                                   "Snapshot version the models were last saved as or restored "
                                   "from",
                                   registry=r)
        self.snapshot_time = Gauge("leadstream_model_snapshot_timestamp_seconds",
                                   "When the models were last snapshotted (unix time)",
                                   registry=r)
        self.rec_hits = Counter(
            "leadstream_recommendation_hits",
            "Positive events on a listing that was in the lead's latest recommendation",
            registry=r,
        )
        self.open_sessions = Gauge(
            "leadstream_open_sessions",
            "Sessions still open across this worker's leads (measured at each idle-lead sweep)",
            registry=r,
        )
        self.scores = Counter("leadstream_lead_scores_emitted",
                              "Lead scores published, by tier", ["tier"], registry=r)
        self.score_labels = Counter("leadstream_lead_score_labels",
                                    "CRM outcomes learned by the lead scorer", ["label"],
                                    registry=r)
        self.agent_facts = Counter("leadstream_agent_facts",
                                   "Facts about agents' leads sent for agent insights",
                                   registry=r)
        self.drift_alerts = Counter("leadstream_preference_drift_alerts",
                                    "Lead preference-drift alerts sent to agents", registry=r)
        self.agent_insights = Counter("leadstream_agent_insights_published",
                                      "Agent insight records published", registry=r)
        self.experiment = Counter(
            "leadstream_experiment",
            "A/B experiment counts per arm: recommendations, impressions, clicks, saves, "
            "bookings, conversions (credited within the attribution window), saves_lists and "
            "bookings_lists (lists with at least one), positives (positive events of the arm's "
            "leads) and hits (of those, on a listing of the lead's latest list: online HR@10)",
            ["experiment", "arm", "kind"],
            registry=r,
        )
        self.intake_lines = Counter(
            "leadstream_intake_lines",
            "HTTP intake: lines of POST /events and events mapped from webhooks, by endpoint "
            "and outcome (accepted: on the input topic; refused: dead-lettered; failed: the "
            "broker did not acknowledge in time; ignored: a webhook type nothing maps)",
            ["endpoint", "outcome"],
            registry=r,
        )
        self.intake_refused = Counter(
            "leadstream_intake_refused",
            "HTTP intake: refused lines (dead-lettered), by endpoint and reason",
            ["endpoint", "reason"],
            registry=r,
        )
        self.intake_requests = Counter(
            "leadstream_intake_requests",
            "HTTP intake requests answered, by endpoint and status code (401: a webhook "
            "whose signature did not verify)",
            ["endpoint", "status"],
            registry=r,
        )
        self.consumer_lag = Gauge(
            "leadstream_consumer_lag",
            "Records on the partition not yet read by this worker (log end - position)",
            ["topic", "partition"],
            registry=r,
        )
        self.uncommitted = Gauge(
            "leadstream_uncommitted_records",
            "Records on the partition past this worker's last committed offset (log end - "
            "committed): what a crash would have read again; it stays high if records are "
            "read but never handled",
            ["topic", "partition"],
            registry=r,
        )
        self.ready = Gauge(
            "leadstream_worker_ready",
            "1 while /health/ready answers 200 (catalog loaded, partitions assigned, their lead "
            "state restored), else 0; NaN until the worker reports it",
            registry=r,
        )
        self.ready.set(math.nan)
        self.lead_state_bytes = Gauge(
            "leadstream_lead_state_bytes",
            "Bytes of per-lead state held for all leads: features and profile, one compressed "
            "record per lead as stored (measured at each idle-lead sweep)",
            registry=r,
        )

    def track_readiness(self, is_ready: Callable[[], bool]) -> None:
        """Report ``is_ready()`` as ``leadstream_worker_ready`` (1 or 0), asked at each scrape,
        so the gauge cannot go stale; an exception counts as not ready.

        >>> m = Metrics()
        >>> m.track_readiness(lambda: True)
        >>> b"leadstream_worker_ready 1.0" in m.exposition()
        True
        """

        def value() -> float:
            try:
                return 1.0 if is_ready() else 0.0
            except Exception:  # noqa: BLE001 (a scrape must not fail)
                return 0.0

        self.ready.set_function(value)

    def init_labels(self, *, interactions_topic: str, properties_topic: str,
                    partitions: int | Iterable[int], models: Iterable[str] = (),
                    experiment=None, event_types: Iterable[str] | None = None) -> None:
        """Create every labelled counter's series at zero for the labels the worker can emit.

        ``interactions_topic`` / ``properties_topic`` are the full (prefixed) topic names;
        ``partitions`` the input partitions (a count or the numbers); ``models`` the model
        names; ``experiment`` the active experiment (``.name``, ``.arms`` with ``.name``) or
        None; ``event_types`` defaults to every type of ``leadstream.contract.events``. Idempotent.
        """
        if event_types is None:
            from leadstream.contract.events import EVENT_CLASSES

            event_types = EVENT_CLASSES
        parts = [str(p) for p in (range(partitions) if isinstance(partitions, int)
                                  else partitions)]
        for topic, reasons in ((interactions_topic, INTERACTION_DLQ_REASONS),
                               (properties_topic, PROPERTY_DLQ_REASONS)):
            self.events_in.labels(topic=topic)
            for reason in reasons:
                self.dead_lettered.labels(topic=topic, reason=reason)
        for event_type in event_types:
            self.events_processed.labels(event_type=event_type)
        for endpoint in INTAKE_ENDPOINTS:
            for outcome in INTAKE_OUTCOMES:
                self.intake_lines.labels(endpoint=endpoint, outcome=outcome)
            for reason in INTAKE_REFUSALS:
                self.intake_refused.labels(endpoint=endpoint, reason=reason)
            for status in INTAKE_STATUSES:
                self.intake_requests.labels(endpoint=endpoint, status=status)
        for trigger in TRIGGERS:
            self.recommendations.labels(trigger=trigger)
        for gen in GC_GENERATIONS:
            self.gc_pause.labels(generation=gen)
        for p in parts:
            self.state_restores.labels(partition=p)
            self.partition_stalls.labels(partition=p)
            self.changelog_renewals.labels(partition=p)
            for kind in GAP_KINDS:
                self.input_gaps.labels(partition=p, kind=kind)
        for model in models:
            self.model_drift.labels(model=model)
        for tier in TIERS:
            self.scores.labels(tier=tier)
        for label in SCORE_LABELS:
            self.score_labels.labels(label=label)
        if experiment is not None:
            for arm in experiment.arms:
                for kind in EXPERIMENT_KINDS:
                    self.experiment.labels(experiment=experiment.name, arm=arm.name, kind=kind)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
