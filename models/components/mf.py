"""Online matrix factorisation (``models/collaborative.py``) as a component: leads with a
taste alike; it counts fully once the lead has 20 positive observations, and only for
listings someone engaged with (the others' factors are untrained)."""

from __future__ import annotations

import numpy as np

from leadstream.models.collaborative import CollaborativeModel
from leadstream.models.component import Component, Explainer, Observed


def _taste(j: int, i: int) -> str:
    return "leads with a taste like yours engaged with it"


class MatrixFactorisation(Component):
    name = "mf"
    weight = "w_mf"
    default_weight = 0.7
    tune_values = (0.35, 0.7, 1.4, 2.8)

    def __init__(self, model: CollaborativeModel | None = None):
        self.model = model if model is not None else CollaborativeModel()

    @classmethod
    def create(cls, suite) -> MatrixFactorisation:
        return cls(CollaborativeModel(n_factors=suite.n_factors, negatives=suite.negatives,
                                      seed=suite.seed))

    @classmethod
    def from_legacy(cls, state: dict) -> MatrixFactorisation | None:
        return cls(state.pop("mf")) if "mf" in state else None

    def learn(self, obs: Observed) -> None:
        catalog = obs.catalog
        pool = catalog.active_rows()
        if len(pool) == 0:  # no catalog (offline replay): sample among every listing seen
            pool = np.arange(len(catalog))
        self.model.learn_one(obs.lead_id, obs.row, obs.event.property_id, obs.weight, pool,
                             catalog.ids)

    def scores(self, catalog, lead_id, lead) -> np.ndarray | None:
        return self.model.scores(lead_id, len(catalog))

    def trusted(self, n: int) -> np.ndarray:
        self.model._ensure(n)
        return self.model.support[:n] > 0

    def weigh(self, scale: float, lead_id: str, lead) -> float:
        return scale * min(1.0, self.model.lead_support.get(lead_id, 0) / 20.0)

    def forget(self, lead_id: str) -> None:
        self.model.forget(lead_id)

    def explainer(self, catalog, lead_id, lead, rows) -> Explainer:
        return _taste
