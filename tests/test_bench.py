"""`tunelab bench` on a tiny random Llama: each contender runs in its own process, tokens
are counted without padding, each contender changes what it says, and the derived
numbers (spread, ratios, MFU, compile break-even) follow from the raw ones."""

import json
import statistics
import subprocess
import sys
from datetime import datetime

import pytest
import torch

from tunelab.bench import contenders, training_speed
from tunelab.cli import app as cli
from tunelab.data import encoding
from tunelab.train import run_support
from tunelab.util import files

from test_training import color_examples  # noqa: E402  (tests/ is on sys.path under pytest)

STEPS, WARMUP, REPEATS, MAX_LENGTH = 1, 1, 2, 64
# One batch holds the whole data set (8 examples), so every step trains on the same
# examples whatever the sampler's order, and the token count can be worked out by hand.
BATCH_SIZE = 8
# Padded to max_length / padded to the longest / padding-free: three kinds of batch.
RUN = ("baseline", "tunelab_before", "tunelab")


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
                                      contenders=RUN, steps=STEPS, warmup=WARMUP,
                                      repeats=REPEATS, batch_size=BATCH_SIZE,
                                      max_length=MAX_LENGTH, matmul_size=256)
    return work, examples, result


def test_every_contender_reports_its_windows_and_their_spread(bench_run, tiny_base_dir):
    work, _, result = bench_run
    assert files.read_json(work / "bench.json") == json.loads(json.dumps(result))
    assert list(result["contenders"]) == list(RUN)
    assert result["settings"] == {
        "base_dir": str(tiny_base_dir), "train_file": str(work / "train.jsonl"),
        "train_file_sha256": run_support.file_sha256(work / "train.jsonl"), "contenders": list(RUN),
        "steps": STEPS, "warmup": WARMUP, "repeats": REPEATS, "batch_size": BATCH_SIZE,
        "max_length": MAX_LENGTH}
    assert datetime.fromisoformat(result["date"]).tzinfo is not None
    assert result["load_average_1min"]["before"] == result["machine"]["load_average_1min"]
    assert result["load_average_1min"]["after"] >= 0
    assert set(result["matmul_tflops"]) == {"fp32"} and result["matmul_tflops"]["fp32"] > 0
    for name, row in result["contenders"].items():
        assert "error" not in row, (name, row)
        assert row["precision"] == row["config"]["precision"] == "fp32"
        windows = row["windows"]
        assert len(windows) == REPEATS and all(w["steps"] == STEPS for w in windows)
        assert all(w["seconds"] > 0 for w in windows)
        rates = [w["tokens"] / w["seconds"] for w in windows]
        assert [w["tokens_per_s"] for w in windows] == [round(rate, 2) for rate in rates]
        spread = row["tokens_per_s"]
        assert spread == {"min": round(min(rates), 2), "median": round(statistics.median(rates), 2),
                          "max": round(max(rates), 2)}
        assert spread["min"] <= spread["median"] <= spread["max"]
        assert row["s_per_step"] == round(statistics.median(w["seconds"] / STEPS
                                                            for w in windows), 3)
        assert len(row["step_seconds"]) == WARMUP + REPEATS * STEPS
        assert row["warmup_step_seconds"] == row["step_seconds"][:WARMUP]
        assert row["peak_rss_gib"] > 0.05
        assert row["achieved_tflops"] == pytest.approx(
            spread["median"] * row["flops_per_token"] / 1e12, rel=1e-3)
        assert row["mfu"] == pytest.approx(row["achieved_tflops"] / row["matmul_tflops"],
                                           rel=1e-3, abs=1e-4)
        assert row["mfu"] > 0
    rows = result["contenders"]
    assert rows["baseline"]["x_baseline"] == 1.0
    assert rows["tunelab_before"]["x_tunelab_before"] == 1.0
    median = {name: rows[name]["tokens_per_s"]["median"] for name in RUN}
    assert rows["tunelab"]["x_baseline"] == round(median["tunelab"] / median["baseline"], 3)
    assert rows["tunelab"]["x_tunelab_before"] == round(
        median["tunelab"] / median["tunelab_before"], 3)


