"""What a worker does with one record, without the I/O: the agents in ``streams/app.py``
call these methods and then send or store what they return.

Every input offset ends in exactly one outcome, counted in ``leadstream_events_in_total``
and one of: processed (applied), duplicate (its ``event_id`` was already applied),
dead-lettered (invalid, or later than the allowed lateness: with a reason) or rekeyed (its
Kafka key/partition was not its lead's: it is re-published keyed by ``lead_id`` and the
copy is then processed).
"""

from __future__ import annotations

import functools
import logging
import math
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import numpy as np
import orjson
from aiokafka.partitioner import murmur2

from features import lead as features
from features import record
from features.normalize import FeatureNormalizer
from features.profile import LeadProfile, update
from leadstream.events import InvalidRecord, parse_event, parse_listing
from leadstream.outputs import PreferenceDrift
from models.catalog import Catalog, money
from models.experiments import attribute, load_experiments, log_recommendation
from models.quality import OnlineQuality
from models.scoring import LABELS, contact_at
from models.suite import MODELS, ModelSuite
from models.weights import STRONG_SIGNALS, feedback_weight
from ops.metrics import Metrics

log = logging.getLogger("leadstream.worker")
_REC_NS = uuid.UUID("6f1d3c1e-9a55-4a8e-9f0e-7b7f3c2d1a10")


@functools.lru_cache(maxsize=65_536)
def partition_for(key: bytes, n_partitions: int) -> int:
    """Kafka's default partitioner (murmur2), as the Java client and aiokafka use it."""
    return (murmur2(key) & 0x7FFFFFFF) % n_partitions


def _encode(record: dict) -> bytes:
    """JSON of an output record built as a plain dict in the field order of its model in
    ``leadstream.outputs`` (which defines its schema): the JSON
    ``Model(**record).model_dump(mode="json")`` would give, without building the model
    per event (tests/test_pipeline.py checks every kind against its model).

    >>> _encode({"at": datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC), "score": 0.5})
    b'{"at":"2026-01-02T03:04:05Z","score":0.5}'
    """
    return orjson.dumps(record, option=orjson.OPT_UTC_Z)


@dataclass(slots=True)
class DeadLetter:
    reason: str
    message: str

    def headers(self, topic: str, partition: int, offset: int) -> list[tuple[str, bytes]]:
        return [
            ("leadstream.dlq.reason", self.reason.encode()),
            ("leadstream.dlq.error", self.message.encode("utf-8", "replace")[:4000]),
            ("leadstream.dlq.topic", topic.encode()),
            ("leadstream.dlq.partition", str(partition).encode()),
            ("leadstream.dlq.offset", str(offset).encode()),
            ("leadstream.dlq.at", datetime.now(UTC).isoformat().encode()),
        ]


@dataclass(slots=True)
class Rekey:
    key: bytes
    partition: int


@dataclass(slots=True)
class Applied:
    lead_id: str
    profile: bytes | None  # new states to store, None for a duplicate
    features: bytes | None
    duplicate: bool = False
    recommendation: bytes | None = None
    score: bytes | None = None
    facts: list[tuple[bytes, bytes]] | None = None  # (agent id, fact) for agent-facts
    alerts: list[tuple[bytes, bytes]] | None = None  # (key, record) for agent-insights
    dead: DeadLetter | None = None  # late: dead-letter it (the state records the offset)
    replay: bool = False  # an offset already handled before a crash: nothing to do


