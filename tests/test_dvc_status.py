"""What DVC reruns after a change, in a copy of this repo whose dvc.lock matches its files:
a line of the trainer's code or a result-changing knob marks train; a knob that changes no
result (checkpoint retention, guard thresholds) marks nothing."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tunelab.config import params

REPO = Path(__file__).resolve().parents[1]
DVC = [sys.executable, "-m", "dvc"]


def run(args, cwd):
    result = subprocess.run(args, cwd=cwd, capture_output=True, text=True)
    assert result.returncode == 0, f"{args}: {result.stdout}{result.stderr}"
    return result.stdout


@pytest.fixture
def locked_copy(tmp_path):
    """The repo's files (no outputs), stand-in outputs, and `dvc commit` of every stage:
    a dvc.lock that matches the copy as it is, without running a stage."""
    repo = tmp_path / "repo"
    tracked = run(["git", "ls-files", "-co", "--exclude-standard"], REPO).split("\n")
    for name in filter(None, tracked):
        source = REPO / name
        if source.is_file() and not name.startswith(("models/", "metrics/", "reports/")):
            (repo / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, repo / name)
    stages = yaml.safe_load((repo / "dvc.yaml").read_text())["stages"]
    for stage in stages.values():
        for entry in [*stage.get("deps", []), *stage.get("outs", []), *stage.get("metrics", [])]:
            path = repo / (entry if isinstance(entry, str) else next(iter(entry)))
            if "${" in str(path) or path.exists():
                continue
            if path.suffix:  # a file: tokenizer.json, eval.json, training.log ...
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(json.dumps({"stand_in": path.name}))
            else:
                path.mkdir(parents=True)
                (path / "stand_in.txt").write_text(path.name)
    run(["git", "init", "-q"], repo)
    run([*DVC, "commit", "-f", "dvc.yaml"], repo)
    assert _changed(repo) == set()
    return repo


def _changed(repo: Path) -> set[str]:
    out = run([*DVC, "status", "--json", "dvc.yaml"], repo)
    return set(json.loads(out or "{}"))


def _set_param(repo: Path, dotted: str, value) -> None:
    # Edit the one line, as a person would, so params.yaml's comments stay.
    section, *middle, key = dotted.split(".")
    lines = (repo / "params.yaml").read_text().splitlines(keepends=True)
    for i, line in enumerate(lines):
        if line.strip().startswith(f"{key}:"):
            indent = line[:len(line) - len(line.lstrip())]
            lines[i] = f"{indent}{key}: {value}\n"
            break
    (repo / "params.yaml").write_text("".join(lines))
    assert params.load(section, repo / "params.yaml") is not None


def test_result_neutral_knobs_rerun_nothing(locked_copy):
    _set_param(locked_copy, "train.keep_checkpoints", 2)
    _set_param(locked_copy, "train.guard.grad_norm_factor", 500.0)
    assert _changed(locked_copy) == set()


def test_learning_rate_marks_train_and_the_report_that_shows_it(locked_copy):
    _set_param(locked_copy, "train.learning_rate", "2.0e-4")
    assert _changed(locked_copy) == {"train", "report"}


def test_export_quantizations_mark_export_and_the_report_that_shows_it(locked_copy):
    _set_param(locked_copy, "export.quantizations", "[q8_0]")
    assert _changed(locked_copy) == {"export", "report"}


def test_heldout_off_or_another_file_marks_evaluate_with_dvc_yaml_unedited(locked_copy):
    # the report reads the evaluate section too (it names the held-out file)
    _set_param(locked_copy, "evaluate.heldout", '""')  # none: no dep path to drop by hand
    assert _changed(locked_copy) == {"evaluate", "report"}
    (locked_copy / "data/heldout/mine.jsonl").write_text('{"prompt": "q", "completion": "a"}\n')
    _set_param(locked_copy, "evaluate.heldout", "data/heldout/mine.jsonl")
    assert _changed(locked_copy) == {"evaluate", "report"}


def test_editing_a_scorer_or_choosing_one_marks_only_the_stages_that_score(locked_copy):
    """evaluate (the metrics), align (GRPO's reward) and export (the GGUF parity check) read
    the scorer; nothing upstream of them does."""
    scorer = locked_copy / "configs/scorers/short_answer.py"
    scorer.write_text(scorer.read_text() + "\n# edited\n")
    assert _changed(locked_copy) == {"evaluate", "align", "export"}
    run([*DVC, "commit", "-f", "dvc.yaml"], locked_copy)
    _set_param(locked_copy, "evaluate.scorer", "configs/scorers/short_answer.py:score")
    assert _changed(locked_copy) == {"evaluate", "align", "export", "report"}


def test_the_general_set_and_the_judge_mark_only_their_stages(locked_copy):
    general = locked_copy / "data/general/general.jsonl"
    general.write_text(general.read_text() + general.read_text().splitlines(True)[0]
                       .replace('"if-', '"if-copy-'))
    assert _changed(locked_copy) == {"evaluate"}
    run([*DVC, "commit", "-f", "dvc.yaml"], locked_copy)
    _set_param(locked_copy, "judge.criteria", "[correctness]")
    assert _changed(locked_copy) == {"judge"}


def edit_line(path, marker: str) -> None:
    text = path.read_text()
    assert marker in text
    path.write_text(text.replace(marker, f"{marker}  # edited\n", 1))


def test_editing_the_sft_trainer_marks_train_only(locked_copy):
    edit_line(locked_copy / "tunelab/train/training.py", "def build_trainer(")
    assert _changed(locked_copy) == {"train"}


def test_editing_what_both_trainers_share_marks_train_and_align(locked_copy):
    edit_line(locked_copy / "tunelab/train/run_support.py", "def resume_point(")
    assert _changed(locked_copy) == {"train", "align"}


def test_dvc_yaml_declares_every_train_key_that_changes_results():
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    result_keys = {f"train.{key}" for key in params.TrainParams.model_fields
                   if key not in params.CHANGES_NO_RESULT["train"]}
    for name in ("train", "report"):
        declared = {p for p in stages[name]["params"] if isinstance(p, str) and p.startswith("train")}
        assert declared == result_keys, f"dvc.yaml: stage {name}: params differ from train's " \
                                        f"result-changing keys by {declared ^ result_keys}"
