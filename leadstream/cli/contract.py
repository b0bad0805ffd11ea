"""``leadstream schemas`` (the JSON Schemas of schemas/) and ``leadstream settings``."""

from __future__ import annotations

import json
import sys

from leadstream.cli.common import (
    print_json,
)
from leadstream.contract.resources import SOURCE_ROOT, bundled
from leadstream.contract.settings import Settings


def cmd_schemas(args, settings: Settings) -> int:
    from leadstream.contract.events import json_schemas

    if args.write and SOURCE_ROOT is None:
        print("leadstream schemas: error: --write writes the repository's schemas/: run it "
              "in a source checkout", file=sys.stderr)
        return 2
    root = bundled("schemas")
    stale = []
    for rel, doc in json_schemas().items():
        path = root / rel
        text = json.dumps(doc, indent=2, sort_keys=True) + "\n"
        if args.write:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
        elif not path.exists() or path.read_text() != text:
            stale.append(f"schemas/{rel}")
    if args.json:
        print_json({"schemas": len(json_schemas()), "written": bool(args.write),
                     "stale": stale, "up_to_date": not stale})
        return 1 if stale else 0
    if stale:
        print("stale schemas (run `leadstream schemas --write`):\n  " + "\n  ".join(stale))
        return 1
    print("schemas written" if args.write else "schemas up to date")
    return 0


def cmd_settings(args, settings: Settings) -> int:
    print(json.dumps(settings.printable(), indent=2, default=str))
    return 0


def register(sub) -> None:
    sc = sub.add_parser("schemas", help="check (or --write) the JSON Schemas in schemas/")
    sc.add_argument("--write", action="store_true")
    sc.add_argument("--json", action="store_true")
    sc.set_defaults(func=cmd_schemas)

    st = sub.add_parser("settings", help="print the effective settings (secrets hidden)")
    st.add_argument("--json", action="store_true", help="(the output is always JSON)")
    st.set_defaults(func=cmd_settings)
