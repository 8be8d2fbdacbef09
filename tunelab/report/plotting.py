"""PNG figures for a run: training curves from DVCLive (the SFT run's and, when one ran,
the alignment's), base vs tuned (vs aligned) bars, the general-ability check's bars per
category (metrics/eval.json "general") and the token-length histogram of metrics/data.json.

Every figure is written through ``files.atomic_path`` so a crash mid-save never
leaves a truncated PNG that a later report would embed.
"""

from __future__ import annotations

import csv
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless: stages run in CI, over SSH and under `dvc repro`
import matplotlib.pyplot as plt  # noqa: E402  (must follow the backend choice)
from matplotlib.ticker import MaxNLocator  # noqa: E402

from tunelab.eval.metric_names import lower_is_better  # noqa: E402
from tunelab.report.general_section import category_label  # noqa: E402
from tunelab.util import files  # noqa: E402


@dataclass(frozen=True)
class CurveFigure:
    """One PNG of DVCLive curves. ``lines`` maps a legend label to the series names it may
    be logged under (the first present wins); ``bands`` maps a line's label to the series
    of its standard deviation, drawn as a +-1 std band around it."""
    file_name: str
    title: str
    ylabel: str
    lines: dict[str, tuple[str, ...]]
    bands: dict[str, tuple[str, ...]] = field(default_factory=dict)


# DVCLive names a series by its path under plots/metrics/. transformers' DVCLive
# callback logs the per-step train loss as "loss" ("train/loss" is the one-row
# end-of-run summary), eval loss as "eval/loss", and "learning_rate", "grad_norm".
TRAINING_FIGURES = (
    CurveFigure("loss.png", "Loss", "loss",
                {"train loss": ("loss",), "eval loss": ("eval/loss",)}),
    CurveFigure("learning_rate.png", "Learning rate schedule", "learning rate",
                {"learning rate": ("learning_rate",)}),
    CurveFigure("grad_norm.png", "Gradient norm", "L2 norm of gradients",
                {"gradient norm": ("grad_norm",)}),
)

# The align stage's curves (metrics/align), logged by TRL's trainers through the same
# callback. DPO, ORPO and KTO log the implicit reward of the chosen and rejected answers
# ("rewards/margins", "rewards/accuracies": how often chosen beats rejected); GRPO logs the
# mean reward of its sampled completions ("reward", "reward_std"), the KL to the reference
# model ("kl"; KTO logs one too) and "completions/mean_length". A file is written only when
# one of its series was logged, so each objective gets the figures it has.
ALIGN_FIGURES = (
    CurveFigure("align_loss.png", "Alignment loss", "loss",
                {"train loss": ("loss",), "eval loss": ("eval/loss",)}),
    CurveFigure("align_rewards.png", "Alignment rewards", "reward",
                {"reward margin (chosen - rejected)": ("rewards/margins",),
                 "preference accuracy (share, 0..1)": ("rewards/accuracies",),
                 "eval reward margin": ("eval/rewards/margins",),
                 "eval preference accuracy": ("eval/rewards/accuracies",),
                 "mean reward": ("reward",)},
                bands={"mean reward": ("reward_std",)}),
    CurveFigure("align_kl.png", "KL divergence from the reference model", "KL",
                {"KL": ("kl",)}),
    CurveFigure("align_completion_length.png", "Length of the sampled completions",
                "tokens", {"mean completion length": ("completions/mean_length",)}),
)

# The base-vs-tuned chart draws shares: every metric whose values all lie in 0..1 (the
# built-in task_accuracy, exact_match, json_valid, field_*, rougeL, reward, and whatever a
# scorer plugin adds), except these, which are on another scale and land in 0..1 only by
# chance: loss and perplexity (metric_names.lower_is_better) and chrF (0..100).
OTHER_SCALE_METRICS = ("chrf",)

# The models of metrics/eval.json a bar chart compares, in order, with their bars' look;
# "aligned" is there only when the align stage ran.
COMPARED_MODELS = (("base", "base (initial)", "#9aa5b1"), ("tuned", "tuned (SFT)", "#2f6fde"),
                   ("aligned", "aligned", "#e8833a"))

DEFAULT_DPI = 100