class Pipeline:
    """Per-worker processing state: the catalog index, the models, the metrics."""

    def __init__(self, settings, n_partitions: int, metrics: Metrics | None = None,
                 interactions_topic: str = "interactions"):
        self.settings = settings
        self.n_partitions = n_partitions
        self.metrics = metrics or Metrics()
        self.catalog = Catalog()
        self.models = ModelSuite(seed=settings.model_seed, **settings.hybrid_weights())
        self.model_version = 0  # the snapshot the models were restored from / saved as
        # per properties partition: the next offset the models have taken in (a restarted
        # worker re-reads the catalog topic; the records its snapshot saw are not learned
        # twice, so its models equal the snapshot's)
        self.catalog_learned: dict[int, int] = {}
        self.quality = OnlineQuality(MODELS)
        self.experiment = load_experiments(settings.experiments_file)
        self._quality_tick = 0
        self.normalizer = FeatureNormalizer(settings.normalizer_sample_every)
        self.topic = interactions_topic
        self._future = timedelta(seconds=settings.max_future_skew_seconds)
        self._age = timedelta(days=settings.max_event_age_days)

    # ---- interactions -------------------------------------------------------------
    def ingest(self, raw: bytes | None, key: bytes | None, partition: int):
        """Validate one record: returns the event, a DeadLetter or a Rekey."""
        self.metrics.events_in.labels(topic=self.topic).inc()
        if raw is None:
            return self._dead("schema", "null value (tombstone) on the interactions topic")
        try:
            ev = parse_event(
                raw,
                now=datetime.now(UTC),
                max_bytes=self.settings.max_event_bytes,
                max_future_skew=self._future,
                max_age=self._age,
            )
        except InvalidRecord as err:
            return self._dead(err.reason, err.message)
        want = ev.lead_id.encode()
        if key != want or partition != partition_for(want, self.n_partitions):
            self.metrics.rekeyed.inc()
            return Rekey(want, partition_for(want, self.n_partitions))
        return ev

    def replayed_again(self) -> None:
        """Count a record delivered again below its partition's next offset (skipped)."""
        self.metrics.events_in.labels(topic=self.topic).inc()
        self.metrics.replayed.inc()

    def _dead(self, reason: str, message: str, topic: str | None = None) -> DeadLetter:
        self.metrics.dead_lettered.labels(topic=topic or self.topic, reason=reason).inc()
        return DeadLetter(reason, message)

    def apply(self, ev, stored_profile: bytes | None, stored_features: bytes | None = None,
              received: float | None = None, offset: int | None = None) -> Applied:
        """Apply a validated event to the lead's stored state; maybe build a recommendation.

        Returns the new states (a duplicate changes only the offset it records), or
        ``dead`` set for an event beyond the allowed lateness. ``offset`` (the record's
        input offset; a lead's events all come from one partition) makes redelivery after
        a crash idempotent: an offset at or below the lead's last handled one is a
        ``replay`` and changes nothing.
        """
        s = self.settings
        feats = features.decode(stored_features) if stored_features else features.LeadFeatures()
        if offset is not None and offset <= feats.last_offset:
            self.metrics.replayed.inc()
            return Applied(ev.lead_id, None, None, replay=True)
        if offset is not None:
            feats.last_offset = offset
        pid = ev.property_id
        listing = self.catalog.attributes(pid) if pid is not None else None
        outcome = features.update(
            feats, ev, listing, lateness=s.allowed_lateness_seconds,
            session_gap=s.session_gap_seconds, dedup_ttl=s.dedup_ttl_seconds,
            dedup_max_ids=s.dedup_max_ids, now=time.time())
        if outcome == "duplicate":
            self.metrics.duplicates.inc()
            return Applied(ev.lead_id, None, features.encode(feats) if offset is not None
                           else None, duplicate=True)
        if outcome == "late":
            wm = feats.v[features.L.watermark]
            behind = wm - ev.timestamp.timestamp()
            dead = self._dead("late_event", (
                f"event time {ev.timestamp.isoformat()} is {behind:.0f} s behind lead "
                f"{ev.lead_id!r}'s latest event ({datetime.fromtimestamp(wm, UTC).isoformat()}),"
                f" more than the allowed lateness of {s.allowed_lateness_seconds:.0f} s"))
            return Applied(ev.lead_id, None, features.encode(feats) if offset is not None
                           else None, dead=dead)
        profile = LeadProfile.from_dict(orjson.loads(stored_profile)) if stored_profile else (
            LeadProfile())
        self.metrics.events_processed.labels(event_type=ev.event_type).inc()
        if pid is not None and feedback_weight(
                ev.event_type, getattr(ev.payload, "direction", None)) > 0:
            self._measure(ev.lead_id, profile, pid)
        t = time.perf_counter()
        self.models.learn_one(self.catalog, ev.lead_id, profile, ev)
        self.metrics.model_learn.observe(time.perf_counter() - t)
        update(profile, ev, listing)
        if self.experiment is not None and profile.rec_log:
            window = self.experiment.attribution_window_seconds
            for exp, arm, kind in attribute(profile.rec_log, ev, window):
                self.metrics.experiment.labels(experiment=exp, arm=arm, kind=kind).inc()
        fv = features.compute(feats, lateness=s.allowed_lateness_seconds,
                              session_gap=s.session_gap_seconds)  # once: scaler, drift, score
        if self.normalizer.due():
            self.normalizer.observe(fv.numerical)
        alert = self._drift(ev, profile, fv)
        rec = None
        trigger = "preference_drift" if alert else self._trigger(ev, profile)
        if trigger is not None:
            rec = self._recommend(ev, profile, trigger, received)
        score = self._score(ev, profile, feats, fv.numerical)
        facts = self._facts(ev, profile)
        return Applied(ev.lead_id, orjson.dumps(profile.to_dict()), features.encode(feats),
                       recommendation=rec, score=score, facts=facts,
                       alerts=[alert] if alert else None)

    def _facts(self, ev, profile: LeadProfile) -> list[tuple[bytes, bytes]] | None:
        """Facts about the lead's agent, for agent insights (models/agents.py)."""
        out = []
        ts = ev.timestamp.timestamp()
        et = ev.event_type

        def fact(kind: str, agent: str, **extra) -> None:
            out.append((agent.encode(), orjson.dumps({
                "agent_id": agent, "lead_id": ev.lead_id, "kind": kind, "ts": ts,
                "event_id": ev.event_id, **extra})))

        if ev.agent_id and ev.agent_id != profile.agent_id:
            profile.agent_id = ev.agent_id
            fact("lead", ev.agent_id)
        agent = profile.agent_id
        if et == "agent_contacted_lead":
            wait = ts - profile.hot_since if profile.hot_since is not None else None
            profile.hot_since = None
            fact("contact", ev.agent_id, wait=wait)
        elif agent is None:
            pass
        elif et == "lead_responded":
            fact("response", agent)
        elif et == "booking_requested":
            fact("booking", agent)
        elif et == "outcome_recorded" and ev.payload.outcome in LABELS:
            fact("conversion" if LABELS[ev.payload.outcome] else "lost", ev.agent_id or agent)
        elif (profile.last_tier == "hot" and profile.hot_since is None
              and features.engagement_weight(et, getattr(ev.payload, "direction", None)) > 0):
            profile.hot_since = ts
            fact("hot_activity", agent)
        if out:
            self.metrics.agent_facts.inc(len(out))
        return out or None

    def _drift(self, ev, profile: LeadProfile, fv) -> tuple[bytes, bytes] | None:
        """An alert when the lead's preferred type, city or price level moved."""
        if profile.n_positive < self.settings.drift_min_positives:
            return None
        cat, num = fv.categorical, fv.numerical
        cur = {"property_type": cat["preferred_property_type"], "city": cat["preferred_city"],
               "price": round(num["price_level_30d"], -3)}
        was = profile.pref_announced
        if not was:
            profile.pref_announced = cur
            return None
        changes = []
        for key, label, share in (("property_type", "property type", "type_top_share_30d"),
                                  ("city", "area", "city_top_share_30d")):
            # a clear new favourite (at least half the weight), not a near tie
            if cur[key] != was.get(key) and cur[key] != "unknown" and num[share] >= 0.5:
                changes.append(f"{label}: {was.get(key)} -> {cur[key]}")
            elif cur[key] != was.get(key):
                cur[key] = was.get(key)  # keep the announced one until the change is clear
        if was.get("price") and cur["price"]:
            if abs(math.log(cur["price"] / was["price"])) >= math.log(
                    1 + self.settings.drift_price_change):
                changes.append(f"price level: {money(was['price'])} -> {money(cur['price'])}")
        if not changes:
            return None
        profile.pref_announced = cur
        self.metrics.drift_alerts.inc()
        rec = PreferenceDrift(
            agent_id=profile.agent_id, lead_id=ev.lead_id, changes=changes,
            message=f"{ev.lead_id}'s taste changed ({'; '.join(changes)}); their "
                    "recommendations were re-ranked",
            source_event_id=ev.event_id, event_time=ev.timestamp, emitted_at=datetime.now(UTC))
        key = (profile.agent_id or ev.lead_id).encode()
        return key, orjson.dumps(rec.model_dump(mode="json"))

    def _score(self, ev, profile: LeadProfile, feats, numerical: dict) -> bytes | None:
        """Learn from a CRM outcome; publish the lead's score when it is news."""
        s = self.settings
        scorer = self.models.scorer
        et = ev.event_type
        if et == "outcome_recorded" and ev.payload.outcome in LABELS:
            label = LABELS[ev.payload.outcome]
            scorer.learn_one(numerical, label)
            self.metrics.score_labels.labels(label="converted" if label else "not").inc()
        sc = scorer.score(numerical, explain=False)  # the reasons only when published
        ts = ev.timestamp.timestamp()
        crm = et in ("agent_contacted_lead", "lead_responded", "outcome_recorded")
        if profile.last_score is None:
            why = "first_score"
        elif sc.tier != profile.last_tier:
            why = "tier_changed"
        elif crm:
            why = "crm_event"
        elif (abs(sc.score - profile.last_score) >= s.score_min_change
              and ts - profile.last_score_ts >= s.score_min_interval_seconds):
            why = "score_changed"
        else:
            return None
        scorer.explain(sc, numerical)
        profile.last_score, profile.last_tier, profile.last_score_ts = sc.score, sc.tier, ts
        when, reason = contact_at(features.activity_hours(feats), ev.timestamp, sc, numerical)
        self.metrics.scores.labels(tier=sc.tier).inc()
        return _encode({  # a leadstream.outputs.LeadScore, encoded directly (see _encode)
            "lead_id": ev.lead_id, "score": sc.score, "tier": sc.tier, "reasons": sc.reasons,
            "model": sc.model, "contact_at": when, "contact_reason": reason,
            "source_event_id": ev.event_id, "event_time": ev.timestamp,
            "emitted_at": datetime.now(UTC), "trigger": why})

    def _measure(self, lead_id: str, profile: LeadProfile, pid: str) -> None:
        """Online quality before learning: was the listing in what the lead was shown, and
        (for a sample of events) where does each model rank it now?"""
        m = self.metrics
        hit = pid in profile.last_rec_items
        if hit:
            m.rec_hits.inc()
        if self.experiment is not None and profile.rec_log:
            exp, arm = self.experiment.name, self.experiment.arm_for(lead_id).name
            m.experiment.labels(experiment=exp, arm=arm, kind="positives").inc()
            if hit:
                m.experiment.labels(experiment=exp, arm=arm, kind="hits").inc()
        self._quality_tick += 1
        if self._quality_tick < self.settings.quality_sample_every:
            return
        self._quality_tick = 0
        row = self.catalog.index.get(pid)
        if pid in profile.rejected or pid in profile.saved or pid in profile.booked:
            return
        mask = self.models.candidate_mask(self.catalog, profile)
        if row is None or row >= len(mask) or not mask[row]:
            return
        scores = self.models.all_scores(self.catalog, lead_id, profile, mask)
        for name, s in scores.items():
            s = np.where(mask, s, -np.inf)
            better = int(np.count_nonzero(s > s[row]))
            if self.quality.observe(name, better if better < 10 else None):
                m.model_drift.labels(model=name).inc()
                log.warning("model %s: drift in online quality (HR@10 now %.3f)", name,
                            self.quality.state[name]["hr@10"])
            st = self.quality.state[name]
            m.model_hr.labels(model=name).set(st["hr@10"])
            m.model_ndcg.labels(model=name).set(st["ndcg@10"])

    def handle(self, raw: bytes | None, key: bytes | None, table: dict,
               received: float | None = None):
        """One interaction record as the worker handles it, with ``table`` (lead id bytes
        -> stored record, ``features/record.py``) in place of the Kafka table and nothing
        sent: for benchmarks and tests. Returns ``ingest``'s DeadLetter or Rekey, else
        ``apply``'s result, whose new state is already in ``table``."""
        res = self.ingest(raw, key, partition_for(key, self.n_partitions) if key else 0)
        if isinstance(res, DeadLetter | Rekey):
            return res
        k = res.lead_id.encode()
        feats, prof = record.unpack(table.get(k))
        out = self.apply(res, prof, feats, received)
        if out.features is not None:
            table[k] = record.pack(out.features, out.profile or prof)
        return out

    def forget(self, lead_id: str) -> None:
        """An idle lead expired: drop its per-lead model state too."""
        self.models.forget(lead_id)

    # ---- snapshots ----------------------------------------------------------------
    def snapshot_meta(self) -> dict:
        return {"events_learned": self.models.events_learned,
                "quality": {k: dict(v) for k, v in self.quality.state.items()},
                "catalog_offsets": {str(p): o for p, o in self.catalog_learned.items()}}

    def restore(self, suite: ModelSuite, catalog_ids: list[str], version: int,
                catalog_offsets: dict | None = None) -> None:
        """Use restored models; catalog rows are created in the order they were trained on.
        ``catalog_offsets``: the snapshot's ``catalog_offsets`` (see ``load_listing``)."""
        self.catalog_learned = {int(p): int(o) for p, o in (catalog_offsets or {}).items()}
        for pid in catalog_ids:
            self.catalog.index_of(pid)
        if self.catalog.ids[: len(catalog_ids)] != list(catalog_ids):
            raise ValueError("catalog rows differ from the snapshot's; restore before loading")
        self.models = suite
        self.model_version = version

    def expired(self, items, now: float) -> list:
        """Keys of the (key, stored lead record) pairs idle for longer than the lead TTL."""
        cutoff = now - self.settings.lead_ttl_seconds
        return [k for k, blob in items if record.peek(blob)[0] < cutoff]

    def _trigger(self, ev, profile: LeadProfile) -> str | None:
        s = self.settings
        ts = ev.timestamp.timestamp()
        if ts - profile.last_rec_ts < s.recommend_min_interval_seconds:
            return None
        et = ev.event_type
        if et == "session_started":
            return "session_started"
        if et in STRONG_SIGNALS:
            return "strong_signal"
        if profile.last_rec_ts == float("-inf"):
            return "first_event"
        if profile.events_since_rec >= s.recommend_every_n_events:
            return "top_k_changed"  # if the new list differs materially (checked below)
        return None

    def current_recommendations(self, lead_id: str, stored_profile: bytes | None) -> dict:
        """The lead's top-K now, as the next recommendation event would rank it (nothing
        is learned or recorded): for ``GET /leads/{id}/recommendations``."""
        profile = (LeadProfile.from_dict(orjson.loads(stored_profile)) if stored_profile
                   else LeadProfile())
        exp = self.experiment
        arm = exp.arm_for(lead_id) if exp is not None else None
        ranked = self.models.recommend(
            self.catalog, lead_id, profile, k=self.settings.top_k,
            model=arm.model if arm else "hybrid", overrides=arm.params if arm else None)
        return {"lead_id": lead_id, "items": ranked.items, "confidence": ranked.confidence,
                "explanation": ranked.explanation,
                "model_version": f"{ranked.model_version}@v{self.model_version}",
                "experiment": exp.name if exp is not None else None,
                "arm": arm.name if arm is not None else None}

    def _recommend(self, ev, profile: LeadProfile, trigger: str,
                   received: float | None) -> bytes | None:
        exp = self.experiment
        arm = exp.arm_for(ev.lead_id) if exp is not None else None
        ranked = self.models.recommend(
            self.catalog, ev.lead_id, profile, k=self.settings.top_k,
            model=arm.model if arm else "hybrid", overrides=arm.params if arm else None)
        if trigger == "top_k_changed":
            new = [it["property_id"] for it in ranked.items]
            old = profile.last_rec_items
            changed = len(set(new) - set(old)) / max(len(new), 1)
            if old and new[:1] == old[:1] and changed < self.settings.recommend_min_change:
                profile.events_since_rec = 0  # checked: nothing material to tell
                self.metrics.recommendations_skipped.inc()
                return None
        profile.last_rec_ts = ev.timestamp.timestamp()
        profile.events_since_rec = 0
        profile.last_rec_items = [it["property_id"] for it in ranked.items]
        now = datetime.now(UTC)
        rec_id = str(uuid.uuid5(_REC_NS, f"{ev.lead_id}/{ev.event_id}"))
        if exp is not None and arm is not None:
            log_recommendation(profile.rec_log, rec_id, profile.last_rec_ts, exp.name, arm.name,
                               profile.last_rec_items)
            self.metrics.experiment.labels(experiment=exp.name, arm=arm.name,
                                           kind="recommendations").inc()
        rec = {  # a leadstream.outputs.Recommendation, encoded directly (see _encode)
            "recommendation_id": rec_id,
            "lead_id": ev.lead_id,
            "trigger": trigger,
            "source_event_id": ev.event_id,
            "event_time": ev.timestamp,
            "emitted_at": now,
            "model_version": f"{ranked.model_version}@v{self.model_version}",
            "confidence": ranked.confidence,
            "explanation": ranked.explanation,
            "items": ranked.items,
            "experiment": exp.name if exp is not None else None,
            "arm": arm.name if arm is not None else None,
        }
        m = self.metrics
        m.recommendations.labels(trigger=trigger).inc()
        m.event_to_rec.observe(max((now - ev.timestamp).total_seconds(), 0.0))
        if received is not None:
            m.receipt_to_rec.observe(max(time.time() - received, 0.0))
        return _encode(rec)

    # ---- catalog ------------------------------------------------------------------
    def check_listing(self, raw: bytes | None, key: bytes | None, topic: str):
        """Validate one catalog record for accounting: None if fine, else a DeadLetter."""
        self.metrics.events_in.labels(topic=topic).inc()
        if raw is None:
            if not key:
                return self._dead("schema", "tombstone without a key", topic)
            self.metrics.listings.inc()
            return None
        try:
            listing = parse_listing(raw)
        except InvalidRecord as err:
            return self._dead(err.reason, err.message, topic)
        if key is not None and key != listing.property_id.encode():
            return self._dead(
                "key_mismatch",
                f"record key {key[:64]!r} is not property_id {listing.property_id!r}",
                topic,
            )
        self.metrics.listings.inc()
        return None

    def load_listing(self, raw: bytes | None, key: bytes | None, partition: int | None = None,
                     offset: int | None = None) -> bool:
        """Apply one catalog record to the local index (invalid ones are skipped).

        With its ``partition`` and ``offset``, a record the models already took in (before
        the snapshot they were restored from) updates the index only.
        """
        learn = partition is None or offset >= self.catalog_learned.get(partition, 0)
        if partition is not None and learn:
            self.catalog_learned[partition] = offset + 1
        if raw is None:
            if key:
                self.catalog.delete(key.decode("utf-8", "replace"))
            return True
        try:
            listing = parse_listing(raw)
        except InvalidRecord:
            return False
        if key is not None and key != listing.property_id.encode():
            return False
        row = self.catalog.upsert(listing)
        if learn:
            self.models.on_listing(self.catalog, row, {"description": listing.description,
                                                       "amenities": listing.amenities})
        return True
