"""``leadstream worker``: a Faust worker (on the embedded broker when none is set)."""

from __future__ import annotations

import sys

from leadstream.cli.common import (
    bootstrap_or_embedded,
    ensure_topics,
)
from leadstream.contract.settings import Settings


def cmd_worker(args, settings: Settings) -> int:
    from leadstream.streams.app import run_worker

    with bootstrap_or_embedded(settings) as (s, broker):
        if broker is not None:
            ensure_topics(s, verbose=False)
            print(f"embedded broker at {s.kafka_bootstrap}", file=sys.stderr)
        try:
            run_worker(s, loglevel=args.loglevel)
        except SystemExit as exc:
            return int(exc.code or 0)
    return 0


def register(sub) -> None:
    w = sub.add_parser("worker", help="run a Faust worker")
    w.add_argument("--loglevel", default="warning")
    w.set_defaults(func=cmd_worker)
