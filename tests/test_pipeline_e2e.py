"""End to end: `dvc repro` and `dvc exp run -S ...` in a temporary git copy of
this repo, with the real embedded model and a handful of steps."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
STAGES = ["base", "prepare", "validate", "train", "align", "evaluate", "judge", "export", "plot",
          "report"]
QUICK = {  # a few steps and a few test examples: minutes, not the real run
    "train": {"max_steps": 3, "batch_size": 4, "eval_steps": 0, "logging_steps": 1},
    "evaluate": {"max_examples": 6, "max_new_tokens": 48, "batch_size": 6,
                 "general": "data/general/quick.jsonl", "general_max_new_tokens": 32},
    "export": {"quantizations": ["q8_0"], "speed_examples": 2},
}

pytestmark = pytest.mark.e2e


def run(args, cwd, check=True):
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    result = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True)
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(args)} exited {result.returncode}\n"
                             f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return result


def ran_stages(output: str) -> list[str]:
    return [line.split("'")[1] for line in output.splitlines() if line.startswith("Running stage")]


@pytest.fixture(scope="module")
def repo_copy(tmp_path_factory):
    copy = tmp_path_factory.mktemp("tunelab") / "repo"
    files = run(["git", "ls-files", "-co", "--exclude-standard"], REPO).stdout.split()
    for name in files:
        if (REPO / name).is_file():
            (copy / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, copy / name)
    params = yaml.safe_load((copy / "params.yaml").read_text())
    for section, values in QUICK.items():
        params[section].update(values)
    (copy / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    # Two general-ability prompts of each category: the mechanism, at a sixth of the cost.
    shipped = (copy / "data/general/general.jsonl").read_text().splitlines(keepends=True)
    quick = [line for category in ("instruction_following", "facts", "arithmetic")
             for line in [l for l in shipped if f'"category": "{category}"' in l][:2]]
    (copy / "data/general/quick.jsonl").write_text("".join(quick))
    run(["git", "init", "-q"], copy)
    run(["git", "config", "user.email", "e2e@tunelab.local"], copy)
    run(["git", "config", "user.name", "tunelab e2e"], copy)
    run(["git", "add", "-A"], copy)
    run(["git", "commit", "-qm", "quick params"], copy)
    return copy


@pytest.fixture(scope="module")
def reproduced(repo_copy):
    result = run(["dvc", "repro"], repo_copy)
    return repo_copy, result


def test_repro_runs_every_stage_and_writes_outputs(reproduced):
    repo, result = reproduced
    ran = ran_stages(result.stdout)
    # validate may be skipped: its inputs can equal those in the committed dvc.lock,
    # and its outputs (git-tracked metrics) are already there. Everything else is new.
    assert ran in (STAGES, [s for s in STAGES if s != "validate"])
    assert (repo / "metrics/validation.json").is_file()
    assert (repo / "models/adapter/adapter_model.safetensors").is_file()
    assert (repo / "dvc.lock").is_file()
    metrics = json.loads((repo / "metrics/eval.json").read_text())
    assert set(metrics["base"]) == set(metrics["tuned"]) == set(metrics["delta"])
    assert {"loss", "perplexity", "task_accuracy", "exact_match", "rougeL", "chrf",
            "field_category"} <= set(metrics["tuned"])
    assert all(0 <= metrics[m]["task_accuracy"] <= 1 for m in ("base", "tuned"))
    assert metrics["examples"] == 6 and metrics["method"] == "lora"
    samples = (repo / "metrics/samples.jsonl").read_text().splitlines()
    assert len(samples) == 6
    # The general-ability block (evaluate.general, on by default) for base and tuned.
    general = metrics["general"]
    assert general["counts"] == {"instruction_following": 2, "facts": 2, "arithmetic": 2}
    for key in ("base", "tuned", "delta", "delta_low", "delta_high"):
        assert list(general[key]) == ["instruction_following", "facts", "arithmetic", "all"]
    assert all(general["delta_low"][c] <= general["delta"][c] <= general["delta_high"][c]
               for c in general["delta"])
    assert len((repo / "metrics/general_answers.jsonl").read_text().splitlines()) == 6
    assert json.loads((repo / "metrics/judge.json").read_text()) == {"judge": "off"}
    html = (repo / "reports/report.html").read_text()
    assert html.count("data:image/png;base64,") >= 2
    assert "https://" not in html and "http://" not in html
    assert (repo / "metrics/train/plots/metrics/loss.tsv").is_file()
    assert sorted(p.name for p in (repo / "models/gguf").iterdir()) == [
        "Modelfile", "adapter-f32.gguf", "tuned-q8_0.gguf"]
    exported = json.loads((repo / "metrics/export.json").read_text())
    assert exported["examples"] == 6 and exported["max_new_tokens"] == 48
    assert exported["q8_0"]["template_differences"] == exported["lora"]["template_differences"] == 0
    assert "Deployable model" in html


def test_second_repro_reruns_nothing(reproduced):
    repo, _ = reproduced
    result = run(["dvc", "repro"], repo)
    assert ran_stages(result.stdout) == []
    assert "up to date" in result.stdout


def test_fresh_clone_of_the_run_with_its_cache_reruns_nothing(reproduced, tmp_path):
    """What a teammate gets from `git clone` + `dvc pull` of a committed run."""
    repo, _ = reproduced
    clone = tmp_path / "clone"
    run(["git", "clone", "-q", str(repo), str(clone)], tmp_path)
    # The run's results as a commit would carry them, without committing in `repo`.
    for name in run(["git", "ls-files", "-co", "--exclude-standard"], repo).stdout.split():
        (clone / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(repo / name, clone / name)
    run(["dvc", "cache", "dir", "--local", str(repo / ".dvc" / "cache")], clone)
    run(["dvc", "checkout"], clone)
    assert ran_stages(run(["dvc", "repro", "--dry"], clone).stdout) == []


def test_evaluate_param_reruns_only_downstream_stages(reproduced):
    repo, _ = reproduced
    original = (repo / "params.yaml").read_text()
    (repo / "params.yaml").write_text(original.replace("max_new_tokens: 48", "max_new_tokens: 40"))
    # --dry lists the stages whose own deps changed: evaluate, export and report read the
    # `evaluate` params; plot joins once evaluate has really rewritten eval.json.
    assert ran_stages(run(["dvc", "repro", "--dry"], repo).stdout) == ["evaluate", "export",
                                                                       "report"]
    # The real run (kept: the workspace stays consistent for the experiment test below); the
    # judge reruns where the shorter budget changed an answer in samples.jsonl.
    ran = ran_stages(run(["dvc", "repro"], repo).stdout)
    assert [stage for stage in ran if stage != "judge"] == ["evaluate", "export", "plot",
                                                            "report"]


def test_export_types_rerun_only_export_and_the_report(reproduced):
    repo, _ = reproduced
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["export"]["quantizations"] = ["q4_k_m"]
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    assert ran_stages(run(["dvc", "repro"], repo).stdout) == ["export", "report"]
    assert sorted(p.name for p in (repo / "models/gguf").iterdir()) == [
        "Modelfile", "adapter-f32.gguf", "tuned-q4_k_m.gguf"]


def test_experiment_with_new_learning_rate_is_listed_and_diffable(reproduced):
    repo, _ = reproduced
    run(["git", "add", "-A"], repo)
    run(["git", "commit", "-qm", "baseline run"], repo)
    run(["dvc", "exp", "run", "-S", "train.learning_rate=1e-4", "-n", "lr-1e-4"], repo)
    shown = json.loads(run(["dvc", "exp", "show", "--json"], repo).stdout)
    experiments = [exp for rev in shown for exp in (rev.get("experiments") or [])]
    names = {exp.get("name") for exp in experiments}
    assert "lr-1e-4" in names
    exp_data = next(e for e in experiments if e.get("name") == "lr-1e-4")["revs"][0]["data"]
    assert exp_data["params"]["params.yaml"]["data"]["train"]["learning_rate"] == 1e-4
    assert "tuned" in exp_data["metrics"]["metrics/eval.json"]["data"]
    diff = run(["dvc", "metrics", "diff", "--json"], repo)
    assert "metrics/train/summary.json" in json.loads(diff.stdout)
