"""`tunelab bench`: training speed of each contender (tunelab.bench.contenders), each
gain isolated, on the same data, seed and batch size; writes metrics/bench.json.

Each contender runs in a fresh subprocess, so its peak memory is its own: ``warmup``
untimed steps (thread pools, the allocator and, with ``compile``, the compile), then
``repeats`` timed windows of ``steps`` optimizer steps each. A window runs from the
start of its first step to the end of its last. Reported per contender:

- effective tokens/s, min / median / max over the windows: the real (non-padding) tokens
  of the window's batches / its seconds. transformers' Trainer counts them
  (``num_input_tokens_seen``, after each step begins): ``non_padding`` sums the
  attention mask, which padded batches carry; a padding-free batch has no mask and no
  padding, and there ``non_padding`` would count ``input_ids != pad id``, dropping every
  real EOS (pad is EOS here), so it is counted with ``all`` (every position, all real).
  Padding is computed but not counted: it is waste, not work. Each window also records
  its ``positions`` (every position the model ran, padding included) and
  ``label_tokens`` (positions with a label, i.e. in the loss).
- FLOPs per token from the model's Linear layers (weights N, trainable Ns): forward 2N,
  gradient w.r.t. inputs 2N, w.r.t. trainable weights 2Ns; so ~4N for an adapter on a
  frozen base and 6N for full. Attention scores are left out (short sequences). The same
  nominal count for every contender, so a contender that skips work (answer-only
  logits skip the output layer at prompt positions) shows it as more tokens/s and MFU.
- MFU: median tokens/s x FLOPs per token, over the best square matmul rate in the
  contender's precision, measured in the same run after the contenders.
- median s/step, peak RSS (and peak GPU memory on CUDA), and the ratio of the median
  tokens/s to ``baseline``'s and to ``tunelab_before``'s.
- ``tunelab+compile``: its compile seconds (its first warm-up step minus ``tunelab``'s
  first warm-up step) and the steps after which compiling has paid for itself.
"""

from __future__ import annotations

import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

import torch
from transformers import TrainerCallback

from tunelab.bench import contenders as contender_specs
from tunelab.data import encoding
from tunelab.models import loading
from tunelab.train import run_support
from tunelab.util import files, machine

CONTENDERS = tuple(contender_specs.CONTENDERS)
REFERENCES = ("baseline", "tunelab_before")  # every contender's tokens/s is compared with these
GIB = 1024**3


def run_bench(base_dir: str | Path, train_file: str | Path, out_path: str | Path,
              contenders=CONTENDERS, steps: int = 2, warmup: int = 1, repeats: int = 3,
              batch_size: int = 8, max_length: int = 256, matmul_size: int | None = None,
              on_progress: Callable[[str], None] | None = None) -> dict:
    """Run each contender, measure the matmul rates, write ``out_path``; return the result."""
    settings = {"base_dir": str(base_dir), "train_file": str(train_file),
                "train_file_sha256": run_support.file_sha256(train_file),
                "contenders": list(contenders), "steps": steps, "warmup": warmup,
                "repeats": repeats, "batch_size": batch_size, "max_length": max_length}
    started = datetime.now(timezone.utc).isoformat(timespec="seconds")
    # before the runs, so the load average is the background load
    machine_context = machine.bench_context(run_support.cpu_supports_bf16())
    native_bf16 = torch.cuda.is_available() or run_support.cpu_supports_bf16()
    measured = {}
    for name in contenders:
        if contender_specs.CONTENDERS[name].needs_native_bf16 and not native_bf16:
            measured[name] = {"skipped": "no native bf16 on this CPU"}
            continue
        if on_progress:
            on_progress(f"bench: {name}: {warmup} warm-up + {repeats} x {steps} timed steps ...")
        measured[name] = run_contender(name, base_dir, train_file, steps, warmup, repeats,
                                       batch_size, max_length)
    precisions = sorted({m["precision"] for m in measured.values() if "precision" in m})
    matmul_rates = {precision: matmul_tflops(precision, matmul_size) for precision in precisions}
    rows = {name: summarize(m, matmul_rates) for name, m in measured.items()}
    for name, row in rows.items():
        if "tokens_per_s" in row:
            row.update({f"x_{reference}": speedup(rows, name, reference)
                        for reference in REFERENCES})
    if "tokens_per_s" in rows.get("tunelab+compile", {}):
        rows["tunelab+compile"].update(compile_cost(rows.get("tunelab", {}),
                                                    rows["tunelab+compile"]))
    result = {
        "date": started,
        "machine": machine_context,
        "load_average_1min": {"before": machine_context["load_average_1min"],
                              "after": round(os.getloadavg()[0], 2)},
        "settings": settings,
        "matmul_tflops": {precision: round(rate, 6) for precision, rate in matmul_rates.items()},
        "contenders": rows,
    }
    files.write_json_atomic(out_path, result)
    return result


