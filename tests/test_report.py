"""``leadstream evaluate --report FILE.html``: one self-contained page whose charts draw one
series per model (references included) and whose tables hold the ``--json`` figures of
the same run."""

from __future__ import annotations

import json
from html.parser import HTMLParser

import pytest

from leadstream import cli
from leadstream.cli.evaluate import REPORT_POINTS
from leadstream.models.evaluate import Downsampled
from leadstream.models.references import REFERENCES
from leadstream.models.report import render
from leadstream.simulate import SimConfig, Simulator


class Page(HTMLParser):
    """The figures (by id) with the ids of the groups inside each, the table cells by
    row, and whatever could load something from elsewhere."""

    def __init__(self):
        super().__init__()
        self.figures: dict[str, list[str]] = {}
        self.rows: dict[str, list[dict]] = {}
        self.external: list = []
        self._figure = self._table = self._row = self._key = None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag in ("script", "link", "img", "iframe") or any(
                k in ("src", "href") and v and not v.startswith("#") for k, v in attrs):
            self.external.append((tag, a))
        if tag == "figure":
            self._figure = a["id"]
            self.figures[self._figure] = []
        elif tag == "g" and self._figure and "id" in a:
            self.figures[self._figure].append(a["id"])
        elif tag == "table":
            self._table = a["id"]
            self.rows[self._table] = []
        elif tag == "tr" and self._table and len(a):
            self._row = dict(a)
            self.rows[self._table].append(self._row)
        elif tag == "td" and self._row is not None:
            self._key = a.get("data-key")

    def handle_endtag(self, tag):
        if tag == "figure":
            self._figure = None
        elif tag == "table":
            self._table = None
        elif tag == "td":
            self._key = None

    def handle_data(self, data):
        if self._key and self._row is not None:
            self._row[self._key] = data


def _num(text: str):
    return float(text) if "." in text else int(text)


SMALL_REFS = {name: {**p, "n_factors": 8, "negatives": 4} for name, p in REFERENCES.items()}


@pytest.fixture(scope="module")
def stream(tmp_path_factory):
    """A small simulated stream with its catalog and CRM outcomes, as files."""
    d = tmp_path_factory.mktemp("stream")
    sim = Simulator(SimConfig(leads=40, properties=120, days=4, seed=3))
    recs = list(sim.records())
    (d / "ev.jsonl").write_bytes(b"".join(r.value + b"\n" for r in recs
                                          if r.topic == "interactions"))
    (d / "cat.jsonl").write_bytes(b"".join(r.value + b"\n" for r in recs
                                           if r.topic == "properties"))
    return d


def test_report_draws_every_model_and_its_tables_are_the_json_figures(
        stream, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("leadstream.models.references.REFERENCES", SMALL_REFS)  # a faster replay
    out = tmp_path / "report.html"
    assert cli.main(["evaluate", "--events", str(stream / "ev.jsonl"), "--catalog",
                     str(stream / "cat.jsonl"), "--report", str(out), "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    page = Page()
    page.feed(out.read_text(encoding="utf-8"))
    assert page.external == []  # nothing to fetch: works offline
    names = [*r["models"], *r["references"]]
    assert set(r["references"]) == set(REFERENCES)
    for chart in ("hr", "hr-window", "coverage"):
        drawn = [g.removeprefix(f"{chart}-series-") for g in page.figures[f"chart-{chart}"]
                 if g.startswith(f"{chart}-series-")]
        assert sorted(drawn) == sorted(names), chart  # one series per model and reference
    cal = [g for g in page.figures["chart-calibration"] if g.startswith("calibration-series-")]
    assert sorted(cal) == ["calibration-series-heuristic", "calibration-series-online"]

    # the curves: bounded, in stream order, ending on the table's figures
    assert r["series"]["columns"] == ["position", "scored", "hits"]
    for name, points in r["series"]["hr@10"].items():
        assert 10 < len(points) <= 2 * REPORT_POINTS + 1
        assert [p[0] for p in points] == sorted(p[0] for p in points)
        assert [p[1] for p in points] == sorted(p[1] for p in points)
        fig = (r["models"].get(name) or r["references"][name])["prequential"]
        assert points[-1][1] == fig["evaluated"]
        assert round(points[-1][2] / points[-1][1], 4) == fig["hr@10"]

    # the figures table: the JSON's numbers, row by row
    rows = page.rows["figures"]
    assert len(rows) == len(names)
    for row in rows:
        name = row.get("data-model") or row["data-reference"]
        m = r["models"].get(name) or r["references"][name]
        for key in ("hr@10", "ndcg@10", "evaluated"):
            assert _num(row[f"prequential.{key}"]) == m["prequential"][key]
        assert _num(row["coverage"]) == m["coverage"]
        assert _num(row["events_per_second"]) == m["events_per_second"]

    # the calibration table: every bucket of both scorers
    ls = r["lead_scores"]
    assert ls["labels"] > 5
    for scorer in ("heuristic", "online"):
        got = [{k: _num(v) for k, v in row.items() if not k.startswith("data-")}
               for row in page.rows["calibration"] if row["data-scorer"] == scorer]
        assert got == ls[scorer]["calibration"]
        assert sum(b["n"] for b in got) == ls["labels"]


def test_report_errors_come_before_the_replay(stream, tmp_path, capsys):
    args = ["evaluate", "--events", str(stream / "ev.jsonl")]
    assert cli.main([*args, "--report", str(tmp_path / "no" / "r.html")]) == 2
    assert "no directory" in capsys.readouterr().err
    assert cli.main([*args, "--tune", "--report", str(tmp_path / "r.html")]) == 2


def test_without_outcomes_or_a_prequential_run_the_report_says_so():
    r = {"events": 3, "k": 10, "protocol": {"targets": "positive", "exclude_seen": False},
         "models": {"hybrid": {"leave_last_out": {"hr@10": 0.5, "ndcg@10": 0.3,
                                                  "evaluated": 2}}}}
    page = render(r)
    assert 'id="no-chart-hr"' in page and 'id="no-chart-calibration"' in page
    assert 'data-key="leave_last_out.hr@10">0.5<' in page


def test_downsampled_series_stay_bounded_and_evenly_spaced():
    d = Downsampled(50)
    for i in range(100_000):
        d.add(i, i)
    pairs = d.pairs()
    assert len(pairs) <= 101 and pairs[-1] == [99_999, 99_999]
    gaps = {b[0] - a[0] for a, b in zip(pairs[:-1], pairs[1:-1], strict=False)}
    assert len(gaps) == 1  # one stride
