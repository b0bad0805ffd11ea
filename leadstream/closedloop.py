"""The closed loop: simulated leads see the lists published for them and act on them.

Two parts. :func:`react` is pure: given one published list, the lead's hidden taste (a
utility per listing, from :meth:`leadstream.simulate.Simulator.utility`) and a seeded
RNG, it says which events follow and when (seconds after the lead looks at the list):

- ``recommendation_shown`` (with the list's ``recommendation_id`` and the rank) for every
  listing the lead scrolled to: the first screen always, each further listing with
  probability ``scroll``;
- ``recommendation_clicked`` for a shown listing with probability
  :func:`click_probability`: attraction from the hidden taste times a position bias
  (``rank ** -position_decay``);
- after a click, ``property_viewed`` and, by how much the lead likes the listing,
  ``property_saved`` or a left swipe, and for a very good match ``booking_requested``
  (source ``recommendation``: the contract carries no list id on those, the worker
  credits them to the list that showed the listing).

:class:`ClosedLoop` is the Kafka side: it consumes ``recommendations`` (aiokafka, from
the end of the topic), lets each simulated lead look at its newest list a moment after it
arrives (at most once per ``cooldown`` seconds), and publishes the reactions on
``interactions`` stamped with the wall clock when they are due. Optionally leads come
back on their own (``visit_every``: a ``session_started``, which gets them a fresh list).

>>> rec = {"recommendation_id": "r1", "lead_id": "L1", "items": [
...     {"property_id": "GOOD", "rank": 1}, {"property_id": "BAD", "rank": 2}]}
>>> taste = {"GOOD": 2.5, "BAD": -3.0}.get
>>> acts = react(rec, taste, random.Random(2))
>>> [(a.event_type, a.property_id) for a in acts]  # doctest: +NORMALIZE_WHITESPACE
[('recommendation_shown', 'GOOD'), ('recommendation_shown', 'BAD'),
 ('recommendation_clicked', 'GOOD'), ('property_viewed', 'GOOD'),
 ('property_saved', 'GOOD')]
>>> acts[2].payload
{'recommendation_id': 'r1', 'rank': 1}
>>> react(rec, taste, random.Random(2)) == acts  # same seed, same reactions
True
"""

from __future__ import annotations

import asyncio
import heapq
import math
import random
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import NamedTuple

import orjson


@dataclass(frozen=True)
class Behaviour:
    """How a simulated lead treats a list (the defaults give a click-through of a few
    per cent on lists that ignore its taste and several times that on lists that fit)."""

    screen: int = 4  # listings on the first screen: always shown
    scroll: float = 0.7  # chance of scrolling on to each further listing
    click: float = 0.5  # click probability of an ideal listing at rank 1
    position_decay: float = 0.5  # examination falls as rank ** -position_decay
    utility_mid: float = 1.0  # the utility at which a listing attracts half the time
    utility_slope: float = 1.5
    save: float = 0.45  # after a click: a save with probability like * save
    reject: float = 0.3  # ... else a left swipe with probability (1 - like) * reject
    book_utility: float = 1.2  # a booking request needs at least this utility ...
    book: float = 0.15  # ... and comes with this probability after a click


class Action(NamedTuple):
    """One event a lead sends after looking at a list, ``delay`` seconds after the look."""

    delay: float
    event_type: str
    property_id: str
    payload: dict


def like(utility: float) -> float:
    """How much a lead likes a listing, 0..1 (the open-loop simulator's curve).

    >>> round(like(2.0), 3), round(like(-2.0), 3)
    (0.969, 0.072)
    """
    return 1 / (1 + math.exp(-(utility + 0.3) * 1.5))


def click_probability(utility: float, rank: int, b: Behaviour = Behaviour()) -> float:
    """P(click | shown at ``rank``): attraction by the hidden taste times position bias.

    >>> b = Behaviour()
    >>> round(click_probability(2.5, 1, b), 3), round(click_probability(2.5, 4, b), 3)
    (0.452, 0.226)
    >>> round(click_probability(-1.0, 1, b), 3)
    0.024
    """
    attract = 1 / (1 + math.exp(-b.utility_slope * (utility - b.utility_mid)))
    return b.click * rank ** -b.position_decay * attract


