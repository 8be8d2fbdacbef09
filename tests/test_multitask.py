"""Multi-task pipeline: the `task` field through prepare, the per-task filter,
multitask.tasks validation, and the matrix stage definition DVC expands."""

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tunelab.config import params
from tunelab.data import columns, multitask, prepare
from conftest import stage_args

REPO = Path(__file__).resolve().parents[1]


def alpaca(i: int, task: str) -> dict:
    return {"instruction": f"Do {task} for item {i}.", "output": f"{task}-{i}", "task": task}


def test_task_field_survives_load_and_split(tmp_path, write_jsonl):
    raw = write_jsonl(tmp_path / "raw.jsonl", [alpaca(i, t) for i in range(30)
                                               for t in ("triage", "sentiment")])
    loaded = prepare.load_files([raw])
    splits = prepare.split(prepare.deduplicate(loaded.examples)[0], 0.1, 0.2, seed=1)
    assert sum(len(s) for s in splits.values()) == 60
    for examples in splits.values():
        for example in examples:
            assert example["task"] == example["messages"][-1]["content"].split("-")[0]


def test_select_keeps_one_task_in_order():
    examples = [{"task": "a", "n": 1}, {"task": "b", "n": 2}, {"n": 3}, {"task": "a", "n": 4}]
    assert multitask.select(examples, "a") == [{"task": "a", "n": 1}, {"task": "a", "n": 4}]
    assert multitask.select(examples, "c") == []


def test_write_task_split_filters_train_and_val(tmp_path, write_jsonl):
    for split in ("train", "val"):
        write_jsonl(tmp_path / f"{split}.jsonl", [{"task": "a", "s": split}, {"task": "b"}])
    paths = multitask.write_task_split(tmp_path, "a", tmp_path / "out")
    for split in ("train", "val"):
        assert [json.loads(x) for x in paths[split].read_text().splitlines()] == \
            [{"task": "a", "s": split}]


@pytest.mark.parametrize("tasks, message", [
    ("[a, a]", "multitask.tasks: listed twice: 'a'"),
    ("[a, ../up]", "multitask.tasks: '../up' is not a valid task name"),
    ("[]", "multitask.tasks: expected a string or a non-empty list of strings"),
])
def test_bad_task_lists_are_refused(tmp_path, tasks, message):
    path = tmp_path / "params.yaml"
    path.write_text(f"multitask:\n  tasks: {tasks}\n")
    with pytest.raises(params.ParamsError, match=f"^{path}: {message}".replace("[", r"\[")
                       .replace(".", r"\.")):
        multitask.load_params(path)


def test_repo_multitask_params_load():
    assert multitask.load_params(REPO / multitask.PARAMS_FILE).tasks == ["triage", "sentiment"]
    assert params.load("train", REPO / multitask.PARAMS_FILE).max_steps == 20


def run_prepare_tasks(workdir: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPO / "stages/prepare_tasks.py"),
                           *stage_args("prepare_tasks", workdir, "multitask/dvc.yaml")], cwd=workdir,
                          capture_output=True, text=True)


@pytest.fixture
def multitask_workdir(tmp_path, write_jsonl):
    (tmp_path / "multitask").mkdir()
    shutil.copy(REPO / multitask.PARAMS_FILE, tmp_path / multitask.PARAMS_FILE)
    shutil.copy(REPO / "params.yaml", tmp_path)  # every stage first checks the main params
    write_jsonl(tmp_path / "multitask/data/raw/tasks.jsonl",  # item i of every task: one template
                [{**alpaca(i, t), "template": f"topic/{i}"} for i in range(40)
                 for t in ("triage", "sentiment", "other")])
    return tmp_path


def test_prepare_tasks_stage_keeps_tasks_and_counts_them(multitask_workdir):
    result = run_prepare_tasks(multitask_workdir)
    assert result.returncode == 0, result.stderr
    assert "not trained (not in multitask.tasks): other" in result.stdout
    prepared = multitask_workdir / "multitask/data/prepared"
    rows = [{**json.loads(line), "split": split} for split in ("train", "val", "test")
            for line in (prepared / f"{split}.jsonl").read_text().splitlines()]
    assert len(rows) == 120 and {r["task"] for r in rows} == {"triage", "sentiment", "other"}
    assert len({(r["group"], r["split"]) for r in rows}) == 40  # prepare.group_by: one split a template
    metrics = json.loads((multitask_workdir / "multitask/metrics/data.json").read_text())
    assert sum(metrics["tasks"]["sentiment"].values()) == 40
    assert metrics["splits"]["train"] == sum(c["train"] for c in metrics["tasks"].values())


