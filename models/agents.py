"""Agent insights: per-agent performance against the team median, with coaching hints.

Workers turn lead events into small *facts* about the lead's agent (``agent-facts`` topic,
keyed by agent id): a lead assigned, hot-lead activity, a contact (with how long a hot
lead waited for it), a response, a booking, a conversion or a loss. One worker holds
every agent's :class:`AgentStats` and publishes :func:`insights` periodically to
``agent-insights``; ``leadstream agents report`` replays the facts with the same code.

>>> team = {a: AgentStats() for a in ("A1", "A2", "A3")}
>>> for a, wait in (("A1", 600), ("A2", 900), ("A3", 3600)):
...     for i in range(4):
...         team[a].add({"kind": "lead", "lead_id": f"{a}-{i}"})
...         team[a].add({"kind": "contact", "lead_id": f"{a}-{i}", "wait": wait})
...         team[a].add({"kind": "response", "lead_id": f"{a}-{i}"})
>>> out = insights(team)
>>> out["A3"]["hints"][0]
'answers hot leads 4.0 times slower than the team median (60 min vs 15 min)'
"""

from __future__ import annotations

import statistics
from dataclasses import asdict, dataclass, field

FACT_KINDS = ("lead", "hot_activity", "contact", "response", "booking", "conversion", "lost")
MAX_WAITS = 200


@dataclass
class AgentStats:
    leads: int = 0
    hot_activity: int = 0
    contacts: int = 0
    responses: int = 0
    bookings: int = 0
    conversions: int = 0
    lost: int = 0
    waits: list[float] = field(default_factory=list)  # seconds a hot lead waited, recent

    def add(self, fact: dict) -> None:
        kind = fact["kind"]
        if kind == "lead":
            self.leads += 1
        elif kind == "hot_activity":
            self.hot_activity += 1
        elif kind == "contact":
            self.contacts += 1
            if fact.get("wait") is not None:
                self.waits.append(float(fact["wait"]))
                del self.waits[:-MAX_WAITS]
        elif kind == "response":
            self.responses += 1
        elif kind == "booking":
            self.bookings += 1
        elif kind == "conversion":
            self.conversions += 1
        elif kind == "lost":
            self.lost += 1

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> AgentStats:
        return cls(**d)

    def figures(self) -> dict[str, float | None]:
        def rate(a: int, b: int) -> float | None:
            return round(a / b, 4) if b else None

        return {
            "leads_handled": float(self.leads),
            "hot_response_minutes": (round(statistics.median(self.waits) / 60, 1)
                                     if self.waits else None),
            "contact_to_response": rate(self.responses, self.contacts),
            "booking_rate": rate(self.bookings, self.leads),
            "conversion_rate": rate(self.conversions, self.leads),
        }


def _hints(fig: dict, med: dict) -> list[str]:
    out = []
    hr, team_hr = fig["hot_response_minutes"], med["hot_response_minutes"]
    if hr is not None and team_hr and hr >= 2 * team_hr:
        out.append(f"answers hot leads {hr / team_hr:.1f} times slower than the team median "
                   f"({hr:.0f} min vs {team_hr:.0f} min)")
    for name, what in (("contact_to_response", "gets answers to"),
                       ("booking_rate", "books viewings for"),
                       ("conversion_rate", "converts")):
        v, m = fig[name], med[name]
        if v is None or not m:
            continue
        noun = "contacts" if name == "contact_to_response" else "leads"
        if v <= 0.7 * m:
            out.append(f"{what} {v:.0%} of {noun} vs {m:.0%} for the team median")
        elif v >= 1.3 * m and name == "conversion_rate":
            out.append(f"converts {v:.0%} of leads, {v / m:.1f} times the team median: "
                       "worth sharing how")
    if hr is not None and team_hr and hr <= 0.5 * team_hr:
        out.append(f"answers hot leads fast ({hr:.0f} min vs {team_hr:.0f} min team median)")
    return out


def insights(team: dict[str, AgentStats]) -> dict[str, dict]:
    """Per agent: each figure with the team median, and coaching hints."""
    figs = {a: s.figures() for a, s in team.items()}
    names = ("leads_handled", "hot_response_minutes", "contact_to_response", "booking_rate",
             "conversion_rate")
    med = {}
    for n in names:
        vals = [f[n] for f in figs.values() if f[n] is not None]
        med[n] = round(statistics.median(vals), 4) if vals else None
    return {a: {"agent_id": a,
                "figures": {n: {"value": f[n], "team_median": med[n]} for n in names},
                "hints": _hints(f, med)}
            for a, f in figs.items()}


def replay(facts) -> dict[str, AgentStats]:
    """Aggregate an iterable of facts (dicts with ``agent_id``)."""
    team: dict[str, AgentStats] = {}
    for fact in facts:
        team.setdefault(fact["agent_id"], AgentStats()).add(fact)
    return team
