"""The `tunelab` command (tunelab.cli): exit codes and one-line messages."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tunelab.cli import app as cli

REPO_PARAMS = Path(__file__).resolve().parents[1] / "params.yaml"
TUNELAB = Path(sys.executable).parent / "tunelab"   # the installed console script

GOOD = [{"instruction": "What is 2+2?", "output": "4"},
        {"messages": [{"role": "user", "content": "Name three primary colours, please, in a list."},
                      {"role": "assistant",
                       "content": "Red, yellow and blue are the three primary colours of paint."}]}]
NO_BASE_NOTE = "note: models/base not found; token checks skipped (run `dvc repro base`)\n"


@pytest.fixture(autouse=True)
def in_empty_folder(tmp_path, monkeypatch):
    """Run where there is no params.yaml and no models/base, unless a test makes them."""
    monkeypatch.chdir(tmp_path)


def run_cli(capsys, *argv) -> tuple[int, str, str]:
    code = cli.main([str(arg) for arg in argv])
    out, err = capsys.readouterr()
    return code, out, err


# --- validate-data --------------------------------------------------------------------

def test_broken_json_line_fails_with_file_and_line(tmp_path, write_jsonl, capsys):
    path = write_jsonl(tmp_path / "data.jsonl", [GOOD[0], "{not json", GOOD[1]])
    code, out, err = run_cli(capsys, "validate-data", path)
    assert (code, out) == (1, "")
    assert err == (NO_BASE_NOTE
                   + f"{path}:2: invalid JSON: Expecting property name enclosed in double quotes\n"
                   + "1 errors in 1 files\n")


def test_missing_field_fails_with_file_and_line(tmp_path, write_jsonl, capsys):
    path = write_jsonl(tmp_path / "data.jsonl", [{"instruction": "No answer"}, GOOD[0]])
    code, _, err = run_cli(capsys, "validate-data", path)
    assert code == 1
    assert f"{path}:1: missing field 'output'\n" in err


def test_errors_from_every_file_are_listed(tmp_path, write_jsonl, capsys):
    first = write_jsonl(tmp_path / "a.jsonl", [{"instruction": "No answer"}])
    second = write_jsonl(tmp_path / "b.jsonl", [GOOD[0], {"prompt": "only a prompt"}])
    code, _, err = run_cli(capsys, "validate-data", first, second)
    assert code == 1
    assert err.splitlines()[1:] == [f"{first}:1: missing field 'output'",
                                    f"{second}:2: missing field 'completion'",
                                    "2 errors in 2 files"]


def test_good_file_without_base_checks_format_only(tmp_path, write_jsonl, capsys):
    path = write_jsonl(tmp_path / "data.jsonl", GOOD)
    code, out, err = run_cli(capsys, "validate-data", path)
    assert (code, err) == (0, NO_BASE_NOTE)
    assert out == "OK: 2 examples in 1 files (0 longer than max_length=256)\n"


def test_max_length_defaults_to_params_yaml_in_working_folder(tmp_path, write_jsonl, capsys):
    (tmp_path / "params.yaml").write_text("train:\n  max_length: 100\n")
    path = write_jsonl(tmp_path / "data.jsonl", GOOD)
    code, out, _ = run_cli(capsys, "validate-data", path)
    assert (code, out) == (0, "OK: 2 examples in 1 files (0 longer than max_length=100)\n")


def test_good_file_with_base_runs_token_checks(tmp_path, write_jsonl, tokenizer_dir, capsys):
    path = write_jsonl(tmp_path / "data.jsonl", GOOD)
    code, out, err = run_cli(capsys, "validate-data", path, "--base", tokenizer_dir)
    assert (code, err) == (0, "")
    assert out == "OK: 2 examples in 1 files (0 longer than max_length=256)\n"


def test_base_reports_truncation_as_a_warning(tmp_path, write_jsonl, tokenizer_dir, capsys):
    path = write_jsonl(tmp_path / "data.jsonl", GOOD)
    code, out, err = run_cli(capsys, "validate-data", path, "--base", tokenizer_dir,
                             "--max-length", 50)
    assert code == 0
    assert err == ("warning: 1 of 2 examples (50%) are cut at train.max_length=50; their answers "
                   "lose their ends (more than validate.max_truncated_ratio=0.05)\n")
    assert out == "OK: 2 examples in 1 files (1 longer than max_length=50)\n"


def test_base_rejects_prompt_longer_than_max_length(tmp_path, write_jsonl, tokenizer_dir, capsys):
    path = write_jsonl(tmp_path / "data.jsonl", GOOD)
    code, out, err = run_cli(capsys, "validate-data", path, "--base", tokenizer_dir,
                             "--max-length", 40)
    assert (code, out) == (1, "")
    assert err.splitlines()[1:] == [
        f"{path}:2: the prompt alone is 41 tokens, so no answer token survives "
        "train.max_length=40 (raise train.max_length or shorten it)",
        "1 errors in 1 files"]


def test_nonexistent_file_exits_2(tmp_path, write_jsonl, capsys):
    good = write_jsonl(tmp_path / "data.jsonl", GOOD)
    missing = tmp_path / "missing.jsonl"
    code, out, err = run_cli(capsys, "validate-data", good, missing)
    assert (code, out) == (2, "")
    assert err == f"tunelab validate-data: error: no such file: {missing}\n"


def test_unknown_format_choice_is_a_usage_error(tmp_path, write_jsonl, capsys):
    path = write_jsonl(tmp_path / "data.jsonl", GOOD)
    with pytest.raises(SystemExit) as caught:
        cli.main(["validate-data", str(path), "--format", "yaml"])
    assert caught.value.code == 2
    assert "invalid choice: 'yaml'" in capsys.readouterr().err


# --- validate-config ------------------------------------------------------------------

def test_repo_params_file_is_valid(capsys):
    code, out, err = run_cli(capsys, "validate-config", REPO_PARAMS)
    assert (code, err) == (0, "")
    assert out == (f"OK: {REPO_PARAMS} (model, prepare, validate, train, align, evaluate, judge, "
                   "export, plot, report, check)\n")


def test_multitask_params_file_is_valid_and_its_tasks_checked(tmp_path, capsys):
    multitask_params = REPO_PARAMS.parent / "multitask" / "params.yaml"
    code, out, err = run_cli(capsys, "validate-config", multitask_params)
    assert (code, err) == (0, "")
    assert out.endswith("report, check, multitask)\n")
    path = tmp_path / "params.yaml"
    path.write_text("multitask:\n  tasks: [triage, triage]\n")
    code, _, err = run_cli(capsys, "validate-config", path)
    assert (code, err) == (1, f"tunelab validate-config: error: {path}: multitask.tasks: "
                              "listed twice: 'triage'\n")


def test_bad_params_file_fails_with_one_line(tmp_path, capsys):
    path = tmp_path / "bad.yaml"
    path.write_text("train:\n  lerning_rate: 1.0e-4\n")
    code, out, err = run_cli(capsys, "validate-config", path)
    assert (code, out) == (1, "")
    assert err == (f"tunelab validate-config: error: {path}: train.lerning_rate: unknown key "
                   "(did you mean 'learning_rate'?)\n")


def test_split_ratios_are_checked(tmp_path, capsys):
    path = tmp_path / "bad.yaml"
    path.write_text("prepare:\n  val_ratio: 0.5\n  test_ratio: 0.5\n")
    code, _, err = run_cli(capsys, "validate-config", path)
    assert code == 1
    assert err == (f"tunelab validate-config: error: {path}: prepare.val_ratio + prepare.test_ratio "
                   "must be < 1 (the rest is the train split), got 1\n")


def test_default_path_is_params_yaml_in_working_folder(tmp_path, capsys):
    code, _, err = run_cli(capsys, "validate-config")
    assert (code, err) == (1, "tunelab validate-config: error: params.yaml: file not found\n")
    (tmp_path / "params.yaml").write_text("plot:\n  dpi: 72\n")
    code, out, _ = run_cli(capsys, "validate-config")
    assert (code, out) == (0, "OK: params.yaml (model, prepare, validate, train, align, evaluate, "
                             "judge, export, plot, report, check)\n")


# --- the installed console script ---------------------------------------------------------

def test_console_script_validate_config_exit_codes(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("train:\n  precision: fp8\n")
    failed = subprocess.run([TUNELAB, "validate-config", bad], capture_output=True, text=True)
    assert (failed.returncode, failed.stdout) == (1, "")
    assert failed.stderr == (f"tunelab validate-config: error: {bad}: train.precision: "
                             "must be one of auto, bf16, fp16, fp32, got 'fp8'\n")
    passed = subprocess.run([TUNELAB, "validate-config", REPO_PARAMS], capture_output=True, text=True)
    assert passed.returncode == 0


def test_console_script_validate_data_exit_codes(tmp_path, write_jsonl):
    broken = write_jsonl(tmp_path / "data.jsonl", [GOOD[0], '{"instruction": "x", "output": '])
    failed = subprocess.run([TUNELAB, "validate-data", broken], capture_output=True, text=True,
                            cwd=tmp_path)
    assert failed.returncode == 1
    assert f"{broken}:2: invalid JSON: Expecting value\n" in failed.stderr
    missing = subprocess.run([TUNELAB, "validate-data", tmp_path / "none.jsonl"],
                             capture_output=True, text=True, cwd=tmp_path)
    assert missing.returncode == 2
