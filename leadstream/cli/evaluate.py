"""``leadstream evaluate``: replay an event file through every model, no broker."""

from __future__ import annotations

import contextlib
import json
import sys
import time
from pathlib import Path

from leadstream.cli.common import (
    get_console,
)
from leadstream.contract.settings import Settings


def _invalid_summary(reasons: dict[str, int]) -> str:
    return ", ".join(f"{why} {n:,}" for why, n in sorted(reasons.items(), key=lambda x: -x[1]))


@contextlib.contextmanager
def _replay_progress(total: int, show: bool):
    """A progress bar with events/s on stderr (off when ``show`` is false); yields the
    callback ``evaluate`` reports the events replayed so far to."""
    if not show:
        yield None
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )

    class Rate(TextColumn):
        def render(self, task):
            speed = task.finished_speed or task.speed
            return super().render(task) if speed is None else f"{speed:,.0f} events/s"

    with Progress(TextColumn("replaying"), BarColumn(), MofNCompleteColumn(), Rate(""),
                  TimeRemainingColumn(), console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task("replay", total=total)
        yield lambda n: bar.update(task, completed=n)


REPORT_POINTS = 200  # evaluate --report: at most 2 x 200 + 1 points per curve


def cmd_evaluate(args, settings: Settings) -> int:
    """Replay an event file through every model and River's references; print prequential /
    leave-last-out figures."""
    from leadstream.models.evaluate import evaluate, load_events
    from leadstream.models.references import REFERENCES, RiverReference

    reasons: dict[str, int] = {}
    with open(args.events, "rb") as fh:
        events, bad = load_events(fh, reasons)
    if args.limit:
        events = events[: args.limit]
    if not events:
        why = f" ({bad:,} invalid lines: {_invalid_summary(reasons)})" if bad else ""
        print(f"error: no valid event in {args.events}{why}", file=sys.stderr)
        return 2
    protocols = {"prequential": ("prequential",), "leave-last-out": ("leave-last-out",),
                 "both": ("prequential", "leave-last-out")}[args.protocol]
    targets = None
    if args.targets:
        from leadstream.contract.events import EVENT_CLASSES

        targets = [t.strip() for t in args.targets.split(",") if t.strip()]
        unknown = [t for t in targets if t not in EVENT_CLASSES]
        if unknown or not targets:
            print(f"error: --targets: unknown event type {', '.join(unknown) or '(none)'}",
                  file=sys.stderr)
            return 2
    cat = open(args.catalog, "rb").read().splitlines() if args.catalog else None  # noqa: SIM115
    if args.tune and args.report:
        print("error: --report draws an evaluation; --tune prints a search", file=sys.stderr)
        return 2
    if args.report:
        try:  # before the replay, not after it
            import matplotlib  # noqa: F401
        except ImportError:
            print("error: --report needs matplotlib: pip install 'leadstream[report]'",
                  file=sys.stderr)
            return 2
        if not Path(args.report).resolve().parent.is_dir():
            print(f"error: --report: no directory {Path(args.report).resolve().parent}",
                  file=sys.stderr)
            return 2
    if args.tune:
        from leadstream.models.evaluate import tune

        r = tune(events, cat, seed=args.seed, targets=targets, exclude_seen=args.exclude_seen)
        if args.json:
            print(json.dumps(r, indent=2))
            return 0
        for trial in r["trials"]:
            print("  ".join(f"{k}={v}" for k, v in trial.items()))
        print(f"best prequential HR@10 {r['hr@10']:.4f} with:")
        for name, v in r["best"].items():
            print(f"  LEADSTREAM_HYBRID_{name.upper()}={v}")
        return 0
    refs = {} if args.no_references else REFERENCES
    points = REPORT_POINTS if args.report else 0  # the curves are collected for a report
    t = time.perf_counter()
    show = not args.json and sys.stderr.isatty()
    with _replay_progress(len(events) * len(protocols), show) as progress:
        if args.tune_half:
            from leadstream.models.evaluate import tune_split

            r = tune_split(events, cat, protocols=protocols, k=10, seed=args.seed,
                           targets=targets, exclude_seen=args.exclude_seen, references=refs,
                           progress=progress, series_points=points)
        else:
            r = evaluate(events, cat, protocols=protocols, k=10, seed=args.seed,
                         suite_params={**settings.hybrid_weights(),
                                       "refit_every": settings.model_refit_every},
                         targets=targets,
                         exclude_seen=args.exclude_seen, references=refs, progress=progress,
                         series_points=points)
    r["invalid_lines"] = bad
    r["invalid_reasons"] = reasons
    r["seconds"] = round(time.perf_counter() - t, 1)
    if args.report:
        from leadstream.models.report import write_report

        write_report(r, args.report, title=f"leadstream evaluate: {Path(args.events).name}")
        print(f"wrote {args.report}", file=sys.stderr)
    if args.json:
        print(json.dumps(r, indent=2))
        return 0
    from rich.table import Table

    cols = ["model"]
    for p in protocols:
        short = {"prequential": "preq", "leave-last-out": "LLO"}[p]
        cols += [f"{short} HR@10", f"{short} NDCG@10", f"{short} n"]
    cols += ["coverage", "ev/s"] if "prequential" in protocols else []
    what = ", ".join(targets) if targets else "positive events"
    title = (f"{r['events']:,} events, {r['seconds']} s; scored: {what}"
             f"{', seen listings excluded' if args.exclude_seen else ''}"
             f"{', second half only' if args.tune_half else ''}")
    t = Table(*cols, title=title)
    rows = list(r["models"].items())
    ref_rows = list(r.get("references", {}).items())
    for i, (name, m) in enumerate(rows + [(f"ref: {n}", m) for n, m in ref_rows]):
        row = [name]
        for p in protocols:
            f = m[p.replace("-", "_")]
            row += [f"{f['hr@10']:.4f}", f"{f['ndcg@10']:.4f}", f"{f['evaluated']:,}"]
        if "prequential" in protocols:
            row += [f"{m['coverage']:.3f}", f"{m['events_per_second']:,.0f}"]
        t.add_row(*row, end_section=i == len(rows) - 1)
    c = get_console()
    c.print(t)
    if bad:
        c.print(f"{bad:,} invalid lines skipped: {_invalid_summary(reasons)}")
    for p, skipped in r["not_scored"].items():
        if skipped:
            c.print(f"{p}: targets not scored: "
                    + ", ".join(f"{why} {n:,}" for why, n in skipped.items()))
    for name, params in refs.items():
        c.print(f"ref: {name} = {RiverReference(**params).describe()} (a reference, not "
                "part of the recommender)")
    tuned = r.get("tuned")
    if tuned:
        base = "; ".join(f"{p} {f['hr@10']:.4f}" for p, f in tuned["default_weights"].items()
                         if isinstance(f, dict))
        c.print(f"hybrid weights chosen on the first half ({len(tuned['trials'])} trials, "
                f"prequential HR@10 {tuned['first_half_hr@10']:.4f} there): "
                + ", ".join(f"{k}={v}" for k, v in tuned["weights"].items())
                + f"; the default weights on the second half: {base}")
    ls = r.get("lead_scores")
    if ls and ls["labels"]:
        def fig(x):
            return "n/a" if x is None else f"{x:.3f}"

        c.print(
            f"lead scores on {ls['labels']} CRM outcomes ({ls['converted']} converted), "
            f"prequential: heuristic log loss {fig(ls['heuristic']['log_loss'])} / AUC "
            f"{fig(ls['heuristic']['auc'])}; online River model log loss "
            f"{fig(ls['online']['log_loss'])} / AUC {fig(ls['online']['auc'])}")
    return 0


def register(sub) -> None:
    ev = sub.add_parser("evaluate", help="replay an event file through every model, no broker")
    ev.add_argument("--events", required=True, help="JSON lines in the event schema")
    ev.add_argument("--catalog", help="JSON lines of listings (optional)")
    ev.add_argument("--protocol", default="prequential",
                    choices=["prequential", "leave-last-out", "both"])
    ev.add_argument("--limit", type=int, default=None, help="the first N events (by time)")
    ev.add_argument("--seed", type=int, default=42)
    ev.add_argument("--targets", metavar="TYPE[,TYPE...]",
                    help="event types that are scored (default: every positive event)")
    ev.add_argument("--exclude-seen", action="store_true",
                    help="leave every listing the lead interacted with before (views "
                         "included) out of its ranking")
    ev.add_argument("--no-references", action="store_true",
                    help="skip River's FunkMF and BiasedMF references (faster)")
    ev.add_argument("--tune-half", action="store_true",
                    help="choose the hybrid's weights on the first half of the stream and "
                         "report every figure on the second half")
    ev.add_argument("--tune", action="store_true",
                    help="search the hybrid's weights instead; prints the settings to use")
    ev.add_argument("--report", metavar="FILE.html",
                    help="also write the figures and charts (HR@10 along the stream, "
                         "coverage, lead-score calibration) to one self-contained HTML file")
    ev.add_argument("--json", action="store_true",
                    help="the figures as JSON (with --report: the curves too, as 'series')")
    ev.set_defaults(func=cmd_evaluate)
