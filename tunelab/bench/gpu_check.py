"""GPU check: tunelab's own trainer on a random Llama-3-8B, LoRA and QLoRA, beside the peers.

Run:  bash tunelab/bench/gpu_check.sh      (8B on one CUDA GPU; budget: 5 minutes on an H200)
      tunelab bench-gpu --tiny             (the same code on a tiny Llama, CPU, seconds)

It trains what the train stage trains: the model goes through
``training.ready_for_training`` (qlora: PEFT's k-bit preparation) and then the SFTTrainer
that ``training.trainer_for`` builds (tunelab's SFTConfig, its answer-only LM head and loss,
padding-free batches), with TrainParams set to torchtune's llama3/8B_lora recipe. Three
things differ from a real run, none of which changes the cost of a step:

- the model has Llama-3-8B's shapes and random weights (nothing to download), built
  straight on the device in bf16 instead of loaded by ``tunelab.models.loading``;
  for qlora its decoder Linears are bitsandbytes NF4 layers, as ``loading.bnb_config``
  asks transformers for;
- the data is random token ids, batch 2 x 2048, every position labelled (labels = inputs),
  the setting of torchtune's packed 2 x 2048 figures;
- the tokenizer (the embedded SmolLM2's) only supplies the trainer's pad token.

Each method gets ``warmup`` untimed steps, then ``steps`` timed ones. Peak memory is
torch.cuda's, reset once the model is built, so it covers preparing, the trainer and
training. Results: a JSON report (``run_gpu_check``) and ``tables`` for the console.
"""

from __future__ import annotations

import gc
import importlib.util
import math
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn
from transformers import AutoTokenizer, set_seed

from tunelab.bench.training_speed import StepTimer
from tunelab.config.params import TrainParams
from tunelab.errors import ModelSourceError, TrainingError
from tunelab.train import run_support, training
from tunelab.util import files, machine

METHODS = ("lora", "qlora")
OUTPUT = "metrics/bench/gpu_check_tunelab.json"  # the kept result of a GPU run
TINY_OUTPUT = "reports/gpu_check_tunelab_tiny.json"  # git-ignored: a tiny run is a smoke test
BATCH_SIZE = 2
MAX_LENGTH = 2048
TINY_MAX_LENGTH = 128
INIT_STD = 0.02  # Llama's initializer_range; any finite weights would time the same
GIB = 1024**3
VERSIONS = ("torch", "transformers", "peft", "trl", "accelerate", "datasets", "bitsandbytes",
            "pydantic")
CODE = ("tunelab: training.ready_for_training + training.trainer_for (the train stage's "
        "trainer construction) on a random Llama-3-8B-shaped model")
NO_BITSANDBYTES = "skipped: bitsandbytes is not installed (qlora's 4-bit layers need it)"

# torchtune's llama3/8B_lora recipe: rank 8, alpha 16, adapters on q, v and the attention
# output projection (lora_attn_modules) plus the whole MLP (apply_lora_to_mlp: True).
TORCHTUNE_LORA = {"r": 8, "alpha": 16, "dropout": 0.0,
                  "target_modules": ["q_proj", "v_proj", "o_proj", "gate_proj", "up_proj",
                                     "down_proj"]}
TORCHTUNE_LEARNING_RATE = 3e-4
TORCHTUNE_WEIGHT_DECAY = 0.01

