"""Run a stage or CLI command so that user errors end as one line, not a traceback."""

from __future__ import annotations

import sys
from typing import Callable

from tunelab.basemodel import ModelSourceError
from tunelab.io import DataError
from tunelab.params import ParamsError

USER_ERRORS = (DataError, ParamsError, ModelSourceError)


def run(main: Callable[[], object], name: str) -> None:
    try:
        status = main()
    except USER_ERRORS as err:
        print(f"{name}: error: {err}", file=sys.stderr)
        sys.exit(1)
    sys.exit(status or 0)
