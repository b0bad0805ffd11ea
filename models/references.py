"""Reference models for offline evaluation: River's own matrix factorisations as River ships
them, fed implicit feedback with sampled negatives.

They are not part of the recommender: ``leadstream evaluate`` replays the same stream
through them so that every figure of ours has a reference beside it. Every event on a
listing is one River ``learn_one``: target 1 for a positive weight (a view as much as a
booking), 0 for a negative one (a left swipe); after a positive, ``negatives`` listings
drawn uniformly from the pool (the active catalog; without one, every listing seen) are
learnt with target 0. Learning is River's alone; ranking mirrors each listing's learnt
factors (and bias) into a numpy array as River's ``predict_one`` would use them, so a
lead is ranked against every listing with one product. The per-lead terms (global mean,
lead bias) do not change a lead's ranking and are left out; a listing River never
learnt scores 0.

>>> import numpy as np
>>> ref = RiverReference("funkmf", n_factors=4, negatives=2, seed=1)
>>> pool = np.arange(3)
>>> for _ in range(100):
...     ref.learn_one("L1", 0, "A", 3.0, pool, ["A", "B", "C"])
>>> int(np.argmax(ref.scores("L1", 3))), ref.scores("nobody", 3)
(0, None)
>>> ref.describe()
'River reco.FunkMF: 4 factors, SGD lr 0.1, 2 sampled negatives (uniform), l2 0.0'
"""

from __future__ import annotations

import random

import numpy as np
from river import base, optim, reco

KINDS = {"funkmf": "FunkMF", "biasedmf": "BiasedMF"}


class RiverReference(base.Base):
    """River's ``reco.FunkMF`` or ``reco.BiasedMF`` with uniformly sampled negatives."""

    def __init__(self, kind: str = "funkmf", n_factors: int = 32, lr: float = 0.1,
                 negatives: int = 16, l2: float = 0.0, seed: int = 42):
        if kind not in KINDS:
            raise ValueError(f"unknown reference {kind!r} (one of {', '.join(KINDS)})")
        self.kind = kind
        self.n_factors = n_factors
        self.lr = lr
        self.negatives = negatives
        self.l2 = l2
        self.seed = seed
        init = optim.initializers.Normal(mu=0.0, sigma=0.1, seed=seed)
        if kind == "funkmf":
            self.mf = reco.FunkMF(n_factors=n_factors, optimizer=optim.SGD(lr), l2=l2,
                                  initializer=init, seed=seed)
        else:
            self.mf = reco.BiasedMF(n_factors=n_factors, bias_optimizer=optim.SGD(lr),
                                    latent_optimizer=optim.SGD(lr), l2_bias=l2, l2_latent=l2,
                                    latent_initializer=init, seed=seed)
        self._rng = random.Random(seed)
        self.Q = np.zeros((0, n_factors))
        self.bias = np.zeros(0)

    def describe(self) -> str:
        return (f"River reco.{KINDS[self.kind]}: {self.n_factors} factors, SGD lr {self.lr}, "
                f"{self.negatives} sampled negatives (uniform), l2 {self.l2}")

    def settings(self) -> dict:
        return {"model": f"river.reco.{KINDS[self.kind]}", **self._get_params(),
                "negative_sampling": "uniform"}

    def _ensure(self, n: int) -> None:
        if n > len(self.bias):
            cap = max(n, 2 * len(self.bias), 1024)
            Q = np.zeros((cap, self.n_factors))
            Q[: len(self.Q)] = self.Q
            b = np.zeros(cap)
            b[: len(self.bias)] = self.bias
            self.Q, self.bias = Q, b

    def _observe(self, lead: str, row: int, pid: str, y: float) -> None:
        mf = self.mf
        mf.learn_one(lead, pid, y)
        self.Q[row] = mf.i_latents[pid]
        if self.kind == "biasedmf":
            self.bias[row] = mf.i_biases[pid]

    def learn_one(self, lead: str, row: int, pid: str, weight: float, pool: np.ndarray,
                  ids: list[str]) -> None:
        """One event of weight ``weight`` on listing ``row`` (``pid``); ``pool``: the rows
        negatives are drawn from; ``ids``: every row's listing id."""
        if weight == 0:
            return
        self._ensure(row + 1)
        self._observe(lead, row, pid, 1.0 if weight > 0 else 0.0)
        n = len(pool)
        if weight > 0 and n > 1:
            for _ in range(self.negatives):
                j = int(pool[self._rng.randrange(n)])
                if j != row:
                    self._ensure(j + 1)
                    self._observe(lead, j, ids[j], 0.0)

    def scores(self, lead: str, n: int) -> np.ndarray | None:
        """The lead's score of every row (None: River has not learnt this lead)."""
        u = self.mf.u_latents.get(lead)
        if u is None:
            return None
        self._ensure(n)
        return self.Q[:n] @ np.asarray(u, dtype=np.float64) + self.bias[:n]

    def forget(self, lead: str) -> None:
        self.mf.u_latents.pop(lead, None)
        if self.kind == "biasedmf":
            self.mf.u_biases.pop(lead, None)


#: the references ``leadstream evaluate`` reports, with the issue's settings
REFERENCES = {
    "river_funkmf": {"kind": "funkmf", "n_factors": 32, "lr": 0.1, "negatives": 16},
    "river_biasedmf": {"kind": "biasedmf", "n_factors": 32, "lr": 0.1, "negatives": 16},
}