def react(rec: dict, utility: Callable[[str], float | None], rng: random.Random,
          b: Behaviour = Behaviour()) -> list[Action]:
    """The events that follow a lead's look at the published list ``rec`` (a
    ``recommendations`` record), in time order. ``utility(property_id)`` is the lead's
    hidden taste for a listing (None: a listing it knows nothing of, never clicked)."""
    rid = rec["recommendation_id"]
    t = 0.0
    out: list[Action] = []
    shown: list[tuple[int, str, float | None]] = []
    for i, item in enumerate(rec.get("items") or []):
        rank = int(item.get("rank") or i + 1)
        if i >= b.screen and rng.random() >= b.scroll:
            break
        t += rng.uniform(0.05, 0.3)
        pid = item["property_id"]
        out.append(Action(t, "recommendation_shown", pid, {"recommendation_id": rid,
                                                          "rank": rank}))
        shown.append((rank, pid, utility(pid)))
    for rank, pid, u in shown:
        if u is None or rng.random() >= click_probability(u, rank, b):
            continue
        lk = like(u)
        t += rng.uniform(1.0, 4.0)
        out.append(Action(t, "recommendation_clicked", pid, {"recommendation_id": rid,
                                                            "rank": rank}))
        t += rng.uniform(0.5, 2.0)
        out.append(Action(t, "property_viewed", pid, {
            "duration_seconds": round(rng.uniform(5, 60) + 90 * lk, 1),
            "photos_viewed": int(rng.uniform(0, 6) + 12 * lk)}))
        if rng.random() < lk * b.save:
            t += rng.uniform(1.0, 5.0)
            out.append(Action(t, "property_saved", pid, {}))
        elif rng.random() < (1 - lk) * b.reject:
            t += rng.uniform(1.0, 5.0)
            out.append(Action(t, "property_swiped", pid, {"direction": "left"}))
            continue
        if u >= b.book_utility and rng.random() < b.book:
            t += rng.uniform(2.0, 10.0)
            out.append(Action(t, "booking_requested", pid,
                              {"booking_id": f"B-{rec['lead_id']}-{pid}-{rid[:8]}"}))
    return out


def event(action: Action, lead_id: str, session_id: str, event_id: str,
          when: datetime) -> dict:
    """The interaction event of ``action`` at ``when``.

    >>> ev = event(Action(1.0, "recommendation_shown", "P1", {"recommendation_id": "r",
    ...            "rank": 1}), "L1", "s1", "e1", datetime(2026, 3, 1, tzinfo=UTC))
    >>> ev["timestamp"], ev["source"], ev["payload"]["rank"]
    ('2026-03-01T00:00:00Z', 'recommendation', 1)
    """
    ev = {"event_id": event_id, "lead_id": lead_id, "event_type": action.event_type,
          "timestamp": when.isoformat().replace("+00:00", "Z"), "session_id": session_id,
          "property_id": action.property_id, "source": "recommendation"}
    if action.payload:
        ev["payload"] = action.payload
    return ev


# ---- the Kafka side ------------------------------------------------------------------------
@dataclass
class LoopStats:
    """What the simulated leads sent, per experiment arm of the list (``None``: no
    experiment) and event type."""

    lists: int = 0  # lists received for simulated leads
    looked: int = 0  # lists the leads looked at (the newest one when several came)
    sent: int = 0  # events published
    per_arm: dict = field(default_factory=dict)

    def add(self, arm, kind: str, n: int = 1) -> None:
        c = self.per_arm.setdefault(arm, {})
        c[kind] = c.get(kind, 0) + n

    def summary(self) -> str:
        """``arm: shown / clicked (click-through)`` per arm, for a status line.

        >>> s = LoopStats(); s.add("hybrid", "recommendation_shown", 40)
        >>> s.add("hybrid", "recommendation_clicked", 5); s.summary()
        'hybrid 5/40 clicked (12.5 %)'
        """
        parts = []
        for arm, c in sorted(self.per_arm.items(), key=lambda x: str(x[0])):
            n, k = c.get("recommendation_shown", 0), c.get("recommendation_clicked", 0)
            ctr = f"{100 * k / n:.1f} %" if n else "-"
            parts.append(f"{arm or 'no experiment'} {k}/{n} clicked ({ctr})")
        return ", ".join(parts)


