"""Multi-task adapters: one LoRA adapter per `task` named in the data.

The multi-task pipeline (``multitask/dvc.yaml``) prepares examples that carry a
``task`` field, trains one adapter per task listed in ``multitask.tasks`` with
the ordinary ``tunelab.training.train`` on that task's examples only, and
evaluates every adapter on its own task's test examples.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from tunelab import params
from tunelab.io import DataError, write_jsonl_atomic

PARAMS_FILE = "multitask/params.yaml"
ADAPTERS_DIR = "models/adapters"
TASK_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")  # a folder name and a DVC stage key


@dataclass
class MultitaskParams:
    tasks: list = field(default_factory=lambda: ["triage", "sentiment"])


def load_params(path: str | Path = PARAMS_FILE) -> MultitaskParams:
    """The `multitask` section, validated: a non-empty list of unique, path-safe names."""
    raw = params.read_file(path)
    loaded = params.build(MultitaskParams, raw.get("multitask") or {}, "multitask", path)
    tasks = loaded.tasks if isinstance(loaded.tasks, list) else [loaded.tasks]
    bad = [t for t in tasks if not TASK_NAME.match(t)]
    if bad:
        raise params.ParamsError(f"{path}: multitask.tasks: {bad[0]!r} is not a valid task name "
                                 "(letters, digits, _ . - ; it names a folder)")
    if len(set(tasks)) != len(tasks):
        raise params.ParamsError(f"{path}: multitask.tasks: listed twice: "
                                 f"{sorted({t for t in tasks if tasks.count(t) > 1})[0]!r}")
    return MultitaskParams(tasks=tasks)


def select(examples: list[dict], task: str) -> list[dict]:
    """The examples of one task, in their order."""
    return [e for e in examples if e.get("task") == task]


def count_by_task(splits: dict[str, list[dict]]) -> dict[str, dict[str, int]]:
    """{task: {split: examples}}; examples without a task count under ""."""
    counts: dict[str, dict[str, int]] = {}
    for split_name, examples in splits.items():
        for example in examples:
            per_split = counts.setdefault(example.get("task") or "", dict.fromkeys(splits, 0))
            per_split[split_name] += 1
    return counts


def check_tasks(splits: dict[str, list[dict]], tasks: list[str], raw_dir: str) -> None:
    """Every listed task needs train and test examples, or its adapter is meaningless."""
    counts = count_by_task(splits)
    for task in tasks:
        if task not in counts:
            found = ", ".join(sorted(t for t in counts if t)) or "none"
            raise DataError(f"{raw_dir}: no examples with task {task!r} (multitask.tasks; "
                            f"tasks in the data: {found})")
        empty = [name for name in ("train", "test") if not counts[task][name]]
        if empty:
            raise DataError(f"{raw_dir}: task {task!r} has no {' and no '.join(empty)} examples "
                            f"after the split ({counts[task]}); add examples of it")


def write_task_split(prepared_dir: str | Path, task: str, out_dir: str | Path) -> dict[str, Path]:
    """Copy one task's train/val examples to ``out_dir``; {split: path}."""
    from tunelab.io import read_jsonl

    paths = {}
    for split_name in ("train", "val"):
        source = Path(prepared_dir) / f"{split_name}.jsonl"
        paths[split_name] = Path(out_dir) / f"{split_name}.jsonl"
        write_jsonl_atomic(paths[split_name], select(read_jsonl(source), task))
    return paths


def adapter_dir(task: str) -> Path:
    return Path(ADAPTERS_DIR) / task
