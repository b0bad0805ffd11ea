"""MovieLens ratings as leadstream events, for ``leadstream evaluate`` on real data.

    python examples/movielens_events.py ml-100k/u.data > ml100k.jsonl
    leadstream evaluate --events ml100k.jsonl --targets property_saved --exclude-seen \\
        --protocol both

``u.data`` is GroupLens' MovieLens 100K (tab-separated ``user item rating timestamp``;
https://grouplens.org/datasets/movielens/100k/, not redistributed here). A rating of 4 or
5 is a strong positive, ``property_saved``; a lower one a weak positive,
``property_viewed`` (30 seconds); each user is a lead (``U<user>``), each film a listing
(``M<item>``), a user's ratings within one hour one session. Lines are written in time
order (ratings of the same second in file order). Figures: docs/benchmarks.md, "On real
data: MovieLens 100K".
"""

from __future__ import annotations

import sys
from datetime import UTC, datetime

import orjson


def events(lines):
    """Events (dicts in the event schema) of ``user item rating timestamp`` lines.

    >>> [e["event_type"] for e in events(["1\\t5\\t4\\t874965758", "1\\t7\\t2\\t874965700"])]
    ['property_viewed', 'property_saved']
    """
    rows = []
    for line in lines:
        f = line.split()
        if len(f) >= 4:
            rows.append((int(f[3]), f[0], f[1], int(f[2])))
    rows.sort(key=lambda r: r[0])
    for n, (t, user, item, rating) in enumerate(rows):
        ev = {"event_id": f"ml-{n}", "lead_id": f"U{user}", "property_id": f"M{item}",
              "session_id": f"U{user}-{t // 3600}",
              "timestamp": datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")}
        if rating >= 4:
            ev["event_type"] = "property_saved"
        else:
            ev["event_type"] = "property_viewed"
            ev["payload"] = {"duration_seconds": 30}
        yield ev


def main(path: str) -> None:
    with open(path, encoding="latin-1") as fh:
        out = sys.stdout.buffer
        for ev in events(fh):
            out.write(orjson.dumps(ev) + b"\n")


if __name__ == "__main__":
    main(sys.argv[1])
