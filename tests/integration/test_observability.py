"""A real Prometheus (Debian's package, installed here when missing) scrapes a worker that
processes a simulated stream: the alert rules load and pass promtool, and every PromQL
expression of the Grafana dashboard and of the alert rules is valid and returns data."""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
import yaml

from leadstream.bench.harness import Process
from leadstream.ops.broker import free_port
from leadstream.simulate import SimConfig, Simulator

from .. import promtools
from .conftest import publish, recent_start

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]
RULES = REPO / "ops" / "prometheus" / "alerts.yml"
DASHBOARD = REPO / "ops" / "grafana" / "dashboards" / "leadstream.json"
prometheus_bin = promtools.prometheus_bin  # the fixture
_THRESHOLD = re.compile(r"^(?P<query>.*?)\s*(?:==|!=|>=|<=|>|<)\s*[-+0-9.eE]+$", re.S)


def _query(base: str, expr: str) -> dict:
    url = f"{base}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            return json.loads(r.read())
    except urllib.error.HTTPError as err:
        return json.loads(err.read())


def _dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


def _with_variables(expr: str, prefix: str, instance: str) -> str:
    """A query as Grafana sends it with this prefix and one worker chosen."""
    return expr.replace("${prefix}", prefix).replace("$instance", instance)


def _dashboard_exprs(prefix: str = "", instance: str = ".*") -> list[tuple[str, str]]:
    out = []
    for panel in _dashboard()["panels"]:
        for t in panel.get("targets", []):
            out.append((panel["title"], _with_variables(t["expr"], prefix, instance)))
    return out


def _label_values(base: str, query: str) -> set[str]:
    """Grafana's label_values(selector, label) on Prometheus: the series API."""
    selector, label = re.fullmatch(r"label_values\((.*),\s*(\w+)\)", query).groups()
    url = f"{base}/api/v1/series?" + urllib.parse.urlencode({"match[]": selector})
    with urllib.request.urlopen(url, timeout=10) as r:
        return {s[label] for s in json.loads(r.read())["data"] if label in s}


# Series a query may find empty because the worker does not expose them yet: none (the
# worker initialises every labelled counter at 0, streams/web.py declare_series).
_INIT_ONLY: set = set()


