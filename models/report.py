"""The evaluation as one self-contained HTML file: its figures in tables and three charts
drawn by matplotlib as inline SVG (no script, no CDN: it opens offline).

- **HR@10 along the stream**: each model's and reference's cumulative prequential HR@10
  against the stream position (``result["series"]``, from ``evaluate(series_points=…)``);
  references dashed; and the same over a moving window of a twentieth of the scored
  events (exact: differences of the hit counts), where learning and drift show.
- **catalog coverage**: the share of candidate listings that appeared in some top-10, per
  model and reference.
- **lead-score calibration**: the prequential predictions of the heuristic and the online
  scorer on the replay's CRM outcomes, in score buckets of 10, against the observed
  conversion rate of each bucket (the diagonal is a perfectly calibrated score).

Every chart is a ``<figure id="chart-NAME">`` whose SVG ids are prefixed with ``NAME-``;
each drawn series is the group ``NAME-series-SERIES`` (a model, a reference or a scorer),
so a reader (or a test) can find them. The tables hold the numbers of the result as they
are (``--json`` prints the same ones). Pure: takes the result of ``evaluate``, writes text.
"""

from __future__ import annotations

import html
import io
import re
from pathlib import Path

PROTOCOLS = ("prequential", "leave_last_out")
SCORERS = ("heuristic", "online")


def _rows(result: dict) -> list[tuple[str, dict, bool]]:
    """(name, figures, is a reference) of every model, then every reference."""
    return ([(n, m, False) for n, m in result["models"].items()]
            + [(n, m, True) for n, m in result.get("references", {}).items()])


def _svg(fig, prefix: str) -> str:
    """The figure as an inline ``<svg>`` whose ids (and references to them) carry
    ``prefix``, so several charts in one page never share an id."""
    buf = io.StringIO()
    fig.savefig(buf, format="svg", bbox_inches="tight", metadata={"Date": None})
    text = buf.getvalue()
    text = text[text.index("<svg"):]
    text = re.sub(r'\bid="', f'id="{prefix}-', text)
    text = re.sub(r"url\(#", f"url(#{prefix}-", text)
    return re.sub(r'(\b(?:xlink:)?href)="#', rf'\1="#{prefix}-', text)


def _figure():
    import matplotlib

    matplotlib.rcParams["svg.fonttype"] = "none"  # text as text: small, selectable
    matplotlib.rcParams["svg.hashsalt"] = "leadstream"  # the same SVG for the same data
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8.5, 4.2))
    return fig, fig.add_subplot()


def _colours(names: list[str]) -> dict[str, str]:
    from matplotlib import colormaps

    cmap = colormaps["tab10"]
    return {n: cmap(i % 10) for i, n in enumerate(names)}


def cumulative(points: list[list]) -> list[tuple[int, float]]:
    """(position, HR so far) of [position, scored, hits] points.

    >>> cumulative([[5, 1, 1], [9, 4, 2]])
    [(5, 1.0), (9, 0.5)]
    """
    return [(x, hits / n) for x, n, hits in points if n]


def windowed(points: list[list], window: int) -> list[tuple[int, float]]:
    """(position, HR over the last ``window`` or more scored targets) of [position, scored,
    hits] points: for each point, against the latest earlier point at least ``window``
    targets back (exact, as the counts are cumulative).

    >>> windowed([[1, 10, 1], [2, 20, 2], [3, 30, 12], [4, 40, 22]], 20)
    [(3, 0.55), (4, 1.0)]
    """
    out, j = [], 0
    for i, (x, n, hits) in enumerate(points):
        while j + 1 < i and n - points[j + 1][1] >= window:
            j += 1
        n0, h0 = points[j][1], points[j][2]
        if i > j and n - n0 >= window:
            out.append((x, (hits - h0) / (n - n0)))
    return out


