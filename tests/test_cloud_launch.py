"""Cloud runs through SkyPilot (launch/skypilot/, tunelab.experiments.cloud_launch), tested
without a cloud: the task files load with SkyPilot's own parser, `--dry-run` prints each
trial's exact job, a missing `sky` is one line, and one trial runs end to end on the tiny
model through a stand-in `sky` that does what a SkyPilot VM does (clone origin at COMMIT,
run the task's `run` with its envs), pushing to a bare Git origin and a local DVC remote."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tunelab.cli import app as cli
from tunelab.experiments import cloud_launch

from conftest import REPO, TINY_PIPELINE, add_remotes, copy_repo, run_tool

TASK_FILES = ("launch/skypilot/train.yaml", "launch/skypilot/multi_node.yaml")
ENVS = {"REPO_URL": "https://github.com/example/tunelab.git", "COMMIT": "a" * 40,
        "NAME": "lr_rank-1-01", "SETTINGS": "train.learning_rate=0.0003 train.lora.r=16"}
# lr_rank.yaml's first four trials: TPE's random start, seeded (seed 0), so known before any
# result (sweep_space.trials_known_in_advance); the local runner asks the same four.
LR_RANK_KNOWN = ["train.learning_rate=0.0008840661465267688 train.lora.r=8",
                 "train.learning_rate=0.0006299218922196852 train.lora.r=32",
                 "train.learning_rate=0.002718850606705456 train.lora.r=16",
                 "train.learning_rate=0.0009313270964986404 train.lora.r=8"]


def sky_python() -> Path:
    """SkyPilot's interpreter: it lives in a virtualenv of its own (`make skypilot-env`)."""
    found = Path(os.environ.get("TUNELAB_SKY_PYTHON", REPO / ".venv-sky/bin/python"))
    if not found.is_file():
        pytest.skip(f"SkyPilot is not installed ({found} missing): `make skypilot-env` "
                    "installs it (make test does), or set TUNELAB_SKY_PYTHON")
    return found


# The loader, run in SkyPilot's own interpreter: each task as `sky jobs launch FILE --env ...`
# reads it (Task.from_yaml_config with env_overrides), the dry run's filled task with
# Task.from_yaml, and the shipped file alone, which must fail for its required envs.
PARSE = """
import json, sys, yaml, sky
out = {}
for path in sys.argv[2:]:
    task = sky.Task.from_yaml_config(yaml.safe_load(open(path)),
                                     env_overrides=list(json.loads(sys.argv[1]).items()))
    try:
        sky.Task.from_yaml(path)
        alone = "parsed"
    except ValueError as err:
        alone = str(err).split(".")[0]
    out[path] = {"name": task.name, "num_nodes": task.num_nodes, "envs": task.envs,
                 "workdir": task.workdir, "alone": alone, "run_lines": len(task.run.splitlines()),
                 "accelerators": sorted(str(r.accelerators) for r in task.resources)}
print(json.dumps(out))
"""