# torchtune's README, "Memory and training speed": Llama 3.1 8B on one RTX 4090.
TORCHTUNE_RTX4090 = {
    "lora": {"tokens_per_s": 3083, "peak_gib": 16.2},
    "qlora": {"tokens_per_s": 2413, "peak_gib": 7.4},
    "source": "https://github.com/pytorch/torchtune (README.md, 'Memory and training speed')",
    "conditions": "Llama 3.1 8B, 1x RTX 4090, batch size 2 without gradient accumulation, "
                  "dataset packed to sequence length 2048, torch compile enabled; tokens/sec "
                  "measured over one full training epoch; 'Peak Memory per GPU'",
}
# unsloth's README, "Performance Benchmarking": relative claims only, against its own baseline.
UNSLOTH_CLAIMS = {
    "source": "https://github.com/unslothai/unsloth (README.md, 'Performance Benchmarking')",
    "conditions": "Alpaca dataset, batch size 2, gradient accumulation 4, rank 32, QLoRA on "
                  "all linear layers (q, k, v, o, gate, up, down); baseline 'Hugging Face + "
                  "FA2' = 1x",
    "llama_3_1_8b": {"vram": "80GB", "speed": "2x", "vram_reduction": ">70%",
                     "longer_context": "12x longer"},
    "llama_3_1_8b_max_context_16gb": {"unsloth": 40724, "hugging_face_fa2": 2551,
                                      "setting": "4-bit QLoRA, rank 32, batch size 1"},
    "note": "no absolute tokens/s or GiB for Llama 3 8B: nothing here to compare against",
}
# Issue 14's targets, for tunelab's LoRA on the 8B shapes.
LORA_SPEED_FACTOR = 2.0   # >= 2x torchtune's 4090 tokens/s
LORA_MEMORY_FACTOR = 1.1  # peak allocated <= 1.1x torchtune's 16.2 GiB


@dataclass
class MethodResult:
    method: str
    tokens_per_s: float | None = None
    tokens: int | None = None          # the timed steps' input tokens (the trainer's count)
    timed_steps: int | None = None
    seconds: float | None = None       # the timed steps, start of the first to end of the last
    step_seconds: list | None = None   # each timed step
    peak_allocated_gib: float | None = None
    peak_reserved_gib: float | None = None
    weights_gib: float | None = None   # allocated once the model is built (then the peak reset)
    ready_gib: float | None = None     # allocated when training starts: + adapters, casts
    leftover_gib: float | None = None  # allocated before building: the previous method's rest
    trainable_params: int | None = None
    lora_layer_type: str | None = None  # the PEFT layer around the base Linear
    trainer: str | None = None          # the class training.trainer_for returned
    attn_implementation: str | None = None
    final_loss: float | None = None
    build_s: float | None = None        # model, ready_for_training and trainer_for
    skipped: str | None = None
    error: str | None = None


def run_gpu_check(methods, steps: int, warmup: int, tokenizer_dir: str | Path,
                  output: str | Path, tiny: bool = False, checkpointing: bool = True) -> dict:
    """Train each of ``methods`` (lora, qlora) for ``warmup + steps`` steps; write the report
    to ``output`` and return it. ``tiny``: a tiny Llama, on the GPU if there is one, else CPU."""
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise ValueError(f"unknown method(s) {unknown}; choose from {', '.join(METHODS)}")
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.type != "cuda" and not tiny:
        raise TrainingError("the 8B GPU check needs a CUDA GPU and none is visible; "
                            "--tiny runs the same code on a tiny model on CPU")
    if not (Path(tokenizer_dir) / "tokenizer_config.json").is_file():
        raise ModelSourceError(f"{tokenizer_dir}: no tokenizer_config.json; give a tokenizer "
                               "folder (models/base after `dvc repro base`)")
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    config = llama_config(tiny)
    max_length = TINY_MAX_LENGTH if tiny else MAX_LENGTH
    started = time.perf_counter()
    results = []
    for method in methods:
        p = torchtune_params(method, steps, warmup, max_length, checkpointing)
        results.append(measure_method(p, config, tokenizer, device, warmup))
        print(f"gpu check: {method} done after {time.perf_counter() - started:.0f}s",
              file=sys.stderr, flush=True)
    report = {
        "code": CODE,
        "tiny": tiny,
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "model": "tiny llama (random)" if tiny else "llama-3-8b-shaped (random)",
        "model_shape": {key: getattr(config, key) for key in (
            "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
            "num_key_value_heads", "vocab_size")},
        "base_dtype": "bfloat16",
        "batch_size": BATCH_SIZE,
        "max_length": max_length,
        "warmup_steps": warmup,
        "timed_steps": steps,
        "train_params": torchtune_params("lora", steps, warmup, max_length, checkpointing)
        .model_dump(exclude={"method"}),
        "total_s": round(time.perf_counter() - started, 1),
        "versions": {"python": sys.version.split()[0], "cuda": torch.version.cuda,
                     **machine.package_versions(VERSIONS)},
        "results": [asdict(r) for r in results],
        "targets": targets(results, tiny),
        "torchtune_rtx4090": TORCHTUNE_RTX4090,
        "unsloth_claims": UNSLOTH_CLAIMS,
    }
    files.write_json_atomic(output, report)
    return report


