"""Collaborative filtering: River's online matrix factorisation over implicit feedback.

Every event that names a listing is one observation for River's ``reco.BiasedMF``: the
target is ``tanh(weight / 3)`` (a view says 0.32, a save 0.76, a booking 0.93, a left
swipe -0.46), and ``negatives`` listings drawn at random from the active catalog are
observed with target 0 (unobserved, probably not of interest). The item factors and
biases River learns are mirrored into contiguous numpy arrays whose rows are catalog
rows, so scoring a lead against the whole catalog is one matrix-vector product.

>>> import numpy as np
>>> m = CollaborativeModel(n_factors=4, seed=1)
>>> active = np.array([0, 1, 2])
>>> for _ in range(200):
...     m.learn_one("L1", 0, "A", 3.0, active, ["A", "B", "C"])
...     m.learn_one("L2", 0, "A", 3.0, active, ["A", "B", "C"])
>>> s = m.scores("L1", 3)
>>> int(np.argmax(s))
0
"""

from __future__ import annotations

import math
import random

import numpy as np
from river import base, optim, reco


def target(weight: float) -> float:
    """The regression target of an implicit-feedback weight."""
    return math.tanh(weight / 3.0)


class CollaborativeModel(base.Base):
    def __init__(self, n_factors: int = 16, negatives: int = 2, lr: float = 0.05,
                 l2: float = 0.02, seed: int = 42):
        self.n_factors = n_factors
        self.negatives = negatives
        self.lr = lr
        self.l2 = l2
        self.seed = seed
        self.mf = reco.BiasedMF(
            n_factors=n_factors,
            bias_optimizer=optim.SGD(lr),
            latent_optimizer=optim.SGD(lr),
            l2_bias=l2,
            l2_latent=l2,
            weight_initializer=optim.initializers.Zeros(),
            latent_initializer=optim.initializers.Normal(mu=0.0, sigma=0.05, seed=seed),
            seed=seed,
        )
        self._rng = random.Random(seed)
        self.Q = np.zeros((0, n_factors), dtype=np.float32)
        self.bias = np.zeros(0, dtype=np.float32)
        self.support = np.zeros(0, dtype=np.float32)  # observations per item (positive)
        self.lead_support: dict[str, int] = {}

    def _ensure(self, n: int) -> None:
        if n > len(self.bias):
            cap = max(n, 2 * len(self.bias), 1024)
            Q = np.zeros((cap, self.n_factors), dtype=np.float32)
            Q[: len(self.Q)] = self.Q
            self.Q = Q
            for name in ("bias", "support"):
                old = getattr(self, name)
                new = np.zeros(cap, dtype=np.float32)
                new[: len(old)] = old
                setattr(self, name, new)

    def _observe(self, lead: str, row: int, pid: str, y: float) -> None:
        self.mf.learn_one(lead, pid, y)
        self.Q[row] = self.mf.i_latents[pid]
        self.bias[row] = self.mf.i_biases[pid]

    def learn_one(self, lead: str, row: int, pid: str, weight: float, active_rows: np.ndarray,
                  ids: list[str]) -> None:
        """One event on listing ``row`` (``pid``), plus sampled negatives from ``active_rows``."""
        if weight == 0:
            return
        self._ensure(row + 1)
        self._observe(lead, row, pid, target(weight))
        if weight > 0:
            self.support[row] += 1
            self.lead_support[lead] = self.lead_support.get(lead, 0) + 1
            n = len(active_rows)
            for _ in range(self.negatives if n > 1 else 0):
                j = int(active_rows[self._rng.randrange(n)])
                if j != row:
                    self._ensure(j + 1)
                    self._observe(lead, j, ids[j], 0.0)

    def scores(self, lead: str, n: int) -> np.ndarray | None:
        """Predicted affinity of the lead for every row (None: the lead is unknown)."""
        if lead not in self.mf.u_latents:
            return None
        self._ensure(n)
        p = np.asarray(self.mf.u_latents[lead], dtype=np.float32)
        return self.Q[:n] @ p + self.bias[:n]

    def forget(self, lead: str) -> None:
        for d in (self.mf.u_latents, self.mf.u_biases):
            d.pop(lead, None)
        self.lead_support.pop(lead, None)
