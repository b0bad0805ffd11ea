"""The property catalog as contiguous numpy columns, kept in sync one upsert at a time.

Scoring a lead against every listing is then one vectorised expression over these
columns. A row is created the first time a property id is seen, in an event or a
listing; rows are never moved, so an index stays valid; delisted or unknown properties
have ``active == False``.

>>> from leadstream.contract.events import parse_listing
>>> cat = Catalog(capacity=2)
>>> cat.upsert(parse_listing(b'{"property_id":"P1","status":"active","price":300000,'
...     b'"bedrooms":2,"bathrooms":1,"property_type":"condo","city":"Austin"}'))
0
>>> cat.n_active, cat.describe("P1")
(1, '2-bed condo in Austin at $300k')
>>> cat.index_of("P2")   # seen in an event before its listing: an inactive row
1
>>> bool(cat.active[1]), len(cat)
(False, 2)
"""

from __future__ import annotations

import numpy as np

from leadstream.contract.events import PROPERTY_TYPES

TYPE_CODE = {t: i for i, t in enumerate(PROPERTY_TYPES)}


def money(x: float) -> str:
    """Short price text.

    >>> money(449_000), money(1_250_000)
    ('$449k', '$1.25M')
    """
    if x >= 1_000_000:
        return f"${x / 1_000_000:.3g}M"
    return f"${x / 1000:.0f}k"


class Catalog:
    """Listing attributes in numpy columns; ``index_of`` maps a property id to its row."""

    def __init__(self, capacity: int = 1024):
        self.index: dict[str, int] = {}
        self.ids: list[str] = []
        self.cities: list[str] = []
        self.addresses: dict[int, str] = {}
        self.version = 0  # bumped on every change of the active set
        self._active_rows: tuple[int, np.ndarray] | None = None
        self._city_code: dict[str, int] = {}
        self._cap = 0
        self.price = np.zeros(0)
        self.log_price = np.zeros(0)
        self.beds = np.zeros(0, dtype=np.int16)
        self.baths = np.zeros(0)
        self.sqft = np.zeros(0)  # NaN when unknown, as latitude / longitude
        self.lat = np.zeros(0)
        self.lon = np.zeros(0)
        self.type_code = np.zeros(0, dtype=np.int16)
        self.city_code = np.zeros(0, dtype=np.int32)
        self.active = np.zeros(0, dtype=bool)
        self.known = np.zeros(0, dtype=bool)
        self._grow(max(capacity, 1))
        self._attrs: dict[int, dict] = {}  # attributes() per row, until the row changes

    _COLUMNS = ("price", "log_price", "beds", "baths", "sqft", "lat", "lon", "type_code",
                "city_code", "active", "known")

    def _grow(self, cap: int) -> None:
        for name in self._COLUMNS:
            old = getattr(self, name)
            new = np.zeros(cap, dtype=old.dtype)
            new[: len(old)] = old
            if name in ("type_code", "city_code"):
                new[len(old) :] = -1
            setattr(self, name, new)
        self._cap = cap

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def n_active(self) -> int:
        return int(self.active[: len(self.ids)].sum())

    def index_of(self, property_id: str) -> int:
        """Row of a property, creating an inactive placeholder row if it is new."""
        i = self.index.get(property_id)
        if i is None:
            i = len(self.ids)
            if i >= self._cap:
                self._grow(self._cap * 2)
            self.index[property_id] = i
            self.ids.append(property_id)
        return i

    def upsert(self, listing) -> int:
        """Apply one validated :class:`~leadstream.contract.events.PropertyListing`."""
        i = self.index_of(listing.property_id)
        code = self._city_code.get(listing.city)
        if code is None:
            code = self._city_code[listing.city] = len(self.cities)
            self.cities.append(listing.city)
        self.price[i] = listing.price
        self.log_price[i] = np.log(listing.price)
        self.beds[i] = listing.bedrooms
        self.baths[i] = listing.bathrooms
        nan = float("nan")
        self.sqft[i] = listing.square_feet if listing.square_feet is not None else nan
        self.lat[i] = listing.latitude if listing.latitude is not None else nan
        self.lon[i] = listing.longitude if listing.longitude is not None else nan
        self.type_code[i] = TYPE_CODE[listing.property_type]
        self.city_code[i] = code
        self.active[i] = listing.status == "active"
        self.known[i] = True
        self._attrs.pop(i, None)
        if listing.address:
            self.addresses[i] = listing.address
        else:
            self.addresses.pop(i, None)
        self.version += 1
        return i

    def delete(self, property_id: str) -> None:
        """A tombstone: the listing is gone."""
        i = self.index.get(property_id)
        if i is not None:
            self.active[i] = False
            self._attrs.pop(i, None)
            self.version += 1

    def active_rows(self) -> np.ndarray:
        """Row numbers of the active listings (cached until the catalog changes)."""
        if self._active_rows is None or self._active_rows[0] != self.version:
            self._active_rows = (self.version, np.flatnonzero(self.active[: len(self.ids)]))
        return self._active_rows[1]

    def city_of(self, i: int) -> str | None:
        c = int(self.city_code[i])
        return self.cities[c] if c >= 0 else None

    def type_of(self, i: int) -> str | None:
        c = int(self.type_code[i])
        return PROPERTY_TYPES[c] if c >= 0 else None

    def attributes(self, property_id: str) -> dict | None:
        """Known attributes of one listing, or None (the same dict until the listing
        changes: read it, do not change it).

        >>> from leadstream.contract.events import parse_listing
        >>> cat = Catalog()
        >>> _ = cat.upsert(parse_listing(b'{"property_id":"P1","status":"active",'
        ...     b'"price":300000,"bedrooms":2,"bathrooms":1,"property_type":"condo",'
        ...     b'"city":"Austin"}'))
        >>> cat.attributes("P1")["active"], cat.attributes("P2")
        (True, None)
        >>> cat.delete("P1"); cat.attributes("P1")["active"]
        False
        """
        i = self.index.get(property_id)
        if i is None:
            return None
        got = self._attrs.get(i)
        if got is not None:
            return got
        if not self.known[i]:
            return None
        sqft, lat, lon = float(self.sqft[i]), float(self.lat[i]), float(self.lon[i])
        got = self._attrs[i] = {
            "price": float(self.price[i]),
            "bedrooms": int(self.beds[i]),
            "bathrooms": float(self.baths[i]),
            "square_feet": None if sqft != sqft else sqft,
            "latitude": None if lat != lat or lon != lon else lat,
            "longitude": None if lat != lat or lon != lon else lon,
            "property_type": self.type_of(i),
            "city": self.city_of(i),
            "active": bool(self.active[i]),
        }
        return got

    def describe(self, property_id: str) -> str:
        """The listing's address if known, else a short description, else its id."""
        i = self.index.get(property_id)
        if i is not None and i in self.addresses:
            return self.addresses[i]
        a = self.attributes(property_id)
        if a is None:
            return property_id
        return f"{a['bedrooms']}-bed {a['property_type']} in {a['city']} at {money(a['price'])}"
