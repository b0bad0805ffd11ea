"""The models, River-style: pickle round trip, clone, same seed gives the same output; and
what users rely on: quality against the baselines, cold start, explanations, snapshots."""

from __future__ import annotations

import copy
import pickle
from datetime import timedelta

import numpy as np
import pytest

from leadstream.contract.events import make_event, parse_event, parse_listing
from leadstream.features.profile import LeadProfile, update
from leadstream.models.catalog import Catalog
from leadstream.models.collaborative import CollaborativeModel
from leadstream.models.content import ContentModel
from leadstream.models.evaluate import evaluate, load_events
from leadstream.models.itemitem import ItemItemModel
from leadstream.models.snapshot import SnapshotError, SnapshotStore
from leadstream.models.suite import MODELS, ModelSuite
from leadstream.simulate import SimConfig, Simulator


@pytest.fixture(scope="module")
def stream():
    sim = Simulator(SimConfig(leads=120, properties=300, days=6, seed=3))
    listings, events = [], []
    far = timedelta(days=3650)
    for rec in sim.records():
        if rec.topic == "properties":
            listings.append(rec.value)
        else:
            events.append(parse_event(rec.value, max_age=far, max_future_skew=far))
    return listings, events


def _replay(listings, events, seed=42, suite=None, cat=None, profiles=None):
    suite = suite or ModelSuite(seed=seed)
    if cat is None:
        cat = Catalog()
        for raw in listings:
            lst = parse_listing(raw)
            row = cat.upsert(lst)
            suite.on_listing(cat, row, {"description": lst.description,
                                        "amenities": lst.amenities})
    profiles = {} if profiles is None else profiles
    for ev in events:
        p = profiles.setdefault(ev.lead_id, LeadProfile())
        suite.learn_one(cat, ev.lead_id, p, ev)
        update(p, ev, cat.attributes(ev.property_id) if ev.property_id else None)
    return suite, cat, profiles


def _lists(suite, cat, profiles, leads):
    return {lead: [(it["property_id"], it["score"]) for it in
                   suite.recommend(cat, lead, profiles[lead], k=10).items] for lead in leads}


def test_same_seed_same_output_and_other_seed_differs(stream):
    listings, events = stream
    a = _replay(listings, events[:4000], seed=5)
    b = _replay(listings, events[:4000], seed=5)
    leads = sorted(a[2])[:25]
    assert _lists(*a, leads) == _lists(*b, leads)
    c = _replay(listings, events[:4000], seed=6)
    lead = max(a[2], key=lambda k: a[0].mf.lead_support.get(k, 0))
    assert not np.allclose(a[0].mf.scores(lead, len(a[1])), c[0].mf.scores(lead, len(c[1])))


def test_pickle_round_trip_then_learning_continues_identically(stream):
    listings, events = stream
    suite, cat, profiles = _replay(listings, events[:3000])
    restored = pickle.loads(pickle.dumps(suite))
    cat2, prof2 = copy.deepcopy(cat), copy.deepcopy(profiles)
    _replay(listings, events[3000:5000], suite=suite, cat=cat, profiles=profiles)
    _replay(listings, events[3000:5000], suite=restored, cat=cat2, profiles=prof2)
    leads = sorted(profiles)[:25]
    assert _lists(suite, cat, profiles, leads) == _lists(restored, cat2, prof2, leads)


@pytest.mark.parametrize("model", [ModelSuite(seed=3, w_mf=0.5), CollaborativeModel(n_factors=8),
                                   ContentModel(half_life=86_400.0),
                                   ItemItemModel(max_neighbours=9)])
def test_clone_has_the_same_parameters_and_no_learned_state(model, stream):
    listings, events = stream
    if isinstance(model, ModelSuite):
        _replay(listings, events[:500], suite=model)
        assert model.events_learned == 500
    clone = model.clone()
    assert type(clone) is type(model) and clone._get_params() == model._get_params()
    if isinstance(clone, ModelSuite):
        assert clone.events_learned == 0 and not clone.mf.lead_support
    pickle.loads(pickle.dumps(clone))


