"""The float-slot layout of a lead's feature state, and its versions.

A lead's features are one flat array of floats (``features/lead.py``): lifetime sums,
decayed windows, one slot per event type and per property type, ... Adding an event type
or a feature moves slots, so a stored state says which layout wrote it: every layout
shipped is recorded, by the name of each slot, in ``features/layouts.json``; decoding a
state of an older layout copies each slot that still exists to its new place by name,
and a slot the old layout did not have (a new event type's count, a new feature's sum)
starts at zero, as it would for a lead that never had such an event.

>>> lay = SlotLayout()
>>> lay.add("first_ts"), lay.add("life_et", 2, ("viewed", "saved")), lay.n
(0, 1, 3)
>>> lay.names
('first_ts', 'life_et.viewed', 'life_et.saved')
>>> new = SlotLayout()
>>> new.add("first_ts"), new.add("life_et", 3, ("viewed", "toured", "saved")), new.add("x")
(0, 1, 4)
>>> list(new.migrate([7.0, 2.0, 5.0], lay.names))
[7.0, 2.0, 0.0, 5.0, 0.0]
"""

from __future__ import annotations

import functools
from array import array
from collections.abc import Sequence
from pathlib import Path

import orjson

HISTORY = Path(__file__).with_name("layouts.json")
"""Every layout shipped: ``{"layouts": [{"version": 1, "slots": [name, ...]}, ...]}``."""


class SlotLayout:
    """Named slots, laid out in the order they are added: ``add`` returns a slot's index
    and sets it as an attribute (``L.life_et`` is the first of the event-type slots)."""

    def __init__(self):
        self.n = 0
        self._names: list[str] = []

    def add(self, name: str, size: int = 1, labels: Sequence[str] | None = None) -> int:
        """Reserve ``size`` slots named ``name`` (one) or ``name.label`` (several; labels
        default to their positions)."""
        labels = [str(k) for k in (labels if labels is not None else range(size))]
        if len(labels) != size:
            raise ValueError(f"{name}: {size} slots, {len(labels)} labels")
        i = self.n
        setattr(self, name, i)
        self._names += [name] if size == 1 and labels == ["0"] else [
            f"{name}.{k}" for k in labels]
        self.n += size
        return i

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self._names)

    def migrate(self, old: Sequence[float], old_names: Sequence[str]) -> array:
        """The slots of a state written with ``old_names``, laid out as this layout: each
        slot copied by name, new ones zero, dropped ones left behind."""
        if len(old) != len(old_names):
            raise ValueError(f"a state of {len(old)} slots for a layout of {len(old_names)}")
        v = array("d", bytes(8 * self.n))
        for new_i, old_i in _moves(self.names, tuple(old_names)):
            v[new_i] = old[old_i]
        return v


@functools.cache
def _moves(new: tuple[str, ...], old: tuple[str, ...]) -> tuple[tuple[int, int], ...]:
    where = {n: i for i, n in enumerate(old)}
    return tuple((i, where[n]) for i, n in enumerate(new) if n in where)


class LayoutHistory:
    """The recorded layouts (``features/layouts.json``), by version.

    >>> h = LayoutHistory({"layouts": [{"version": 1, "slots": ["a", "b"]}]})
    >>> h.version_of(("a", "b")), h.version_of(("a", "b", "c")), h.latest
    (1, None, 1)
    >>> h.with_layout(("a", "b", "c")).slots(2)
    ('a', 'b', 'c')
    """

    def __init__(self, doc: dict):
        self._by_version = {int(e["version"]): tuple(e["slots"]) for e in doc["layouts"]}

    @classmethod
    def load(cls, path: Path = HISTORY) -> LayoutHistory:
        return cls(orjson.loads(path.read_bytes()) if path.is_file() else {"layouts": []})

    @property
    def latest(self) -> int:
        return max(self._by_version, default=0)

    def version_of(self, names: Sequence[str]) -> int | None:
        names = tuple(names)
        return next((v for v, s in self._by_version.items() if s == names), None)

    def slots(self, version: int) -> tuple[str, ...]:
        try:
            return self._by_version[version]
        except KeyError:
            raise ValueError(f"feature state of layout {version}, which this version of "
                             f"leadstream does not know (newest {self.latest})") from None

    def with_layout(self, names: Sequence[str]) -> LayoutHistory:
        """This history with ``names`` recorded as the next version (itself if known)."""
        if self.version_of(names) is not None:
            return self
        doc = self.doc()
        doc["layouts"].append({"version": self.latest + 1, "slots": list(names)})
        return LayoutHistory(doc)

    def doc(self) -> dict:
        return {"layouts": [{"version": v, "slots": list(s)}
                            for v, s in sorted(self._by_version.items())]}

    def dumps(self) -> bytes:
        return orjson.dumps(self.doc(), option=orjson.OPT_INDENT_2) + b"\n"