def test_effective_tokens_are_the_real_tokens_of_the_batches(bench_run, tokenizer):
    _, examples, result = bench_run
    encoded = [encoding.encode(tokenizer, example, MAX_LENGTH) for example in examples]
    lengths = [len(e.input_ids) for e in encoded]
    answer_tokens = sum(e.loss_tokens for e in encoded)
    # Padding to MAX_LENGTH or to the longest would count more than the real tokens.
    assert len(set(lengths)) == len(lengths) and max(lengths) < MAX_LENGTH
    real = STEPS * sum(lengths)
    # (positions the model computes, padding included; positions in the loss)
    expected = {"baseline": (STEPS * BATCH_SIZE * MAX_LENGTH, real),  # loss on every real token
                "tunelab_before": (STEPS * BATCH_SIZE * max(lengths), STEPS * answer_tokens),
                "tunelab": (real, STEPS * answer_tokens)}  # one row, no padding
    for name, (positions, label_tokens) in expected.items():
        row = result["contenders"][name]
        for window in row["windows"]:
            assert (window["tokens"], window["positions"], window["label_tokens"]) == \
                (real, positions, label_tokens), name
        assert row["padding_share"] == round(1 - real / positions, 4), name
    assert result["contenders"]["tunelab"]["padding_share"] == 0


def test_the_contenders_train_as_their_configs_say(bench_run):
    _, _, result = bench_run
    configs = {name: row["config"] for name, row in result["contenders"].items()}
    switches_off = {"padding_free": False, "answer_only_logits": False,
                    "group_by_length": False, "compile": False, "packing": False}
    assert configs["baseline"] == {"trainer": "transformers.Trainer", "method": "lora",
                                   "precision": "fp32", "padding": "max_length",
                                   "lora_dropout": 0.05, "loss": "every token", **switches_off}
    assert configs["tunelab_before"] == {"trainer": "tunelab", "method": "lora",
                                         "precision": "fp32", "padding": "longest",
                                         "lora_dropout": 0.0, "loss": "answer tokens",
                                         **switches_off}
    assert configs["tunelab"] == {**configs["tunelab_before"], "padding": "none",
                                  "padding_free": True, "answer_only_logits": True}


# What each contender changes against its reference: one thing (padding_free also
# changes the padding, which is what it is for).
CHANGES = {
    "baseline_dynamic_padding": ("baseline", {"padding"}),
    "baseline_dropout0": ("baseline", {"lora_dropout"}),
    "tunelab_before+answer_only_logits": ("tunelab_before", {"answer_only_logits"}),
    "tunelab_before+padding_free": ("tunelab_before", {"padding_free", "padding"}),
    "tunelab_before+group_by_length": ("tunelab_before", {"group_by_length"}),
    "tunelab": ("tunelab_before", {"padding_free", "padding", "answer_only_logits"}),
    "tunelab+group_by_length": ("tunelab", {"group_by_length"}),
    "tunelab+compile": ("tunelab", {"compile"}),
    "tunelab+bf16": ("tunelab", {"precision"}),
    "qlora": ("tunelab", {"method"}),
    "full": ("tunelab", {"method"}),
    "packing": ("tunelab", {"packing"}),
}


def test_each_contender_changes_one_thing_against_its_reference():
    assert set(contenders.CONTENDERS) == set(CHANGES) | {"baseline", "tunelab_before"}
    configs = {name: contenders.config(name, contenders.train_params(name, 7, 8, 256))
               for name in contenders.CONTENDERS}
    for name, (reference, changed) in CHANGES.items():
        differs = {key for key in configs[name] if configs[name][key] != configs[reference][key]}
        assert differs == changed, name
    assert configs["tunelab+bf16"]["precision"] == "bf16"
    assert (configs["qlora"]["method"], configs["full"]["method"]) == ("qlora", "full")
    assert [name for name, c in contenders.CONTENDERS.items() if c.needs_native_bf16] == \
        ["tunelab+bf16"]
    p = contenders.train_params("tunelab", 7, 8, 256)
    assert (p.max_steps, p.batch_size, p.max_length, p.eval_steps, p.save_steps,
            p.logging_steps) == (7, 8, 256, 0, 0, 7)


def raw(window_seconds: list[float], first_step: float = 12.0, tokens: int = 1000) -> dict:
    """What a contender's process reports, with 2-step windows of ``tokens`` real tokens."""
    return {"precision": "fp32", "config": {},
            "windows": [{"steps": 2, "seconds": s, "tokens": tokens, "positions": 1250,
                         "label_tokens": 300} for s in window_seconds],
            "warmup_step_seconds": [first_step], "step_seconds": [first_step],
            "flops_per_token": 10**9, "matmul_parameters": 2 * 10**8,
            "trainable_parameters": 10**6, "peak_rss_gib": 1.5}