def test_hybrid_beats_every_model_and_doubles_popularity_on_simulated_data(stream):
    listings, events = stream
    r = evaluate(events, listings)
    hr = {m: r["models"][m]["prequential"]["hr@10"] for m in MODELS}
    assert r["models"]["hybrid"]["prequential"]["evaluated"] > 1000
    assert hr["hybrid"] >= 2 * hr["popularity"], hr
    for m in MODELS[:-1]:
        assert hr["hybrid"] > hr[m], hr


def test_evaluate_needs_no_catalog_and_accepts_history(stream, tmp_path):
    _, events = stream
    old = events[0].model_copy(update={"event_id": "old", "timestamp": events[0].timestamp
                                       - timedelta(days=3000)})
    lines = [e.model_dump_json().encode() for e in events[:3000]] + [
        old.model_dump_json().encode(), b"{not json", b""]
    evs, bad = load_events(lines + lines[:10])  # duplicates are dropped
    assert bad == 1 and len(evs) == 3001 and evs[0].event_id == "old"
    r = evaluate(evs, None, protocols=("prequential", "leave-last-out"))
    for m in MODELS:
        f = r["models"][m]
        assert set(f) >= {"prequential", "leave_last_out", "coverage", "events_per_second"}
        assert 0 <= f["prequential"]["hr@10"] <= 1 and f["leave_last_out"]["evaluated"] > 0
    assert r["models"]["content"]["prequential"]["hr@10"] <= r["models"]["hybrid"][
        "prequential"]["hr@10"]


def _listing(pid, price, city, ptype, beds=2, status="active"):
    return parse_listing((f'{{"property_id":"{pid}","status":"{status}","price":{price},'
                          f'"bedrooms":{beds},"bathrooms":1,"property_type":"{ptype}",'
                          f'"city":"{city}","address":"{pid} Oak St"}}').encode())


def test_cold_start_new_lead_and_new_listing_and_explanations():
    cat, suite = Catalog(), ModelSuite(seed=1)
    rows = [("A", 400_000, "Austin", "condo"), ("B", 410_000, "Austin", "condo"),
            ("C", 1_500_000, "Denver", "house"), ("D", 395_000, "Austin", "condo")]
    for pid, price, city, t in rows:
        suite.on_listing(cat, cat.upsert(_listing(pid, price, city, t)), {"description": ""})
    t0 = parse_event(b'{"event_id":"x","lead_id":"x","event_type":"session_started",'
                     b'"timestamp":"2026-03-01T10:00:00Z","session_id":"s"}').timestamp
    profiles: dict[str, LeadProfile] = {}

    def act(lead, et, pid, i, **kw):
        p = profiles.setdefault(lead, LeadProfile())
        ev = make_event(et, event_id=f"{lead}{i}", lead_id=lead, session_id="s",
                        timestamp=t0 + timedelta(minutes=i), property_id=pid, **kw)
        suite.learn_one(cat, lead, p, ev)
        update(p, ev, cat.attributes(pid))

    for j in range(6):  # other leads save A then book C: item-to-item evidence
        act(f"O{j}", "property_saved", "A", 2 * j)
        act(f"O{j}", "booking_requested", "C", 2 * j + 1, payload={"booking_id": f"b{j}"})
    new = suite.recommend(cat, "NEW", LeadProfile(), k=4)
    assert new.explanation.startswith("new lead") and new.confidence < 0.2
    assert new.items[0]["property_id"] in ("A", "C")  # the popular ones
    act("L", "property_saved", "A", 30)
    act("L", "property_liked", "B", 31)
    rec = suite.recommend(cat, "L", profiles["L"], k=3)
    # the price is the feedback-weighted geometric mean (save 3 at $400k, like 2 at $410k)
    assert rec.explanation == "you saved 1 two-bed condo around $404k in Austin"
    by_id = {it["property_id"]: it for it in rec.items}
    assert "A" not in by_id  # saved already
    # D: a listing nobody touched, ranked above the popular Denver house by content
    assert by_id["D"]["rank"] < by_id["C"]["rank"]
    assert "in your price range" in by_id["D"]["reason"]
    assert "leads who liked A Oak St also engaged with this" in by_id["C"]["reason"]
    assert rec.confidence > new.confidence


