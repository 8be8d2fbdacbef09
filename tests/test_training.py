"""Training on a tiny random-initialised Llama: real TRL + PEFT, seconds on CPU."""

import json

import pytest
import torch

from tunelab.config.params import GuardParams, LoraParams, TrainParams
from tunelab.errors import ParamsError
from tunelab.eval import evaluation
from tunelab.models import loading
from tunelab.train import run_support, training
from tunelab.util import files

# lr 3e-2 on a tiny random model: single grad-norm spikes of ~800x that clipping absorbs
# (the run still converges); the spike guard is tested in test_guards.py.
NO_SPIKE_GUARD = GuardParams(grad_norm_factor=0.0)

COLORS = {"apple": "red", "banana": "yellow", "grass": "green", "sky": "blue",
          "snow": "white", "coal": "black", "orange": "orange", "plum": "purple"}


def color_examples(repeat: int) -> list[dict]:
    rows = []
    for i in range(repeat):
        for thing, color in COLORS.items():
            rows.append({"messages": [{"role": "user", "content": f"Color of {thing}?"},
                                      {"role": "assistant", "content": color}],
                         "task": None, "source": f"colors.jsonl:{len(rows) + 1}"})
    return rows


@pytest.fixture(scope="module")
def trained(tiny_base_dir, tmp_path_factory):
    work = tmp_path_factory.mktemp("train")
    files.write_jsonl_atomic(work / "train.jsonl", color_examples(4))
    files.write_jsonl_atomic(work / "val.jsonl", color_examples(1))
    p = TrainParams(learning_rate=3e-2, max_steps=60, batch_size=8, eval_steps=20,
                    logging_steps=1, warmup_ratio=0.0, precision="fp32",
                    lora=LoraParams(r=8, alpha=32, dropout=0.0), guard=NO_SPIKE_GUARD)
    summary = training.train(p, tiny_base_dir, work / "train.jsonl", work / "val.jsonl",
                             work / "adapter", work / "live", work / "checkpoints")
    return work, summary


def read_tsv(path):
    lines = path.read_text().splitlines()[1:]
    return [(int(line.split("\t")[-2]), float(line.split("\t")[-1])) for line in lines]


def test_training_loss_falls_and_summary_is_complete(trained):
    work, summary = trained
    losses = [value for _, value in read_tsv(work / "live/plots/metrics/loss.tsv")]
    assert len(losses) == 60
    assert losses[-1] < 0.5 * losses[0]
    assert summary["steps"] == 60
    assert summary["method"] == "lora" and summary["precision"] == "fp32"
    assert summary["train_examples"] == 32
    assert 0 < summary["eval_loss"] < losses[0]


def test_curves_share_the_optimizer_step_axis(trained):
    work, _ = trained
    eval_steps = [step for step, _ in read_tsv(work / "live/plots/metrics/eval/loss.tsv")]
    assert eval_steps == [20, 40, 60]
    lr_steps = [step for step, _ in read_tsv(work / "live/plots/metrics/learning_rate.tsv")]
    assert lr_steps == list(range(1, 61))


def test_adapter_folder_has_weights_tokenizer_and_model_card(trained):
    work, summary = trained
    adapter = work / "adapter"
    assert (adapter / "adapter_model.safetensors").is_file()
    assert json.loads((adapter / "adapter_config.json").read_text())["r"] == 8
    assert (adapter / "tokenizer_config.json").is_file()
    card = (adapter / "README.md").read_text()
    assert "base_model: tiny-llama" in card
    assert run_support.file_sha256(work / "train.jsonl") in card
    assert f"train_loss: {summary['train_loss']}" in card
    log = (work / "live/training.log").read_text().splitlines()
    assert log[0].startswith("step 1/60 ")
    assert any("eval_loss=" in line for line in log)


def test_tuned_model_answers_in_the_learned_format_and_stops(trained, tiny_base_dir):
    work, _ = trained
    examples = color_examples(1)
    model, tokenizer = loading.load_trained(tiny_base_dir, work / "adapter")
    tuned = evaluation.evaluate_model(model, tokenizer, examples, max_new_tokens=4,
                                      batch_size=8, desc="tuned")
    base_model, _ = loading.load_trained(tiny_base_dir)
    base = evaluation.evaluate_model(base_model, tokenizer, examples, max_new_tokens=4,
                                     batch_size=8, desc="base")
    # A 2-layer random model learns the answer format within seconds, not the mapping:
    # every answer is exactly one colour word, so it learned to stop (EOS) right after.
    assert set(tuned.outputs) <= set(COLORS.values())
    assert tuned.metrics["loss"] < base.metrics["loss"] / 4
    assert base.metrics["exact_match"] == 0.0
    result = evaluation.compare(base, tuned)
    assert set(result["base"]) == set(result["tuned"]) == set(result["delta"])
    assert result["delta"]["loss"] < 0


