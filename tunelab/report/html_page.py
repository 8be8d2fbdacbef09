"""One self-contained HTML report of a run, plus the same metrics as a rich table; with
metrics/export.json, the GGUF files for llama.cpp / Ollama next to the transformers model.

The HTML has no external resources at all (plots are base64 data URIs, CSS is
inline) so it can be mailed, attached to a PR or opened offline as is.
"""

from __future__ import annotations

import base64
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from rich.table import Table

from tunelab.eval.metric_names import lower_is_better, metric_number
from tunelab.report import templating
from tunelab.util.names import flatten

REPORTED_PARAM_SECTIONS = ("model", "prepare", "train", "evaluate", "export")
DEFAULT_MAX_SAMPLES = 10
SAMPLE_FIELDS = ("prompt", "reference", "base", "tuned")

# Changes this small are float noise, not a result ("same").
RELATIVE_TOLERANCE = 1e-4
ABSOLUTE_TOLERANCE = 1e-6

# Training curves first in their natural reading order; unknown plots follow.
PLOT_ORDER = ("base_vs_tuned", "loss", "learning_rate", "grad_norm")
PLOT_CAPTIONS = {"base_vs_tuned": "Base vs tuned on the 0..1 metrics",
                 "loss": "Training and evaluation loss", "learning_rate": "Learning rate schedule",
                 "grad_norm": "Gradient norm during training",
                 "token_lengths": "Token lengths of the raw examples against train.max_length "
                                  "(metrics/data.json, analysis)"}
# Plots of the data, shown in the Data section next to metrics/data.json, not under Plots.
DATA_PLOTS = ("token_lengths",)
# metrics/data.json rows the Data section leaves out: the histogram's bins are its plot.
HIDDEN_DATA_ROWS = ("analysis.histogram.",)
STATUS_STYLES = {"improved": "green", "worse": "red", "same": "dim", "n/a": "dim"}
# Of the held-out set, the headline numbers only: its every metric would double the table.
HELDOUT_METRICS = ("task_accuracy", "json_valid", "exact_match", "loss")

# metrics/export.json (the export stage): one object per model, "transformers" the reference
# the GGUF files are compared with, "lora" the adapter GGUF applied to a base GGUF.
EXPORT_REFERENCE, EXPORT_ADAPTER = "transformers", "lora"
EXPORT_COLUMNS = {"task_accuracy": "task accuracy", "json_valid": "valid JSON",
                  "exact_match": "exact match", "agreement": "agreement with transformers",
                  "template_differences": "template differences", "tokens_per_second": "tokens/s",
                  "speedup": "speed-up", "size_mb": "file size MB"}
EXPORT_SETTING_LABELS = {"examples": "test examples", "speed_examples": "examples timed",
                         "max_new_tokens": "max new tokens", "threads": "CPU threads"}
MISSING_CELL = "\u2014"  # an em dash: this model has no such number


@dataclass
class MetricRow:
    """One metric compared between the base (initial) and tuned (final) model."""
    name: str
    base: float
    tuned: float
    change: float
    status: str  # "improved" | "worse" | "same" | "n/a" (a value is NaN or inf)


def metric_rows(eval_metrics: dict) -> list[MetricRow]:
    """The numeric metrics present for both models, in eval.json's order; then the
    held-out set's (evaluate.heldout) HELDOUT_METRICS, named "heldout NAME"."""
    base, tuned = eval_metrics.get("base", {}), eval_metrics.get("tuned", {})
    rows = []
    for name, base_value in base.items():
        tuned_value = tuned.get(name)
        if metric_number(base_value) is None or metric_number(tuned_value) is None:
            continue
        rows.append(MetricRow(name, base_value, tuned_value, tuned_value - base_value,
                              compare_status(name, base_value, tuned_value)))
    if isinstance(eval_metrics.get("heldout"), dict):
        rows += [MetricRow(f"heldout {row.name}", row.base, row.tuned, row.change, row.status)
                 for row in metric_rows(eval_metrics["heldout"]) if row.name in HELDOUT_METRICS]
    return rows


def compare_status(name: str, base_value: float, tuned_value: float) -> str:
    if not (math.isfinite(base_value) and math.isfinite(tuned_value)):
        return "n/a"
    if math.isclose(base_value, tuned_value, rel_tol=RELATIVE_TOLERANCE, abs_tol=ABSOLUTE_TOLERANCE):
        return "same"
    went_down = tuned_value < base_value
    return "improved" if went_down == lower_is_better(name) else "worse"


def summary_table(eval_metrics: dict) -> Table:
    """The report's metrics table for the console."""
    table = Table(title="Base vs tuned")
    table.add_column("metric")
    table.add_column("initial (base)", justify="right")
    table.add_column("final (tuned)", justify="right")
    table.add_column("change", justify="right")
    table.add_column("status")
    for row in metric_rows(eval_metrics):
        style = STATUS_STYLES[row.status]
        table.add_row(row.name, format_value(row.base), format_value(row.tuned),
                      format_change(row.change), f"[{style}]{row.status}[/{style}]")
    return table


@dataclass
class ExportRow:
    """One model of metrics/export.json as the report shows it: cells keyed like
    EXPORT_COLUMNS, already formatted."""
    name: str
    file: str | None
    note: str | None  # "reference"; the lora row's base file type
    cells: dict[str, str]
    template_differences: float | None

    @property
    def template_mismatch(self) -> bool:
        """llama.cpp renders some prompt into other tokens than transformers did."""
        return self.template_differences is not None and self.template_differences > 0


