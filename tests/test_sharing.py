"""Sharing a run: two clones, a bare Git remote and a local DVC remote, as a team has them.

The first clone runs the pipeline (tiny model), commits, `git push` + `dvc push`; the second
`git clone` + `dvc pull`s the same outputs byte for byte and `dvc repro` reruns nothing.
An experiment goes across with `dvc exp push origin NAME` / `dvc exp pull origin NAME`,
outputs included."""

import json
from pathlib import Path

import pytest

from conftest import TINY_PIPELINE, add_remotes, copy_repo, run_tool

pytestmark = pytest.mark.e2e
EXPERIMENT = "shared-lr"


def files_under(folder: Path) -> dict[str, bytes]:
    return {str(path.relative_to(folder)): path.read_bytes()
            for path in sorted(folder.rglob("*")) if path.is_file()}


def up_to_date(clone: Path) -> bool:
    """The root pipeline's outputs match dvc.lock (multitask/ is another pipeline)."""
    return "Data and pipelines are up to date." in run_tool(["dvc", "status", "dvc.yaml"],
                                                            clone).stdout


def ran_stages(output: str) -> list[str]:
    return [line.split("'")[1] for line in output.splitlines() if line.startswith("Running stage")]


@pytest.fixture(scope="module")
def clones(tiny_base_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("sharing")
    first = copy_repo(root / "first", TINY_PIPELINE, tiny_base_dir)
    # The shipped .dvc/config names no remote: `make run` needs none.
    assert run_tool(["dvc", "remote", "list"], first).stdout.strip() == ""
    add_remotes(first, root)
    run_tool(["dvc", "repro"], first)
    run_tool(["git", "add", "-A"], first)
    run_tool(["git", "commit", "-qm", "tiny run"], first)
    run_tool(["git", "push", "-q", "origin", "main"], first)
    pushed = run_tool(["dvc", "push"], first).stdout
    second = root / "second"
    run_tool(["git", "clone", "-q", root / "origin.git", second], root)
    for args in (["config", "user.email", "second@tunelab.local"],
                 ["config", "user.name", "second clone"]):
        run_tool(["git", *args], second)
    run_tool(["dvc", "pull"], second)
    return first, second, pushed


def test_pull_gives_the_same_adapter_models_and_metrics(clones):
    first, second, pushed = clones
    assert "pushed" in pushed
    for folder in ("models/adapter", "models/base", "models/gguf", "metrics", "reports"):
        mine, theirs = files_under(first / folder), files_under(second / folder)
        assert mine and mine.keys() == theirs.keys(), folder
        assert [name for name in mine if mine[name] != theirs[name]] == [], folder
    assert (second / "models/adapter/adapter_model.safetensors").stat().st_size > 0


def test_the_second_clone_reruns_nothing(clones):
    _, second, _ = clones
    assert up_to_date(second)
    assert ran_stages(run_tool(["dvc", "repro"], second).stdout) == []


def test_an_experiment_travels_with_its_outputs(clones):
    first, second, _ = clones
    run_tool(["dvc", "exp", "run", "-S", "train.learning_rate=0.02", "-n", EXPERIMENT], first)
    run_tool(["dvc", "exp", "push", "origin", EXPERIMENT], first)
    run_tool(["dvc", "exp", "pull", "origin", EXPERIMENT], second)
    shown = json.loads(run_tool(["dvc", "exp", "show", "--json"], second).stdout)
    experiments = {exp["name"]: exp["revs"][0]["data"]
                   for rev in shown for exp in (rev.get("experiments") or [])}
    assert EXPERIMENT in experiments
    data = experiments[EXPERIMENT]
    assert data["params"]["params.yaml"]["data"]["train"]["learning_rate"] == 0.02
    assert "tuned" in data["metrics"]["metrics/eval.json"]["data"]
    # Its outputs came with it: applied in both clones, the adapters are the same bytes and
    # differ from the baseline's; the second clone's workspace matches its lock file.
    baseline = files_under(second / "models/adapter")
    for clone in (first, second):
        run_tool(["dvc", "exp", "apply", EXPERIMENT], clone)
    applied = files_under(second / "models/adapter")
    assert applied == files_under(first / "models/adapter")
    assert applied["adapter_model.safetensors"] != baseline["adapter_model.safetensors"]
    assert up_to_date(second)
