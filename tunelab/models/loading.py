"""Load models for training and inference: plain, quantized (bitsandbytes), or
with a trained adapter. Training writes ``tunelab_train.json`` next to its
output so inference loads the base the way it was trained on."""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from tunelab.config.params import QuantizationParams
from tunelab.errors import ParamsError

TRAIN_INFO = "tunelab_train.json"
# The align stage's record beside its adapter; {"objective": "none"} alone when it trained
# nothing, and the run's model is then the SFT result.
ALIGN_INFO = "tunelab_align.json"
COMPUTE_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


def bnb_config(quantization: QuantizationParams, precision: str):
    """A transformers BitsAndBytesConfig; a clear error if bitsandbytes is missing."""
    from transformers import BitsAndBytesConfig

    try:
        import bitsandbytes  # noqa: F401
    except ImportError:
        raise ParamsError("params.yaml: train.method: qlora needs the bitsandbytes package "
                          "(pip install bitsandbytes), or use method lora") from None
    if quantization.bits == 8:
        return BitsAndBytesConfig(load_in_8bit=True)
    # FSDP shards only floating tensors of one dtype: under `accelerate launch` with FSDP the
    # packed 4-bit weights are stored in the compute dtype (QLoRA + FSDP); elsewhere uint8.
    under_fsdp = os.environ.get("ACCELERATE_USE_FSDP", "").lower() == "true"
    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type=quantization.quant_type,
                              bnb_4bit_use_double_quant=quantization.double_quant,
                              bnb_4bit_compute_dtype=COMPUTE_DTYPES[precision],
                              bnb_4bit_quant_storage=COMPUTE_DTYPES[precision] if under_fsdp
                              else torch.uint8)


def load_base(base_dir: str | Path, quantization: QuantizationParams | None = None,
              precision: str = "fp32", dtype: torch.dtype = torch.float32):
    """The base model: in ``dtype`` (fp32 master weights by default), or quantized when
    ``quantization`` is given (then ``precision`` is its compute dtype)."""
    if quantization is None:
        return AutoModelForCausalLM.from_pretrained(base_dir, dtype=dtype)
    if not (Path(base_dir) / "config.json").is_file():
        raise ParamsError(f"params.yaml: train.method: qlora cannot quantize {base_dir}: "
                          "not a safetensors model folder")
    return AutoModelForCausalLM.from_pretrained(
        base_dir, quantization_config=bnb_config(quantization, precision),
        dtype=COMPUTE_DTYPES[precision])


def generation_config(model_dir: str | Path):
    """The folder's GenerationConfig (its stop ids among others); None where it has none."""
    from transformers import GenerationConfig

    if not (Path(model_dir) / "generation_config.json").is_file():
        return None
    return GenerationConfig.from_pretrained(model_dir)


def write_train_info(out_dir: str | Path, method: str, precision: str,
                     quantization: QuantizationParams | None) -> None:
    info = {"method": method, "precision": precision,
            "quantization": vars(quantization) if quantization else None}
    (Path(out_dir) / TRAIN_INFO).write_text(json.dumps(info, indent=2) + "\n")


def read_train_info(trained_dir: str | Path) -> dict:
    path = Path(trained_dir) / TRAIN_INFO
    return json.loads(path.read_text()) if path.is_file() else {"method": "lora"}


def trained_quantization(trained_dir: str | Path) -> tuple[QuantizationParams, str] | None:
    """(quantization, compute precision) of the base a QLoRA adapter was trained on, as its
    tunelab_train.json records them; None for an adapter trained on the unquantized base."""
    info = read_train_info(trained_dir)
    if not info.get("quantization"):
        return None
    return QuantizationParams(**info["quantization"]), info["precision"]


def aligned_objective(aligned_dir: str | Path) -> str | None:
    """The objective that trained the adapter in ``aligned_dir`` (dpo, grpo, ...); None
    where the align stage trained nothing (objective none, or no such folder)."""
    path = Path(aligned_dir) / ALIGN_INFO
    objective = json.loads(path.read_text()).get("objective") if path.is_file() else None
    return None if objective in (None, "none") else objective


def final_model(adapter_dir: str | Path, aligned_dir: str | Path) -> Path:
    """The model a run ships and exports: the aligned adapter where the align stage trained
    one, else train's result."""
    return Path(aligned_dir) if aligned_objective(aligned_dir) else Path(adapter_dir)


def load_trained(base_dir: str | Path, trained_dir: str | Path | None = None):
    """(model, tokenizer) in eval mode: the base alone, the base + adapter, or a
    fully fine-tuned model folder."""
    tokenizer = AutoTokenizer.from_pretrained(base_dir)
    if trained_dir is None:
        model = load_base(base_dir)
    elif (Path(trained_dir) / "config.json").is_file():  # method=full: a whole model
        model = load_base(trained_dir)
    else:
        from peft import PeftModel

        quantized = trained_quantization(trained_dir)
        if quantized:
            # A QLoRA adapter is evaluated (and served) on the quantized base it was trained with.
            model = PeftModel.from_pretrained(load_base(base_dir, *quantized), str(trained_dir))
        else:
            # Merged weights generate ~2x faster than an unmerged adapter on CPU, the same
            # numbers up to float rounding.
            model = PeftModel.from_pretrained(load_base(base_dir), str(trained_dir)).merge_and_unload()
    model.eval()
    return model, tokenizer


def load_with_adapters(base_dir: str | Path, adapters: dict[str, str | Path],
                       base_name: str = "base"):
    """({name: the model serving it}, tokenizer), in eval mode. Every adapter is loaded
    unmerged onto the base it is evaluated on (load_trained): the one fp32 base, which also
    serves ``base_name``, or for QLoRA adapters their quantized base, one per quantization
    and shared by the adapters trained with it. Per call one adapter is chosen on its model
    with ``set_adapter``, or none with ``disable_adapter`` for the base."""
    from peft import PeftModel

    tokenizer = AutoTokenizer.from_pretrained(base_dir)
    # {how the base is loaded: (quantization and precision or None, adapter names)}; the
    # fp32 base always loads: it serves base_name.
    bases: dict[str, tuple] = {"fp32": (None, [])}
    for name, adapter_dir in adapters.items():
        settings = trained_quantization(adapter_dir)
        key = "fp32" if settings is None else f"{settings[0]!r} compute {settings[1]}"
        bases.setdefault(key, (settings, []))[1].append(name)
    served = {}
    for key, (settings, names) in bases.items():
        model = load_base(base_dir, *settings) if settings else load_base(base_dir)
        for index, name in enumerate(names):
            if index == 0:
                model = PeftModel.from_pretrained(model, str(adapters[name]), adapter_name=name)
            else:
                model.load_adapter(str(adapters[name]), adapter_name=name)
        model.eval()
        served.update({name: model for name in ([base_name] if key == "fp32" else []) + names})
    return served, tokenizer
