"""One self-contained HTML report of a run, plus the same metrics as a rich table; with
metrics/export.json, the GGUF files for llama.cpp / Ollama next to the transformers model;
when the align stage ran (metrics/align/summary.json), the aligned model beside the tuned
one and an Alignment section; when eval.json has a "general" block, what tuning changed in
the general-ability check; with metrics/judge.json, the LLM judge's verdicts.

The headline table shows the metrics eval.json has, and only those: a free-text run has no
task_accuracy row, a scorer plugin's metric gets one.

The General ability and Judge sections are built in general_section and judge_section, the
number formats they share with this page in cells.

The HTML has no external resources at all (plots are base64 data URIs, CSS is
inline) so it can be mailed, attached to a PR or opened offline as is.
"""

from __future__ import annotations

import base64
import json
import math
import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Iterable

from rich.table import Table

from tunelab.eval.metric_names import lower_is_better, metric_number
from tunelab.report import templating
from tunelab.report.cells import ALIGNED, MISSING_CELL, format_change, format_value
from tunelab.report.general_section import GENERAL_VERDICT_STATUS, general_section
from tunelab.report.judge_section import JUDGE_OFF_LINE, judge_section
from tunelab.util.names import flatten

REPORTED_PARAM_SECTIONS = ("model", "prepare", "train", "evaluate", "export")
DEFAULT_MAX_SAMPLES = 10
SAMPLE_FIELDS = ("prompt", "reference", "base", "tuned")

# Changes this small are float noise, not a result ("same").
RELATIVE_TOLERANCE = 1e-4
ABSOLUTE_TOLERANCE = 1e-6

# Training curves first in their natural reading order; unknown plots follow.
PLOT_ORDER = ("base_vs_tuned", "general", "loss", "learning_rate", "grad_norm",
              "align_loss", "align_rewards", "align_kl", "align_completion_length")
PLOT_CAPTIONS = {"base_vs_tuned": "Base vs tuned (vs aligned, when an alignment ran) on the "
                                  "0..1 metrics",
                 "general": "General ability per category: the share of prompts answered "
                            "right. The whisker on the tuned (aligned) bar is the 95% interval "
                            "of its change from base (tuned): one that reaches the height of "
                            "the bar before it is no clear change",
                 "loss": "Training and evaluation loss", "learning_rate": "Learning rate schedule",
                 "grad_norm": "Gradient norm during training",
                 "token_lengths": "Token lengths of the raw examples against train.max_length "
                                  "(metrics/data.json, analysis)",
                 "align_loss": "Alignment loss", "align_rewards":
                     "Alignment rewards: the chosen answer's margin over the rejected one and "
                     "how often it wins (DPO, ORPO, KTO), or the completions' mean reward +- 1 "
                     "std (GRPO)",
                 "align_kl": "KL divergence of the aligned model from the SFT reference",
                 "align_completion_length": "Mean length of the sampled completions (GRPO)"}
# Plots of the data, shown in the Data section next to metrics/data.json, not under Plots.
DATA_PLOTS = ("token_lengths",)
# The align stage's plots (stages/plot.py), shown in the Alignment section when it is there.
ALIGN_PLOT_PREFIX = "align_"
# The general-ability plot, shown in its section when eval.json has the block.
GENERAL_PLOT = "general"
# metrics/data.json rows the Data section leaves out: the histogram's bins are its plot.
HIDDEN_DATA_ROWS = ("analysis.histogram.",)
STATUS_STYLES = {"improved": "green", "worse": "red", "same": "dim", "n/a": "dim"}
# Of the held-out set, the headline numbers only: its every metric would double the table.
# So its detail metrics stay out (perplexity restates loss; chrF, ROUGE and per-field scores
# break the task score down); every other metric it has is a row, a scorer plugin's too.
HELDOUT_DETAIL_METRICS = ("perplexity", "chrf")
HELDOUT_DETAIL_PREFIXES = ("rouge", "field_")

