"""The EASE item model (``models/ease.py``) and its component: the Gram matrix it keeps
online is exactly ``XᵀX``, its memory is bounded, a refit job computes from what it saw
when it was made, and the suite hands refits to the runtime when told to."""

from __future__ import annotations

import pickle
from datetime import UTC, datetime

import numpy as np
import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from leadstream.contract.events import make_event, parse_listing
from leadstream.features.profile import LeadProfile, update
from leadstream.models.catalog import Catalog
from leadstream.models.ease import EaseModel
from leadstream.models.suite import ModelSuite

engagements = st.lists(
    st.tuples(st.sampled_from(["A", "B", "C", "D"]), st.integers(0, 11),
              st.sampled_from([1 / 3, 2 / 3, 1.0])),
    max_size=80)


@settings(max_examples=200, deadline=None)
@given(engagements)
def test_the_gram_matrix_is_x_transposed_x_of_each_leads_strongest_engagement(seq):
    m = EaseModel(refit_every=0, history=1000)
    X = np.zeros((4, 12))
    for lead, row, value in seq:
        m.learn_one(lead, row, value)
        i = "ABCD".index(lead)
        X[i, row] = max(X[i, row], value)
    want = X.T @ X
    rows = [r for r in range(12) if len(m.slot) > r and m.slot[r] >= 0]
    assert sorted(rows) == [r for r in range(12) if X[:, r].any()]
    s = m.slot[rows]
    np.testing.assert_allclose(m.G[np.ix_(s, s)], want[np.ix_(rows, rows)], atol=1e-5)
    assert not m.G[m.used:, :].any()


def _blocks(m: EaseModel, leads: int = 30) -> None:
    """Leads L0.. engage with rows 0-4, leads M0.. with rows 5-9, two of each at random."""
    rng = np.random.default_rng(3)
    for i in range(leads):
        for group, base in (("L", 0), ("M", 5)):
            for row in rng.choice(5, 3, replace=False):
                m.learn_one(f"{group}{i}", base + int(row))


def test_a_lead_is_recommended_what_leads_with_its_listings_engaged_with():
    m = EaseModel(refit_every=0, l2=5.0)
    _blocks(m)
    m.learn_one("new", 1)
    assert m.scores("new", 10) is None  # nothing fitted yet
    m.refit()
    s = m.scores("new", 12)
    assert len(s) == 12 and s[1] == 0.0  # its own listing: a zero diagonal
    assert set(np.argsort(-s)[:4]) == {0, 2, 3, 4}
    assert s[10:].tolist() == [0.0, 0.0]  # rows without a slot score nothing
    assert m.trusted(12).tolist() == [True] * 10 + [False] * 2
    reason = m.best_reason("new", 3)
    assert reason is not None and reason[0] == 1 and reason[1] > 0
    assert m.best_reason("new", 7) is None  # no positive weight from the other block


def test_slots_are_bounded_and_the_least_engaged_listings_are_evicted_at_a_refit():
    m = EaseModel(max_items=8, refit_every=0, l2=1.0)
    for lead in range(6):
        for row in range(8):
            if row < 6 or lead == 0:  # rows 6 and 7: one lead each
                m.learn_one(f"L{lead}", row)
    m.learn_one("L1", 9)  # no slot left: learnt into the history only
    assert m.used == 8 and m.slot[9] == -1 and m.G.shape == (8, 8)
    m.refit()  # full: frees the quarter least engaged (rows 6 and 7)
    assert m.slot[6] == m.slot[7] == -1 and sorted(m.free) == sorted(
        int(s) for s in np.flatnonzero(m.row == -1))
    assert not m.trusted(10)[[6, 7, 9]].any()
    assert m.scores("L0", 10)[[6, 7, 9]].tolist() == [0.0, 0.0, 0.0]
    m.learn_one("L2", 9)  # takes a freed slot at once
    assert m.slot[9] in (0, 1, 2, 3, 4, 5, 6, 7) and m.used == 8
    assert m.G.shape == (8, 8)


