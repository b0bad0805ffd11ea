"""Agent insights from facts: figures, team medians and the coaching hints they imply."""

from __future__ import annotations

from leadstream.models.agents import AgentStats, insights, replay


def _facts(agent, leads, contacts, responses, bookings, conversions, wait):
    out = []
    for i in range(leads):
        out.append({"agent_id": agent, "kind": "lead", "lead_id": f"{agent}{i}"})
    for _ in range(contacts):
        out.append({"agent_id": agent, "kind": "contact", "wait": wait})
    out += [{"agent_id": agent, "kind": "response"}] * responses
    out += [{"agent_id": agent, "kind": "booking"}] * bookings
    out += [{"agent_id": agent, "kind": "conversion"}] * conversions
    return out


def test_figures_medians_and_hints():
    facts = (_facts("A", 10, 10, 9, 5, 1, 300) + _facts("B", 10, 10, 8, 4, 1, 600)
             + _facts("C", 10, 10, 3, 1, 4, 3600))
    r = insights(replay(facts))
    c = r["C"]
    assert c["figures"]["hot_response_minutes"] == {"value": 60.0, "team_median": 10.0}
    assert c["figures"]["contact_to_response"] == {"value": 0.3, "team_median": 0.8}
    hints = " | ".join(c["hints"])
    assert "answers hot leads 6.0 times slower than the team median (60 min vs 10 min)" in hints
    assert "gets answers to 30% of contacts vs 80% for the team median" in hints
    assert "books viewings for 10% of leads vs 40% for the team median" in hints
    assert "converts 40% of leads, 4.0 times the team median" in hints
    assert any("answers hot leads fast" in h for h in r["A"]["hints"])
    assert r["B"]["hints"] == []  # the median agent: nothing to say


def test_an_agent_without_data_gets_no_figures_nor_hints():
    r = insights({"new": AgentStats(), **replay(_facts("A", 2, 2, 1, 1, 0, 60))})
    assert r["new"]["figures"]["booking_rate"]["value"] is None and r["new"]["hints"] == []
    assert AgentStats.from_dict(AgentStats(leads=3).to_dict()).leads == 3