def torchtune_params(method: str, steps: int, warmup: int, max_length: int,
                     checkpointing: bool) -> TrainParams:
    """TrainParams as torchtune's llama3/8B_lora has them, on tunelab's training path."""
    return TrainParams(
        method=method, learning_rate=TORCHTUNE_LEARNING_RATE,
        weight_decay=TORCHTUNE_WEIGHT_DECAY, lora=TORCHTUNE_LORA, batch_size=BATCH_SIZE,
        max_length=max_length, precision="bf16", gradient_checkpointing=checkpointing,
        padding_free=True, max_steps=warmup + steps, eval_steps=0, save_steps=0,
        logging_steps=warmup + steps)


def measure_method(p: TrainParams, config, tokenizer, device: torch.device,
                   warmup: int) -> MethodResult:
    result = MethodResult(method=p.method)
    if p.method == "qlora" and importlib.util.find_spec("bitsandbytes") is None:
        result.skipped = NO_BITSANDBYTES
        return result
    try:
        train_and_time(result, p, config, tokenizer, device, warmup)
    except Exception as error:  # one failed method must not hide the other's numbers
        first_line = (str(error).strip().splitlines() or [""])[0]  # CUDA's OOM text runs on
        result.error = f"{type(error).__name__}: {first_line[:500]}"
    finally:
        free_device_memory(device)  # the next method's peak must not hold this one's tensors
    return result


def train_and_time(result: MethodResult, p: TrainParams, config, tokenizer,
                   device: torch.device, warmup: int) -> None:
    """Build, prepare and train as the train stage does (training.build_trainer); fill result."""
    on_gpu = device.type == "cuda"
    result.leftover_gib = gib(torch.cuda.memory_allocated(device)) if on_gpu else None
    build_started = time.perf_counter()
    set_seed(p.seed)
    model = build_model(config, device, quantize_4bit=p.method == "qlora")
    if on_gpu:
        torch.cuda.synchronize(device)
        result.weights_gib = gib(torch.cuda.memory_allocated(device))
        torch.cuda.reset_peak_memory_stats(device)  # report training's peak, not building's
    precision = run_support.resolve_precision(p.precision)
    model, peft_config = training.ready_for_training(p, model, precision)
    training.check_target_modules(model, p.lora.target_modules)
    timer = StepTimer(warmup)  # one window: every step after the warm-up
    with tempfile.TemporaryDirectory(prefix="tunelab-gpu-check-") as checkpoint_dir:
        trainer = training.trainer_for(p, model, peft_config, tokenizer,
                                       random_train_set(config, p), checkpoint_dir,
                                       precision, callbacks=[timer])
        # Every row is max_length real tokens with no padding: count all of them.
        trainer.args.include_num_input_tokens_seen = "all"
        result.build_s = round(time.perf_counter() - build_started, 1)
        result.ready_gib = gib(torch.cuda.memory_allocated(device)) if on_gpu else None
        trainer.train()
    result.trainer = f"{type(trainer).__module__}.{type(trainer).__qualname__}"
    result.attn_implementation = trainer.model.config._attn_implementation
    result.trainable_params = sum(x.numel() for x in trainer.model.parameters()
                                  if x.requires_grad)
    result.lora_layer_type = lora_layer_type(trainer.model)
    result.timed_steps, result.tokens = timer.steps, timer.tokens
    result.seconds = round(timer.seconds, 4)
    result.step_seconds = [round(s, 4) for s in timer.step_seconds[warmup:]]
    result.tokens_per_s = round(timer.tokens / timer.seconds, 1)
    if on_gpu:
        result.peak_allocated_gib = gib(torch.cuda.max_memory_allocated(device))
        result.peak_reserved_gib = gib(torch.cuda.max_memory_reserved(device))
    trainer.accelerator.free_memory()
    final_loss = [log["loss"] for log in trainer.state.log_history if "loss" in log][-1]
    if not math.isfinite(final_loss):
        raise FloatingPointError(f"loss is {final_loss}")
    result.final_loss = round(final_loss, 4)