def test_a_listing_in_a_freed_slot_gets_no_weights_of_the_evicted_one_before_the_refit_lands():
    m = EaseModel(max_items=8, refit_every=0, l2=1.0)
    for lead in range(6):
        for row in range(7):
            if row < 6 or lead == 0:
                m.learn_one(f"L{lead}", row)
    m.refit()  # 7 slots of 8: nothing evicted, row 6 fitted
    assert m.scores("L1", 8)[6] != 0.0
    m.learn_one("L0", 7)
    job = m.refit_job()  # full now: rows 6 and 7 evicted; the inverse still to come
    assert m.slot[6] == -1
    m.learn_one("L1", 9)  # a new listing takes row 6's freed slot meanwhile
    m.learn_one("L2", 9)
    assert 0 <= m.slot[9] < len(m.B) and m.scores("L1", 10)[9] == 0.0
    assert m.best_reason("L2", 9) is None
    job.install(job.compute())
    assert m.scores("L1", 10)[9] == 0.0  # its counts came after the copy: next refit


def test_a_refit_job_computes_from_the_counts_it_was_made_with():
    a, b = EaseModel(refit_every=0, l2=5.0), EaseModel(refit_every=0, l2=5.0)
    _blocks(a)
    _blocks(b)
    job = a.refit_job()
    for row in range(10):  # learning goes on while the job runs elsewhere
        a.learn_one("late", row)
    job.install(job.compute())
    b.refit()
    np.testing.assert_array_equal(a.B, b.B)
    assert a.G[0, 9] > b.G[0, 9]


def test_a_lead_keeps_its_newest_positives_and_a_stronger_engagement_moves_to_the_end():
    m = EaseModel(refit_every=0, history=3)
    for row in (1, 2, 3):
        m.learn_one("L", row, 1 / 3)
    m.learn_one("L", 1, 1.0)  # a save after a view: its entry rises, it is the newest
    m.learn_one("L", 2, 1 / 3)  # no stronger: nothing changes
    assert list(m.hist["L"][0]) == [2, 3, 1] and list(m.hist["L"][1])[-1] == 1.0
    m.learn_one("L", 4)
    assert list(m.hist["L"][0]) == [3, 1, 4]
    assert m.since == 5
    m.forget("L")
    assert "L" not in m.hist


def _suite_stream(refit_every: int):
    cat = Catalog()
    suite = ModelSuite(seed=1, refit_every=refit_every)
    for i in range(30):
        row = cat.upsert(parse_listing(orjson.dumps({
            "property_id": f"P{i}", "status": "active", "price": 300_000, "bedrooms": 2,
            "bathrooms": 1, "property_type": "condo", "city": "Austin"})))
        suite.on_listing(cat, row, {"description": ""})
    profiles: dict[str, LeadProfile] = {}
    rng = np.random.default_rng(5)

    def play(n: int, lead_base: int = 0) -> None:
        for k in range(n):
            lead = f"L{lead_base + k // 4}"
            pid = f"P{int(rng.integers(0, 30))}"
            ev = make_event("property_saved", event_id=f"e{lead}{k}", lead_id=lead,
                            session_id=f"s{lead}", property_id=pid,
                            timestamp=datetime(2026, 3, 1, 10, tzinfo=UTC))
            p = profiles.setdefault(lead, LeadProfile())
            suite.learn_one(cat, lead, p, ev)
            update(p, ev, cat.attributes(pid))
    return cat, suite, profiles, play


def test_the_suite_refits_inline_unless_the_runtime_takes_the_refits():
    cat, suite, profiles, play = _suite_stream(refit_every=40)
    ease = suite.components["ease"].model
    play(50)  # 40 new positives (a repeated save is not new)
    assert len(ease.B) > 0  # inline: refitted inside learn_one
    suite.refit_inline = False
    before = ease.B
    play(60, lead_base=100)
    assert ease.B is before  # due, but left to the runtime
    jobs = suite.refits()
    assert len(jobs) == 1 and suite.refits() == []  # handed out once
    jobs[0].install(jobs[0].compute())
    assert ease.B is not before and len(ease.B) >= len(before)
    r = suite.recommend(cat, "L100", profiles["L100"], k=5)
    assert any("often on the same leads' shortlists as 2-bed condo" in it["reason"]
               for it in r.items)


def test_pickle_round_trip_keeps_the_fit_and_returns_to_inline_refits():
    cat, suite, profiles, play = _suite_stream(refit_every=40)
    play(80)
    suite.refit_inline = False
    back = pickle.loads(pickle.dumps(suite))
    assert back.refit_inline is True and back.refit_every == 40
    np.testing.assert_array_equal(back.components["ease"].model.B,
                                  suite.components["ease"].model.B)
    a = suite.recommend(cat, "L3", profiles["L3"], k=5, model="ease")
    b = back.recommend(cat, "L3", profiles["L3"], k=5, model="ease")
    assert a.items == b.items
