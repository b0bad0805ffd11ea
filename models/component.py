"""The model-component protocol: what a model does to be learnt, ranked with, blended in
the hybrid and explained by :class:`~leadstream.models.suite.ModelSuite`.

A component is one module of ``models/components/`` with a subclass of
:class:`Component`, listed once in ``models/registry.py``. From that list the suite
learns, ranks and explains, the hybrid blends (in the list's order), and the settings'
weights, ``leadstream evaluate`` (its per-model figures and ``--tune``'s search space)
and the experiment arms take their names.

What a component declares (class attributes) and does (methods; only ``learn`` and
``scores`` have no default):

- ``name``: the model's name (``evaluate``'s figures, an arm's ``model``, metrics);
- ``weight``: its weight parameter in the hybrid (``w_content``; the setting
  ``hybrid_w_content``, env ``LEADSTREAM_HYBRID_W_CONTENT``), ``None`` for a model
  ranked on its own only; ``default_weight``, and ``tune_values`` (``--tune``'s grid);
- ``create(suite)``: a fresh, empty component (the suite's seed and sizes at hand);
  ``from_legacy(state)``: its part of a snapshot pickled before the registry (None: the
  component starts empty);
- ``on_listing(catalog, row, attributes)``: a listing was upserted;
- ``learn(obs)``: one event that names a listing with a non-zero feedback weight
  (:class:`Observed`: its row, the lead's profile *before* it), and the events of the
  types in ``signals`` that do not (``row`` None);
- ``scores(catalog, lead_id, lead)``: one score per catalog row (None: no signal for
  this lead); ``scores_many`` for several leads (by default one at a time);
- ``trusted(n)``: the rows whose standardised score counts in the blend (None: all);
- ``weigh(scale, lead_id, lead)``: its weight in the blend for this lead, from the
  weight ``scale`` (setting times online reliability): the evidence rule;
- ``forget(lead_id)``: drop the lead's state (idle-lead expiry);
- ``refit_job()``: a :class:`~leadstream.models.ease.Refit` when the component's periodic
  refit is due (None: not due, or a component learnt per event only); the suite runs it
  inline (an offline replay) or hands it to the runtime (the worker inverts off the
  event loop);
- ``fitted()``: False while the component can score no lead at all (EASE before its
  first refit): it then does not count in a list's confidence;
- ``explainer(catalog, lead_id, lead, rows)``: a function ``(j, row) -> text | None``
  saying why ``rows[j]`` scored high with this component (set up once per ranking).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

if TYPE_CHECKING:
    from leadstream.features.profile import LeadProfile
    from leadstream.models.catalog import Catalog

#: why a row scored high: ``(j, row) -> text or None`` for ``rows[j] == row``
Explainer = Callable[[int, int], "str | None"]


def _silent(j: int, i: int) -> None:
    return None


@dataclass(slots=True)
class Observed:
    """One event as every component learns from it."""

    catalog: Catalog
    lead_id: str
    profile: LeadProfile  # the lead's state before the event
    event: Any
    row: int | None  # the listing's row; None: no listing, or a feedback weight of 0
    weight: float  # the implicit-feedback weight (0 when ``row`` is None)
    ts: float  # event time, seconds


class Component:
    """Base of every model component (see the module docstring)."""

    name: ClassVar[str]
    weight: ClassVar[str | None] = None
    default_weight: ClassVar[float] = 1.0
    tune_values: ClassVar[tuple[float, ...] | None] = None  # None: half, same, double
    signals: ClassVar[frozenset[str]] = frozenset()  # event types learnt without a listing

    @classmethod
    def create(cls, suite) -> Component:
        return cls()

    @classmethod
    def from_legacy(cls, state: dict) -> Component | None:
        return None

    @classmethod
    def grid(cls) -> tuple[float, ...]:
        """``evaluate --tune``'s values for this component's weight."""
        d = cls.default_weight
        return cls.tune_values if cls.tune_values is not None else (d / 2, d, 2 * d)

    def on_listing(self, catalog: Catalog, row: int, attributes: dict) -> None:
        pass

    def learn(self, obs: Observed) -> None:
        raise NotImplementedError

    def scores(self, catalog: Catalog, lead_id: str, lead: LeadProfile) -> np.ndarray | None:
        raise NotImplementedError

    def scores_many(self, catalog: Catalog, leads: list[tuple[str, LeadProfile]],
                    ) -> list[np.ndarray | None]:
        return [self.scores(catalog, lead_id, lead) for lead_id, lead in leads]

    def trusted(self, n: int) -> np.ndarray | None:
        return None

    def weigh(self, scale: float, lead_id: str, lead: LeadProfile) -> float:
        return scale

    def forget(self, lead_id: str) -> None:
        pass

    def refit_job(self):
        return None

    def fitted(self) -> bool:
        return True

    def explainer(self, catalog: Catalog, lead_id: str, lead: LeadProfile,
                  rows: np.ndarray) -> Explainer:
        return _silent

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"
