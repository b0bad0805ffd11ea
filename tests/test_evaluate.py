"""``leadstream evaluate`` on any data set: history of any year, invalid lines by reason, no
valid line an error, the research protocol (targets, seen listings excluded) and River's
references replayed beside our models."""

from __future__ import annotations

import json

import numpy as np
import orjson
import pytest

from leadstream import cli
from leadstream.models.evaluate import NoEvents, evaluate, load_events
from leadstream.models.references import REFERENCES, RiverReference
from leadstream.models.suite import MODELS
from leadstream.simulate import SimConfig, Simulator, one_per_listing


def _quality(r: dict) -> dict:
    """The figures of a result without its timings."""
    return {k: _quality(v) if isinstance(v, dict) else v for k, v in r.items()
            if k != "events_per_second"}


SMALL_REFS = {name: {**p, "n_factors": 8, "negatives": 4} for name, p in REFERENCES.items()}


def _ev(i: int, lead: str, etype: str, pid: str | None, year: int = 1997) -> bytes:
    body = {"event_id": f"e{i}", "lead_id": lead, "event_type": etype, "session_id": "s",
            "timestamp": f"{year}-09-{1 + i // 1440 % 28:02d}T{i // 60 % 24:02d}:{i % 60:02d}:00Z"}
    if pid is not None:
        body["property_id"] = pid
    if etype == "property_viewed":
        body["payload"] = {"duration_seconds": 20.0}
    return orjson.dumps(body)


@pytest.fixture(scope="module")
def first_touch():
    """A simulated stream in the shape of rating data sets, moved back to 1997."""
    sim = Simulator(SimConfig(leads=80, properties=150, days=4, seed=5))
    lines = one_per_listing([r.value for r in sim.records() if r.topic == "interactions"])
    out = []
    for raw in lines:
        d = orjson.loads(raw)
        d["timestamp"] = "1997" + d["timestamp"][4:]
        out.append(orjson.dumps(d))
    return out


def test_any_year_is_accepted_and_invalid_lines_are_counted_by_reason(first_touch):
    why: dict = {}
    events, bad = load_events([*first_touch, b"{oops", b'{"event_id": 1}', b"[]"], why)
    assert len(events) == len(first_touch) and events[0].timestamp.year == 1997
    assert bad == 3 and why == {"not_json": 1, "schema": 1, "not_an_object": 1}


