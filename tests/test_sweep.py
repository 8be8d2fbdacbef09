"""Sweeps (tunelab.sweep, sweep_run, sweep_report): the file format and its errors,
grid/random/bayesian trials without DVC, and one real grid sweep of DVC experiments
on a tiny model in a temporary git copy of this repo."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tunelab.cli import app as cli
from tunelab.config.sweep_file import SweepError
from tunelab.experiments import sweep_report, sweep_space

from test_pipeline_e2e import run  # noqa: E402  (tests/ is on sys.path under pytest)
from conftest import TINY_PIPELINE, copy_repo

REPO = Path(__file__).resolve().parents[1]


def write(tmp_path, text: str, name: str = "s.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def load(tmp_path, text: str, **kwargs):
    # Metric names are checked against ./metrics; tmp_path has none, so only the shape is.
    return sweep_space.load_sweep(write(tmp_path, text), root=tmp_path, **kwargs)


def error(tmp_path, text: str, **kwargs) -> str:
    with pytest.raises(SweepError) as caught:
        load(tmp_path, text, **kwargs)
    message = str(caught.value)
    assert "\n" not in message
    return message


BASE = "metric: tuned.loss\ndirection: minimize\n"


# --- the file and its trials --------------------------------------------------

def test_grid_is_every_combination_in_file_order(tmp_path):
    spec = load(tmp_path, BASE + "search_space:\n  train.learning_rate: [1.0e-4, 1.0e-3]\n"
                                 "  train.lora.r: [8, 16, 32]\n")
    assert spec.strategy == "grid" and spec.total_trials == 6 and spec.name == "s"
    assert sweep_space.expand(spec) == [
        {"train.learning_rate": lr, "train.lora.r": r} for lr in (1e-4, 1e-3) for r in (8, 16, 32)]


def test_grid_ranges_with_num_step_and_log(tmp_path):
    spec = load(tmp_path, BASE + "search_space:\n"
                "  train.learning_rate: {low: 1.0e-4, high: 1.0e-2, log: true, num: 3}\n"
                "  train.lora.r: {low: 8, high: 32, step: 8}\n"
                "  train.warmup_ratio: {low: 0.0, high: 0.1, num: 3}\n")
    values = [dim.grid_values() for dim in spec.space]
    assert values == [[1e-4, 1e-3, 1e-2], [8, 16, 24, 32], [0.0, 0.05, 0.1]]
    assert all(isinstance(r, int) for r in values[1])
    assert spec.total_trials == 36


def test_random_is_seeded_inside_the_ranges_and_without_repeats(tmp_path):
    text = (BASE + "strategy: random\nmax_trials: 6\nseed: 3\nsearch_space:\n"
            "  train.learning_rate: {low: 1.0e-5, high: 1.0e-2, log: true}\n"
            "  train.lora.r: [8, 16, 32]\n  train.lora.alpha: {low: 8, high: 64}\n"
            "  train.warmup_ratio: {low: 0.0, high: 0.1, num: 3}\n")
    trials = sweep_space.expand(load(tmp_path, text))
    assert trials == sweep_space.expand(load(tmp_path, text))  # same seed, same trials
    assert len(trials) == 6 and len({json.dumps(t, sort_keys=True) for t in trials}) == 6
    for trial in trials:
        assert 1e-5 <= trial["train.learning_rate"] <= 1e-2
        assert trial["train.lora.r"] in (8, 16, 32)
        assert isinstance(trial["train.lora.alpha"], int) and 8 <= trial["train.lora.alpha"] <= 64
        assert trial["train.warmup_ratio"] in (0.0, 0.05, 0.1)  # num: only the grid points
    # Log-uniform: the rates spread over the decades, not bunched near the top.
    assert min(t["train.learning_rate"] for t in trials) < 1e-3
    other_seed = sweep_space.expand(load(tmp_path, text.replace("seed: 3", "seed: 4")))
    assert other_seed != trials


def test_bayesian_asks_parallel_trials_at_a_time_and_finds_the_optimum(tmp_path):
    spec = load(tmp_path, BASE + "strategy: bayesian\nmax_trials: 12\nparallel: 3\nseed: 0\n"
                "search_space:\n  train.learning_rate: {low: 1.0e-5, high: 1.0e-1, log: true}\n"
                "  train.lora.r: [8, 16]\n")
    batches = []

    def run_batch(batch):  # a stand-in objective: best at lr=1e-3, r=16; one trial fails
        batches.append(batch)
        return [None if len(batches) == 1 and i == 0 else
                abs(math.log10(t["train.learning_rate"]) + 3) + (t["train.lora.r"] == 8)
                for i, t in enumerate(batch)]

    study = sweep_space.optimize(spec, run_batch)
    assert [len(b) for b in batches] == [3, 3, 3, 3]
    assert len(study.trials) == 12
    assert sum(t.state.name == "FAIL" for t in study.trials) == 1
    assert study.best_params["train.lora.r"] == 16
    assert study.best_value == min(t.value for t in study.trials if t.value is not None) < 0.6


def test_cli_value_reads_back_as_the_same_yaml_value():
    for value in (1e-4, 0.001, 3, True, False, "constant", "1e-3", "yes"):
        assert yaml.safe_load(sweep_space.cli_value(value)) == value


# --- one-line errors naming the file and the key --------------------------------

@pytest.mark.parametrize("text, expected", [
    (BASE + "strategy: annealing\nsearch_space: {train.lora.r: [8]}\n",
     "strategy: must be one of grid, random, bayesian, got 'annealing'"),
    (BASE + "search_space: {}\n", "search_space: empty; give at least one params key"),
    (BASE, "search_space: empty"),
    (BASE + "search_space:\n  train.lora.r: []\n", "search_space.train.lora.r: empty list"),
    (BASE + "search_space:\n  train.learning_rate: {low: 1.0e-3, high: 1.0e-4, num: 2}\n",
     "search_space.train.learning_rate: low must be < high, got low=0.001 high=0.0001"),
    (BASE + "search_space:\n  train.learning_rate: {low: 0, high: 1.0e-3, log: true, num: 2}\n",
     "search_space.train.learning_rate: a log range needs low > 0, got 0"),
    (BASE + "search_space:\n  train.learning_rate: {low: 1.0e-4, high: 1.0e-3}\n",
     "search_space.train.learning_rate: a grid needs the points of a range"),
    (BASE + "search_space:\n  train.learning_rate: {low: 1.0e-4, high: 1.0e-3, num: 2, step: 1}\n",
     "search_space.train.learning_rate: give step or num, not both"),
    (BASE + "search_space:\n  train.learning_rate: {low: 1.0e-4, hihg: 1.0e-3}\n",
     "search_space.train.learning_rate.hihg: unknown range key (did you mean 'high'?)"),
    (BASE + "search_space:\n  train.lerning_rate: [1.0e-4]\n",
     "search_space.train.lerning_rate: unknown params key (did you mean 'learning_rate'?)"),
    (BASE + "search_space:\n  trian.lora.r: [8]\n",
     "search_space.trian.lora.r: not a params key (sections: model, prepare, validate, train, "
     "align, evaluate, judge, export, plot, report) (did you mean 'train'?)"),
    (BASE + "search_space:\n  train.lora: [8]\n",
     "search_space.train.lora: not a single value"),
    (BASE + "search_space:\n  train.lora.r: [0, 8]\n",
     "search_space: train.lora.r: must be > 0, got 0"),
    (BASE + "search_space:\n  train.method: [lora, dora]\n",
     "search_space: train.method: must be one of lora, qlora, full, got 'dora'"),
    (BASE + "strategy: random\nsearch_space: {train.lora.r: [8]}\n",
     "max_trials: required for strategy random"),
    (BASE + "max_trials: 2\nsearch_space: {train.lora.r: [8, 16, 32]}\n",
     "max_trials: the grid has 3 points, more than max_trials 2"),
    (BASE + "set: {train.lora.r: 8}\nsearch_space: {train.lora.r: [8, 16]}\n",
     "set.train.lora.r: also in search_space; keep it in one"),
    (BASE + "set: {train.max_steps: 0}\nsearch_space: {train.lora.r: [8]}\n",
     "set: train.max_steps: must be -1 (train for `epochs`) or > 0, got 0"),
    (BASE + "trials: 3\nsearch_space: {train.lora.r: [8]}\n", "trials: unknown key"),
    ("direction: up\nmetric: tuned.loss\nsearch_space: {train.lora.r: [8]}\n",
     "direction: must be one of minimize, maximize, got 'up'"),
    ("search_space: {train.lora.r: [8]}\n", "metric: required"),
])
def test_bad_sweep_file_gives_one_line_naming_file_and_key(tmp_path, text, expected):
    message = error(tmp_path, text)
    assert message.startswith(f"{tmp_path / 's.yaml'}: ")
    assert expected in message


def test_unknown_metric_is_checked_against_the_workspace_metrics(tmp_path):
    shutil.copytree(REPO / "metrics", tmp_path / "metrics",
                    ignore=shutil.ignore_patterns("plots", "*.jsonl", "*.log"))
    text = "metric: tuned.task_acuracy\nsearch_space: {train.lora.r: [8]}\n"
    assert error(tmp_path, text) == (
        f"{tmp_path / 's.yaml'}: metric: 'tuned.task_acuracy' is not a number in "
        "metrics/eval.json (did you mean 'tuned.task_accuracy'?)")
    text = "metric: train.eval_los\nsearch_space: {train.lora.r: [8]}\n"
    assert "not a number in metrics/train/summary.json (did you mean 'train.eval_loss'?)" in \
        error(tmp_path, text)
    assert load(tmp_path, "metric: train.eval_loss\nsearch_space: {train.lora.r: [8]}\n")
    # A sweep that turns alignment on may rank by the aligned model's metrics before any run
    # has them (they are the tuned model's keys); a typo there is still caught.
    aligned = "metric: aligned.task_accuracy\nset: {align.objective: dpo}\n" \
              "search_space: {align.beta: [0.05, 0.1]}\n"
    spec = load(tmp_path, aligned)
    assert spec.fixed == {"align.objective": "dpo"} and spec.keys == ["align.beta"]
    assert "not a number in metrics/eval.json" in error(
        tmp_path, aligned.replace("aligned.task_accuracy", "aligned.task_acuracy"))


def test_a_scorer_plugins_score_is_a_sweep_metric(tmp_path):
    (tmp_path / "metrics").mkdir()
    (tmp_path / "metrics/eval.json").write_text(json.dumps(
        {"base": {"correct": 0.2, "loss": 1.0}, "tuned": {"correct": 0.5, "loss": 0.8},
         "scorer": SHORT_ANSWER}))
    spec = sweep_space.load_sweep(write(tmp_path, "metric: tuned.correct\ndirection: maximize\n"
                                                  "search_space: {train.lora.r: [8, 16]}\n"),
                                  root=tmp_path)
    assert (spec.metric, spec.direction) == ("tuned.correct", "maximize")
    assert "did you mean 'tuned.correct'?" in error(
        tmp_path, "metric: tuned.corect\nsearch_space: {train.lora.r: [8]}\n")


def test_invalid_yaml_names_the_line(tmp_path):
    assert error(tmp_path, "metric: x\nsearch_space:\n  a: [1\n") .startswith(
        f"{tmp_path / 's.yaml'}:")


def test_shipped_sweep_files_are_valid(monkeypatch):
    monkeypatch.chdir(REPO)
    rank = sweep_space.load_sweep("sweeps/lr_rank.yaml")
    assert (rank.strategy, rank.metric, rank.keys) == (
        "bayesian", "tuned.task_accuracy", ["train.learning_rate", "train.lora.r"])
    lr_test = sweep_space.load_sweep("sweeps/lr_test.yaml")
    assert lr_test.strategy == "grid" and lr_test.total_trials == 4


def test_cli_dry_run_lists_trials_and_bad_file_exits_1(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(REPO)
    assert cli.main(["lr-test", "--dry-run", "--rates", "1e-4,1e-2", "--steps", "3"]) == 0
    out = capsys.readouterr().out
    assert "grid, 2 trials, minimize tuned.loss; every trial: train.max_steps=3" in out
    assert "01 learning_rate=0.0001\n  02 learning_rate=0.01\n" in out
    bad = write(tmp_path, BASE + "strategy: anneal\nsearch_space: {train.lora.r: [8]}\n")
    assert cli.main(["sweep", str(bad)]) == 1
    assert capsys.readouterr().err == (f"tunelab sweep: error: {bad}: strategy: must be one of "
                                       "grid, random, bayesian, got 'anneal'\n")


def test_sweep_refuses_uncommitted_changes_to_tracked_files(tmp_path, monkeypatch, capsys):
    repo = tmp_path / "repo"
    repo.mkdir()
    for args in (["init", "-q"], ["config", "user.email", "t@t"], ["config", "user.name", "t"]):
        subprocess.run(["git", *args], cwd=repo, check=True)
    (repo / "params.yaml").write_text("train: {}\n")
    subprocess.run(["git", "add", "-A"], cwd=repo, check=True)
    subprocess.run(["git", "commit", "-qm", "x"], cwd=repo, check=True)
    (repo / "params.yaml").write_text("train: {lora: {r: 4}}\n")
    spec_file = write(tmp_path, BASE + "search_space: {train.lora.r: [8]}\n")
    monkeypatch.chdir(repo)
    assert cli.main(["sweep", str(spec_file)]) == 1
    assert capsys.readouterr().err.startswith(
        "tunelab sweep: error: uncommitted changes to tracked files (params.yaml): commit or "
        "stash them first")
    assert (repo / "params.yaml").read_text() == "train: {lora: {r: 4}}\n"  # untouched


# --- the report ------------------------------------------------------------------

def make_record(direction="maximize"):
    return {"id": "demo-1", "file": "sweeps/demo.yaml", "strategy": "grid", "metric": "m",
            "direction": direction, "keys": ["train.learning_rate", "train.method"],
            "log_keys": ["train.learning_rate"], "fixed": {"train.max_steps": 2},
            "baseline": "0123456789abcdef", "started": "2026-01-01T00:00:00+00:00",
            "trials": [
                {"name": "demo-1-01", "params": {"train.learning_rate": 1e-4, "train.method": "lora"},
                 "value": 0.25, "status": "done"},
                {"name": "demo-1-02", "params": {"train.learning_rate": 1e-3, "train.method": "full"},
                 "value": 0.75, "status": "done"},
                {"name": "demo-1-03", "params": {"train.learning_rate": 1e-2, "train.method": "lora"},
                 "value": None, "status": "failed"},
                {"name": "demo-1-04", "params": {"train.learning_rate": 3e-3, "train.method": "full"},
                 "value": 0.5, "status": "done"}]}


@pytest.mark.parametrize("direction, order", [("maximize", ["02", "04", "01", "03"]),
                                               ("minimize", ["01", "04", "02", "03"])])
def test_report_ranks_by_direction_failed_last(direction, order):
    record = make_record(direction)
    assert [t["name"][-2:] for t in sweep_report.ranked(record)] == order
    assert sweep_report.best_trial(record)["name"] == f"demo-1-{order[0]}"


def test_report_html_is_self_contained_with_one_plot_per_param(tmp_path, capsys):
    out = tmp_path / "sweep.html"
    best = sweep_report.print_and_write(make_record(), out)
    assert best["name"] == "demo-1-02"
    printed = capsys.readouterr().out
    assert "best: demo-1-02  m=0.7500  train.learning_rate=0.0010 train.method=full" in printed
    html = out.read_text()
    assert html.count("data:image/png;base64,") == 2
    assert "https://" not in html and "http://" not in html
    assert '<tr class="best">' in html and "dvc exp apply demo-1-02" in html
    assert html.index("demo-1-02") < html.index("demo-1-04") < html.index("demo-1-01") \
        < html.index("demo-1-03")


# --- a real sweep: DVC experiments on a tiny model --------------------------------

SHORT_ANSWER = "configs/scorers/short_answer.py:score"  # the shipped example scorer plugin

TINY = {"train": {"max_steps": 1, "batch_size": 2, "eval_steps": 0, "logging_steps": 1,
                  "save_steps": 0, "warmup_ratio": 0.0, "lr_scheduler": "constant"},
        "prepare": {"val_ratio": 0.0},  # no validation set: no final eval pass
        # A scorer plugin: each trial's eval.json holds its scores (a sweep metric: tuned.correct).
        "evaluate": {"max_examples": 2, "max_new_tokens": 4, "batch_size": 2,
                     "general_max_new_tokens": 4, "scorer": SHORT_ANSWER},
        "export": TINY_PIPELINE["export"]}  # one GGUF type, one timed prompt per trial


@pytest.fixture(scope="module")
def swept(tmp_path_factory, tiny_base_dir):
    """A git copy of the repo on the tiny model, and a 2-trial grid sweep run in it."""
    copy = copy_repo(tmp_path_factory.mktemp("sweep") / "repo", TINY, tiny_base_dir)
    sweep_file = copy.parent / "lr.yaml"
    sweep_file.write_text("strategy: grid\nmetric: tuned.loss\ndirection: minimize\n"
                          "parallel: 1\nsearch_space:\n  train.learning_rate: [1.0e-5, 3.0e-2]\n")
    result = run([sys.executable, "-m", "tunelab.cli.app", "sweep", str(sweep_file)], copy)
    shown = json.loads(run(["dvc", "exp", "show", "--json"], copy).stdout)
    experiments = {exp["name"]: exp["revs"][0]["data"]
                   for rev in shown for exp in (rev.get("experiments") or [])}
    return copy, result, experiments


@pytest.mark.e2e
def test_sweep_runs_each_trial_as_a_dvc_experiment(swept):
    repo, result, experiments = swept
    assert sorted(experiments) == ["lr-1-01", "lr-1-02"]
    for name, rate in (("lr-1-01", 1e-5), ("lr-1-02", 3e-2)):
        train = experiments[name]["params"]["params.yaml"]["data"]["train"]
        assert train["learning_rate"] == rate and train["max_steps"] == 1
        evaluated = experiments[name]["metrics"]["metrics/eval.json"]["data"]
        assert {"correct", "concise"} <= set(evaluated["tuned"])
        assert "task_accuracy" not in evaluated["tuned"] and evaluated["scorer"] == SHORT_ANSWER
    lines = [line for line in result.stdout.splitlines() if line.startswith("[")]
    assert [line.split()[:2] for line in lines] == [["[1/2]", "lr-1-01"], ["[2/2]", "lr-1-02"]]
    # The user's workspace is as it was: nothing modified, params untouched.
    assert run(["git", "status", "--porcelain", "--untracked-files=no"], repo).stdout == ""


@pytest.mark.e2e
def test_sweep_report_names_the_best_trial_and_applies_it(swept):
    repo, result, experiments = swept
    loss = {name: data["metrics"]["metrics/eval.json"]["data"]["tuned"]["loss"]
            for name, data in experiments.items()}
    assert loss["lr-1-01"] != loss["lr-1-02"]
    best = min(loss, key=loss.get)
    assert f"best: {best}  tuned.loss={loss[best]:.4f}" in result.stdout
    html = (repo / "reports/sweep.html").read_text()
    assert html.count("data:image/png;base64,") == 1 and f"dvc exp apply {best}" in html
    record = json.loads((repo / "reports/sweeps/lr-1.json").read_text())
    assert [t["status"] for t in record["trials"]] == ["done", "done"]

    applied = run([sys.executable, "-m", "tunelab.cli.app", "sweep-report", "--apply-best"], repo)
    assert f"applied {best}" in applied.stdout
    params = yaml.safe_load((repo / "params.yaml").read_text())
    assert params["train"]["learning_rate"] == experiments[best]["params"]["params.yaml"][
        "data"]["train"]["learning_rate"]
