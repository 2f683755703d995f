"""The ``koala-async`` command: collector, send, import, demo and spool. Standard library only.

One module per command, each with an ``add_parser`` that wires its options and sets the
coroutine that runs it; the calls' arguments come from ``koala_async._calls.CALLS``.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

import anyio

from .. import KoalaError, __version__
from . import _collector, _demo, _import, _send, _spool
from ._options import LogFormatter

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit code (0 success, 1 not all delivered, 2 misuse)."""
    args = _parser().parse_args(argv)
    handler = logging.StreamHandler()
    handler.setFormatter(LogFormatter())
    logging.basicConfig(handlers=[handler], level=logging.INFO if args.verbose else None)
    core = logging.getLogger("koala_async")
    level = core.level  # commands quieten the core; main() called in-process must not leak it
    try:
        return int(anyio.run(args.run, args))
    except KoalaError as exc:
        print(f"koala-async: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    finally:
        core.setLevel(level)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="koala-async", description="Send to Koala, backfill files, or run a local collector."
    )
    parser.add_argument("--version", action="version", version=f"koala-async {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log what the client does")
    commands = parser.add_subparsers(required=True, metavar="COMMAND")
    for module in (_demo, _collector, _send, _import, _spool):
        command = module.add_parser(commands)
        # -v after the command too
        command.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS)
    return parser
