"""leadstream: a streaming behavioural-learning engine for real-estate lead platforms.

The repository keeps ``features/``, ``models/``, ``streams/`` and ``ops/`` at its top level;
they are imported as ``leadstream.features``, ``leadstream.models``, ``leadstream.streams``
and ``leadstream.ops`` everywhere, and a wheel installs them there (``pyproject.toml``'s
package-dir mapping), so nothing generic lands in site-packages. In a source checkout the
package's path also covers the repository's top level, which is how the same imports
resolve there (and in a worktree, its own copy).
"""

from __future__ import annotations

from pathlib import Path

_root = Path(__file__).resolve().parent.parent
if (_root / "pyproject.toml").is_file() and (_root / "streams" / "__init__.py").is_file() \
        and not (Path(__file__).resolve().parent / "streams").exists():
    __path__.append(str(_root))  # noqa: F821 (a package's own __path__)
