"""GPU check: LoRA and QLoRA training speed and peak memory on a random Llama-3-8B.

This is NOT a benchmark of tunelab: it is a plain PyTorch training loop (PEFT LoRA,
bitsandbytes NF4, AdamW) on random weights and random tokens, and it never imports or
runs tunelab's code (no tunelab trainer, data, precision or params). It answers "what
can this GPU and these library versions do for a LoRA/QLoRA step"; `tunelab bench`
(tunelab/bench/training_speed.py) times tunelab's own trainer.

Run:  bash tunelab/bench/gpu_check.sh                  (8B, needs a CUDA GPU; budget: under 8 min)
      python tunelab/bench/gpu_check.py --tiny         (same code path, tiny Llama, CPU, seconds)

It imports nothing from tunelab, so the system python3 of a GPU machine runs it with
only torch, transformers, peft, accelerate (and bitsandbytes for QLoRA) installed;
that is also why it parses its own arguments instead of living in tunelab/cli/.

No weights are downloaded: the model has Llama-3-8B's shapes and random weights,
which cost the same time and memory per step as the real ones. Each method trains
on batch 2 x 2048 packed tokens (every position a real token, no padding), the
setting of torchtune's published RTX 4090 figures, which are printed alongside.
"""
import argparse
import gc
import json
import os
import sys
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass

import torch
from torch import nn

# torchtune's README, Llama-3-8B on one RTX 4090, batch 2 x 2048 packed tokens, bf16,
# activation checkpointing on.
TORCHTUNE_RTX4090 = {
    "lora": {"tokens_per_s": 3083, "peak_gib": 16.2},
    "qlora": {"tokens_per_s": 2413, "peak_gib": 7.4},
}

# torchtune's llama3/8B_lora recipe: rank 8, alpha 16, adapters on q, v and the attention
# output projection (lora_attn_modules) plus the whole MLP (apply_lora_to_mlp: True).
LORA_RANK = 8
LORA_ALPHA = 16
LORA_TARGET_MODULES = ["q_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
LEARNING_RATE = 3e-4
WEIGHT_DECAY = 0.01
INIT_STD = 0.02  # Llama's initializer_range; any finite weights would time the same

GIB = 1024**3
# Printed with the figures and written into the JSON, so they are never quoted as tunelab's.
NOT_TUNELAB = "plain PyTorch loop on random weights; does not run tunelab's code"


@dataclass
class MethodResult:
    method: str
    tokens_per_s: float | None = None
    peak_allocated_gib: float | None = None
    peak_reserved_gib: float | None = None
    weights_gib: float | None = None  # allocated after building, before the first step
    trainable_params: int | None = None
    lora_layer_type: str | None = None  # which PEFT layer wrapped the base Linear
    final_loss: float | None = None
    build_s: float | None = None
    train_s: float | None = None
    error: str | None = None


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", default="lora,qlora", help="comma-separated: lora, qlora")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first (allocator, kernels)")
    parser.add_argument("--steps", type=int, default=5, help="timed steps")
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--seq-len", type=int, default=None, help="packed tokens per row (2048; 128 with --tiny)")
    parser.add_argument("--no-checkpointing", action="store_true",
                        help="keep all activations instead of recomputing them (faster, much more memory)")
    parser.add_argument("--tiny", action="store_true", help="tiny Llama, runs on CPU in seconds (for tests)")
    parser.add_argument("--device", default=None, help="cuda or cpu (default: cuda when available)")
    parser.add_argument("--output", default=None,
                        help="JSON path (default: $OUT/gpu_check.json if OUT is set, else metrics/gpu_check.json)")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = [m for m in methods if m not in TORCHTUNE_RTX4090]
    if unknown:
        sys.exit(f"unknown method(s) {unknown}; choose from {list(TORCHTUNE_RTX4090)}")
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type != "cuda" and not args.tiny:
        sys.exit("the 8B check needs a CUDA GPU; use --tiny to try the code path on CPU")
    seq_len = args.seq_len or (128 if args.tiny else 2048)
    config = llama_config(tiny=args.tiny)
    device_name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"

    started = time.perf_counter()
    results = []
    for method in methods:
        result = MethodResult(method=method)
        try:
            measure_method(result, config, device, args.batch_size, seq_len,
                           args.warmup, args.steps, checkpointing=not args.no_checkpointing)
        except Exception as error:  # keep going: one failed method should not hide the other's numbers
            result.error = f"{type(error).__name__}: {error}"
        results.append(result)
        free_device_memory(device)  # the next method's peak must not include this one's leftovers
        print(f"[{method}] done after {time.perf_counter() - started:.0f}s", flush=True)

    report = {
        "device": device_name,
        "model": "llama-3-8b-shaped (random)" if not args.tiny else "tiny llama (random)",
        "code": NOT_TUNELAB,
        "batch_size": args.batch_size,
        "seq_len": seq_len,
        "warmup_steps": args.warmup,
        "timed_steps": args.steps,
        "activation_checkpointing": not args.no_checkpointing,
        "attn_implementation": config._attn_implementation,
        "total_s": round(time.perf_counter() - started, 1),
        "versions": library_versions(),
        "torchtune_rtx4090": TORCHTUNE_RTX4090,
        "results": [asdict(r) for r in results],
    }
    print_table(report, results)
    output_path = args.output or (os.path.join(os.environ["OUT"], "gpu_check.json")
                                  if os.environ.get("OUT") else "metrics/gpu_check.json")
    os.makedirs(os.path.dirname(output_path) or ".", exist_ok=True)
    with open(output_path, "w") as f:
        json.dump(report, f, indent=2)
    print(f"wrote {output_path}")
    if any(r.error for r in results):
        sys.exit(1)


