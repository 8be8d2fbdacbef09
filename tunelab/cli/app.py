"""The `tunelab` command: what is not a pipeline stage.

This module builds the parser from every command group's ``register`` (the command
list is in tunelab/cli/__init__.py) and fails one way: a user-fixable error (tunelab.errors.USER_ERRORS) is one line on stderr,
``tunelab CMD: error: ...``, and exit status 1; argparse's own errors exit 2.
"""

from __future__ import annotations

import argparse
import sys

from tunelab.cli import (adapters, bench, data, experiments, generate, import_config, serve,
                         ui, watch)
from tunelab.errors import USER_ERRORS

# In `tunelab --help` order.
COMMAND_GROUPS = (data, import_config, generate, bench, adapters, serve, watch, experiments,
                  ui)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.handler(args)
    except USER_ERRORS as err:
        print(f"tunelab {args.command}: error: {err}", file=sys.stderr)
        return 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tunelab", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    for group in COMMAND_GROUPS:
        group.register(commands)
    return parser


if __name__ == "__main__":
    sys.exit(main())
