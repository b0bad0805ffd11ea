"""Collaborative filtering: online matrix factorisation over implicit feedback, pairwise.

Each lead and each listing has ``n_factors`` latent factors; a listing also has a bias,
kept as the last column of its factor row (the lead's last factor is a constant 1), so a
lead's score of every listing is one matrix-vector product over contiguous rows.

Learning is BPR (Rendle et al., 2009) with several sampled negatives, one vectorised SGD
step per event: after a positive event on listing ``i``, ``negatives`` listings ``j`` are
drawn, a share ``pop_negatives`` of them in proportion to popularity (uniformly from a
ring of the latest positive listings) and the rest uniformly from the pool (the active
catalog), and the step raises ``score(i) - score(j)`` by the gradient of
``log sigmoid(score(i) - score(j))``, weighted by how much the event says
(``tanh(weight / 3)``: a view 0.32, a save 0.76, a booking 0.93). An event with a negative
weight (a left swipe, an unsave) pushes that listing's score down (logistic loss towards
"not interested"). The learning rate decays as ``lr / sqrt(1 + lr_decay * t)`` with ``t``
the number of positive events learnt. The lead's step is ``lead_lr`` times the
listing's. The random draws come from one seeded generator: the same seed and events give
the same factors.

Defaults (docs/benchmarks.md, "On real data: MovieLens 100K"): 24 uniform
negatives, lr 0.035, the lead's step 1.5x, no l2, no decay. Popularity-proportional
negatives (``pop_negatives`` 0.5, the default until 2026-12-02) and a lead step of 2x
were chosen on the simulator, where popularity says little; on MovieLens 100K they held
the model at 0.116 HR@10 against River FunkMF's 0.154 (popular listings pushed down where
popularity is most of the signal), and larger steps diverged there.

>>> import numpy as np
>>> m = CollaborativeModel(n_factors=4, negatives=2, seed=1)
>>> active = np.array([0, 1, 2])
>>> for _ in range(200):
...     m.learn_one("L1", 0, "A", 3.0, active, ["A", "B", "C"])
...     m.learn_one("L2", 0, "A", 3.0, active, ["A", "B", "C"])
>>> s = m.scores("L1", 3)
>>> int(np.argmax(s)), m.scores("nobody", 3)
(0, None)
>>> m.forget("L1"); m.scores("L1", 3) is None
True
"""

from __future__ import annotations

import math

import numpy as np
from river import base
from scipy.special import expit

_DRAWS = 4096  # random integers drawn at a time (one generator call per 4,096 negatives)
_RING = 4096  # candidate negatives held


def target(weight: float) -> float:
    """How much an implicit-feedback weight says, in -1..1: ``tanh(weight / 3)``."""
    return math.tanh(weight / 3.0)