def llama_config(tiny: bool):
    from transformers import LlamaConfig

    shape = dict(hidden_size=64, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2, vocab_size=1000) if tiny else \
        dict(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
             num_key_value_heads=8, vocab_size=128256)
    return LlamaConfig(
        **shape,
        # transformers 5.x keeps rope_theta inside rope_parameters
        rope_parameters={"rope_type": "default", "rope_theta": 500000.0},
        max_position_embeddings=8192,
        rms_norm_eps=1e-5,
        tie_word_embeddings=False,
        attn_implementation="sdpa",
    )


def measure_method(result: MethodResult, config, device: torch.device, batch_size: int, seq_len: int,
                   warmup_steps: int, timed_steps: int, checkpointing: bool) -> None:
    """Build the model for result.method, train it, and fill result in place."""
    build_started = time.perf_counter()
    model = build_model(config, device, quantize_4bit=result.method == "qlora")
    model = add_lora(model, checkpointing)
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=LEARNING_RATE, weight_decay=WEIGHT_DECAY,
                                  fused=device.type == "cuda")
    result.trainable_params = sum(p.numel() for p in trainable)
    result.lora_layer_type = lora_layer_type(model)
    result.build_s = round(time.perf_counter() - build_started, 1)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        result.weights_gib = round(torch.cuda.memory_allocated(device) / GIB, 2)
        # What we report is the training peak, not the peak of building the model
        torch.cuda.reset_peak_memory_stats(device)

    generator = torch.Generator(device=device).manual_seed(0)
    model.train()
    for _ in range(warmup_steps):
        train_step(model, optimizer, random_batch(config, batch_size, seq_len, device, generator))
    synchronize(device)
    train_started = time.perf_counter()
    for _ in range(timed_steps):
        loss = train_step(model, optimizer, random_batch(config, batch_size, seq_len, device, generator))
    synchronize(device)
    result.train_s = round(time.perf_counter() - train_started, 2)

    result.tokens_per_s = round(timed_steps * batch_size * seq_len / result.train_s, 1)
    result.final_loss = round(loss.item(), 4)
    if not torch.isfinite(loss):
        raise FloatingPointError(f"loss is {loss.item()}")
    if device.type == "cuda":
        result.peak_allocated_gib = round(torch.cuda.max_memory_allocated(device) / GIB, 2)
        result.peak_reserved_gib = round(torch.cuda.max_memory_reserved(device) / GIB, 2)


def train_step(model, optimizer, input_ids: torch.Tensor) -> torch.Tensor:
    # labels = inputs: the model shifts them by one inside its loss
    loss = model(input_ids=input_ids, labels=input_ids, use_cache=False).loss
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return loss.detach()


def random_batch(config, batch_size: int, seq_len: int, device, generator) -> torch.Tensor:
    return torch.randint(0, config.vocab_size, (batch_size, seq_len), device=device, generator=generator)


# --- building the model -------------------------------------------------------------------------

def build_model(config, device: torch.device, quantize_4bit: bool):
    """A bf16 Llama with random weights on device; decoder Linears in NF4 when quantize_4bit.

    The model is first built on the meta device (shapes only: no memory, no slow random
    init of 8B parameters on the CPU), then each weight is created on the device. For
    QLoRA each Linear is quantized as soon as its bf16 weight exists, so building holds
    at most one bf16 matrix (<= 117 MB) beyond the 4-bit model, never the 16 GB bf16 one.
    """
    from transformers import LlamaForCausalLM

    with default_dtype(torch.bfloat16), torch.device("meta"):
        model = LlamaForCausalLM(config)
    if quantize_4bit:
        for layer in model.model.layers:
            for name, linear in list(layer.named_modules()):
                if isinstance(linear, nn.Linear):
                    parent_name, _, child_name = name.rpartition(".")
                    setattr(layer.get_submodule(parent_name), child_name, random_linear_4bit(linear, device))
        # PEFT reads this flag to wrap Linear4bit with its bnb-aware LoRA layer
        model.is_loaded_in_4bit = True
    materialize_meta_parameters(model, device)
    # Buffers on meta hold no values; the rotary frequencies must be recomputed, not just allocated.
    # The constructor takes (config) in 5.24 and (config, device=None) in 5.17; (config) fits both.
    with torch.device(device):
        model.model.rotary_emb = type(model.model.rotary_emb)(config)
    left_on_meta = [name for name, tensor in [*model.named_parameters(), *model.named_buffers()]
                    if tensor.device.type == "meta"]
    if left_on_meta:
        raise RuntimeError(f"not materialized: {left_on_meta[:5]}")
    return model


