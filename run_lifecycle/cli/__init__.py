"""The ``run-lifecycle`` command line (also ``python -m run_lifecycle``).

Each subcommand lives in its own module with a ``register(subparsers)``
function; ``main(argv)`` parses, dispatches, and turns a library error into
one line on stderr and an exit code, never a traceback.

Exit codes:
    0  success
    1  a check failed (``audit verify`` found a fault, ``audit repair`` left one)
    2  usage error (unknown option, bad value)
    3  runtime error (missing database or file, bad URL, unknown run id)
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from ..exceptions import RunLifecycleError
from . import _audit, _demo, _diagram, _runs

__all__ = ["EXIT_ERROR", "EXIT_FAULT", "EXIT_OK", "EXIT_USAGE", "build_parser", "main"]

EXIT_OK = 0
EXIT_FAULT = 1
EXIT_USAGE = 2
EXIT_ERROR = 3

_COMMANDS = (_demo, _diagram, _runs, _audit)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="run-lifecycle",
        description="Drive, inspect and draw the lifecycle of agent runs.",
        epilog="Exit codes: 0 ok, 1 a check failed, 2 usage error, 3 runtime error.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for command in _COMMANDS:
        command.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line with ``argv`` (default: ``sys.argv[1:]``); return the exit code."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse exits on --help (0) and on usage errors (2)
        return int(exc.code) if isinstance(exc.code, int) else EXIT_USAGE
    try:
        code: int = args.func(args)
    except RunLifecycleError as exc:
        print(f"run-lifecycle: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except OSError as exc:
        print(
            f"run-lifecycle: error: {exc.strerror or exc}: {exc.filename or ''}".rstrip(": "),
            file=sys.stderr,
        )
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("run-lifecycle: interrupted", file=sys.stderr)
        return 130
    return code
