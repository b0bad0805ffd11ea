"""Item-to-item co-occurrence (``models/itemitem.py``) as a component: "leads who liked
this also engaged with that", against the lead's recent positive listings; it counts
once the lead has a few of them."""

from __future__ import annotations

import numpy as np

from leadstream.models.component import Component, Explainer, Observed
from leadstream.models.itemitem import ItemItemModel


def recent_rows(catalog, profile) -> list[tuple[int, float]]:
    """The lead's recent positive listings as (catalog row, weight), oldest first."""
    out = []
    for pid, w in profile.recent_pos:
        i = catalog.index.get(pid)
        if i is not None:
            out.append((i, w))
    return out


class ItemItem(Component):
    name = "itemitem"
    weight = "w_itemitem"
    default_weight = 1.0
    tune_values = (0.5, 1.0, 2.0)

    def __init__(self, model: ItemItemModel | None = None):
        self.model = model if model is not None else ItemItemModel()

    @classmethod
    def from_legacy(cls, state: dict) -> ItemItem | None:
        return cls(state.pop("itemitem")) if "itemitem" in state else None

    def learn(self, obs: Observed) -> None:
        if obs.weight > 0:  # (the model learns positives only)
            self.model.learn_one(recent_rows(obs.catalog, obs.profile), obs.row, obs.weight)

    def scores(self, catalog, lead_id, lead) -> np.ndarray | None:
        return self.model.scores(recent_rows(catalog, lead), len(catalog))

    def weigh(self, scale: float, lead_id: str, lead) -> float:
        return scale * 0.8 * min(1.0, len(lead.recent_pos) / 3.0)

    def explainer(self, catalog, lead_id, lead, rows) -> Explainer:
        recent = recent_rows(catalog, lead)
        described: dict[int, str] = {}

        def why(j: int, i: int) -> str | None:
            best = self.model.best_reason(recent, i)
            if best is None:
                return None
            if best[0] not in described:
                described[best[0]] = catalog.describe(catalog.ids[best[0]])
            return f"leads who liked {described[best[0]]} also engaged with this"
        return why