def test_no_valid_line_is_one_error_line_and_exit_2(tmp_path, capsys):
    path = tmp_path / "bad.jsonl"
    path.write_bytes(b"{oops\n[]\n")
    assert cli.main(["evaluate", "--events", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "no valid event" in err and "not_json 1" in err
    with pytest.raises(NoEvents):
        evaluate([])


def test_targets_choose_what_is_scored_and_seen_listings_are_left_out():
    lines = [_ev(0, "L1", "property_viewed", "A"), _ev(1, "L1", "property_saved", "A"),
             _ev(2, "L2", "property_viewed", "B"), _ev(3, "L2", "property_saved", "A"),
             _ev(4, "L3", "property_saved", "A"), _ev(5, "L3", "property_viewed", "C"),
             _ev(6, "L1", "property_saved", "B")]
    events, _ = load_events(lines)
    every = evaluate(events, models=("popularity",))
    saves = evaluate(events, models=("popularity",), targets=["property_saved"])
    strict = evaluate(events, models=("popularity",), targets=["property_saved"],
                      exclude_seen=True, protocols=("prequential", "leave-last-out"))
    assert every["models"]["popularity"]["prequential"]["evaluated"] == 7
    assert saves["models"]["popularity"]["prequential"]["evaluated"] == 4
    pop = strict["models"]["popularity"]
    # L1's save of A came after its view of A: left out; L2 and L3 save A first, L1 B first
    assert pop["prequential"]["evaluated"] == 3
    assert strict["not_scored"]["prequential"] == {"seen_before": 1}
    # held out: each lead's last save of a listing it had not seen (L1: B, L2: A, L3: A)
    assert pop["leave_last_out"]["evaluated"] == 3
    assert strict["protocol"] == {"targets": ["property_saved"], "exclude_seen": True}


def test_exclude_seen_never_ranks_a_listing_the_lead_interacted_with(monkeypatch):
    from leadstream.models import evaluate as E

    # lead k views P(k) and P(k+1), then saves P(k+3) and P(k+5)
    lines = [_ev(i, f"L{i % 5}", "property_viewed", f"P{i % 5 + i // 5 % 2}") for i in range(40)]
    lines += [_ev(40 + i, f"L{i % 5}", "property_saved", f"P{i % 5 + 3 + i // 5 * 2}")
              for i in range(10)]
    events, _ = load_events(lines)
    seen_now, ranked = [set()], []  # (candidates, listings seen) of every ranking
    real = E._Run.score_one

    def spy(self, lead_id, lead, pid):
        seen_now[0] = set(self.seen.get(lead_id, ()))
        real(self, lead_id, lead, pid)

    def spy_scores(self, cat, lead_id, lead, mask, names):
        ranked.append(({cat.ids[i] for i in mask.nonzero()[0]}, seen_now[0]))
        return orig(self, cat, lead_id, lead, mask, names)

    orig = E.ModelSuite.all_scores
    monkeypatch.setattr(E._Run, "score_one", spy)
    monkeypatch.setattr(E.ModelSuite, "all_scores", spy_scores)
    evaluate(events, models=("popularity",), targets=["property_saved"], exclude_seen=True)
    assert len(ranked) >= 5 and all(seen for _, seen in ranked)
    assert all(cands and not (cands & seen) for cands, seen in ranked), ranked


def test_river_references_are_reported_beside_the_models_and_same_seed_same_figures(
        first_touch):
    events, _ = load_events(first_touch)
    kw = {"targets": ["property_saved"], "exclude_seen": True, "references": SMALL_REFS,
          "protocols": ("prequential", "leave-last-out")}
    ticks: list[int] = []
    a = evaluate(events, progress=ticks.append, **kw)
    b = evaluate(events, **kw)
    assert _quality(a) == _quality(b)
    assert set(a["models"]) == set(MODELS)  # today's shape, references beside it
    for name, params in SMALL_REFS.items():
        ref = a["references"][name]
        assert ref["settings"]["n_factors"] == 8 and ref["settings"]["negatives"] == 4
        assert ref["settings"]["model"] == RiverReference(**params).settings()["model"]
        assert ref["prequential"]["evaluated"] == a["models"]["mf"]["prequential"]["evaluated"]
        assert ref["leave_last_out"]["evaluated"] > 20 and 0 <= ref["coverage"] <= 1
    assert ticks[-1] == 2 * len(events) and ticks == sorted(ticks)
    c = evaluate(events, seed=7, **kw)
    assert _quality(c["references"]["river_funkmf"]) != _quality(a["references"][
        "river_funkmf"])


def test_cli_json_keeps_its_keys_and_adds_references(first_touch, tmp_path, capsys):
    path = tmp_path / "ev.jsonl"
    path.write_bytes(b"\n".join(first_touch[:1500]) + b"\n{oops\n")
    assert cli.main(["evaluate", "--events", str(path), "--json", "--targets",
                     "property_saved", "--exclude-seen", "--protocol", "both"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert {"events", "k", "models", "invalid_lines", "seconds"} <= set(r)
    assert r["invalid_lines"] == 1 and r["invalid_reasons"] == {"not_json": 1}
    assert set(r["references"]) == {"river_funkmf", "river_biasedmf"}
    assert set(r["models"]["mf"]) >= {"prequential", "leave_last_out", "coverage",
                                      "events_per_second"}
    assert cli.main(["evaluate", "--events", str(path), "--targets", "property_sav"]) == 2


def test_bench_mf_replays_the_research_protocol_of_evaluate(first_touch):
    from leadstream.bench.mf import parse_variant, replay

    events, _ = load_events(first_touch)
    r = evaluate(events, models=("mf",), targets=["property_saved"], exclude_seen=True,
                 protocols=("prequential", "leave-last-out"))["models"]["mf"]
    for protocol in ("prequential", "leave-last-out"):
        a = replay(events, parse_variant("negatives=8"), protocol)
        b = replay(events, parse_variant("negatives=8"), protocol)
        assert a["hr@10"] == b["hr@10"] and a["learn_us_p50"] > 0
        assert a["evaluated"] == r[protocol.replace("-", "_")]["evaluated"]
    assert parse_variant("default")._get_params() == parse_variant("")._get_params()


def test_tune_half_chooses_weights_on_the_first_half_and_reports_the_second(first_touch):
    from leadstream.models.evaluate import TUNE_GRID, tune, tune_split

    events, _ = load_events(first_touch)
    kw = {"targets": ["property_saved"], "exclude_seen": True}
    r = tune_split(events, None, references=SMALL_REFS, **kw)
    assert r["scored_from_event"] == len(events) // 2
    first = tune(events[: len(events) // 2], None, rounds=1, **kw)
    assert r["tuned"]["weights"] == first["best"] and set(first["best"]) == set(TUNE_GRID)
    whole = evaluate(events, **kw, protocols=("prequential", "leave-last-out"))
    for m in ("mf", "hybrid"):
        second = r["models"][m]["prequential"]["evaluated"]
        assert 0 < second < whole["models"][m]["prequential"]["evaluated"]
    assert r["references"]["river_funkmf"]["leave_last_out"]["evaluated"] == r["models"][
        "mf"]["leave_last_out"]["evaluated"]
    assert set(r["tuned"]["default_weights"]) >= {"prequential", "leave_last_out"}


def test_a_model_whose_scores_diverged_to_nan_scores_no_hit():
    """``bench mf``: a NaN score compares false with everything, so a diverged model once
    looked perfect (every target "ranked first", HR@10 0.99 in leave-last-out); a NaN
    target score is a miss."""
    from leadstream.bench.mf import replay
    from leadstream.models.evaluate import load_events

    class Diverged:
        def learn_one(self, *args):
            pass

        def scores(self, lead, n):
            return np.full(n, np.nan)

    lines = [orjson.dumps({"event_id": f"e{i}", "event_type": "property_saved",
                           "lead_id": f"L{i % 3}", "property_id": f"P{i % 7}",
                           "session_id": f"s{i % 3}",
                           "timestamp": f"2026-03-01T00:{i:02d}:00Z"}) for i in range(40)]
    events, _ = load_events(lines)
    for protocol in ("prequential", "leave-last-out"):
        r = replay(events, Diverged(), protocol)
        assert r["evaluated"] > 0 and r["hr@10"] == 0.0
