"""EASE (``models/ease.py``) as a component: item-to-item weights fitted jointly from every
lead's positive history; it counts once the lead has a few positives, and only for
listings the last refit covers. Its reason names the lead's listing adding most to the
score: "often on the same leads' shortlists as 2-bed condo in Austin at $300k"."""

from __future__ import annotations

from leadstream.models.component import Component, Explainer, Observed
from leadstream.models.ease import EaseModel, Refit

#: the feedback weight of an entry 1 in ``X`` (a save; weaker signals count in proportion)
FULL = 3.0


class Ease(Component):
    name = "ease"
    weight = "w_ease"
    default_weight = 1.0
    tune_values = (0.5, 1.0, 2.0)

    def __init__(self, model: EaseModel | None = None):
        self.model = model if model is not None else EaseModel()

    @classmethod
    def create(cls, suite) -> Ease:
        return cls(EaseModel(refit_every=suite.refit_every))

    def learn(self, obs: Observed) -> None:
        if obs.weight > 0:
            self.model.learn_one(obs.lead_id, obs.row, min(1.0, obs.weight / FULL))

    def refit_job(self) -> Refit | None:
        return self.model.refit_job() if self.model.due() else None

    def scores(self, catalog, lead_id, lead):
        return self.model.scores(lead_id, len(catalog))

    def fitted(self) -> bool:
        return len(self.model.B) > 0

    def trusted(self, n: int):
        return self.model.trusted(n)

    def weigh(self, scale: float, lead_id: str, lead) -> float:
        return scale * min(1.0, len(lead.recent_pos) / 3.0)

    def forget(self, lead_id: str) -> None:
        self.model.forget(lead_id)

    def explainer(self, catalog, lead_id, lead, rows) -> Explainer:
        described: dict[int, str] = {}
        reasons = self.model.best_reasons(lead_id, rows)  # every row's at once

        def why(j: int, i: int) -> str | None:
            best = reasons[j]
            if best is None:
                return None
            if best[0] not in described:
                described[best[0]] = catalog.describe(catalog.ids[best[0]])
            return f"often on the same leads' shortlists as {described[best[0]]}"
        return why