def random_linear_4bit(linear: nn.Linear, device: torch.device) -> nn.Module:
    """An NF4 Linear4bit (double-quantized scales, bf16 compute) holding random weights."""
    import bitsandbytes as bnb

    # device="meta": skip nn.Linear's fp32 CPU allocation and init; the weight is set just below
    linear_4bit = bnb.nn.Linear4bit(linear.in_features, linear.out_features, bias=False,
                                    compute_dtype=torch.bfloat16, compress_statistics=True,
                                    quant_type="nf4", device="meta")
    weight = torch.empty(linear.out_features, linear.in_features, dtype=torch.bfloat16, device=device)
    weight.normal_(0.0, INIT_STD)
    # Params4bit quantizes on its first .to(device); the bf16 weight is freed when this returns
    linear_4bit.weight = bnb.nn.Params4bit(weight, requires_grad=False, compress_statistics=True,
                                           quant_type="nf4", module=linear_4bit).to(device)
    return linear_4bit


def materialize_meta_parameters(model: nn.Module, device: torch.device) -> None:
    """Give every parameter still on meta real random values on device, one tensor at a time."""
    for module in model.modules():
        for name, param in list(module.named_parameters(recurse=False)):
            if param.device.type != "meta":
                continue
            if param.ndim == 1:  # RMSNorm scales
                values = torch.ones(param.shape, dtype=param.dtype, device=device)
            else:
                values = torch.empty(param.shape, dtype=param.dtype, device=device).normal_(0.0, INIT_STD)
            setattr(module, name, nn.Parameter(values, requires_grad=param.requires_grad))


def add_lora(model, checkpointing: bool):
    from peft import LoraConfig, get_peft_model

    if checkpointing:
        # Non-reentrant checkpointing also back-propagates into layers whose inputs need no grad
        # (the frozen embeddings), so enable_input_require_grads is not needed.
        kwargs = {"use_reentrant": False}
        if hasattr(model, "activation_checkpointing_enable"):  # newer 5.x (5.24 has it, 5.17 not)
            model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
        else:  # 5.17: only the older name, deprecated since
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
    lora_config = LoraConfig(r=LORA_RANK, lora_alpha=LORA_ALPHA, lora_dropout=0.0, bias="none",
                             target_modules=LORA_TARGET_MODULES, task_type="CAUSAL_LM")
    model = get_peft_model(model, lora_config)
    # torchtune trains everything in bf16 (dtype: bf16); PEFT would keep adapters in fp32
    for param in model.parameters():
        if param.requires_grad:
            param.data = param.data.to(torch.bfloat16)
    return model


def lora_layer_type(model) -> str:
    layer = model.get_submodule("base_model.model.model.layers.0.self_attn.q_proj")
    return f"{type(layer).__module__}.{type(layer).__name__} over {type(layer.base_layer).__name__}"


# --- small helpers ------------------------------------------------------------------------------

@contextmanager
def default_dtype(dtype: torch.dtype):
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(previous)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def free_device_memory(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def library_versions() -> dict:
    versions = {"python": sys.version.split()[0], "torch": torch.__version__}
    for name in ("transformers", "peft", "bitsandbytes"):
        try:
            versions[name] = __import__(name).__version__
        except ImportError:
            versions[name] = None
    return versions


def print_table(report: dict, results: list[MethodResult]) -> None:
    def cell(value) -> str:
        return "-" if value is None else str(value)

    header = ["method", "tokens/s", "peak GiB (allocated)", "peak GiB (reserved)",
              "torchtune RTX 4090 tok/s", "torchtune GiB"]
    rows = [[r.method, cell(r.tokens_per_s), cell(r.peak_allocated_gib), cell(r.peak_reserved_gib),
             str(TORCHTUNE_RTX4090[r.method]["tokens_per_s"]), str(TORCHTUNE_RTX4090[r.method]["peak_gib"])]
            for r in results]
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    print()
    print(f"gpu_check: {NOT_TUNELAB}")
    print(f"device: {report['device']}   model: {report['model']}   batch {report['batch_size']} x "
          f"{report['seq_len']} packed tokens   checkpointing: {report['activation_checkpointing']}")
    for row in [header, ["-" * w for w in widths], *rows]:
        print(" | ".join(text.ljust(width) for text, width in zip(row, widths)))
    for r in results:
        note = f"error: {r.error}" if r.error else (
            f"build {r.build_s}s, {report['timed_steps']} steps {r.train_s}s, loss {r.final_loss}, "
            f"weights {cell(r.weights_gib)} GiB, {r.trainable_params:,} trainable, {r.lora_layer_type}")
        print(f"  {r.method}: {note}")
    print(f"total {report['total_s']}s")


if __name__ == "__main__":
    main()
