"""`tunelab sweep-report`: a sweep's trials ranked by its metric, the best params,
the metric plotted against each swept param, and one self-contained
reports/sweep.html; `--apply-best` brings the winner into the workspace
(`dvc exp apply`)."""

from __future__ import annotations

import base64
import io as bytes_io
import math
import sys
from pathlib import Path

from tunelab.experiments import repo
from tunelab.experiments.sweep_record import load_record, save_record
from tunelab.report import templating
from tunelab.util import files

DEFAULT_OUTPUT = "reports/sweep.html"


def ranked(record: dict) -> list[dict]:
    """Trials best first by the sweep's metric; those without a value last, in run order."""
    scored = [t for t in record["trials"] if t.get("value") is not None]
    scored.sort(key=lambda t: t["value"], reverse=record["direction"] == "maximize")
    return scored + [t for t in record["trials"] if t.get("value") is None]


def best_trial(record: dict) -> dict | None:
    order = ranked(record)
    return order[0] if order and order[0].get("value") is not None else None


def table(record: dict):
    from rich.table import Table

    best = best_trial(record)
    out = Table(title=f"sweep {record['id']}: {record['strategy']}, "
                      f"{record['direction']} {record['metric']}")
    for column in ("rank", "experiment", *record["keys"], record["metric"], "status"):
        out.add_column(column, justify="right" if column != "experiment" else "left")
    for rank, trial in enumerate(ranked(record), start=1):
        value = trial.get("value")
        out.add_row(str(rank) if value is not None else "-", trial["name"],
                    *[_fmt(trial["params"].get(key)) for key in record["keys"]],
                    f"{value:.4f}" if value is not None else "-", trial["status"],
                    style="bold green" if trial is best else None)
    return out


def plot_png(record: dict, key: str) -> bytes:
    """The metric against one swept param (best trial ringed) as PNG bytes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    done = [t for t in record["trials"] if t.get("value") is not None]
    xs = [t["params"].get(key) for t in done]
    ys = [t["value"] for t in done]
    numeric = all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in xs)
    if not numeric:  # categories in first-seen order
        labels = list(dict.fromkeys(map(str, xs)))
        xs = [labels.index(str(x)) for x in xs]
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    ax.scatter(xs, ys, color="#2f6fde", zorder=3)
    best = best_trial(record)
    if best is not None:
        bx = best["params"].get(key)
        ax.scatter([bx if numeric else labels.index(str(bx))], [best["value"]], s=160,
                   facecolors="none", edgecolors="#177245", linewidths=2, zorder=4, label="best")
        ax.legend(loc="best")
    if numeric and key in record.get("log_keys", []):
        ax.set_xscale("log")
    if not numeric:
        ax.set_xticks(range(len(labels)), labels)
    ax.set_xlabel(key)
    ax.set_ylabel(record["metric"])
    ax.set_title(f"{record['metric']} vs {key}")
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    buffer = bytes_io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    plt.close(fig)
    return buffer.getvalue()


def render_html(record: dict) -> str:
    env = templating.environment()
    best = best_trial(record)
    plots = [(key, base64.b64encode(plot_png(record, key)).decode("ascii"))
             for key in record["keys"]] if best is not None else []
    rows = [{"rank": rank if trial.get("value") is not None else None, "name": trial["name"],
             "params": [_fmt(trial["params"].get(key)) for key in record["keys"]],
             "value": _fmt(trial.get("value")), "status": trial["status"],
             "best": trial is best} for rank, trial in enumerate(ranked(record), start=1)]
    return env.get_template("sweep.html.j2").render(
        record=record, rows=rows, best=best, plots=plots,
        fixed=[(k, _fmt(v)) for k, v in record.get("fixed", {}).items()])


def print_and_write(record: dict, output: str | Path = DEFAULT_OUTPUT) -> dict | None:
    from rich.console import Console

    Console().print(table(record))
    best = best_trial(record)
    if best is None:
        print("no trial produced the metric: nothing to rank", file=sys.stderr)
    else:
        print(f"best: {best['name']}  {record['metric']}={best['value']:.4f}  " +
              " ".join(f"{key}={_fmt(value)}" for key, value in best["params"].items()))
        print(f"apply it: dvc exp apply {best['name']}   (or tunelab sweep-report "
              f"--sweep {record['id']} --apply-best)")
    files.write_text_atomic(output, render_html(record))
    print(f"wrote {output}")
    return best


def report(sweep_id: str | None = None, output: Path = DEFAULT_OUTPUT,
           apply_best: bool = False, pull: bool = False) -> int:
    """`tunelab sweep-report`: 1 when no trial has the metric (or applying fails). With
    ``pull``, first `dvc exp pull origin NAME` of each trial not back yet (cloud runs push
    their experiments to origin)."""
    record = load_record(sweep_id)
    if pull:
        waiting = [t["name"] for t in record["trials"] if t["status"] != "done"]
        pulled = repo.pull_experiments(waiting, "origin")
        print(f"pulled {len(pulled)} of the {len(waiting)} trials not in yet from origin"
              + (f"; not there yet: {', '.join(sorted(set(waiting) - set(pulled)))}"
                 if len(pulled) < len(waiting) else ""))
        record = load_record(record["id"])  # refreshed from the pulled experiments
        save_record(record)
    best = print_and_write(record, output)
    if best is None:
        return 1
    if apply_best:
        return apply(best["name"])
    return 0


def apply(name: str) -> int:
    """`dvc exp apply NAME`. DVC then checks out every pipeline's outputs; those the
    experiment never built (another pipeline's, e.g. multitask/) cannot be, although the
    rest is applied: that alone is reported as a note."""
    try:
        not_built = repo.apply_experiment(name)
    except repo.RepoError as err:
        print(f"tunelab sweep-report: error: {err}", file=sys.stderr)
        return 1
    print(f"applied {name} to the workspace (params.yaml, dvc.lock, metrics, outputs); "
          "commit it to keep it")
    if not_built:
        print(f"note: not built by this experiment, so not checked out: {', '.join(not_built)}")
    return 0


def _fmt(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4f}" if 1e-3 <= abs(value) < 1e4 or value == 0 or math.isnan(value) \
            else f"{value:.3g}"
    return str(value)