def hr_chart(result: dict, colours: dict, window: bool = False) -> str | None:
    series = result.get("series", {}).get("hr@10")
    if not series:
        return None
    fig, ax = _figure()
    refs = set(result.get("references", {}))
    scored = max((p[-1][1] for p in series.values() if p), default=0)
    size = max(scored // 20, 10)
    for name, points in series.items():
        curve = windowed(points, size) if window else cumulative(points)
        if not curve:
            continue
        xs, ys = zip(*curve, strict=True)
        (line,) = ax.plot(xs, ys, label=("ref: " + name) if name in refs else name,
                          color=colours.get(name), linestyle="--" if name in refs else "-",
                          linewidth=1.3 if window else 1.6)
        line.set_gid(f"series-{name}")
    k = result.get("k", 10)
    ax.set_xlabel("stream position (events replayed)")
    if window:
        ax.set_ylabel(f"HR@{k} over the last {size:,} scored events")
        ax.set_title(f"prequential HR@10 over a moving window ({size:,} of {scored:,} scored "
                     "events)")
    else:
        ax.set_ylabel(f"HR@{k} so far (cumulative)")
        ax.set_title("prequential HR@10 along the stream (cumulative)")
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, ncol=2, loc="best")
    return _svg(fig, "hr-window" if window else "hr")


def coverage_chart(result: dict, colours: dict) -> str | None:
    rows = [(n, m, ref) for n, m, ref in _rows(result) if "coverage" in m]
    if not rows:
        return None
    fig, ax = _figure()
    labels = [("ref: " + n) if ref else n for n, _, ref in rows]
    bars = ax.barh(labels, [m["coverage"] for _, m, _ in rows],
                   color=[colours.get(n) for n, _, _ in rows])
    for bar, (name, m, ref) in zip(bars, rows, strict=True):
        bar.set_gid(f"series-{name}")
        if ref:
            bar.set_hatch("//")
        ax.annotate(f"{m['coverage']:.3f}", (bar.get_width(), bar.get_y() + bar.get_height() / 2),
                    xytext=(3, 0), textcoords="offset points", va="center", fontsize=8)
    ax.invert_yaxis()
    ax.set_xlim(0, max(1.0, max(m["coverage"] for _, m, _ in rows) * 1.1))
    ax.set_xlabel("catalog coverage (share of candidate listings in some top-10)")
    ax.set_title("catalog coverage per model")
    ax.grid(axis="x", alpha=0.3)
    return _svg(fig, "coverage")


def calibration_chart(result: dict) -> str | None:
    ls = result.get("lead_scores")
    if not ls or not ls.get("labels"):
        return None
    fig, ax = _figure()
    (ideal,) = ax.plot([0, 100], [0, 1], color="grey", linestyle=":", linewidth=1,
                       label="perfectly calibrated")
    ideal.set_gid("ideal")
    for scorer, colour in zip(SCORERS, ("tab:blue", "tab:orange"), strict=True):
        buckets = ls[scorer]["calibration"]
        xs = [b["mean_score"] for b in buckets]
        ys = [b["converted_rate"] for b in buckets]
        (line,) = ax.plot(xs, ys, marker="o", color=colour,
                          label=f"{scorer} ({ls['labels']} outcomes)")
        line.set_gid(f"series-{scorer}")
        for b in buckets:
            ax.annotate(str(b["n"]), (b["mean_score"], b["converted_rate"]), xytext=(4, 4),
                        textcoords="offset points", fontsize=7, color=colour)
    ax.set_xlim(0, 100)
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel("predicted lead score (bucket mean, 0-100)")
    ax.set_ylabel("observed conversion rate")
    ax.set_title("lead-score calibration (numbers: outcomes per bucket)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper left")
    return _svg(fig, "calibration")


def _num(v) -> str:
    return "" if v is None else html.escape(str(v))


def _figures_table(result: dict) -> str:
    protocols = [p for p in PROTOCOLS if any(p in m for _, m, _ in _rows(result))]
    head = ["model"]
    for p in protocols:
        head += [f"{p} hr@10", f"{p} ndcg@10", f"{p} evaluated"]
    head += ["coverage", "events_per_second"]
    out = ['<table id="figures"><thead><tr>'
           + "".join(f"<th>{html.escape(h)}</th>" for h in head) + "</tr></thead><tbody>"]
    for name, m, ref in _rows(result):
        cells = [f'<td data-key="name">{html.escape(("ref: " if ref else "") + name)}</td>']
        for p in protocols:
            f = m.get(p, {})
            cells += [f'<td data-key="{p}.{key}">{_num(f.get(key))}</td>'
                      for key in ("hr@10", "ndcg@10", "evaluated")]
        cells += [f'<td data-key="{key}">{_num(m.get(key))}</td>'
                  for key in ("coverage", "events_per_second")]
        kind = "reference" if ref else "model"
        out.append(f'<tr data-{kind}="{html.escape(name)}">' + "".join(cells) + "</tr>")
    return "".join(out) + "</tbody></table>"