def _rules() -> list[dict]:
    return [r for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"]]


def test_promtool_accepts_the_rules_and_the_compose_prometheus_config(prometheus_bin, tmp_path):
    _, promtool = prometheus_bin
    out = subprocess.run([promtool, "check", "rules", str(RULES)], capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"SUCCESS: {len(_rules())} rules found" in out.stdout
    # the compose config names the rules at their container path: check it with them there
    cfg = yaml.safe_load((REPO / "ops" / "prometheus" / "prometheus.yml").read_text())
    assert cfg["rule_files"] == ["/etc/prometheus/alerts.yml"]
    cfg["rule_files"] = [str(RULES)]
    local = tmp_path / "prometheus.yml"
    local.write_text(yaml.safe_dump(cfg))
    out = subprocess.run([promtool, "check", "config", str(local)], capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr


def test_dashboard_and_alert_queries_return_data_from_a_live_worker(
        prometheus_bin, settings, worker_factory, tmp_path):
    exe, _ = prometheus_bin
    experiments = tmp_path / "experiments.yaml"
    experiments.write_text("experiments:\n  - name: obs\n    arms:\n"
                           "      - {name: a, share: 0.5}\n"
                           "      - {name: b, share: 0.5, model: content}\n")
    s = settings.model_copy(update={"quality_sample_every": 1, "experiments_file": experiments,
                                    "lead_sweep_interval_seconds": 1.0,
                                    "gc_full_interval_seconds": 2.0,
                                    "model_refit_every": 50})
    w = worker_factory(s)
    sim = Simulator(SimConfig(leads=30, properties=120, days=2, seed=8, bad_ratio=0.05,
                              duplicate_ratio=0.03, start=recent_start(2)))
    records = list(sim.records())
    asyncio.run(publish(s, [(r.topic, r.key, r.value) for r in records]))

    port = free_port()
    cfg = {"global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
           "rule_files": [str(RULES)],
           "scrape_configs": [{"job_name": "leadstream",
                               "static_configs": [{"targets": [f"127.0.0.1:{s.web_port}"]}]}]}
    (tmp_path / "prom.yml").write_text(yaml.safe_dump(cfg))
    prometheus = Process(
        [exe, f"--config.file={tmp_path / 'prom.yml'}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
         f"--web.listen-address=127.0.0.1:{port}"], tmp_path / "prometheus.log")
    base = f"http://127.0.0.1:{port}"
    try:
        n_inter = sum(r.topic == "interactions" for r in records)
        w.wait_for(lambda: w.total("leadstream_events_in_total",
                                   topic=s.topic("interactions")) >= n_inter, what="the stream")
        # the worker's full collections are its own, on schedule, and measured
        w.wait_for(lambda: w.total("leadstream_gc_pause_seconds_count", generation="2") >= 2,
                   timeout=30, what="two scheduled full garbage collections")
        assert w.total("leadstream_gc_pause_seconds_count", generation="0") > 0
        # EASE's refits are computed off the event loop and installed (every 50 positives)
        w.wait_for(lambda: w.total("leadstream_model_refit_seconds_count") >= 1,
                   timeout=30, what="an EASE refit off the event loop")
        # enough scrapes for rate() windows and the 15 s-step subquery
        def scraped() -> bool:
            r = _query(base, 'count_over_time(up{job="leadstream"}[1m])')
            return bool(r["data"]["result"]) and float(r["data"]["result"][0]["value"][1]) >= 35

        prometheus.wait_for(scraped, timeout=60, what="Prometheus to scrape the worker", every=1)

        instance = f"127.0.0.1:{s.web_port}"
        variables = {v["name"]: v for v in _dashboard()["templating"]["list"]}
        pick = re.compile(variables["prefix"]["regex"].strip("/"))
        prefixes = {m[1] for t in _label_values(base, variables["prefix"]["query"])
                    if (m := pick.search(t))}
        assert s.topic_prefix in prefixes, prefixes
        workers = _label_values(
            base, _with_variables(variables["instance"]["query"], s.topic_prefix, instance))
        assert workers == {instance}, workers

        exposed = {n for n, _ in w.metrics()}
        empty, invalid = [], []
        for title, expr in _dashboard_exprs(s.topic_prefix, instance):
            r = _query(base, expr)
            if r["status"] != "success":
                invalid.append((title, expr, r.get("error")))
            elif not r["data"]["result"]:
                empty.append((title, expr))
        for rule in _rules():
            full = _query(base, rule["expr"])
            if full["status"] != "success":
                invalid.append((rule["alert"], rule["expr"], full.get("error")))
            probe = _THRESHOLD.match(rule["expr"].strip())
            assert probe, f"{rule['alert']}: expected '<query> <op> <number>'"
            r = _query(base, probe["query"])
            if r["status"] != "success":
                invalid.append((rule["alert"], probe["query"], r.get("error")))
            elif not r["data"]["result"]:
                empty.append((rule["alert"], probe["query"]))
        not_yet = [(what, e) for what, e in empty
                   if (names := set(re.findall(r"leadstream_\w+", e)))
                   and names <= _INIT_ONLY - exposed]
        empty = [x for x in empty if x not in not_yet]
        assert not invalid, invalid
        assert not empty, empty
        assert len(_dashboard_exprs()) >= 15

        with urllib.request.urlopen(f"{base}/api/v1/rules", timeout=10) as resp:
            groups = json.loads(resp.read())["data"]["groups"]
        loaded = [r for g in groups for r in g["rules"]]
        assert len(loaded) == len(_rules())
        assert all(r["health"] == "ok" for r in loaded), [(r["name"], r.get("lastError"))
                                                         for r in loaded]
        firing = {r["name"] for r in loaded if r["state"] == "firing"}
        assert "LeadstreamWorkerDown" not in firing
    finally:
        prometheus.stop()