def run_contender(name: str, base_dir, train_file, steps: int, warmup: int, repeats: int,
                  batch_size: int, max_length: int) -> dict:
    """One contender in a fresh Python: its raw measurements, or {"error": last line}."""
    with tempfile.TemporaryDirectory(prefix="tunelab-bench-") as work_dir:
        job_file, result_file = Path(work_dir) / "job.json", Path(work_dir) / "result.json"
        files.write_json_atomic(job_file, {
            "name": name, "base_dir": str(Path(base_dir).resolve()),
            "train_file": str(Path(train_file).resolve()), "steps": steps, "warmup": warmup,
            "repeats": repeats, "batch_size": batch_size, "max_length": max_length})
        command = [sys.executable, "-m", "tunelab.bench.training_speed", str(job_file),
                   str(result_file)]
        finished = subprocess.run(command, capture_output=True, text=True)
        if finished.returncode != 0 or not result_file.is_file():
            lines = [line for line in finished.stderr.splitlines() if line.strip()]
            return {"error": lines[-1].strip() if lines else f"exit status {finished.returncode}"}
        return files.read_json(result_file)


def summarize(measured: dict, matmul_rates: dict) -> dict:
    """A contender's raw windows -> its spread, median s/step and MFU (errors and skips as
    they are)."""
    if "windows" not in measured:
        return measured
    windows = [{**window, "tokens_per_s": round(window["tokens"] / window["seconds"], 2)}
               for window in measured["windows"]]
    rates = [window["tokens"] / window["seconds"] for window in measured["windows"]]
    median_rate = statistics.median(rates)
    achieved_tflops = median_rate * measured["flops_per_token"] / 1e12
    matmul_rate = matmul_rates[measured["precision"]]
    positions = sum(window["positions"] for window in windows)
    return {**measured,
            "windows": windows,
            "tokens_per_s": spread(rates, 2),
            "s_per_step": round(statistics.median(w["seconds"] / w["steps"] for w in windows), 3),
            "padding_share": round(1 - sum(w["tokens"] for w in windows) / positions, 4),
            "achieved_tflops": round(achieved_tflops, 6),
            "matmul_tflops": round(matmul_rate, 6),
            "mfu": round(achieved_tflops / matmul_rate, 4)}


def spread(values: list[float], digits: int) -> dict:
    return {"min": round(min(values), digits), "median": round(statistics.median(values), digits),
            "max": round(max(values), digits)}


def speedup(rows: dict, name: str, reference: str) -> float | None:
    """Median tokens/s of ``name`` over ``reference``'s; None unless both ran."""
    fast, slow = rows.get(name, {}), rows.get(reference, {})
    if "tokens_per_s" not in fast or "tokens_per_s" not in slow:
        return None
    return round(fast["tokens_per_s"]["median"] / slow["tokens_per_s"]["median"], 3)


