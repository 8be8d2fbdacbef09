"""`tunelab verify-repro`: train, align and evaluate rerun in a scratch folder give the
workspace's metrics exactly (CPU, same params and seed), for an SFT run and one aligned
with DPO; a difference fails."""

import json
import runpy
import shutil
from pathlib import Path

import pytest
import yaml

from tunelab.cli import app as cli
from tunelab.experiments import verify
from tunelab.util import files
from conftest import stage_args

REPO = Path(__file__).resolve().parents[1]
QUICK = {"train": {"max_steps": 2, "batch_size": 4, "logging_steps": 1, "save_steps": 1,
                   "eval_steps": 0, "warmup_ratio": 0.0, "precision": "fp32",
                   "lora": {"r": 4, "alpha": 8}},
         # yes/no answers: no held-out file of this task, and no general-ability set
         "evaluate": {"max_examples": 2, "max_new_tokens": 3, "batch_size": 2, "heldout": "",
                      "general": ""}}


def rows(n):
    return [{"messages": [{"role": "user", "content": f"Is {i} even?"},
                          {"role": "assistant", "content": "yes" if i % 2 == 0 else "no"}],
             "task": None, "source": f"x.jsonl:{i}"} for i in range(n)]


# The aligned run: DPO on pairs of the same questions, split by prompt so that 12 prompts
# leave some for the held-out pairs.
ALIGNED = {"align": {"objective": "dpo", "max_steps": 2, "batch_size": 2,
                     "gradient_accumulation": 1, "max_length": 64},
           "prepare": {"val_ratio": 0.25, "test_ratio": 0.25, "group_by": ""}}


def pairs(n):
    return [{"prompt": f"Is {i} even?", "chosen": "yes" if i % 2 == 0 else "no",
             "rejected": "no" if i % 2 == 0 else "yes"} for i in range(n)]


def make_workspace(root: Path, tiny_base_dir: Path, settings: dict) -> Path:
    """A workspace after `dvc repro` of train, align and evaluate: tiny model, two steps."""
    root.mkdir()
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    for section, values in settings.items():
        params[section].update(values)
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    shutil.copytree(tiny_base_dir, root / "models/base")
    shutil.copytree(REPO / "stages", root / "stages")
    shutil.copy(REPO / "dvc.yaml", root / "dvc.yaml")
    (root / "data/heldout").mkdir(parents=True)  # a dvc.yaml dep of evaluate
    files.write_jsonl_atomic(root / params["align"]["data"] / "pairs.jsonl", pairs(12))
    for split, n in (("train", 8), ("val", 2), ("test", 2)):
        files.write_jsonl_atomic(root / f"data/prepared/{split}.jsonl", rows(n))
    with pytest.MonkeyPatch.context() as monkeypatch:
        monkeypatch.chdir(root)
        for stage in verify.RERUN_STAGES:
            stage_main = runpy.run_path(f"stages/{stage}.py", run_name="s")["main"]
            assert stage_main(*stage_args(stage, root)) == 0
    return root


@pytest.fixture(scope="module")
def workspace(tiny_base_dir, tmp_path_factory):
    return make_workspace(tmp_path_factory.mktemp("verify") / "ws", tiny_base_dir, QUICK)


