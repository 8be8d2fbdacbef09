"""multitask/params.yaml's own section: the tasks that each get an adapter.

The file's other sections are the ordinary params.yaml ones (tunelab.config.params).
"""

from __future__ import annotations

import re
from pathlib import Path

from pydantic import Field, field_validator

from tunelab.config import params
from tunelab.config.schema import complaint, Names, parse, Section

PARAMS_FILE = "multitask/params.yaml"
TASK_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")  # a folder name and a DVC stage key


class MultitaskParams(Section):
    tasks: Names = Field(default_factory=lambda: ["triage", "sentiment"])

    @field_validator("tasks")
    @classmethod
    def _unique_folder_names(cls, tasks):
        tasks = tasks if isinstance(tasks, list) else [tasks]
        bad = [t for t in tasks if not TASK_NAME.match(t)]
        if bad:
            raise complaint(f"{bad[0]!r} is not a valid task name "
                            "(letters, digits, _ . - ; it names a folder)")
        if len(set(tasks)) != len(tasks):
            raise complaint(f"listed twice: {sorted({t for t in tasks if tasks.count(t) > 1})[0]!r}")
        return tasks


def load_params(path: str | Path = PARAMS_FILE) -> MultitaskParams:
    """The `multitask` section, validated: a non-empty list of unique, path-safe names."""
    return parse(MultitaskParams, params.read_file(path).get("multitask") or {}, "multitask", path)
