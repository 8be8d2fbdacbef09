"""Run a stage or CLI command so that user errors end as one line, not a traceback."""

from __future__ import annotations

import sys
from typing import Callable

from tunelab import params
from tunelab.basemodel import ModelSourceError
from tunelab.guards import TrainingError
from tunelab.io import DataError
from tunelab.params import ParamsError

USER_ERRORS = (DataError, ParamsError, ModelSourceError, TrainingError)


def run(main: Callable[[], object], name: str) -> None:
    """Check all of params.yaml (as `tunelab validate-config` does), then run ``main``."""
    try:
        params.load_all()  # before any stage does work: a typo anywhere fails fast
        status = main()
    except USER_ERRORS as err:
        print(f"{name}: error: {err}", file=sys.stderr)
        sys.exit(1)
    sys.exit(status or 0)