def targets(results: list[MethodResult], tiny: bool) -> list[dict]:
    """Issue 14's GPU targets for tunelab's LoRA: met, missed, or None (not measured, or tiny)."""
    lora = next((r for r in results if r.method == "lora" and not tiny), None)
    speed = lora.tokens_per_s if lora else None
    peak = lora.peak_allocated_gib if lora else None
    min_speed = round(LORA_SPEED_FACTOR * TORCHTUNE_RTX4090["lora"]["tokens_per_s"], 1)
    max_peak = round(LORA_MEMORY_FACTOR * TORCHTUNE_RTX4090["lora"]["peak_gib"], 2)
    return [{"target": "lora tokens/s >= 2 x torchtune RTX 4090", "value": speed,
             "threshold": min_speed, "met": None if speed is None else speed >= min_speed},
            {"target": "lora peak allocated GiB <= 1.1 x torchtune RTX 4090", "value": peak,
             "threshold": max_peak, "met": None if peak is None else peak <= max_peak}]


def tables(report: dict) -> list:
    """Rich tables of the report: each method beside torchtune's figures, then the targets."""
    from rich.table import Table

    def cell(value) -> str:
        return "-" if value is None else str(value)

    shape = (f"{report['device']}, {report['model']}, batch {report['batch_size']} x "
             f"{report['max_length']} tokens, {report['timed_steps']} timed steps")
    unsloth = UNSLOTH_CLAIMS["llama_3_1_8b"]
    methods = Table(title=f"tunelab bench-gpu: {shape}",
                    caption=f"torchtune: {TORCHTUNE_RTX4090['conditions']}. unsloth claims, "
                            f"relative to HF + FA2: Llama 3.1 8B {unsloth['speed']} speed, "
                            f"{unsloth['vram_reduction']} less VRAM")
    for column in ("method", "tokens/s", "peak GiB (alloc.)", "peak GiB (reserved)",
                   "weights GiB", "torchtune 4090 tok/s", "torchtune GiB", "notes"):
        methods.add_column(column, justify="left" if column in ("method", "notes") else "right")
    for row in report["results"]:
        reference = TORCHTUNE_RTX4090[row["method"]]
        notes = row["skipped"] or (f"error: {row['error']}" if row["error"] else
                                   f"loss {row['final_loss']}, build {row['build_s']}s, "
                                   f"{row['trainable_params']:,} trainable, {row['trainer']}")
        methods.add_row(row["method"], cell(row["tokens_per_s"]), cell(row["peak_allocated_gib"]),
                        cell(row["peak_reserved_gib"]), cell(row["weights_gib"]),
                        str(reference["tokens_per_s"]), str(reference["peak_gib"]), notes)
    goals = Table(title="issue 14 targets (tunelab's LoRA on the 8B shapes)")
    for column in ("target", "tunelab", "threshold", "result"):
        goals.add_column(column)
    for row in report["targets"]:
        result = {True: "met", False: "missed", None: "n/a"}[row["met"]]
        goals.add_row(row["target"], cell(row["value"]), str(row["threshold"]), result)
    return [methods, goals]


# --- the model ---------------------------------------------------------------------------

def llama_config(tiny: bool):
    from transformers import LlamaConfig

    if tiny:
        shape = dict(hidden_size=64, intermediate_size=256, num_hidden_layers=2,
                     num_attention_heads=4, num_key_value_heads=2, vocab_size=1000)
    else:  # Llama-3-8B's
        shape = dict(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
                     num_attention_heads=32, num_key_value_heads=8, vocab_size=128256)
    return LlamaConfig(
        **shape,
        # transformers 5.x keeps rope_theta inside rope_parameters
        rope_parameters={"rope_type": "default", "rope_theta": 500000.0},
        max_position_embeddings=8192, rms_norm_eps=1e-5, tie_word_embeddings=False,
        attn_implementation="sdpa")


