"""stages/evaluate.py on a tiny seeded model: the held-out set (evaluate.heldout) is scored
like the test split, into metrics/eval.json "heldout", and leaves the test keys alone."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from conftest import run_stage, trained_workspace
from tunelab.data import prepare
from tunelab.util import files

INSTRUCTION = "Extract a JSON object with key category."
TEST = [{"messages": [{"role": "user", "content": f"{INSTRUCTION}\n\nTicket {i}: the app {what}."},
                      {"role": "assistant", "content": json.dumps({"category": category})}],
         "task": None, "source": f"data/raw/t.jsonl:{i}"}
        for i, (what, category) in enumerate([("crashes", "technical"), ("charged me twice", "billing"),
                                              ("never arrived", "shipping")], start=1)]
HELDOUT = [{"instruction": INSTRUCTION, "input": "> you wrote: fixed?\nno, still crashing",
            "output": json.dumps({"category": "technical"}), "style": "quoted reply"},
           {"instruction": INSTRUCTION, "input": "where is my parcel",
            "output": json.dumps({"category": "shipping"}), "style": "lowercase"}]


def make_workspace(root: Path, base_dir: Path, adapter_dir: Path, tokenizer, heldout: str) -> Path:
    trained_workspace(root, base_dir, adapter_dir, tokenizer)
    files.write_jsonl_atomic(root / "data/prepared/test.jsonl", TEST)
    files.write_jsonl_atomic(root / "data/heldout/tickets.jsonl", HELDOUT)
    params = {"evaluate": {"max_new_tokens": 8, "batch_size": 2, "heldout": heldout}}
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    return root


def run_evaluate(workdir: Path):
    return run_stage("evaluate", workdir, timeout=300)


@pytest.fixture(scope="module")
def workspace_factory(tiny_base_dir, make_tiny_adapter, tokenizer, tmp_path_factory):
    adapter = make_tiny_adapter("evaluate", r=4, seed=3)

    def make(heldout: str) -> Path:
        return make_workspace(tmp_path_factory.mktemp("evaluate"), tiny_base_dir, adapter,
                              tokenizer, heldout)
    return make


@pytest.fixture(scope="module")
def evaluated(workspace_factory):
    workdir = workspace_factory("data/heldout/tickets.jsonl")
    result = run_evaluate(workdir)
    assert result.returncode == 0, result.stderr[-3000:]
    return workdir, result


def test_heldout_is_a_key_beside_the_unchanged_test_keys(evaluated):
    workdir, result = evaluated
    metrics = json.loads((workdir / "metrics/eval.json").read_text())
    assert list(metrics) == ["base", "tuned", "delta", "method", "examples", "heldout"]
    assert (metrics["method"], metrics["examples"]) == ("lora", 3)
    heldout = metrics["heldout"]
    assert list(heldout) == ["base", "tuned", "delta", "examples"]
    assert heldout["examples"] == 2
    assert list(heldout["base"]) == list(heldout["tuned"]) == list(heldout["delta"]) == list(metrics["base"])
    assert heldout["delta"]["loss"] == pytest.approx(heldout["tuned"]["loss"] - heldout["base"]["loss"],
                                                     abs=2e-6)
    # samples.jsonl stays the test split's (the export stage compares against it).
    samples = files.read_jsonl(workdir / "metrics/samples.jsonl")
    assert [row["source"] for row in samples] == [e["source"] for e in TEST]
    assert "evaluate heldout: task_accuracy: base " in result.stdout


def test_heldout_scores_equal_those_of_the_same_examples_as_the_test_split(evaluated,
                                                                          workspace_factory):
    workdir, _ = evaluated
    heldout = json.loads((workdir / "metrics/eval.json").read_text())["heldout"]
    as_test = workspace_factory("")  # no held-out set; its examples are the test split instead
    files.write_jsonl_atomic(as_test / "data/prepared/test.jsonl",
                             prepare.load_file(as_test / "data/heldout/tickets.jsonl"))
    result = run_evaluate(as_test)
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((as_test / "metrics/eval.json").read_text())
    assert "heldout" not in metrics
    assert {key: metrics[key] for key in ("base", "tuned", "delta", "examples")} == heldout


def test_a_missing_heldout_file_is_one_line_naming_the_key(workspace_factory):
    workdir = workspace_factory("data/heldout/nope.jsonl")
    result = run_evaluate(workdir)
    assert result.returncode == 1
    assert result.stderr.strip() == ("evaluate: error: data/heldout/nope.jsonl: file not found "
                                     "(evaluate.heldout)")
    assert not (workdir / "metrics").exists()


def test_the_heldout_file_is_read_with_the_global_column_map(evaluated, workspace_factory):
    workdir, _ = evaluated
    heldout = json.loads((workdir / "metrics/eval.json").read_text())["heldout"]
    mapped = workspace_factory("data/heldout/renamed.jsonl")
    renamed = [{"task_text": row["instruction"], "ticket": row["input"], "answer": row["output"]}
               for row in HELDOUT]
    files.write_jsonl_atomic(mapped / "data/heldout/renamed.jsonl", renamed)
    params = yaml.safe_load((mapped / "params.yaml").read_text())
    params["prepare"] = {"columns": {"task_text": "instruction", "ticket": "input",
                                     "answer": "output"}}
    (mapped / "params.yaml").write_text(yaml.safe_dump(params))
    result = run_evaluate(mapped)
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads((mapped / "metrics/eval.json").read_text())["heldout"] == heldout
