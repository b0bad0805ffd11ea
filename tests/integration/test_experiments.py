"""A/B experiments over a real broker: two workers agree on every lead's arm, outcomes are
credited to the arm that showed the listing, and the report and the metrics agree."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta

import orjson
import pytest

from leadstream.contract.events import make_event
from leadstream.models.experiments import load_experiments
from leadstream.ops.broker import free_port

from .conftest import publish, read_topic, settings_env

pytestmark = pytest.mark.integration

EXPERIMENTS = """
experiments:
  - name: ab-content
    salt: test
    arms:
      - {name: control, share: 0.5, model: hybrid}
      - {name: content, share: 0.5, model: content}
"""


def _listings():
    for i in range(30):
        yield orjson.dumps({"property_id": f"XP{i}", "status": "active",
                            "price": 300_000 + 10_000 * i, "bedrooms": 1 + i % 4,
                            "bathrooms": 1, "property_type": ["condo", "house"][i % 2],
                            "city": ["Austin", "Denver"][i % 3 % 2]})


def test_two_workers_agree_on_arms_and_outcomes_go_to_the_right_arm(settings, worker_factory,
                                                                    tmp_path):
    path = tmp_path / "experiments.yaml"
    path.write_text(EXPERIMENTS)
    s = settings.model_copy(update={"experiments_file": path})
    exp = load_experiments(path)
    asyncio.run(publish(s, [("properties", orjson.loads(v)["property_id"].encode(), v)
                            for v in _listings()]))
    w1 = worker_factory(s)
    w2 = worker_factory(s.model_copy(update={"web_port": free_port()}))
    now = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)
    leads = [f"AB{i:03d}" for i in range(40)]

    def ev(lead, et, minutes, **kw):
        e = make_event(et, event_id=f"{lead}-{et}-{minutes}", lead_id=lead, session_id="s",
                       timestamp=now + timedelta(minutes=minutes), **kw)
        return ("interactions", lead.encode(), orjson.dumps(e.model_dump(mode="json")))

    asyncio.run(publish(s, [ev(lead, "session_started", 0) for lead in leads]))
    recs = {}

    def first_lists():
        for m in asyncio.run(read_topic(s, "recommendations", idle=1.0)):
            rec = orjson.loads(m.value)
            recs.setdefault(rec["lead_id"], rec)
        return len(recs) == len(leads)

    w1.wait_for(first_lists, timeout=90, what="a list for every lead")
    for lead, rec in recs.items():
        assert (rec["experiment"], rec["arm"]) == ("ab-content", exp.arm_for(lead).name)
        assert rec["model_version"].startswith(f"hybrid-1:{exp.arm_for(lead).model}@")
    per_worker = [w.total("leadstream_experiment_total", kind="recommendations")
                  for w in (w1, w2)]
    assert all(n > 0 for n in per_worker) and sum(per_worker) == len(leads)

    # every lead sees its top listing; only the content arm's leads click and save it
    outcomes = []
    for lead, rec in recs.items():
        top = rec["items"][0]["property_id"]
        shown = {"recommendation_id": rec["recommendation_id"], "rank": 1}
        outcomes.append(ev(lead, "recommendation_shown", 2, property_id=top, payload=shown))
        if rec["arm"] == "content":
            outcomes.append(ev(lead, "recommendation_clicked", 3, property_id=top,
                               payload=shown))
            outcomes.append(ev(lead, "property_saved", 4, property_id=top))
    asyncio.run(publish(s, outcomes))
    n_content = sum(r["arm"] == "content" for r in recs.values())
    assert 0 < n_content < len(leads)

    def total(kind, arm):
        return sum(w.total("leadstream_experiment_total", kind=kind, arm=arm) for w in (w1, w2))

    w1.wait_for(lambda: total("saves", "content") == n_content, what="attributed saves")
    assert total("impressions", "control") == len(leads) - n_content
    assert total("impressions", "content") == n_content
    assert total("clicks", "content") == n_content and total("clicks", "control") == 0
    assert total("saves_lists", "content") == n_content and total("saves", "control") == 0
    # online HR@10 per arm: the click and the save were on the lead's latest list
    assert total("hits", "content") == total("positives", "content") == 2 * n_content
    assert total("positives", "control") == 0

    out = subprocess.run([sys.executable, "-m", "leadstream", "experiments", "report", "--json"],
                         env=settings_env(s), capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    r = orjson.loads(out.stdout)
    content, control = r["arms"]["content"], r["arms"]["control"]
    assert (content["impressions"], content["clicks"], content["saves"]) == (n_content,) * 3
    assert (control["impressions"], control["clicks"]) == (len(leads) - n_content, 0)
    assert content["click_through"]["value"] == 1.0 and content["click_through"]["significant"]
    human = subprocess.run([sys.executable, "-m", "leadstream", "experiments", "report"],
                           env={**settings_env(s), "COLUMNS": "200"}, capture_output=True,
                           text=True, timeout=120)
    assert "significant" in human.stdout and "control" in human.stdout


def test_agent_insights_topic_report_and_endpoint_agree(settings, worker_factory):
    import json
    from pathlib import Path

    import jsonschema

    from leadstream.simulate import SimConfig, Simulator

    from .conftest import recent_start

    schema = json.loads((Path(__file__).resolve().parents[2] / "schemas"
                         / "agent-insights.json").read_text())
    s = settings.model_copy(update={"agent_insights_interval_seconds": 1.0})
    w = worker_factory(s)
    sim = Simulator(SimConfig(leads=25, properties=100, days=3, seed=21, start=recent_start(3)))
    records = list(sim.records())
    asyncio.run(publish(s, [(r.topic, r.key, r.value) for r in records]))
    n = sum(r.topic == "interactions" for r in records)
    w.wait_for(lambda: w.total("leadstream_events_processed_total")
               + w.total("leadstream_events_duplicate_total") >= n, what="the stream")
    facts_sent = w.total("leadstream_agent_facts_total")
    assert facts_sent > 0

    def agents_seen():
        return orjson.loads(w.get("/agents")[1])["agents"]

    w.wait_for(lambda: sum(a["figures"]["leads_handled"]["value"] for a in agents_seen().values())
               > 0 and w.total("leadstream_agent_insights_published_total") > 0,
               what="agent insights")
    time.sleep(2)  # the aggregator has consumed every fact
    live = agents_seen()
    out = subprocess.run([sys.executable, "-m", "leadstream", "agents", "report", "--json"],
                         env=settings_env(s), capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    report = orjson.loads(out.stdout)
    assert report["facts"] == facts_sent
    assert report["agents"] == live
    # every agent of the simulation that contacted a lead is there, with team medians
    contacted = {orjson.loads(r.value)["agent_id"] for r in records if r.topic == "interactions"
                 and b'"agent_contacted_lead"' in r.value}
    assert contacted <= set(live)
    published = [orjson.loads(m.value) for m in asyncio.run(read_topic(s, "agent-insights"))]
    assert published
    for rec in published:
        jsonschema.validate(rec, schema)
    assert {r["agent_id"] for r in published if r["type"] == "agent_insight"} == set(live)
