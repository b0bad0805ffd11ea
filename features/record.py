"""One lead's stored state as one table value: its rolling features and its profile.

The features (``features/lead.py`` bytes, which carry the lead's last handled input
offset) and the recommender profile (``features/profile.py`` JSON) change together on
every applied event. Kept in two tables they were two changelog records, and a worker
killed between the two writes kept one and lost the other for good: on restart the
offset in the features says "already applied", so the event is skipped as a replay and
the profile never gets it. One value per lead makes the update of both atomic (one
changelog record) and halves the changelog writes per event.

>>> blob = pack(b"LF2...features", b'{"event_count": 3}')
>>> unpack(blob)
(b'LF2...features', b'{"event_count": 3}')
>>> unpack(pack(b"LF2...", None))
(b'LF2...', None)
>>> unpack(None)
(None, None)
"""

from __future__ import annotations

import struct

_MAGIC = b"LR1"
_LEN = struct.Struct(">I")  # length of the features part; the profile JSON follows it


def pack(features: bytes, profile: bytes | None) -> bytes:
    """The table value of a lead: features bytes, then profile JSON (absent: empty)."""
    return b"".join((_MAGIC, _LEN.pack(len(features)), features, profile or b""))


def unpack(blob: bytes | None) -> tuple[bytes | None, bytes | None]:
    """``(features, profile)`` of a table value; either is None when absent."""
    if not blob:
        return None, None
    if blob[:3] != _MAGIC:
        raise ValueError("not a leadstream lead record (unknown version)")
    (n,) = _LEN.unpack_from(blob, 3)
    start = 3 + _LEN.size
    features, profile = blob[start:start + n], blob[start + n:]
    return features, profile or None