def test_same_seed_same_run(tiny_base_dir, trained, tmp_path):
    work, summary = trained
    p = TrainParams(learning_rate=3e-2, max_steps=60, batch_size=8, eval_steps=20,
                    logging_steps=1, warmup_ratio=0.0, precision="fp32",
                    lora=LoraParams(r=8, alpha=32, dropout=0.0), guard=NO_SPIKE_GUARD)
    again = training.train(p, tiny_base_dir, work / "train.jsonl", work / "val.jsonl",
                           tmp_path / "adapter", tmp_path / "live", tmp_path / "checkpoints")
    assert again["train_loss"] == summary["train_loss"]
    assert again["eval_loss"] == summary["eval_loss"]


def test_unknown_target_module_is_a_params_error(tiny_base_dir, tmp_path):
    files.write_jsonl_atomic(tmp_path / "train.jsonl", color_examples(1))
    p = TrainParams(max_steps=1, lora=LoraParams(target_modules=["q_proj", "qkv_proj"]))
    with pytest.raises(ParamsError, match=r"train.lora.target_modules: qkv_proj not in the model "
                                          r"\(its linear layers: .*q_proj"):
        training.train(p, tiny_base_dir, tmp_path / "train.jsonl", tmp_path / "train.jsonl",
                       tmp_path / "adapter", tmp_path / "live", tmp_path / "ckpt")


@pytest.mark.parametrize("cuda, gpu_bf16, cpu_bf16, expected", [
    (False, False, True, "fp32"),   # a CPU with AVX512-BF16: still fp32, comparable runs
    (False, False, False, "fp32"),
    (True, True, False, "bf16"),    # an Ampere or later GPU
    (True, False, False, "fp16"),   # a GPU without bf16 (T4, V100)
])
def test_auto_precision_fits_where_it_runs(monkeypatch, cuda, gpu_bf16, cpu_bf16, expected):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: gpu_bf16)
    monkeypatch.setattr(run_support, "cpu_supports_bf16", lambda: cpu_bf16)
    assert run_support.resolve_precision("auto") == expected
    assert run_support.resolve_precision("fp32") == "fp32"
    assert TrainParams().precision == "auto"  # the default


def test_generate_cli_prints_base_and_tuned_answers(trained, tiny_base_dir, capsys):
    from tunelab.cli import app as cli

    work, _ = trained
    status = cli.main(["generate", "--model", str(work / "adapter"), "--base", str(tiny_base_dir),
                       "--prompt", "Color of sky?", "--compare-base", "--max-new-tokens", "4"])
    out = capsys.readouterr().out
    assert status == 0
    # rich draws the title, then the column headers: "base" and "tuned (PATH)", which wraps
    # onto a second line when the path is long (a pytest-xdist worker's tmp folder)
    lines = out.splitlines()
    header = lines[lines.index(next(l for l in lines if "┏" in l)) + 1:
                   lines.index(next(l for l in lines if "┡" in l))]
    columns = [" ".join(cells).split() for cells in zip(*(l.split("┃")[1:-1] for l in header))]
    assert [words[0] for words in columns] == ["base", "tuned"], out
    assert any(color in out for color in COLORS.values()), out
    tuned_only = cli.main(["generate", "--model", str(work / "adapter"), "--base",
                           str(tiny_base_dir), "--prompt", "Color of sky?", "--max-new-tokens", "4"])
    answer = capsys.readouterr().out.strip()
    assert tuned_only == 0
    assert answer in COLORS.values()


def test_generate_cli_rejects_a_folder_that_is_no_model(tmp_path, capsys):
    from tunelab.cli import app as cli

    status = cli.main(["generate", "--model", str(tmp_path), "--prompt", "hi"])
    assert status == 1
    assert capsys.readouterr().err.strip() == (
        f"tunelab generate: error: {tmp_path}: neither an adapter (adapter_config.json) nor a "
        "model folder (config.json)")