def test_task_files_parse_with_skypilots_loader(tmp_path):
    python = sky_python()
    filled = tmp_path / "filled.yaml"
    filled.write_text(cloud_launch.filled_task(ENVS, REPO / cloud_launch.TASK_FILE))
    result = subprocess.run([python, "-c", PARSE, json.dumps(ENVS),
                             *[str(REPO / path) for path in TASK_FILES], str(filled)],
                            capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    tasks = json.loads(result.stdout.splitlines()[-1])
    train, multi = tasks[str(REPO / TASK_FILES[0])], tasks[str(REPO / TASK_FILES[1])]
    workdir = {"url": ENVS["REPO_URL"], "ref": ENVS["COMMIT"]}  # ${...} filled by SkyPilot
    missing = "Environment variable 'REPO_URL' is None"
    assert train == {"name": "tunelab-train", "num_nodes": 1, "envs": ENVS, "workdir": workdir,
                     "alone": missing, "run_lines": 11,
                     "accelerators": ["{'A100': 1}", "{'A10G': 1}", "{'L4': 1}"]}
    assert multi == {"name": "tunelab-train-multinode", "num_nodes": 2,
                     "envs": {**ENVS, "MAIN_PORT": "29500"}, "workdir": workdir,
                     "alone": missing, "run_lines": 21, "accelerators": ["{'A100': 8}"]}
    # The dry run's task: the same task, complete on its own.
    assert tasks[str(filled)] == {**train, "alone": "parsed"}


def test_multi_node_task_joins_the_nodes_at_the_head_ip():
    run = yaml.safe_load((REPO / TASK_FILES[1]).read_text())["run"]
    # The main node's IP is the first line of SkyPilot's list: run that line as the task does.
    [line] = [line for line in run.splitlines() if line.startswith("main_ip=")]
    shown = subprocess.run(["bash", "-c", f"set -euo pipefail; {line}; echo \"$main_ip\""],
                           env={"SKYPILOT_NODE_IPS": "10.0.0.1\n10.0.0.2"},
                           capture_output=True, text=True, check=True).stdout
    assert shown == "10.0.0.1\n"
    assert ('accelerate launch --config_file configs/accelerate/multi_node.yaml \\\n'
            '  --num_machines "$SKYPILOT_NUM_NODES" --machine_rank "$SKYPILOT_NODE_RANK" \\\n'
            '  --num_processes $((SKYPILOT_NUM_NODES * SKYPILOT_NUM_GPUS_PER_NODE)) \\\n'
            '  --main_process_ip "$main_ip" --main_process_port "$MAIN_PORT" \\\n'
            '  $(python -m tunelab.experiments.stage_commands train)\n') in run


# --- the dry run and the refusals, in a pushed copy of the repo --------------------------

@pytest.fixture
def pushed_copy(tmp_path, monkeypatch):
    """A committed copy of the repo with origin (bare) and a DVC remote, HEAD pushed."""
    copy = tmp_path / "repo"
    copy.mkdir()
    copy_repo(copy, TINY_PIPELINE)
    origin, _storage = add_remotes(copy, tmp_path)
    run_tool(["git", "push", "-q", "origin", "main"], copy)
    monkeypatch.chdir(copy)
    return copy, origin


def snapshot(repo: Path) -> str:
    return run_tool(["git", "status", "--porcelain", "--ignored"], repo).stdout


def test_dry_run_prints_one_job_per_trial_and_writes_nothing(pushed_copy, capsys):
    copy, origin = pushed_copy
    head, before = run_tool(["git", "rev-parse", "HEAD"], copy).stdout.strip(), snapshot(copy)
    assert cli.main(["sweep", "sweeps/lr_rank.yaml", "--launcher", "skypilot",
                     "--dry-run"]) == 0
    captured = capsys.readouterr()
    assert captured.err == ""  # clean, pushed: nothing a real launch would refuse
    out = captured.out
    assert out.splitlines()[:2] == [
        f"sweeps/lr_rank.yaml: bayesian, 8 trials, maximize tuned.task_accuracy; one SkyPilot "
        f"managed job per trial (launch/skypilot/train.yaml) on {head[:7]} of {origin}",
        "bayesian: trials 01-04 are TPE's seeded random start, the same whatever the results; "
        "the others are asked from the results, 1 at a time, and launched as each batch "
        "comes back"]
    commands = [shlex.split(line[2:]) for line in out.splitlines() if line.startswith("$ ")]
    # Bayesian waits for each batch (no --detach-run): the next trials need its results.
    assert commands == [["sky", "jobs", "launch", "--yes", "--name", f"lr_rank-1-{n:02d}",
                         "--env", f"REPO_URL={origin}", "--env", f"COMMIT={head}",
                         "--env", f"NAME=lr_rank-1-{n:02d}", "--env", f"SETTINGS={settings}",
                         "launch/skypilot/train.yaml"]
                        for n, settings in enumerate(LR_RANK_KNOWN, start=1)]
    assert [line for line in out.splitlines() if line.startswith("=== lr_rank-1-0")] == [
        "=== lr_rank-1-01: learning_rate=0.000884066 r=8",
        "=== lr_rank-1-02: learning_rate=0.000629922 r=32",
        "=== lr_rank-1-03: learning_rate=0.00271885 r=16",
        "=== lr_rank-1-04: learning_rate=0.000931327 r=8",
        *[f"=== lr_rank-1-{n:02d}: asked from Optuna's TPE once the trials before it are back"
          for n in range(5, 9)]]
    # Each job's task, printed whole with its envs filled in.
    tasks = out.split("\n=== ")[1:5]
    for number, (task, settings) in enumerate(zip(tasks, LR_RANK_KNOWN), start=1):
        task_yaml = yaml.safe_load(task.split("\n", 2)[2] + "\n")  # split took its last \n
        assert task_yaml["envs"] == {"REPO_URL": str(origin), "COMMIT": head,
                                     "NAME": f"lr_rank-1-{number:02d}", "SETTINGS": settings}
        assert task_yaml["run"] == cloud_launch.run_script()
    assert snapshot(copy) == before and not (copy / "reports").exists()


def test_grid_dry_run_detaches_every_job_and_warns_of_an_unpushed_head(pushed_copy, capsys):
    copy, origin = pushed_copy
    run_tool(["git", "commit", "-qm", "not pushed", "--allow-empty"], copy)
    assert cli.main(["sweep", "sweeps/lr_test.yaml", "--launcher", "skypilot", "--dry-run",
                     "--set", "train.max_steps=3"]) == 0
    captured = capsys.readouterr()
    head = run_tool(["git", "rev-parse", "HEAD"], copy).stdout.strip()
    assert captured.err == (f"warning: HEAD {head[:7]} is on no branch of origin: git push "
                            "origin HEAD first (and dvc push), since each job clones it\n")
    commands = [shlex.split(line[2:]) for line in captured.out.splitlines()
                if line.startswith("$ ")]
    # Every grid job at once, detached: no trial waits for another's result.
    assert [command[:5] + command[-3:] for command in commands] == [
        ["sky", "jobs", "launch", "--yes", "--detach-run", "--env",
         f"SETTINGS=train.max_steps=3 train.eval_steps=0 evaluate.max_examples=16 "
         f"train.learning_rate={rate}", "launch/skypilot/train.yaml"]
        for rate in ("0.0001", "0.0003", "0.001", "0.003")]


def test_launch_without_sky_is_one_line_and_writes_nothing(pushed_copy, capsys, monkeypatch):
    copy, _origin = pushed_copy
    monkeypatch.setenv("PATH", f"{Path(sys.executable).parent}{os.pathsep}/usr/bin:/bin")
    before = snapshot(copy)
    assert cli.main(["sweep", "sweeps/lr_test.yaml", "--launcher", "skypilot"]) == 1
    assert capsys.readouterr().err == (
        "tunelab sweep: error: SkyPilot's `sky` command is not on PATH nor in .venv-sky/bin: "
        "`make skypilot-env` installs it there (or `pip install skypilot` in a virtualenv of "
        "its own)\n")
    assert snapshot(copy) == before


def test_launch_refuses_a_repo_without_origin(tmp_path, monkeypatch, capsys):
    copy = tmp_path / "repo"
    copy.mkdir()
    copy_repo(copy, TINY_PIPELINE)
    fake_sky(tmp_path / "bin", monkeypatch)
    monkeypatch.chdir(copy)
    assert cli.main(["sweep", "sweeps/lr_test.yaml", "--launcher", "skypilot"]) == 1
    assert capsys.readouterr().err == (
        "tunelab sweep: error: no git remote 'origin': each job clones it and pushes its "
        "experiment back (git remote add origin URL)\n")
    assert not (copy / "reports").exists()


# --- one trial end to end: launch, run as the VM would, push, pull, report -----------------

# What a SkyPilot VM does with `sky jobs launch TASK --env K=V ...`: clone workdir.url at
# workdir.ref (SkyPilot's git_clone.sh: a full clone, then the commit checked out), then run
# the task's `run` with its envs in the clone. `setup` (make setup) is skipped: this
# interpreter's venv is first on PATH. Each call's arguments are logged as one JSON line.
FAKE_SKY = """\
import json, os, subprocess, sys, yaml
args = sys.argv[1:]
with open(os.environ["FAKE_SKY_CALLS"], "a") as calls:
    calls.write(json.dumps(args) + "\\n")
task = yaml.safe_load(open(args[-1]))
envs = dict(task["envs"])
envs.update(args[i + 1].split("=", 1) for i, arg in enumerate(args) if arg == "--env")
vm = os.path.join(os.environ["FAKE_SKY_VMS"], envs["NAME"])
subprocess.run(["git", "clone", "-q", envs["REPO_URL"], vm], check=True)
subprocess.run(["git", "checkout", "-q", "--detach", envs["COMMIT"]], cwd=vm, check=True)
sys.exit(subprocess.run(["bash", "-c", task["run"]], cwd=vm, env={**os.environ, **envs}).returncode)
"""


def fake_sky(bin_dir: Path, monkeypatch) -> Path:
    bin_dir.mkdir()
    sky = bin_dir / "sky"
    sky.write_text(f"#!{sys.executable}\n{FAKE_SKY}")
    sky.chmod(0o755)
    vms = bin_dir.parent / "vms"
    vms.mkdir()
    monkeypatch.setenv("FAKE_SKY_CALLS", str(bin_dir.parent / "sky_calls.jsonl"))
    monkeypatch.setenv("FAKE_SKY_VMS", str(vms))
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{Path(sys.executable).parent}"
                               f"{os.pathsep}{os.environ['PATH']}")
    return sky