def _calibration_table(result: dict) -> str:
    ls = result.get("lead_scores")
    if not ls or not ls.get("labels"):
        return ("<p>No CRM outcome (<code>outcome_recorded</code>) scored in a prequential "
                "run: no lead-score calibration.</p>")
    out = [f"<p>{ls['labels']} CRM outcomes, {ls['converted']} converted. "
           + "; ".join(f"{s}: log loss {_num(ls[s]['log_loss'])}, AUC {_num(ls[s]['auc'])}"
                       for s in SCORERS) + ".</p>",
           '<table id="calibration"><thead><tr><th>scorer</th><th>score_from</th>'
           "<th>score_to</th><th>n</th><th>mean_score</th><th>converted_rate</th></tr>"
           "</thead><tbody>"]
    for s in SCORERS:
        for b in ls[s]["calibration"]:
            out.append(f'<tr data-scorer="{s}"><td>{s}</td>' + "".join(
                f'<td data-key="{k}">{_num(b[k])}</td>'
                for k in ("score_from", "score_to", "n", "mean_score", "converted_rate"))
                + "</tr>")
    return "".join(out) + "</tbody></table>"


STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 60em; color: #222; }
table { border-collapse: collapse; margin: 1em 0; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: right; }
th:first-child, td:first-child { text-align: left; }
tr[data-reference] td { color: #555; font-style: italic; }
figure { margin: 1.5em 0; } figure svg { max-width: 100%; height: auto; }
figcaption { font-size: 0.9em; color: #555; }
"""


def render(result: dict, title: str = "leadstream evaluate") -> str:
    """The report's HTML for a result of ``evaluate`` (with its ``series`` for the curve)."""
    names = [n for n, _, _ in _rows(result)]
    colours = _colours(names)
    proto = result.get("protocol", {})
    targets = proto.get("targets", "positive")
    what = ", ".join(targets) if isinstance(targets, list) else f"{targets} events"
    summary = (f"{result['events']:,} events replayed"
               + (f" in {result['seconds']} s" if "seconds" in result else "")
               + f"; scored: {html.escape(what)}"
               + ("; seen listings excluded" if proto.get("exclude_seen") else "")
               + (f"; scored from event {result['scored_from_event']:,}"
                  if "scored_from_event" in result else "")
               + (f"; {result['invalid_lines']:,} invalid lines skipped"
                  if result.get("invalid_lines") else ""))
    parts = [f"<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">"
             f"<title>{html.escape(title)}</title><style>{STYLE}</style></head><body>",
             f"<h1>{html.escape(title)}</h1><p id=\"summary\">{summary}</p>",
             "<h2>Figures</h2>", _figures_table(result)]
    charts = [("hr", "HR@10 along the stream",
               "Cumulative prequential HR@10 of each model (references dashed) at each "
               "scored event's position in the stream.", hr_chart(result, colours)),
              ("hr-window", "HR@10 over a moving window",
               "The same hits over a moving window of a twentieth of the scored events: "
               "where a model learns, or fades.", hr_chart(result, colours, window=True)),
              ("coverage", "Catalog coverage",
               "Share of the candidate listings that appeared in some top-10 (references "
               "hatched).", coverage_chart(result, colours)),
              ("calibration", "Lead-score calibration",
               "Predicted score (mean of each bucket of 10) against the observed conversion "
               "rate of the bucket, prequentially (each prediction made before its outcome "
               "was learned).", calibration_chart(result))]
    for name, heading, caption, svg in charts:
        parts.append(f"<h2>{heading}</h2>")
        if svg is None:
            why = {"hr": "no prequential run (or no series collected)",
                   "hr-window": "no prequential run (or no series collected)",
                   "coverage": "no prequential run",
                   "calibration": "no CRM outcome in a prequential run"}[name]
            parts.append(f'<p class="no-chart" id="no-chart-{name}">No chart: {why}.</p>')
        else:
            parts.append(f'<figure id="chart-{name}">{svg}'
                         f"<figcaption>{caption}</figcaption></figure>")
        if name == "calibration":
            parts.append(_calibration_table(result))
    parts.append("</body></html>\n")
    return "\n".join(parts)


def write_report(result: dict, path: str | Path, title: str = "leadstream evaluate") -> Path:
    path = Path(path)
    path.write_text(render(result, title), encoding="utf-8")
    return path
