"""``leadstream bench WHAT``: the benchmarks of :mod:`leadstream.bench`, their figures
printed or as JSON."""

from __future__ import annotations

import json
import sys

from leadstream.contract.settings import Settings


def cmd_bench(args, settings: Settings) -> int:
    if args.what == "features":
        from leadstream.bench import features

        r = features.bench_features(leads=args.leads, days=args.days, seed=args.seed,
                                    memory_leads=args.memory_leads)
        show = features.print_features
    elif args.what == "scoring":
        from leadstream.bench import scoring

        r = scoring.bench_scoring(sizes=tuple(int(x) for x in args.sizes.split(",")),
                                  seed=args.seed)
        show = scoring.print_scoring
    elif args.what == "stages":
        from leadstream.bench import stages as benchstages

        r = benchstages.bench_stages(leads=args.leads, seed=args.seed, batch=args.batch)
        show = benchstages.print_stages
    elif args.what == "scale":
        from leadstream.bench import scale as benchscale

        r = benchscale.bench_scale(sizes=tuple(int(x) for x in args.lead_counts.split(",")),
                                   window=args.window, seed=args.seed)
        show = benchscale.print_scale
    elif args.what == "restore":
        from leadstream.bench import restore as benchrestore

        r = benchrestore.bench_restore(leads=args.restore_leads, sim_leads=args.leads,
                                       days=args.days, seed=args.seed)
        show = benchrestore.print_restore
    elif args.what == "mf":
        from leadstream.bench import mf as benchmf

        if not args.file:
            print("error: bench mf needs --file EVENTS.jsonl", file=sys.stderr)
            return 2
        r = benchmf.bench_mf(args.file, args.variant or ["default", "river_funkmf"])
        show = benchmf.print_mf
    elif args.what == "soak":
        from leadstream.bench import soak

        r = soak.soak(minutes=args.minutes, rate=args.rate, active=args.leads,
                      lead_ttl_seconds=args.lead_ttl, seed=args.seed)
        show = soak.print_soak
    else:
        from leadstream.bench import pipeline as benchpipe

        r = benchpipe.bench_pipeline(events=args.events, leads=args.leads,
                                     loads=tuple(float(x) for x in args.loads.split(",")),
                                     seconds=args.seconds, seed=args.seed)
        show = benchpipe.print_pipeline
    if args.json:
        print(json.dumps(r, indent=2))
    else:
        show(r)
    return 0 if r.get("passed", True) else 1  # the soak's verdicts


def register(sub) -> None:
    be = sub.add_parser("bench", help="benchmarks that print their figures")
    be.add_argument("what", choices=["features", "scoring", "pipeline", "stages", "scale", "soak",
                                     "restore", "mf"])
    be.add_argument("--events", type=int, default=20_000, help="pipeline: backlog size")
    be.add_argument("--loads", default="200,500,750,1000", help="pipeline: offered events/s")
    be.add_argument("--seconds", type=float, default=10.0, help="pipeline: per offered load")
    be.add_argument("--sizes", default="1000,10000,100000",
                    help="scoring: catalog sizes, comma-separated")
    be.add_argument("--lead-counts", default="10000,100000,1000000",
                    help="scale: numbers of leads, comma-separated")
    be.add_argument("--window", type=int, default=20_000,
                    help="scale: events timed per number of leads")
    be.add_argument("--leads", type=int, default=1000,
                    help="simulated leads (soak: leads active at once)")
    be.add_argument("--days", type=float, default=14.0, help="simulated days")
    be.add_argument("--seed", type=int, default=7)
    be.add_argument("--minutes", type=float, default=10.0, help="soak: duration")
    be.add_argument("--rate", type=float, default=300.0,
                    help="soak: offered events/s (default about 70%% of one worker's capacity)")
    be.add_argument("--lead-ttl", type=float, default=120.0,
                    help="soak: the worker's LEADSTREAM_LEAD_TTL_SECONDS")
    be.add_argument("--memory-leads", type=int, default=100_000,
                    help="leads in the memory measurement")
    be.add_argument("--restore-leads", type=int, default=100_000,
                    help="restore: leads in the changelog the worker reads back")
    be.add_argument("--batch", type=int, default=500,
                    help="stages: records per step (the worker's batch_max_events)")
    be.add_argument("--file", help="mf: an event file (JSON lines)")
    be.add_argument("--variant", action="append",
                    help="mf: 'default', a reference (river_funkmf, river_biasedmf) or "
                         "CollaborativeModel parameters 'negatives=4,lr=0.1'; repeatable")
    be.add_argument("--json", action="store_true")
    be.set_defaults(func=cmd_bench)
