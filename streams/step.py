"""The worker's work as one pure step: one batch of one input partition in, the leads it
changed and one typed list of outputs out. Knows no Faust and no broker: the agent in
``streams/agents.py``, ``bench stages``, ``bench scale`` and the tests all call
:meth:`Step.run`, so the worker's per-event sequence exists once.

Per event, in offset order: validate (:meth:`Step.ingest`), skip a replayed offset,
de-duplicate, update the lead's features (exact per event), measure online quality,
learn the models, update the profile, attribute experiments, record agent facts, check
for a preference drift and note whether a list or a score is due. Per lead, once per
batch: at most one lead score (computed only when due: the lead's first, a strong
signal, or its last score older than ``score_refresh_seconds`` of event time; a CRM
event re-scores at once) and at most one list (every lead due one ranked in the same
pass, explained for its top items only). Each lead changed is written once per batch,
however many of its events the batch held (what Kafka Streams' record caches do per
commit).

Every input offset ends in exactly one outcome, counted in ``leadstream_events_in_total``
and one of: processed (applied), duplicate (its ``event_id`` was already applied),
replayed (an offset at or below the lead's last handled one: a redelivery after a crash),
dead-lettered (invalid, or later than the allowed lateness: with a reason) or rekeyed
(its Kafka key/partition was not its lead's: it is re-published keyed by ``lead_id``
and the copy is then processed).

>>> from datetime import UTC, datetime, timedelta
>>> from leadstream.contract.settings import Settings
>>> step = Step(Settings(), n_partitions=4)
>>> step.load_listing(b'{"property_id":"P1","status":"active","price":300000,'
...                   b'"bedrooms":2,"bathrooms":1,"property_type":"condo","city":"Austin"}',
...                   b"P1")
True
>>> now = datetime.now(UTC).isoformat()
>>> ev = ('{"event_id":"e1","lead_id":"L1","event_type":"session_started",'
...       '"session_id":"s1","timestamp":"%s"}' % now).encode()
>>> leads = LeadStore()
>>> res = step.run(partition_for(b"L1", 4), [Record(b"L1", ev, offset=0)], leads)
>>> sorted(o.kind for o in res.outputs)   # a first list and a first score
['recommendation', 'score']
>>> for key, state in res.changed.items():  # the runtime writes each changed lead once
...     blob = leads.put(key, state)           # (and sends ``blob`` to the changelog)
>>> list(res.changed), leads.get(b"L1").profile.event_count
([b'L1'], 1)
>>> step.run(partition_for(b"L1", 4), [Record(b"L1", ev, offset=0)], leads).outputs
[]
>>> [o.kind for o in step.run(0, [Record(b"L1", b"{oops", offset=1)], leads).outputs]
['dead_letter']
"""

from __future__ import annotations

import functools
import logging
import math
import time
import uuid
from collections import OrderedDict
from collections.abc import MutableMapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import numpy as np
import orjson
from aiokafka.partitioner import murmur2  # Kafka's key partitioner: a pure function

from leadstream.contract.events import (
    CRM_EVENTS,
    STRONG_SIGNALS,
    InvalidRecord,
    direction_of,
    feedback_weight,
    parse_event,
    parse_listing,
)
from leadstream.contract.outputs import PreferenceDrift
from leadstream.features import lead as features
from leadstream.features import record
from leadstream.features.normalize import FeatureNormalizer
from leadstream.features.profile import LeadProfile, update
from leadstream.models.catalog import Catalog, money
from leadstream.models.experiments import attribute, load_experiments, log_recommendation
from leadstream.models.quality import OnlineQuality
from leadstream.models.scoring import LABELS, contact_at
from leadstream.models.suite import MODELS, ModelSuite, rank_of
from leadstream.ops.metrics import Metrics

log = logging.getLogger("leadstream.worker")
_REC_NS = uuid.UUID("6f1d3c1e-9a55-4a8e-9f0e-7b7f3c2d1a10")

#: the kinds of :class:`Output`, each published to its own topic by the runtime
DEAD_LETTER, REKEY, RECOMMENDATION, SCORE, FACT, ALERT = (
    "dead_letter", "rekey", "recommendation", "score", "fact", "alert")
