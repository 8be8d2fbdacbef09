"""The Runs page: every commit and experiment `dvc exp show` knows, with its params,
metrics, state and the sweep it belongs to; and the run lookup the other pages use.

A run is named as a user names it on the command line: ``workspace``, an experiment's
name, or a commit's short sha. The table is `dvc exp show --json` (experiments.repo),
flattened: params as dotted keys of params.yaml (``train.learning_rate``), metrics named
as `tunelab check` and sweep files name them (experiments.check: ``tuned.task_accuracy``
from metrics/eval.json, ``train.eval_loss`` from metrics/train/summary.json,
``export.KEY`` from metrics/export.json; other metrics files by their stem). The sweep
of a run is the one whose record (reports/sweeps/ID.json) lists it as a trial.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path

from fastapi import APIRouter, Request

from tunelab.experiments import check, repo, sweep_record
from tunelab.ui.pages import PageError, render
from tunelab.util.names import flatten

router = APIRouter()

DEFAULT_COMMITS = 5
MAX_COMMITS = 200
# Metrics shown as columns when a run has them, in this order; every metric is on the
# run's own page.
HEADLINE_METRICS = ("tuned.task_accuracy", "tuned.exact_match", "tuned.json_valid",
                    "tuned.loss", "aligned.task_accuracy", "general.tuned.all",
                    "train.eval_loss")
# Params shown as columns when no param differs between the listed runs.
DEFAULT_PARAMS = ("train.method", "train.learning_rate", "train.max_steps")
# dvc exp show's executor states, in the words of the page.
STATES = {"success": "done", "queued": "queued", "running": "running", "failed": "failed"}


@dataclass
class Run:
    name: str                  # workspace, an experiment's name, or a commit's short sha
    kind: str                  # workspace | commit | experiment
    rev: str | None            # the commit holding its files; None for the workspace
    state: str                 # done | queued | running | failed
    baseline: str | None = None  # an experiment's commit it ran on
    label: str = ""            # a commit's branch or tag
    created: str = ""
    params: dict = field(default_factory=dict)
    metrics: dict = field(default_factory=dict)
    sweep: str | None = None
    workdir: str | None = None  # a running experiment's temporary workspace (DVC's executor)
    log: str | None = None      # the output of an experiment's stages (`dvc queue logs`)

    @property
    def finished(self) -> bool:
        return self.state == "done"


@dataclass
class RunTable:
    runs: list[Run]
    commits: int

    def find(self, name: str) -> Run:
        """The run called ``name`` (or a commit named by a longer sha prefix); 404 if none."""
        for run in self.runs:
            if run.name == name:
                return run
        if len(name) >= 7:
            found = [run for run in self.runs if run.kind == "commit" and run.rev.startswith(name)]
            if len(found) == 1:
                return found[0]
        raise PageError(404, f"no run named {name!r}: the Runs page lists them (runs on commits "
                        f"older than the last {self.commits}: /runs?commits=N)")

    def metric_columns(self) -> list[str]:
        present = {key for run in self.runs for key in run.metrics}
        return [name for name in HEADLINE_METRICS if name in present]

    def param_columns(self) -> list[str]:
        """The params whose values differ between the listed runs (as `dvc exp show
        --only-changed`), or a few defaults when none does."""
        listed = [run for run in self.runs if run.params]
        keys = sorted({key for run in listed for key in run.params})
        changed = [key for key in keys if len({repr(run.params.get(key)) for run in listed}) > 1]
        return changed or [key for key in DEFAULT_PARAMS if key in keys]


# --- building the table -------------------------------------------------------------

_cache: dict[tuple, RunTable] = {}
_reading = threading.Lock()  # one DVC read at a time: the pages share one repo


def run_table(root: Path, commits: int = DEFAULT_COMMITS) -> RunTable:
    """The table for the last ``commits`` commits, rebuilt when HEAD, the experiments, the
    queue or the workspace's params and metrics change (`dvc exp show` takes seconds)."""
    with _reading:
        tasks = repo.queue_tasks(root)
        key = (str(root), commits, repo.head(root), tuple(sorted(repo.experiments(root))),
               tuple((task["name"], task["status"]) for task in tasks),
               *(_mtime(root / name) for name in ("params.yaml", "dvc.lock", check.EVAL_METRICS,
                                                  sweep_record.RECORDS_DIR)))
        if key not in _cache:
            shown = repo.show_experiments(commits, root)
            _cache.clear()
            _cache[key] = RunTable(list(table_rows(shown, sweep_record.trial_sweeps(root))),
                                   commits)
        return _cache[key]