def test_summarize_spread_s_per_step_and_mfu_on_handcrafted_numbers():
    row = training_speed.summarize(raw([10.0, 8.0, 20.0]), {"fp32": 0.2})
    assert [w["tokens_per_s"] for w in row["windows"]] == [100.0, 125.0, 50.0]
    assert row["tokens_per_s"] == {"min": 50.0, "median": 100.0, "max": 125.0}
    assert row["s_per_step"] == 5.0  # median of 5, 4 and 10
    assert row["padding_share"] == 0.2  # 3000 real of 3750 positions
    assert row["achieved_tflops"] == 0.1  # 100 tokens/s x 1e9 FLOPs
    assert (row["matmul_tflops"], row["mfu"]) == (0.2, 0.5)
    assert training_speed.summarize({"error": "boom"}, {}) == {"error": "boom"}
    assert training_speed.summarize({"skipped": "why"}, {}) == {"skipped": "why"}


def test_speedup_and_compile_break_even_on_handcrafted_numbers():
    rows = {"baseline": {"tokens_per_s": {"median": 80.0}},
            "tunelab": {"tokens_per_s": {"median": 200.0}}, "broken": {"error": "boom"}}
    assert training_speed.speedup(rows, "tunelab", "baseline") == 2.5
    assert training_speed.speedup(rows, "broken", "baseline") is None
    assert training_speed.speedup(rows, "tunelab", "tunelab_before") is None
    eager = {"warmup_step_seconds": [12.0], "s_per_step": 10.0}
    compiled = {"warmup_step_seconds": [252.0], "s_per_step": 8.0}
    # 240 s of compiling, repaid at 2 s a step
    assert training_speed.compile_cost(eager, compiled) == {"compile_seconds": 240.0,
                                                            "break_even_steps": 120.0}
    slower = {**compiled, "s_per_step": 10.5}
    assert training_speed.compile_cost(eager, slower) == {"compile_seconds": 240.0,
                                                          "break_even_steps": None}
    assert training_speed.compile_cost({}, compiled) == {"compile_seconds": None,
                                                         "break_even_steps": None}


