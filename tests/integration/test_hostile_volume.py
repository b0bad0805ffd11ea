"""Hostile input at volume (issue 20, item 3): 50,000 interaction records, a fifth of them
mutated, from two producers at once, through one worker.

The good records are a simulated stream of 300 leads (40,000 events). A seeded mutator
derives 10,000 hostile records from them: truncated, bit-flipped, oversized, NaN and
infinities, deep nesting, wrong types, odd unicode, duplicated keys, Confluent framing with
a bad schema id; and 100 valid events older than the allowed lateness. Every record, good
or hostile, is classified by the test itself with ``parse_event`` (the worker's settings,
at two clock readings that must agree): a mutation that stays valid is a good record,
whatever it was meant to be.

The reference is a pure pass (``features.lead.update``, as ``_expected`` in
test_reliability) over the accepted records alone, each lead's in the order its producer
sent them; it says which are applied, which are duplicates by event id and which are late.

Duplicated keys: the worker's parser (pydantic's, through ``parse_event``) keeps the *last*
value of a repeated key, as ``orjson.loads`` does. A record whose first ``lead_id`` is a
decoy and whose last is a real lead is applied to the real lead, the decoy never exists;
a record whose first ``event_type`` is valid and whose last is not is refused
(``unknown_event_type``). The test asserts both readings agree for every such record, and
that no decoy lead exists on the worker.
"""

from __future__ import annotations

import asyncio
import math
import random
import re
import time
import urllib.parse
from collections import Counter, defaultdict
from datetime import UTC, datetime, timedelta

import orjson
import pytest

from leadstream.contract.events import InvalidRecord, parse_event, parse_listing
from leadstream.features import lead as F
from leadstream.models.catalog import Catalog
from leadstream.simulate import SimConfig, Simulator

from .conftest import publish, read_topic, recent_start

pytestmark = [pytest.mark.integration, pytest.mark.slow]

N_GOOD, N_HOSTILE, N_LEADS = 40_000, 10_000, 300
# how many of each kind (10,000 in all); fewer oversized ones: each costs 65-130 KB twice
KINDS = {"truncated": 1100, "bit_flipped": 1400, "oversized": 300, "nan_inf": 1100,
         "deep_nesting": 1000, "wrong_type": 1200, "odd_unicode": 1400,
         "duplicated_keys": 1200, "bad_schema_id": 1200, "late": 100}
# the worker validates within this much of the test's clock reading (a record whose verdict
# would change in that span is drawn again: the reference must not depend on when)
CLOCK_SPAN = timedelta(minutes=20)


# ---- classification ----------------------------------------------------------------------
def verdict(raw: bytes, s, now: datetime):
    """What the worker's ``Step.ingest`` makes of ``raw``: the event, or the refusal reason."""
    try:
        return parse_event(raw, now=now, max_bytes=s.max_event_bytes,
                           max_future_skew=timedelta(seconds=s.max_future_skew_seconds),
                           max_age=timedelta(days=s.max_event_age_days))
    except InvalidRecord as err:
        return err.reason


def stable_verdict(raw: bytes, s, now: datetime):
    """``verdict`` if it is the same at ``now`` and ``CLOCK_SPAN`` later, else None (both
    freshness checks are monotone in the clock, so it holds for every time between)."""
    a, b = verdict(raw, s, now), verdict(raw, s, now + CLOCK_SPAN)
    same = a == b if isinstance(a, str) or isinstance(b, str) else True
    return a if same else None


# ---- the mutator -------------------------------------------------------------------------
_NUMBER = re.compile(rb'(?<=[:\[,])-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?(?=[,}\]])')
ODD = ["\u202e", "\u200d", "\ufeff", "\U0001f3e0", "e\u0301", "\U0010ffff", "\uffff",
       "\ufffd", "\u2028", "\u01c5", "\u0645\u0646\u0632\u0644", "\u5bb6", "Z\u0351\u0362",
       "\u00e9" * 121, "\u00e9" * 129, "\x7f", " "]
