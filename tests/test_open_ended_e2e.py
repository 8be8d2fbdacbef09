"""The issue's acceptance on open-ended data: a copy of this repo whose data/raw holds
alpaca records with paragraph answers (the kind the guide this project grew from uses),
`dvc repro judge` on the tiny model, and the embedded SmolLM2 GGUF as the judge. eval.json
then claims no accuracy (the auto scorer has none for long free text), holds the general-
ability block for base and tuned, and judge.json the judge's pairwise and rubric blocks.
The mechanism is tested, not the verdicts' quality."""

from __future__ import annotations

import json
import shutil

import pytest

from conftest import TINY_PIPELINE, copy_repo, run_tool
from tunelab.deploy import llama_runtime

pytestmark = pytest.mark.e2e

TOPICS = ["machine learning", "a database index", "photosynthesis", "compound interest",
          "a hash table", "the water cycle", "version control", "a neural network",
          "inflation", "recursion", "an API", "cloud computing", "encryption",
          "a compiler", "supply and demand", "the immune system", "a spreadsheet",
          "gravity", "an operating system", "a vaccine", "DNS", "a budget", "caching",
          "a unit test", "renewable energy", "a virtual machine", "an election",
          "a search engine", "plate tectonics", "a password manager"]
RECORDS = [{"instruction": f"Explain {topic} in simple terms.", "input": "",
            "output": f"In simple terms, {topic} is an idea that people use every day. It helps "
                      f"to think of {topic} as a tool with one clear job, and to learn it by "
                      f"looking at a few small, concrete examples first."}
           for topic in TOPICS]


@pytest.fixture(scope="module")
def open_ended_run(tmp_path_factory, tiny_base_dir):
    params = {**TINY_PIPELINE,
              "prepare": {"val_ratio": 0.1, "group_by": ""},  # alpaca rows have no template
              "evaluate": {**TINY_PIPELINE["evaluate"], "heldout": ""},
              "judge": {"model": "smollm2-135m-instruct", "max_examples": 2,
                        "max_new_tokens": 16, "criteria": ["correctness"], "threads": 1}}
    repo = copy_repo(tmp_path_factory.mktemp("open-ended") / "repo", params, tiny_base_dir)
    shutil.rmtree(repo / "data/raw")
    (repo / "data/raw").mkdir()
    (repo / "data/raw/alpaca.jsonl").write_text(
        "".join(json.dumps(record) + "\n" for record in RECORDS))
    run_tool(["git", "add", "-A"], repo)
    run_tool(["git", "commit", "-qm", "open-ended data"], repo)
    result = run_tool(["dvc", "repro", "judge"], repo)
    return repo, result


def test_eval_json_claims_no_accuracy_on_paragraph_answers(open_ended_run):
    repo, result = open_ended_run
    metrics = json.loads((repo / "metrics/eval.json").read_text())
    assert metrics["scorer"] == "auto"
    for model in ("base", "tuned"):
        assert set(metrics[model]) == {"loss", "perplexity", "rougeL", "chrf"}
    assert "heldout" not in metrics
    assert "task_accuracy" not in result.stdout


def test_the_general_ability_block_is_there_for_base_and_tuned(open_ended_run):
    repo, _ = open_ended_run
    general = json.loads((repo / "metrics/eval.json").read_text())["general"]
    assert general["examples"] == 110 and general["engine"] == "transformers"
    assert set(general) >= {"base", "tuned", "delta", "delta_low", "delta_high"}
    assert list(general["tuned"]) == ["instruction_following", "facts", "arithmetic", "all"]


def test_the_judge_block_with_the_embedded_gguf(open_ended_run):
    repo, _ = open_ended_run
    judge = json.loads((repo / "metrics/judge.json").read_text())
    assert (judge["model"], judge["engine"], judge["examples"]) == (
        "smollm2-135m-instruct", "llama.cpp", 2)
    assert judge["llama_cpp_cpu"] == llama_runtime.cpu_backend()  # the kernels it ran on
    pair = judge["tuned_vs_base"]
    assert pair["judgements"] + pair["unparseable"] == 4  # 2 examples x both orders
    assert set(judge["rubric"]) == {"base", "tuned"}
    verdicts = [json.loads(line) for line in
                (repo / "metrics/judge_verdicts.jsonl").read_text().splitlines()]
    assert len(verdicts) == judge["verdicts"] == 4 + 2 * 2  # pairwise + rubric per model
    assert sum(v["verdict"] is None for v in verdicts) == judge["unparseable"]
