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
    params = {"evaluate": {"max_new_tokens": 8, "batch_size": 2, "heldout": heldout,
                           "general": ""}}
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
    assert list(metrics) == ["base", "tuned", "delta", "method", "examples", "scorer", "heldout"]
    assert metrics["scorer"] == "auto"
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
    assert (as_test / "metrics/general_answers.jsonl").read_text() == ""  # evaluate.general ""


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


# A scorer plugin of the user's (configs/scorers/), and a general-ability file of three prompts.
PLUGIN = """
def score(answer, reference, record):
    assert record["source"].startswith("data/raw/t.jsonl:")
    return {"has_brace": float("{" in answer), "no_brace": float("{" not in answer)}


def out_of_range(answer, reference, record):
    return {"too_much": 1.5}
"""
GENERAL = [{"id": "if-1", "category": "instruction_following", "prompt": "Say hi in lower case.",
            "check": {"type": "lowercase"}},
           {"id": "fa-1", "category": "facts", "prompt": "Capital of France? One word.",
            "check": {"type": "answer_in", "answers": ["Paris"]}},
           {"id": "ar-1", "category": "arithmetic", "prompt": "2 + 2? The number only.",
            "check": {"type": "number", "value": 4}}]


def with_plugin(workspace_factory, **evaluate) -> Path:
    workdir = workspace_factory("")
    (workdir / "configs/scorers").mkdir(parents=True)
    (workdir / "configs/scorers/brace.py").write_text(PLUGIN)
    files.write_jsonl_atomic(workdir / "data/general/mini.jsonl", GENERAL)
    params = yaml.safe_load((workdir / "params.yaml").read_text())
    params["evaluate"].update(evaluate)
    params["align"] = {"reward": {"has_brace": 1.0}}
    (workdir / "params.yaml").write_text(yaml.safe_dump(params))
    return workdir


def test_a_scorer_plugin_is_the_metrics_and_the_reward_and_general_is_scored(workspace_factory):
    workdir = with_plugin(workspace_factory, scorer="configs/scorers/brace.py:score",
                          general="data/general/mini.jsonl")
    result = run_evaluate(workdir)
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((workdir / "metrics/eval.json").read_text())
    assert metrics["scorer"] == "configs/scorers/brace.py:score"
    # The plugin's names, averaged; no JSON checks of auto's; the reward weighs the plugin's.
    assert set(metrics["tuned"]) == {"loss", "perplexity", "has_brace", "no_brace", "rougeL",
                                     "chrf", "reward"}
    for model in ("base", "tuned"):
        assert metrics[model]["has_brace"] + metrics[model]["no_brace"] == pytest.approx(1.0)
        assert metrics[model]["reward"] == metrics[model]["has_brace"]
    answers = files.read_jsonl(workdir / "metrics/samples.jsonl")
    assert metrics["tuned"]["has_brace"] == pytest.approx(
        sum("{" in row["tuned"] for row in answers) / len(answers), abs=1e-6)
    # The general-ability block: each category's share for base and tuned, paired changes.
    general = metrics["general"]
    assert general["examples"] == 3 and general["engine"] == "transformers"
    assert general["counts"] == {"instruction_following": 1, "facts": 1, "arithmetic": 1}
    assert list(general["base"]) == ["instruction_following", "facts", "arithmetic", "all"]
    rows = files.read_jsonl(workdir / "metrics/general_answers.jsonl")
    assert [row["id"] for row in rows] == ["if-1", "fa-1", "ar-1"]
    for model in ("base", "tuned"):
        assert general[model]["all"] == pytest.approx(
            sum(row[f"{model}_passed"] for row in rows) / 3, abs=1e-6)
    assert "evaluate general: all " in result.stdout


def test_a_scorer_out_of_range_or_missing_is_one_line(workspace_factory):
    workdir = with_plugin(workspace_factory, scorer="configs/scorers/brace.py:out_of_range")
    result = run_evaluate(workdir)
    assert "Traceback" not in result.stderr  # progress bars come before the one line
    assert (result.returncode, result.stderr.strip().splitlines()[-1]) == (1, (
        "evaluate: error: evaluate.scorer configs/scorers/brace.py:out_of_range returned "
        "'too_much' = 1.5 for data/raw/t.jsonl:1, outside 0..1"))
    assert not (workdir / "metrics").exists()
    params = yaml.safe_load((workdir / "params.yaml").read_text())
    params["evaluate"]["scorer"] = "configs/scorers/brace.py:nope"
    (workdir / "params.yaml").write_text(yaml.safe_dump(params))
    result = run_evaluate(workdir)
    assert (result.returncode, result.stderr.strip()) == (1, (
        "evaluate: error: evaluate.scorer: configs/scorers/brace.py has no function 'nope' "
        "(it has: out_of_range, score)"))


def test_a_heldout_file_of_another_task_is_one_line(workspace_factory):
    workdir = workspace_factory("data/heldout/chat.jsonl")
    files.write_jsonl_atomic(workdir / "data/heldout/chat.jsonl", [
        {"instruction": "Explain machine learning in simple terms.",
         "output": "Machine learning lets computers learn patterns from examples."}])
    result = run_evaluate(workdir)
    assert (result.returncode, result.stderr.strip()) == (1, (
        "evaluate: error: evaluate.heldout: data/heldout/chat.jsonl's answers are free text, "
        "the test split's JSON objects with category: it is another task (give a held-out "
        "file of this data's task, or \"\" for none)"))