def build_model(config, device: torch.device, quantize_4bit: bool):
    """A bf16 Llama with random weights on device; decoder Linears in NF4 when quantize_4bit.

    Built on the meta device first (shapes only: no memory, no slow CPU init of 8B
    parameters), then each weight is created on the device. For QLoRA each Linear is
    quantized as soon as its bf16 weight exists, so building holds at most one bf16
    matrix (<= 117 MB) beyond the 4-bit model, never the 15 GiB bf16 one.
    """
    from transformers import LlamaForCausalLM

    previous_dtype = torch.get_default_dtype()
    torch.set_default_dtype(torch.bfloat16)
    try:
        with torch.device("meta"):
            model = LlamaForCausalLM(config)
    finally:
        torch.set_default_dtype(previous_dtype)
    if quantize_4bit:
        for layer in model.model.layers:
            for name, linear in list(layer.named_modules()):
                if isinstance(linear, nn.Linear):
                    parent_name, _, child_name = name.rpartition(".")
                    setattr(layer.get_submodule(parent_name), child_name,
                            random_linear_4bit(linear, device))
        # What from_pretrained sets on a bitsandbytes model, and PEFT (its bnb LoRA layers), TRL,
        # prepare_model_for_kbit_training and the Trainer (no .to() of 4-bit weights) read.
        from transformers.utils.quantization_config import QuantizationMethod

        model.is_loaded_in_4bit = True
        model.quantization_method = QuantizationMethod.BITS_AND_BYTES
    for module in model.modules():
        for name, param in list(module.named_parameters(recurse=False)):
            if param.device.type == "meta":
                values = (torch.ones(param.shape, dtype=param.dtype, device=device)
                          if param.ndim == 1 else  # RMSNorm scales
                          torch.empty(param.shape, dtype=param.dtype, device=device)
                          .normal_(0.0, INIT_STD))
                setattr(module, name, nn.Parameter(values, requires_grad=param.requires_grad))
    # Buffers on meta hold no values: the rotary frequencies are recomputed, not allocated.
    # The constructor takes (config) in 5.24 and (config, device=None) in 5.17; (config) fits both.
    with torch.device(device):
        model.model.rotary_emb = type(model.model.rotary_emb)(config)
    left_on_meta = [name for name, tensor in [*model.named_parameters(), *model.named_buffers()]
                    if tensor.device.type == "meta"]
    if left_on_meta:
        raise RuntimeError(f"not materialized: {left_on_meta[:5]}")
    return model


def random_linear_4bit(linear: nn.Linear, device: torch.device) -> nn.Module:
    """An NF4 Linear4bit (double-quantized scales, bf16 compute) holding random weights: what
    loading.bnb_config's defaults (nf4, double_quant) give, at precision bf16."""
    import bitsandbytes as bnb

    # device="meta": skip nn.Linear's fp32 CPU allocation and init; the weight is set just below
    linear_4bit = bnb.nn.Linear4bit(linear.in_features, linear.out_features, bias=False,
                                    compute_dtype=torch.bfloat16, compress_statistics=True,
                                    quant_type="nf4", device="meta")
    weight = torch.empty(linear.out_features, linear.in_features, dtype=torch.bfloat16,
                         device=device).normal_(0.0, INIT_STD)
    # Params4bit quantizes on its first .to(device); the bf16 weight is freed when this returns
    linear_4bit.weight = bnb.nn.Params4bit(weight, requires_grad=False, compress_statistics=True,
                                           quant_type="nf4", module=linear_4bit).to(device)
    return linear_4bit


def random_train_set(config, p: TrainParams):
    """Enough rows of max_length random token ids for every step, each position labelled."""
    from datasets import Dataset

    generator = torch.Generator().manual_seed(p.seed)
    rows = torch.randint(0, config.vocab_size, (p.max_steps * p.batch_size, p.max_length),
                         generator=generator).tolist()
    return Dataset.from_dict({"input_ids": rows, "labels": rows})


def lora_layer_type(model) -> str | None:
    try:
        layer = model.get_submodule("base_model.model.model.layers.0.self_attn.q_proj")
    except AttributeError:
        return None
    return f"{type(layer).__module__}.{type(layer).__name__} over {type(layer.base_layer).__name__}"


# --- small helpers -------------------------------------------------------------------------

def gib(size_bytes: int) -> float:
    return round(size_bytes / GIB, 2)




def free_device_memory(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
