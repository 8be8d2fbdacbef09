"""The entry point of every script in stages/: paths from dvc.yaml, one-line errors.

A stage script is ``main(path, ...)`` plus ``pipeline.run(main)``. dvc.yaml's ``cmd``
names each path once (``python stages/train.py models/base ...``) and this module hands
them to ``main`` in order, so no script repeats a path dvc.yaml declares. Before the stage
does any work all of params.yaml is validated (as `tunelab validate-config` does), so a
typo anywhere fails fast; a user error ends as one line and exit 1, not a traceback.
May import tunelab.config and tunelab.errors only.
"""

from __future__ import annotations

import inspect
import sys
from pathlib import Path
from typing import Callable

from tunelab.config import params
from tunelab.errors import ParamsError, USER_ERRORS


def run(main: Callable[..., object], name: str, argv: list[str] | None = None,
        params_file: str = params.PARAMS_FILE) -> None:
    """Validate ``params_file``, call ``main(*argv)`` (default: the command line) and exit;
    ``name`` (the stage's) starts every error line."""
    args = sys.argv[1:] if argv is None else argv
    try:
        check_arguments(main, args, Path(sys.argv[0]).name)
        params.load_all(params_file)
        status = main(*args)
    except USER_ERRORS as err:
        print(f"{name}: error: {err}", file=sys.stderr)
        sys.exit(1)
    sys.exit(status or 0)


def check_arguments(main: Callable[..., object], args: list[str], script: str) -> None:
    """A wrong number of paths is a dvc.yaml mistake: say which paths the stage takes."""
    names = list(inspect.signature(main).parameters)
    if len(args) != len(names):
        usage = " ".join(name.upper() for name in names)
        raise ParamsError(f"usage: python stages/{script} {usage} (got {len(args)} "
                          f"argument{'s' if len(args) != 1 else ''}; dvc.yaml's cmd gives them)")
