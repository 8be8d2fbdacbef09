"""`tunelab verify-repro`: rerun train, align and evaluate in a scratch folder and compare
their metrics with the workspace's, key by key.

The scratch folder gets this workspace's params.yaml and links to models/base,
data/prepared, the preference data align.data names, and the held-out file, general-ability
set and scorer plugin that evaluate.heldout, evaluate.general and evaluate.scorer name (only
read); the stage
scripts run there as `dvc repro` would run them, so their outputs never touch the
workspace. On CPU the same params, data and seed give the same numbers exactly, so the
default tolerance is 0.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from tunelab.config import params
from tunelab.errors import DataError
from tunelab.experiments import stage_commands
from tunelab.util.names import flatten

COMPARED = ("metrics/train/summary.json", "metrics/align/summary.json", "metrics/eval.json")
RERUN_STAGES = ("train", "align", "evaluate")
LINKED = ("models/base", "data/prepared")
# Wall-clock numbers differ on every run; they are shown, not compared.
TIMING_WORDS = ("seconds", "runtime", "per_second")


def differs(a, b, tolerance: float) -> bool:
    numbers = (int, float)
    if isinstance(a, numbers) and isinstance(b, numbers) and not isinstance(a, bool):
        if math.isnan(a) and math.isnan(b):
            return False
        return abs(a - b) > tolerance * max(abs(a), abs(b))
    return a != b


def compare(workspace: Path, rerun: Path, tolerance: float) -> list[dict]:
    """One row per metric: file, key, both values and whether it differs."""
    rows = []
    for name in COMPARED:
        ours = flatten(json.loads((workspace / name).read_text()))
        theirs = flatten(json.loads((rerun / name).read_text()))
        for key in sorted(ours.keys() | theirs.keys()):
            a, b = ours.get(key, "(missing)"), theirs.get(key, "(missing)")
            timing = any(word in key for word in TIMING_WORDS)
            rows.append({"file": name, "key": key, "workspace": a, "rerun": b, "timing": timing,
                         "differs": not timing and differs(a, b, tolerance)})
    return rows


def env_differences(workspace: Path, rerun: Path) -> list[str]:
    paths = [root / "metrics/env.json" for root in (workspace, rerun)]
    if not all(path.is_file() for path in paths):
        return []
    ours, theirs = (flatten(json.loads(path.read_text())) for path in paths)
    return [f"{key}: {ours.get(key)} vs {theirs.get(key)}"
            for key in sorted(ours.keys() | theirs.keys()) if ours.get(key) != theirs.get(key)]


def prepare_scratch(workspace: Path, scratch: Path) -> None:
    missing = [name for name in ("params.yaml", "models/base/config.json", *COMPARED,
                                 *(f"data/prepared/{s}.jsonl" for s in ("train", "val", "test")))
               if not (workspace / name).is_file()]
    if missing:
        raise DataError(f"{', '.join(missing)} not found in {workspace}: run `dvc repro` first")
    scratch.mkdir(parents=True, exist_ok=True)
    shutil.copy2(workspace / "params.yaml", scratch / "params.yaml")
    evaluate = params.load("evaluate", workspace / "params.yaml")
    scorer = evaluate.scorer.rpartition(":")[0]  # "" for auto
    preferences = params.load("align", workspace / "params.yaml").data
    inputs = [name for name in (evaluate.heldout, evaluate.general, scorer, preferences)
              if name and (workspace / name).exists()]
    for name in (*LINKED, *inputs):
        (scratch / name).parent.mkdir(parents=True, exist_ok=True)
        if not (scratch / name).exists():
            os.symlink((workspace / name).resolve(), scratch / name)


def rerun(workspace: Path, scratch: Path) -> int:
    for stage in RERUN_STAGES:
        print(f"verify-repro: running stage {stage} in {scratch}", file=sys.stderr, flush=True)
        script, *paths = stage_commands.stage_argv(stage, workspace / "dvc.yaml")[1:]
        code = subprocess.run([sys.executable, str(workspace / script), *paths],
                              cwd=scratch).returncode
        if code:
            print(f"tunelab verify-repro: error: stage {stage} failed (exit {code}) in {scratch}",
                  file=sys.stderr)
            return code
    return 0


def show(value) -> str:
    return f"{value:.6g}" if isinstance(value, float) else str(value)


def print_table(rows: list[dict], tolerance: float) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"workspace vs rerun (tolerance {tolerance:g})")
    for column in ("metric", "workspace", "rerun", ""):
        table.add_column(column)
    for row in rows:
        mark = "timing" if row["timing"] else "DIFFERS" if row["differs"] else "same"
        table.add_row(f"{row['file'].split('/')[-1]}: {row['key']}", show(row["workspace"]),
                      show(row["rerun"]), mark)
    Console(width=120).print(table)


def verify_repro(tolerance: float = 0.0, workdir: Path | None = None) -> int:
    """Rerun in ``workdir`` (default: a temp folder, removed); 1 when a metric differs."""
    workspace = Path.cwd()
    scratch = workdir or Path(tempfile.mkdtemp(prefix="tunelab-verify-"))
    try:
        prepare_scratch(workspace, scratch)
        code = rerun(workspace, scratch)
        if code:
            return code
        rows = compare(workspace, scratch, tolerance)
        print_table(rows, tolerance)
        for line in env_differences(workspace, scratch):
            print(f"note: environment differs: {line}")
    finally:
        if workdir is None:
            shutil.rmtree(scratch, ignore_errors=True)
    compared = [row for row in rows if not row["timing"]]
    different = [row for row in compared if row["differs"]]
    if different:
        print(f"verify-repro: {len(different)} of {len(compared)} metrics differ "
              f"(tolerance {tolerance:g}): "
              + ", ".join(f"{row['key']}" for row in different[:8]))
        return 1
    print(f"verify-repro: identical: all {len(compared)} metrics match "
          f"(tolerance {tolerance:g})")
    return 0
