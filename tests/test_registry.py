"""The model-component registry (issue 17 item 3): the settings agree with it, snapshots
of the suite before it still load and rank the same, and adding a component is one
module plus its line in ``models/registry.py`` (docs/components.md's worked example,
added to a copy of the tree and run)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from leadstream.contract.settings import Settings
from leadstream.models import registry
from leadstream.models.snapshot import SnapshotStore
from leadstream.models.suite import MODELS, ModelSuite

REPO = Path(__file__).resolve().parents[1]
BEFORE_REGISTRY = "d867b49"  # the last commit whose ModelSuite held its models as attributes


def test_settings_declare_one_weight_per_shipped_component_with_its_default():
    fields = {name: f.default for name, f in Settings.model_fields.items()
              if name.startswith("hybrid_w_")}
    assert fields == {f"hybrid_{w}": d for w, d in registry.WEIGHTS.items()}
    assert Settings().hybrid_weights() == registry.WEIGHTS == ModelSuite().weights
    assert MODELS == (*registry.NAMES, "hybrid")
    with pytest.raises(TypeError, match="unknown hybrid weight"):
        ModelSuite(w_typo=1.0)


def test_a_weight_without_a_field_is_read_from_the_environment_and_the_file(
        monkeypatch, tmp_path):
    monkeypatch.setenv("LEADSTREAM_HYBRID_W_RECENCY", "0.8")
    monkeypatch.setenv("LEADSTREAM_HYBRID_W_MF", "3")
    assert Settings().hybrid_weights() == {**registry.WEIGHTS, "w_mf": 3.0, "w_recency": 0.8}
    assert Settings(hybrid_w_recency=0.1).hybrid_weights()["w_recency"] == 0.1  # kwargs win
    monkeypatch.delenv("LEADSTREAM_HYBRID_W_RECENCY")
    f = tmp_path / "leadstream.toml"
    f.write_text("hybrid_w_recency = 0.4\nhybrid_w_content = 1.5\n")
    monkeypatch.setenv("LEADSTREAM_CONFIG", str(f))
    w = Settings().hybrid_weights()
    assert (w["w_recency"], w["w_content"], w["w_mf"]) == (0.4, 1.5, 3.0)


# Run in a subprocess, by the code before the registry ("old") or this tree ("new"): replay
# the first events, snapshot (old), or load that snapshot (new); replay the rest; print
# the lists of a few leads after each part.
_SNAPSHOT_SCRIPT = r"""
import json, pickle, sys
from pathlib import Path
from leadstream.features.profile import LeadProfile, update
from leadstream.models.catalog import Catalog
from leadstream.models.evaluate import load_catalog, load_events
from leadstream.models.snapshot import SnapshotStore
from leadstream.models.suite import ModelSuite

mode, d = sys.argv[1], Path(sys.argv[2])
if len(sys.argv) > 3:  # learn with the model parameters the old snapshot was learnt with
    import inspect
    from leadstream.models import collaborative, itemitem
    for cls, given in ((collaborative.CollaborativeModel, {"pop_negatives": 0.5, "lead_lr": 2.0}),
                       (itemitem.ItemItemModel, {"max_neighbours": 64})):
        params = list(inspect.signature(cls.__init__).parameters.values())[1:]
        cls.__init__.__defaults__ = tuple(given.get(q.name, q.default) for q in params)
events, _ = load_events((d / "events.jsonl").read_bytes().splitlines())
half = len(events) // 2
if mode == "old":  # (with the old defaults: the weight the old snapshot was saved with)
    weights = {"w_mf": 1.0} if len(sys.argv) > 3 else {}
    suite, cat, profiles = ModelSuite(seed=5, **weights), Catalog(), {}
    load_catalog((d / "catalog.jsonl").read_bytes().splitlines(), suite, cat)
else:
    suite, ids, _ = SnapshotStore(d / "snap").load()
    cat, profiles = pickle.loads((d / "state.pkl").read_bytes())
    assert cat.ids[: len(ids)] == ids


def replay(evs):
    for ev in evs:
        p = profiles.setdefault(ev.lead_id, LeadProfile())
        suite.learn_one(cat, ev.lead_id, p, ev)
        update(p, ev, cat.attributes(ev.property_id) if ev.property_id else None)


def lists():
    out = []
    for lead in sorted(profiles)[::4]:
        for m in ("hybrid", "mf", "content", "itemitem", "popularity", "recent_popularity"):
            r = suite.recommend(cat, lead, profiles[lead], k=10, model=m)
            out.append([lead, m, r.items, r.confidence, r.explanation])
    return out


