"""A/B experiments without a broker: assignment, configuration errors, attribution rules, and
a report that finds an effect planted in a simulated stream (and none where none is)."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime, timedelta

import orjson
import pytest
from pydantic import ValidationError

from leadstream.contract.events import make_event, parse_event
from leadstream.models.experiments import (
    MAX_LOGGED,
    Experiment,
    attribute,
    load_experiments,
    log_recommendation,
    replay_counts,
    report,
)
from leadstream.simulate import experiment_records

EXP = Experiment.model_validate({"name": "ab1", "salt": "2026-11", "arms": [
    {"name": "control", "share": 0.5},
    {"name": "better", "share": 0.5, "model": "hybrid", "params": {"w_content": 3.0}}]})


def test_assignment_is_stable_across_processes_and_follows_the_shares():
    leads = [f"L{i}" for i in range(40)]
    code = ("import sys, json; from tests.test_experiments import EXP; "
            "print(json.dumps([EXP.arm_for(x).name for x in sys.argv[1:]]))")
    other = subprocess.run([sys.executable, "-c", code, *leads], capture_output=True, text=True,
                           env={"PYTHONHASHSEED": "123", "PATH": ""}, check=True, timeout=60,
                           cwd=str(__import__("pathlib").Path(__file__).resolve().parents[1]))
    assert orjson.loads(other.stdout) == [EXP.arm_for(x).name for x in leads]
    three = Experiment.model_validate({"name": "e", "arms": [
        {"name": "a", "share": 0.2}, {"name": "b", "share": 0.3}, {"name": "c", "share": 0.5}]})
    counts = {"a": 0, "b": 0, "c": 0}
    for i in range(20_000):
        counts[three.arm_for(f"lead-{i}").name] += 1
    assert abs(counts["a"] / 20_000 - 0.2) < 0.015 and abs(counts["c"] / 20_000 - 0.5) < 0.015


@pytest.mark.parametrize("arms, message", [
    ([{"name": "a", "share": 0.5}, {"name": "b", "share": 0.4}], "add up to 0.9"),
    ([{"name": "a", "share": 0.5}, {"name": "b", "share": 0.5, "model": "magic"}],
     "unknown model"),
    ([{"name": "a", "share": 0.5}, {"name": "b", "share": 0.5, "params": {"lr": 1}}],
     "unknown params"),
    ([{"name": "a", "share": 1.0}], "at least 2"),
])
def test_bad_experiment_files_are_refused_with_the_reason(arms, message, tmp_path):
    path = tmp_path / "experiments.yaml"
    path.write_text(orjson.dumps({"experiments": [{"name": "x", "arms": arms}]}).decode())
    with pytest.raises(ValidationError, match=message):
        load_experiments(path)


def test_attribution_credits_the_list_that_showed_the_listing():
    t = datetime(2026, 3, 1, tzinfo=UTC)
    log: list = []
    log_recommendation(log, "r1", t.timestamp(), "ab1", "control", ["P1", "P2"])
    log_recommendation(log, "r2", (t + timedelta(hours=1)).timestamp(), "ab1", "better",
                       ["P2", "P3"])

    def ev(et, minutes, pid=None, **payload):
        return make_event(et, event_id=f"e{minutes}", lead_id="L", session_id="s",
                          timestamp=t + timedelta(minutes=minutes), property_id=pid,
                          payload=payload)

    week = 7 * 86_400
    assert attribute(log, ev("recommendation_shown", 61, "P2", recommendation_id="r1", rank=2),
                     week) == [("ab1", "control", "impressions")]
    assert attribute(log, ev("recommendation_clicked", 62, "P3", recommendation_id="r2"),
                     week) == [("ab1", "better", "clicks")]
    assert attribute(log, ev("recommendation_clicked", 62, "P3", recommendation_id="old"),
                     week) == []
    # a save on a listing of both lists goes to the most recent list that showed it, and
    # counts that list once among lists with a save
    assert attribute(log, ev("property_saved", 70, "P2"), week) == [
        ("ab1", "better", "saves"), ("ab1", "better", "saves_lists")]
    assert attribute(log, ev("property_saved", 71, "P2"), week) == [("ab1", "better", "saves")]
    assert attribute(log, ev("property_saved", 72, "P1"), week) == [
        ("ab1", "control", "saves"), ("ab1", "control", "saves_lists")]
    assert attribute(log, ev("property_saved", 73, "P9"), week) == []  # never recommended
    assert attribute(log, ev("property_saved", 60 * 24 * 8, "P3"), week) == []  # too late
    conv = make_event("outcome_recorded", event_id="o", lead_id="L", agent_id="A",
                      timestamp=t + timedelta(hours=5), property_id="P3",
                      payload={"outcome": "converted"})
    assert attribute(log, conv, week) == [("ab1", "better", "conversions")]


def test_a_click_on_a_list_that_newer_lists_followed_is_still_credited():
    # a lead scrolling one list while a visit and its own clicks brought it newer ones
    t = datetime(2026, 3, 1, tzinfo=UTC)
    log: list = []
    log_recommendation(log, "first", t.timestamp(), "ab1", "better", ["P1"])
    for i in range(MAX_LOGGED + 3):
        log_recommendation(log, f"r{i}", t.timestamp() + i + 1, "ab1", "better", ["P2"])

    def ev(et, pid, **payload):
        return make_event(et, event_id=f"e-{et}", lead_id="L", session_id="s",
                          timestamp=t + timedelta(minutes=1), property_id=pid, payload=payload)

    assert attribute(log, ev("recommendation_clicked", "P1", recommendation_id="first"),
                     86_400) == [("ab1", "better", "clicks")]
    # its listings are forgotten: a save of P1 is no longer credited to it
    assert attribute(log, ev("property_saved", "P1"), 86_400) == []
    assert attribute(log, ev("property_saved", "P2"), 86_400)[0] == ("ab1", "better", "saves")


def _report(exp, lift, seed=7, leads=3000):
    recs = experiment_records(exp, leads=leads, lift=lift, seed=seed)
    items = []
    for r in recs:
        if r.topic == "recommendations":
            items.append(("rec", orjson.loads(r.value)))
        else:
            items.append(("event", parse_event(r.value, max_age=timedelta(days=3650))))
    return report(replay_counts(items, exp.attribution_window_seconds), exp)


def test_report_finds_a_planted_better_arm():
    r = _report(EXP, {"better": 1.6})
    ctl, bet = r["arms"]["control"], r["arms"]["better"]
    assert ctl["impressions"] + bet["impressions"] == 3000 * 3 * 5
    ct = bet["click_through"]
    assert ct["significant"] and ct["p_value"] < 0.01
    assert ct["value"] > ctl["click_through"]["value"]
    lo, hi = ctl["click_through"]["ci95"]
    assert lo <= 0.05 <= hi  # the true control rate
    lo, hi = ct["ci95"]
    assert lo <= 0.08 <= hi  # the true planted rate
    assert bet["saves"] > ctl["saves"] and bet["saves_lists"] <= bet["saves"]


def test_report_finds_nothing_when_the_arms_are_the_same():
    r = _report(EXP, {}, seed=11)
    assert not r["arms"]["better"]["click_through"]["significant"]
    assert r["arms"]["better"]["click_through"]["p_value"] > 0.05