def test_prepare_tasks_fails_on_a_listed_task_without_examples(multitask_workdir):
    params_file = multitask_workdir / multitask.PARAMS_FILE
    params_file.write_text(params_file.read_text().replace("[triage, sentiment]",
                                                           "[triage, summary]"))
    result = run_prepare_tasks(multitask_workdir)
    assert result.returncode == 1
    assert result.stderr.strip() == (
        "prepare_tasks: error: multitask/data/raw: no examples with task 'summary' "
        "(multitask.tasks; tasks in the data: other, sentiment, triage)")
    assert not (multitask_workdir / "multitask/data/prepared").exists()


def test_shipped_sample_is_what_the_seeded_generator_makes():
    spec = importlib.util.spec_from_file_location("generate_tasks", REPO / "multitask/generate_tasks.py")
    generator = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(generator)
    expected = "".join(json.dumps(e, ensure_ascii=False) + "\n"
                       for e in generator.generate_examples(160, 29))
    assert (REPO / "multitask/data/raw/tasks.jsonl").read_text(encoding="utf-8") == expected


def test_shipped_sample_puts_each_ticket_in_one_split_for_every_task():
    """A ticket is both a triage and a sentiment example; split by its template, no ticket
    (nor another on its topic sentence) is in train for one task and in test for the other."""
    p = params.load("prepare", REPO / multitask.PARAMS_FILE)
    assert p.group_by == "template"
    raw_dir = REPO / p.raw_dir
    loaded = prepare.load_files(prepare.raw_files(raw_dir), p.format, p.system_prompt,
                                p.text_split, columns.from_params(p, raw_dir), p.group_by)
    splits = prepare.split(prepare.deduplicate(loaded.examples)[0], p.val_ratio, p.test_ratio,
                           p.seed, p.group_by)
    split_of_template, split_of_ticket = {}, {}
    for name, examples in splits.items():
        for example in examples:
            ticket = example["messages"][-2]["content"].split("\n\n", 1)[1]  # instruction, input
            assert split_of_template.setdefault(example["group"], name) == name, example["group"]
            assert split_of_ticket.setdefault(ticket, name) == name, ticket
    assert len(split_of_ticket) == 160
    assert multitask.count_by_task(splits) == {task: {"train": 111, "val": 19, "test": 30}
                                               for task in ("triage", "sentiment")}


def dvc_stage_names(workdir: Path) -> list[str]:
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    result = subprocess.run(["dvc", "stage", "list", "--name-only", "multitask/dvc.yaml"],
                            cwd=workdir, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    return result.stdout.split()


def test_matrix_stage_expands_to_one_train_stage_per_listed_task(tmp_path):
    (tmp_path / "multitask").mkdir()
    for name in ("dvc.yaml", "params.yaml"):
        shutil.copy(REPO / "multitask" / name, tmp_path / "multitask" / name)
    (tmp_path / ".dvc").mkdir()  # a DVC repository without Git (what `dvc init --no-scm` makes)
    (tmp_path / ".dvc/config").write_text("[core]\n    no_scm = True\n")
    names = dvc_stage_names(tmp_path)
    assert names == ["multitask/dvc.yaml:prepare_tasks", "multitask/dvc.yaml:train_task@triage",
                     "multitask/dvc.yaml:train_task@sentiment", "multitask/dvc.yaml:evaluate_tasks"]

    stage = yaml.safe_load((tmp_path / "multitask/dvc.yaml").read_text())["stages"]["train_task"]
    assert stage["matrix"] == {"task": "${multitask.tasks}"}  # the list in params.yaml
    assert stage["cmd"] == ("python stages/train_task.py ${item.task} multitask/params.yaml "
                            "models/base multitask/data/prepared models/adapters/${item.task} "
                            "models/task_checkpoints/${item.task} multitask/metrics/train/${item.task}")
    # cache: false, so `dvc checkout` / `dvc exp apply` of the main pipeline work in a
    # repo where this pipeline was never built.
    assert {"models/adapters/${item.task}": {"cache": False}} in stage["outs"]
