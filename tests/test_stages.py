"""Stage scripts on bad input: one-line errors naming file:line or the params key,
non-zero exit, nothing half-written, raw data untouched."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import stage_args

REPO = Path(__file__).resolve().parents[1]
GOOD = ('{"instruction": "Say hi", "output": "hi"}\n'
        '{"instruction": "Say bye", "output": "bye"}\n')


@pytest.fixture
def workspace(tmp_path):
    shutil.copy(REPO / "params.yaml", tmp_path / "params.yaml")
    (tmp_path / "data/raw").mkdir(parents=True)
    return tmp_path


def run_stage(name, cwd):
    return subprocess.run([sys.executable, str(REPO / "stages" / f"{name}.py"),
                           *stage_args(name, cwd)], cwd=cwd,
                          capture_output=True, text=True)


@pytest.mark.parametrize("bad_line, reason", [
    ('{"instruction": "Say hi", "output": "hi"', "invalid JSON"),
    ('{"instruction": "Say hi"}', "missing field 'output'"),
    ('{"instruction": "Say hi", "output": "  "}', "empty field 'output'"),
    ('{"messages": [{"role": "robot", "content": "x"}]}', "unknown role 'robot' in message 1"),
])
def test_prepare_rejects_bad_record_with_file_and_line(workspace, bad_line, reason):
    raw = workspace / "data/raw/mixed.jsonl"
    raw.write_text(GOOD + bad_line + "\n")
    before = raw.read_bytes()
    result = run_stage("prepare", workspace)
    assert result.returncode == 1
    assert f"data/raw/mixed.jsonl:3: {reason}" in result.stderr
    assert "prepare: error: 1 bad records in data/raw; nothing was written" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (workspace / "data/prepared").exists()
    assert not (workspace / "metrics").exists()
    assert raw.read_bytes() == before


def test_prepare_lists_every_bad_record_not_just_the_first(workspace):
    # Record-level errors are collected across the file (a JSON syntax error ends that file).
    (workspace / "data/raw/a.jsonl").write_text('{"text": ""}\n' + GOOD + '{"prompt": "x"}\n')
    result = run_stage("prepare", workspace)
    assert result.returncode == 1
    assert "data/raw/a.jsonl:1: empty field 'text'" in result.stderr
    assert "data/raw/a.jsonl:4: missing field 'completion'" in result.stderr
    assert "2 bad records" in result.stderr


def test_prepare_names_the_example_without_the_group_by_field(workspace):
    # The shipped params.yaml splits by `template`, which the sample generator writes.
    (workspace / "data/raw/a.jsonl").write_text(GOOD)
    result = run_stage("prepare", workspace)
    assert result.returncode == 1
    assert result.stderr.strip() == ("prepare: error: data/raw/a.jsonl:1: no field 'template' to "
                                     "split by (prepare.group_by; \"\" splits example by example)")
    assert not (workspace / "data/prepared").exists()


def test_stage_reports_params_typo_with_key_and_suggestion(workspace):
    params = (workspace / "params.yaml").read_text()
    (workspace / "params.yaml").write_text(params.replace("  val_ratio:", "  val_ration:"))
    (workspace / "data/raw/a.jsonl").write_text(GOOD)
    result = run_stage("prepare", workspace)
    assert result.returncode == 1
    assert result.stderr.strip() == ("prepare: error: params.yaml: prepare.val_ration: unknown key "
                                     "(did you mean 'val_ratio'?)")


def test_base_stage_rejects_unknown_model_name(workspace):
    params = (workspace / "params.yaml").read_text()
    (workspace / "params.yaml").write_text(params.replace("base: smollm2-135m-instruct",
                                                          "base: no-such-model"))
    result = run_stage("base", workspace)
    assert result.returncode == 1
    assert "base: error: model.base: 'no-such-model' is not a built-in name" in result.stderr
    assert not (workspace / "models").exists()
