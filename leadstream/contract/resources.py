"""Files leadstream ships besides code: ``topics.yaml`` and the JSON Schemas of
``schemas/``. In a source checkout they are the repository's own (at its top level, where
producers and operators find them); a wheel carries a copy inside the package
(``leadstream/_bundled``), read through :mod:`importlib.resources`.

>>> bundled("topics.yaml").name
'topics.yaml'
>>> bundled("schemas/interaction.json").is_file()
True
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

_root = Path(__file__).resolve().parents[2]
SOURCE_ROOT: Path | None = _root if (_root / "pyproject.toml").is_file() \
    and (_root / "topics.yaml").is_file() else None


def bundled(rel: str) -> Path:
    """The shipped file at ``rel`` (as in the repository: ``topics.yaml``,
    ``schemas/recommendation.json``, …)."""
    if SOURCE_ROOT is not None:
        return SOURCE_ROOT / rel
    return Path(str(files("leadstream") / "_bundled" / rel))
