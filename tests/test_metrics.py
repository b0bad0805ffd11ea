"""ops/metrics.py: every labelled counter exists at zero on a fresh worker, for exactly the
labels the code can emit, and the readiness gauge follows the worker's readiness."""

from __future__ import annotations

import ast
import math
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace

import orjson
from prometheus_client import Counter
from prometheus_client.parser import text_string_to_metric_families

from leadstream.contract.events import EVENT_CLASSES
from leadstream.contract.settings import Settings
from leadstream.models.experiments import KINDS
from leadstream.models.scoring import tier
from leadstream.models.suite import MODELS
from leadstream.ops import metrics as M
from leadstream.streams.step import DEAD_LETTER, DeadLetter, LeadStore, Record, Step, partition_for

REPO = Path(__file__).resolve().parents[1]
EXPERIMENT = SimpleNamespace(name="exp", arms=[SimpleNamespace(name="a"),
                                               SimpleNamespace(name="b")])


def _initialised(prefix: str = "") -> M.Metrics:
    m = M.Metrics()
    m.init_labels(interactions_topic=f"{prefix}interactions",
                  properties_topic=f"{prefix}properties", partitions=4, models=MODELS,
                  experiment=EXPERIMENT)
    return m


def _samples(m: M.Metrics) -> dict[tuple[str, frozenset], float]:
    """Exposition parsed back: (sample name, labels) -> value."""
    out = {}
    for fam in text_string_to_metric_families(m.exposition().decode()):
        for s in fam.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def _has(samples, name: str, **labels) -> bool:
    return samples.get((name, frozenset(labels.items()))) == 0.0


def test_exposition_has_the_zero_series_of_every_known_label():
    s = _samples(_initialised("prod-"))
    for topic, reasons in (("prod-interactions", M.INTERACTION_DLQ_REASONS),
                           ("prod-properties", M.PROPERTY_DLQ_REASONS)):
        assert _has(s, "leadstream_events_in_total", topic=topic)
        for reason in reasons:
            assert _has(s, "leadstream_events_dead_lettered_total", topic=topic, reason=reason)
    for kind in M.EXPERIMENT_KINDS:
        for arm in ("a", "b"):
            assert _has(s, "leadstream_experiment_total", experiment="exp", arm=arm, kind=kind)
    for p in "0123":
        assert _has(s, "leadstream_partition_stalls_total", partition=p)
        assert _has(s, "leadstream_changelog_renewals_total", partition=p)
        assert _has(s, "leadstream_state_restores_total", partition=p)
        for kind in ("verified", "reread"):
            assert _has(s, "leadstream_input_gaps_total", partition=p, kind=kind)
    assert not any(n == "leadstream_partition_stalls_total" and dict(lbl)["partition"] == "4"
                   for n, lbl in s)
    for event_type in EVENT_CLASSES:
        assert _has(s, "leadstream_events_processed_total", event_type=event_type)
    for model in MODELS:
        assert _has(s, "leadstream_model_drift_detections_total", model=model)
    for trigger in M.TRIGGERS:
        assert _has(s, "leadstream_recommendations_emitted_total", trigger=trigger)
    for t in ("hot", "warm", "cold"):
        assert _has(s, "leadstream_lead_scores_emitted_total", tier=t)


def test_every_labelled_counter_is_initialised():
    """A counter added later with labels but left out of init_labels fails here."""
    m = _initialised()
    s = _samples(m)
    counters = [c for c in m.registry._collector_to_names if isinstance(c, Counter)]
    labelled = [c for c in counters if c._labelnames]
    assert len(labelled) >= 10
    for c in labelled:
        name = f"{c._name}_total"
        assert any(n == name for n, _ in s), f"{name} has no series after init_labels"


def test_init_labels_is_idempotent_and_keeps_counts():
    m = _initialised()
    m.partition_stalls.labels(partition="2").inc()
    m.init_labels(interactions_topic="interactions", properties_topic="properties",
                  partitions=[2], models=MODELS)
    s = _samples(m)
    assert s[("leadstream_partition_stalls_total", frozenset({("partition", "2")}))] == 1.0
    assert _has(s, "leadstream_partition_stalls_total", partition="3")