@pytest.mark.e2e
def test_a_trial_runs_as_on_a_vm_and_comes_back_as_a_dvc_experiment(tmp_path, tiny_base_dir,
                                                                    monkeypatch):
    copy = tmp_path / "repo"
    copy.mkdir()
    copy_repo(copy, TINY_PIPELINE, tiny_base_dir)
    origin, storage = add_remotes(copy, tmp_path)
    # The baseline, as a team shares it: run, commit, push the commit and the data.
    run_tool(["dvc", "repro", "-q"], copy)
    run_tool(["git", "add", "-A"], copy)
    run_tool(["git", "commit", "-qm", "baseline run"], copy)
    run_tool(["git", "push", "-q", "origin", "main"], copy)
    run_tool(["dvc", "push", "-q"], copy)
    head = run_tool(["git", "rev-parse", "HEAD"], copy).stdout.strip()
    fake_sky(tmp_path / "bin", monkeypatch)
    sweep_file = tmp_path / "cloud.yaml"
    sweep_file.write_text("strategy: grid\nmetric: tuned.loss\ndirection: minimize\n"
                          "set: {train.max_steps: 1}\n"
                          "search_space: {train.learning_rate: [3.0e-3]}\n")

    launched = run_tool([sys.executable, "-m", "tunelab.cli.app", "sweep", sweep_file,
                         "--launcher", "skypilot"], copy)
    assert launched.stdout.splitlines()[-2:] == [
        "  cloud-1-01 learning_rate=0.003: launched",
        "launched 1 of 1 jobs (`sky jobs queue` shows them; output in "
        "reports/sweeps/cloud-1.log); once they are done: tunelab sweep-report --sweep "
        "cloud-1 --pull"]
    calls = [json.loads(line) for line in (tmp_path / "sky_calls.jsonl").read_text().splitlines()]
    assert calls == [["jobs", "launch", "--yes", "--detach-run", "--name", "cloud-1-01",
                      "--env", f"REPO_URL={origin}", "--env", f"COMMIT={head}",
                      "--env", "NAME=cloud-1-01",
                      "--env", "SETTINGS=train.max_steps=1 train.learning_rate=0.003",
                      "launch/skypilot/train.yaml"]]
    # The VM pulled the unchanged stages' outputs (dvc exp run --pull) instead of rebuilding
    # them, ran train and what follows it, and pushed the experiment: its ref is on origin,
    # and nothing came back here by itself.
    vm_log = (copy / "reports/sweeps/cloud-1.log").read_text()
    assert "Pulling data for stage: 'prepare'" in vm_log
    assert "Running stage 'train'" in vm_log and "Running stage 'prepare'" not in vm_log
    assert "refs/exps/" in run_tool(["git", "ls-remote", origin], copy).stdout
    assert run_tool(["dvc", "exp", "list", "--name-only"], copy).stdout.strip() == ""
    record = json.loads((copy / "reports/sweeps/cloud-1.json").read_text())
    assert [(t["name"], t["status"]) for t in record["trials"]] == [("cloud-1-01", "launched")]

    report = run_tool([sys.executable, "-m", "tunelab.cli.app", "sweep-report", "--sweep",
                       "cloud-1", "--pull"], copy)
    assert report.stdout.splitlines()[0] == "pulled 1 of the 1 trials not in yet from origin"
    shown = json.loads(run_tool(["dvc", "exp", "show", "--json"], copy).stdout)
    experiments = {exp["name"]: exp["revs"][0]["data"]
                   for rev in shown for exp in (rev.get("experiments") or [])}
    assert list(experiments) == ["cloud-1-01"]
    data = experiments["cloud-1-01"]
    train = data["params"]["params.yaml"]["data"]["train"]
    assert (train["learning_rate"], train["max_steps"]) == (3.0e-3, 1)
    loss = data["metrics"]["metrics/eval.json"]["data"]["tuned"]["loss"]
    assert f"best: cloud-1-01  tuned.loss={loss:.4f}  train.learning_rate=0.0030" \
        in report.stdout
    record = json.loads((copy / "reports/sweeps/cloud-1.json").read_text())
    assert [(t["status"], t["value"]) for t in record["trials"]] == [("done", loss)]
    # The outputs made the round trip through the DVC remote: applying checks them out.
    applied = run_tool([sys.executable, "-m", "tunelab.cli.app", "sweep-report", "--sweep",
                        "cloud-1", "--apply-best"], copy)
    assert "applied cloud-1-01" in applied.stdout
    assert yaml.safe_load((copy / "params.yaml").read_text())["train"]["learning_rate"] == 3e-3
    assert (copy / "models/adapter/adapter_model.safetensors").is_file()
    assert storage.is_dir()