class ClosedLoop:
    """Simulated leads (``sim.leads``, with their hidden tastes over ``sim``'s catalog)
    reacting to the lists a worker publishes for them."""

    def __init__(self, settings, sim, *, behaviour: Behaviour = Behaviour(), seed: int = 7,
                 look_after: tuple[float, float] = (0.5, 2.0), cooldown: float = 15.0,
                 visit_every: float | None = None, max_events: int | None = None):
        self.settings = settings
        self.sim = sim
        self.behaviour = behaviour
        self.rng = random.Random(seed)
        self.leads = {lead.lead_id: lead for lead in sim.leads}
        self.look_after = look_after
        self.cooldown = cooldown
        self.visit_every = visit_every
        self.max_events = max_events
        self.stats = LoopStats()
        self._run = uuid.uuid4().hex[:8]
        self._n = 0
        self._pending: dict[str, list] = {}  # lead -> [due, newest list]
        self._looked: dict[str, float] = {}  # lead -> monotonic time of its last look
        self._queue: list = []  # (due, seq, lead, session, Action | None: a visit, arm)
        self._next_visit: dict[str, float] = {}
        self._session: dict[str, str] = {}  # lead -> the session of its latest visit

    def utility(self, lead_id: str) -> Callable[[str], float | None]:
        lead = self.leads[lead_id]
        props = self.sim.props
        return lambda pid: self.sim.utility(lead, pid) if pid in props else None

    # -- the schedule (no I/O: driven by the clock passed in) --------------------------------
    def on_list(self, rec: dict, now: float) -> None:
        """A list arrived for a lead: it will look at the newest list a moment later."""
        lead = rec.get("lead_id")
        if lead not in self.leads:
            return
        self.stats.lists += 1
        if lead in self._pending:
            self._pending[lead][1] = rec  # a newer list replaced it before the lead looked
            return
        due = max(now + self.rng.uniform(*self.look_after),
                  self._looked.get(lead, -math.inf) + self.cooldown)
        self._pending[lead] = [due, rec]

    def tick(self, now: float) -> None:
        """Looks and visits due at ``now`` turn into scheduled events."""
        for lead, (due, rec) in list(self._pending.items()):
            if due > now:
                continue
            del self._pending[lead]
            self._looked[lead] = now
            self.stats.looked += 1
            arm = rec.get("arm")
            sid = self._session.get(lead) or f"S-{lead}-rec{int(time.time() // 1800)}"
            for a in react(rec, self.utility(lead), self.rng, self.behaviour):
                self._push(now + a.delay, lead, sid, a, arm)
        if self.visit_every:
            for lead in self.leads:
                nxt = self._next_visit.get(lead)
                if nxt is None:  # spread the first visits over one period
                    self._next_visit[lead] = now + self.rng.uniform(0, self.visit_every)
                elif nxt <= now:
                    self._next_visit[lead] = now + self.rng.expovariate(1 / self.visit_every)
                    self._session[lead] = f"S-{lead}-v{int(time.time() * 1000)}"
                    self._push(now, lead, self._session[lead], None)

    def _push(self, due: float, lead: str, sid: str, action: Action | None,
              arm: str | None = None) -> None:
        self._n += 1
        heapq.heappush(self._queue, (due, self._n, lead, sid, action, arm))

    def due_events(self, now: float) -> list[tuple[bytes, bytes]]:
        """(key, value) of the events due at ``now``, stamped with the wall clock."""
        out = []
        wall = datetime.now(UTC)
        while self._queue and self._queue[0][0] <= now:
            if self.max_events is not None and self.stats.sent >= self.max_events:
                break
            _, n, lead, sid, action, arm = heapq.heappop(self._queue)
            eid = f"cl-{self._run}-{n}"
            if action is None:
                ev = {"event_id": eid, "lead_id": lead, "event_type": "session_started",
                      "timestamp": wall.isoformat().replace("+00:00", "Z"),
                      "session_id": sid, "payload": {"device": "ios"}}
            else:
                ev = event(action, lead, sid, eid, wall)
                self.stats.add(arm, action.event_type)
            self.stats.sent += 1
            out.append((lead.encode(), orjson.dumps(ev)))
        return out

    @property
    def done(self) -> bool:
        return self.max_events is not None and self.stats.sent >= self.max_events

    # -- the loop -------------------------------------------------------------------------
    async def run(self, stop: asyncio.Event | None = None,
                  duration: float | None = None) -> LoopStats:
        """Consume ``recommendations`` from its end and publish the reactions until
        ``stop`` is set, ``duration`` seconds passed or ``max_events`` were sent."""
        from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

        s = self.settings
        stop = stop or asyncio.Event()
        consumer = AIOKafkaConsumer(s.topic("recommendations"), group_id=None,
                                    auto_offset_reset="latest", enable_auto_commit=False,
                                    **s.kafka_client_kwargs())
        producer = AIOKafkaProducer(linger_ms=5, **s.kafka_client_kwargs())
        await consumer.start()
        await producer.start()
        t0 = time.monotonic()
        try:
            while not stop.is_set() and not self.done:
                if duration is not None and time.monotonic() - t0 >= duration:
                    break
                batch = await consumer.getmany(timeout_ms=100, max_records=2000)
                now = time.monotonic()
                for msgs in batch.values():
                    for m in msgs:
                        self.on_list(orjson.loads(m.value), now)
                self.tick(now)
                for key, value in self.due_events(now):
                    await producer.send(s.topic("interactions"), value, key=key)
            await producer.flush()
        finally:
            await producer.stop()
            await consumer.stop()
        return self.stats