# escapes and raw bytes that are not valid in a JSON string or in UTF-8
ODD_RAW = [rb"\ud800", rb"\udfff", rb"\u0000", rb"\u001f", b"\xed\xa0\x80", b"\xff\xfe",
           b"\xc0\xaf", b"\xe2\x82", b"\x80", b"\xf4\x90\x80\x80"]


class Mutator:
    """Seeded hostile variants of good records: ``mutate(kind, raw, i)`` -> bytes."""

    def __init__(self, seed: int, max_bytes: int, lateness: float):
        self.rng = random.Random(seed)
        self.max_bytes = max_bytes
        self.lateness = lateness

    def mutate(self, kind: str, raw: bytes, i: int) -> bytes:
        return getattr(self, kind)(raw, orjson.loads(raw), i)

    def truncated(self, raw, ev, i):
        return raw[: self.rng.randrange(0, len(raw))]

    def bit_flipped(self, raw, ev, i):
        b = bytearray(raw)
        for _ in range(self.rng.choice((1, 1, 1, 2, 3, 8))):
            b[self.rng.randrange(len(b))] ^= 1 << self.rng.randrange(8)
        return bytes(b)

    def oversized(self, raw, ev, i):
        r, limit = self.rng, self.max_bytes
        size = r.choice((limit, limit + 1, limit + 2, limit + 100, limit + r.randrange(1, limit),
                         1_000_000 if i % 97 == 0 else limit + 7))
        pad = max(size - len(raw), 0)
        how = r.randrange(3)
        if how == 0:  # whitespace: valid JSON, just big (exactly at the limit: accepted)
            return raw[:-1] + b" " * pad + b"}"
        if how == 1:  # a long string field
            return orjson.dumps({**ev, "source": "x" * pad})[: max(size, limit + 1)]
        return orjson.dumps({**ev, "payload": {"junk": [1] * (pad // 2 + 1)}})

    def nan_inf(self, raw, ev, i):
        token = self.rng.choice((b"NaN", b"Infinity", b"-Infinity", b"1e999", b"-1e999",
                                 b"1e309", b"nan", b"inf", b'"NaN"', b"1e308", b"-0"))
        spans = [m.span() for m in _NUMBER.finditer(raw)]
        if not spans:
            return raw.replace(f'"{ev["timestamp"]}"'.encode(), token, 1)
        a, b = self.rng.choice(spans)
        return raw[:a] + token + raw[b:]

    def deep_nesting(self, raw, ev, i):
        r = self.rng
        d = r.choice((64, 150, 199, 200, 201, 255, 256, 500, 1023, 1024, 1025, 2000, 20_000))
        how = r.randrange(4)
        if how == 0:
            return b"[" * d + b"]" * d
        if how == 1:
            return raw[:-1] + b',"extra":' + b'{"a":' * d + b"1" + b"}" * d + b"}"
        if how == 2:
            return orjson.dumps({**ev, "payload": None}).replace(
                b'"payload":null', b'"payload":' + b"[" * d + b"]" * d)
        return b'{"event":' * d + raw + b"}" * d

    def wrong_type(self, raw, ev, i):
        r = self.rng
        field, value = r.choice((
            ("event_id", 123), ("event_id", None), ("lead_id", [ev["lead_id"]]),
            ("lead_id", {"id": ev["lead_id"]}), ("lead_id", 7), ("timestamp", 1_790_000_000),
            ("timestamp", "yesterday"), ("timestamp", None), ("event_type", 7),
            ("event_type", None), ("payload", "x"), ("payload", []), ("payload", {}),
            ("session_id", None), ("session_id", 5), ("property_id", True),
            ("agent_id", 1.5), ("source", {"a": 1}), ("payload", None)))
        if field == "payload" and isinstance(ev.get("payload"), dict) and ev["payload"] and \
                r.random() < 0.5:  # a payload field of the wrong type instead
            k = r.choice(sorted(ev["payload"]))
            v = ev["payload"][k]
            value = {**ev["payload"], k: str(v) if not isinstance(v, str) else len(v)}
        if r.random() < 0.1:
            return orjson.dumps(r.choice(([ev], ev["event_id"], 42, True, None, [])))
        return orjson.dumps({**ev, field: value})

    def odd_unicode(self, raw, ev, i):
        r = self.rng
        field = r.choice(("event_id", "lead_id", "session_id", "source", "property_id"))
        old = ev.get(field) or "x"
        if r.random() < 0.35:  # bytes JSON or UTF-8 cannot carry
            bad = r.choice(ODD_RAW)
            at = r.randrange(len(old) + 1)
            new = old[:at].encode() + bad + old[at:].encode()
            if field not in ev:
                return raw[:-1] + b',"' + field.encode() + b'":"' + new + b'"}'
            return raw.replace(b'"' + field.encode() + b'":"' + old.encode() + b'"',
                               b'"' + field.encode() + b'":"' + new + b'"', 1)
        odd = r.choice(ODD)
        new = r.choice((odd + old, old + odd, odd, old[:2] + odd + old[2:]))
        if r.random() < 0.2:
            return b"\xef\xbb\xbf" + raw  # a UTF-8 byte-order mark before the JSON
        return orjson.dumps({**ev, field: new})

    def duplicated_keys(self, raw, ev, i):
        r = self.rng
        first = lambda k, v: b"{" + orjson.dumps({k: v})[1:-1] + b"," + raw[1:]  # noqa: E731
        last = lambda k, v: raw[:-1] + b"," + orjson.dumps({k: v})[1:-1] + b"}"  # noqa: E731
        how = r.randrange(7)
        renamed = orjson.dumps({**ev, "event_id": f"dupkey-{i}"})
        if how == 0:  # a decoy lead first, the real one last: applied to the real one
            return b"{" + orjson.dumps({"lead_id": f"DECOY-{i}"})[1:-1] + b"," + renamed[1:]
        if how == 1:  # an unknown type first, the real one last
            return b'{"event_type":"teleported",' + renamed[1:]
        if how == 2:  # the real type first, an unknown one last: refused
            return last("event_type", "teleported")
        if how == 3:  # two event ids: the last one counts
            return b'{"event_id":"decoy-id",' + renamed[1:]
        if how == 4:  # a valid timestamp, then a broken one
            return last("timestamp", "not a time")
        if how == 5:  # a broken payload first, the real one last (same event id: duplicate)
            return first("payload", "junk")
        return last("payload", {"junk": True})

    def late(self, raw, ev, i):
        """Not a broken record: a valid one from 1 to 24 h beyond the allowed lateness before
        its source, which the lead has seen, so the worker dead-letters it (``late_event``),
        the one refusal ``parse_event`` cannot see."""
        back = timedelta(seconds=self.lateness + self.rng.uniform(3600, 86_400))
        ts = datetime.fromisoformat(ev["timestamp"]) - back
        return orjson.dumps({**ev, "event_id": f"late-{i}", "timestamp": ts.isoformat()})

    def bad_schema_id(self, raw, ev, i):
        r = self.rng
        sid = r.choice((0, 1, 7, 2**31 - 1, 2**32 - 1, r.randrange(2**32))).to_bytes(4, "big")
        how = r.random()
        if how < 0.5:  # a valid body under a schema id nobody registered: a good record
            return b"\x00" + sid + orjson.dumps({**ev, "event_id": f"framed-{i}"})
        if how < 0.6:
            return b"\x00" + sid + raw  # the same event framed: a duplicate
        if how < 0.75:  # Avro or Protobuf bytes, or a broken body
            return b"\x00" + sid + r.choice((bytes(r.randrange(256) for _ in range(40)),
                                             raw[: len(raw) // 2], b"\x00" + sid + raw))
        if how < 0.85:
            return b"\x00" + sid[: r.randrange(4)]  # shorter than the header
        return b"\x00" + sid + orjson.dumps({**ev, "event_type": "teleported"})


# ---- the stream --------------------------------------------------------------------------
def build(s, now: datetime, seed: int = 53):
    """The catalog, and two producers' sequences of (key, value) with every value's verdict.

    Each lead's records (its good events, and the hostile records made from them) are sent
    by one producer, so its order on its partition is the order of the sequence."""
    days = 6.5
    sim = list(Simulator(SimConfig(leads=N_LEADS, properties=300, days=days, seed=seed,
                                   duplicate_ratio=0.01, start=recent_start(days))).records())
    listings = [r for r in sim if r.topic == "properties"]
    good = [r for r in sim if r.topic == "interactions"][:N_GOOD]
    assert len(good) == N_GOOD
    leads = sorted({r.key for r in good})
    owner = {k: i % 2 for i, k in enumerate(leads)}  # producer 0 or 1
    lead_ids = {k.decode() for k in leads}

    rng = random.Random(seed)
    mut = Mutator(seed, s.max_event_bytes, s.allowed_lateness_seconds)
    seqs: list[list[tuple[float, bytes | None, bytes, object, str]]] = [[], []]
    where = {}
    for r in good:
        v = stable_verdict(r.value, s, now)
        assert not isinstance(v, str) and v is not None, (r.value, v)
        seq = seqs[owner[r.key]]
        where[id(r)] = len(seq)
        seq.append((float(len(seq)), r.key, r.value, v, "good"))
    fresh: dict[str, bytes] = {}  # a lead made by a valid mutation -> the lead it came from
    plan = [k for k, n in KINDS.items() for _ in range(n)]
    rng.shuffle(plan)
    redrawn = Counter()
    for i, kind in enumerate(plan):
        while True:
            src = good[rng.randrange(N_GOOD)]
            raw = mut.mutate(kind, src.value, i)
            v = stable_verdict(raw, s, now)
            if v is None:
                redrawn["clock"] += 1
                continue
            if not isinstance(v, str) and v.lead_id.encode() != src.key:
                # valid, for another lead: the worker re-publishes it to that lead's partition,
                # where it lands at a place the reference cannot know unless the lead is new
                # and made from one source lead only
                if v.lead_id in lead_ids or fresh.setdefault(v.lead_id, src.key) != src.key:
                    redrawn["other_lead"] += 1
                    continue
            break
        key = src.key
        if isinstance(v, str) and rng.random() < 0.05:
            key = None  # a producer that could not tell the lead
        seq = seqs[owner[src.key]]
        pos = where[id(src)] + 0.5 + rng.random() * 40  # after its source, soon
        seq.append((pos, key, raw, v, kind))
    for seq in seqs:
        seq.sort(key=lambda x: x[0])
    return listings, seqs, redrawn


def clean_run(listings, seqs, s):
    """The reference: every accepted record through the pure feature update, each lead's
    in its producer's order. Returns the states, the outcomes and the late records."""
    cat = Catalog()
    for r in listings:
        if r.value is not None:
            cat.upsert(parse_listing(r.value))
    states: dict[str, F.LeadFeatures] = defaultdict(F.LeadFeatures)
    outcomes, late = Counter(), Counter()
    for seq in seqs:
        for _, key, raw, v, _kind in seq:
            if isinstance(v, str):
                outcomes["dead_lettered"] += 1
                continue
            if key != v.lead_id.encode():
                outcomes["rekeyed"] += 1  # and its copy is processed as below
            res = F.update(states[v.lead_id], v,
                           cat.attributes(v.property_id) if v.property_id else None,
                           lateness=s.allowed_lateness_seconds,
                           session_gap=s.session_gap_seconds, dedup_ttl=s.dedup_ttl_seconds,
                           dedup_max_ids=s.dedup_max_ids)
            outcomes[{"applied": "processed", "duplicate": "duplicate",
                      "late": "dead_lettered"}[res]] += 1
            if res == "late":
                late[raw] += 1
    want = {lead: F.compute(st, lateness=s.allowed_lateness_seconds,
                            session_gap=s.session_gap_seconds)
            for lead, st in states.items() if st.event_count}
    return want, outcomes, late


async def publish_two(s, seqs) -> float:
    """Both sequences from two producers running at once; returns the seconds it took."""
    from aiokafka import AIOKafkaProducer

    async def produce(seq, name):
        p = AIOKafkaProducer(linger_ms=5, max_request_size=11_000_000, client_id=name,
                             **s.kafka_client_kwargs())
        await p.start()
        try:
            futs = []
            for n, (_, key, value, _, _) in enumerate(seq):
                futs.append(await p.send(s.topic("interactions"), value, key=key))
                if n % 200 == 0:
                    await asyncio.sleep(0)  # let the other producer in
            await asyncio.gather(*futs)
        finally:
            await p.stop()

    t = time.monotonic()
    await asyncio.gather(*(produce(seq, f"producer-{i}") for i, seq in enumerate(seqs)))
    return time.monotonic() - t


# ---- the test ----------------------------------------------------------------------------
@pytest.mark.timeout(900)
def test_hostile_records_at_volume_are_each_accounted_and_good_state_equals_a_clean_run(
        settings, worker_factory):
    s = settings.model_copy(update={"lead_sweep_interval_seconds": 2.0})
    t0 = time.monotonic()
    now = datetime.now(UTC)
    listings, seqs, redrawn = build(s, now)
    records = [x for seq in seqs for x in seq]
    assert len(records) == N_GOOD + N_HOSTILE
    hostile = [x for x in records if x[4] != "good"]
    accepted = Counter(x[4] for x in hostile if not isinstance(x[3], str))
    refused = Counter(x[3] for x in records if isinstance(x[3], str))
    # duplicated keys: the worker's reading is orjson's (the last value of a key wins)
    for _, _, raw, v, kind in hostile:
        if kind == "duplicated_keys":
            again = verdict(orjson.dumps(orjson.loads(raw)), s, now)
            assert v == again, (raw, v, again)
    decoys = {m[1].decode() for _, _, raw, _, kind in hostile if kind == "duplicated_keys"
              and (m := re.match(rb'\{"lead_id":"(DECOY-\d+)",', raw))}
    assert decoys and all(not d.startswith("DECOY") for d in
                          {x[3].lead_id for x in hostile if not isinstance(x[3], str)})
    want, outcomes, late = clean_run(listings, seqs, s)
    t_build = time.monotonic() - t0

    # the catalog before the worker starts (as the reference reads it whole), then the
    # interactions from both producers while the worker runs
    asyncio.run(publish(s, [("properties", r.key, r.value) for r in listings]))
    w = worker_factory(s)
    t1 = time.monotonic()
    t_publish = asyncio.run(publish_two(s, seqs))
    n_in = len(records)
    topic = s.topic("interactions")
    names = ("processed", "duplicate", "dead_lettered", "rekeyed", "replayed")
    got: dict[str, float] = {}

    def counts():
        got["in"] = w.total("leadstream_events_in_total", topic=topic)
        for name in names:
            got[name] = w.total(f"leadstream_events_{name}_total",
                                **({"topic": topic} if name == "dead_lettered" else {}))
        return got

    def accounted():
        c = counts()
        return c["in"] == n_in + c["rekeyed"] and c["in"] == sum(c[n] for n in names)

    deadline = time.monotonic() + 600
    while not accounted():
        assert w.proc.poll() is None, w.log.read_text()[-5000:]
        assert time.monotonic() < deadline, (
            f"after 600 s not every offset of {topic} is accounted for: {got}; "
            f"{n_in} published; log:\n{w.log.read_text()[-5000:]}")
        time.sleep(1)
    t_worker = time.monotonic() - t1
    time.sleep(3)  # nothing more may arrive: the sums must be exact, not just reached
    assert accounted() and got["in"] == n_in + outcomes["rekeyed"], got
    assert {n: got[n] for n in names} == {n: outcomes[n] for n in names}, (got, outcomes)

    # every refused record on the dead-letter topic once, with the reason parse_event gives
    # for the bytes at the source offset it names, and the original key
    originals = {(m.partition, m.offset): m for m in
                 asyncio.run(read_topic(s, "interactions", timeout=180))}
    assert len(originals) == got["in"]
    # the two producers wrote at once: on each partition their records alternate in runs
    sent_by = {k: i for i, seq in enumerate(seqs) for _, k, _, _, _ in seq if k is not None}
    switches = Counter()
    for p in {p for p, _ in originals}:
        run = [sent_by[m.key] for (q, _), m in sorted(originals.items())
               if q == p and m.key in sent_by]
        switches[p] = sum(a != b for a, b in zip(run, run[1:], strict=False))
    assert min(switches.values()) >= 10, switches
    dlq = asyncio.run(read_topic(s, "interactions-dlq", timeout=120))
    sources, reasons, late_seen = Counter(), Counter(), Counter()
    for m in dlq:
        h = {k: v.decode() for k, v in m.headers}
        assert h["leadstream.dlq.topic"] == topic and h["leadstream.dlq.error"]
        src = (int(h["leadstream.dlq.partition"]), int(h["leadstream.dlq.offset"]))
        sources[src] += 1
        orig = originals[src]
        assert (orig.value, orig.key) == (m.value, m.key), src
        v = verdict(m.value, s, now)
        if isinstance(v, str):
            assert h["leadstream.dlq.reason"] == v, (src, m.value[:200], h)
        else:
            assert h["leadstream.dlq.reason"] == "late_event", (src, m.value[:200], h)
            late_seen[m.value] += 1
        reasons[h["leadstream.dlq.reason"]] += 1
    assert max(sources.values()) == 1, [k for k, n in sources.items() if n > 1][:10]
    must = {src for src, m in originals.items() if isinstance(verdict(m.value, s, now), str)}
    assert must <= set(sources), sorted(must - set(sources))[:10]
    assert len(set(sources) - must) == sum(late.values())  # the rest are the late ones
    assert late_seen == late
    assert reasons == refused + Counter({"late_event": sum(late.values())})
    assert {r: w.total("leadstream_events_dead_lettered_total", topic=topic, reason=r)
            for r in reasons} == dict(reasons)

    # every lead's state equals the clean run of the accepted records; no decoy lead exists
    behind = {}
    applied = 0
    for lead, f in want.items():
        path = urllib.parse.quote(lead, safe="")
        status, body = w.get(f"/leads/{path}/features?at=last_event")
        if status != 200:
            behind[lead] = status
            continue
        gotf = orjson.loads(body)
        applied += gotf["metadata"]["event_count"]
        if gotf["metadata"]["event_count"] != f.metadata["event_count"] \
                or gotf["categorical"] != f.categorical:
            behind[lead] = (gotf["metadata"]["event_count"], f.metadata["event_count"])
            continue
        for k, x in f.numerical.items():
            if not math.isclose(gotf["numerical"][k], x, rel_tol=1e-9, abs_tol=1e-9):
                behind[lead] = (k, gotf["numerical"][k], x)
                break
        profile = orjson.loads(w.get(f"/leads/{path}")[1])["profile"]
        if profile["event_count"] != f.metadata["event_count"]:
            behind[lead] = ("profile", profile["event_count"], f.metadata["event_count"])
    assert not behind, (f"{len(behind)} of {len(want)} leads differ (got, want): "
                        f"{dict(list(behind.items())[:20])}")
    assert applied == outcomes["processed"]
    for d in sorted(decoys)[:50]:
        assert w.get(f"/leads/{d}/features")[0] == 404, d
    w.wait_for(lambda: w.total("leadstream_leads") == len(want), timeout=30,
               what=f"the worker holding {len(want)} leads")
    assert w.get("/health/live")[0] == 200
    print(f"\nbuilt in {t_build:.1f} s; published {n_in} in {t_publish:.1f} s; worker "
          f"accounted for all in {t_worker:.1f} s; hostile kept as good: {dict(accepted)}; "
          f"refused: {dict(refused)}; late: {sum(late.values())}; outcomes: {dict(outcomes)}; "
          f"leads: {len(want)}; redrawn: {dict(redrawn)}; producer switches per partition: "
          f"{dict(switches)}")
