"""One lead's stored state as one table value: its rolling features and its profile.

The features (``features/lead.py`` bytes, which carry the lead's last handled input
offset) and the recommender profile (``features/profile.py`` JSON) change together on
every applied event. Kept in two tables they were two changelog records, and a worker
killed between the two writes kept one and lost the other for good: on restart the
offset in the features says "already applied", so the event is skipped as a replay and
the profile never gets it. One value per lead makes the update of both atomic (one
changelog record) and halves the changelog writes per event.

The value is compressed with Zstandard (level 1): a lead with two weeks of history holds
about 4.8 KB of features and profile, 2.8 KB stored (``leadstream bench features``), for
about 24 µs per event to compress and decompress (``leadstream bench stages``). A small
uncompressed head keeps what the idle-lead sweep reads (:func:`peek`), so the sweep
never decompresses.

>>> from features import lead
>>> feats = lead.encode(lead.LeadFeatures())
>>> blob = pack(feats, b'{"event_count": 3}')
>>> unpack(blob) == (feats, b'{"event_count": 3}')
True
>>> peek(blob) == lead.peek(feats)
True
>>> unpack(pack(feats, None)) == (feats, None)
True
>>> unpack(None)
(None, None)
"""

from __future__ import annotations

import struct

import zstandard

from features import lead

_MAGIC_V1 = b"LR1"  # uncompressed: length of the features part, features, profile JSON
_MAGIC = b"LR2"  # last_update, open sessions, features length, then one Zstandard frame
_LEN = struct.Struct(">I")
_HEAD = struct.Struct(">dBI")
_compress = zstandard.ZstdCompressor(level=1).compress  # frames carry their content size
_decompress = zstandard.ZstdDecompressor().decompress


def pack(features: bytes, profile: bytes | None) -> bytes:
    """The table value of a lead: features bytes, then profile JSON (absent: empty)."""
    last_update, open_sessions = lead.peek(features)
    return b"".join((_MAGIC, _HEAD.pack(last_update, open_sessions, len(features)),
                     _compress(features + (profile or b""))))


def unpack(blob: bytes | None) -> tuple[bytes | None, bytes | None]:
    """``(features, profile)`` of a table value; either is None when absent."""
    if not blob:
        return None, None
    magic = blob[:3]
    if magic == _MAGIC:
        n = _HEAD.unpack_from(blob, 3)[2]
        body = _decompress(blob[3 + _HEAD.size:])
        return body[:n], body[n:] or None
    if magic == _MAGIC_V1:  # written before compression (read, never written)
        (n,) = _LEN.unpack_from(blob, 3)
        start = 3 + _LEN.size
        return blob[start:start + n], blob[start + n:] or None
    raise ValueError("not a leadstream lead record (unknown version)")


def peek(blob: bytes) -> tuple[float, int]:
    """(wall-clock ``last_update``, open sessions) of a stored value, without unpacking."""
    if blob[:3] == _MAGIC:
        last_update, open_sessions, _ = _HEAD.unpack_from(blob, 3)
        return last_update, open_sessions
    return lead.peek(unpack(blob)[0])
