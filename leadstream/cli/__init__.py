"""The ``leadstream`` command line."""

# The entry point (``leadstream`` and ``python -m leadstream``): the top parser, to which
# each command module of this package adds its subcommands (``register``) with their
# handlers (``func``), in the order of COMMANDS. Nothing but this module and
# ``leadstream.__main__`` imports a command module; what the commands share is in
# ``leadstream.cli.common``.

from __future__ import annotations

import argparse
import os
import sys

from leadstream.cli import (
    bench,
    broker,
    contract,
    evaluate,
    features,
    models,
    records,
    reports,
    simulate,
    top,
    worker,
)
from leadstream.contract.settings import Settings

# the order of the subcommands in ``leadstream --help``
COMMANDS = (broker, worker, records, simulate, contract, features, evaluate, reports, top,
            models, bench)


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("leadstream")
    except PackageNotFoundError:  # run from a checkout that is not installed
        return "unknown (not installed)"



def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="leadstream", description=__doc__)
    p.add_argument("--version", action="version", version=f"leadstream {_version()}")
    sub = p.add_subparsers(dest="command", required=True)

    for command in COMMANDS:
        command.register(sub)
    return p


def _failure(err: BaseException) -> tuple[str, int] | None:
    """The one-line message and exit code for an error a user can meet (a missing file,
    an unreachable broker, invalid settings), None for a bug (its traceback is shown)."""
    from aiokafka.errors import KafkaConnectionError, KafkaError
    from pydantic import ValidationError

    if isinstance(err, OSError) and err.filename is not None:
        return f"{err.strerror or err}: {err.filename}", 2
    if isinstance(err, KafkaConnectionError):
        return f"cannot reach the Kafka broker ({err}); check LEADSTREAM_KAFKA_BOOTSTRAP", 3
    if isinstance(err, KafkaError):
        return f"Kafka refused the request: {err}", 3
    if isinstance(err, ValidationError):
        first = err.errors()[0]
        where = ".".join(str(x) for x in first["loc"]) or "settings"
        return f"invalid setting {where}: {first['msg']}", 2
    return None



def _unknown_weights(settings: Settings) -> str | None:
    """What is wrong with hybrid weights naming no model component
    (``LEADSTREAM_HYBRID_W_<NAME>``, ``hybrid_w_<name>`` in the file), None when nothing:
    the settings cannot check them (the contract may not import the registry)."""
    if not settings.hybrid_weights_added:
        return None
    from leadstream.models import registry

    unknown = registry.unknown_weights(settings.hybrid_weights_added)
    if not unknown:
        return None
    names = ", ".join(f"hybrid_{w}" for w in unknown)
    known = ", ".join(f"hybrid_{w}" for w in registry.WEIGHTS)
    return f"invalid setting {names}: no model component has that weight (known: {known})"


def main(argv: list[str] | None = None) -> int:
    """Run one command. An error a user can meet ends in one line on stderr and a non-zero
    exit (2: a file or setting, 3: the broker); ``LEADSTREAM_DEBUG=1`` shows the traceback."""
    args = build_parser().parse_args(argv)
    try:
        settings = Settings()
        unknown = _unknown_weights(settings)
        if unknown:
            print(f"leadstream {args.command}: error: {unknown}", file=sys.stderr)
            return 2
        return int(args.func(args, settings) or 0)
    except KeyboardInterrupt:
        return 130
    except Exception as err:
        failure = _failure(err)
        if failure is None or os.environ.get("LEADSTREAM_DEBUG"):
            raise
        print(f"leadstream {args.command}: error: {failure[0]}", file=sys.stderr)
        return failure[1]