def test_what_the_pipeline_emits_is_among_the_initialised_series():
    """Feed a real Step bad records of every kind: no series may appear that
    init_labels did not create (else its panel and alert start from no data)."""
    pipe = Step(Settings(allowed_lateness_seconds=60), 4)
    pipe.metrics.init_labels(interactions_topic=pipe.topic, properties_topic="properties",
                             partitions=4, models=MODELS)
    before = set(_samples(pipe.metrics))
    now = datetime.now(UTC)

    def ev(event_type="session_started", ts=now, **extra) -> bytes:
        return orjson.dumps({"event_id": f"e{event_type}{ts}", "lead_id": "L1",
                             "event_type": event_type, "timestamp": ts.isoformat(),
                             "session_id": "s1", **extra})

    bad = [b"x" * (pipe.settings.max_event_bytes + 1), b"\xff\xfe", b"{not json", b"[1, 2]",
           ev("no_such_type"), ev("property_viewed"), ev(ts=now + timedelta(days=1)),
           ev(ts=now - timedelta(days=400)), None]
    reasons = set()
    for raw in bad:
        out = pipe.ingest(raw, b"L1", 0)
        assert isinstance(out, DeadLetter), raw
        reasons.add(out.reason)
    home = partition_for(b"L1", pipe.n_partitions)
    leads = LeadStore()
    res = pipe.run(home, [Record(b"L1", ev(), 1), Record(b"L1", ev(ts=now - timedelta(hours=1)),
                                                          2)], leads)
    assert [o.kind for o in res.outputs].count(DEAD_LETTER) == 1  # the late one
    listing = (b'{"property_id":"P1","status":"active","price":1,"bedrooms":1,'
               b'"bathrooms":1,"property_type":"condo","city":"A"}')
    for raw, key in ((listing, b"P2"), (b'{"property_id":"P1"}', b"P1"), (b"{", b"P1")):
        assert isinstance(pipe.check_listing(raw, key, "properties"), DeadLetter)
    assert len(reasons) >= 7
    new = set(_samples(pipe.metrics)) - before
    assert not {(n, lbl) for n, lbl in new
                if n.endswith("_total") and lbl}, sorted(new)


def _literals(path: Path, pattern: str) -> set[str]:
    return set(re.findall(pattern, (REPO / path).read_text()))


def test_the_known_labels_are_those_the_code_emits():
    """Read the sources: a new reason, trigger or kind in the code must be added here."""
    emitted = (_literals(Path("leadstream/contract/events.py"), r'InvalidRecord\(\s*"(\w+)"')
               | _literals(Path("leadstream/contract/events.py"), r'reason = "(\w+)"')
               | _literals(Path("leadstream/contract/events.py"), r'reason = \[\], "(\w+)"')
               | _literals(Path("streams/step.py"), r'_dead\(\s*"(\w+)"'))
    assert emitted == set(M.INTERACTION_DLQ_REASONS) | set(M.PROPERTY_DLQ_REASONS)
    # where a pipeline reason is emitted decides its topic
    tree = ast.parse((REPO / "streams/step.py").read_text())
    for fn in ast.walk(tree):
        if isinstance(fn, ast.FunctionDef):
            for call in ast.walk(fn):
                if (isinstance(call, ast.Call) and getattr(call.func, "attr", "") == "_dead"
                        and isinstance(call.args[0], ast.Constant)):
                    known = (M.PROPERTY_DLQ_REASONS if fn.name == "check_listing"
                             else M.INTERACTION_DLQ_REASONS)
                    assert call.args[0].value in known, (fn.name, call.args[0].value)
    triggers = (_literals(Path("streams/step.py"), r'return "(\w+)"')
                | _literals(Path("streams/step.py"), r'_due\(lead, "(\w+)"')
                | _literals(Path("streams/step.py"), r'"trigger": "(\w+)"'))
    assert triggers == set(M.TRIGGERS)
    assert {tier(x) for x in range(0, 101)} == set(M.TIERS)
    assert _literals(Path("streams/durable.py"), r'on_gap\(tp, "(\w+)"\)') == set(M.GAP_KINDS)
    kinds = (set(KINDS) | {"saves_lists", "bookings_lists"}
             | _literals(Path("streams/step.py"), r'experiment\.labels\([^)]*kind="(\w+)"'))
    assert kinds == set(M.EXPERIMENT_KINDS)
    assert _literals(Path("streams/step.py"),
                     r'score_labels\.labels\(label="(\w+)" if label else "(\w+)"') == {
        tuple(M.SCORE_LABELS)}


def test_readiness_gauge_follows_the_check_at_each_scrape():
    m = M.Metrics()
    assert math.isnan(_samples(m)[("leadstream_worker_ready", frozenset())])
    state = {"ready": False}
    m.track_readiness(lambda: state["ready"])
    assert _samples(m)[("leadstream_worker_ready", frozenset())] == 0.0
    state["ready"] = True
    assert _samples(m)[("leadstream_worker_ready", frozenset())] == 1.0

    def broken() -> bool:
        raise RuntimeError("no assignment yet")

    m.track_readiness(broken)
    assert _samples(m)[("leadstream_worker_ready", frozenset())] == 0.0
