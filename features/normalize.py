"""Online normalisation of lead features over the population of leads a worker serves.

Z-score and min-max scalers are River's (``preprocessing.StandardScaler`` and
``MinMaxScaler``): they learn feature means, variances and ranges one vector at a time.
A worker feeds them a sample of its leads' feature vectors (every ``sample_every``-th
applied event, so the cost per event stays small) and applies them when features are
read. A feature with no spread yet scales to 0; min-max values are clipped to [0, 1].

>>> n = FeatureNormalizer(sample_every=1)
>>> for x in (1.0, 2.0, 3.0):
...     n.observe({"events_24h": x})
>>> out = n.transform({"events_24h": 3.0})
>>> out["minmax"]["events_24h"], round(out["zscore"]["events_24h"], 3), out["observed"]
(1.0, 1.225, 3)
"""

from __future__ import annotations

from river import preprocessing


class FeatureNormalizer:
    """Online z-score and min-max scaling of numerical feature dicts."""

    def __init__(self, sample_every: int = 10):
        self.sample_every = max(int(sample_every), 1)
        self.zscore = preprocessing.StandardScaler()
        self.minmax = preprocessing.MinMaxScaler()
        self.observed = 0
        self._tick = 0

    def due(self) -> bool:
        """True once every ``sample_every`` calls: time to :meth:`observe` a vector."""
        self._tick += 1
        if self._tick >= self.sample_every:
            self._tick = 0
            return True
        return False

    def observe(self, numerical: dict[str, float]) -> None:
        self.zscore.learn_one(numerical)
        self.minmax.learn_one(numerical)
        self.observed += 1

    def transform(self, numerical: dict[str, float]) -> dict:
        """``{"zscore": {...}, "minmax": {...}, "observed": n}`` (empty before any sample)."""
        if not self.observed:
            return {"zscore": {}, "minmax": {}, "observed": 0}
        mm = self.minmax.transform_one(numerical)
        return {
            "zscore": self.zscore.transform_one(numerical),
            "minmax": {k: min(max(v, 0.0), 1.0) for k, v in mm.items()},
            "observed": self.observed,
        }
