"""Popularity baselines: all-time positive weight per listing, and the same with a 7-day
half-life (forward decay: each weight is stored scaled up by its age from an origin
``t0``, so learning is one addition and no stored value ever decays).

>>> from leadstream.models.component import Observed
>>> p, r = Popularity(), RecentPopularity(half_life=86_400.0)
>>> for ts, row in ((0.0, 0), (86_400.0, 1)):
...     obs = Observed(None, "L", None, None, row, 2.0, ts)
...     p.learn(obs); r.learn(obs)
>>> p.pop[:2].tolist(), r.decayed(2).tolist()   # a day later row 0 counts half
([2.0, 2.0], [1.0, 2.0])
"""

from __future__ import annotations

import numpy as np

from leadstream.models.component import Component, Explainer, Observed


def _grown(a: np.ndarray, n: int) -> np.ndarray:
    if n <= len(a):
        return a
    new = np.zeros(max(n, 2 * len(a), 1024))
    new[: len(a)] = a
    return new


class Popularity(Component):
    """All-time positive weight per listing: a model on its own, not blended; it explains a
    listing no blended component speaks for (``registry.FALLBACK``)."""

    name = "popularity"

    def __init__(self):
        self.pop = np.zeros(0)

    @classmethod
    def from_legacy(cls, state: dict) -> Popularity | None:
        if "pop" not in state:
            return None
        c = cls()
        c.pop = state.pop("pop")
        return c

    def learn(self, obs: Observed) -> None:
        w = obs.weight
        if w > 0:
            row, pop = obs.row, self.pop
            if row >= len(pop):
                pop = self.pop = _grown(pop, row + 1)
            pop[row] += w

    def scores(self, catalog, lead_id, lead) -> np.ndarray:
        n = len(catalog)
        self.pop = _grown(self.pop, n)
        return np.log1p(self.pop[:n])

    def explainer(self, catalog, lead_id, lead, rows) -> Explainer:
        pop = self.pop

        def why(j: int, i: int) -> str:
            hits = pop[i] if i < len(pop) else 0.0
            return (f"popular with other leads ({hits:.0f} interactions)" if hits >= 1
                    else "a new active listing")
        return why


class RecentPopularity(Component):
    """Positive weight with a half-life: dominates a new lead's blend and fades as the
    lead's evidence grows; its scores (x 1e-3) break the hybrid's ties and stand in for a
    model that knows nothing about a lead (``registry.PRIOR``)."""

    name = "recent_popularity"
    weight = "w_popularity"
    default_weight = 0.5
    tune_values = (0.25, 0.5, 1.0)

    def __init__(self, half_life: float = 7 * 86_400.0):
        self.half_life = half_life
        self.recent = np.zeros(0)  # forward-decayed positive weight (origin t0)
        self.t0: float | None = None
        self.t_max = 0.0

    @classmethod
    def create(cls, suite) -> RecentPopularity:
        return cls(half_life=suite.half_life)

    @classmethod
    def from_legacy(cls, state: dict) -> RecentPopularity | None:
        if "recent" not in state:
            return None
        c = cls(half_life=state["half_life"])
        c.recent, c.t0, c.t_max = state.pop("recent"), state.pop("t0"), state.pop("t_max")
        return c

    def learn(self, obs: Observed) -> None:
        w = obs.weight
        if w <= 0:
            return
        self._memo = None
        row, ts, recent, t0, h = obs.row, obs.ts, self.recent, self.t0, self.half_life
        if row >= len(recent):
            recent = self.recent = _grown(recent, row + 1)
        if t0 is None:
            t0 = self.t0 = ts
        if (ts - t0) / h > 200:
            recent *= 2.0 ** (-(ts - t0) / h)
            t0 = self.t0 = ts
        recent[row] += w * 2.0 ** ((ts - t0) / h)
        if ts > self.t_max:
            self.t_max = ts

    def decayed(self, n: int) -> np.ndarray:
        """Each of the first ``n`` rows' weight, decayed to the latest event time."""
        self.recent = _grown(self.recent, n)
        if self.t0 is None:
            return self.recent[:n]
        return self.recent[:n] * 2.0 ** (-(self.t_max - self.t0) / self.half_life)

    def scores(self, catalog, lead_id, lead) -> np.ndarray:
        """The same for every lead, so kept (read-only) until the next positive event or
        catalog growth: a ranking asks twice (its blend and its tie-breaking prior)."""
        n = len(catalog)
        memo = self.__dict__.get("_memo")
        if memo is not None and len(memo) == n:
            return memo
        memo = self._memo = np.log1p(self.decayed(n))
        memo.setflags(write=False)
        return memo

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state.pop("_memo", None)  # derived: not in snapshots
        return state

    def weigh(self, scale: float, lead_id: str, lead) -> float:
        return scale * 1.5 / (1.0 + lead.n_positive / 2.0)

    def explainer(self, catalog, lead_id, lead, rows) -> Explainer:
        week = self.decayed(len(catalog))

        def why(j: int, i: int) -> str:
            return f"popular this week ({week[i]:.0f} weighted interactions)"
        return why