def test_candidates_follow_type_and_city_filters_and_never_include_unknown_rows():
    cat, suite = Catalog(), ModelSuite(seed=1)
    for pid, city, t in (("A", "Austin", "condo"), ("B", "Austin", "house"),
                         ("C", "Denver", "condo"), ("D", "Denver", "townhouse")):
        cat.upsert(_listing(pid, 400_000, city, t))
    cat.index_of("E")  # seen only in events: no type, no city
    lead = LeadProfile()
    lead.filters = {"property_types": ["condo", "other"], "cities": ["Denver", "Paris"]}

    def ids(**kw):
        return [cat.ids[i] for i in np.flatnonzero(suite.candidate_mask(cat, lead, **kw))]

    assert ids() == ids(include_unlisted=True) == ["C"]
    lead.filters = {"property_types": ["other", "condo"]}  # "other": the last type code
    assert ids(include_unlisted=True) == ["A", "C"]
    lead.filters = {"cities": ["Denver"]}  # the last city code
    assert ids(include_unlisted=True) == ["C", "D"]
    lead.filters = {"cities": ["Paris"]}  # no listing there
    assert ids(include_unlisted=True) == []
    lead.filters = {"property_types": ["house"]}
    lead.saved = {"B": 0.0}
    assert ids(include_unlisted=True) == []
    lead.filters, lead.saved = {}, {}
    assert ids() == ["A", "B", "C", "D"] and ids(include_unlisted=True)[-1] == "E"


def test_snapshot_store_versions_and_refuses_unknown_rollback(tmp_path):
    store = SnapshotStore(tmp_path, keep=3)
    for i in range(5):
        assert store.save(ModelSuite(seed=i), [f"P{i}"], {"events_learned": i}) == i + 1
    m = store.manifest()
    assert [v["version"] for v in m["versions"]] == [3, 4, 5] and m["current"] == 5
    assert sorted(p.name for p in tmp_path.glob("*.pkl")) == [
        "v000003.pkl", "v000004.pkl", "v000005.pkl"]
    with pytest.raises(SnapshotError, match="no snapshot version 1"):
        store.rollback(1)
    store.rollback(3)
    suite, rows, entry = store.load()
    assert suite.seed == 2 and rows == ["P2"] and entry["version"] == 3
    assert store.save(suite, rows) == 6 and store.manifest()["versions"][-1]["parent"] == 3


def test_tune_finds_weights_at_least_as_good_as_the_defaults(stream):
    from leadstream.contract.settings import Settings
    from leadstream.models.evaluate import tune

    listings, events = stream
    defaults = {k: v for k, v in ModelSuite()._get_params().items() if k.startswith("w_")}
    assert Settings().hybrid_weights() == defaults  # the worker runs what evaluate measures
    r = tune(events[:2500], listings, rounds=1)
    assert r["trials"][0] == {**defaults, "hr@10": r["trials"][0]["hr@10"]}
    assert len(r["trials"]) == 1 + sum(len(v) - 1 for v in
                                       __import__("leadstream.models.evaluate").models.evaluate.TUNE_GRID.values())
    assert r["hr@10"] == max(t["hr@10"] for t in r["trials"])


