"""Prometheus metrics of one worker. Names follow ``leadstream_<thing>_<unit>``.

Each :class:`Metrics` owns its registry, so several pipelines (tests) never collide.

>>> m = Metrics()
>>> m.events_in.labels(topic="interactions").inc()
>>> b"leadstream_events_in_total" in m.exposition()
True
"""

from __future__ import annotations

from prometheus_client import (
    CONTENT_TYPE_LATEST,  # noqa: F401  (re-exported for the web view)
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

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
                                   "Snapshot version the models were last saved as or restored from",
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
        self.lead_state_bytes = Gauge(
            "leadstream_lead_state_bytes",
            "Bytes of per-lead state held for all leads: features and profile, one compressed "
            "record per lead as stored (measured at each idle-lead sweep)",
            registry=r,
        )

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