KINDS = (DEAD_LETTER, REKEY, RECOMMENDATION, SCORE, FACT, ALERT)


@functools.lru_cache(maxsize=65_536)
def partition_for(key: bytes, n_partitions: int) -> int:
    """Kafka's default partitioner (murmur2), as the Java client and aiokafka use it."""
    return (murmur2(key) & 0x7FFFFFFF) % n_partitions


def _encode(record: dict) -> bytes:
    """JSON of an output record built as a plain dict in the field order of its model in
    ``leadstream.contract.outputs`` (which defines its schema): the JSON
    ``Model(**record).model_dump(mode="json")`` would give, without building the model
    per event (tests/test_step.py checks every kind against its model).

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
class Record:
    """One input record as the runtime hands it over (``received``: wall-clock seconds)."""

    key: bytes | None
    value: bytes | None
    offset: int
    received: float | None = None


@dataclass(slots=True)
class Output:
    """One record to publish: ``kind`` (one of :data:`KINDS`) names its topic;
    ``partition`` is set only for a rekeyed copy, ``headers`` only for a dead letter."""

    kind: str
    key: bytes | None
    value: bytes | None
    partition: int | None = None
    headers: list[tuple[str, bytes]] | None = None


@dataclass(slots=True)
class LeadState:
    """One lead's live state: its rolling features, its recommender profile and the last
    recommendation and score published for it (``published``: their JSON as sent, one
    compressed frame, ``features/record.py``; None: nothing published yet)."""

    features: features.LeadFeatures = field(default_factory=features.LeadFeatures)
    profile: LeadProfile = field(default_factory=LeadProfile)
    published: bytes | None = None

    def pack(self) -> bytes:
        """The stored record (``features/record.py``)."""
        return record.pack(features.encode(self.features),
                           orjson.dumps(self.profile.to_dict()), self.published)

    @classmethod
    def unpack(cls, blob: bytes) -> LeadState:
        feats, prof = record.unpack(blob)
        return cls(features.decode(feats) if feats else features.LeadFeatures(),
                   LeadProfile.from_dict(orjson.loads(prof)) if prof else LeadProfile(),
                   record.published(blob))

    def last_published(self) -> tuple[bytes | None, bytes | None]:
        """``(recommendation, score)``: the JSON of the last list and the last score
        published for the lead, byte for byte as sent (None: none yet)."""
        return record.unpack_published(self.published)

    def set_published(self, recommendation: bytes | None = None,
                      score: bytes | None = None) -> None:
        """Remember a list and/or a score just published (the other one is kept)."""
        if recommendation is None and score is None:
            return
        if recommendation is None or score is None:  # the other one as it was
            rec, sc = self.last_published()
            recommendation, score = recommendation or rec, score or sc
        self.published = record.pack_published(recommendation, score)


class LeadStore:
    """The leads of a worker: ``packed`` maps lead id bytes to stored records (the table
    and its changelog hold these), and a bounded cache keeps recently used leads decoded,
    so a lead with events in batch after batch is decoded once, not once per batch.

    A lead written with :meth:`put` is packed at once. One written with :meth:`stage` is
    only kept, decoded, until the changelog's next transaction calls the function
    :meth:`stage` returned (the worker: once per commit, however many batches changed the
    lead meanwhile, as Kafka Streams' record caches do); until then its ``packed`` record
    is the one before, and :meth:`get` returns the staged state. The cache holds at most
    ``cache_size`` leads (least recently used dropped first) besides the staged ones, which
    stay until packed; a decoded lead that is not staged equals its packed record, so
    dropping it loses nothing.

    >>> store = LeadStore()
    >>> st = LeadState()
    >>> st.profile.event_count = 2
    >>> blob = store.put(b"L1", st)
    >>> store.packed[b"L1"] == blob, store.get(b"L1") is st
    (True, True)
    >>> st.profile.event_count = 3
    >>> pack = store.stage(b"L1", st)         # changed again: packed at the next commit
    >>> store.packed[b"L1"] == blob, store.staged(b"L1")
    (True, True)
    >>> pack() == store.packed[b"L1"] != blob, store.staged(b"L1")
    (True, False)
    >>> store.forget_decoded()
    >>> store.get(b"L1").profile.event_count, store.get(b"L2")
    (3, None)
    """

    def __init__(self, packed: MutableMapping[bytes, bytes] | None = None,
                 cache_size: int = 20_000):
        self.packed = packed if packed is not None else {}
        self.cache_size = cache_size
        self._live: OrderedDict[bytes, LeadState] = OrderedDict()
        self._staged: dict[bytes, LeadState] = {}  # changed since packed: kept until then

    def get(self, key: bytes) -> LeadState | None:
        st = self._live.get(key)
        if st is not None:
            self._live.move_to_end(key)
            return st
        st = self._staged.get(key)
        if st is not None:
            self._keep(key, st)
            return st
        blob = self.packed.get(key)
        if not blob:
            return None
        st = LeadState.unpack(blob)
        self._keep(key, st)
        return st

    def put(self, key: bytes, state: LeadState) -> bytes:
        """Store ``state`` as ``key``'s record now; returns the record (for the changelog)."""
        blob = state.pack()
        self.packed[key] = blob
        self._staged.pop(key, None)
        self._keep(key, state)
        return blob

    def stage(self, key: bytes, state: LeadState):
        """Keep ``state`` as ``key``'s latest and pack it later: returns the function
        that packs it into ``packed`` and returns the record (the latest staged state of
        the key when it is called; the record in ``packed`` if none is staged any more)."""
        self._staged[key] = state
        self._keep(key, state)
        return functools.partial(self._pack, key)

    def _pack(self, key: bytes) -> bytes | None:
        st = self._staged.pop(key, None)
        if st is None:
            return self.packed.get(key)
        blob = self.packed[key] = st.pack()
        return blob

    def staged(self, key: bytes) -> bool:
        """Whether ``key`` has changes not packed yet."""
        return key in self._staged

    def discard_staged(self, which) -> list[bytes]:
        """Drop the staged and decoded states of the leads ``which(key)`` is true for
        (their partition moved to another worker, which replays their events since the
        last commit); returns their keys."""
        keys = [k for k in self._staged if which(k)]
        for k in keys:
            del self._staged[k]
            self._live.pop(k, None)
        return keys

    def _keep(self, key: bytes, state: LeadState) -> None:
        live = self._live
        live[key] = state
        live.move_to_end(key)
        while len(live) > self.cache_size:
            live.popitem(last=False)

    def forget_decoded(self, keys=None) -> None:
        """Drop decoded copies (all, or of ``keys``): the next :meth:`get` decodes the
        packed record again (after a rebalance, or when leads were removed). A staged
        state is packed first (its changelog write still comes with the next commit)."""
        staged = self._staged
        for k in list(staged) if keys is None else [k for k in keys if k in staged]:
            self._pack(k)
        if keys is None:
            self._live.clear()
        else:
            for k in keys:
                self._live.pop(k, None)


@dataclass(slots=True)
class StepResult:
    """What one batch changed: the leads to write (each once) and what to publish."""

    changed: dict[bytes, LeadState]
    outputs: list[Output]


class _Lead:
    """One lead's bookkeeping within a batch."""

    __slots__ = ("key", "lead_id", "state", "changed", "trigger", "trigger_ev", "received",
                 "forced", "score_ev", "last_ev", "sent_rec", "sent_score")

    def __init__(self, key: bytes, lead_id: str, state: LeadState):
        self.key, self.lead_id, self.state = key, lead_id, state
        self.changed = False
        self.trigger: str | None = None  # the list due at the end of the batch, and why
        self.trigger_ev = None
        self.received: float | None = None
        self.forced = False  # due whatever the new list looks like (not only top_k_changed)
        self.score_ev = None  # the last strong signal not scored yet: a score is due
        self.last_ev = None  # the lead's last applied event of the batch
        self.sent_rec: bytes | None = None  # the batch's list and score for the lead, if any
        self.sent_score: bytes | None = None


class Step:
    """A worker's shared processing state (catalog index, models, online quality,
    experiment, scalers, metrics) and the step over one batch (:meth:`run`)."""

    def __init__(self, settings, n_partitions: int, metrics: Metrics | None = None,
                 interactions_topic: str = "interactions"):
        self.settings = settings
        self.n_partitions = n_partitions
        self.metrics = metrics or Metrics()
        self.catalog = Catalog()
        # a due model refit (EASE's inverse) runs inside the batch, unless the runtime
        # takes it off the event loop (``offload_refits``)
        self.models = ModelSuite(seed=settings.model_seed, refit_every=settings.model_refit_every,
                                 **settings.hybrid_weights())
        self.model_version = 0  # the snapshot the models were restored from / saved as
        # per properties partition: the next offset the models have taken in (a restarted
        # worker re-reads the catalog topic; the records its snapshot saw are not learned
        # twice, so its models equal the snapshot's)
        self.catalog_learned: dict[int, int] = {}
        self.quality = OnlineQuality(MODELS)
        self.experiment = load_experiments(settings.experiments_file)
        self._quality_tick = 0
        self._quality_ts = -math.inf  # the event time of the last quality measurement
        self._measured = False  # a quality measurement was made in the current batch
        self.normalizer = FeatureNormalizer(settings.normalizer_sample_every)
        self.topic = interactions_topic
        self._future = timedelta(seconds=settings.max_future_skew_seconds)
        self._age = timedelta(days=settings.max_event_age_days)
        m = self.metrics  # the label children used per event, looked up once
        self._in = m.events_in.labels(topic=interactions_topic)
        self._processed = {}
        self._asked: set[str] = set()  # listings unknown_listings reported already

    # ---- the step -----------------------------------------------------------------
    def run(self, partition: int, records: Sequence[Record], leads: LeadStore,
            now: float | None = None) -> StepResult:
        """Apply ``records`` (one input partition's, in offset order) to ``leads``.

        Returns the leads changed (their live state, already updated in ``leads``'
        cache; the caller writes each with ``leads.put``) and the outputs in the order
        they arose (per lead: dead letters and facts per event, then its score and list).
        ``now``: the wall-clock time stamped as each changed lead's ``last_update``.
        """
        now = time.time() if now is None else now
        clock = datetime.fromtimestamp(now, UTC)  # the freshness checks' clock, per batch
        self._measured = False
        out: list[Output] = []
        batch: dict[bytes, _Lead] = {}
        for r in records:
            res = self.ingest(r.value, r.key, partition, clock)
            if isinstance(res, DeadLetter):
                out.append(Output(DEAD_LETTER, r.key, r.value,
                                  headers=res.headers(self.topic, partition, r.offset)))
                continue
            if isinstance(res, Rekey):
                out.append(Output(REKEY, res.key, r.value, partition=res.partition))
                continue
            key = res.lead_id.encode()
            lead = batch.get(key)
            if lead is None:
                lead = batch[key] = _Lead(key, res.lead_id, leads.get(key) or LeadState())
            self._apply(res, lead, r, partition, now, out)
        due = []
        for lead in batch.values():
            if lead.last_ev is not None:
                self._finish(lead, out)
                if lead.trigger is not None:
                    due.append(lead)
        self._lists(due, out)
        for lead in batch.values():  # the last list and score sent, kept with the lead
            if lead.sent_rec is not None or lead.sent_score is not None:
                lead.state.set_published(lead.sent_rec, lead.sent_score)
        return StepResult({k: v.state for k, v in batch.items() if v.changed}, out)

    # ---- per event ------------------------------------------------------------------
    def ingest(self, raw: bytes | None, key: bytes | None, partition: int,
               clock: datetime | None = None):
        """Validate one record (freshness against ``clock``, default now): returns the
        event, a DeadLetter or a Rekey."""
        self._in.inc()
        if raw is None:
            return self._dead("schema", "null value (tombstone) on the interactions topic")
        try:
            ev = self.validate(raw, clock)
        except InvalidRecord as err:
            return self._dead(err.reason, err.message)
        want = ev.lead_id.encode()
        home = partition_for(want, self.n_partitions)
        if key != want or partition != home:
            self.metrics.rekeyed.inc()
            return Rekey(want, home)
        return ev

    def validate(self, raw: bytes, clock: datetime | None = None):
        """The worker's check of one interaction value (the live-ingestion limits, freshness
        against ``clock``, default now): the typed event, or InvalidRecord. The HTTP intake
        (``streams/intake.py``) holds its lines to the same call."""
        return parse_event(
            raw,
            now=clock or datetime.now(UTC),
            max_bytes=self.settings.max_event_bytes,
            max_future_skew=self._future,
            max_age=self._age,
        )

    def unknown_listings(self, records: Sequence[Record]) -> set[str]:
        """The listings ``records`` name that the catalog does not hold, from a quick look
        at their JSON (no validation; bad records are the step's to refuse), leaving out
        those asked about before (bounded): the runtime lets its catalog catch up once
        before a step that would apply such an event without the listing's attributes.

        >>> from leadstream.contract.settings import Settings
        >>> step = Step(Settings(), n_partitions=1)
        >>> rec = Record(b"L1", b'{"lead_id":"L1","property_id":"P9"}', offset=0)
        >>> step.unknown_listings([rec, Record(b"L1", b"{oops", offset=1)])
        {'P9'}
        >>> step.unknown_listings([rec])  # asked about already: not again
        set()
        """
        index, asked = self.catalog.index, self._asked
        out: set[str] = set()
        for r in records:
            v = r.value
            if not v or b'"property_id"' not in v:
                continue
            try:
                pid = orjson.loads(v).get("property_id")
            except (orjson.JSONDecodeError, AttributeError):
                continue
            if isinstance(pid, str) and pid not in index and pid not in asked:
                out.add(pid)
        if out:
            if len(asked) > 10_000:
                asked.clear()
            asked.update(out)
        return out

    def replayed_again(self) -> None:
        """Count a record delivered again below its partition's next offset (skipped)."""
        self._in.inc()
        self.metrics.replayed.inc()

    def _dead(self, reason: str, message: str, topic: str | None = None) -> DeadLetter:
        self.metrics.dead_lettered.labels(topic=topic or self.topic, reason=reason).inc()
        return DeadLetter(reason, message)

    def _apply(self, ev, lead: _Lead, r: Record, partition: int, now: float,
               out: list) -> None:
        """One validated event on its lead's live state."""
        s = self.settings
        feats = lead.state.features
        if r.offset <= feats.last_offset:
            self.metrics.replayed.inc()
            return
        feats.last_offset = r.offset
        lead.changed = True
        pid = ev.property_id
        listing = self.catalog.attributes(pid) if pid is not None else None
        outcome = features.update(
            feats, ev, listing, lateness=s.allowed_lateness_seconds,
            session_gap=s.session_gap_seconds, dedup_ttl=s.dedup_ttl_seconds,
            dedup_max_ids=s.dedup_max_ids, now=now)
        if outcome == "duplicate":
            self.metrics.duplicates.inc()
            return
        if outcome == "late":
            wm = feats.v[features.L.watermark]
            behind = wm - ev.timestamp.timestamp()
            dead = self._dead("late_event", (
                f"event time {ev.timestamp.isoformat()} is {behind:.0f} s behind lead "
                f"{ev.lead_id!r}'s latest event ({datetime.fromtimestamp(wm, UTC).isoformat()}),"
                f" more than the allowed lateness of {s.allowed_lateness_seconds:.0f} s"))
            out.append(Output(DEAD_LETTER, r.key, r.value,
                              headers=dead.headers(self.topic, partition, r.offset)))
            return
        profile = lead.state.profile
        et = ev.event_type
        counter = self._processed.get(et)
        if counter is None:
            counter = self._processed[et] = self.metrics.events_processed.labels(event_type=et)
        counter.inc()
        if pid is not None and feedback_weight(
                et, direction_of(ev)) > 0:
            self._measure(ev.lead_id, profile, pid, ev.timestamp.timestamp())
        t = time.perf_counter()
        self.models.learn_one(self.catalog, ev.lead_id, profile, ev)
        self.metrics.model_learn.observe(time.perf_counter() - t)
        update(profile, ev, listing)
        if self.experiment is not None and profile.rec_log:
            window = self.experiment.attribution_window_seconds
            for exp, arm, kind in attribute(profile.rec_log, ev, window):
                self.metrics.experiment.labels(experiment=exp, arm=arm, kind=kind).inc()
        fv = None
        if et == "outcome_recorded" and ev.payload.outcome in LABELS:
            # the scorer learns from the features as of the outcome
            fv = features.compute(feats, lateness=s.allowed_lateness_seconds,
                                  session_gap=s.session_gap_seconds)
            label = LABELS[ev.payload.outcome]
            self.models.scorer.learn_one(fv.numerical, label)
            self.metrics.score_labels.labels(label="converted" if label else "not").inc()
        self._facts(ev, profile, out)
        lead.last_ev = ev
        if et in CRM_EVENTS:  # each CRM event re-scores the lead, at once
            self._rescore(lead, ev, out, crm=True, fv=fv)
            lead.score_ev = None
        elif et in STRONG_SIGNALS:
            lead.score_ev = ev
        # the preferences move only when a listing of the catalog is engaged with (decay
        # scales every weight alike and leaves their ratios as they were)
        alert = self._drift(ev, profile, feats) if listing is not None else None
        if alert is not None:
            out.append(Output(ALERT, *alert))
            self._due(lead, "preference_drift", ev, r.received, forced=True)
        else:
            trigger = self._trigger(ev, profile)
            if trigger is not None:
                self._due(lead, trigger, ev, r.received, forced=trigger != "top_k_changed")

    @staticmethod
    def _due(lead: _Lead, trigger: str, ev, received: float | None, forced: bool) -> None:
        """A list is due for ``lead`` at the end of the batch: the last event that made it
        due is its source; a due list stays due whatever it looks like once any event
        asked for it (``forced``), else only if it changed materially."""
        if forced or not lead.forced:
            lead.trigger, lead.trigger_ev, lead.received = trigger, ev, received
        lead.forced = lead.forced or forced

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

    def _facts(self, ev, profile: LeadProfile, out: list) -> None:
        """Facts about the lead's agent, for agent insights (models/agents.py)."""
        n = len(out)
        ts = ev.timestamp.timestamp()
        et = ev.event_type

        def fact(kind: str, agent: str, **extra) -> None:
            out.append(Output(FACT, agent.encode(), orjson.dumps({
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
              and features.engagement_weight(et, direction_of(ev)) > 0):
            profile.hot_since = ts
            fact("hot_activity", agent)
        if len(out) > n:
            self.metrics.agent_facts.inc(len(out) - n)

    def _drift(self, ev, profile: LeadProfile, feats) -> tuple[bytes, bytes] | None:
        """An alert when the lead's preferred type, city or price level moved."""
        if profile.n_positive < self.settings.drift_min_positives:
            return None
        ptype, city, price, type_share, city_share = features.preferences(feats)
        cur = {"property_type": ptype, "city": city, "price": round(price, -3)}
        was = profile.pref_announced
        if not was:
            profile.pref_announced = cur
            return None
        changes = []
        for key, label, share in (("property_type", "property type", type_share),
                                  ("city", "area", city_share)):
            # a clear new favourite (at least half the weight), not a near tie
            if cur[key] != was.get(key) and cur[key] != "unknown" and share >= 0.5:
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

    def _measure(self, lead_id: str, profile: LeadProfile, pid: str, ts: float) -> None:
        """Online quality before learning: was the listing in what the lead was shown, and
        (for a sample of events: every n-th positive, at most one per batch and one per
        ``quality_min_interval_seconds`` of event time) where does each model rank it
        now?"""
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
        if (self._quality_tick < self.settings.quality_sample_every or self._measured
                or abs(ts - self._quality_ts) < self.settings.quality_min_interval_seconds):
            return  # every n-th positive event, at most one per batch and per interval
        self._quality_tick = 0
        self._quality_ts = ts
        self._measured = True  # a quality measurement was made in the current batch
        row = self.catalog.index.get(pid)
        if pid in profile.rejected or pid in profile.saved or pid in profile.booked:
            return
        mask = self.models.candidate_mask(self.catalog, profile)
        if row is None or row >= len(mask) or not mask[row]:
            return
        scores = self.models.all_scores(self.catalog, lead_id, profile, mask)
        for name, s in scores.items():
            if self.quality.observe(name, rank_of(np.where(mask, s, -np.inf), row, 10)):
                m.model_drift.labels(model=name).inc()
                log.warning("model %s: drift in online quality (HR@10 now %.3f)", name,
                            self.quality.state[name]["hr@10"])
            st = self.quality.state[name]
            m.model_hr.labels(model=name).set(st["hr@10"])
            m.model_ndcg.labels(model=name).set(st["ndcg@10"])

    # ---- per lead, once per batch ---------------------------------------------------
    def _finish(self, lead: _Lead, out: list) -> None:
        """The lead's score after the batch's events, if one is due: the lead's first, a
        strong signal in the batch (its source), or the last score older than
        ``score_refresh_seconds`` of event time. (A CRM event re-scores at once.)"""
        profile = lead.state.profile
        ev = lead.score_ev or lead.last_ev
        if (lead.score_ev is not None or profile.last_score is None
                or ev.timestamp.timestamp() - profile.score_checked_ts
                >= self.settings.score_refresh_seconds):
            self._rescore(lead, ev, out, crm=False)

    def _rescore(self, lead: _Lead, ev, out: list, crm: bool, fv=None) -> None:
        """Score the lead now (``fv``: its features, if already computed for this event)."""
        s = self.settings
        feats = lead.state.features
        if fv is None:
            fv = features.compute(feats, lateness=s.allowed_lateness_seconds,
                                  session_gap=s.session_gap_seconds)
        if self.normalizer.due():
            self.normalizer.observe(fv.numerical)
        score = self._score(ev, lead.state.profile, feats, fv.numerical, crm)
        if score is not None:
            out.append(Output(SCORE, lead.key, score))
            lead.sent_score = score

    def _score(self, ev, profile: LeadProfile, feats, numerical: dict,
               crm: bool) -> bytes | None:
        """The lead's score (cited as due to ``ev``), published when it is news."""
        s = self.settings
        scorer = self.models.scorer
        sc = scorer.score(numerical, explain=False)  # the reasons only when published
        ts = ev.timestamp.timestamp()
        profile.score_checked_ts = max(profile.score_checked_ts, ts)
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
        return _encode({  # a leadstream.contract.outputs.LeadScore, encoded directly (see _encode)
            "lead_id": ev.lead_id, "score": sc.score, "tier": sc.tier, "reasons": sc.reasons,
            "model": sc.model, "contact_at": when, "contact_reason": reason,
            "source_event_id": ev.event_id, "event_time": ev.timestamp,
            "emitted_at": datetime.now(UTC), "trigger": why})

    def _lists(self, due: list[_Lead], out: list) -> None:
        """The lists due at the end of the batch, every due lead ranked in one pass
        (:meth:`ModelSuite.recommend_many`), each published unless it was due only for a
        changed top-k that did not change materially."""
        if not due:
            return
        exp = self.experiment
        arms = [exp.arm_for(lead.lead_id) if exp is not None else None for lead in due]
        ranked = self.models.recommend_many(self.catalog, [
            (lead.lead_id, lead.state.profile, arm.model if arm else "hybrid",
             arm.params if arm else None) for lead, arm in zip(due, arms, strict=True)],
            k=self.settings.top_k)
        for lead, arm, r in zip(due, arms, ranked, strict=True):
            rec = self._publish(lead, r, arm)
            if rec is not None:
                out.append(Output(RECOMMENDATION, lead.key, rec))
                lead.sent_rec = rec

    def _publish(self, lead: _Lead, ranked, arm) -> bytes | None:
        """The recommendation record of ``ranked`` for ``lead``, cited as due to its
        trigger event (None: nothing material)."""
        ev, profile = lead.trigger_ev, lead.state.profile
        exp = self.experiment
        trigger = lead.trigger
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
        rec = {  # a leadstream.contract.outputs.Recommendation, encoded directly (see _encode)
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
        if lead.received is not None:
            m.receipt_to_rec.observe(max(time.time() - lead.received, 0.0))
        return _encode(rec)

    def requested_recommendation(self, lead_id: str, state: LeadState,
                                 now: float | None = None) -> bytes:
        """A fresh list for the lead, asked for over HTTP (``?fresh=true``): ranked now,
        with a new ``recommendation_id`` and trigger ``requested``, recorded in the lead's
        state like any published list (its items as the last shown, its experiment arm in
        the attribution log, :meth:`LeadState.set_published`). The caller publishes the
        returned record to ``recommendations`` and writes the lead.

        It has no triggering event: ``source_event_id`` is its own ``recommendation_id``
        and ``event_time`` the wall-clock time of the request (``now``), which is also
        the time its attribution window starts from."""
        now = time.time() if now is None else now
        profile = state.profile
        exp = self.experiment
        arm = exp.arm_for(lead_id) if exp is not None else None
        ranked = self.models.recommend(
            self.catalog, lead_id, profile, k=self.settings.top_k,
            model=arm.model if arm else "hybrid", overrides=arm.params if arm else None)
        rec_id = str(uuid.uuid4())
        profile.last_rec_items = [it["property_id"] for it in ranked.items]
        if exp is not None and arm is not None:
            log_recommendation(profile.rec_log, rec_id, now, exp.name, arm.name,
                               profile.last_rec_items)
            self.metrics.experiment.labels(experiment=exp.name, arm=arm.name,
                                           kind="recommendations").inc()
        at = datetime.fromtimestamp(now, UTC)
        rec = _encode({  # a leadstream.contract.outputs.Recommendation (see _encode)
            "recommendation_id": rec_id, "lead_id": lead_id, "trigger": "requested",
            "source_event_id": rec_id, "event_time": at, "emitted_at": datetime.now(UTC),
            "model_version": f"{ranked.model_version}@v{self.model_version}",
            "confidence": ranked.confidence, "explanation": ranked.explanation,
            "items": ranked.items, "experiment": exp.name if exp is not None else None,
            "arm": arm.name if arm is not None else None})
        self.metrics.recommendations.labels(trigger="requested").inc()
        state.set_published(recommendation=rec)
        return rec

    def current_recommendations(self, lead_id: str, state: LeadState | None) -> dict:
        """The lead's top-K now, as the next recommendation event would rank it (nothing
        is learned or recorded): for ``GET /leads/{id}/recommendations``."""
        profile = state.profile if state is not None else LeadProfile()
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

    # ---- lifetimes ------------------------------------------------------------------
    def forget(self, lead_id: str) -> None:
        """An idle lead expired (or moved to another worker): drop its per-lead model
        state too."""
        self.models.forget(lead_id)

    def expired(self, items, now: float) -> list:
        """Keys of the (key, stored lead record) pairs idle for longer than the lead TTL."""
        cutoff = now - self.settings.lead_ttl_seconds
        return [k for k, blob in items if record.peek(blob)[0] < cutoff]

    # ---- snapshots ------------------------------------------------------------------
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
        suite.refit_inline = self.models.refit_inline  # the runtime's choice stays
        # the hybrid's weights are the operator's settings, not the snapshot's
        suite.weights = {**suite.weights, **self.settings.hybrid_weights()}
        self.models = suite
        self.model_version = version

    def offload_refits(self) -> None:
        """The runtime runs the models' due refits itself (``ModelSuite.refits``): the
        worker computes them in a thread and installs them between batches."""
        self.models.refit_inline = False

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


def replay(step: Step, pairs, store: LeadStore, batch: int = 1,
           received: float | None = None):
    """Feed ``(key, value)`` records through ``step`` as a worker takes them: up to
    ``batch`` records at a time, grouped by the partition of their key (no key:
    partition 0), each given its partition's next offset; every changed lead written
    to ``store``. Yields each step's :class:`StepResult` (for benchmarks, tests and
    offline replays: what the agent does, minus Kafka).

    >>> from leadstream.contract.settings import Settings
    >>> step, store = Step(Settings(), 4), LeadStore()
    >>> bad = [(b"L1", b"{oops"), (None, b"[]")]
    >>> [o.kind for res in replay(step, bad, store, batch=2) for o in res.outputs]
    ['dead_letter', 'dead_letter']
    """
    n = step.n_partitions
    offsets = [0] * n
    pending: list = []

    def flush():
        parts: dict[int, list[Record]] = {}
        for key, value in pending:
            p = partition_for(key, n) if key else 0
            parts.setdefault(p, []).append(Record(key, value, offsets[p], received))
            offsets[p] += 1
        pending.clear()
        for p, records in parts.items():
            res = step.run(p, records, store)
            for key, state in res.changed.items():
                store.put(key, state)
            yield res

    for pair in pairs:
        pending.append(pair)
        if len(pending) >= batch:
            yield from flush()
    yield from flush()
