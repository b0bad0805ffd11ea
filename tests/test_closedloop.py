"""The closed loop's decisions without a broker: which events follow a published list,
seeded and deterministic, by the lead's hidden taste and the listing's rank; and the
schedule (newest list, cooldown, visits, the event bound) driven by a fake clock."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import orjson

from leadstream.closedloop import Behaviour, ClosedLoop, event, react
from leadstream.contract.events import parse_event
from leadstream.contract.settings import Settings
from leadstream.simulate import SimConfig, Simulator


def _list(rid="r1", lead="L1", pids=("P1", "P2", "P3", "P4", "P5", "P6", "P7", "P8")):
    return {"recommendation_id": rid, "lead_id": lead, "arm": "hybrid",
            "items": [{"property_id": p, "rank": i + 1} for i, p in enumerate(pids)]}


def _ctr(utility: float, trials: int = 3000, seed: int = 1, rank_of: str | None = None):
    rng = random.Random(seed)
    shown = clicked = 0
    for _ in range(trials):
        for a in react(_list(), lambda pid: utility, rng):
            if rank_of is not None and a.property_id != rank_of:
                continue
            shown += a.event_type == "recommendation_shown"
            clicked += a.event_type == "recommendation_clicked"
    return clicked / shown


def test_same_seed_same_reactions_and_other_seeds_differ():
    taste = {f"P{i}": 2.0 - 0.5 * i for i in range(1, 9)}.get
    runs = [react(_list(), taste, random.Random(s)) for s in range(20)]
    assert runs[0] == react(_list(), taste, random.Random(0))
    assert len({repr(r) for r in runs}) > 10


def test_impressions_follow_the_list_and_everything_names_it():
    b = Behaviour(screen=4, scroll=0.7)
    rng = random.Random(5)
    lengths = []
    for _ in range(500):
        acts = react(_list(), lambda pid: 1.0, rng, b)
        shown = [a for a in acts if a.event_type == "recommendation_shown"]
        lengths.append(len(shown))
        # the first screen always, then a prefix of the list, ranks in order
        assert [a.payload["rank"] for a in shown] == list(range(1, len(shown) + 1))
        assert [a.property_id for a in shown] == [f"P{i}" for i in range(1, len(shown) + 1)]
        assert all(a.payload["recommendation_id"] == "r1" for a in shown)
        assert [a.delay for a in acts] == sorted(a.delay for a in acts)
        seen = {a.property_id for a in shown}
        for a in acts[len(shown):]:
            assert a.event_type != "recommendation_shown" and a.property_id in seen
            if a.event_type == "recommendation_clicked":
                assert a.payload["recommendation_id"] == "r1"
    assert min(lengths) == 4 and max(lengths) == 8
    assert 4 + 0.7 + 0.7**2 - 0.3 < sum(lengths) / 500 < 4 + 0.7 + 0.7**2 + 0.7**3 + 0.5


def test_clicks_saves_and_bookings_follow_the_hidden_taste_and_the_rank():
    good, poor = _ctr(2.5), _ctr(-1.0)
    assert good > 4 * poor and 0.1 < good < 0.5 and poor < 0.05
    # position bias: the same listing quality clicked less further down
    assert _ctr(2.0, rank_of="P1") > 1.5 * _ctr(2.0, rank_of="P4")
    assert _ctr(0.0, trials=200) > 0
    # a listing the lead knows nothing of is never clicked
    acts = [a for _ in range(200) for a in react(_list(), lambda pid: None, random.Random(2))]
    assert {a.event_type for a in acts} == {"recommendation_shown"}

    def kinds(utility):
        rng = random.Random(9)
        out: dict[str, int] = {}
        for _ in range(3000):
            for a in react(_list(), lambda pid: utility, rng):
                out[a.event_type] = out.get(a.event_type, 0) + 1
        return out

    loved, meh = kinds(2.5), kinds(0.0)
    assert loved["property_saved"] / loved["recommendation_clicked"] > 0.35
    assert loved.get("booking_requested", 0) > 0 and "booking_requested" not in meh
    assert meh.get("property_swiped", 0) > 0
    assert loved["recommendation_clicked"] == loved["property_viewed"]


def test_the_events_meet_the_contract():
    t = datetime(2026, 3, 1, tzinfo=UTC)
    acts = []
    rng = random.Random(4)
    while not any(a.event_type == "booking_requested" for a in acts):
        acts = react(_list(), lambda pid: 2.5, rng)
    types = set()
    for i, a in enumerate(acts):
        when = t + timedelta(seconds=a.delay)
        ev = parse_event(orjson.dumps(event(a, "L1", "s1", f"e{i}", when)),
                         max_age=timedelta(days=36500))
        types.add(ev.event_type)
        assert ev.source == "recommendation" and ev.property_id == a.property_id
    assert {"recommendation_shown", "recommendation_clicked", "property_viewed",
            "booking_requested"} <= types


def _loop(**kw):
    sim = Simulator(SimConfig(leads=5, properties=40, seed=3, days=1, closed_loop=True))
    return sim, ClosedLoop(Settings(), sim, seed=1, look_after=(1.0, 1.0), **kw)


def test_a_lead_looks_at_its_newest_list_at_most_once_per_cooldown():
    sim, loop = _loop(cooldown=10.0)
    lead = sim.leads[0].lead_id
    pids = [p for p in sim.props][:6]
    loop.on_list(_list("old", lead, pids), now=0.0)
    loop.on_list(_list("new", lead, pids), now=0.5)  # arrives before the lead looked
    loop.on_list(_list("x", "SOMEONE-ELSE", pids), now=0.5)  # not a simulated lead
    loop.tick(0.9)
    assert loop.stats.looked == 0 and loop.due_events(0.9) == []
    loop.tick(1.0)
    sent = [orjson.loads(v) for _, v in loop.due_events(100.0)]
    assert loop.stats.looked == 1 and loop.stats.lists == 2
    assert {e["payload"]["recommendation_id"] for e in sent
            if e["event_type"].startswith("recommendation_")} == {"new"}
    assert all(e["lead_id"] == lead for e in sent)
    assert loop.stats.per_arm["hybrid"]["recommendation_shown"] >= 4
    loop.on_list(_list("next", lead, pids), now=2.0)
    loop.tick(5.0)
    assert loop.stats.looked == 1  # cooling down until 1.0 + 10
    loop.tick(11.0)
    assert loop.stats.looked == 2


def test_visits_and_the_event_bound():
    sim, loop = _loop(visit_every=5.0, max_events=7)
    for t in range(0, 40):
        loop.tick(float(t))
    sent = [orjson.loads(v) for _, v in loop.due_events(40.0)]
    assert len(sent) == 7 and loop.done
    assert {e["event_type"] for e in sent} == {"session_started"}
    assert loop.due_events(41.0) == []
    for e in sent:
        parse_event(orjson.dumps(e))


def test_simulate_closed_loop_needs_realtime(monkeypatch, capsys):
    from leadstream.cli import main

    monkeypatch.setenv("LEADSTREAM_KAFKA_BOOTSTRAP", "127.0.0.1:1")  # never reached
    assert main(["simulate", "--closed-loop", "--leads", "2", "--days", "0.1"]) == 2
    assert "--closed-loop needs --realtime" in capsys.readouterr().err
