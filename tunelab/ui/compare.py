"""The Compare page: two or more finished runs side by side, each against the first.

- metric deltas: every metric (runs.flat_metrics names) whose value differs between the
  runs, with B - A coloured by the metric's direction (tunelab.eval.metric_names);
- the paired per-example comparison of `tunelab compare-runs` (experiments.compare_runs:
  the same test examples scored one by one, a 95% bootstrap interval of the mean
  difference and its verdict);
- the training curves overlaid: each run's DVCLive series (metrics/train/plots/metrics/,
  read at the run's commit through experiments.repo and parsed by
  tunelab.report.plotting's reader), drawn into one PNG embedded in the page;
- the test answers side by side, for the examples the runs answered differently.
"""

from __future__ import annotations

import io
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from fastapi import APIRouter, Query, Request

from tunelab.errors import DataError
from tunelab.eval.metric_names import lower_is_better, metric_number
from tunelab.experiments import repo
from tunelab.report import plotting
from tunelab.ui.pages import PageError, png_data_uri, render
from tunelab.ui.runs import HEADLINE_METRICS, Run, find_run, run_table

router = APIRouter()

LIVE_DIR = "metrics/train"                       # the train stage's DVCLive folder
SERIES_DIR = "plots/metrics"                     # where DVCLive keeps a folder's series
# The series of the loss figure the plot stage draws: {label: names it may be logged under}.
LOSS_SERIES = plotting.TRAINING_FIGURES[0].lines
MAX_SHOWN_ANSWERS = 40                           # differing examples listed on the page
GIST_CHARACTERS = 140                            # of a prompt, in an answer's heading
SHOWN_METRICS = 12                               # metric rows shown before "more"
METRIC_GROUPS = ("tuned", "aligned", "general", "heldout", "train", "export", "base")


@dataclass
class MetricRow:
    name: str
    values: list            # one per run; None where a run lacks it
    deltas: list            # run minus the first run; None where either lacks it
    lower_is_better: bool


@dataclass
class AnswerRow:
    source: str
    prompt: str
    reference: str
    answers: list[str]
    gist: str = ""  # the part of the prompt that tells it from the others


@router.get("/compare")
def compare_page(request: Request, run: list[str] = Query(default=[])):
    names = list(dict.fromkeys(run))  # each once, in the order given
    table = run_table(request.app.state.root)
    finished = [r for r in table.runs if r.finished]
    if not names:
        return render(request, "compare_pick.html.j2", title="Compare", runs=finished)
    runs = [find_run(request.app.state.root, name) for name in names]  # 404 if unknown
    unfinished = [r.name for r in runs if not r.finished]
    if unfinished:
        raise PageError(400, f"{', '.join(unfinished)}: not finished yet, so there is nothing "
                        "to compare (the Runs page shows its state)")
    if len(runs) < 2:
        raise PageError(400, "pick two or more runs to compare (tick them on the Runs page)")
    root = request.app.state.root
    paired, paired_error, answers, examples = paired_comparison(runs, root)
    return render(request, "compare.html.j2", title="Compare " + " · ".join(names), runs=runs,
                  metrics=metric_rows(runs), paired=paired, paired_error=paired_error,
                  answers=answers[:MAX_SHOWN_ANSWERS], differing=len(answers),
                  examples=examples, curves=curves_png(runs, root),
                  shown_metrics=SHOWN_METRICS)


def metric_rows(runs: list[Run]) -> list[MetricRow]:
    """Every numeric metric whose value is not the same in all the runs that have it, the
    Runs page's headline metrics first. eval.json's delta.* (tuned - base within one run)
    are left out: a difference of differences says less than the two it comes from."""
    names = {key for r in runs for key, value in r.metrics.items()
             if metric_number(value) is not None and not key.startswith("delta.")}
    rows = []
    for name in sorted(names, key=metric_order):
        values = [r.metrics.get(name) if metric_number(r.metrics.get(name)) is not None
                  else None for r in runs]
        if len({value for value in values if value is not None}) < 2:
            continue
        first = values[0]
        deltas = [None if first is None or value is None else value - first for value in values]
        rows.append(MetricRow(name, values, deltas, lower_is_better(name)))
    return rows


def metric_order(name: str) -> tuple:
    if name in HEADLINE_METRICS:
        return (0, HEADLINE_METRICS.index(name))
    prefix = name.split(".", 1)[0]
    return (1 + (METRIC_GROUPS.index(prefix) if prefix in METRIC_GROUPS else len(METRIC_GROUPS)),
            name)


