"""Regression gate (tunelab.gate, `tunelab check`): real `dvc metrics diff` against a
git revision in a small temporary DVC repo, tolerances from params.yaml `check:`."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tunelab.cli import app as cli
from tunelab.config import params
from tunelab.config.params import MetricTolerance
from tunelab.errors import ParamsError
from tunelab.experiments import check

REPO = Path(__file__).resolve().parents[1]
# What `dvc metrics diff` needs: the DVC repo, the pipeline that declares the metrics, the files.
FILES = (".dvc/config", ".dvcignore", "dvc.yaml", "params.yaml", "metrics/eval.json",
         "metrics/train/summary.json", "metrics/data.json", "metrics/validation.json")

REFERENCE_TUNED = {"task_accuracy": 0.721429, "loss": 0.096419, "exact_match": 0.125,
                   "json_valid": 1.0}


def git(repo, *args):
    subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True)


@pytest.fixture
def metrics_repo(tmp_path, monkeypatch):
    repo = tmp_path / "repo"
    for name in FILES:
        (repo / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / name, repo / name)
    # Fixed numbers, so the expected messages do not follow each new reference run.
    metrics = json.loads((repo / "metrics/eval.json").read_text())
    metrics["tuned"].update(REFERENCE_TUNED)
    (repo / "metrics/eval.json").write_text(json.dumps(metrics, indent=2))
    for args in (["init", "-q"], ["config", "user.email", "t@t"], ["config", "user.name", "t"],
                 ["add", "-A"], ["commit", "-qm", "reference run"]):
        git(repo, *args)
    monkeypatch.chdir(repo)
    return repo


def edit_eval(repo: Path, **changes) -> dict:
    """Change tuned.<name> by the given amounts in the workspace metrics/eval.json."""
    path = repo / "metrics/eval.json"
    metrics = json.loads(path.read_text())
    for name, delta in changes.items():
        metrics["tuned"][name] = round(metrics["tuned"][name] + delta, 6)
    path.write_text(json.dumps(metrics, indent=2))
    return metrics


def test_planted_regression_fails_naming_the_metric(metrics_repo, capsys):
    edit_eval(metrics_repo, task_accuracy=-0.05)
    assert cli.main(["check", "--baseline", "HEAD"]) == 1
    captured = capsys.readouterr()
    assert captured.err == ("FAIL tuned.task_accuracy: 0.721429 -> 0.671429 (-0.05; higher is "
                            "better, tolerance 0.02)\n")
    assert "1 of 5 tracked metrics worse than allowed" in captured.out


def test_regression_committed_then_identical_rerun_passes(metrics_repo, capsys):
    # The regression is in a commit; the gate compares the workspace with the commit before.
    edit_eval(metrics_repo, loss=+0.05, exact_match=-0.1)
    git(metrics_repo, "commit", "-qam", "worse run")
    assert cli.main(["check", "--baseline", "HEAD~1"]) == 1
    err = capsys.readouterr().err
    assert "FAIL tuned.exact_match: 0.125 -> 0.025" in err
    assert "FAIL tuned.loss: 0.096419 -> 0.146419 (+0.05; lower is better" in err
    # An identical rerun of the committed run passes against that commit.
    assert cli.main(["check", "--baseline", "HEAD"]) == 0
    out = capsys.readouterr().out
    assert "OK: 5 tracked metrics within tolerance of HEAD" in out
    assert "tuned.task_accuracy" in out and "worse" not in out


def test_changes_within_tolerance_or_for_the_better_pass(metrics_repo, capsys):
    edit_eval(metrics_repo, task_accuracy=-0.015, loss=-0.05, json_valid=0.0)
    assert cli.main(["check", "--baseline", "HEAD"]) == 0
    out = capsys.readouterr().out
    assert "better" in out and "OK: 5 tracked metrics" in out


def test_tolerances_come_from_params_yaml(metrics_repo, capsys):
    edit_eval(metrics_repo, task_accuracy=-0.015)
    text = (metrics_repo / "params.yaml").read_text()
    (metrics_repo / "params.yaml").write_text(text.replace(
        "tuned.task_accuracy: {direction: higher, tolerance: 0.02}",
        "tuned.task_accuracy: {direction: higher, tolerance: 0.01}"))
    assert cli.main(["check", "--baseline", "HEAD"]) == 1
    assert "FAIL tuned.task_accuracy:" in capsys.readouterr().err


def test_unknown_check_metric_and_bad_revision_are_one_line_errors(metrics_repo, capsys):
    assert cli.main(["check", "--baseline", "no-such-rev"]) == 1
    assert capsys.readouterr().err == (
        "tunelab check: error: dvc metrics diff no-such-rev: unknown Git revision 'no-such-rev'\n")
    text = (metrics_repo / "params.yaml").read_text()
    (metrics_repo / "params.yaml").write_text(text.replace("tuned.json_valid:", "tuned.json_vald:"))
    assert cli.main(["check", "--baseline", "HEAD"]) == 1
    assert capsys.readouterr().err == (
        "tunelab check: error: params.yaml: check.tuned.json_vald: no such metric in "
        "metrics/eval.json of the workspace or the baseline (did you mean 'tuned.json_valid'?)\n")


def test_a_scorer_plugins_score_is_gated_like_any_metric(metrics_repo, capsys):
    """A run scored by a plugin (evaluate.scorer) has the plugin's names in eval.json; a
    check: entry on one of them gates it."""
    path = metrics_repo / "metrics/eval.json"
    metrics = json.loads(path.read_text())
    metrics["tuned"]["correct"] = 0.6
    path.write_text(json.dumps(metrics, indent=2))
    with (metrics_repo / "params.yaml").open("a") as params:  # check: is the file's last section
        params.write("  tuned.correct: {direction: higher, tolerance: 0.05}\n")
    git(metrics_repo, "commit", "-qam", "a plugin's score, gated")
    edit_eval(metrics_repo, correct=-0.1)
    assert cli.main(["check", "--baseline", "HEAD"]) == 1
    assert capsys.readouterr().err == ("FAIL tuned.correct: 0.6 -> 0.5 (-0.1; higher is "
                                       "better, tolerance 0.05)\n")
    edit_eval(metrics_repo, correct=0.1)
    assert cli.main(["check", "--baseline", "HEAD"]) == 0


def test_a_general_ability_regression_or_a_run_without_the_set_fails(metrics_repo, capsys):
    """params.yaml gates general.tuned.all: a run whose general-ability share fell more than
    the tolerance fails, and so does one that switched the set off (evaluate.general "")."""
    path = metrics_repo / "metrics/eval.json"
    metrics = json.loads(path.read_text())
    before = metrics["general"]["tuned"]["all"]
    metrics["general"]["tuned"]["all"] = round(before - 0.05, 6)
    path.write_text(json.dumps(metrics, indent=2))
    assert cli.main(["check", "--baseline", "HEAD"]) == 1
    assert capsys.readouterr().err.startswith(f"FAIL general.tuned.all: {before:g} -> ")
    del metrics["general"]
    path.write_text(json.dumps(metrics, indent=2))
    assert cli.main(["check", "--baseline", "HEAD"]) == 1
    assert capsys.readouterr().err == "FAIL general.tuned.all: missing from the workspace metrics\n"


# --- no DVC: rules, names, params ---------------------------------------------------

@pytest.mark.parametrize("direction, old, new, status", [
    ("higher", 0.70, 0.69, "ok"), ("higher", 0.70, 0.67, "worse"), ("higher", 0.70, 0.72, "better"),
    ("lower", 0.10, 0.11, "ok"), ("lower", 0.10, 0.13, "worse"), ("lower", 0.10, 0.05, "better"),
    ("higher", 0.70, None, "missing"), ("higher", None, 0.5, "new"),
    ("higher", 0.70, 0.68, "ok"),  # exactly at the tolerance still passes
])
def test_judge(direction, old, new, status):
    assert check.judge("m", MetricTolerance(direction, 0.02), old, new).status == status


def test_metric_names_map_to_files():
    assert check.locate_metric("tuned.task_accuracy") == ("metrics/eval.json", "tuned.task_accuracy")
    assert check.locate_metric("train.eval_loss") == ("metrics/train/summary.json", "eval_loss")


@pytest.mark.parametrize("text, expected", [
    ("check:\n  tuned.loss: {direction: down, tolerance: 0.1}\n",
     "check.tuned.loss.direction: must be one of higher, lower, got 'down'"),
    ("check:\n  tuned.loss: {direction: lower, tolerance: -1}\n",
     "check.tuned.loss.tolerance: must be >= 0, got -1.0"),
    ("check:\n  tuned.loss: {tolerance: 0.1}\n",
     "check.tuned.loss: expected {direction: higher|lower, tolerance: NUMBER}, got {'tolerance': 0.1}"),
    ("check:\n  tuned.loss: {direction: lower, tolerence: 0.1}\n",
     "check.tuned.loss.tolerence: unknown key (did you mean 'tolerance'?)"),
])
def test_bad_check_section_is_a_one_line_params_error(tmp_path, text, expected):
    path = tmp_path / "params.yaml"
    path.write_text(text)
    with pytest.raises(ParamsError) as caught:
        params.load("check", path)
    assert str(caught.value) == f"{path}: {expected}"


def test_check_section_is_read_by_no_stage():
    import yaml

    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    assert not [name for name, stage in stages.items()
                if any(str(p).split(".")[0] == "check" for p in stage.get("params", []))]


# --- export.KEY: metrics/export.json, the GGUF parity check ---------------------------

EXPORT = {"examples": 56, "speed_examples": 8, "max_new_tokens": 64, "threads": 2,
          "transformers": {"task_accuracy": 0.83, "json_valid": 1.0, "tokens_per_second": 7.3},
          "q8_0": {"file": "models/gguf/tuned-q8_0.gguf", "size_mb": 145.2, "task_accuracy": 0.83,
                   "agreement": 0.96, "template_differences": 0, "tokens_per_second": 40.1},
          "q4_k_m": {"file": "models/gguf/tuned-q4_k_m.gguf", "size_mb": 98.4,
                     "task_accuracy": 0.8, "agreement": 0.9, "template_differences": 0}}
EXPORT_CHECKS = ("  export.q8_0.agreement: {direction: higher, tolerance: 0.02}\n"
                 "  export.q4_k_m.template_differences: {direction: lower, tolerance: 0}\n")


def add_export_checks(repo: Path, checks: str = EXPORT_CHECKS) -> None:
    path = repo / "params.yaml"
    path.write_text(path.read_text().replace("\ncheck:\n", "\ncheck:\n" + checks))


def write_export(repo: Path, **changes) -> None:
    """metrics/export.json with ``model__key=value`` changes (q8_0__agreement=0.9)."""
    export = json.loads(json.dumps(EXPORT))
    for dotted, value in changes.items():
        model, key = dotted.split("__")
        export[model][key] = value
    (repo / "metrics/export.json").write_text(json.dumps(export, indent=2))


@pytest.fixture
def wide_table(monkeypatch):
    monkeypatch.setenv("COLUMNS", "160")  # rich wraps the long export names at 80


@pytest.fixture
def export_repo(metrics_repo, wide_table):
    """The reference run plus metrics/export.json and two export checks, committed."""
    write_export(metrics_repo)
    add_export_checks(metrics_repo)
    git(metrics_repo, "add", "-A")
    git(metrics_repo, "commit", "-qm", "export")
    return metrics_repo


def test_export_metric_names_map_to_export_json():
    assert check.locate_metric("export.q8_0.agreement") == ("metrics/export.json", "q8_0.agreement")
    assert check.locate_metric("export.examples") == ("metrics/export.json", "examples")


def test_every_metrics_file_of_a_name_is_a_dvc_metric():
    # `tunelab check` reads `dvc metrics diff`, which sees only the files dvc.yaml declares.
    import yaml

    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    declared = {path for stage in stages.values() for entry in stage.get("metrics", [])
                for path in (entry if isinstance(entry, dict) else {entry: None})}
    assert {check.EVAL_METRICS, *check.METRIC_FILES.values()} <= declared


def test_export_metrics_unchanged_pass(export_repo, capsys):
    assert cli.main(["check", "--baseline", "HEAD"]) == 0
    out = capsys.readouterr().out
    assert "export.q8_0.agreement" in out and "export.q4_k_m.template_differences" in out
    assert "OK: 7 tracked metrics within tolerance of HEAD" in out


def test_export_regressions_fail_naming_the_metric(export_repo, capsys):
    write_export(export_repo, q8_0__agreement=0.9, q4_k_m__template_differences=3)
    assert cli.main(["check", "--baseline", "HEAD"]) == 1
    captured = capsys.readouterr()
    assert captured.err == (
        "FAIL export.q8_0.agreement: 0.96 -> 0.9 (-0.06; higher is better, tolerance 0.02)\n"
        "FAIL export.q4_k_m.template_differences: 0 -> 3 (+3; lower is better, tolerance 0)\n")
    assert "2 of 7 tracked metrics worse than allowed" in captured.out


def test_export_change_within_tolerance_passes(export_repo, capsys):
    write_export(export_repo, q8_0__agreement=0.95)
    assert cli.main(["check", "--baseline", "HEAD"]) == 0
    assert "OK: 7 tracked metrics within tolerance of HEAD" in capsys.readouterr().out


def test_export_json_missing_from_the_workspace_fails_as_missing(export_repo, capsys):
    (export_repo / "metrics/export.json").unlink()
    assert cli.main(["check", "--baseline", "HEAD"]) == 1
    captured = capsys.readouterr()
    assert captured.err == ("FAIL export.q8_0.agreement: missing from the workspace metrics\n"
                            "FAIL export.q4_k_m.template_differences: missing from the "
                            "workspace metrics\n")
    assert "2 of 7 tracked metrics worse than allowed" in captured.out


def test_export_json_missing_from_the_baseline_is_new(metrics_repo, wide_table, capsys):
    add_export_checks(metrics_repo)
    git(metrics_repo, "commit", "-qam", "export checks, no export run yet")
    write_export(metrics_repo)
    assert cli.main(["check", "--baseline", "HEAD"]) == 0
    captured = capsys.readouterr()
    assert captured.err == ""
    assert re.search(r"export\.q8_0\.agreement .*│ +- │ +0\.9600 │ +- │ +-0\.02 │ new", captured.out)
    assert "OK: 7 tracked metrics within tolerance of HEAD" in captured.out


def test_export_json_on_neither_side_or_a_typo_is_a_one_line_error(metrics_repo, capsys):
    add_export_checks(metrics_repo, "  export.q8_0.agreement: {direction: higher, tolerance: 0.02}\n")
    assert cli.main(["check", "--baseline", "HEAD"]) == 1
    assert capsys.readouterr().err == (
        "tunelab check: error: params.yaml: check.export.q8_0.agreement: no such metric in "
        "metrics/export.json of the workspace or the baseline\n")
    write_export(metrics_repo)
    add_export_checks(metrics_repo, "  export.q8_0.agreemnt: {direction: higher, tolerance: 0.02}\n")
    assert cli.main(["check", "--baseline", "HEAD"]) == 1
    assert capsys.readouterr().err == (
        "tunelab check: error: params.yaml: check.export.q8_0.agreemnt: no such metric in "
        "metrics/export.json of the workspace or the baseline (did you mean "
        "'export.q8_0.agreement'?)\n")
