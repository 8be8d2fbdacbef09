"""stages/align.py and the stages after it, on a tiny seeded model, run as dvc.yaml runs
them: objective none keeps the SFT adapter for evaluate and export; dpo trains it on,
reports held-out pairs before and after, and evaluate scores base, SFT and aligned side by
side; a bad preference record is one line naming the file and line, nothing written."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from conftest import run_stage as run, stage_args, trained_workspace
from test_resume import SLOW_STAGE  # the stage slowed at each checkpoint, to be killed there
from tunelab.models import loading
from tunelab.train import checkpoints
from tunelab.util import files

REPO = Path(__file__).resolve().parents[1]
TEAMS = ["hardware", "accounts", "network", "billing"]
PROBLEMS = ["The printer is jammed", "I cannot log in", "The VPN drops", "I was charged twice",
            "The screen flickers", "My password expired", "Wi-Fi is slow", "The invoice is wrong"]
PAIRS = [{"prompt": f"Route this ticket: {problem}.",
          "chosen": json.dumps({"team": TEAMS[index % 4]}),
          "rejected": "Please ask someone else.", "template": f"t{index}"}
         for index, problem in enumerate(PROBLEMS)]
TEST = [{"messages": [{"role": "user", "content": pair["prompt"]},
                      {"role": "assistant", "content": pair["chosen"]}],
         "source": f"data/raw/t.jsonl:{line}"} for line, pair in enumerate(PAIRS[:3], start=1)]
# Ratios and seed under which the eight templates split 4 train / 4 held out (val + test).
PREPARE = {"val_ratio": 0.25, "test_ratio": 0.25, "seed": 7, "group_by": "template"}
ALIGN = {"objective": "dpo", "max_steps": 2, "batch_size": 2, "gradient_accumulation": 1,
         "learning_rate": 1e-3, "max_length": 64}


def make_workspace(root: Path, base_dir: Path, adapter_dir: Path, tokenizer, align: dict) -> Path:
    trained_workspace(root, base_dir, adapter_dir, tokenizer)
    files.write_jsonl_atomic(root / "data/preferences/pairs.jsonl", PAIRS)
    files.write_jsonl_atomic(root / "data/prepared/test.jsonl", TEST)
    params = {"prepare": PREPARE, "align": {"data": "data/preferences", **align},
              "evaluate": {"max_new_tokens": 8, "batch_size": 2, "heldout": "", "general": ""},
              "export": {"quantizations": ["f32"], "speed_examples": 1, "threads": 2}}
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    return root


@pytest.fixture(scope="module")
def workspace_factory(tiny_base_dir, make_tiny_adapter, tokenizer, tmp_path_factory):
    adapter = make_tiny_adapter("align-stage", r=4, seed=1)

    def make(**align) -> Path:
        return make_workspace(tmp_path_factory.mktemp("align"), tiny_base_dir, adapter,
                              tokenizer, align)
    return make


@pytest.fixture(scope="module")
def aligned(workspace_factory):
    workdir = workspace_factory(**ALIGN)
    result = run("align", workdir)
    assert result.returncode == 0, result.stderr[-3000:]
    return workdir, result


def test_objective_none_writes_only_the_note_and_evaluate_keeps_its_keys(workspace_factory):
    workdir = workspace_factory()
    result = run("align", workdir)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip() == "align: objective none: evaluate and export use the SFT adapter"
    assert sorted(p.name for p in (workdir / "models/aligned").iterdir()) == ["tunelab_align.json"]
    assert files.read_json(workdir / "metrics/align/summary.json") == {"objective": "none"}
    assert sorted(p.name for p in (workdir / "metrics/align").iterdir()) == ["summary.json"]
    assert sorted(p.name for p in (workdir / "models/align_checkpoints").iterdir()) == ["ABOUT.md"]
    assert loading.final_model(workdir / "models/adapter", workdir / "models/aligned") == \
        workdir / "models/adapter"
    result = run("evaluate", workdir)
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = files.read_json(workdir / "metrics/eval.json")
    assert list(metrics) == ["base", "tuned", "delta", "method", "examples", "scorer"]
    assert "aligned" not in files.read_jsonl(workdir / "metrics/samples.jsonl")[0]


def test_dpo_trains_the_sft_adapter_on_and_reports_the_heldout_pairs(aligned):
    workdir, result = aligned
    summary = files.read_json(workdir / "metrics/align/summary.json")
    assert summary["pairs"] == {"train": 4, "heldout": 4}
    assert (summary["objective"], summary["beta"], summary["steps"]) == ("dpo", 0.1, 2)
    before, after = summary["heldout_pairs"]["before"], summary["heldout_pairs"]["after"]
    # Before the first step the policy is its reference (the SFT model): ln 2, margin 0.
    assert before == {"loss": pytest.approx(math.log(2), abs=1e-6), "preference_accuracy": 0.0,
                      "reward_margin": 0.0}
    assert set(after) == set(before) and after["loss"] != before["loss"]
    assert "train_seconds" not in summary and "align: dpo 2 steps in " in result.stdout
    info = files.read_json(workdir / "models/aligned/tunelab_align.json")
    assert info["objective"] == "dpo" and info["settings"]["learning_rate"] == 1e-3
    assert loading.aligned_objective(workdir / "models/aligned") == "dpo"
    curves = workdir / "metrics/align/plots/metrics"
    assert (curves / "loss.tsv").is_file() and (curves / "rewards/margins.tsv").is_file()
    assert (workdir / "metrics/align/training.log").read_text().startswith("step ")
    # A finished run keeps no checkpoint, only the note saying what the folder is for.
    assert (workdir / "models/align_checkpoints/ABOUT.md").read_text() == \
        checkpoints.ALIGN_ABOUT_TEXT
    assert sorted(p.name for p in (workdir / "models/align_checkpoints").iterdir()) == ["ABOUT.md"]


@pytest.fixture(scope="module")
def evaluated(aligned):
    workdir, _ = aligned
    result = run("evaluate", workdir)
    assert result.returncode == 0, result.stderr[-3000:]
    return workdir, result


def test_evaluate_scores_base_sft_and_aligned_side_by_side(evaluated):
    workdir, result = evaluated
    metrics = files.read_json(workdir / "metrics/eval.json")
    assert list(metrics) == ["base", "tuned", "delta", "aligned", "aligned_delta", "method",
                             "objective", "examples", "scorer"]
    assert metrics["objective"] == "dpo"
    assert list(metrics["aligned"]) == list(metrics["tuned"]) == list(metrics["base"])
    assert "reward" in metrics["aligned"]
    for key, gain in metrics["aligned_delta"].items():
        assert gain == pytest.approx(metrics["aligned"][key] - metrics["tuned"][key], abs=2e-6)
    samples = files.read_jsonl(workdir / "metrics/samples.jsonl")
    assert [sorted(row) for row in samples] == [
        ["aligned", "base", "prompt", "reference", "source", "tuned"]] * len(TEST)
    assert " -> aligned " in result.stdout


def test_export_ships_the_aligned_model(evaluated):
    workdir, _ = evaluated
    result = run("export", workdir)
    assert result.returncode == 0, result.stderr[-3000:]
    # The GGUF files are held to the aligned model's scores and answers, not the SFT one's.
    aligned = files.read_json(workdir / "metrics/eval.json")["aligned"]
    transformers = files.read_json(workdir / "metrics/export.json")["transformers"]
    assert {key: transformers[key] for key in ("task_accuracy", "json_valid")} == \
        {key: aligned[key] for key in ("task_accuracy", "json_valid")}
    from gguf import GGUFReader
    from safetensors.torch import load_file

    lora = {t.name: t for t in GGUFReader(workdir / "models/gguf/adapter-f32.gguf").tensors}
    weights = load_file(workdir / "models/aligned/adapter_model.safetensors")
    name = next(key for key in weights if "layers.0.self_attn.q_proj.lora_A" in key)
    shipped = lora["blk.0.attn_q.weight.lora_a"]
    assert weights[name].flatten().tolist() == pytest.approx(
        [float(x) for x in shipped.data.flatten()], abs=1e-6)


def test_a_bad_preference_record_is_one_line_and_nothing_is_written(workspace_factory):
    workdir = workspace_factory(**ALIGN)
    bad = [*PAIRS[:2], {**PAIRS[2], "rejected": PAIRS[2]["chosen"]}]
    files.write_jsonl_atomic(workdir / "data/preferences/pairs.jsonl", bad)
    result = run("align", workdir)
    assert result.returncode == 1
    errors = [line for line in result.stderr.splitlines() if "error" in line]
    assert len(errors) == 1 and errors[0].startswith(
        "align: error: data/preferences/pairs.jsonl:3: ")
    assert not (workdir / "models/aligned").exists() and not (workdir / "metrics").exists()


def test_a_whole_model_from_full_training_is_refused_in_one_line(workspace_factory):
    workdir = workspace_factory(**ALIGN)
    (workdir / "models/adapter/config.json").write_text("{}")
    result = run("align", workdir)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == (
        "align: error: align continues the SFT adapter, but models/adapter holds a whole model "
        "(train.method: full); align a lora or qlora run")


RESUMABLE = {**ALIGN, "max_steps": 4, "save_steps": 2}


def curves(workdir: Path) -> dict[str, list[str]]:
    """Each DVCLive curve of the run as its step and value columns (no wall-clock ones)."""
    found = {}
    for path in sorted((workdir / "metrics/align/plots/metrics").rglob("*.tsv")):
        if not any(word in path.stem for word in ("time", "per_second")):
            found[str(path.relative_to(workdir))] = [line.split("\t")[:2] for line in
                                                     path.read_text().splitlines()]
    return found


def test_a_killed_run_resumes_to_the_same_adapter_summary_and_curves(workspace_factory):
    whole = workspace_factory(**RESUMABLE)
    assert run("align", whole).returncode == 0
    killed = workspace_factory(**RESUMABLE)
    marker = killed / "models/align_checkpoints/checkpoint-2" / checkpoints.MARKER_FILE
    process = subprocess.Popen([sys.executable, "-c", SLOW_STAGE, str(REPO / "stages/align.py"),
                                *stage_args("align", killed)], cwd=killed,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    while not marker.exists() and process.poll() is None:
        time.sleep(0.01)
    os.kill(process.pid, signal.SIGKILL)
    output = process.communicate()[0]
    assert process.returncode == -signal.SIGKILL, output[-3000:]
    assert not (killed / "models/aligned").exists() and not (killed / "metrics/align").exists()

    result = run("align", killed)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "align: resuming from models/align_checkpoints/checkpoint-2 (step 2)" in result.stdout
    from safetensors.torch import load_file

    expected = load_file(whole / "models/aligned/adapter_model.safetensors")
    resumed = load_file(killed / "models/aligned/adapter_model.safetensors")
    assert expected.keys() == resumed.keys()
    assert all(torch_equal(expected[name], resumed[name]) for name in expected)
    assert files.read_json(killed / "metrics/align/summary.json") == \
        files.read_json(whole / "metrics/align/summary.json")
    assert curves(killed) == curves(whole)


def torch_equal(a, b) -> bool:
    import torch

    return torch.equal(a, b)
