"""`tunelab bench` on a tiny random Llama: every contender runs, tokens are counted
without padding, and the derived numbers hang together."""

import json
import subprocess
import sys

import pytest
import torch

from tunelab.bench import training_speed
from tunelab.cli import app as cli
from tunelab.data import encoding
from tunelab.train import training
from tunelab.util import files

from test_training import color_examples  # noqa: E402  (tests/ is on sys.path under pytest)

STEPS, WARMUP, MAX_LENGTH = 2, 1, 64
# One batch holds the whole data set (8 examples), so every step trains on the same
# examples whatever the sampler's order, and the token count can be worked out by hand.
BATCH_SIZE = 8


def examples_of_different_lengths() -> list[dict]:
    """The 8 colour questions, the i-th asked with i extra words, so padding shows."""
    examples = color_examples(1)
    for extra_words, example in enumerate(examples):
        question = example["messages"][0]
        question["content"] = "please " * extra_words + question["content"]
    return examples


@pytest.fixture(scope="module")
def bench_run(tiny_base_dir, tmp_path_factory):
    work = tmp_path_factory.mktemp("bench")
    examples = examples_of_different_lengths()
    assert len(examples) == BATCH_SIZE
    files.write_jsonl_atomic(work / "train.jsonl", examples)
    result = training_speed.run_bench(tiny_base_dir, work / "train.jsonl", work / "bench.json",
                             methods=("lora", "lora_packed", "full", "baseline"), steps=STEPS, warmup=WARMUP,
                             batch_size=BATCH_SIZE, max_length=MAX_LENGTH, matmul_size=256)
    return work, examples, result


def test_every_contender_reports_its_measurements(bench_run):
    work, _, result = bench_run
    assert files.read_json(work / "bench.json") == json.loads(json.dumps(result))
    assert set(result["contenders"]) == {"lora", "lora_packed", "full", "baseline"}
    assert result["machine"]["cpu_cores"] >= 1 and result["machine"]["torch_threads"] >= 1
    tunelab_precision = training.resolve_precision("auto")  # fp32 on a CPU without bf16
    assert set(result["matmul_tflops"]) == {tunelab_precision, "fp32"}
    assert all(rate > 0 for rate in result["matmul_tflops"].values())
    for name, row in result["contenders"].items():
        assert "error" not in row, (name, row)
        assert row["precision"] == ("fp32" if name == "baseline" else tunelab_precision)
        assert row["steps"] == STEPS
        assert row["seconds"] > 0 and row["tokens_per_s"] > 0
        assert row["peak_rss_gib"] > 0.05
        assert 0 < row["mfu"] < 5  # a sanity bound: tiny matmuls on a busy box time noisily
        assert row["achieved_tflops"] == pytest.approx(
            row["tokens_per_s"] * row["flops_per_token"] / 1e12, rel=1e-3)
    lora, baseline = result["contenders"]["lora"], result["contenders"]["baseline"]
    assert result["lora_vs_baseline"] == pytest.approx(
        lora["tokens_per_s"] / baseline["tokens_per_s"], abs=0.01)


def test_effective_tokens_are_the_real_tokens_of_the_timed_batches(bench_run, tokenizer):
    _, examples, result = bench_run
    lengths = [len(encoding.encode(tokenizer, example, MAX_LENGTH).input_ids)
               for example in examples]
    # tunelab pads each batch to its longest example, the baseline to MAX_LENGTH: both
    # would count more than the real tokens if they counted padding.
    assert len(set(lengths)) == len(lengths) and max(lengths) < MAX_LENGTH
    # lora_packed: the 8 examples fill fewer than 8 rows, so each step is the whole set too.
    for name in ("lora", "lora_packed", "full", "baseline"):
        assert result["contenders"][name]["effective_tokens"] == STEPS * sum(lengths), name


def test_flops_per_token_follow_what_trains(bench_run):
    _, _, result = bench_run
    lora, full = result["contenders"]["lora"], result["contenders"]["full"]
    # full: forward, input gradients and weight gradients through every Linear weight.
    assert full["flops_per_token"] == 6 * full["matmul_parameters"]
    # lora: the frozen base costs 4 per weight, the adapter's small matrices 6.
    adapter = lora["matmul_parameters"] - full["matmul_parameters"]
    assert adapter > 0
    assert lora["flops_per_token"] == 4 * full["matmul_parameters"] + 6 * adapter
    assert result["contenders"]["baseline"]["flops_per_token"] == lora["flops_per_token"]
    assert result["contenders"]["lora_packed"]["flops_per_token"] == lora["flops_per_token"]


def test_cli_without_prepared_data_says_what_to_run(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code = cli.main(["bench"])
    out, err = capsys.readouterr()
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and "run `dvc repro prepare` first" in err


def test_cli_rejects_an_unknown_method(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code = cli.main(["bench", "--methods", "lora,dora"])
    _, err = capsys.readouterr()
    assert code == 2 and "dora" in err and err.count("\n") == 1


def test_machine_info_lives_in_util_and_pulls_in_no_benchmark():
    # The train stage records metrics/env.json through tunelab.util.machine: importing it
    # must not import the benchmark (or torch, which collect imports only when called).
    probe = ("import sys, tunelab.util.machine; "
             "print(sorted(m for m in sys.modules if m.startswith('tunelab')), 'torch' in sys.modules)")
    shown = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert shown.stdout.strip() == "['tunelab', 'tunelab.util', 'tunelab.util.machine'] False"
    assert not hasattr(training_speed, "machine_info") and not hasattr(training_speed, "cpu_model")


def test_bench_machine_block_has_the_keys_bench_json_always_had(bench_run):
    _, _, result = bench_run
    assert set(result["machine"]) == {"cpu", "cpu_cores", "torch_threads", "cpu_native_bf16",
                                      "cuda_device", "load_average_1min", "versions"}
    assert result["machine"]["cpu_native_bf16"] == training.cpu_supports_bf16()
    assert set(result["machine"]["versions"]) == {"torch", "transformers", "trl", "peft"}
    assert result["machine"]["versions"]["torch"] == torch.__version__
