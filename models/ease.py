"""EASE item model, learnt online: "leads who engaged with what you engaged with also
engaged with this", from every lead's whole positive history at once.

EASE (Steck, "Embarrassingly Shallow Autoencoders for Sparse Data", WWW 2019) fits one
item-to-item weight matrix ``B`` in closed form from the Gram matrix ``G = XᵀX`` of the
lead-by-listing matrix ``X`` (an entry per lead and listing, at most 1: how strongly the
lead engaged with it): ``P = (G + λI)⁻¹``, ``B = -P / diag(P)`` with a zero
diagonal; a lead's scores are ``x @ B`` for its row ``x``. Unlike the item-to-item
cosine (``itemitem.py``) each listing's weights are fitted jointly, so a listing that
co-occurs with everything (a blockbuster) stops explaining everything.

Online: ``G`` is updated on every positive (the listing's row and column gain the lead's
earlier positives, once per lead and listing), and ``B`` is refitted from a copy of ``G``
every ``refit_every`` new positives (:meth:`refit_job`: the inverse runs where the caller
wants it, e.g. off the event loop, and is installed afterwards).

Bounded: ``G`` and ``B`` cover at most ``max_items`` listings (float32, ``8 n²`` bytes for
both: 32 MB at the default 2,048); once the slots are full, a refit frees the quarter
least engaged with (a new listing then takes a freed slot at once); a lead keeps its
newest ``history`` positive listings (8 bytes each: row and value) and forgetting a lead
drops them.

>>> m = EaseModel(refit_every=0, l2=1.0)
>>> for lead in ("L1", "L2", "L3"):   # each engages with rows 0 and 1; L3 also with 2
...     m.learn_one(lead, 0)
...     m.learn_one(lead, 1)
>>> m.learn_one("L3", 2)
>>> m.refit()
>>> s = m.scores("L1", 4)       # L1 has 0 and 1: row 2 is what leads like it also liked
>>> int(s[2:].argmax()) + 2, float(s[3])
(2, 0.0)
>>> m.best_reason("L1", 2)[0] in (0, 1)
True
"""

from __future__ import annotations

from array import array
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from river import base
from scipy.linalg import lapack

#: new positive engagements between refits (``LEADSTREAM_MODEL_REFIT_EVERY``)
REFIT_EVERY = 2000


@dataclass(frozen=True, slots=True)
class Refit:
    """A model refit in two parts: ``compute()`` touches only copies taken when the job
    was made (safe in another thread); ``install(result)`` runs where the model lives."""

    compute: Callable[[], object]
    install: Callable[[object], None]

    def run(self) -> None:
        """Compute and install at once (an offline replay, a test)."""
        self.install(self.compute())


def _spd_inverse(A: np.ndarray) -> np.ndarray:
    """The inverse of a symmetric positive definite ``A`` (float64) by its
    Cholesky factor: half the CPU of ``np.linalg.inv``'s LU at 2,048 listings (0.42 s
    against 0.81), the same ``B`` once stored as float32. ``G + λI`` is one (``λ > 0``);
    should rounding say otherwise, the LU inverse.

    >>> A = np.array([[4.0, 1.0], [1.0, 3.0]])
    >>> bool(np.allclose(_spd_inverse(A.copy()) @ A, np.eye(2)))
    True
    """
    m = len(A)
    if m == 0:
        return A
    c, info = lapack.dpotrf(A, lower=0, clean=0)
    if info == 0:
        P, info = lapack.dpotri(c, lower=0, overwrite_c=1)
        if info == 0:
            lower = np.tril_indices(m, -1)
            P[lower] = P.T[lower]  # dpotri fills the upper triangle
            return P
    return np.linalg.inv(A)


