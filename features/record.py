"""One lead's stored state as one table value: its rolling features, its profile, and
the last recommendation and lead score published for it.

The features (``features/lead.py`` bytes, which carry the lead's last handled input
offset) and the recommender profile (``features/profile.py`` JSON) change together on
every applied event. Kept in two tables they were two changelog records, and a worker
killed between the two writes kept one and lost the other for good: on restart the
offset in the features says "already applied", so the event is skipped as a replay and
the profile never gets it. One value per lead makes the update of both atomic (one
changelog record) and halves the changelog writes per event.

The value is compressed with Zstandard (level 1): a lead with two weeks of history holds
about 4.8 KB of features and profile, 2.8 KB stored, and about 3.2 KB of published JSON,
0.9 KB stored (``leadstream bench features``), for
about 24 µs per event to compress and decompress (``leadstream bench stages``). A small
uncompressed head keeps what the idle-lead sweep reads (:func:`peek`), so the sweep
never decompresses.

>>> from leadstream.features import lead
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

The last list and score published for the lead (the exact JSON sent to
``recommendations`` and ``lead-scores``, served by ``GET /leads/{id}/recommendations``
and ``/score``) are a frame of their own after the features and profile
(:func:`pack_published`): rewritten only when the lead gets a new list or score, kept
compressed in the decoded lead too, so a write of a lead whose outputs did not change
copies the frame as it is.

>>> frame = pack_published(b'{"recommendation_id": "r1"}', None)
>>> blob = pack(feats, b"{}", frame)
>>> unpack(blob) == (feats, b"{}"), published(blob) == frame
(True, True)
>>> unpack_published(published(blob))
(b'{"recommendation_id": "r1"}', None)
>>> published(pack(feats, b"{}")), unpack_published(None)
(None, (None, None))
"""

from __future__ import annotations

import struct

import zstandard

from leadstream.features import lead

_MAGIC_V1 = b"LR1"  # uncompressed: length of the features part, features, profile JSON
_MAGIC_V2 = b"LR2"  # last_update, open sessions, features length, then one Zstandard frame
# LR3: last_update, open sessions, features length, length of the Zstandard frame of
# features + profile; that frame; then the published frame (absent: nothing), a Zstandard
# frame of: length of the recommendation JSON, the recommendation JSON, the score JSON
_MAGIC = b"LR3"
_LEN = struct.Struct(">I")
_HEAD_V2 = struct.Struct(">dBI")
_HEAD = struct.Struct(">dBII")
_compress = zstandard.ZstdCompressor(level=1).compress  # frames carry their content size
_decompress = zstandard.ZstdDecompressor().decompress


def pack(features: bytes, profile: bytes | None, published_frame: bytes | None = None) -> bytes:
    """The table value of a lead: features bytes, then profile JSON (absent: empty), then
    the frame of its last published outputs (:func:`pack_published`; absent: none)."""
    last_update, open_sessions = lead.peek(features)
    main = _compress(features + (profile or b""))
    return b"".join((_MAGIC, _HEAD.pack(last_update, open_sessions, len(features), len(main)),
                     main, published_frame or b""))


def unpack(blob: bytes | None) -> tuple[bytes | None, bytes | None]:
    """``(features, profile)`` of a table value; either is None when absent."""
    if not blob:
        return None, None
    magic = blob[:3]
    if magic == _MAGIC:
        _, _, n, m = _HEAD.unpack_from(blob, 3)
        start = 3 + _HEAD.size
        body = _decompress(blob[start:start + m])
        return body[:n], body[n:] or None
    if magic == _MAGIC_V2:  # before the published outputs were kept (read, never written)
        n = _HEAD_V2.unpack_from(blob, 3)[2]
        body = _decompress(blob[3 + _HEAD_V2.size:])
        return body[:n], body[n:] or None
    if magic == _MAGIC_V1:  # written before compression (read, never written)
        (n,) = _LEN.unpack_from(blob, 3)
        start = 3 + _LEN.size
        return blob[start:start + n], blob[start + n:] or None
    raise ValueError("not a leadstream lead record (unknown version)")


def published(blob: bytes | None) -> bytes | None:
    """The published-outputs frame of a table value, as stored (None: none, or a record
    written before they were kept)."""
    if not blob or blob[:3] != _MAGIC:
        return None
    end = 3 + _HEAD.size + _HEAD.unpack_from(blob, 3)[3]
    return blob[end:] or None


def pack_published(recommendation: bytes | None, score: bytes | None) -> bytes | None:
    """The frame of a lead's last published recommendation and score JSON (None: neither)."""
    if recommendation is None and score is None:
        return None
    rec = recommendation or b""
    return _compress(b"".join((_LEN.pack(len(rec)), rec, score or b"")))


def unpack_published(frame: bytes | None) -> tuple[bytes | None, bytes | None]:
    """``(recommendation, score)`` JSON of a :func:`pack_published` frame."""
    if not frame:
        return None, None
    body = _decompress(frame)
    (n,) = _LEN.unpack_from(body)
    start = _LEN.size
    return body[start:start + n] or None, body[start + n:] or None


def peek(blob: bytes) -> tuple[float, int]:
    """(wall-clock ``last_update``, open sessions) of a stored value, without unpacking."""
    if blob[:3] == _MAGIC:
        last_update, open_sessions, _, _ = _HEAD.unpack_from(blob, 3)
        return last_update, open_sessions
    if blob[:3] == _MAGIC_V2:
        last_update, open_sessions, _ = _HEAD_V2.unpack_from(blob, 3)
        return last_update, open_sessions
    return lead.peek(unpack(blob)[0])
