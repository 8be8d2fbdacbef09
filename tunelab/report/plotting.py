"""PNG figures for a run: training curves from DVCLive, base vs tuned bars, and the
token-length histogram of metrics/data.json.

Every figure is written through ``files.atomic_path`` so a crash mid-save never
leaves a truncated PNG that a later report would embed.
"""

from __future__ import annotations

import csv
import math
import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless: stages run in CI, over SSH and under `dvc repro`
import matplotlib.pyplot as plt  # noqa: E402  (must follow the backend choice)
from matplotlib.ticker import MaxNLocator  # noqa: E402

from tunelab.util import files  # noqa: E402

# DVCLive names a series by its path under plots/metrics/. transformers' DVCLive
# callback logs the per-step train loss as "loss" ("train/loss" is the one-row
# end-of-run summary), eval loss as "eval/loss", and "learning_rate", "grad_norm".
TRAIN_LOSS_NAMES = ("loss",)
EVAL_LOSS_NAMES = ("eval/loss",)
LEARNING_RATE_NAMES = ("learning_rate",)
GRAD_NORM_NAMES = ("grad_norm",)

# Metrics that live on a 0..1 scale and so share one bar chart's y axis.
UNIT_SCALE_METRICS = ("task_accuracy", "exact_match")
UNIT_SCALE_PREFIXES = ("field_", "rouge")

DEFAULT_DPI = 100


def plot_training_curves(live_dir: str | os.PathLike, out_dir: str | os.PathLike,
                         dpi: int = DEFAULT_DPI) -> list[Path]:
    """Write loss.png, learning_rate.png and grad_norm.png from a DVCLive dir.

    A figure whose series are all absent is skipped; returns the files written.
    """
    series = read_dvclive_series(live_dir)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []

    losses = {"train loss": _first_present(series, TRAIN_LOSS_NAMES),
              "eval loss": _first_present(series, EVAL_LOSS_NAMES)}
    if _plot_lines(losses, out_dir / "loss.png", title="Loss", ylabel="loss", dpi=dpi):
        written.append(out_dir / "loss.png")

    learning_rate = {"learning rate": _first_present(series, LEARNING_RATE_NAMES)}
    if _plot_lines(learning_rate, out_dir / "learning_rate.png", title="Learning rate schedule",
                   ylabel="learning rate", dpi=dpi):
        written.append(out_dir / "learning_rate.png")

    grad_norm = {"gradient norm": _first_present(series, GRAD_NORM_NAMES)}
    if _plot_lines(grad_norm, out_dir / "grad_norm.png", title="Gradient norm",
                   ylabel="L2 norm of gradients", dpi=dpi):
        written.append(out_dir / "grad_norm.png")
    return written


def plot_base_vs_tuned(eval_metrics: dict, out_path: str | os.PathLike,
                       dpi: int = DEFAULT_DPI) -> Path | None:
    """Grouped bars, base vs tuned, for the 0..1 metrics of ``metrics/eval.json``.

    Returns the path written, or None when no 0..1 metric is present.
    """
    base, tuned = eval_metrics.get("base", {}), eval_metrics.get("tuned", {})
    names = [name for name in base
             if is_unit_scale_metric(name) and _is_number(base[name]) and _is_number(tuned.get(name))]
    if not names:
        return None

    positions = range(len(names))
    bar_width = 0.38
    fig, ax = plt.subplots(figsize=(max(6.0, 1.1 * len(names) + 2), 4.5))
    base_bars = ax.bar([x - bar_width / 2 for x in positions], [base[n] for n in names],
                       bar_width, label="base (initial)", color="#9aa5b1")
    tuned_bars = ax.bar([x + bar_width / 2 for x in positions], [tuned[n] for n in names],
                        bar_width, label="tuned (final)", color="#2f6fde")
    for bars in (base_bars, tuned_bars):
        ax.bar_label(bars, fmt="%.2f", padding=2, fontsize=8)

    many_bars = len(names) > 4  # long names like field_priority collide unless slanted
    ax.set_xticks(list(positions), names, rotation=30 if many_bars else 0,
                  ha="right" if many_bars else "center")
    ax.set_ylim(0, 1.12)  # headroom for the value labels above a bar at 1.0
    ax.set_ylabel("score (0..1, higher is better)")
    ax.set_title("Base vs tuned on the test split")
    ax.legend(loc="upper left", ncols=2, frameon=False)
    ax.grid(axis="y", alpha=0.3)
    return _save(fig, out_path, dpi)


