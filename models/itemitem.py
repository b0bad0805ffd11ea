"""Item-to-item model: "leads who engaged with this also engaged with that".

When a lead engages positively with listing ``j``, each listing ``i`` among its recent
positive ones gains co-occurrence weight ``min(w_i, w_j)`` with ``j`` (both directions).
Similarity is the cosine ``C[i, j] / sqrt(N[i] * N[j])`` where ``N`` is each listing's
total positive weight. Each listing keeps its ``max_neighbours`` strongest neighbours
(bounded memory: pruned back to the strongest 200, the default, once 250 are held, so at
most about 30 KB for a listing; with 64, each newcomer dropped at once while the list was
full, a listing's list filled early and later co-occurrences could hardly enter it, and
HR@10 on MovieLens 100K fell from 0.202 to 0.190, docs/benchmarks.md). A lead's scores
sum the similarities of its recent listings, the most recent counting most.

>>> m = ItemItemModel()
>>> for lead in ("L1", "L2", "L3"):   # each saves row 0, then books row 1
...     m.learn_one([], 0, 3.0)
...     m.learn_one([(0, 3.0)], 1, 5.0)
>>> s = m.scores([(0, 3.0)], 3)
>>> int(s.argmax()), float(s[2])
(1, 0.0)
>>> m.best_reason([(0, 3.0)], 1)   # cosine 9 / sqrt(9 * 15)
(0, 0.774597)
"""

from __future__ import annotations

import heapq
import math
from operator import itemgetter

import numpy as np
from river import base


class ItemItemModel(base.Base):
    def __init__(self, max_neighbours: int = 200, recency_decay: float = 0.85):
        self.max_neighbours = max_neighbours
        self.recency_decay = recency_decay
        self.co: dict[int, dict[int, float]] = {}
        self.N = np.zeros(0)
        self._arrays: dict[int, tuple[np.ndarray, np.ndarray]] = {}  # see _row_arrays

    def _ensure(self, n: int) -> None:
        if n > len(self.N):
            new = np.zeros(max(n, 2 * len(self.N), 1024))
            new[: len(self.N)] = self.N
            self.N = new

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        del state["_arrays"]  # a cache, rebuilt on demand (and absent from old snapshots)
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state, _arrays={})

    def _row_arrays(self, i: int) -> tuple[np.ndarray, np.ndarray] | None:
        """Row ``i``'s neighbours and co-occurrence weights as arrays, cached until the
        row changes (``_bump``): most rows are ranked against far more often than learnt."""
        got = self._arrays.get(i)
        if got is None:
            nb = self.co.get(i)
            if not nb:
                return None
            got = self._arrays[i] = (np.fromiter(nb.keys(), dtype=np.int64, count=len(nb)),
                              np.fromiter(nb.values(), dtype=np.float64, count=len(nb)))
        return got

    def _bump(self, i: int, j: int, w: float) -> None:
        self._arrays.pop(i, None)
        nb = self.co.setdefault(i, {})
        nb[j] = nb.get(j, 0.0) + w
        if len(nb) > self.max_neighbours + self.max_neighbours // 4:
            # pruned to the strongest ``max_neighbours`` once a quarter more have come in:
            # a newcomer gets a chance to accumulate, and the cost is one selection per
            # max_neighbours / 4 new neighbours, not a scan of the row at each one
            keep = heapq.nlargest(self.max_neighbours, nb.items(), key=itemgetter(1))
            nb.clear()
            nb.update(keep)

    def learn_one(self, recent: list[tuple[int, float]], row: int, weight: float) -> None:
        """``recent``: the lead's recent positive (row, weight), before this event."""
        if weight <= 0:
            return
        self._ensure(row + 1)
        self.N[row] += weight
        for i, wi in recent:
            if i != row:
                w = min(wi, weight)
                self._bump(i, row, w)
                self._bump(row, i, w)

    def scores(self, recent: list[tuple[int, float]], n: int) -> np.ndarray | None:
        """Summed similarity to the lead's recent listings (newest last); None if no signal."""
        if not recent:
            return None
        self._ensure(n)
        idxs, cs, seg = [], [], []  # each recent row's neighbours, weights, row weight
        g = 1.0
        for i, _w in reversed(recent):
            got = self._row_arrays(i)
            if got is not None:
                idxs.append(got[0])
                cs.append(got[1])
                seg.append(g / math.sqrt(max(self.N[i], 1e-9)))
            g *= self.recency_decay
        if not idxs:
            return None
        idx = np.concatenate(idxs)
        # cosine C[i, j] / sqrt(N[i] N[j]), times the recent row's recency weight
        val = (np.concatenate(cs) * np.repeat(seg, [len(a) for a in idxs])
               / np.sqrt(np.maximum(self.N[idx], 1e-9)))
        keep = idx < n
        return np.bincount(idx[keep], weights=val[keep], minlength=n)[:n]  # sums repeats

    def best_reason(self, recent: list[tuple[int, float]], row: int) -> tuple[int, float] | None:
        """The recent listing that contributes most to ``row``'s score, with its similarity."""
        best = None
        co, N = self.co, self.N
        n_row = None
        for i, _w in recent:
            nb = co.get(i)
            c = nb.get(row) if nb else None
            if c:
                if n_row is None:
                    n_row = max(float(N[row]), 1e-9)
                sim = c / math.sqrt(max(float(N[i]), 1e-9) * n_row)
                if best is None or sim > best[1]:
                    best = (i, round(sim, 6))
        return best