class CollaborativeModel(base.Base):
    def __init__(self, n_factors: int = 32, negatives: int = 24, lr: float = 0.035,
                 l2: float = 0.0, pop_negatives: float = 0.0, lr_decay: float = 0.0,
                 lead_lr: float = 1.5, seed: int = 42):
        self.n_factors = n_factors
        self.negatives = negatives
        self.lr = lr
        self.l2 = l2
        self.pop_negatives = pop_negatives
        self.lr_decay = lr_decay
        self.lead_lr = lead_lr
        self.seed = seed
        self._rng = np.random.default_rng(seed)
        self.Q = np.zeros((0, n_factors + 1))  # listing factors, then the listing's bias
        self.P: dict[str, np.ndarray] = {}  # lead factors, then a constant 1
        self.support = np.zeros(0, dtype=np.float32)  # positive observations per listing
        self.lead_support: dict[str, int] = {}
        self.t = 0  # positive events learnt
        self._draws = np.zeros(0, dtype=np.int64)
        self._next = 0
        self._ring = np.zeros(_RING, dtype=np.int64)  # the latest positive listings
        self._ring_n = 0

    def _ensure(self, n: int) -> None:
        if n > len(self.Q):
            cap = max(n, 2 * len(self.Q), 1024)
            Q = np.zeros((cap, self.n_factors + 1))
            Q[:, :-1] = self._rng.normal(0.0, 0.1, (cap, self.n_factors))
            Q[: len(self.Q)] = self.Q
            s = np.zeros(cap, dtype=np.float32)
            s[: len(self.support)] = self.support
            self.Q, self.support = Q, s

    def _random(self, k: int) -> np.ndarray:
        """``k`` random non-negative integers, from pre-drawn blocks."""
        if self._next + k > len(self._draws):
            self._draws = self._rng.integers(0, 2**31, max(_DRAWS, k))
            self._next = 0
        out = self._draws[self._next: self._next + k]
        self._next += k
        return out

    def _lead(self, lead: str) -> np.ndarray:
        p = self.P.get(lead)
        if p is None:
            p = self.P[lead] = np.ones(self.n_factors + 1)
            p[:-1] = self._rng.normal(0.0, 0.1, self.n_factors)
        return p

    def _negatives(self, pool: np.ndarray) -> np.ndarray:
        """``pop_negatives`` of them from the ring of the latest positive listings (in
        proportion to their recent popularity), the others uniformly from ``pool``."""
        k = self.negatives
        r = self._random(k)
        held = min(self._ring_n, _RING)
        k_pop = int(round(k * self.pop_negatives)) if held else 0
        if k_pop == 0:
            return pool[r % len(pool)]
        out = np.empty(k, dtype=np.int64)
        out[:k_pop] = self._ring[r[:k_pop] % held]
        out[k_pop:] = pool[r[k_pop:] % len(pool)]
        return out

    def learn_one(self, lead: str, row: int, pid: str, weight: float, active_rows: np.ndarray,
                  ids: list[str]) -> None:
        """One event of ``weight`` on listing ``row`` (``pid``); negatives are drawn from
        ``active_rows``; ``ids``: every row's listing id (its length bounds the rows)."""
        if weight == 0:
            return
        if row >= len(self.Q) or len(ids) > len(self.Q):
            self._ensure(max(row + 1, len(ids)))
        p = self.P.get(lead)
        if p is None:
            p = self._lead(lead)
        Q = self.Q
        lr = self.lr / math.sqrt(1.0 + self.lr_decay * self.t) if self.lr_decay else self.lr
        qi = Q[row]
        if weight < 0:  # logistic step towards "not interested" on this listing only
            g = lr * -target(weight) * float(expit(qi @ p))
            dp = g * qi[:-1]
            qi[:-1] -= g * p[:-1] + lr * self.l2 * qi[:-1]
            qi[-1] -= g
            p[:-1] -= dp
            return
        self.support[row] += 1
        self.lead_support[lead] = self.lead_support.get(lead, 0) + 1
        self.t += 1
        if len(active_rows) < 2 or self.negatives <= 0:
            return
        j = self._negatives(active_rows)
        self._ring[self._ring_n % _RING] = row
        self._ring_n += 1
        Qn = Q[j]
        D = Qn - qi  # score(j) - score(i) = D @ p
        g = expit(D @ p) * (lr * target(weight))  # lr * c * sigmoid(-(x_i - x_j)), per j
        # a draw of the positive itself has D = 0: its two steps below cancel out
        dp = g @ D
        if self.l2:
            Qn *= 1.0 - lr * self.l2
            qi *= 1.0 - lr * self.l2
        Qn -= g[:, None] * p
        Q[j] = Qn  # before the positive's row: a draw of it must not undo its step
        qi += np.add.reduce(g) * p
        dp[-1] = 0.0  # the lead's constant
        if self.lead_lr != 1.0:
            dp *= self.lead_lr
        p -= dp

    def scores(self, lead: str, n: int) -> np.ndarray | None:
        """Predicted affinity of the lead for every row (None: the lead is unknown)."""
        p = self.P.get(lead)
        if p is None:
            return None
        self._ensure(n)
        return self.Q[:n] @ p

    def forget(self, lead: str) -> None:
        """Drop the lead's factors and counts."""
        self.P.pop(lead, None)
        self.lead_support.pop(lead, None)
