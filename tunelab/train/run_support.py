"""What every training run here needs, SFT (training) and alignment (align) alike: the
precision a run computes in, which process writes, the frozen base an adapter trains on,
DVCLive and training.log callbacks, checkpoint keeping and the resume point, and the tidy
save (no pickled TrainingArguments, sorted target modules). Kept apart from the SFT trainer
so that a change to one trainer does not rerun the other's stage (dvc.yaml deps).
"""

from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path

import torch
from transformers import TrainerCallback
from transformers.integrations import DVCLiveCallback

from tunelab.models import loading
from tunelab.train import checkpoints


def cpu_supports_bf16() -> bool:
    """bf16 autocast pays off on CPUs with native bf16 dot products (AVX512-BF16 / AMX)."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.machine() == "arm64"  # Apple silicon has bf16
    return "avx512_bf16" in flags or "amx_bf16" in flags


def is_main_process() -> bool:
    """True unless this is a rank > 0 of `accelerate launch`/torchrun (they set RANK before
    the script starts): only rank 0 writes outputs, every rank trains."""
    return int(os.environ.get("RANK", "0")) == 0


def resolve_precision(precision: str) -> str:
    """``auto``: what fits where it runs. bf16 on a GPU that has it, fp16 on one that does
    not (an 8B base then loads in 16 GB, not 32, and trains 2-3x faster than in fp32);
    fp32 on a CPU, where bf16 would make the numbers depend on the CPU kind (AVX512-BF16
    or not) and runs stop being comparable. metrics/env.json records the choice."""
    if precision != "auto":
        return precision
    if torch.cuda.is_available():
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return "fp32"


file_sha256 = checkpoints.file_sha256  # the model card's and the bench's data hash


class StepAlignedDVCLive(DVCLiveCallback):
    """DVCLive's callback counts its own steps (one per log call, train and eval
    alike); align them with the trainer's optimizer step so curves share an x-axis."""

    def on_log(self, args, state, control, model=None, logs=None, **kwargs):
        if self.live is not None:
            self.live.step = state.global_step
        super().on_log(args, state, control, model=model, logs=logs, **kwargs)


class TrainingLog(TrainerCallback):
    """A plain, greppable training.log: one line per logging event."""

    def __init__(self, path: str | Path, fresh: bool = True):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if fresh or not self.path.exists():  # a resumed run appends to the restored log
            self.path.write_text("")
        self.started = time.monotonic()

    def on_log(self, args, state, control, logs=None, **kwargs):
        fields = " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                          for k, v in (logs or {}).items())
        elapsed = time.monotonic() - self.started
        with self.path.open("a") as f:
            f.write(f"step {state.global_step}/{state.max_steps} t={elapsed:.0f}s {fields}\n")


class CheckpointKeeper(TrainerCallback):
    """Marks each saved checkpoint complete (with a copy of the live logs) and keeps
    the run-wide loss total across a resume, which the trainer restarts at zero."""

    def __init__(self, fingerprint: str, live_dir: str | Path, resumed: dict | None = None):
        self.fingerprint = fingerprint
        self.live_dir = live_dir
        self.prior_total = resumed["total_loss"] if resumed else 0.0
        self.start_step = resumed["step"] if resumed else 0
        self.trainer = None  # set once the trainer exists: its running loss total is private

    def train_loss(self, this_run_mean: float, global_step: int) -> float:
        if not self.start_step:
            return this_run_mean
        this_run_total = this_run_mean * (global_step - self.start_step)
        return (self.prior_total + this_run_total) / max(global_step, 1)

    def on_train_begin(self, args, state, control, **kwargs):
        # TRL counts the tokens trained on itself, from zero on every train() call.
        seen = [log["num_tokens"] for log in state.log_history if "num_tokens" in log]
        if self.start_step and seen and hasattr(self.trainer, "_total_train_tokens"):
            self.trainer._total_train_tokens = seen[-1]

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs and "train_loss" in logs and self.start_step:  # before DVCLive records it
            logs["train_loss"] = self.train_loss(logs["train_loss"], state.global_step)

    def on_save(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
            total = self.prior_total + self.trainer._total_loss_scalar
            checkpoints.mark_complete(folder, self.fingerprint, self.live_dir, total)


def adapter_base(base_dir: str | Path, precision: str, quantization=None):
    """The frozen base an adapter trains on: quantized with ``quantization`` (qlora), else
    in the compute dtype for bf16/fp16, else fp32 (train's model_to_train, align's policy)."""
    if quantization is not None:
        return loading.load_base(base_dir, quantization, precision)
    if precision in ("bf16", "fp16"):
        # A frozen base needs no fp32 master weights: in the compute dtype it takes half the
        # memory (an 8B base: 15 GiB, not 30); PEFT keeps the adapter itself in fp32.
        return loading.load_base(base_dir, dtype=loading.COMPUTE_DTYPES[precision])
    return loading.load_base(base_dir)


def leave_process_group() -> None:
    """After the last collective: every rank waits for the others, then the group is torn
    down in order. A rank > 0 that exits with the group alive while rank 0 still writes can
    abort in gloo's teardown ("terminate called without an active exception", SIGABRT seen
    once in test_ddp.py), which fails the whole `accelerate launch`."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()


def resume_point(p, base_dir, data_files, checkpoint_dir, live_dir, writer: bool,
                 section: str = "train", data=None):
    """(checkpoint to resume from or None, its CheckpointKeeper) for a run of the params
    section ``p`` (``section``: train or align) on ``data_files`` (and ``data``, examples in
    memory) and the base model in ``base_dir`` (tunelab.train.checkpoints.fingerprint_parts);
    the writer also deletes checkpoints of anything else and restores the live logs."""
    parts = checkpoints.fingerprint_parts(p, [f for f in data_files if f], base_dir, section,
                                          data)
    fingerprint = checkpoints.fingerprint(parts)
    if writer:
        checkpoints.claim(checkpoint_dir, parts, section)
    resume_from = checkpoints.latest(checkpoint_dir, fingerprint)
    resumed = checkpoints.read_marker(resume_from) if resume_from else None
    if resume_from and writer:
        print(f"{section}: resuming from {resume_from} (step {resumed['step']})")
        checkpoints.restore_live(resume_from, live_dir)
    return resume_from, CheckpointKeeper(fingerprint, live_dir, resumed)


TRAINING_ARGS_PICKLE = "training_args.bin"  # transformers.trainer.TRAINING_ARGS_NAME


def sort_target_modules(adapter_config: Path) -> None:
    """PEFT saves the layers "all-linear" resolved to as a set, in string-hash order, which
    changes from process to process (PYTHONHASHSEED): two equal runs wrote different
    adapter_config.json bytes, so a different DVC hash. Sorted, they write the same."""
    if not adapter_config.is_file():  # method full: a whole model, no adapter config
        return
    config = json.loads(adapter_config.read_text())
    if isinstance(config.get("target_modules"), list):
        config["target_modules"] = sorted(config["target_modules"])
        adapter_config.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
