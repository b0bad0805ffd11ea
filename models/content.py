"""Content model: listings as attribute vectors, leads as decayed preference profiles.

A listing's vector has blocks — price (soft bins of log price), bedrooms, bathrooms, size,
property type, city (hashed), and description text (River's online TF-IDF, terms hashed
into a fixed number of dimensions) — each scaled to unit length. A lead's profile is the
exponentially decayed sum of the vectors of listings it engaged with, weighted by the
implicit-feedback weight (negative for rejections), so it follows a lead whose taste
drifts (half-life ``half_life`` seconds of event time). A listing's score is the cosine
between the two; the per-block terms of that dot product are the feature importances
the explanations use.

>>> import numpy as np
>>> m = ContentModel()
>>> a = m.vector({"price": 400e3, "bedrooms": 2, "bathrooms": 1, "square_feet": 900,
...               "property_type": "condo", "city": "Austin", "description": "bright condo"})
>>> b = m.vector({"price": 410e3, "bedrooms": 2, "bathrooms": 1, "square_feet": 950,
...               "property_type": "condo", "city": "Austin", "description": "sunny condo"})
>>> c = m.vector({"price": 1.2e6, "bedrooms": 5, "bathrooms": 4, "square_feet": 4000,
...               "property_type": "house", "city": "Denver", "description": "large house"})
>>> bool(a @ b > a @ c)
True
"""

from __future__ import annotations

import math
import re
import zlib

import numpy as np
from river import base, feature_extraction

from leadstream.contract.events import PROPERTY_TYPES

PRICE_BINS = 16  # log price 11.0 (60k) .. 15.0 (3.3M) in steps of 0.25
BED_BINS = 6
BATH_BINS = 5
SQFT_BINS = 6
CITY_BINS = 16
TEXT_DIMS = 24
BLOCKS: dict[str, tuple[int, int]] = {}
_o = 0
for _name, _n in (("price", PRICE_BINS), ("bedrooms", BED_BINS), ("bathrooms", BATH_BINS),
                  ("size", SQFT_BINS), ("type", len(PROPERTY_TYPES)), ("city", CITY_BINS),
                  ("text", TEXT_DIMS)):
    BLOCKS[_name] = (_o, _o + _n)
    _o += _n
DIM = _o
# how much each block counts in the similarity
BLOCK_WEIGHT = {"price": 1.4, "bedrooms": 0.8, "bathrooms": 0.4, "size": 0.5, "type": 1.0,
                "city": 1.2, "text": 0.5}
_TYPE = {t: i for i, t in enumerate(PROPERTY_TYPES)}
_BLOCK_SUM = np.zeros((DIM, len(BLOCKS)), dtype=np.float32)  # x * p @ this: per-block dots
for _j, (_lo, _hi) in enumerate(BLOCKS.values()):
    _BLOCK_SUM[_lo:_hi, _j] = 1.0


def _soft(vec: np.ndarray, start: int, n: int, x: float) -> None:
    """Triangular soft assignment of ``x`` (in bin units) to bins ``start..start+n``."""
    x = min(max(x, 0.0), n - 1.0)
    lo = int(math.floor(x))
    frac = x - lo
    vec[start + lo] += 1.0 - frac
    if frac > 0 and lo + 1 < n:
        vec[start + lo + 1] += frac


def _scaled(v: np.ndarray) -> np.ndarray:
    """Each block of ``v`` scaled to the square root of its weight in the similarity."""
    for name, (lo, hi) in BLOCKS.items():
        norm = float(np.linalg.norm(v[lo:hi]))
        if norm > 0:
            v[lo:hi] *= math.sqrt(BLOCK_WEIGHT[name]) / norm
    return v


