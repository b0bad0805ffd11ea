"""``leadstream models``: model snapshots: list, rollback VERSION."""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime
from pathlib import Path

from leadstream.cli.common import (
    get_console,
    print_json,
)
from leadstream.contract.settings import Settings


def cmd_models(args, settings: Settings) -> int:
    """List model snapshots, or make an older one current (a running worker follows)."""
    from leadstream.models.snapshot import SnapshotError, SnapshotStore

    store = SnapshotStore(Path(args.dir) if args.dir else settings.snapshot_dir())
    if args.action == "rollback":
        if args.version is None:
            print("error: models rollback VERSION", file=sys.stderr)
            return 2
        try:
            m = store.rollback(args.version)
        except SnapshotError as err:
            print(f"error: {err}", file=sys.stderr)
            return 1
        if args.json:
            print_json({"current": m["current"], "rolled_back_from": m["rolled_back_from"]})
            return 0
        print(f"current model version is now v{m['current']} (was v{m['rolled_back_from']}); "
              "running workers load it within 10 s")
        return 0
    m = store.manifest()
    if args.json:
        print(json.dumps(m, indent=2))
        return 0
    if not m["versions"]:
        print(f"no snapshots in {store.dir}")
        return 0
    from rich.table import Column, Table

    t = Table(Column("version", no_wrap=True), "created", "events learned", "hybrid HR@10",
              "drifts", "reason", "parent", title=str(store.dir))
    for v in m["versions"]:
        q = v.get("quality", {}).get("hybrid", {})
        drifts = sum(x.get("drifts", 0) for x in v.get("quality", {}).values())
        mark = " (current)" if v["version"] == m["current"] else ""
        t.add_row(f"v{v['version']}{mark}",
                  datetime.fromtimestamp(v["created"], UTC).isoformat(timespec="seconds"),
                  f"{v.get('events_learned', 0):,}", f"{q.get('hr@10', 0):.3f}", str(drifts),
                  v.get("reason", ""), f"v{v['parent']}" if v.get("parent") else "")
    get_console().print(t)
    return 0


def register(sub) -> None:
    mo = sub.add_parser("models", help="model snapshots: list, rollback VERSION")
    mo.add_argument("action", choices=["list", "rollback"])
    mo.add_argument("version", nargs="?", type=int)
    mo.add_argument("--dir", help="snapshot directory (default: the worker's, from settings)")
    mo.add_argument("--json", action="store_true")
    mo.set_defaults(func=cmd_models)
