"""Every training method (lora, dora, rslora, qlora 4/8-bit, full) on a tiny random Llama:
its loss falls, its output loads for inference, and it records how it was made."""

import json

import pytest
import torch

from tunelab.config.params import LoraParams, QuantizationParams, TrainParams
from tunelab.eval import evaluation
from tunelab.models import loading
from tunelab.train import training
from tunelab.util import files

from test_training import color_examples  # noqa: E402  (tests/ is on sys.path under pytest)

QUICK = dict(max_steps=12, batch_size=8, eval_steps=0, logging_steps=1, warmup_ratio=0.0,
             precision="fp32")


@pytest.fixture(scope="module")
def color_data(tmp_path_factory):
    work = tmp_path_factory.mktemp("colors")
    files.write_jsonl_atomic(work / "train.jsonl", color_examples(4))
    files.write_jsonl_atomic(work / "val.jsonl", color_examples(1))
    return work


def train_with(p, base_dir, data_dir, out_dir):
    summary = training.train(p, base_dir, data_dir / "train.jsonl", data_dir / "val.jsonl",
                             out_dir / "trained", out_dir / "live", out_dir / "checkpoints")
    losses = [float(line.split("\t")[-1])
              for line in (out_dir / "live/plots/metrics/loss.tsv").read_text().splitlines()[1:]]
    return summary, losses


@pytest.mark.parametrize("name, params", [
    ("dora", TrainParams(learning_rate=3e-2, lora=LoraParams(r=8, alpha=32, dropout=0.0,
                                                             use_dora=True), **QUICK)),
    ("rslora", TrainParams(learning_rate=3e-2, lora=LoraParams(r=8, alpha=32, dropout=0.0,
                                                               use_rslora=True), **QUICK)),
    ("qlora-nf4", TrainParams(method="qlora", learning_rate=3e-2,
                              lora=LoraParams(r=8, alpha=32, dropout=0.0), **QUICK)),
    ("qlora-8bit", TrainParams(method="qlora", learning_rate=3e-2,
                               quantization=QuantizationParams(bits=8),
                               lora=LoraParams(r=8, alpha=32, dropout=0.0), **QUICK)),
    ("full", TrainParams(method="full", full_learning_rate=1e-3, **QUICK)),
])
def test_method_trains_and_its_output_generates(name, params, tiny_base_dir, color_data, tmp_path):
    summary, losses = train_with(params, tiny_base_dir, color_data, tmp_path)
    assert summary["method"] == params.method
    assert losses[-1] < 0.7 * losses[0], losses
    info = json.loads((tmp_path / "trained/tunelab_train.json").read_text())
    assert info["method"] == params.method
    if params.method == "qlora":
        assert info["quantization"]["bits"] == params.quantization.bits
    model, tokenizer = loading.load_trained(tiny_base_dir, tmp_path / "trained")
    result = evaluation.evaluate_model(model, tokenizer, color_examples(1)[:2], max_new_tokens=3,
                                       batch_size=2, desc=name)
    assert len(result.outputs) == 2 and result.metrics["loss"] < losses[0]


def test_lora_config_carries_dora_and_rslora(tiny_base_dir, color_data, tmp_path):
    p = TrainParams(lora=LoraParams(r=4, use_dora=True, use_rslora=True),
                    **{**QUICK, "max_steps": 1})
    train_with(p, tiny_base_dir, color_data, tmp_path)
    config = json.loads((tmp_path / "trained/adapter_config.json").read_text())
    assert (config["use_dora"], config["use_rslora"], config["r"]) == (True, True, 4)


def test_full_fine_tune_trains_every_weight_and_saves_a_whole_model(tiny_base_dir, color_data,
                                                                    tmp_path):
    p = TrainParams(method="full", **{**QUICK, "max_steps": 1})
    summary, _ = train_with(p, tiny_base_dir, color_data, tmp_path)
    base = loading.load_base(tiny_base_dir)
    assert summary["trainable_parameters"] == sum(x.numel() for x in base.parameters())
    assert (tmp_path / "trained/config.json").is_file()
    assert not (tmp_path / "trained/adapter_config.json").exists()
    assert "# Full fine-tune of tiny-llama" in (tmp_path / "trained/README.md").read_text()


def test_qlora_adapter_is_evaluated_on_the_4bit_base(tiny_base_dir, color_data, tmp_path):
    p = TrainParams(method="qlora", **{**QUICK, "max_steps": 1})
    train_with(p, tiny_base_dir, color_data, tmp_path)
    model, _ = loading.load_trained(tiny_base_dir, tmp_path / "trained")
    linear_types = {type(m).__name__ for m in model.modules() if "Linear" in type(m).__name__}
    assert "Linear4bit" in linear_types


def test_full_method_uses_its_own_learning_rate():
    assert TrainParams(method="full").peak_learning_rate == 2e-5
    assert TrainParams(method="lora").peak_learning_rate == 1e-3
    assert TrainParams(method="qlora", learning_rate=5e-4).peak_learning_rate == 5e-4


def test_qlora_without_bitsandbytes_is_a_clear_error(monkeypatch, tiny_base_dir):
    import builtins

    real_import = builtins.__import__

    def no_bitsandbytes(name, *args, **kwargs):
        if name == "bitsandbytes":
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_bitsandbytes)
    with pytest.raises(loading.ParamsError, match="qlora needs the bitsandbytes package") as raised:
        loading.bnb_config(QuantizationParams(), "fp32")
    assert str(raised.value) == ("params.yaml: train.method: qlora needs the bitsandbytes "
                                 "package (pip install bitsandbytes), or use method lora")
    assert builtins.__import__("torch") is torch  # only bitsandbytes was hidden
    monkeypatch.undo()  # bitsandbytes back: the same call gives the 4-bit config
    config = loading.bnb_config(QuantizationParams(), "fp32")
    assert (config.load_in_4bit, config.bnb_4bit_quant_type, config.bnb_4bit_use_double_quant,
            config.bnb_4bit_compute_dtype) == (True, "nf4", True, torch.float32)


def test_gradient_accumulation_matches_the_larger_batch(tiny_base_dir, color_data, tmp_path):
    """batch 8 x 1 and batch 4 x 2 see the same examples per update: same loss curve.
    (A known bug class: averaging per micro-batch instead of per token skews the loss.)"""
    curves = {}
    for batch, accumulation in ((8, 1), (4, 2)):
        p = TrainParams(learning_rate=3e-2, gradient_accumulation=accumulation,
                        lora=LoraParams(r=8, alpha=32, dropout=0.0),
                        **{**QUICK, "batch_size": batch, "max_steps": 6})
        _, curves[(batch, accumulation)] = train_with(p, tiny_base_dir, color_data,
                                                      tmp_path / f"b{batch}x{accumulation}")
    single, accumulated = curves[(8, 1)], curves[(4, 2)]
    assert len(single) == len(accumulated) == 6
    assert accumulated == pytest.approx(single, rel=1e-4)