class ContentModel(base.Base):
    """Listing vectors in a contiguous matrix (rows = catalog rows) and lead profiles."""

    def __init__(self, half_life: float = 14 * 86_400.0):
        self.half_life = half_life
        self.tfidf = feature_extraction.TFIDF(normalize=True)
        self.X = np.zeros((0, DIM), dtype=np.float32)
        self.has = np.zeros(0, dtype=bool)
        self.leads: dict[str, tuple[np.ndarray, float]] = {}  # lead -> (profile, ts)

    # ---- listings -------------------------------------------------------------------
    def vector(self, a: dict) -> np.ndarray:
        v = np.zeros(DIM, dtype=np.float32)
        s, n = BLOCKS["price"][0], PRICE_BINS
        _soft(v, s, n, (math.log(a["price"]) - 11.0) / 0.25)
        _soft(v, BLOCKS["bedrooms"][0], BED_BINS, float(a["bedrooms"]))
        _soft(v, BLOCKS["bathrooms"][0], BATH_BINS, float(a.get("bathrooms") or 0) - 0.5)
        sq = a.get("square_feet")
        if sq:
            _soft(v, BLOCKS["size"][0], SQFT_BINS, (math.log(sq) - 6.0) / 0.4)
        v[BLOCKS["type"][0] + _TYPE[a["property_type"]]] = 1.0
        v[BLOCKS["city"][0] + zlib.crc32(a["city"].lower().encode()) % CITY_BINS] = 1.0
        text = a.get("description") or ""
        amen = a.get("amenities") or []
        doc = " ".join([text, *amen]).strip()
        if doc:
            self.tfidf.learn_one(doc)
            t0 = BLOCKS["text"][0]
            for term, w in self.tfidf.transform_one(doc).items():
                v[t0 + zlib.crc32(term.encode()) % TEXT_DIMS] += w
        return _scaled(v)

    def query_vector(self, query: str, cities: list[str]) -> np.ndarray | None:
        """A search as a listing-like vector: the property types, the cities (of
        ``cities``, the catalog's) and the bedroom count its words name, and its words'
        TF-IDF terms; None when it names none of them.

        >>> m = ContentModel()
        >>> q = m.query_vector("2 bed condo in Austin", ["Austin", "Denver"])
        >>> a = m.vector({"price": 4e5, "bedrooms": 2, "bathrooms": 1,
        ...               "property_type": "condo", "city": "Austin"})
        >>> d = m.vector({"price": 4e5, "bedrooms": 4, "bathrooms": 1,
        ...               "property_type": "house", "city": "Denver"})
        >>> bool(q @ a > q @ d), m.query_vector("", ["Austin"])
        (True, None)
        """
        text = query.lower()
        words = set(re.findall(r"[a-z0-9_]+", text))
        v = np.zeros(DIM, dtype=np.float32)
        for t, i in _TYPE.items():
            if t in words or t.replace("_", " ") in text:
                v[BLOCKS["type"][0] + i] = 1.0
        for city in cities:
            if city and city.lower() in text:
                v[BLOCKS["city"][0] + zlib.crc32(city.lower().encode()) % CITY_BINS] = 1.0
        beds = re.search(r"\b(\d)\s*(?:bed|beds|bedroom|bedrooms|br|bd)\b", text)
        if beds:
            _soft(v, BLOCKS["bedrooms"][0], BED_BINS, float(beds.group(1)))
        if text.strip():
            t0 = BLOCKS["text"][0]
            for term, w in self.tfidf.transform_one(text).items():
                v[t0 + zlib.crc32(term.encode()) % TEXT_DIMS] += w
        return _scaled(v) if v.any() else None

    def area_vector(self, rows: np.ndarray) -> np.ndarray | None:
        """Where a lead looked on the map: the mean location (city block) of the listings
        at ``rows`` (those inside the area), None when there are none with a vector."""
        rows = np.asarray(rows, dtype=np.int64)
        rows = rows[(rows < len(self.has))]
        rows = rows[self.has[rows]] if len(rows) else rows
        if len(rows) == 0:
            return None
        lo, hi = BLOCKS["city"]
        v = np.zeros(DIM, dtype=np.float32)
        v[lo:hi] = self.X[rows, lo:hi].mean(axis=0)
        return _scaled(v) if v.any() else None

    def upsert(self, row: int, attributes: dict) -> None:
        self._ensure(row + 1)
        self.X[row] = self.vector(attributes)
        self.has[row] = True

    def _ensure(self, n: int) -> None:
        if n > len(self.X):
            cap = max(n, 2 * len(self.X), 1024)
            X = np.zeros((cap, DIM), dtype=np.float32)
            X[: len(self.X)] = self.X
            has = np.zeros(cap, dtype=bool)
            has[: len(self.has)] = self.has
            self.X, self.has = X, has

    # ---- leads ----------------------------------------------------------------------
    def learn_one(self, lead: str, row: int, weight: float, ts: float) -> None:
        if row >= len(self.has) or not self.has[row] or weight == 0:
            return
        self.learn_vector(lead, self.X[row], weight, ts)

    def learn_vector(self, lead: str, vec: np.ndarray, weight: float, ts: float) -> None:
        """Add ``vec`` (a listing's vector, or a search's or map area's) to the lead's
        profile with ``weight``, decayed to the lead's latest event time."""
        if weight == 0:
            return
        prof = self.leads.get(lead)
        if prof is None:
            p, t = np.zeros(DIM, dtype=np.float32), ts
        else:
            p, t = prof
            if ts > t:
                p = p * np.float32(0.5 ** ((ts - t) / self.half_life))
                t = ts
        w = weight * 0.5 ** (max(t - ts, 0.0) / self.half_life)
        p = p + np.float32(w) * vec
        self.leads[lead] = (p, t)

    def profile(self, lead: str) -> np.ndarray | None:
        prof = self.leads.get(lead)
        return None if prof is None else prof[0]

    def scores(self, lead: str, n: int) -> np.ndarray | None:
        """Cosine of every listing row with the lead's profile (None: no profile yet)."""
        p = self.profile(lead)
        if p is None:
            return None
        norm = float(np.linalg.norm(p))
        if norm == 0:
            return None
        self._ensure(n)
        return self.X[:n] @ (p / norm)

    def importances(self, lead: str, rows: np.ndarray) -> np.ndarray | None:
        """Each block's share of each row's (positive) similarity with the lead: (rows x
        blocks) shares in ``BLOCKS`` order, 0 where a block's term is not positive or the
        row has no vector (None: the lead has no profile)."""
        p = self.profile(lead)
        if p is None:
            return None
        rows = np.asarray(rows, dtype=np.int64)
        n = len(self.has)
        known = ((rows < n) & self.has[np.minimum(rows, n - 1)] if n
                 else np.zeros(len(rows), dtype=bool))
        terms = (self.X[np.where(known, rows, 0)] * p) @ _BLOCK_SUM  # (rows x blocks)
        terms = np.where(known[:, None] & (terms > 0), terms, 0.0)
        tot = terms.sum(axis=1, keepdims=True)
        return np.divide(terms, tot, out=np.zeros_like(terms), where=tot > 0)

    def forget(self, lead: str) -> None:
        self.leads.pop(lead, None)
