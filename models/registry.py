"""The model components, in one list: what ``ModelSuite`` learns, ranks with, blends (in
this order) and explains, and where the settings' weights, ``leadstream evaluate``'s
per-model figures and ``--tune`` grid, and the experiment arms take their names from.

Adding a component is one module of ``models/components/`` (a subclass of
``models.component.Component``) and one line here; a snapshot saved before it loads with
the new component empty. (The order is the hybrid's order of addition: appending keeps
the others' figures bit for bit.)

>>> NAMES
('popularity', 'recent_popularity', 'content', 'itemitem', 'mf', 'ease')
>>> WEIGHTS
{'w_popularity': 0.5, 'w_content': 2.0, 'w_itemitem': 1.0, 'w_mf': 0.7, 'w_ease': 1.0}
"""

from __future__ import annotations

from leadstream.models.component import Component
from leadstream.models.components.content import Content
from leadstream.models.components.ease import Ease
from leadstream.models.components.itemitem import ItemItem
from leadstream.models.components.mf import MatrixFactorisation
from leadstream.models.components.popularity import Popularity, RecentPopularity

COMPONENTS: tuple[type[Component], ...] = (
    Popularity,
    RecentPopularity,
    Content,
    ItemItem,
    MatrixFactorisation,
    Ease,
)

#: every component's model name, in order
NAMES = tuple(c.name for c in COMPONENTS)
#: the components the hybrid blends (those with a weight)
BLENDED = tuple(c for c in COMPONENTS if c.weight is not None)
#: the hybrid's weight parameters and their defaults
WEIGHTS = {c.weight: c.default_weight for c in BLENDED}
#: ``evaluate --tune``'s search space
TUNE_GRID = {c.weight: c.grid() for c in BLENDED}
#: its scores (x 1e-3) break the hybrid's ties and stand in for a model without a signal
PRIOR = "recent_popularity"
#: explains a listing no blended component speaks for
FALLBACK = "popularity"

if len(set(NAMES)) != len(NAMES) or "hybrid" in NAMES:
    raise ValueError(f"component names repeat or name the hybrid: {NAMES}")
if len(WEIGHTS) != len(BLENDED):
    raise ValueError("two components share a weight name")


def unknown_weights(names) -> list[str]:
    """The weight names among ``names`` that no component has.

    >>> unknown_weights(["w_mf", "w_contnet"])
    ['w_contnet']
    """
    return sorted(set(names) - set(WEIGHTS))
