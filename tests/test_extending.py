"""Extending leadstream as the README's development section says: adding an event type is
one row (and its payload model) in ``leadstream/contract/events.py``; adding a feature
slot is a line in ``features/lead.py``; the stored leads of the code before read back
with their counts intact.

The test copies the package to a temporary directory, applies exactly those edits there,
records the new slot layout with ``leadstream features --catalog --write``, and reads
lead states stored by the code of this checkout with the edited copy, in a subprocess."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import orjson

from leadstream.contract.events import parse_event
from leadstream.features import lead as F
from leadstream.simulate import SimConfig, Simulator

REPO = Path(__file__).resolve().parents[1]
NEW_TYPE = "virtual_tour_started"

# the edits a developer makes, as (file, anchor, text inserted after the anchor)
EDITS = [
    ("leadstream/contract/events.py",
     '       "a listing was viewed", weight=1.0),\n',
     f'    _T("{NEW_TYPE}", _PropertyEvent, EmptyPayload, False, "browsing",\n'
     '       "a 3D tour of a listing was opened", weight=1.5),\n'),
    ("features/lead.py",
     'L.add("m_et", len(EVENT_NAMES), EVENT_NAMES)\n',
     'L.add("m_tours")\n'),
    ("features/lead.py",
     "    v[L.m_et + ei] += g30\n",
     f'    if et == "{NEW_TYPE}":\n        v[L.m_tours] += g30\n'),
]

READ_BACK = """
import json, sys
from datetime import datetime
from leadstream.contract.events import make_event
from leadstream.features import lead as F
NEW_TYPE = sys.argv[1]
blobs = [bytes.fromhex(h) for h in json.load(sys.stdin)]
out = {"version": F.LAYOUT_VERSION, "leads": []}
for blob in blobs:
    s = F.decode(blob)
    out["leads"].append({"events": s.event_count, "offset": s.last_offset,
                         "counts": {n: s.v[F.L.life_et + i] for i, n in enumerate(F.EVENT_NAMES)},
                         "tours": s.v[F.L.m_tours],
                         "features": F.compute(s).numerical})
s = F.decode(blobs[0])
ts = datetime.fromtimestamp(s.v[F.L.watermark] + 60).astimezone()
ev = make_event(NEW_TYPE, event_id="tour-1", lead_id="L", session_id="s-tour", timestamp=ts,
                property_id="P000001")
assert F.update(s, ev, None, now=ts.timestamp()) == "applied"
s = F.decode(F.encode(s))
out["after"] = {"events": s.event_count, "new": s.v[F.L.life_et + F.EVENT_NAMES.index(NEW_TYPE)],
                "tours": s.v[F.L.m_tours]}
# the whole step takes the new type: validated, applied, learned from, a list published
from leadstream.contract.settings import Settings
from leadstream.streams.step import LeadStore, Record, Step
step = Step(Settings(), n_partitions=1)
step.load_listing(b'{"property_id":"P000001","status":"active","price":300000,'
                  b'"bedrooms":2,"bathrooms":1,"property_type":"condo","city":"Austin"}',
                  b"P000001")
raw = ('{"event_id":"t1","lead_id":"L9","event_type":"%s","session_id":"s",'
       '"property_id":"P000001","timestamp":"%s"}' % (NEW_TYPE, ts.isoformat())).encode()
res = step.run(0, [Record(b"L9", raw, offset=0)], LeadStore())
out["step"] = sorted(o.kind for o in res.outputs)
print(json.dumps(out))
"""


def _stored_leads() -> tuple[list[bytes], list[F.LeadFeatures]]:
    sim = Simulator(SimConfig(leads=12, properties=40, days=2, seed=3,
                              start=datetime(2026, 3, 1, tzinfo=UTC)))
    listings, states = {}, {}
    for r in sim.records():
        if r.topic == "properties":
            listings[r.key.decode()] = orjson.loads(r.value)
            continue
        ev = parse_event(r.value)
        s = states.setdefault(ev.lead_id, F.LeadFeatures())
        F.update(s, ev, listings.get(ev.property_id or ""), now=r.ts)
    leads = sorted(states.values(), key=lambda s: -s.event_count)[:6]
    return [F.encode(s) for s in leads], leads


def _edited_copy(tmp: Path) -> Path:
    src = tmp / "src"
    for part in ("leadstream", "features", "models", "streams", "ops", "schemas"):
        shutil.copytree(REPO / part, src / part, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "topics.yaml"):
        shutil.copy(REPO / name, src / name)
    for rel, anchor, text in EDITS:
        path = src / rel
        code = path.read_text()
        assert code.count(anchor) == 1, f"{rel}: the anchor moved: {anchor!r}"
        path.write_text(code.replace(anchor, anchor + text))
    return src


def _python(src: Path, code: str, stdin: str = "", *args: str) -> str:
    env = dict(os.environ, PYTHONPATH=str(src))
    proc = subprocess.run([sys.executable, "-c", code, *args], input=stdin, capture_output=True,
                          text=True, cwd=src, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_leads_stored_before_an_event_type_and_a_feature_were_added_read_back_intact(tmp_path):
    blobs, before = _stored_leads()
    assert all(s.event_count > 5 for s in before)
    src = _edited_copy(tmp_path)
    # the generated files, as the README says: the new slot layout is recorded
    wrote = _python(src, "from leadstream.cli import main; main()", "",
                    "features", "--catalog", "--write")
    assert "features/layouts.json (feature slot layout 2)" in wrote
    got = json.loads(_python(src, READ_BACK, json.dumps([b.hex() for b in blobs]),
                           NEW_TYPE))

    assert got["version"] == F.LAYOUT_VERSION + 1
    for s, g in zip(before, got["leads"], strict=True):
        assert (g["events"], g["offset"]) == (s.event_count, s.last_offset)
        old_counts = {n: s.v[F.L.life_et + i] for i, n in enumerate(F.EVENT_NAMES)}
        assert {n: c for n, c in g["counts"].items() if n != NEW_TYPE} == old_counts
        assert g["counts"][NEW_TYPE] == 0 and g["tours"] == 0
        # every feature of the code before comes back the same
        assert g["features"] == F.compute(s).numerical
    after = got["after"]
    assert (after["events"], after["new"]) == (before[0].event_count + 1, 1.0)
    assert after["tours"] > 0
    assert got["step"] == ["recommendation", "score"]  # no dead letter


def test_the_slot_layout_of_this_code_is_recorded():
    """A state written by this code names its layout; the layout must be in
    ``features/layouts.json`` for a later version to migrate it."""
    from leadstream.features.layout import LayoutHistory

    recorded = LayoutHistory.load().version_of(F.L.names)
    assert recorded == F.LAYOUT_VERSION, (
        "the feature slots changed: run `leadstream features --catalog --write` to record "
        "the new layout in features/layouts.json")


def test_a_state_of_the_format_before_layout_versions_reads_as_layout_one():
    s = F.LeadFeatures()
    s.event_count, s.v[F.L.life_et] = 3, 3.0
    blob = F.encode(s)
    lf3 = b"LF3" + blob[3:3 + F._HEADER.size] + blob[3 + F._HEADER.size + 2:]
    assert F.decode(lf3) == F.decode(blob) == s
