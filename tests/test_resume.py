"""Resume after a crash: the train stage killed (SIGKILL) at a random step resumes from
its last complete checkpoint, and the adapter and the logged curves equal those of an
uninterrupted run. Same params and seed give the same numbers (determinism)."""

import json
import os
import random
import runpy
import shutil
import signal
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path

import pytest
import yaml
from safetensors.torch import load_file

from tunelab.config import params
from tunelab.errors import ParamsError
from tunelab.train import checkpoints, run_support
from tunelab.util import files
from conftest import stage_args

REPO = Path(__file__).resolve().parents[1]
STEPS = 4  # 3 batches an epoch: the run crosses an epoch boundary (a new shuffle)
TRAIN = {"method": "lora", "learning_rate": 1e-2, "max_steps": STEPS, "batch_size": 4,
         "warmup_ratio": 0.0, "logging_steps": 1, "save_steps": 1, "eval_steps": 2,
         "precision": "fp32", "lora": {"r": 4, "alpha": 8, "dropout": 0.1}}
TIMINGS = {"runtime.tsv", "samples_per_second.tsv", "steps_per_second.tsv"}
# Runs the real stage script, only slower at each checkpoint so the test can kill it there.
SLOW_STAGE = """
import runpy, sys, time
from tunelab.train import run_support
saved = run_support.CheckpointKeeper.on_save
def slow_save(self, *args, **kwargs):
    saved(self, *args, **kwargs)
    time.sleep(0.4)
run_support.CheckpointKeeper.on_save = slow_save
sys.argv = sys.argv[1:]  # the stage script first, then its paths from dvc.yaml
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def colour_rows(repeat):
    things = {"apple": "red", "banana": "yellow", "grass": "green", "sky": "blue"}
    return [{"messages": [{"role": "user", "content": f"Colour of {thing}? ({i})"},
                          {"role": "assistant", "content": colour}], "task": None,
             "source": f"colours.jsonl:{i}"} for i in range(repeat) for thing, colour in things.items()]


def make_workspace(root: Path, base_dir: Path, train=TRAIN) -> Path:
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["train"].update(train)
    root.mkdir(parents=True)
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    shutil.copytree(base_dir, root / "models/base")
    files.write_jsonl_atomic(root / "data/prepared/train.jsonl", colour_rows(3))
    files.write_jsonl_atomic(root / "data/prepared/val.jsonl", colour_rows(1))
    return root


def run_stage_in_process(workspace: Path, monkeypatch) -> None:
    monkeypatch.chdir(workspace)
    stage = runpy.run_path(str(REPO / "stages/train.py"), run_name="train_stage")
    assert stage["main"](*stage_args("train", workspace)) == 0


def curves(workspace: Path) -> dict[str, list[tuple[int, float]]]:
    found = {}
    for path in sorted((workspace / "metrics/train/plots/metrics").rglob("*.tsv")):
        if path.name not in TIMINGS:
            rows = [line.split("\t") for line in path.read_text().splitlines()[1:]]
            found[str(path.relative_to(workspace))] = [(int(s), float(v)) for s, v in rows]
    return found


def assert_close(a: float, b: float, rel=1e-6):
    assert abs(a - b) <= rel * max(abs(a), abs(b), 1e-12), (a, b)


@pytest.fixture(scope="module")
def uninterrupted(tiny_base_dir, tmp_path_factory):
    workspace = make_workspace(tmp_path_factory.mktemp("whole") / "ws", tiny_base_dir)
    with pytest.MonkeyPatch.context() as monkeypatch:
        run_stage_in_process(workspace, monkeypatch)
    return workspace


def test_killed_run_resumes_to_the_same_adapter_and_curves(uninterrupted, tiny_base_dir,
                                                            tmp_path, monkeypatch):
    seed = random.randrange(1 << 30)
    kill_at = random.Random(seed).randint(1, STEPS - 1)
    print(f"random seed {seed}: SIGKILL once checkpoint {kill_at} is complete")
    workspace = make_workspace(tmp_path / "ws", tiny_base_dir)
    marker = workspace / f"models/checkpoints/checkpoint-{kill_at}" / checkpoints.MARKER_FILE
    process = subprocess.Popen([sys.executable, "-c", SLOW_STAGE, str(REPO / "stages/train.py"),
                                *stage_args("train", workspace)],
                               cwd=workspace, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True)
    while not marker.exists() and process.poll() is None:
        time.sleep(0.01)
    os.kill(process.pid, signal.SIGKILL)
    output = process.communicate()[0]
    assert process.returncode == -signal.SIGKILL, output
    assert not (workspace / "models/adapter").exists()
    # A checkpoint the kill cut short (no marker) must be ignored, not resumed.
    saved = checkpoints.step_folders(workspace / "models/checkpoints")
    last_complete = max(int(p.name.split("-")[1]) for p in saved
                        if (p / checkpoints.MARKER_FILE).exists())
    assert last_complete >= kill_at
    half_written = workspace / f"models/checkpoints/checkpoint-{last_complete + 1}"
    if not half_written.exists():
        shutil.copytree(saved[-1], half_written, ignore=shutil.ignore_patterns(
            checkpoints.MARKER_FILE, "trainer_state.json"))
    (half_written / "adapter_model.safetensors").write_bytes(b"truncated")

    run_stage_in_process(workspace, monkeypatch)

    expected = load_file(uninterrupted / "models/adapter/adapter_model.safetensors")
    resumed = load_file(workspace / "models/adapter/adapter_model.safetensors")
    assert expected.keys() == resumed.keys()
    for name, tensor in expected.items():
        assert (resumed[name] - tensor).abs().max() <= 1e-6 * tensor.abs().max(), name
    expected_curves, resumed_curves = curves(uninterrupted), curves(workspace)
    assert expected_curves.keys() == resumed_curves.keys()
    assert [s for s, _ in resumed_curves["metrics/train/plots/metrics/loss.tsv"]] == \
        list(range(1, STEPS + 1))  # every step once: nothing lost, nothing logged twice
    for name, rows in expected_curves.items():
        assert [s for s, _ in resumed_curves[name]] == [s for s, _ in rows], name
        for (_, a), (_, b) in zip(rows, resumed_curves[name]):
            assert_close(a, b)
    summaries = [json.loads((w / "metrics/train/summary.json").read_text())
                 for w in (uninterrupted, workspace)]
    assert_close(summaries[0]["train_loss"], summaries[1]["train_loss"], rel=1e-5)
    assert summaries[0]["eval_loss"] == pytest.approx(summaries[1]["eval_loss"], rel=1e-6)
    log = (workspace / "metrics/train/training.log").read_text().splitlines()
    assert [line.split()[1] for line in log if "loss=" in line and "eval" not in line][:STEPS] \
        == [f"{s}/{STEPS}" for s in range(1, STEPS + 1)]
    # A finished run deletes its checkpoints (train.keep_checkpoints: 0) and leaves the
    # folder as git has it: only ABOUT.md, so dvc.lock's record of it holds in any clone.
    left = workspace / "models/checkpoints"
    assert [p.name for p in left.iterdir()] == [checkpoints.ABOUT_FILE]
    assert (left / checkpoints.ABOUT_FILE).read_text() == checkpoints.ABOUT_TEXT


def test_same_params_and_seed_give_identical_numbers(uninterrupted, tiny_base_dir, tmp_path,
                                                     monkeypatch):
    again = make_workspace(tmp_path / "ws", tiny_base_dir, dict(TRAIN, save_steps=0))
    run_stage_in_process(again, monkeypatch)
    assert curves(again)["metrics/train/plots/metrics/loss.tsv"] == \
        curves(uninterrupted)["metrics/train/plots/metrics/loss.tsv"]
    first = load_file(uninterrupted / "models/adapter/adapter_model.safetensors")
    second = load_file(again / "models/adapter/adapter_model.safetensors")
    assert all((first[k] == second[k]).all() for k in first)
    env = json.loads((again / "metrics/env.json").read_text())
    assert env["precision"] == "fp32" and env["torch_threads"] >= 1
    assert {"torch", "transformers", "peft", "trl", "dvc", "dvclive", "accelerate"} <= \
        {k for k, v in env["packages"].items() if v}


def test_checkpoints_of_other_params_are_never_resumed(uninterrupted, tiny_base_dir, tmp_path,
                                                       monkeypatch, capsys):
    short = dict(TRAIN, keep_checkpoints=2, max_steps=2)
    workspace = make_workspace(tmp_path / "ws", tiny_base_dir, short)
    run_stage_in_process(workspace, monkeypatch)
    kept = checkpoints.step_folders(workspace / "models/checkpoints")
    assert [p.name for p in kept] == ["checkpoint-1", "checkpoint-2"]
    # The same folder, a new learning rate: the old checkpoints are deleted, not resumed.
    text = (workspace / "params.yaml").read_text()
    (workspace / "params.yaml").write_text(text.replace("learning_rate: 0.01", "learning_rate: 0.02"))
    shutil.rmtree(workspace / "models/adapter")
    run_stage_in_process(workspace, monkeypatch)
    out = capsys.readouterr().out
    assert ("train: 2 checkpoints in models/checkpoints/ do not match this run (changed: "
            "params); deleting them and starting fresh") in out
    assert "resuming" not in out
    steps = curves(workspace)["metrics/train/plots/metrics/loss.tsv"]
    assert [s for s, _ in steps] == [1, 2]


def test_git_tracks_the_checkpoint_folder_as_a_finished_run_leaves_it():
    tracked = subprocess.run(["git", "ls-files", "models/checkpoints"], cwd=REPO,
                             capture_output=True, text=True, check=True).stdout.split()
    assert tracked == [f"models/checkpoints/{checkpoints.ABOUT_FILE}"]
    assert (REPO / tracked[0]).read_text() == checkpoints.ABOUT_TEXT


def test_dvc_yaml_keeps_checkpoints_between_runs():
    train = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]["train"]
    outs = {k: v for out in train["outs"] for k, v in
            (out.items() if isinstance(out, dict) else [(out, {})])}
    assert outs["models/checkpoints"] == {"persist": True, "cache": False}
    assert outs["metrics/env.json"] == {"cache": False}


def resume(tmp_path: Path):
    """resume_point of the default train params on tmp_path's base, data and checkpoints."""
    return run_support.resume_point(params.TrainParams(), tmp_path / "base",
                                    [tmp_path / "train.jsonl"], tmp_path / "checkpoints",
                                    tmp_path / "live", writer=True)