# metrics/export.json (the export stage): one object per model, "transformers" the reference
# the GGUF files are compared with, "lora" the adapter GGUF applied to a base GGUF.
EXPORT_REFERENCE, EXPORT_ADAPTER = "transformers", "lora"
EXPORT_COLUMNS = {"task_accuracy": "task accuracy", "json_valid": "valid JSON",
                  "exact_match": "exact match", "agreement": "agreement with transformers",
                  "template_differences": "template differences", "tokens_per_second": "tokens/s",
                  "speedup": "speed-up", "size_mb": "file size MB"}
EXPORT_SETTING_LABELS = {"examples": "test examples", "speed_examples": "examples timed",
                         "max_new_tokens": "max new tokens", "threads": "CPU threads",
                         "llama_cpp_cpu": "llama.cpp CPU kernels"}


@dataclass
class MetricRow:
    """One metric compared between the base (initial) and tuned (final) model, and, when
    the align stage ran, between the tuned (SFT) and the aligned model."""
    name: str
    base: float
    tuned: float
    change: float
    status: str  # "improved" | "worse" | "same" | "n/a" (a value is NaN or inf)
    aligned: float | None = None  # None: no alignment ran, or it has no such number
    aligned_change: float | None = None  # aligned - tuned: what alignment did after SFT
    aligned_status: str | None = None


def metric_rows(eval_metrics: dict) -> list[MetricRow]:
    """The numeric metrics present for both models, in eval.json's order (an absent one,
    as task_accuracy on free-text data, is no row; blocks such as "general" are not in
    "base"); then the held-out set's (evaluate.heldout) headline metrics, all but
    HELDOUT_DETAIL_*, named "heldout NAME"."""
    base, tuned = eval_metrics.get("base", {}), eval_metrics.get("tuned", {})
    aligned = eval_metrics.get(ALIGNED) if isinstance(eval_metrics.get(ALIGNED), dict) else {}
    rows = []
    for name, base_value in base.items():
        tuned_value = tuned.get(name)
        if metric_number(base_value) is None or metric_number(tuned_value) is None:
            continue
        row = MetricRow(name, base_value, tuned_value, tuned_value - base_value,
                        compare_status(name, base_value, tuned_value))
        aligned_value = aligned.get(name)
        if metric_number(aligned_value) is not None:
            row.aligned, row.aligned_change = aligned_value, aligned_value - tuned_value
            row.aligned_status = compare_status(name, tuned_value, aligned_value)
        rows.append(row)
    if isinstance(eval_metrics.get("heldout"), dict):
        rows += [replace(row, name=f"heldout {row.name}")
                 for row in metric_rows(eval_metrics["heldout"])
                 if row.name not in HELDOUT_DETAIL_METRICS
                 and not row.name.startswith(HELDOUT_DETAIL_PREFIXES)]
    return rows


def metric_headers(eval_metrics: dict) -> list[str]:
    """The metrics table's column headers (HTML and console): with an aligned model, SFT's
    column is no longer the final one, and three columns compare the aligned model with it."""
    if not has_aligned(eval_metrics):
        return ["metric", "initial (base)", "final (tuned)", "change", "status"]
    return ["metric", "initial (base)", "SFT (tuned)", "change", "status",
            aligned_label(eval_metrics), "change vs SFT", "status vs SFT"]


def has_aligned(eval_metrics: dict) -> bool:
    return isinstance(eval_metrics.get(ALIGNED), dict)


def aligned_label(eval_metrics: dict) -> str:
    """"aligned (dpo)": the aligned model named with its objective, where eval.json says it."""
    objective = eval_metrics.get("objective")
    return f"{ALIGNED} ({objective})" if objective else ALIGNED


def compare_status(name: str, base_value: float, tuned_value: float) -> str:
    if not (math.isfinite(base_value) and math.isfinite(tuned_value)):
        return "n/a"
    if math.isclose(base_value, tuned_value, rel_tol=RELATIVE_TOLERANCE, abs_tol=ABSOLUTE_TOLERANCE):
        return "same"
    went_down = tuned_value < base_value
    return "improved" if went_down == lower_is_better(name) else "worse"