if mode == "old":
    replay(events[:half])
    SnapshotStore(d / "snap").save(suite, cat.ids, {"events_learned": suite.events_learned})
    (d / "state.pkl").write_bytes(pickle.dumps((cat, profiles)))
first = lists()
replay(events[half:])
print(json.dumps({"first": first, "then": lists(), "learned": suite.events_learned,
                  "type": type(suite.__dict__.get("components")).__name__}))
"""


def _stream(d: Path, leads: int = 60, days: float = 2.0) -> None:
    from datetime import UTC, datetime

    from leadstream.simulate import SimConfig, Simulator

    sim = Simulator(SimConfig(leads=leads, properties=150, days=days, seed=4,
                              start=datetime(2026, 3, 1, tzinfo=UTC)))
    with open(d / "events.jsonl", "wb") as ev, open(d / "catalog.jsonl", "wb") as cat:
        for rec in sim.records():
            (cat if rec.topic == "properties" else ev).write(rec.value + b"\n")


def _run(root: Path, *args: str, env: dict | None = None) -> dict:
    out = subprocess.run([sys.executable, "-c", *args], capture_output=True, text=True,
                         cwd=root, timeout=300,
                         env={**os.environ, "PYTHONPATH": str(root), **(env or {})})
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_a_snapshot_pickled_before_the_registry_loads_and_ranks_as_before(tmp_path):
    """The code of the last commit before the registry learns half a stream, snapshots and
    ranks; this tree loads that snapshot, ranks the same lists, learns the other half and
    ranks what the old code ranks after it."""
    old = tmp_path / "old"
    old.mkdir()
    try:
        tar = subprocess.run(["git", "-C", str(REPO), "archive", BEFORE_REGISTRY, "leadstream",
                              "features", "models", "streams/__init__.py", "pyproject.toml"],
                             capture_output=True, check=True, timeout=60).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip(f"no git history with {BEFORE_REGISTRY} (not a clone)")
    subprocess.run(["tar", "-x", "-C", str(old)], input=tar, check=True)
    _stream(tmp_path)
    before = _run(old, _SNAPSHOT_SCRIPT, "old", str(tmp_path))
    assert before["type"] == "NoneType"  # the old suite: no components
    after = _run(REPO, _SNAPSHOT_SCRIPT, "new", str(tmp_path))
    assert after["type"] == "dict"

    def components_only(lists):
        return [row for row in lists if row[1] != "hybrid"]

    # every component ranks as the old code; the hybrid's blend changed since (each
    # component standardised over its own head), so it ranks as this tree does when it
    # learned the same events itself
    for half in ("first", "then"):
        assert components_only(after[half]) == components_only(before[half])
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    for name in ("events.jsonl", "catalog.jsonl"):
        (fresh / name).write_bytes((tmp_path / name).read_bytes())
    # (a snapshot keeps the parameters its models were learnt with: the defaults of the
    # matrix factorisation and item-to-item moved since, 2026-12-02)
    same = _run(REPO, _SNAPSHOT_SCRIPT, "old", str(fresh), "old-model-defaults")
    assert after["first"] == same["first"] and after["then"] == same["then"]
    assert after["learned"] == before["learned"] > 1000
    assert any(it for _, m, items, _, _ in after["then"] if m == "hybrid" for it in items)


# Run in a subprocess by a copy of this tree with docs/components.md's Recency added.
_RECENCY_SCRIPT = r"""
import json, os, sys
from pathlib import Path
from leadstream.contract.settings import Settings
from leadstream.features.profile import LeadProfile, update
from leadstream.models import registry
from leadstream.models.catalog import Catalog
from leadstream.models.evaluate import TUNE_GRID, evaluate, load_catalog, load_events
from leadstream.models.experiments import Arm
from leadstream.models.snapshot import SnapshotStore
from leadstream.models.suite import MODELS, ModelSuite

d = Path(sys.argv[1])
out = {"names": registry.NAMES, "models": MODELS, "grid": TUNE_GRID["w_recency"]}
out["settings"] = Settings().hybrid_weights()  # LEADSTREAM_HYBRID_W_RECENCY is set
suite = ModelSuite(seed=1, **Settings().hybrid_weights())
out["suite_weight"] = suite.weights["w_recency"]
del os.environ["LEADSTREAM_HYBRID_W_RECENCY"]
out["default_weight"] = ModelSuite(**Settings().hybrid_weights()).weights["w_recency"]
Arm(name="a", share=1.0, model="recency")
Arm(name="b", share=1.0, params={"w_recency": 2.0})