@pytest.fixture
def fake_contenders(monkeypatch):
    """run_contender without processes: tunelab_before fails, the rest report ``raw``
    numbers; no native bf16; a fixed matmul rate. Returns the calls made."""
    calls = []
    reports = {"baseline": raw([20.0, 20.0, 20.0]), "tunelab": raw([10.0, 9.0, 11.0]),
               "tunelab+compile": raw([8.0, 8.0, 8.0], first_step=252.0)}

    def run_contender(name, base_dir, train_file, steps, warmup, repeats, batch_size,
                      max_length):
        calls.append((name, steps, warmup, repeats, batch_size, max_length))
        if name == "tunelab_before":
            return {"error": "RuntimeError: out of memory"}
        return reports[name]

    monkeypatch.setattr(training_speed, "run_contender", run_contender)
    monkeypatch.setattr(training_speed, "matmul_tflops", lambda precision, size=None: 0.1)
    monkeypatch.setattr(run_support, "cpu_supports_bf16", lambda: False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    return calls


def test_a_failing_contender_is_recorded_and_the_others_still_run(fake_contenders, tmp_path):
    train_file = tmp_path / "train.jsonl"
    files.write_jsonl_atomic(train_file, color_examples(1))
    names = ("baseline", "tunelab_before", "tunelab+bf16", "tunelab", "tunelab+compile")
    result = training_speed.run_bench(tmp_path, train_file, tmp_path / "bench.json",
                                      contenders=names)
    assert [call[0] for call in fake_contenders] == ["baseline", "tunelab_before", "tunelab",
                                                     "tunelab+compile"]  # bf16: not started
    rows = result["contenders"]
    assert list(rows) == list(names)
    assert rows["tunelab_before"] == {"error": "RuntimeError: out of memory"}
    assert rows["tunelab+bf16"] == {"skipped": "no native bf16 on this CPU"}
    assert rows["tunelab"]["tokens_per_s"]["median"] == 100.0
    assert (rows["tunelab"]["x_baseline"], rows["tunelab"]["x_tunelab_before"]) == (2.0, None)
    # 240 s more in the first step than tunelab's; 5 s/step against 4 s/step
    assert (rows["tunelab+compile"]["compile_seconds"],
            rows["tunelab+compile"]["break_even_steps"]) == (240.0, 240.0)
    assert files.read_json(tmp_path / "bench.json") == json.loads(json.dumps(result))


def test_cli_runs_every_contender_with_the_defaults_and_exits_1_on_a_failure(
        fake_contenders, tmp_path, capsys):
    (tmp_path / "base").mkdir()
    (tmp_path / "base" / "config.json").write_text("{}")
    files.write_jsonl_atomic(tmp_path / "train.jsonl", color_examples(1))
    code = cli.main(["bench", "--contenders", "baseline,tunelab_before", "--base",
                     str(tmp_path / "base"), "--data", str(tmp_path / "train.jsonl"),
                     "--output", str(tmp_path / "bench.json")])
    out, _ = capsys.readouterr()
    assert code == 1 and out.endswith(f"wrote {tmp_path / 'bench.json'}\n")
    # --steps 2, --warmup 1, --repeats 3, --batch-size 8, --max-length 256
    assert fake_contenders == [("baseline", 2, 1, 3, 8, 256), ("tunelab_before", 2, 1, 3, 8, 256)]
    assert files.read_json(tmp_path / "bench.json")["contenders"]["tunelab_before"] == {
        "error": "RuntimeError: out of memory"}
    args = cli.build_parser().parse_args(["bench"])
    assert args.contenders is None  # the handler then runs every contender, in table order


def test_a_contender_that_fails_in_its_process_reports_the_last_error_line(tmp_path):
    row = training_speed.run_contender("no_such_contender", tmp_path,
                                       tmp_path / "train.jsonl", 1, 1, 1, 8, 64)
    assert row == {"error": "KeyError: 'no_such_contender'"}


class TokensSeen:  # the one field of transformers' TrainerState that StepTimer reads
    num_input_tokens_seen = 0


def timed(timer: training_speed.StepTimer) -> training_speed.StepTimer:
    """Five steps of 1..5 s starting every 10 s, with 10, 20, .. 50 tokens."""
    clock = iter([0, 1, 10, 12, 20, 23, 30, 34, 40, 45])
    timer.clock = lambda: next(clock)
    state = TokensSeen()
    for step in range(5):
        timer.on_step_begin(None, state, None)
        state.num_input_tokens_seen += 10 * (step + 1)
        timer.on_step_end(None, state, None)
    return timer


def test_step_timer_windows_and_its_single_window_api():
    windows = timed(training_speed.StepTimer(warmup_steps=1, window_steps=2))
    assert windows.step_seconds == [1, 2, 3, 4, 5]
    assert windows.windows() == [{"first_step": 1, "steps": 2, "seconds": 13, "tokens": 50},
                                 {"first_step": 3, "steps": 2, "seconds": 15, "tokens": 90}]
    assert (windows.seconds, windows.tokens, windows.steps) == (28, 140, 4)
    # StepTimer(warmup_steps): one window from the first timed step's start to the last's end
    single = timed(training_speed.StepTimer(1))
    assert (single.seconds, single.tokens, single.steps) == (35, 140, 4)
    assert timed(training_speed.StepTimer(1, window_steps=3)).windows() == [
        {"first_step": 1, "steps": 3, "seconds": 24, "tokens": 90}]  # the 5th step: no window


def test_batch_shapes_counts_positions_and_labels_and_passes_the_batch_on():
    batch = {"input_ids": torch.zeros(2, 5, dtype=torch.long),
             "labels": torch.tensor([[-100, 1, 2, -100, -100], [5, -100, -100, -100, -100]])}
    shapes = training_speed.BatchShapes(lambda features: batch)
    assert shapes([{}, {}]) is batch
    assert shapes.batches == [{"positions": 10, "label_tokens": 3}]


def test_cli_without_prepared_data_says_what_to_run(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code = cli.main(["bench"])
    out, err = capsys.readouterr()
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and "run `dvc repro prepare` first" in err


def test_cli_rejects_an_unknown_contender(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code = cli.main(["bench", "--contenders", "tunelab,dora"])
    _, err = capsys.readouterr()
    assert code == 2 and err.count("\n") == 1
    assert err.startswith("tunelab bench: error: --contenders: dora: choose from baseline, ")


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
    assert result["machine"]["cpu_native_bf16"] == run_support.cpu_supports_bf16()
    assert set(result["machine"]["versions"]) == {"torch", "transformers", "trl", "peft"}
    assert result["machine"]["versions"]["torch"] == torch.__version__
