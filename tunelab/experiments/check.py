"""Regression gate: `tunelab check --baseline REV` compares the workspace metrics
with a git revision (`dvc metrics diff REV`, read through experiments.repo) under the
tolerances of params.yaml `check:`, prints a table, and exits 1 when a tracked metric
got worse than allowed.

Metric names (here and in sweep files) are dotted keys of metrics/eval.json, such
as ``tuned.task_accuracy``; a name starting with ``train.`` is a key of
metrics/train/summary.json instead (``train.eval_loss``: the validation loss), and one
starting with ``export.`` a key of metrics/export.json, the GGUF parity check
(``export.q8_0.agreement``, ``export.q4_k_m.template_differences``).
"""

from __future__ import annotations

import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path

from tunelab.config import params
from tunelab.errors import DataError
from tunelab.eval.metric_names import metric_number
from tunelab.experiments import repo
from tunelab.util.names import did_you_mean, lookup

EVAL_METRICS = "metrics/eval.json"
METRIC_FILES = {"train": "metrics/train/summary.json",  # name prefix -> file
                "export": "metrics/export.json"}
# Below this a change is float noise from rounding in the metrics files.
NOISE = 1e-9


def locate_metric(name: str) -> tuple[str, str]:
    """(metrics file, dotted key in it) for a metric name."""
    prefix, _, rest = name.partition(".")
    if prefix in METRIC_FILES and rest:
        return METRIC_FILES[prefix], rest
    return EVAL_METRICS, name


def numeric_keys(tree, prefix: str = "") -> list[str]:
    """Every dotted key of a JSON object that holds a number, in file order."""
    keys = []
    for key, value in (tree.items() if isinstance(tree, dict) else ()):
        path = f"{prefix}{key}"
        if isinstance(value, dict):
            keys += numeric_keys(value, path + ".")
        elif metric_number(value) is not None:
            keys.append(path)
    return keys


def metric_value(name: str, read_text) -> float | None:
    """The number ``name`` names, with ``read_text(file) -> str | None`` reading a metrics
    file (from the workspace or from a git commit); None when absent or not a number."""
    file, key = locate_metric(name)
    text = read_text(file)
    if text is None:
        return None
    try:
        return metric_number(lookup(json.loads(text), key))
    except json.JSONDecodeError:
        return None


def unknown_metric_reason(name: str, root: str | Path = ".") -> str | None:
    """Why ``name`` is no number in the workspace's metrics file; None when it is, or
    when that file does not exist yet (nothing to check against)."""
    file, key = locate_metric(name)
    path = Path(root, file)
    if not path.is_file():
        return None
    try:
        known = numeric_keys(json.loads(path.read_text(encoding="utf-8")))
    except json.JSONDecodeError:
        return f"{file} is not valid JSON"
    if key in known:
        return None
    # The aligned model has the tuned one's metrics, but only once an align stage has run:
    # a sweep that turns alignment on may name them before.
    if key.startswith("aligned.") and "tuned." + key.removeprefix("aligned.") in known:
        return None
    hint = did_you_mean(key, known, prefix=name[: len(name) - len(key)])
    return f"'{name}' is not a number in {file}{hint}"


@dataclass
class GateRow:
    name: str
    baseline: float | None
    workspace: float | None
    direction: str
    tolerance: float
    status: str  # "ok" | "better" | "worse" | "missing" | "new"

    @property
    def change(self) -> float | None:
        if self.baseline is None or self.workspace is None:
            return None
        return self.workspace - self.baseline


def judge(name: str, rule: params.MetricTolerance, old, new) -> GateRow:
    """One tracked metric: worse means it moved against ``rule.direction`` by more than
    ``rule.tolerance`` (absolute), or it vanished from the workspace."""
    row = GateRow(name, old, new, rule.direction, rule.tolerance, "ok")
    if new is None or math.isnan(new):
        row.status = "missing"
    elif old is None or math.isnan(old):
        row.status = "new"
    else:
        loss = (old - new) if rule.direction == "higher" else (new - old)
        if loss > rule.tolerance + NOISE:
            row.status = "worse"
        elif loss < -NOISE:
            row.status = "better"
    return row


def gate_rows(diff: dict, tolerances: dict) -> list[GateRow]:
    rows = []
    for name, rule in tolerances.items():
        file, key = locate_metric(name)
        entry = diff.get(file, {}).get(key)
        if entry is None:
            # Suggest keys of the same file, under the name's prefix (train., export.).
            hint = did_you_mean(key, diff.get(file, {}), prefix=name[: len(name) - len(key)])
            raise DataError(f"params.yaml: check.{name}: no such metric in {file} of the "
                            f"workspace or the baseline{hint}")
        rows.append(judge(name, rule, metric_number(entry.get("old")),
                          metric_number(entry.get("new"))))
    return rows


def table(rows: list[GateRow], baseline: str):
    from rich.table import Table

    styles = {"worse": "bold red", "missing": "bold red", "better": "green", "ok": "", "new": "dim"}
    out = Table(title=f"tunelab check: workspace vs {baseline}")
    for column in ("metric", baseline, "workspace", "change", "allowed", "status"):
        out.add_column(column, justify="left" if column in ("metric", "status") else "right")
    for row in rows:
        sign = "-" if row.direction == "higher" else "+"
        out.add_row(row.name, _fmt(row.baseline), _fmt(row.workspace),
                    _fmt(row.change, signed=True), f"{sign}{row.tolerance:g}",
                    f"[{styles[row.status]}]{row.status}[/]" if styles[row.status] else row.status)
    return out


def check(baseline: str = "HEAD", params_file: str = params.PARAMS_FILE) -> int:
    """Print the gate table; 1 when a tracked metric is worse than allowed, 2 when none is."""
    from rich.console import Console

    tolerances = params.load("check", params_file).tolerances
    if not tolerances:
        print(f"tunelab check: nothing to check: {params_file} has no metrics under `check:`",
              file=sys.stderr)
        return 2
    rows = gate_rows(repo.metrics_diff(baseline), tolerances)
    Console().print(table(rows, baseline))
    failed = [row for row in rows if row.status in ("worse", "missing")]
    for row in failed:
        if row.status == "missing":
            print(f"FAIL {row.name}: missing from the workspace metrics", file=sys.stderr)
        else:
            print(f"FAIL {row.name}: {row.baseline:g} -> {row.workspace:g} "
                  f"({row.change:+g}; {row.direction} is better, tolerance {row.tolerance:g})",
                  file=sys.stderr)
    print(f"{len(failed)} of {len(rows)} tracked metrics worse than allowed" if failed
          else f"OK: {len(rows)} tracked metrics within tolerance of {baseline}")
    return 1 if failed else 0


def _fmt(value, signed: bool = False) -> str:
    if value is None:
        return "-"
    return f"{value:+.4f}" if signed else f"{value:.4f}"
