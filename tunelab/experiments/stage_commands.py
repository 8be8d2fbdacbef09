"""A stage's command line as dvc.yaml declares it, for running one stage outside DVC
(`tunelab verify-repro`, tests). dvc.yaml is the one place that names a stage's paths.

``${section.key}`` is filled from the params file next to dvc.yaml (and ``${item.KEY}``
from ``item`` for a matrix stage), as DVC's own templating does for these simple forms;
DVC's resolver needs a DVC repository, and these callers also run in bare scratch folders.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import yaml

from tunelab.errors import DataError
from tunelab.util import names

PLACEHOLDER = re.compile(r"\$\{\s*([\w.]+)\s*\}")


def stage_argv(name: str, dvc_file: str | Path = "dvc.yaml", params_file: str | Path | None = None,
               item: dict | None = None) -> list[str]:
    """``["python", "stages/x.py", ARG, ...]`` of stage ``name`` in ``dvc_file``."""
    dvc_file = Path(dvc_file)
    stages = (yaml.safe_load(dvc_file.read_text(encoding="utf-8")) or {}).get("stages", {})
    if name not in stages:
        raise DataError(f"{dvc_file}: no stage {name!r}{names.did_you_mean(name, stages)}")
    params_file = Path(params_file) if params_file else dvc_file.parent / "params.yaml"
    values = yaml.safe_load(params_file.read_text(encoding="utf-8")) or {}
    if item is not None:
        values = {**values, "item": item}

    def fill(match: re.Match) -> str:
        value = names.lookup(values, match.group(1))
        if value is None:
            raise DataError(f"{dvc_file}: stage {name}: ${{{match.group(1)}}} is not set in "
                            f"{params_file}")
        return str(value)

    return shlex.split(PLACEHOLDER.sub(fill, stages[name]["cmd"]))


if __name__ == "__main__":
    # `python -m tunelab.experiments.stage_commands train`: the stage's script and paths, for
    # launchers that wrap the command (make train-multi runs it under `accelerate launch`).
    import sys

    print(shlex.join(stage_argv(sys.argv[1])[1:]))
