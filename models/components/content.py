"""The content model (``models/content.py``) as a component: listing attributes and
descriptions against the lead's decayed profile, which searches and map views feed too;
the only signal for a listing nobody engaged with yet (cold start)."""

from __future__ import annotations

import numpy as np

from leadstream.contract.events import CONTENT_SIGNALS
from leadstream.models.catalog import money
from leadstream.models.component import Component, Explainer, Observed
from leadstream.models.content import BLOCKS, ContentModel

_BLOCK_NAMES = list(BLOCKS)


class Content(Component):
    name = "content"
    weight = "w_content"
    default_weight = 2.0
    tune_values = (1.0, 2.0, 3.0)
    signals = frozenset(CONTENT_SIGNALS)  # searches and map views name no listing

    def __init__(self, model: ContentModel | None = None):
        self.model = model if model is not None else ContentModel()

    @classmethod
    def from_legacy(cls, state: dict) -> Content | None:
        return cls(state.pop("content")) if "content" in state else None

    def on_listing(self, catalog, row: int, attributes: dict) -> None:
        self.model.upsert(row, attributes)

    def learn(self, obs: Observed) -> None:
        if obs.event.event_type in CONTENT_SIGNALS:
            self._looked_for(obs)
        if obs.row is not None:
            self.model.learn_one(obs.lead_id, obs.row, obs.weight, obs.ts)

    def _looked_for(self, obs: Observed) -> None:
        """A search or a map view: what the lead looks for, into its profile (the types,
        cities, bedrooms and terms a query names; the location of the active listings
        inside a map area)."""
        catalog, event = obs.catalog, obs.event
        payload = event.payload
        if event.event_type == "search_performed":
            vec = self.model.query_vector(payload.query or "", catalog.cities)
        else:
            b = payload.bbox
            n = len(catalog)
            inside = (catalog.active[:n] & (catalog.lat[:n] >= b.min_lat)
                      & (catalog.lat[:n] <= b.max_lat) & (catalog.lon[:n] >= b.min_lon)
                      & (catalog.lon[:n] <= b.max_lon))
            vec = self.model.area_vector(np.flatnonzero(inside))
        if vec is not None:
            self.model.learn_vector(obs.lead_id, vec, CONTENT_SIGNALS[event.event_type],
                                    obs.ts)

    def scores(self, catalog, lead_id, lead) -> np.ndarray | None:
        return self.model.scores(lead_id, len(catalog))

    def weigh(self, scale: float, lead_id: str, lead) -> float:
        return scale * min(1.0, 0.4 + lead.n_positive / 5.0)

    def forget(self, lead_id: str) -> None:
        self.model.forget(lead_id)

    def explainer(self, catalog, lead_id, lead, rows) -> Explainer:
        shares = self.model.importances(lead_id, rows)
        if shares is None:
            return super().explainer(catalog, lead_id, lead, rows)
        order = np.argsort(-shares, axis=1, kind="stable")[:, :3].tolist()  # largest first
        shares = shares.tolist()  # Python floats: compared per row below

        def why(j: int, i: int) -> str | None:
            share = shares[j]
            words = []
            for b in order[j]:
                if share[b] < 0.15:
                    break
                block = _BLOCK_NAMES[b]
                if block == "price":
                    words.append(f"{money(catalog.price[i])} is in your price range")
                elif block == "type":
                    words.append(f"a {catalog.type_of(i)} like those you engage with")
                elif block == "city":
                    words.append(f"in {catalog.city_of(i)}, where you look")
                elif block == "bedrooms":
                    words.append(f"{int(catalog.beds[i])} bedrooms, as you prefer")
                elif block == "text":
                    words.append("described like listings you liked")
                elif block in ("size", "bathrooms"):
                    words.append(f"the {block} you go for")
            return ", ".join(words) if words else None
        return why
