"""Lead qualification: a behavioural score 0-100 with a tier and its reasons, and the best
time to contact the lead next.

Until ``min_labels`` CRM outcomes (``outcome_recorded``: converted = 1; lost,
unqualified, unreachable = 0; nurturing is not a label) with both classes have been
seen, the score is a documented heuristic over the lead's features::

    z = -3.2 + 0.45 log1p(engagement_7d) + 0.6 log1p(saves_7d) + 1.1 min(bookings, 2)
        + 1.5 min(offers, 1) + 0.6 log1p(contact_clicks_30d) + 0.8 response_ratio
        + 0.35 log1p(sessions_7d) - 0.45 log1p(recency_hours / 24)
    score = 100 * sigmoid(z)

After that, River's online logistic regression (standardised inputs) learned from those
labels over the same inputs gives the probability of conversion. Tiers: hot >= 70,
warm >= 40, cold below. Reasons are the inputs that add most to the score.

>>> s = LeadScorer()
>>> quiet = {"recency_hours": 400.0}
>>> busy = {"engagement_7d": 40.0, "saves_7d": 4.0, "bookings_lifetime": 1.0,
...         "contact_clicks_30d": 1.0, "sessions_7d": 5.0, "recency_hours": 0.5}
>>> s.score(quiet).tier, s.score(busy).tier, s.score(busy).model
('cold', 'hot', 'heuristic-1')
>>> s.score(busy).reasons
['engagement score 40 this week', 'requested 1 viewing', 'saved 4 listings this week']
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from river import base, linear_model, optim, preprocessing

# input name -> (transform, heuristic weight)
INPUTS: dict[str, tuple[str, float]] = {
    "engagement_7d": ("log1p", 0.45),
    "saves_7d": ("log1p", 0.6),
    "bookings_lifetime": ("cap2", 1.1),
    "offers_lifetime": ("cap1", 1.5),
    "contact_clicks_30d": ("log1p", 0.6),
    "response_ratio_lifetime": ("id", 0.8),
    "sessions_7d": ("log1p", 0.35),
    "recency_hours": ("log1p_day", -0.45),
    "active_days_30d": ("log1p", 0.0),
    "decision_ratio_30d": ("id", 0.0),
    "booking_completion_ratio_lifetime": ("id", 0.0),
    "agent_contacts_30d": ("log1p", 0.0),
}
BIAS = -3.2
LABELS = {"converted": True, "lost": False, "unqualified": False, "unreachable": False}


def _tf(kind: str, x: float) -> float:
    if kind == "log1p":
        return math.log1p(max(x, 0.0))
    if kind == "log1p_day":
        return math.log1p(max(x, 0.0) / 24.0)
    if kind == "cap2":
        return min(x, 2.0)
    if kind == "cap1":
        return min(x, 1.0)
    return x


def inputs(numerical: dict[str, float]) -> dict[str, float]:
    """The scorer's inputs from a lead's numerical features."""
    return {k: _tf(kind, float(numerical.get(k, 0.0))) for k, (kind, _) in INPUTS.items()}


def tier(score: float) -> str:
    return "hot" if score >= 70 else "warm" if score >= 40 else "cold"


_PHRASES = {
    "engagement_7d": lambda v: f"engagement score {v:.0f} this week",
    "saves_7d": lambda v: f"saved {v:.0f} listing{'s' if round(v) != 1 else ''} this week",
    "bookings_lifetime": lambda v: f"requested {v:.0f} viewing{'s' if v != 1 else ''}",
    "offers_lifetime": lambda v: f"made {v:.0f} offer{'s' if v != 1 else ''}",
    "contact_clicks_30d": lambda v: "asked to contact an agent",
    "response_ratio_lifetime": lambda v: f"answers {v:.0%} of agent contacts",
    "sessions_7d": lambda v: f"{v:.0f} sessions this week",
    "recency_hours": lambda v: (f"active {v:.0f} h ago" if v < 48
                                else f"quiet for {v / 24:.0f} days"),
    "active_days_30d": lambda v: f"active on {v:.0f} of the last 30 days",
    "decision_ratio_30d": lambda v: "decides on most listings viewed",
    "booking_completion_ratio_lifetime": lambda v: "shows up to viewings",
    "agent_contacts_30d": lambda v: f"contacted {v:.0f} times by agents",
}


def _phrase(name: str, raw: dict[str, float]) -> str:
    f = _PHRASES.get(name)
    return f(raw.get(name, 0.0)) if f else name


@dataclass
class Score:
    score: float
    tier: str
    reasons: list[str]
    model: str
    probability: float = field(default=0.0)
    contrib: dict[str, float] = field(default_factory=dict, repr=False)  # for the reasons


class LeadScorer(base.Base):
    def __init__(self, min_labels: int = 50, lr: float = 0.05, l2: float = 1e-3):
        self.min_labels = min_labels
        self.lr = lr
        self.l2 = l2
        self.scaler = preprocessing.StandardScaler()
        self.model = linear_model.LogisticRegression(optimizer=optim.SGD(lr), l2=l2)
        self.labels = {True: 0, False: 0}

    @property
    def trained(self) -> bool:
        return sum(self.labels.values()) >= self.min_labels and min(self.labels.values()) > 0

    def heuristic(self, x: dict[str, float]) -> tuple[float, dict[str, float]]:
        contrib = {k: w * x[k] for k, (_, w) in INPUTS.items() if w}
        z = BIAS + sum(contrib.values())
        return 1.0 / (1.0 + math.exp(-z)), contrib

    def learn_one(self, numerical: dict[str, float], converted: bool) -> None:
        x = inputs(numerical)
        self.scaler.learn_one(x)
        self.model.learn_one(self.scaler.transform_one(x), converted)
        self.labels[converted] += 1

    def probability(self, numerical: dict[str, float], use_model: bool | None = None) -> float:
        x = inputs(numerical)
        if use_model if use_model is not None else self.trained:
            return float(self.model.predict_proba_one(self.scaler.transform_one(x))[True])
        return self.heuristic(x)[0]

    def score(self, numerical: dict[str, float], explain: bool = True) -> Score:
        """The lead's score, tier and (``explain``: else empty, see ``explain``) the
        reasons for it."""
        x = inputs(numerical)
        if self.trained:
            xs = self.scaler.transform_one(x)
            p = float(self.model.predict_proba_one(xs)[True])
            contrib = {k: self.model.weights.get(k, 0.0) * v for k, v in xs.items()}
            model = f"river-logreg-{sum(self.labels.values())}"
        else:
            p, contrib = self.heuristic(x)
            model = "heuristic-1"
        value = round(100 * p, 1)
        sc = Score(value, tier(value), [], model, p, contrib)
        return self.explain(sc, numerical) if explain else sc

    @staticmethod
    def explain(sc: Score, numerical: dict[str, float]) -> Score:
        """``sc`` with its reasons: the inputs adding most to it, in words."""
        top = [k for k, c in sorted(sc.contrib.items(), key=lambda kv: -kv[1]) if c > 0.05][:3]
        reasons = [_phrase(k, numerical) for k in top]
        if numerical.get("recency_hours", 0.0) >= 72:
            reasons.append(_phrase("recency_hours", numerical))
        sc.reasons = reasons or ["little activity yet"]
        return sc


def contact_at(hours: list[float], event_time: datetime, score: Score,
               numerical: dict[str, float]) -> tuple[datetime, str]:
    """When to contact the lead next, and why.

    ``hours``: the lead's decayed activity per local hour (0-23); ``event_time`` carries
    the lead's UTC offset. Hot leads active in the last hour: in 15 minutes. Otherwise
    the next start of the lead's busiest local hour, at least 15 minutes ahead.

    >>> from datetime import UTC
    >>> h = [0.0] * 24; h[19] = 5.0
    >>> t = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)
    >>> when, why = contact_at(h, t, Score(30, "cold", [], "heuristic-1"), {})
    >>> when.isoformat(), why
    ('2026-03-02T19:00:00+00:00', 'most active around 19:00 local time')
    """
    tz = event_time.tzinfo or UTC
    soon = event_time + timedelta(minutes=15)
    responses = numerical.get("response_ratio_lifetime", 0.0)
    contacts = numerical.get("agent_contacts_30d", 0.0)
    history = ""
    if contacts > 0.5:  # decayed count: about one contact or more
        history = f"; answers {responses:.0%} of agent contacts"
    if score.tier == "hot" and numerical.get("recency_hours", 99.0) < 1.0:
        return soon, "hot and active right now" + history
    if sum(hours) <= 0:
        return soon, "no activity rhythm yet" + history
    best = max(range(24), key=lambda h: (hours[h], -h))
    local = soon.astimezone(tz)
    cand = local.replace(hour=best, minute=0, second=0, microsecond=0)
    if cand < local:
        cand += timedelta(days=1)
    return cand, f"most active around {best:02d}:00 local time" + history