def summary_table(eval_metrics: dict) -> Table:
    """The report's metrics table for the console."""
    aligned = has_aligned(eval_metrics)
    table = Table(title="Base vs tuned vs aligned" if aligned else "Base vs tuned")
    for header in metric_headers(eval_metrics):
        is_text = header in ("metric", "status", "status vs SFT")
        table.add_column(header, justify="left" if is_text else "right")
    for row in metric_rows(eval_metrics):
        cells = [row.name, format_value(row.base), format_value(row.tuned),
                 format_change(row.change), _styled_status(row.status)]
        if aligned:
            cells += ([MISSING_CELL] * 3 if row.aligned is None else
                      [format_value(row.aligned), format_change(row.aligned_change),
                       _styled_status(row.aligned_status)])
        table.add_row(*cells)
    return table


def _styled_status(status: str) -> str:
    style = STATUS_STYLES[status]
    return f"[{style}]{status}[/{style}]"


@dataclass
class AlignmentSection:
    """What the report shows of metrics/align/summary.json (the align stage)."""
    objective: str
    settings: list[tuple[str, object]]  # the summary less heldout_pairs, dotted like table_rows
    pair_rows: list[MetricRow]  # held-out preference pairs: before (SFT) -> after (aligned)
    pair_count: int | None = None  # how many held-out pairs, where the summary says
    plots: list[dict] = field(default_factory=list)


def alignment_section(summary: dict | None) -> AlignmentSection | None:
    """None when no alignment ran: objective "none", or no summary (a run from before the
    align stage); the report then has no Alignment section at all."""
    if not summary or summary.get("objective", "none") == "none":
        return None
    pairs = summary.get("heldout_pairs") if isinstance(summary.get("heldout_pairs"), dict) else {}
    # before/after hold the same kind of numbers as base/tuned, so they compare the same way
    # (loss: lower is better; preference_accuracy, reward_margin: higher). KTO's may hold
    # only some of them; GRPO trains on no pairs and has none.
    return AlignmentSection(
        objective=str(summary["objective"]),
        settings=table_rows({key: value for key, value in summary.items()
                             if key != "heldout_pairs"}),
        pair_rows=metric_rows({"base": pairs.get("before") or {},
                               "tuned": pairs.get("after") or {}}),
        pair_count=pairs.get("rows"))


def alignment_summary(summary: dict | None) -> str | None:
    """One console line: the objective and its held-out pairs before -> after."""
    section = alignment_section(summary)
    if section is None:
        return None
    if not section.pair_rows:
        return f"alignment {section.objective}: no held-out pairs"
    count = f" ({section.pair_count})" if section.pair_count is not None else ""
    changes = [f"{row.name} {format_value(row.base)} -> {format_value(row.tuned)}"
               for row in section.pair_rows]
    return f"alignment {section.objective}: held-out pairs{count} {', '.join(changes)}"


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


def export_columns(rows: list[ExportRow]) -> dict[str, str]:
    """EXPORT_COLUMNS that some model has a number for: a free-text run's export has no
    task accuracy or valid JSON, and a column of dashes would say nothing."""
    return {key: header for key, header in EXPORT_COLUMNS.items()
            if any(row.cells[key] != MISSING_CELL for row in rows)}


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
        parts = [f"{label} {row.cells[key]}" for key, label in
                 (("task_accuracy", "task accuracy"), ("agreement", "agreement"),
                  ("speedup", "speed-up")) if row.cells[key] != MISSING_CELL]
        line = f"llama.cpp {row.name}: {', '.join(parts + [row.cells['size_mb'] + ' MB'])}"
        if row.template_mismatch:
            line += f", [bold red]{row.cells['template_differences']} template differences[/]"
        lines.append(line)
    return "\n".join(lines)