events, _ = load_events((d / "events.jsonl").read_bytes().splitlines())
listings = (d / "catalog.jsonl").read_bytes().splitlines()
r = evaluate(events, listings)
out["figures"] = {m: r["models"][m]["prequential"] for m in MODELS}

cat, profiles = Catalog(), {}
load_catalog(listings, suite, cat)
for ev in events:
    p = profiles.setdefault(ev.lead_id, LeadProfile())
    suite.learn_one(cat, ev.lead_id, p, ev)
    update(p, ev, cat.attributes(ev.property_id) if ev.property_id else None)
lead = max(profiles, key=lambda k: profiles[k].n_positive)
mask = suite.candidate_mask(cat, profiles[lead])
out["parts"] = sorted(suite.hybrid_parts(cat, lead, profiles[lead], mask))
ids = lambda r: [it["property_id"] for it in r.items]
heavy = suite.recommend(cat, lead, profiles[lead], overrides={"w_recency": 20.0})
out["heavy"] = ids(heavy)
out["none"] = ids(suite.recommend(cat, lead, profiles[lead], overrides={"w_recency": 0.0}))
out["reasons"] = [it["reason"] for it in heavy.items]
many = suite.recommend_many(cat, [(lead, profiles[lead], "hybrid", {"w_recency": 20.0})])
out["many_equal"] = many[0] == heavy

old, _, _ = SnapshotStore(d / "snap").load()  # saved by the tree without Recency
out["old_empty"] = len(old.components["recency"].last) == 0
out["old_ranks"] = len(old.recommend(cat, lead, profiles[lead]).items)
print(json.dumps(out))
"""


def _copy_tree(dst: Path) -> None:
    """A checkout of this tree that a subprocess imports as ``leadstream``: the package and
    ``models/`` copied (to be edited), the other top-level folders linked."""
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in ("leadstream", "models"):
        shutil.copytree(REPO / name, dst / name, ignore=ignore)
    for name in ("features", "streams", "ops"):
        (dst / name).symlink_to(REPO / name, target_is_directory=True)
    shutil.copy(REPO / "pyproject.toml", dst / "pyproject.toml")


def test_a_new_component_is_one_module_and_one_line_in_the_registry(tmp_path):
    """docs/components.md's Recency, added as written: ranked in the hybrid and explained,
    a settings weight, evaluate's figures and tune grid, an experiment arm's model and
    weight; a snapshot saved without it loads with it empty."""
    doc = (REPO / "docs" / "components.md").read_text()
    module, registry_lines = re.findall(r"```python\n(.*?)```", doc, re.S)[:2]
    tree = tmp_path / "tree"
    _copy_tree(tree)
    (tree / "models" / "components" / "recency.py").write_text(module)
    reg = tree / "models" / "registry.py"
    text = original = reg.read_text()
    imp = next(ln for ln in registry_lines.splitlines() if ln.startswith("from "))
    text = text.replace("from leadstream.models.components.popularity import",
                        f"{imp}\nfrom leadstream.models.components.popularity import", 1)
    last = "    Ease,\n)"
    text = text.replace(last, last[:-1] + "    Recency,\n)", 1)
    reg.write_text(text)
    added = [ln for ln in text.splitlines() if ln not in original.splitlines()]
    assert added == [imp, "    Recency,"]  # the import and the line in COMPONENTS
    _stream(tmp_path, leads=40, days=1.5)
    SnapshotStore(tmp_path / "snap").save(ModelSuite(seed=2), [])  # this tree's, without it

    got = _run(tree, _RECENCY_SCRIPT, str(tmp_path), env={"LEADSTREAM_HYBRID_W_RECENCY": "0.8"})
    assert got["names"][-1] == "recency" and got["models"][-2:] == ["recency", "hybrid"]
    assert got["settings"]["w_recency"] == got["suite_weight"] == 0.8
    assert got["default_weight"] == 0.5 and got["grid"] == [0.25, 0.5, 1.0]
    assert set(got["figures"]) == set(got["models"])
    assert got["figures"]["recency"]["evaluated"] == got["figures"]["hybrid"]["evaluated"] > 100
    assert "recency" in got["parts"]
    assert got["heavy"] != got["none"]  # its weight moves the hybrid's list
    assert any("engaged with recently" in r for r in got["reasons"])
    assert got["many_equal"]
    assert got["old_empty"] and got["old_ranks"] == 10
