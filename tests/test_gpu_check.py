"""tunelab/bench/gpu_check.py: tunelab's own trainer on a random Llama, here the tiny one on
CPU (the 8B run needs a GPU: docs/gpu.md)."""

import json
import math
import sys

import pytest
import torch

from tunelab.bench import gpu_check
from tunelab.errors import ModelSourceError, TrainingError
from tunelab.train import speedups, training

STEPS, WARMUP = 2, 1
ON_GPU = torch.cuda.is_available()
TORCHTUNE_TARGETS = ["q_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
# LoRA r 8 on the tiny Llama's q (64->64), v (64->32), o (64->64), gate and up (64->256) and
# down (256->64): 8 x (in + out) each, 10,496 per layer, 2 layers.
TINY_LORA_PARAMS = 20992


@pytest.fixture(scope="module")
def tiny_check(tokenizer_dir, tmp_path_factory):
    """(report, its JSON file, [(params, peft_config, trainer)] from training.trainer_for) of
    `run_gpu_check --tiny` for lora and qlora, with a spy on training.trainer_for."""
    built = []
    real_trainer_for = training.trainer_for

    def spy(p, model, peft_config, *args, **kwargs):
        trainer = real_trainer_for(p, model, peft_config, *args, **kwargs)
        built.append((p, peft_config, trainer))
        return trainer

    output = tmp_path_factory.mktemp("gpu_check") / "report.json"
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(training, "trainer_for", spy)
        report = gpu_check.run_gpu_check(["lora", "qlora"], STEPS, WARMUP, tokenizer_dir, output,
                                         tiny=True)
    return report, output, built


def test_each_method_trains_in_the_trainer_that_training_trainer_for_builds(tiny_check):
    from trl import SFTTrainer

    report, _, built = tiny_check
    assert [p.method for p, _, _ in built] == ["lora", "qlora"]
    for row, (p, peft_config, trainer) in zip(report["results"], built):
        assert isinstance(trainer, SFTTrainer)
        assert row["trainer"] == f"{type(trainer).__module__}.{type(trainer).__qualname__}"
        # torchtune's llama3/8B_lora settings, on tunelab's padding-free path
        assert (p.lora.r, p.lora.alpha, p.lora.dropout, p.lora.target_modules) == \
            (8, 16, 0.0, TORCHTUNE_TARGETS)
        assert (p.learning_rate, p.weight_decay, p.batch_size, p.max_length) == \
            (3e-4, 0.01, 2, gpu_check.TINY_MAX_LENGTH)
        assert (p.precision, p.gradient_checkpointing, p.padding_free) == ("bf16", True, True)
        assert (p.max_steps, p.eval_steps, p.save_steps) == (WARMUP + STEPS, 0, 0)
        assert (peft_config.r, peft_config.lora_alpha) == (8, 16)
        assert set(peft_config.target_modules) == set(TORCHTUNE_TARGETS)
        assert row["attn_implementation"] == speedups.VARLEN_SDPA


def test_tiny_check_times_every_token_of_the_timed_steps(tiny_check):
    report, _, _ = tiny_check
    rows = {row["method"]: row for row in report["results"]}
    assert list(rows) == ["lora", "qlora"]
    for row in rows.values():
        assert row["error"] is None and row["skipped"] is None
        assert row["timed_steps"] == STEPS and len(row["step_seconds"]) == STEPS
        # padding-free batches of 2 rows x max_length, every token counted by the trainer
        assert row["tokens"] == STEPS * 2 * gpu_check.TINY_MAX_LENGTH
        assert row["tokens_per_s"] == pytest.approx(row["tokens"] / row["seconds"], rel=1e-2)
        assert row["trainable_params"] == TINY_LORA_PARAMS
        # random weights at std 0.02 give near-uniform logits: the mean loss is ln(vocab)
        assert row["final_loss"] == pytest.approx(math.log(1000), abs=0.1)
        if not ON_GPU:  # torch.cuda's memory counters only
            assert [row[key] for key in ("peak_allocated_gib", "peak_reserved_gib",
                                         "weights_gib", "ready_gib")] == [None] * 4
    # QLoRA really trains over 4-bit layers, LoRA over plain ones.
    assert rows["lora"]["lora_layer_type"] == "peft.tuners.lora.layer.Linear over Linear"
    assert rows["qlora"]["lora_layer_type"] == "peft.tuners.lora.bnb.Linear4bit over Linear4bit"


def test_tiny_report_is_written_with_the_peers_figures_and_no_verdicts(tiny_check):
    report, output, _ = tiny_check
    assert json.loads(output.read_text()) == report
    assert report["code"] == gpu_check.CODE and "trainer_for" in report["code"]
    assert (report["tiny"], report["batch_size"], report["max_length"]) == (True, 2, 128)
    assert report["model_shape"]["vocab_size"] == 1000
    assert report["train_params"]["lora"]["r"] == 8 and "method" not in report["train_params"]
    assert report["torchtune_rtx4090"]["lora"] == {"tokens_per_s": 3083, "peak_gib": 16.2}
    assert report["torchtune_rtx4090"]["qlora"] == {"tokens_per_s": 2413, "peak_gib": 7.4}
    assert report["unsloth_claims"]["source"].startswith("https://github.com/unslothai/unsloth")
    assert report["unsloth_claims"]["llama_3_1_8b"]["speed"] == "2x"
    # a tiny model's speed says nothing about the 8B targets
    assert report["targets"] == [
        {"target": "lora tokens/s >= 2 x torchtune RTX 4090", "value": None,
         "threshold": 6166.0, "met": None},
        {"target": "lora peak allocated GiB <= 1.1 x torchtune RTX 4090", "value": None,
         "threshold": 17.82, "met": None}]


def test_tables_show_each_method_beside_torchtune(tiny_check):
    from rich.console import Console

    console = Console(record=True, width=300)
    for table in gpu_check.tables(tiny_check[0]):
        console.print(table)
    text = console.export_text()
    assert "tunelab bench-gpu" in text
    assert "3083" in text and "2413" in text and "16.2" in text and "7.4" in text
    assert text.count("n/a") == 2


@pytest.mark.parametrize("tokens_per_s, peak, met", [(6166.0, 17.82, [True, True]),
                                                     (6165.9, 17.83, [False, False]),
                                                     (None, None, [None, None])])
def test_targets_are_met_at_the_thresholds_and_missed_past_them(tokens_per_s, peak, met):
    lora = gpu_check.MethodResult("lora", tokens_per_s=tokens_per_s, peak_allocated_gib=peak)
    assert [row["met"] for row in gpu_check.targets([lora], tiny=False)] == met
    assert [row["met"] for row in gpu_check.targets([lora], tiny=True)] == [None, None]
    assert [row["met"] for row in gpu_check.targets([], tiny=False)] == [None, None]


def test_the_8b_model_has_llama_3_8b_shapes():
    from transformers import LlamaForCausalLM

    with torch.device("meta"):
        model = LlamaForCausalLM(gpu_check.llama_config(tiny=False))
    assert sum(p.numel() for p in model.parameters()) == 8_030_261_248  # Llama-3-8B's count


def test_qlora_without_bitsandbytes_is_skipped_and_trains_nothing(tokenizer_dir, tmp_path,
                                                                  monkeypatch):
    monkeypatch.setitem(sys.modules, "bitsandbytes", None)  # as if not installed

    def no_trainer(*args, **kwargs):
        raise AssertionError("a skipped method built a trainer")

    monkeypatch.setattr(training, "trainer_for", no_trainer)
    report = gpu_check.run_gpu_check(["qlora"], 1, 1, tokenizer_dir, tmp_path / "r.json",
                                     tiny=True)
    [row] = report["results"]
    assert row["skipped"] == gpu_check.NO_BITSANDBYTES
    assert (row["error"], row["tokens_per_s"], row["trainer"]) == (None, None, None)


@pytest.mark.skipif(ON_GPU, reason="checks the refusal without a GPU")
def test_the_8b_check_refuses_to_run_without_a_gpu(tokenizer_dir, tmp_path):
    with pytest.raises(TrainingError, match=r"^the 8B GPU check needs a CUDA GPU and none is "
                       r"visible; --tiny runs the same code on a tiny model on CPU$"):
        gpu_check.run_gpu_check(["lora"], 1, 1, tokenizer_dir, tmp_path / "r.json")
    assert not (tmp_path / "r.json").exists()


def test_a_folder_without_a_tokenizer_is_one_clear_error(tmp_path):
    with pytest.raises(ModelSourceError, match=r"^.*/empty: no tokenizer_config\.json; give a "
                       r"tokenizer folder \(models/base after `dvc repro base`\)$"):
        gpu_check.run_gpu_check(["lora"], 1, 1, tmp_path / "empty", tmp_path / "r.json",
                                tiny=True)
    assert not (tmp_path / "r.json").exists()


def test_bench_gpu_rejects_an_unknown_method_before_any_work(capsys):
    from tunelab.cli.app import main

    assert main(["bench-gpu", "--tiny", "--methods", "lora,full"]) == 2
    assert capsys.readouterr().err == ("tunelab bench-gpu: error: --methods: full: "
                                       "choose from lora, qlora\n")