def plot_training_curves(live_dir: str | os.PathLike, out_dir: str | os.PathLike,
                         dpi: int = DEFAULT_DPI,
                         figures: tuple[CurveFigure, ...] = TRAINING_FIGURES) -> list[Path]:
    """Write ``figures`` (by default loss.png, learning_rate.png and grad_norm.png) from a
    DVCLive dir; ALIGN_FIGURES for the align stage's.

    A figure whose series are all absent is skipped; returns the files written.
    """
    series = read_dvclive_series(live_dir)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for figure in figures:
        lines = {label: _first_present(series, names) for label, names in figure.lines.items()}
        bands = {label: _first_present(series, names) for label, names in figure.bands.items()}
        if _plot_lines(lines, out_dir / figure.file_name, title=figure.title,
                       ylabel=figure.ylabel, dpi=dpi, bands=bands):
            written.append(out_dir / figure.file_name)
    return written


def plot_base_vs_tuned(eval_metrics: dict, out_path: str | os.PathLike,
                       dpi: int = DEFAULT_DPI) -> Path | None:
    """Grouped bars, base vs tuned (vs aligned, when eval.json has it), for the share
    metrics (share_metrics) of ``metrics/eval.json``.

    Returns the path written, or None when no share metric is present.
    """
    models = [(key, eval_metrics[key], label, color) for key, label, color in COMPARED_MODELS
              if isinstance(eval_metrics.get(key), dict)]
    names = share_metrics(eval_metrics)
    if len(models) < 2 or not names:
        return None

    bar_width = 0.76 / len(models)  # the group keeps its width as a model is added
    fig, ax = plt.subplots(figsize=(max(6.0, 0.55 * len(models) * len(names) + 2), 4.5))
    for index, (_, metrics, label, color) in enumerate(models):
        offset = (index - (len(models) - 1) / 2) * bar_width
        bars = ax.bar([x + offset for x in range(len(names))], [metrics[n] for n in names],
                      bar_width, label=label, color=color)
        ax.bar_label(bars, fmt="%.2f", padding=2, fontsize=8)

    many_bars = len(names) > 4  # long names like field_priority collide unless slanted
    ax.set_xticks(list(range(len(names))), names, rotation=30 if many_bars else 0,
                  ha="right" if many_bars else "center")
    ax.set_ylim(0, 1.12)  # headroom for the value labels above a bar at 1.0
    ax.set_ylabel("score (0..1, higher is better)")
    ax.set_title(f"{' vs '.join(key for key, _, _, _ in models).capitalize()} on the test split")
    ax.legend(loc="upper left", ncols=len(models), frameon=False)
    ax.grid(axis="y", alpha=0.3)
    return _save(fig, out_path, dpi)


def share_metrics(eval_metrics: dict) -> list[str]:
    """The metrics of eval.json's "base" (in its order) that are shares: every compared
    model (base, tuned, aligned where it ran) has a number in 0..1 for it, and it is not
    one of the metrics on another scale (loss, perplexity, chrF). An absent metric is never
    one: a free-text run has no task_accuracy and so no bar for it."""
    models = [eval_metrics[key] for key, _, _ in COMPARED_MODELS
              if isinstance(eval_metrics.get(key), dict)]
    return [name for name in eval_metrics.get("base", {})
            if not lower_is_better(name) and name not in OTHER_SCALE_METRICS
            and all(_is_number(metrics.get(name)) and 0 <= metrics[name] <= 1
                    for metrics in models)]