def export_rows(export: dict) -> list[ExportRow]:
    """The models of metrics/export.json: transformers first, the GGUF files in file order,
    the lora adapter last; top-level numbers (the settings) are no model."""
    models = [name for name, value in export.items() if isinstance(value, dict)]
    models.sort(key=lambda name: (name != EXPORT_REFERENCE, name == EXPORT_ADAPTER))
    rows = []
    for name in models:
        entry = export[name]
        note = "reference" if name == EXPORT_REFERENCE else None
        if entry.get("base_file_type"):
            note = f"adapter on the {entry['base_file_type']} base"
        rows.append(ExportRow(name, entry.get("file"), note,
                              {key: export_cell(key, entry.get(key)) for key in EXPORT_COLUMNS},
                              metric_number(entry.get("template_differences"))))
    return rows


def export_cell(key: str, value) -> str:
    """Rates and sizes to one decimal, the speed-up as a factor, scores like the metrics table."""
    number = metric_number(value)
    if number is None:
        return MISSING_CELL
    if key in ("tokens_per_second", "size_mb"):
        return f"{number:,.1f}"
    if key == "speedup":
        return f"{number:.2f}\u00d7"
    return format_value(value)


def export_settings(export: dict) -> list[tuple[str, object]]:
    """The top-level numbers of metrics/export.json (how the parity check ran), labelled."""
    return [(EXPORT_SETTING_LABELS.get(key, key), value) for key, value in export.items()
            if not isinstance(value, dict)]


def export_summary(export: dict) -> str:
    """One rich-markup line per GGUF model for the console: the numbers that decide whether
    to ship it."""
    lines = []
    for row in export_rows(export):
        if row.name == EXPORT_REFERENCE:
            continue
        line = (f"llama.cpp {row.name}: task accuracy {row.cells['task_accuracy']}, "
                f"agreement {row.cells['agreement']}, speed-up {row.cells['speedup']}, "
                f"{row.cells['size_mb']} MB")
        if row.template_mismatch:
            line += f", [bold red]{row.cells['template_differences']} template differences[/]"
        lines.append(line)
    return "\n".join(lines)


def build_report(*, eval_metrics: dict, params: dict | None = None, samples: list[dict] | None = None,
                 data_stats: dict | None = None, validation: dict | None = None,
                 export: dict | None = None, plot_paths: Iterable[str | os.PathLike] = (), max_samples: int = DEFAULT_MAX_SAMPLES,
                 title: str = "tunelab report") -> str:
    """Render the whole report to one HTML string.

    ``params`` is the full params.yaml; only REPORTED_PARAM_SECTIONS are shown.
    Optional inputs that are None are reported as missing rather than failing,
    so a partial run still gets a report.
    """
    if max_samples < 0:
        raise ValueError(f"max_samples must be >= 0, got {max_samples}")
    params = params or {}
    samples = samples or []
    param_sections = {section: table_rows(params[section]) for section in REPORTED_PARAM_SECTIONS
                      if isinstance(params.get(section), dict)}
    env = templating.environment({"value": format_value, "change": format_change})
    template = env.get_template("report.html.j2")
    plots = [(path.stem, _embed_png(path))
             for path in sorted(map(Path, plot_paths), key=_plot_sort_key)]
    return template.render(
        title=title,
        method=eval_metrics.get("method"),
        test_examples=eval_metrics.get("examples"),
        metric_rows=metric_rows(eval_metrics),
        param_sections=param_sections,
        data_stats=None if data_stats is None else [(key, value) for key, value in
                                                    table_rows(data_stats)
                                                    if not key.startswith(HIDDEN_DATA_ROWS)],
        data_plots=[plot for stem, plot in plots if stem in DATA_PLOTS],
        validation=None if validation is None else table_rows(validation),
        export_columns=EXPORT_COLUMNS,
        export_rows=None if export is None else export_rows(export),
        export_settings=None if export is None else export_settings(export),
        plots=[plot for stem, plot in plots if stem not in DATA_PLOTS],
        # Missing fields render empty: one odd row must not sink the whole report.
        samples=[{field: str(sample.get(field, "")) for field in SAMPLE_FIELDS}
                 for sample in samples[:max_samples]],
        total_samples=len(samples),
    )


def table_rows(mapping: dict) -> list[tuple[str, object]]:
    """Nested dicts as (dotted key, value) rows; lists of scalars stay lists, any other
    dict or list shows as JSON."""
    return [(key, json.dumps(value, ensure_ascii=False)
             if isinstance(value, (dict, list)) and not _scalar_list(value) else value)
            for key, value in flatten(mapping).items()]


def _scalar_list(value) -> bool:
    return isinstance(value, list) and all(not isinstance(item, (dict, list)) for item in value)


def format_value(value) -> str:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, int):
        return f"{value:,}"
    if not math.isfinite(value):
        return str(value)
    if value != 0 and abs(value) < 1e-3:
        return f"{value:.2e}"  # four fixed decimals would print a small change as 0.0000
    return f"{value:,.1f}" if abs(value) >= 1000 else f"{value:.4f}"


def format_change(change: float) -> str:
    formatted = format_value(change)
    if change == 0 or formatted.startswith(("-", "nan", "inf")):
        return formatted
    return f"+{formatted}"


def _embed_png(path: Path) -> dict:
    encoded = base64.b64encode(path.read_bytes()).decode("ascii")
    caption = PLOT_CAPTIONS.get(path.stem, path.stem.replace("_", " "))
    return {"caption": caption, "data_uri": f"data:image/png;base64,{encoded}"}


def _plot_sort_key(path: Path) -> tuple[int, str]:
    rank = PLOT_ORDER.index(path.stem) if path.stem in PLOT_ORDER else len(PLOT_ORDER)
    return rank, path.name
