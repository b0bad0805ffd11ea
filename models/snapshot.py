"""Versioned model snapshots on disk, with a manifest naming the current version.

A snapshot is one pickle of the model suite plus the catalog row order it was trained
with (rows are positions in contiguous arrays, so a restored model needs the same rows);
``manifest.json`` lists every kept version and which one is current. Saving makes the
new version current; ``rollback(v)`` makes an older one current again (a running worker
notices and loads it; the next snapshot is saved on top of it as a new version).

>>> import tempfile
>>> store = SnapshotStore(tempfile.mkdtemp())
>>> store.save({"weights": [1, 2]}, ["P1"], {"events_learned": 10})
1
>>> store.save({"weights": [3, 4]}, ["P1", "P2"], {"events_learned": 20})
2
>>> store.rollback(1)["current"]
1
>>> obj, rows, meta = store.load()
>>> obj, rows, meta["version"]
({'weights': [1, 2]}, ['P1'], 1)
"""

from __future__ import annotations

import os
import pickle
import time
from pathlib import Path
from typing import Any

import orjson

from leadstream.contract.events import LeadstreamError


class SnapshotError(LeadstreamError):
    pass


class SnapshotStore:
    def __init__(self, directory: str | os.PathLike, keep: int = 20):
        self.dir = Path(directory)
        self.keep = keep

    @property
    def manifest_path(self) -> Path:
        return self.dir / "manifest.json"

    def manifest(self) -> dict:
        try:
            return orjson.loads(self.manifest_path.read_bytes())
        except FileNotFoundError:
            return {"current": None, "versions": []}

    def _write_manifest(self, m: dict) -> None:
        tmp = self.manifest_path.with_suffix(".tmp")
        tmp.write_bytes(orjson.dumps(m, option=orjson.OPT_INDENT_2))
        os.replace(tmp, self.manifest_path)

    def _path(self, version: int) -> Path:
        return self.dir / f"v{version:06d}.pkl"

    def save(self, obj: Any, catalog_ids: list[str], meta: dict | None = None) -> int:
        """Write a new version and make it current; returns its number."""
        self.dir.mkdir(parents=True, exist_ok=True)
        m = self.manifest()
        version = max((v["version"] for v in m["versions"]), default=0) + 1
        blob = pickle.dumps({"model": obj, "catalog_ids": list(catalog_ids)},
                            protocol=pickle.HIGHEST_PROTOCOL)
        tmp = self._path(version).with_suffix(".tmp")
        tmp.write_bytes(blob)
        os.replace(tmp, self._path(version))
        entry = {"version": version, "created": time.time(), "parent": m["current"],
                 "bytes": len(blob), **(meta or {})}
        m["versions"].append(entry)
        m["current"] = version
        while len(m["versions"]) > self.keep:
            old = m["versions"].pop(0)
            if old["version"] != m["current"]:
                self._path(old["version"]).unlink(missing_ok=True)
        self._write_manifest(m)
        return version

    def rollback(self, version: int) -> dict:
        """Make ``version`` current again; returns the manifest."""
        m = self.manifest()
        if not any(v["version"] == version for v in m["versions"]):
            known = ", ".join(str(v["version"]) for v in m["versions"]) or "none"
            raise SnapshotError(f"no snapshot version {version} in {self.dir} (kept: {known})")
        m["rolled_back_from"] = m["current"]
        m["current"] = version
        self._write_manifest(m)
        return m

    def load(self, version: int | None = None) -> tuple[Any, list[str], dict]:
        """(model, catalog row order, manifest entry) of ``version`` (default: current)."""
        m = self.manifest()
        version = m["current"] if version is None else version
        if version is None:
            raise SnapshotError(f"no snapshot in {self.dir}")
        entry = next((v for v in m["versions"] if v["version"] == version), None)
        if entry is None:
            raise SnapshotError(f"no snapshot version {version} in {self.dir}")
        with open(self._path(version), "rb") as fh:
            data = _Unpickler(fh).load()  # our own files
        return data["model"], data["catalog_ids"], entry


class _Unpickler(pickle.Unpickler):
    """Snapshots written before the packages moved under the ``leadstream`` namespace name
    their classes ``models.…`` (and ``features.…``): read them as ``leadstream.models.…``;
    and the contract's modules moved from ``leadstream.`` to ``leadstream.contract.``.

    >>> _Unpickler.moved("models.suite")
    'leadstream.models.suite'
    >>> _Unpickler.moved("leadstream.events")
    'leadstream.contract.events'
    >>> _Unpickler.moved("numpy.core.multiarray")
    'numpy.core.multiarray'
    """

    OLD = ("features", "models", "streams", "ops")
    CONTRACT = ("events", "outputs", "settings", "resources")

    @classmethod
    def moved(cls, module: str) -> str:
        parts = module.split(".")
        if parts[0] == "leadstream" and len(parts) == 2 and parts[1] in cls.CONTRACT:
            return f"leadstream.contract.{parts[1]}"
        return f"leadstream.{module}" if parts[0] in cls.OLD else module

    def find_class(self, module, name):
        return super().find_class(self.moved(module), name)