def build_report(*, eval_metrics: dict, params: dict | None = None, samples: list[dict] | None = None,
                 data_stats: dict | None = None, validation: dict | None = None,
                 export: dict | None = None, align_summary: dict | None = None,
                 judge: dict | None = None, plot_paths: Iterable[str | os.PathLike] = (),
                 max_samples: int = DEFAULT_MAX_SAMPLES,
                 title: str = "tunelab report") -> str:
    """Render the whole report to one HTML string.

    ``params`` is the full params.yaml; only REPORTED_PARAM_SECTIONS are shown.
    Optional inputs that are None are reported as missing rather than failing,
    so a partial run still gets a report. ``align_summary`` (metrics/align/summary.json)
    adds the Alignment section, unless its objective is "none"; eval.json's "general" block
    the General ability section; ``judge`` (metrics/judge.json) the Judge section, one line
    when it says the judge was off.
    """
    if max_samples < 0:
        raise ValueError(f"max_samples must be >= 0, got {max_samples}")
    params = params or {}
    samples = samples or []
    param_sections = {section: table_rows(params[section]) for section in REPORTED_PARAM_SECTIONS
                      if isinstance(params.get(section), dict)}
    env = templating.environment({"value": format_value, "change": format_change})
    template = env.get_template("report.html.j2")
    alignment = alignment_section(align_summary)
    plots = [(path.stem, _embed_png(path))
             for path in sorted(map(Path, plot_paths), key=_plot_sort_key)]
    if alignment is not None:  # else align_*.png (if any) stay under Plots: never dropped
        alignment.plots = [plot for stem, plot in plots if stem.startswith(ALIGN_PLOT_PREFIX)]
        plots = [(stem, plot) for stem, plot in plots if not stem.startswith(ALIGN_PLOT_PREFIX)]
    general = general_section(eval_metrics)
    if general is not None:  # else general.png (if any) stays under Plots
        general.plot = next((plot for stem, plot in plots if stem == GENERAL_PLOT), None)
        plots = [(stem, plot) for stem, plot in plots if stem != GENERAL_PLOT]
    exported = None if export is None else export_rows(export)
    sample_fields = SAMPLE_FIELDS + ((ALIGNED,) if any(ALIGNED in sample for sample in samples)
                                     else ())
    return template.render(
        title=title,
        method=eval_metrics.get("method"),
        test_examples=eval_metrics.get("examples"),
        metric_headers=metric_headers(eval_metrics),
        metric_rows=metric_rows(eval_metrics),
        show_aligned=has_aligned(eval_metrics),
        aligned_label=aligned_label(eval_metrics),
        missing_cell=MISSING_CELL,
        alignment=alignment,
        general=general,
        general_statuses=GENERAL_VERDICT_STATUS,
        judge=judge_section(judge),
        judge_off_line=JUDGE_OFF_LINE,
        param_sections=param_sections,
        data_stats=None if data_stats is None else [(key, value) for key, value in
                                                    table_rows(data_stats)
                                                    if not key.startswith(HIDDEN_DATA_ROWS)],
        data_plots=[plot for stem, plot in plots if stem in DATA_PLOTS],
        validation=None if validation is None else table_rows(validation),
        validation_dropped=(validation or {}).get("dropped_untrainable", 0),  # named above the table
        export_columns=EXPORT_COLUMNS if exported is None else export_columns(exported),
        export_rows=exported,
        export_settings=None if export is None else export_settings(export),
        plots=[plot for stem, plot in plots if stem not in DATA_PLOTS],
        # Missing fields render empty: one odd row must not sink the whole report.
        samples=[{name: str(sample.get(name, "")) for name in sample_fields}
                 for sample in samples[:max_samples]],
        samples_aligned=ALIGNED in sample_fields,
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


def _embed_png(path: Path) -> dict:
    encoded = base64.b64encode(path.read_bytes()).decode("ascii")
    caption = PLOT_CAPTIONS.get(path.stem, path.stem.replace("_", " "))
    return {"caption": caption, "data_uri": f"data:image/png;base64,{encoded}"}


def _plot_sort_key(path: Path) -> tuple[int, str]:
    rank = PLOT_ORDER.index(path.stem) if path.stem in PLOT_ORDER else len(PLOT_ORDER)
    return rank, path.name
