"""`tunelab bench`: training speed of lora, qlora and full against a tutorial baseline.

Each contender trains ``warmup + steps`` optimizer steps on the same data, batch
size and seed, in a fresh subprocess so its peak memory is its own:

- ``lora``, ``qlora``, ``full``: tunelab's own trainer (``training.build_trainer``: what
  ``training.train`` builds) with the default params, precision ``auto``, every batch
  padded only to its longest example.
- ``lora_packed``: ``lora`` with ``train.packing: true`` (padding-free rows of several
  examples up to ``max_length``; ``batch_size`` then counts rows).
- ``baseline``: the usual tutorial script: a plain ``transformers.Trainer`` with a PEFT
  LoRA adapter (the same r, alpha and targets, the tutorials' dropout 0.05), fp32, the
  chat template rendered to text and every example padded to ``max_length``, loss on
  every token.

Only the steps after the warm-up are timed. Reported per contender:

- effective tokens/s: non-padding tokens of the timed batches (the Trainer's
  ``num_input_tokens_seen`` in ``non_padding`` mode: the attention-mask sum) / seconds.
- FLOPs per token from the model's Linear layers (weights N, trainable Ns): forward 2N,
  gradient w.r.t. inputs 2N, w.r.t. trainable weights 2Ns; so ~4N for an adapter on a
  frozen base and 6N for full. Attention scores are left out (short sequences).
- MFU: effective tokens/s x FLOPs per token, over this machine's best square matmul
  rate in the contender's precision, measured here. Padding the baseline computes on
  counts as waste, not work.
"""

from __future__ import annotations

import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

import torch
from transformers import TrainerCallback

from tunelab.config.params import TrainParams
from tunelab.data import encoding
from tunelab.models import loading
from tunelab.train import training
from tunelab.util import files, machine

CONTENDERS = ("lora", "lora_packed", "qlora", "full", "baseline")
TUTORIAL_LORA_DROPOUT = 0.05  # what the PEFT/TRL tutorials use
GIB = 1024**3


def run_bench(base_dir: str | Path, train_file: str | Path, out_path: str | Path,
              methods=CONTENDERS, steps: int = 5, warmup: int = 2, batch_size: int = 8,
              max_length: int = 256, matmul_size: int | None = None,
              on_progress: Callable[[str], None] | None = None) -> dict:
    """Run every contender, measure the matmul rate, write ``out_path``; return the result."""
    settings = {"base_dir": str(base_dir), "train_file": str(train_file), "steps": steps,
                "warmup": warmup, "batch_size": batch_size, "max_length": max_length}
    # before the runs, so the load average is the background load
    machine_context = machine.bench_context(training.cpu_supports_bf16())
    measured = {}
    for name in methods:
        if on_progress:
            on_progress(f"bench: {name}: {warmup} warm-up + {steps} timed steps ...")
        measured[name] = run_contender(name, base_dir, train_file, steps, warmup,
                                       batch_size, max_length)
    precisions = sorted({m["precision"] for m in measured.values() if "error" not in m})
    matmul_rates = {precision: matmul_tflops(precision, matmul_size) for precision in precisions}
    contenders = {name: summarize(m, matmul_rates) for name, m in measured.items()}
    result = {
        "machine": machine_context,
        "settings": settings,
        "matmul_tflops": {precision: round(rate, 6) for precision, rate in matmul_rates.items()},
        "contenders": contenders,
        "lora_vs_baseline": speedup(contenders, "lora", "baseline"),
    }
    files.write_json_atomic(out_path, result)
    return result


def run_contender(name: str, base_dir, train_file, steps: int, warmup: int, batch_size: int,
                  max_length: int) -> dict:
    """One contender in a fresh Python: its raw measurements, or {"error": last line}."""
    with tempfile.TemporaryDirectory(prefix=f"tunelab-bench-{name}-") as work_dir:
        result_file = Path(work_dir) / "result.json"
        command = [sys.executable, "-m", "tunelab.bench.training_speed", name,
                   str(Path(base_dir).resolve()), str(Path(train_file).resolve()),
                   str(steps), str(warmup), str(batch_size), str(max_length), str(result_file)]
        finished = subprocess.run(command, capture_output=True, text=True)
        if finished.returncode != 0 or not result_file.is_file():
            lines = [line for line in finished.stderr.splitlines() if line.strip()]
            return {"error": lines[-1] if lines else f"exit status {finished.returncode}"}
        return files.read_json(result_file)