def test_rerun_reports_identical_metrics(workspace, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(workspace)
    before = {p: p.read_bytes() for p in (workspace / "metrics").rglob("*") if p.is_file()}
    code = cli.main(["verify-repro", "--workdir", str(tmp_path / "scratch")])
    out = capsys.readouterr().out
    assert code == 0, out
    compared = [r for r in verify.compare(workspace, tmp_path / "scratch", 0.0) if not r["timing"]]
    assert len(compared) > 20 and not any(r["differs"] for r in compared)
    assert out.splitlines()[-1] == (f"verify-repro: identical: all {len(compared)} metrics match "
                                    "(tolerance 0)")
    assert "tuned.loss" in out and "train_seconds" in out
    # The rerun wrote only into the scratch folder.
    assert {p: p.read_bytes() for p in (workspace / "metrics").rglob("*") if p.is_file()} == before
    assert (tmp_path / "scratch/models/adapter/adapter_model.safetensors").is_file()
    assert (tmp_path / "scratch/metrics/env.json").is_file()


def test_an_aligned_run_reruns_identically(tiny_base_dir, tmp_path, monkeypatch, capsys):
    workspace = make_workspace(tmp_path / "ws", tiny_base_dir, {**QUICK, **ALIGNED})
    monkeypatch.chdir(workspace)
    code = cli.main(["verify-repro", "--workdir", str(tmp_path / "scratch")])
    out = capsys.readouterr().out
    assert code == 0, out
    compared = {r["key"] for r in verify.compare(workspace, tmp_path / "scratch", 0.0)
                if not r["timing"]}
    # The aligned model's scores and the held-out pairs are among the metrics compared.
    assert {"aligned.loss", "aligned_delta.loss", "heldout_pairs.after.preference_accuracy",
            "heldout_pairs.after.loss", "final_loss"} <= compared


def test_a_changed_metric_is_reported_and_fails(workspace, tmp_path):
    rerun = tmp_path / "rerun"
    for name in verify.COMPARED:
        (rerun / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(workspace / name, rerun / name)
    metrics = json.loads((rerun / "metrics/eval.json").read_text())
    metrics["tuned"]["loss"] *= 1 + 1e-9
    metrics["tuned"]["new_metric"] = 1.0
    (rerun / "metrics/eval.json").write_text(json.dumps(metrics))
    summary = json.loads((rerun / "metrics/train/summary.json").read_text())
    summary["train_seconds"] += 100.0  # timing: shown, never compared
    (rerun / "metrics/train/summary.json").write_text(json.dumps(summary))

    exact = {r["key"]: r for r in verify.compare(workspace, rerun, 0.0)}
    assert [k for k, r in exact.items() if r["differs"]] == ["tuned.loss", "tuned.new_metric"]
    assert exact["tuned.new_metric"]["workspace"] == "(missing)"
    assert exact["train_seconds"]["timing"] and not exact["train_seconds"]["differs"]
    loose = verify.compare(workspace, rerun, 1e-6)
    assert [r["key"] for r in loose if r["differs"]] == ["tuned.new_metric"]


def test_workspace_without_a_run_is_a_one_line_error(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "params.yaml").write_text("train:\n  max_steps: 2\n")
    assert cli.main(["verify-repro"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("tunelab verify-repro: error: models/base/config.json, "
                          "metrics/train/summary.json, metrics/align/summary.json, "
                          "metrics/eval.json, data/prepared/train.jsonl")
    assert err.endswith(f"not found in {tmp_path}: run `dvc repro` first\n")


def test_the_scratch_folder_links_what_evaluate_reads(tmp_path):
    """The held-out file, the general-ability set and a scorer plugin (evaluate.heldout,
    .general, .scorer) are read by the rerun evaluate stage, so the scratch folder has them."""
    workspace, scratch = tmp_path / "ws", tmp_path / "scratch"
    names = ["data/heldout/h.jsonl", "data/general/g.jsonl", "configs/scorers/s.py",
             "models/base/config.json", *verify.COMPARED,
             *(f"data/prepared/{split}.jsonl" for split in ("train", "val", "test"))]
    for name in names:
        (workspace / name).parent.mkdir(parents=True, exist_ok=True)
        (workspace / name).write_text("{}")
    (workspace / "params.yaml").write_text(yaml.safe_dump({"evaluate": {
        "heldout": "data/heldout/h.jsonl", "general": "data/general/g.jsonl",
        "scorer": "configs/scorers/s.py:score"}}))
    verify.prepare_scratch(workspace, scratch)
    for name in names[:3]:
        assert (scratch / name).is_symlink() and (scratch / name).resolve() == workspace / name
