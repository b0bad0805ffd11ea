"""The event ids a lead remembers, to apply a producer's repeat once: a compact set.

Each id is kept as an 8-byte fingerprint (BLAKE2b of the id) with its event time in
whole seconds, ordered by event time, so what is too old is cut from the front. A lead
remembers an id for ``ttl`` seconds of event time behind its latest event (its
watermark), and at most the ``max_ids`` latest in event time (the latest arrival last
among equal times): :meth:`EventIdSet.add` keeps both bounds.

Memory: 16 bytes per remembered id (8 of fingerprint, 8 of time), at most
``16 * max_ids``. The fingerprints and times are contiguous buffers (a ``bytearray`` and
an ``array('q')``), so storing and loading them is a copy, and membership is one
``bytes.find``. In the stored record (Zstandard) the ascending times shrink to about one
or two bytes each; the fingerprints do not shrink.

False positives: a distinct event is taken as a duplicate only if its fingerprint equals
one of the remembered ones: probability at most ``max_ids / 2**64`` per event (512 ids:
2.8e-17; a billion events a day would see one in about 100 million years).

>>> s = EventIdSet()
>>> for eid, t in (("a", 100), ("b", 300), ("c", 200), ("d", 300)):
...     s.add(fingerprint(eid), t, horizon=0, max_ids=3)
>>> [t for _, t in s], fingerprint("a") in s, fingerprint("c") in s
([200, 300, 300], False, True)
>>> s.add(fingerprint("e"), 400, horizon=300, max_ids=3)  # forget what is before 300
>>> [t for _, t in s]
[300, 300, 400]
>>> EventIdSet.from_bytes(*s.to_bytes()) == s
True
"""

from __future__ import annotations

import hashlib
from array import array
from bisect import bisect_left, bisect_right
from collections.abc import Iterator

FINGERPRINT_BYTES = 8


def fingerprint(event_id: str) -> bytes:
    """The 8-byte fingerprint of an event id (BLAKE2b-64; stored records hold it, so it
    never changes).

    >>> fingerprint("e1").hex()
    '1b5d5e51f54f0f04'
    """
    return hashlib.blake2b(event_id.encode(), digest_size=FINGERPRINT_BYTES).digest()


class EventIdSet:
    """Fingerprints with their event times (whole seconds), ascending in time."""

    __slots__ = ("fp", "ts")

    def __init__(self, fp: bytes = b"", ts: array | None = None):
        self.fp = bytearray(fp)
        self.ts = ts if ts is not None else array("q")
        if len(self.fp) != FINGERPRINT_BYTES * len(self.ts):
            raise ValueError("one 8-byte fingerprint per time")

    def __len__(self) -> int:
        return len(self.ts)

    def __contains__(self, fp: bytes) -> bool:
        buf = self.fp
        i = buf.find(fp)
        while i >= 0:  # a match across two fingerprints does not count
            if i % FINGERPRINT_BYTES == 0:
                return True
            i = buf.find(fp, i + 1)
        return False

    def __iter__(self) -> Iterator[tuple[bytes, int]]:
        """(fingerprint, event time) pairs, oldest first."""
        fp = bytes(self.fp)
        for k, t in enumerate(self.ts):
            yield fp[FINGERPRINT_BYTES * k:FINGERPRINT_BYTES * (k + 1)], t

    def __eq__(self, other: object) -> bool:
        return (isinstance(other, EventIdSet) and self.fp == other.fp
                and self.ts == other.ts)

    def __repr__(self) -> str:
        return f"EventIdSet({len(self)} ids)"

    def add(self, fp: bytes, t: int, horizon: float, max_ids: int) -> None:
        """Remember ``fp`` at event time ``t`` (after the ids of equal time), then forget
        the ids older than ``horizon`` and all but the ``max_ids`` latest."""
        ts = self.ts
        if not ts or t >= ts[-1]:
            self.fp += fp
            ts.append(t)
        else:
            i = bisect_right(ts, t)
            self.fp[FINGERPRINT_BYTES * i:FINGERPRINT_BYTES * i] = fp
            ts.insert(i, t)
        cut = max(bisect_left(ts, horizon) if ts[0] < horizon else 0, len(ts) - max_ids)
        if cut > 0:
            del self.fp[:FINGERPRINT_BYTES * cut], ts[:cut]

    def to_bytes(self) -> tuple[bytes, bytes]:
        """(fingerprints, times as native int64): the stored form, both plain copies."""
        return bytes(self.fp), self.ts.tobytes()

    @classmethod
    def from_bytes(cls, fp: bytes, ts: bytes) -> EventIdSet:
        times = array("q")
        times.frombytes(ts)
        return cls(fp, times)

    @classmethod
    def from_pairs(cls, pairs) -> EventIdSet:
        """From (fingerprint, time) pairs in any order; kept in time order (stable)."""
        pairs = sorted(pairs, key=lambda p: p[1])
        return cls(b"".join(p[0] for p in pairs), array("q", (p[1] for p in pairs)))