def find_run(root: Path, name: str) -> Run:
    """The run called ``name``: in the table, else a commit older than the table's, named
    by a sha or any git revision (a tag, HEAD~20); 404 when neither."""
    table = run_table(root)
    try:
        return table.find(name)
    except PageError:
        commit = None if name == "workspace" else repo.resolve_commit(name, root)
        if commit is None:
            raise
    with _reading:
        shown = repo.show_experiments(root=root, revs=[commit])
    return next(run for run in table_rows(shown, {}) if run.kind == "commit")


def _mtime(path: Path) -> float | None:
    try:
        return path.stat().st_mtime
    except OSError:
        return None


def table_rows(shown: list[dict], sweeps: dict[str, str]):
    """A Run for each row of `dvc exp show --json`: the workspace, each commit, and each
    experiment on it (running and queued ones first, as DVC lists them)."""
    for entry in shown:
        data = entry.get("data") or {}
        if entry["rev"] == "workspace":
            yield Run("workspace", "workspace", None, "done", params=flat_params(data),
                      metrics=flat_metrics(data))
            continue
        yield Run(entry["rev"][:7], "commit", entry["rev"], "done", label=entry.get("name") or "",
                  created=data.get("timestamp") or "", params=flat_params(data),
                  metrics=flat_metrics(data))
        for exp in entry.get("experiments") or []:
            first = exp["revs"][0]
            exp_data = first.get("data") or {}
            executor = exp.get("executor") or {}
            state = STATES.get(executor.get("state"), "done")
            name = exp.get("name") or first.get("name") or first["rev"][:7]
            local = executor.get("local") or {}
            yield Run(name, "experiment", first["rev"], state, baseline=entry["rev"],
                      created=exp_data.get("timestamp") or "", params=flat_params(exp_data),
                      # a run not done shows its baseline's metrics files: no results yet
                      metrics=flat_metrics(exp_data) if state == "done" else {},
                      sweep=sweeps.get(name), log=local.get("log"),
                      workdir=local.get("root") if state == "running" else None)


def flat_params(data: dict) -> dict:
    values = ((data.get("params") or {}).get("params.yaml") or {}).get("data") or {}
    return flatten(values)


def flat_metrics(data: dict) -> dict:
    """Every metrics file's numbers under the names `tunelab check` uses."""
    prefixes = {path: prefix for prefix, path in check.METRIC_FILES.items()}
    named = {}
    for path, content in (data.get("metrics") or {}).items():
        values = (content or {}).get("data")
        if not isinstance(values, dict):
            continue
        if path == check.EVAL_METRICS:
            named.update(flatten(values))
        else:
            prefix = prefixes.get(path) or Path(path).stem
            named.update(flatten(values, prefix + "."))
    return named


# --- the pages ---------------------------------------------------------------------

@router.get("/runs")
def runs_page(request: Request, commits: int = DEFAULT_COMMITS, q: str = ""):
    if not 1 <= commits <= MAX_COMMITS:
        raise PageError(400, f"commits: give 1..{MAX_COMMITS}, got {commits}")
    table = run_table(request.app.state.root, commits)
    return render(request, "runs.html.j2", title="Runs", table=table,
                  params=table.param_columns(), metrics=table.metric_columns(), query=q,
                  sweeps=any(run.sweep for run in table.runs),
                  more_commits=min(commits * 4, MAX_COMMITS))


@router.get("/runs/{name}")
def run_page(request: Request, name: str):
    run = find_run(request.app.state.root, name)
    return render(request, "run.html.j2", title=f"Run {run.name}", run=run)
