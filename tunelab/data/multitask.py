"""Multi-task adapters: one LoRA adapter per `task` named in the data.

The multi-task pipeline (``multitask/dvc.yaml``) prepares examples that carry a
``task`` field, trains one adapter per task listed in ``multitask.tasks`` with
the ordinary ``tunelab.train.training.train`` on that task's examples only, and
evaluates every adapter on its own task's test examples.
"""

from __future__ import annotations

from pathlib import Path

# The `multitask` section's schema lives with the other config; stages read it from here.
from tunelab.config.multitask import PARAMS_FILE, MultitaskParams, load_params  # noqa: F401
from tunelab.errors import DataError
from tunelab.util.files import write_jsonl_atomic

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
    from tunelab.util.files import read_jsonl

    paths = {}
    for split_name in ("train", "val"):
        source = Path(prepared_dir) / f"{split_name}.jsonl"
        paths[split_name] = Path(out_dir) / f"{split_name}.jsonl"
        write_jsonl_atomic(paths[split_name], select(read_jsonl(source), task))
    return paths