def compile_cost(eager: dict, compiled: dict) -> dict:
    """Compile seconds and break-even steps of ``compiled`` against ``eager`` (the same
    contender without compile); None where they cannot be told.

    Compile seconds: how much longer the compiled run's first warm-up step took than the
    eager run's first step (both pay for thread pools and the allocator there).
    Break-even: the steps whose saving (eager minus compiled median s/step) repays it.
    """
    if not eager.get("warmup_step_seconds") or not compiled.get("warmup_step_seconds"):
        return {"compile_seconds": None, "break_even_steps": None}
    compile_seconds = compiled["warmup_step_seconds"][0] - eager["warmup_step_seconds"][0]
    saved_per_step = eager["s_per_step"] - compiled["s_per_step"]
    break_even = max(compile_seconds, 0.0) / saved_per_step if saved_per_step > 0 else None
    return {"compile_seconds": round(compile_seconds, 1),
            "break_even_steps": None if break_even is None else round(break_even, 1)}


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
    caption = [f"MFU = achieved / best {rates or 'matmul'} on this machine; "
               f"load average {result['load_average_1min']['before']} before, "
               f"{result['load_average_1min']['after']} after"]
    compiled = result["contenders"].get("tunelab+compile", {})
    if compiled.get("compile_seconds") is not None:
        steps = compiled["break_even_steps"]
        caption.append(f"tunelab+compile: {compiled['compile_seconds']:.0f} s compiling; " + (
            f"pays for itself after {steps:.0f} steps" if steps is not None
            else "its steps are not faster, so it never pays"))
    out = Table(title=f"tunelab bench: {settings['warmup']} warm-up + {settings['repeats']} x "
                      f"{settings['steps']} timed steps, batch {settings['batch_size']}, "
                      f"max_length {settings['max_length']}", caption="\n".join(caption))
    on_gpu = result["machine"]["cuda_device"] is not None
    columns = ["contender", "precision", "tokens/s median (min-max)", "x baseline",
               "x tunelab_before", "s/step", "peak RSS GiB", *(["peak GPU GiB"] * on_gpu), "MFU"]
    for column in columns:
        out.add_column(column, justify="left" if column in ("contender", "precision") else "right")
    for name, row in result["contenders"].items():
        if "tokens_per_s" not in row:
            text = (f"[red]failed: {row['error'][:70]}[/red]" if "error" in row
                    else f"[dim]skipped: {row.get('skipped', '')}[/dim]")
            out.add_row(name, "", text, *[""] * (len(columns) - 3))
            continue
        spread = row["tokens_per_s"]
        ratios = [f"{row[f'x_{ref}']:.2f}" if row[f"x_{ref}"] is not None else ""
                  for ref in REFERENCES]
        out.add_row(name, row["precision"],
                    f"{spread['median']:.1f} ({spread['min']:.1f}-{spread['max']:.1f})", *ratios,
                    f"{row['s_per_step']:.2f}", f"{row['peak_rss_gib']:.2f}",
                    *([f"{row.get('peak_gpu_gib', 0):.2f}"] * on_gpu), f"{row['mfu']:.1%}")
    return out


# --- one contender, in its own process ----------------------------------------------

def measure_one(name: str, base_dir, train_file, steps: int, warmup: int, repeats: int,
                batch_size: int, max_length: int) -> dict:
    p = contender_specs.train_params(name, warmup + repeats * steps, batch_size, max_length)
    timer = StepTimer(warmup_steps=warmup, window_steps=steps)
    with tempfile.TemporaryDirectory(prefix="tunelab-bench-") as output_dir:
        trainer, precision = contender_specs.build(name, p, base_dir, train_file, output_dir)
        # Only real tokens count (the module docstring says why each mode).
        trainer.args.include_num_input_tokens_seen = (
            "non_padding" if contender_specs.pads(name, p) else "all")
        shapes = BatchShapes(trainer.data_collator)
        trainer.data_collator = shapes  # the Trainer builds its DataLoader from it in train()
        trainer.add_callback(timer)
        trainer.train()
    windows = timer.windows()
    if len(windows) != repeats:
        raise RuntimeError(f"{len(windows)} timed windows of {steps} steps, expected {repeats}: "
                           f"training stopped after {len(timer.step_seconds)} steps")
    for window in windows:  # batch i is step i: one batch per step, one process
        first = window.pop("first_step")
        batches = shapes.batches[first:first + window["steps"]]
        window["positions"] = sum(batch["positions"] for batch in batches)
        window["label_tokens"] = sum(batch["label_tokens"] for batch in batches)
        window["seconds"] = round(window["seconds"], 6)
    matmul_parameters, trainable_matmul_parameters = linear_parameters(timer.model)
    measured = {
        "precision": precision,
        "config": {**contender_specs.config(name, p), "precision": precision},
        "windows": windows,
        "warmup_step_seconds": [round(s, 3) for s in timer.step_seconds[:warmup]],
        "step_seconds": [round(s, 3) for s in timer.step_seconds],
        "flops_per_token": 4 * matmul_parameters + 2 * trainable_matmul_parameters,
        "matmul_parameters": matmul_parameters,
        "trainable_parameters": sum(x.numel() for x in timer.model.parameters()
                                    if x.requires_grad),
        "peak_rss_gib": round(peak_rss_bytes() / GIB, 3),
    }
    if torch.cuda.is_available():
        measured["peak_gpu_gib"] = round(torch.cuda.max_memory_allocated() / GIB, 3)
    return measured