def plot_token_lengths(data_stats: dict, out_path: str | os.PathLike,
                       dpi: int = DEFAULT_DPI) -> Path | None:
    """The token-length histogram of metrics/data.json's "analysis" (tunelab.data.analysis):
    bars per bin, a solid line at train.max_length, dashed ones at p95 and p99.

    Returns the path written, or None when data_stats has no histogram (an older file).
    """
    analysis = data_stats.get("analysis")
    if not isinstance(analysis, dict) or "histogram" not in analysis:
        return None
    edges, counts = analysis["histogram"]["edges"], analysis["histogram"]["counts"]
    max_length, lengths = analysis["max_length"], analysis["token_lengths"]

    fig, ax = plt.subplots(figsize=(7, 4.2))
    ax.bar(edges[:-1], counts, width=analysis["histogram"]["bin_width"], align="edge",
           color="#2f6fde", edgecolor="white")
    for name, style in (("p95", "--"), ("p99", ":")):
        ax.axvline(lengths[name], color="#616e7c", linestyle=style, label=f"{name} = {lengths[name]}")
    title = "Token lengths of the examples"
    if max_length <= edges[-1]:  # analysis leaves it off the chart when it is far above the data
        ax.axvline(max_length, color="#b42318", label=f"train.max_length = {max_length}")
    else:
        title += f" (train.max_length = {max_length}, off the chart)"
    cut = analysis["truncated"]["examples"]
    ax.set_title(f"{title}: {cut} of {analysis['examples']} cut")
    ax.set_xlabel("tokens per example (before truncation)")
    ax.set_ylabel("examples")
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(axis="y", alpha=0.3)
    ax.legend(frameon=False)
    return _save(fig, out_path, dpi)


def read_dvclive_series(live_dir: str | os.PathLike) -> dict[str, tuple[list[float], list[float]]]:
    """Map each TSV under ``<live_dir>/plots/metrics`` to its (steps, values).

    Keys are paths relative to that folder without ".tsv", e.g. "train/loss".
    """
    metrics_dir = Path(live_dir) / "plots" / "metrics"
    series = {}
    for tsv_path in sorted(metrics_dir.glob("**/*.tsv")):
        steps, values = _read_tsv(tsv_path)
        if steps:
            series[tsv_path.relative_to(metrics_dir).with_suffix("").as_posix()] = (steps, values)
    return series


def is_unit_scale_metric(name: str) -> bool:
    return name in UNIT_SCALE_METRICS or name.startswith(UNIT_SCALE_PREFIXES)


def _read_tsv(tsv_path: Path) -> tuple[list[float], list[float]]:
    # DVCLive writes "timestamp\tstep\t<name>"; older or hand-made files drop the
    # timestamp. The value column is the one named like the file, else the last.
    with open(tsv_path, encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f, delimiter="\t")
        columns = reader.fieldnames or []
        if "step" not in columns or len(columns) < 2:
            return [], []
        value_column = tsv_path.stem if tsv_path.stem in columns else columns[-1]
        steps, values = [], []
        for row in reader:
            try:
                step, value = float(row["step"]), float(row[value_column])
            except (TypeError, ValueError):
                continue  # a torn last line from an interrupted run
            if math.isfinite(value):
                steps.append(step)
                values.append(value)
    return steps, values


def _first_present(series: dict, names: tuple[str, ...]):
    return next((series[name] for name in names if name in series), None)


def _plot_lines(lines: dict, out_path: Path, title: str, ylabel: str, dpi: int) -> bool:
    present = {label: data for label, data in lines.items() if data}
    if not present:
        return False
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for label, (steps, values) in present.items():
        # Eval loss has a handful of points: markers make each one visible.
        ax.plot(steps, values, label=label, marker="o" if len(steps) <= 30 else None, markersize=4)
    ax.set_title(title)
    ax.set_xlabel("step")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # no "step 2.5" on short runs
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend()
    ax.ticklabel_format(axis="y", style="sci", scilimits=(-3, 4))
    _save(fig, out_path, dpi)
    return True


def _save(fig, out_path: str | os.PathLike, dpi: int) -> Path:
    try:
        fig.tight_layout()
        with files.atomic_path(out_path) as tmp_path:
            fig.savefig(tmp_path, format="png", dpi=dpi)
    finally:
        plt.close(fig)  # pyplot keeps every open figure alive otherwise
    return Path(out_path)


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