def test_lead_scorer_switches_from_the_heuristic_once_both_outcomes_are_learned():
    from leadstream.models.scoring import LeadScorer

    s = LeadScorer(min_labels=20)
    hot = {"engagement_7d": 30.0, "saves_7d": 3.0, "bookings_lifetime": 1.0,
           "offers_lifetime": 1.0, "recency_hours": 2.0}
    cold = {"engagement_7d": 1.0, "recency_hours": 300.0}
    for _ in range(15):
        s.learn_one(hot, True)
    assert s.score(hot).model == "heuristic-1"  # one class only: not trained yet
    for _ in range(15):
        s.learn_one(cold, False)
    assert s.trained and s.score(hot).model == "river-logreg-30"
    assert s.score(hot).score > 70 > 40 > s.score(cold).score
    assert s.score(hot).tier == "hot" and s.score(cold).tier == "cold"
    assert pickle.loads(pickle.dumps(s)).score(hot).score == s.score(hot).score


def test_evaluate_reports_lead_score_quality_of_both_scorers(stream):
    listings, events = stream
    r = evaluate(events, listings)
    ls = r["lead_scores"]
    assert ls["labels"] > 10 and 0 < ls["converted"] < ls["labels"]
    for name in ("heuristic", "online"):
        assert ls[name]["log_loss"] > 0 and 0 <= ls[name]["auc"] <= 1


def _mf_stream(mf, n_events=3000, seed=0):
    """Two groups of leads, each engaging with its own half of 40 listings."""
    rng = np.random.default_rng(seed)
    ids = [f"P{i}" for i in range(40)]
    pool = np.arange(40)
    for _ in range(n_events):
        g = int(rng.integers(2))
        lead = f"G{g}-{int(rng.integers(30))}"
        row = int(rng.integers(20)) + 20 * g
        mf.learn_one(lead, row, ids[row], float(rng.choice([1.0, 3.0, -1.5], p=[.6, .3, .1])),
                     pool, ids)
    return mf


def test_mf_learns_what_leads_alike_engage_with():
    mf = _mf_stream(CollaborativeModel(n_factors=8, negatives=8, seed=1))
    for g in (0, 1):
        s = mf.scores(f"G{g}-3", 40)
        own, other = s[20 * g: 20 * g + 20], s[20 * (1 - g): 20 * (1 - g) + 20]
        assert own.min() > other.max(), (g, own.min(), other.max())


def test_mf_pickle_round_trip_continues_identically_and_forget_drops_the_lead():
    a = _mf_stream(CollaborativeModel(n_factors=8, negatives=4, seed=2), n_events=1500)
    b = pickle.loads(pickle.dumps(a))
    _mf_stream(a, n_events=500, seed=9)
    _mf_stream(b, n_events=500, seed=9)
    assert np.array_equal(a.scores("G0-1", 40), b.scores("G0-1", 40))
    assert a.lead_support == b.lead_support and a.t == b.t
    other = a.scores("G1-2", 40).copy()
    a.forget("G0-1")
    assert a.scores("G0-1", 40) is None and "G0-1" not in a.P and "G0-1" not in a.lead_support
    assert np.array_equal(a.scores("G1-2", 40), other)
    c = _mf_stream(CollaborativeModel(n_factors=8, negatives=4, seed=3), n_events=1500)
    assert not np.allclose(c.scores("G0-1", 40), b.scores("G0-1", 40)[:40])


def test_recommend_many_ranks_each_lead_as_recommend_does():
    """The step ranks every lead due a list in one pass: each result must be the list
    ``recommend`` gives that lead alone (items, scores, reasons, confidence)."""
    from datetime import UTC, datetime, timedelta

    from leadstream.bench.common import simulated_step
    from leadstream.simulate import SimConfig, Simulator
    from leadstream.streams.step import LeadStore, replay

    sim = Simulator(SimConfig(leads=60, properties=150, days=1.0, seed=11,
                              start=datetime.now(UTC) - timedelta(days=3)))
    step, records = simulated_step(sim)
    store = LeadStore()
    for _ in replay(step, records, store, batch=200):
        pass
    m, cat = step.models, step.catalog
    reqs = [(k.decode(), store.get(k).profile, "hybrid", None) for k in store.packed]
    reqs += [(reqs[0][0], reqs[0][1], "popularity", None),
             (reqs[1][0], reqs[1][1], "hybrid", {"w_content": 0.0})]
    many = m.recommend_many(cat, reqs, k=10)
    assert len(many) == len(reqs) > 12  # a dozen leads or more, ranked together
    for (lead_id, profile, model, over), got in zip(reqs, many, strict=True):
        want = m.recommend(cat, lead_id, profile, k=10, model=model, overrides=over)
        assert got == want, lead_id