def summarize(measured: dict, matmul_rates: dict) -> dict:
    if "error" in measured:
        return measured
    tokens_per_s = measured["effective_tokens"] / measured["seconds"]
    achieved_tflops = tokens_per_s * measured["flops_per_token"] / 1e12
    matmul_rate = matmul_rates[measured["precision"]]
    return {**measured,
            "seconds": round(measured["seconds"], 3),
            "tokens_per_s": round(tokens_per_s, 1),
            "achieved_tflops": round(achieved_tflops, 6),
            "matmul_tflops": round(matmul_rate, 6),
            "mfu": round(achieved_tflops / matmul_rate, 4)}


def speedup(contenders: dict, name: str, reference: str) -> float | None:
    fast, slow = contenders.get(name, {}), contenders.get(reference, {})
    if "tokens_per_s" not in fast or "tokens_per_s" not in slow:
        return None
    return round(fast["tokens_per_s"] / slow["tokens_per_s"], 2)


def matmul_tflops(precision: str, size: int | None = None) -> float:
    """Best rate of one square matmul in ``precision``: the ceiling a training step can reach.

    The best of a few, after a warm-up, because other processes only ever slow it down.
    """
    device = "cuda" if torch.cuda.is_available() else "cpu"
    size = size or (8192 if device == "cuda" else 2048)  # big enough to be compute-bound
    dtype = loading.COMPUTE_DTYPES[precision]
    left = torch.randn(size, size, dtype=dtype, device=device)
    right = torch.randn(size, size, dtype=dtype, device=device)
    fastest = float("inf")
    for attempt in range(4 if device == "cpu" else 11):
        synchronize()
        started = time.perf_counter()
        torch.matmul(left, right)
        synchronize()
        if attempt > 0:  # the first call pays for thread pools and kernel selection
            fastest = min(fastest, time.perf_counter() - started)
    return 2 * size**3 / fastest / 1e12


def table(result: dict):
    """A rich Table of the result, one row per contender."""
    from rich.table import Table

    rates = ", ".join(f"{p} {r * 1000:.1f} GFLOP/s" for p, r in result["matmul_tflops"].items())
    settings = result["settings"]
    out = Table(title=f"tunelab bench: {settings['steps']} timed steps, batch "
                      f"{settings['batch_size']}, max_length {settings['max_length']}",
                caption=f"MFU = achieved / best {rates or 'matmul'} on this machine")
    on_gpu = result["machine"]["cuda_device"] is not None
    for column in ("contender", "precision", "tokens/s", "x baseline", "s/step",
                   "peak GPU GiB" if on_gpu else "peak RSS GiB", "GFLOP/s", "MFU"):
        out.add_column(column, justify="left" if column in ("contender", "precision") else "right")
    baseline = result["contenders"].get("baseline", {})
    for name, row in result["contenders"].items():
        if "error" in row:
            out.add_row(name, "", f"[red]failed: {row['error'][:60]}[/red]", "", "", "", "", "")
            continue
        ratio = (f"{row['tokens_per_s'] / baseline['tokens_per_s']:.2f}"
                 if "tokens_per_s" in baseline else "")
        memory = row["peak_gpu_gib"] if on_gpu else row["peak_rss_gib"]
        out.add_row(name, row["precision"], f"{row['tokens_per_s']:.0f}", ratio,
                    f"{row['seconds'] / row['steps']:.2f}", f"{memory:.2f}",
                    f"{row['achieved_tflops'] * 1000:.1f}", f"{row['mfu']:.1%}")
    return out


# --- one contender, in its own process ----------------------------------------------

def measure_one(name: str, base_dir, train_file, steps: int, warmup: int, batch_size: int,
                max_length: int) -> dict:
    p = TrainParams(method=name if name in ("qlora", "full") else "lora",
                    packing=name == "lora_packed", max_steps=warmup + steps,
                    batch_size=batch_size, max_length=max_length, eval_steps=0, save_steps=0,
                    logging_steps=warmup + steps, precision="auto")
    timer = StepTimer(warmup_steps=warmup)
    with tempfile.TemporaryDirectory(prefix="tunelab-bench-") as output_dir:
        build = baseline_trainer if name == "baseline" else tunelab_trainer
        trainer, precision = build(p, base_dir, train_file, output_dir)
        # "non_padding" counts the attention-mask sum of each batch (transformers
        # Trainer._track_num_input_tokens). Padding-free packed batches have no mask and
        # no padding: there "non_padding" would count input_ids != pad id and so drop the
        # real EOS tokens (pad is EOS here), while "all" counts exactly the real tokens.
        trainer.args.include_num_input_tokens_seen = "all" if p.packing else "non_padding"
        trainer.add_callback(timer)
        trainer.train()
    matmul_parameters, trainable_matmul_parameters = linear_parameters(timer.model)
    measured = {
        "precision": precision,
        "steps": timer.steps,
        "seconds": timer.seconds,
        "effective_tokens": timer.tokens,
        "flops_per_token": 4 * matmul_parameters + 2 * trainable_matmul_parameters,
        "matmul_parameters": matmul_parameters,
        "trainable_parameters": sum(x.numel() for x in timer.model.parameters()
                                    if x.requires_grad),
        "peak_rss_gib": round(peak_rss_bytes() / GIB, 3),
    }
    if torch.cuda.is_available():
        measured["peak_gpu_gib"] = round(torch.cuda.max_memory_allocated() / GIB, 3)
    return measured