# --- the paired comparison and the answers (experiments.compare_runs) ------------------

def paired_comparison(runs: list[Run], root: Path):
    """(for each run after the first: its compare_runs.Difference list against the first,
    or None; the reason none could be made; the differing answers; the examples count)."""
    from tunelab.experiments import compare_runs  # loads the scorers: only on this page

    try:
        samples = [compare_runs.load_samples(samples_spec(r, root), root) for r in runs]
        paired = [compare_runs.compare(samples[0], other) for other in samples[1:]]
    except DataError as err:
        return [], str(err), [], 0
    return paired, "", differing_answers(samples, compare_runs.final_answer), len(samples[0])


def samples_spec(run: Run, root: Path) -> str:
    """What compare_runs.load_samples reads a run's answers from: the workspace's file, or
    the file at the run's commit."""
    from tunelab.experiments.compare_runs import SAMPLES_FILE

    return str(root / SAMPLES_FILE) if run.kind == "workspace" else run.rev


def differing_answers(samples: list[list[dict]], final_answer) -> list[AnswerRow]:
    """The examples (matched by source and prompt) whose final answers are not all equal."""
    keyed = [{(s.get("source", i), s["prompt"]): s for i, s in enumerate(rows)}
             for rows in samples]
    rows = []
    for key, first in keyed[0].items():
        found = [by_key.get(key) for by_key in keyed]
        answers = [final_answer(s) if s else "(not answered)" for s in found]
        if len(set(answers)) > 1:
            rows.append(AnswerRow(str(key[0]), first["prompt"], first["reference"], answers))
    # An instruction every prompt starts with says nothing about one example: cut it off.
    shared = os.path.commonprefix([row.prompt for row in rows]) if len(rows) > 1 else ""
    shared = shared[:shared.rfind("\n") + 1]
    for row in rows:
        rest = " ".join(row.prompt[len(shared):].split())
        row.gist = rest if len(rest) <= GIST_CHARACTERS else rest[:GIST_CHARACTERS] + "…"
    return rows


# --- the training curves ---------------------------------------------------------------

def run_series(run: Run, root: Path) -> dict[str, tuple[list[float], list[float]]]:
    """A run's DVCLive series of the loss figure: from the workspace's files, a running
    experiment's temporary workspace, or the run's commit."""
    if run.kind == "workspace" or run.workdir:
        return plotting.read_dvclive_series(Path(run.workdir or root) / LIVE_DIR)
    names = [name for names in LOSS_SERIES.values() for name in names]
    # DVCLive's files are in Git (dvc.yaml: metrics/train/plots, cache: false).
    texts = repo.git_files_at(run.rev, [f"{LIVE_DIR}/{SERIES_DIR}/{name}.tsv" for name in names],
                              root)
    with tempfile.TemporaryDirectory(prefix="tunelab-ui-curves-") as folder:
        for name, text in zip(names, texts.values()):
            if text is not None:
                target = Path(folder, SERIES_DIR, f"{name}.tsv")
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_text(text, encoding="utf-8")
        return plotting.read_dvclive_series(folder)  # the plot stage's own parsing


def curves_png(runs: list[Run], root: Path) -> str | None:
    """The runs' loss curves in one figure, as a data: URL; None when no run has any."""
    import matplotlib.pyplot as plt  # the Agg backend: tunelab.report.plotting chose it

    fig, ax = plt.subplots(figsize=(8, 4.2))
    drawn = False
    for index, run in enumerate(runs):
        series = run_series(run, root)
        color = f"C{index % 10}"
        for (label, names), style in zip(LOSS_SERIES.items(), ("-", "--")):
            found = next((series[name] for name in names if name in series), None)
            if found:
                steps, values = found
                ax.plot(steps, values, style, color=color, label=f"{run.name}: {label}",
                        marker="o" if len(steps) <= 30 else None, markersize=3)
                drawn = True
    if not drawn:
        plt.close(fig)
        return None
    ax.set_title("Loss (solid: train, dashed: eval)")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return png_data_uri(png_bytes(fig))


def png_bytes(fig) -> bytes:
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    try:
        fig.savefig(buffer, format="png", dpi=90)
    finally:
        plt.close(fig)
    return buffer.getvalue()