def plot_general(eval_metrics: dict, out_path: str | os.PathLike,
                 dpi: int = DEFAULT_DPI) -> Path | None:
    """The general-ability check (eval.json "general"): per category, bars of the base,
    tuned (and aligned) scores; the tuned bar's whisker is the 95% interval of its change
    from base, the aligned bar's of its change from tuned, so a whisker that reaches the
    bar before it means no clear change.

    Returns the path written, or None when eval.json has no "general" block.
    """
    general = eval_metrics.get("general")
    if not isinstance(general, dict) or not isinstance(general.get("base"), dict):
        return None
    # (model key, its scores, the interval of its change, the scores that change is from)
    models = [(key, general[key], interval, general.get(before) or {})
              for key, interval, before in (("base", None, None), ("tuned", "delta", "base"),
                                            ("aligned", "aligned_delta", "tuned"))
              if isinstance(general.get(key), dict)]
    categories = sorted((name for name in general["base"]  # "all" last: it sums the rest up
                         if all(_is_number(scores.get(name)) for _, scores, _, _ in models)),
                        key=lambda name: name == "all")
    if len(models) < 2 or not categories:
        return None

    colors = {key: color for key, _, color in COMPARED_MODELS}
    labels = {key: label for key, label, _ in COMPARED_MODELS}
    bar_width = 0.76 / len(models)
    fig, ax = plt.subplots(figsize=(max(6.5, 0.6 * len(models) * len(categories) + 2.5), 4.5))
    for index, (key, scores, interval, before) in enumerate(models):
        offset = (index - (len(models) - 1) / 2) * bar_width
        xs = [x + offset for x in range(len(categories))]
        heights = [scores[name] for name in categories]
        ax.bar(xs, heights, bar_width, label=labels[key], color=colors[key])
        tops = heights
        if interval:
            low, high = _shifted_interval(general, interval, before, categories)
            drawn = [i for i, value in enumerate(low) if value is not None]
            if drawn:  # else eval.json has no interval for this change: bars alone
                ax.errorbar([xs[i] for i in drawn], [heights[i] for i in drawn],
                            # max(0, ...): a rounded bound may sit a hair inside the bar
                            yerr=[[max(0.0, heights[i] - low[i]) for i in drawn],
                                  [max(0.0, high[i] - heights[i]) for i in drawn]],
                            fmt="none", ecolor="#1f2933", elinewidth=1.2, capsize=4)
            tops = [max(height, top if top is not None else height)
                    for height, top in zip(heights, high)]
        for x, top, height in zip(xs, tops, heights):
            ax.text(x, min(top, 1.0) + 0.015, f"{height:.2f}", ha="center", va="bottom",
                    fontsize=8)

    ax.set_xticks(list(range(len(categories))),
                  [category_label(name) for name in categories])
    if len(categories) > 1 and categories[-1] == "all":
        ax.axvline(len(categories) - 1.5, color="#9aa5b1", linestyle=":", linewidth=1)
    ax.set_ylim(0, 1.15)
    ax.set_ylabel("share correct (0..1, higher is better)")
    ax.set_xlabel(f"category ({general.get('examples', '?')} prompts in all)")
    ax.set_title(f"General ability: {' vs '.join(key for key, _, _, _ in models)}")
    ax.legend(loc="upper left", ncols=len(models), frameon=False)
    ax.grid(axis="y", alpha=0.3)
    return _save(fig, out_path, dpi)


def _shifted_interval(general: dict, interval: str, before: dict, categories: list[str]
                      ) -> tuple[list[float | None], list[float | None]]:
    """The interval of a change, moved onto the score scale: the model before's score plus
    the change's low and high end (None where the interval or that score is missing)."""
    lows, highs = general.get(f"{interval}_low") or {}, general.get(f"{interval}_high") or {}
    low, high = [], []
    for name in categories:
        ends = (before.get(name), lows.get(name), highs.get(name))
        if all(_is_number(end) for end in ends):
            low.append(ends[0] + ends[1])
            high.append(ends[0] + ends[2])
        else:
            low.append(None)
            high.append(None)
    return low, high


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


def _plot_lines(lines: dict, out_path: Path, title: str, ylabel: str, dpi: int,
                bands: dict | None = None) -> bool:
    present = {label: data for label, data in lines.items() if data}
    if not present:
        return False
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for label, (steps, values) in present.items():
        # Eval loss has a handful of points: markers make each one visible.
        (line,) = ax.plot(steps, values, label=label, marker="o" if len(steps) <= 30 else None,
                          markersize=4)
        if (bands or {}).get(label):
            _fill_band(ax, steps, values, bands[label], line.get_color())
    ax.set_title(title)
    ax.set_xlabel("step")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # no "step 2.5" on short runs
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend()
    ax.ticklabel_format(axis="y", style="sci", scilimits=(-3, 4))
    _save(fig, out_path, dpi)
    return True


def _fill_band(ax, steps: list[float], values: list[float], spread: tuple[list[float], list[float]],
               color) -> None:
    # The spread is its own TSV: pair it with the line by step, since a torn or non-finite
    # row (skipped by _read_tsv) can drop a point from one file and not the other.
    spread_at = dict(zip(*spread))
    paired = [(step, value, spread_at[step]) for step, value in zip(steps, values)
              if step in spread_at]
    if paired:
        band_steps, centres, widths = zip(*paired)
        ax.fill_between(band_steps, [c - w for c, w in zip(centres, widths)],
                        [c + w for c, w in zip(centres, widths)], color=color, alpha=0.2,
                        linewidth=0)


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