def tunelab_trainer(p: TrainParams, base_dir, train_file, output_dir):
    """The SFTTrainer that ``training.train`` builds, without its logging and saving."""
    trainer, precision, _ = training.build_trainer(p, base_dir, train_file, output_dir)
    return trainer, precision


def baseline_trainer(p: TrainParams, base_dir, train_file, output_dir):
    """The tutorial recipe: plain Trainer + PEFT LoRA, fp32, every example padded to max_length."""
    from datasets import Dataset
    from peft import get_peft_model
    from transformers import (AutoModelForCausalLM, AutoTokenizer, Trainer, TrainingArguments,
                              default_data_collator, set_seed)

    set_seed(p.seed)
    tokenizer = AutoTokenizer.from_pretrained(base_dir)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    texts = [example["text"] if "text" in example
             else tokenizer.apply_chat_template(example["messages"], tokenize=False)
             for example in files.read_jsonl(train_file)]
    encoded = tokenizer(texts, padding="max_length", truncation=True, max_length=p.max_length)
    # Mask padding by the attention mask, not by pad id: here pad is EOS, which must train.
    labels = [[token if real else encoding.IGNORE_INDEX for token, real in zip(ids, mask)]
              for ids, mask in zip(encoded["input_ids"], encoded["attention_mask"])]
    train_set = Dataset.from_dict({"input_ids": encoded["input_ids"],
                                   "attention_mask": encoded["attention_mask"], "labels": labels})
    model = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    tutorial = p.model_copy(update={"lora": p.lora.model_copy(
        update={"dropout": TUTORIAL_LORA_DROPOUT})})
    model = get_peft_model(model, training.lora_config(tutorial))
    args = TrainingArguments(output_dir=str(output_dir), max_steps=p.max_steps,
                             per_device_train_batch_size=p.batch_size,
                             learning_rate=p.learning_rate, seed=p.seed, data_seed=p.seed,
                             logging_steps=p.logging_steps, save_strategy="no", report_to=[],
                             use_cpu=not torch.cuda.is_available())
    trainer = Trainer(model=model, args=args, train_dataset=train_set,
                      data_collator=default_data_collator)
    return trainer, "fp32"


class StepTimer(TrainerCallback):
    """Times the steps after the warm-up and counts their non-padding tokens.

    From the start of the first timed step to the end of the last: each of those
    steps' forward, backward and optimizer update is inside, warm-up is not.
    """

    def __init__(self, warmup_steps: int):
        self.warmup_steps = warmup_steps
        self.model = None
        self.started = self.tokens_before = None
        self.seconds = self.tokens = self.steps = 0

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        self.model = model  # as trained: wrapped by PEFT where it has an adapter

    def on_step_begin(self, args, state, control, **kwargs):
        if state.global_step == self.warmup_steps:
            synchronize()
            self.started = time.perf_counter()
            self.tokens_before = state.num_input_tokens_seen

    def on_step_end(self, args, state, control, **kwargs):
        if self.started is None:
            return
        synchronize()
        self.seconds = time.perf_counter() - self.started
        self.tokens = state.num_input_tokens_seen - self.tokens_before
        self.steps = state.global_step - self.warmup_steps


def linear_parameters(model) -> tuple[int, int]:
    """(weights of every Linear layer, of those that train): what a token multiplies through.

    Counted by shape, so 4-bit layers count their real size; embeddings are lookups,
    not matmuls, and a tied output head counts once, as the Linear it is.
    """
    every = trainable = 0
    for module in model.modules():
        if isinstance(module, torch.nn.Linear):
            size = module.in_features * module.out_features
            every += size
            if module.weight.requires_grad:
                trainable += size
    return every, trainable


def peak_rss_bytes() -> int:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024  # Linux reports KiB


def synchronize() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def main(name: str, base_dir: str, train_file: str, steps: str, warmup: str, batch_size: str,
         max_length: str, result_file: str) -> None:
    """One contender in this process, as ``run_contender`` starts it (argv in this order;
    not a user command, so no argparse: `tunelab bench` is the command)."""
    measured = measure_one(name, base_dir, train_file, int(steps), int(warmup), int(batch_size),
                           int(max_length))
    files.write_json_atomic(result_file, measured)


if __name__ == "__main__":
    main(*sys.argv[1:])
