"""The Grafana dashboard's variables: a topic prefix (one deployment among several that share
a Prometheus) and the workers of that prefix; every panel query is scoped by both."""

from __future__ import annotations

import json
import re
from pathlib import Path

from prometheus_client.metrics import MetricWrapperBase

from leadstream.ops.metrics import Metrics

REPO = Path(__file__).resolve().parents[1]
DASH = json.loads((REPO / "ops/grafana/dashboards/leadstream.json").read_text())
VARS = {v["name"]: v for v in DASH["templating"]["list"]}
# a metric name, and its label matchers if it has any (quoted values may hold braces)
_QUOTED = r'"(?:[^"\\]|\\.)*"'
SELECTOR = re.compile(rf"\b(leadstream_[a-z0-9_]+|up)\b(?:\{{((?:[^}}\"]|{_QUOTED})*)\}})?")
MATCHER = re.compile(rf"\w+\s*(?:=~|!~|!=|=)\s*{_QUOTED}")
INSTANCE = 'instance=~"$instance"'
TOPIC = 'topic=~"${prefix}.+"'


def _topic_metrics() -> set[str]:
    """Names (as exposed, with their suffixes) of the worker's metrics labelled by topic."""
    m = Metrics()
    out = set()
    for c in m.registry._collector_to_names:
        if isinstance(c, MetricWrapperBase) and "topic" in c._labelnames:
            out |= set(m.registry._collector_to_names[c])
    return out


def _targets() -> list[tuple[str, str]]:
    return [(p["title"], t["expr"]) for p in DASH["panels"] for t in p.get("targets", [])]


def _grafana_regex(spec: str) -> re.Pattern:
    body, flags = re.fullmatch(r"/(.*)/([a-z]*)", spec).groups()
    return re.compile(body, re.I if "i" in flags else 0)


def test_prefix_variable_extracts_the_topic_prefix():
    v = VARS["prefix"]
    assert v["type"] == "query" and not v["multi"]
    assert "leadstream_events_in_total" in v["query"]
    rx = _grafana_regex(v["regex"])

    def extract(topic: str) -> str | None:
        m = rx.search(topic)
        return m[1] if m else None

    assert extract("prod-interactions") == "prod-"
    assert extract("interactions") == ""
    assert extract("prod-properties") is None
    assert extract("prod-interactions-dlq") is None


def test_instance_variable_lists_the_workers_of_the_chosen_prefix():
    v = VARS["instance"]
    assert v["type"] == "query" and v["multi"] and v["includeAll"]
    assert v["query"].startswith("label_values(") and v["query"].endswith(", instance)")
    assert '{topic="${prefix}interactions"}' in v["query"]
    assert v.get("allValue") in (None, ""), "All must mean the listed workers, not every one"


def test_every_panel_query_is_scoped_by_worker_and_prefix():
    topic_metrics = _topic_metrics()
    assert {"leadstream_events_in_total", "leadstream_consumer_lag"} <= topic_metrics
    targets = _targets()
    assert len(targets) >= 15
    for title, expr in targets:
        selectors = SELECTOR.findall(expr)
        assert selectors, (title, expr)
        for name, matchers in selectors:
            parts = [re.sub(r"\s+", "", m) for m in MATCHER.findall(matchers)]
            assert INSTANCE in parts, f"{title}: {name} is not scoped by $instance in {expr}"
            base = re.sub(r"_(bucket|sum|count)$", "", name)
            if name in topic_metrics or base in topic_metrics:
                assert TOPIC in parts, f"{title}: {name} is not scoped by $prefix in {expr}"


def test_the_loss_signals_and_readiness_have_panels():
    exprs = " ".join(e for _, e in _targets())
    for name in ("leadstream_uncommitted_records", "leadstream_partition_stalls_total",
                 "leadstream_input_gaps_total", "leadstream_worker_ready",
                 "leadstream_model_snapshot_timestamp_seconds"):
        assert name in exprs, name
    snapshot = [e for _, e in _targets() if "snapshot_timestamp" in e]
    assert all("max(" not in e for e in snapshot), "snapshot age must be per worker"