class EaseModel(base.Base):
    def __init__(self, max_items: int = 2048, l2: float = 200.0, refit_every: int = REFIT_EVERY,
                 history: int = 200):
        self.max_items = max_items
        self.l2 = l2
        self.refit_every = refit_every
        self.history = history
        self.G = np.zeros((0, 0), dtype=np.float32)  # slot x slot co-engagement counts
        self.B = np.zeros((0, 0), dtype=np.float32)  # slot x slot weights (last refit)
        self.slot = np.full(0, -1, dtype=np.int32)  # catalog row -> slot (-1: none)
        self.row = np.full(0, -1, dtype=np.int64)  # slot -> catalog row (-1: free)
        self.free: list[int] = []
        self.used = 0  # slots handed out so far (slots below it are taken or in ``free``)
        # lead -> its positive catalog rows (newest last) and their values in X
        self.hist: dict[str, tuple[array, array]] = {}
        self.since = 0  # new positives since the last refit job

    # ---- sizes ----------------------------------------------------------------------
    def _rows(self, n: int) -> None:
        if n > len(self.slot):
            new = np.full(max(n, 2 * len(self.slot), 1024), -1, dtype=np.int32)
            new[: len(self.slot)] = self.slot
            self.slot = new

    def _slot_for(self, row: int) -> int:
        self._rows(row + 1)
        s = int(self.slot[row])
        if s >= 0:
            return s
        if self.free:
            s = self.free.pop()
        elif self.used < self.max_items:
            s = self.used
            self.used += 1
            if s >= len(self.G):
                self._grow(min(self.max_items, max(256, 2 * len(self.G))))
        else:
            return -1  # full until the next refit frees slots
        self.slot[row] = s
        self.row[s] = row
        return s

    def _grow(self, m: int) -> None:
        G = np.zeros((m, m), dtype=np.float32)
        k = len(self.G)
        G[:k, :k] = self.G
        self.G = G
        r = np.full(m, -1, dtype=np.int64)
        r[:k] = self.row
        self.row = r

    # ---- learning -------------------------------------------------------------------
    def learn_one(self, lead_id: str, row: int, value: float = 1.0) -> None:
        """The lead engaged positively with catalog ``row``; ``value`` (at most 1) is its
        entry in ``X`` (a stronger engagement with the same row later raises it)."""
        got = self.hist.get(lead_id)
        if got is None:
            got = self.hist[lead_id] = (array("i"), array("f"))
        rows, vals = got
        try:
            k = rows.index(row)
            old = vals[k]
        except ValueError:
            k, old = -1, 0.0
        if value <= old:
            return
        s = self._slot_for(row)
        if s >= 0:
            if rows:
                sl = self.slot[np.frombuffer(rows, dtype=np.int32)]
                ok = sl >= 0
                if k >= 0:
                    ok[k] = False
                x = (value - old) * np.frombuffer(vals, dtype=np.float32)[ok]
                sl = sl[ok]
                self.G[s, sl] += x
                self.G[sl, s] += x
            self.G[s, s] += value * value - old * old
        if k >= 0:  # the stronger engagement makes it the newest
            del rows[k], vals[k]
        rows.append(row)
        vals.append(value)
        if len(rows) > self.history:
            del rows[0], vals[0]
        self.since += 1

    def due(self) -> bool:
        return self.refit_every > 0 and self.since >= self.refit_every

    def refit_job(self) -> Refit:
        """Free slots if they are full, then a job that inverts a copy of ``G``."""
        self.since = 0
        if self.used >= self.max_items and not self.free:
            self._evict(self.max_items // 4)
        m = self.used
        G = self.G[:m, :m].astype(np.float64)
        l2 = self.l2

        def compute() -> np.ndarray:
            G[np.diag_indices(m)] += l2
            P = _spd_inverse(G)
            B = P / -np.diag(P)
            np.fill_diagonal(B, 0.0)
            return B.astype(np.float32)

        def install(B) -> None:
            self.B = B
        return Refit(compute, install)

    def refit(self) -> None:
        self.refit_job().run()

    def _evict(self, k: int) -> None:
        """Free the ``k`` slots whose listings have the fewest engagements."""
        counts = np.diag(self.G)[: self.used]
        out = np.argsort(counts, kind="stable")[:k]
        self.G[out, :] = 0.0
        self.G[:, out] = 0.0
        fitted = out[out < len(self.B)]  # a listing taking a freed slot before the next
        self.B[fitted, :] = 0.0  # refit is installed must not inherit the old one's weights
        self.B[:, fitted] = 0.0
        self.slot[self.row[out]] = -1
        self.row[out] = -1
        self.free.extend(int(s) for s in out[::-1])

    def forget(self, lead_id: str) -> None:
        self.hist.pop(lead_id, None)

    # ---- scoring --------------------------------------------------------------------
    def _slots(self, lead_id: str) -> tuple[np.ndarray, np.ndarray] | None:
        """The lead's history as slots the last refit covers, and their weights."""
        got = self.hist.get(lead_id)
        if not got or not got[0] or not len(self.B):
            return None
        s = self.slot[np.frombuffer(got[0], dtype=np.int32)]
        ok = (s >= 0) & (s < len(self.B))
        if not ok.any():
            return None
        return s[ok], np.frombuffer(got[1], dtype=np.float32)[ok]

    def scores(self, lead_id: str, n: int) -> np.ndarray | None:
        """``x @ B`` over catalog rows (0 for listings without a slot); None if no signal."""
        got = self._slots(lead_id)
        if got is None:
            return None
        by_slot = (got[1] @ self.B[got[0]]).astype(np.float64)
        rows = self.row[: len(by_slot)]
        ok = (rows >= 0) & (rows < n)
        out = np.zeros(n)
        out[rows[ok]] = by_slot[ok]
        return out

    def trusted(self, n: int) -> np.ndarray:
        """Rows with a slot the last refit covers."""
        self._rows(n)
        s = self.slot[:n]
        return (s >= 0) & (s < len(self.B))

    def best_reasons(self, lead_id: str, rows) -> list[tuple[int, float] | None]:
        """For each of ``rows``: the lead's listing (catalog row) adding most to its score,
        and that weight (None: nothing adds to it), from one product over the lead's
        history (float32 products; the first largest on a tie).

        >>> m = EaseModel(refit_every=0, l2=1.0)
        >>> for lead in ("L1", "L2", "L3"):
        ...     m.learn_one(lead, 0)
        ...     m.learn_one(lead, 1)
        >>> m.learn_one("L3", 2)
        >>> m.refit()
        >>> m.best_reasons("L1", [2, 1, 7])
        [(0, 0.142857), (0, 0.714286), None]
        """
        rows = [int(r) for r in rows]
        out: list[tuple[int, float] | None] = [None] * len(rows)
        got = self._slots(lead_id)
        if got is None:
            return out
        n_slot, n_b = len(self.slot), len(self.B)
        cols, at = [], []
        for k, r in enumerate(rows):
            j = int(self.slot[r]) if r < n_slot else -1
            if 0 <= j < n_b:
                cols.append(j)
                at.append(k)
        if not cols:
            return out
        s, vals = got
        W = self.B[np.ix_(s, cols)] * vals[:, None]  # (the lead's listings x rows)
        best = W.argmax(axis=0).tolist()
        for c, (k, i) in enumerate(zip(at, best, strict=True)):
            w = W[i, c]
            if w > 0:
                out[k] = (int(self.row[s[i]]), round(float(w), 6))
        return out

    def best_reason(self, lead_id: str, row: int) -> tuple[int, float] | None:
        """:meth:`best_reasons` of one row."""
        return self.best_reasons(lead_id, [row])[0]