def test_searches_and_map_views_feed_the_content_profile():
    """Issue 18 item 5: what a lead searched for and where it looked on the map move its
    content scores before it engaged with any listing."""
    from datetime import UTC, datetime

    import orjson

    from leadstream.contract.events import make_event, parse_listing
    from leadstream.features.profile import LeadProfile
    from leadstream.models.catalog import Catalog
    from leadstream.models.suite import ModelSuite

    cat, suite = Catalog(), ModelSuite(seed=3)
    rows = {}
    for pid, city, lat, lon, ptype, beds in [("A", "Austin", 30.27, -97.74, "condo", 2),
                                             ("D", "Denver", 39.74, -104.99, "house", 4)]:
        row = cat.upsert(parse_listing(orjson.dumps({
            "property_id": pid, "status": "active", "price": 400000, "bedrooms": beds,
            "bathrooms": 1, "property_type": ptype, "city": city, "latitude": lat,
            "longitude": lon})))
        suite.on_listing(cat, row, {"description": ""})
        rows[pid] = row
    t = datetime(2026, 3, 1, tzinfo=UTC)
    search = make_event("search_performed", event_id="s", lead_id="Q", session_id="x",
                        timestamp=t, payload={"query": "2 bed condo austin",
                                              "result_count": 3})
    area = make_event("map_area_viewed", event_id="m", lead_id="M", session_id="x",
                      timestamp=t, payload={"bbox": {"min_lat": 39.5, "min_lon": -105.2,
                                                     "max_lat": 39.9, "max_lon": -104.8}})
    for ev in (search, area):
        assert suite.content.scores(ev.lead_id, len(cat)) is None  # nothing known yet
        suite.learn_one(cat, ev.lead_id, LeadProfile(), ev)
    q = suite.content.scores("Q", len(cat))
    m = suite.content.scores("M", len(cat))
    assert q[rows["A"]] > q[rows["D"]]  # the searched type, city and bedrooms
    assert m[rows["D"]] > m[rows["A"]]  # the area looked at
    # a map area with no listing in it, or a query naming nothing, changes nothing
    empty = make_event("map_area_viewed", event_id="e", lead_id="E", session_id="x",
                       timestamp=t, payload={"bbox": {"min_lat": 0, "min_lon": 0,
                                                      "max_lat": 1, "max_lon": 1}})
    suite.learn_one(cat, "E", LeadProfile(), empty)
    assert suite.content.scores("E", len(cat)) is None


def test_item_neighbours_stay_bounded_and_a_newcomer_can_still_enter_a_full_list():
    """A listing keeps at most ``max_neighbours`` plus a quarter; a neighbour that keeps
    co-occurring enters a full list (dropping the weakest at once, as before, left it out
    for good: each new co-occurrence was the weakest and was dropped)."""
    m = ItemItemModel(max_neighbours=8)
    for j in range(1, 9):  # row 0's list full: 8 neighbours of weight 2
        for _ in range(2):
            m.learn_one([(0, 1.0)], j, 1.0)
    for _ in range(6):  # a newcomer co-occurs six times with the full row 0
        m.learn_one([(0, 1.0)], 100, 1.0)
    for j in range(200, 230):  # then many one-off neighbours (each weight 1)
        m.learn_one([(0, 1.0)], j, 1.0)
        assert len(m.co[0]) <= 10
    assert m.co[0].get(100) == 6.0
    assert len(set(range(1, 9)) & set(m.co[0])) == 7  # the strongest 8: it and 7 of them
