"""The rich console the commands print with: the terminal's width on a terminal, and
wide enough never to wrap or truncate a table's cells when the output is piped or
redirected (rich would otherwise assume 80 columns)."""

from __future__ import annotations

import sys

PIPED_WIDTH = 10_000  # columns when stdout is not a terminal: a table keeps its natural width


def console(stderr: bool = False):
    from rich.console import Console

    stream = sys.stderr if stderr else sys.stdout
    tty = hasattr(stream, "isatty") and stream.isatty()
    return Console(highlight=False, stderr=stderr, width=None if tty else PIPED_WIDTH)