@pytest.fixture
def one_checkpoint(tmp_path, capsys) -> Path:
    """A base folder (its files only: nothing loads it), data and a complete checkpoint-1
    that an unchanged run resumes."""
    (tmp_path / "base").mkdir()
    (tmp_path / "base/config.json").write_text('{"model_type": "llama"}')
    (tmp_path / "base/tunelab_base.json").write_text('{"base": "tiny-llama"}')
    (tmp_path / "base/model.safetensors").write_bytes(b"weights")
    (tmp_path / "train.jsonl").write_text("{}\n")
    _, keeper = resume(tmp_path)
    saved = tmp_path / "checkpoints/checkpoint-1"
    saved.mkdir()
    (saved / "trainer_state.json").write_text("{}")
    checkpoints.mark_complete(saved, keeper.fingerprint, tmp_path / "live", 0.5)
    assert resume(tmp_path)[0] == saved
    capsys.readouterr()
    return tmp_path


def stale_message(checkpoint_dir: Path, changed: str) -> str:
    return (f"train: 1 checkpoints in {checkpoint_dir}/ do not match this run (changed: "
            f"{changed}); deleting them and starting fresh\n")


def test_a_checkpoint_of_other_base_weights_is_not_resumed(one_checkpoint, capsys):
    (one_checkpoint / "base/model.safetensors").write_bytes(b"other weights")
    assert resume(one_checkpoint)[0] is None
    assert capsys.readouterr().out == stale_message(one_checkpoint / "checkpoints", "base model")
    assert checkpoints.step_folders(one_checkpoint / "checkpoints") == []


def test_a_checkpoint_of_another_library_version_is_not_resumed(one_checkpoint, capsys,
                                                                monkeypatch):
    installed, real_version = metadata.version("trl"), metadata.version
    monkeypatch.setattr(metadata, "version",
                        lambda name: "9.9.9" if name == "trl" else real_version(name))
    assert resume(one_checkpoint)[0] is None
    assert capsys.readouterr().out == stale_message(one_checkpoint / "checkpoints",
                                                    f"trl {installed} -> 9.9.9")


def test_early_stopping_checkpoints_must_fall_on_a_logging_step(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("train: {logging_steps: 5, eval_steps: 7, save_steps: 10, "
                    "early_stopping_patience: 2}\n")
    with pytest.raises(ParamsError) as caught:
        params.load("train", path)
    assert str(caught.value) == (
        f"{path}: train.eval_steps: must be a multiple of train.logging_steps (5) when "
        "train.early_stopping_patience > 0 (checkpoints are then saved at each evaluation) "
        "so a resumed run logs the same curve, got 7")
    path.write_text("train: {logging_steps: 5, eval_steps: 7, save_steps: 10}\n")
    assert params.load("train", path).eval_steps == 7  # no early stopping: saves at save_steps