class BatchShapes:
    """Wraps a data collator and records, per batch, the positions the model computes
    (padding included) and the positions with a label (the loss's)."""

    def __init__(self, collate):
        self.collate = collate
        self.batches: list[dict] = []

    def __call__(self, features):
        batch = self.collate(features)
        self.batches.append({
            "positions": int(batch["input_ids"].numel()),
            "label_tokens": int((batch["labels"] != encoding.IGNORE_INDEX).sum()),
        })
        return batch


class StepTimer(TrainerCallback):
    """Times every optimizer step and counts its tokens (``num_input_tokens_seen``).

    A step runs from ``on_step_begin`` to ``on_step_end``: its forward, backward and
    optimizer update (transformers counts the step's tokens in between). After the
    ``warmup_steps``, consecutive windows of ``window_steps`` steps; without
    ``window_steps``, one window of every step after the warm-up. ``seconds``, ``tokens``
    and ``steps`` add up the windows: with one window, they are that window's.
    """

    def __init__(self, warmup_steps: int, window_steps: int | None = None):
        self.warmup_steps = warmup_steps
        self.window_steps = window_steps
        self.model = None
        self.clock = time.perf_counter
        self.step_spans: list[tuple[float, float]] = []  # (start, end) of every step
        self.step_tokens: list[int] = []
        self._started = self._tokens_before = None

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        self.model = model  # as trained: wrapped by PEFT where it has an adapter

    def on_step_begin(self, args, state, control, **kwargs):
        synchronize()
        self._started, self._tokens_before = self.clock(), state.num_input_tokens_seen

    def on_step_end(self, args, state, control, **kwargs):
        synchronize()
        self.step_spans.append((self._started, self.clock()))
        self.step_tokens.append(state.num_input_tokens_seen - self._tokens_before)

    @property
    def step_seconds(self) -> list[float]:
        return [end - start for start, end in self.step_spans]

    def windows(self) -> list[dict]:
        """[{"first_step" (0-based), "steps", "seconds", "tokens"}] of the timed steps."""
        size = self.window_steps or len(self.step_spans) - self.warmup_steps
        if size <= 0:
            return []
        return [{"first_step": first, "steps": size,
                 "seconds": self.step_spans[first + size - 1][1] - self.step_spans[first][0],
                 "tokens": sum(self.step_tokens[first:first + size])}
                for first in range(self.warmup_steps, len(self.step_spans) - size + 1, size)]

    @property
    def seconds(self) -> float:
        return sum(window["seconds"] for window in self.windows())

    @property
    def tokens(self) -> int:
        return sum(window["tokens"] for window in self.windows())

    @property
    def steps(self) -> int:
        return sum(window["steps"] for window in self.windows())


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


def main(job_file: str, result_file: str) -> None:
    """One contender in this process, as ``run_contender`` starts it (a job file, not a
    user command, so no argparse: `tunelab bench` is the command)."""
    files.write_json_atomic(result_file, measure_one(**files.read_json(job_file)))


if __name__ == "__main__":
    main(*sys.argv[1:])
