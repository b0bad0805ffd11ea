"""``leadstream features``: one lead's current features, or the feature catalog."""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime

import orjson

from leadstream.cli.common import (
    get_console,
)
from leadstream.contract.resources import SOURCE_ROOT
from leadstream.contract.settings import Settings


def cmd_features(args, settings: Settings) -> int:
    """The feature catalog, or one lead's current features from the worker holding it."""
    if args.catalog:
        from leadstream.features.catalog import FEATURES, catalog_json, catalog_markdown

        if args.write:
            if SOURCE_ROOT is None:
                print("leadstream features: error: --write writes the repository's "
                      "docs/features.md: run it in a source checkout", file=sys.stderr)
                return 2
            path = SOURCE_ROOT / "docs" / "features.md"
            path.parent.mkdir(exist_ok=True)
            path.write_text(catalog_markdown() + "\n")
            print(f"wrote {path}")
            from leadstream.features import layout, lead

            known = layout.LayoutHistory.load()
            history = known.with_layout(lead.L.names)
            if history is not known:  # slots added or moved: a stored lead says which
                layout.HISTORY.write_bytes(history.dumps())
                print(f"wrote {layout.HISTORY} (feature slot layout {history.latest})")
        elif args.json:
            print(json.dumps(catalog_json(), indent=2))
        else:
            from rich.table import Table

            t = Table("name", "family", "kind", "window", "definition", show_lines=False)
            for f in FEATURES:
                t.add_row(f.name, f.family, f.kind, f.window, f.definition)
            get_console().print(t)
        return 0
    if not args.lead_id:
        print("error: give a LEAD_ID, or --catalog", file=sys.stderr)
        return 2
    import urllib.error
    import urllib.parse

    base = (args.url or settings.web_url()).rstrip("/")
    url = f"{base}/leads/{urllib.parse.quote(args.lead_id, safe='')}/features"
    if args.at_last_event:
        url += "?at=last_event"
    req = urllib.request.Request(url, headers=settings.api_headers())
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            body = orjson.loads(resp.read())
    except urllib.error.HTTPError as err:
        detail = err.read().decode("utf-8", "replace")
        print(f"error: {err.code} from {url}: {detail}", file=sys.stderr)
        return 1
    except OSError as err:
        print(f"error: no worker answers at {base} ({err}); start one with `leadstream worker`"
              " or pass --url", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(body, indent=2))
        return 0
    _print_features(body)
    return 0


def _print_features(body: dict) -> None:
    from rich.table import Table

    from leadstream.features.catalog import BY_NAME

    console = get_console()
    meta = body["metadata"]
    console.print(f"[bold]{body['lead_id']}[/]: {meta['event_count']} events, feature version "
                  f"{meta['feature_version']}, as of "
                  f"{datetime.fromtimestamp(meta['as_of'], UTC).isoformat(timespec='seconds')}")
    console.print("  ".join(f"{k} = [bold]{v}[/]" for k, v in body["categorical"].items()))
    z = body.get("normalized", {}).get("zscore", {})
    for family in ("property", "engagement", "session", "time"):
        t = Table(family, "value", "z-score", "window")
        for name, value in body["numerical"].items():
            f = BY_NAME.get(name)
            if f is not None and f.family == family:
                zs = f"{z[name]:+.2f}" if name in z else ""
                t.add_row(name, f"{value:,.4g}", zs, f.window)
        console.print(t)


def register(sub) -> None:
    fe = sub.add_parser("features", help="one lead's current features, or the feature catalog")
    fe.add_argument("lead_id", nargs="?")
    fe.add_argument("--catalog", action="store_true", help="print the feature catalog")
    fe.add_argument("--write", action="store_true",
                    help="with --catalog: write docs/features.md (and record a changed "
                    "feature slot layout in features/layouts.json)")
    fe.add_argument("--json", action="store_true")
    fe.add_argument("--at-last-event", action="store_true",
                    help="windows as of the lead's latest event time (default: now)")
    fe.add_argument("--url", help="a worker's web address (default: LEADSTREAM_WEB_HOST/PORT)")
    fe.set_defaults(func=cmd_features)
