"""Supervised fine-tuning with TRL's SFTTrainer: a PEFT LoRA adapter on a full or
quantized base (lora, qlora), or every weight (full).

Examples are tokenized by ``tunelab.data.encoding`` (the same code the validator
ran), so TRL receives ``input_ids`` + ``labels`` with the prompt masked out.
DVCLive records every logged value under ``metrics/train/``.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import time
from pathlib import Path

import torch
from transformers import AutoTokenizer, EarlyStoppingCallback, TrainerCallback, set_seed
from transformers.integrations import DVCLiveCallback

from tunelab.config.params import TrainParams
from tunelab.data import encoding
from tunelab.models import loading
from tunelab.train import checkpoints, guards, speedups


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
    if precision != "auto":
        return precision
    if torch.cuda.is_available():
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return "bf16" if cpu_supports_bf16() else "fp32"


def to_dataset(examples: list[dict], tokenizer, max_length: int, train_on: str = "all_assistant",
               text_stride: int = 0):
    from datasets import Dataset

    rows = []
    for example in examples:
        for encoded in encoding.windows(tokenizer, example, max_length, train_on, text_stride):
            if encoded.loss_tokens:  # the validator already rejected examples with none
                rows.append({"input_ids": encoded.input_ids, "labels": encoded.labels})
    return Dataset.from_list(rows)


def file_sha256(path: str | Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


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


def sft_config(p: TrainParams, checkpoint_dir: str | Path, precision: str, has_eval: bool):
    from trl import SFTConfig

    evaluating = has_eval and p.eval_steps > 0
    keep_best = evaluating and p.early_stopping_patience > 0
    saving = p.save_steps > 0 or keep_best
    return SFTConfig(
        output_dir=str(checkpoint_dir),
        learning_rate=p.peak_learning_rate,
        num_train_epochs=p.epochs,
        max_steps=p.max_steps,
        per_device_train_batch_size=p.batch_size,
        per_device_eval_batch_size=p.batch_size,
        gradient_accumulation_steps=p.gradient_accumulation,
        warmup_steps=p.warmup_ratio,  # a float in [0, 1) is a ratio in transformers 5
        lr_scheduler_type=p.lr_scheduler,
        weight_decay=p.weight_decay,
        max_grad_norm=p.max_grad_norm,
        # Examples arrive tokenized and truncated to max_length (to_dataset); TRL refuses a
        # max_length it cannot enforce on padding-free rows of whole examples.
        max_length=None if p.padding_free and not p.packing else p.max_length,
        padding_free=p.padding_free,
        train_sampling_strategy="group_by_length" if p.group_by_length else "random",
        torch_compile=p.compile,
        seed=p.seed,
        data_seed=p.seed,
        bf16=precision == "bf16",
        fp16=precision == "fp16",
        gradient_checkpointing=p.gradient_checkpointing,
        # Best-fit-decreasing packing keeps examples whole; TRL then trains padding-free,
        # and transformers masks each example from the others (tests/test_packing.py).
        packing=p.packing,
        packing_strategy="bfd",
        logging_steps=p.logging_steps,
        logging_first_step=True,
        eval_strategy="steps" if evaluating else "no",
        eval_steps=p.eval_steps if evaluating else None,
        save_strategy="steps" if saving else "no",
        save_steps=(p.eval_steps if keep_best else p.save_steps) or None,
        # Two, so a checkpoint half-written by a kill still leaves a complete one.
        save_total_limit=max(2, p.keep_checkpoints) if saving else None,
        load_best_model_at_end=keep_best,
        metric_for_best_model="eval_loss" if keep_best else None,
        greater_is_better=False if keep_best else None,
        completion_only_loss=True,
        logging_nan_inf_filter=False,  # log a NaN loss as NaN: the guard stops on it
        report_to=[],  # the DVCLive callback is added explicitly, pointed at metrics/train
        dataloader_num_workers=0,
        ddp_find_unused_parameters=False,  # every trainable weight is used: skip DDP's graph walk
        use_cpu=not torch.cuda.is_available(),
    )


def lora_config(p: TrainParams):
    from peft import LoraConfig

    return LoraConfig(r=p.lora.r, lora_alpha=p.lora.alpha, lora_dropout=p.lora.dropout,
                      target_modules=p.lora.target_modules, use_dora=p.lora.use_dora,
                      use_rslora=p.lora.use_rslora, task_type="CAUSAL_LM")


def model_to_train(p: TrainParams, base_dir: str | Path, precision: str):
    """(model, PEFT config or None): lora and qlora train an adapter, full every weight."""
    if p.method == "full":
        model = loading.load_base(base_dir)
    else:
        model = adapter_base(base_dir, precision,
                             p.quantization if p.method == "qlora" else None)
    return ready_for_training(p, model, precision)


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


def ready_for_training(p: TrainParams, model, precision: str):
    """(model, PEFT config or None) for a loaded ``model``, as ``p.method`` trains it (the
    GPU check builds its random 8B model itself and comes in here)."""
    if p.method == "qlora":
        from peft import prepare_model_for_kbit_training

        if os.environ.get("ACCELERATE_USE_FSDP", "").lower() == "true":
            # FSDP flattens each wrapped layer into one tensor of one dtype: keep the norms
            # in the compute dtype (the 4-bit storage is that dtype too, loading.bnb_config).
            if p.gradient_checkpointing:
                model.enable_input_require_grads()
            return model, lora_config(p)
        # Casts norms to fp32 and makes input embeddings require grads, as k-bit training needs.
        model = prepare_model_for_kbit_training(
            model, use_gradient_checkpointing=p.gradient_checkpointing)
        return model, lora_config(p)
    return model, (lora_config(p) if p.method == "lora" else None)


def build_trainer(p: TrainParams, base_dir: str | Path, train_file: str | Path,
                  checkpoint_dir: str | Path, val_file: str | Path | None = None,
                  callbacks=()) -> tuple:
    """(SFTTrainer, precision, train examples) for ``p``: seeded, tokenized by
    ``encoding``, the model loaded and PEFT-wrapped as ``p.method`` needs."""
    from tunelab.util.files import read_jsonl

    set_seed(p.seed)
    precision = resolve_precision(p.precision)
    tokenizer = AutoTokenizer.from_pretrained(base_dir)
    model, peft_config = model_to_train(p, base_dir, precision)
    if peft_config is not None:
        check_target_modules(model, p.lora.target_modules)
    train_set = to_dataset(read_jsonl(train_file), tokenizer, p.max_length, p.train_on,
                           p.text_stride)
    val_set = (to_dataset(read_jsonl(val_file), tokenizer, p.max_length, p.train_on, p.text_stride)
               if val_file else None)
    trainer = trainer_for(p, model, peft_config, tokenizer, train_set, checkpoint_dir, precision,
                          val_set, callbacks)
    return trainer, precision, len(train_set)


def trainer_for(p: TrainParams, model, peft_config, tokenizer, train_set, checkpoint_dir,
                precision: str, val_set=None, callbacks=()):
    """The SFTTrainer for a model ready to train (``ready_for_training``) and tokenized
    ``input_ids`` + ``labels`` datasets: what the train stage, the bench and the GPU check run."""
    has_eval = val_set is not None and len(val_set) > 0
    callbacks = list(callbacks)
    if has_eval and p.eval_steps > 0 and p.early_stopping_patience > 0:
        callbacks.append(EarlyStoppingCallback(early_stopping_patience=p.early_stopping_patience))
    from tunelab.train.sft_trainer import AnswerOnlySFTTrainer

    if p.padding_free or p.packing:
        speedups.use_varlen_sdpa(model)
    return AnswerOnlySFTTrainer(
        answer_only_logits=p.answer_only_logits,
        model=model,
        args=sft_config(p, checkpoint_dir, precision, has_eval),
        train_dataset=train_set,
        eval_dataset=val_set if has_eval else None,
        processing_class=tokenizer,
        peft_config=peft_config,
        callbacks=callbacks,
    )


def train(p: TrainParams, base_dir: str | Path, train_file: str | Path, val_file: str | Path,
          adapter_dir: str | Path, live_dir: str | Path, checkpoint_dir: str | Path) -> dict:
    """Fine-tune and write the adapter to ``adapter_dir`` (must be a fresh path).

    Resumes from the newest complete checkpoint in ``checkpoint_dir`` made with the
    same params and data (tunelab.train.checkpoints); the caller deletes the checkpoints
    once the adapter is in place (``checkpoints.clean``)."""
    from dvclive import Live

    writer = is_main_process()  # DDP/FSDP: the other ranks train in step but write nothing
    resume_from, keeper = resume_point(p, base_dir, [train_file, val_file], checkpoint_dir,
                                       live_dir, writer)
    callbacks = [keeper]  # first: it fixes the train_loss that DVCLive records
    if writer:
        resumed = resume_from is not None  # DVCLive and training.log continue the restored logs
        live = Live(dir=str(live_dir), resume=resumed, save_dvc_exp=False, dvcyaml=None)
        callbacks += [StepAlignedDVCLive(live=live),
                      TrainingLog(Path(live_dir) / "training.log", fresh=not resumed)]
    callbacks.append(guards.guard_callback(p))  # last: a diverged step is logged, then stops
    started = time.monotonic()
    try:
        trainer, precision, train_examples = build_trainer(
            p, base_dir, train_file, checkpoint_dir, val_file, callbacks=callbacks)
        keeper.trainer = trainer
        result = trainer.train(resume_from_checkpoint=str(resume_from) if resume_from else None)
    except (RuntimeError, MemoryError) as err:
        if guards.is_out_of_memory(err):
            raise guards.TrainingError(guards.oom_advice(p, err)) from None
        raise
    seconds = time.monotonic() - started
    has_eval = trainer.eval_dataset is not None
    summary = {
        "method": p.method,
        "precision": precision,
        "steps": trainer.state.global_step,
        "train_loss": round(keeper.train_loss(result.training_loss, trainer.state.global_step), 6),
        "train_seconds": round(seconds, 1),
        "train_examples": train_examples,
        "train_rows": len(trainer.train_dataset),  # fewer than examples when packing
        "processes": trainer.args.world_size,  # > 1 under `accelerate launch`: batch x processes
        "trainable_parameters": sum(x.numel() for x in trainer.model.parameters()
                                    if x.requires_grad),
    }
    if has_eval:
        last_eval = [log for log in trainer.state.log_history if "eval_loss" in log]
        if not last_eval or last_eval[-1]["step"] != trainer.state.global_step:
            last_eval.append(trainer.evaluate())  # the run did not end on an eval step
        summary["eval_loss"] = round(last_eval[-1]["eval_loss"], 6)
    trainer.save_model(str(adapter_dir))  # collective under FSDP/ZeRO-3; writes on rank 0 only
    leave_process_group()
    if not writer:
        return summary
    trainer.processing_class.save_pretrained(str(adapter_dir))
    # save_model also pickles the TrainingArguments: nothing reads that file, a pickle runs
    # code when loaded, and the params that matter are in the model card below.
    (Path(adapter_dir) / TRAINING_ARGS_PICKLE).unlink(missing_ok=True)
    sort_target_modules(Path(adapter_dir) / "adapter_config.json")
    loading.write_train_info(adapter_dir, p.method, precision,
                            p.quantization if p.method == "qlora" else None)
    base_info = json.loads((Path(base_dir) / "tunelab_base.json").read_text())
    write_model_card(Path(adapter_dir) / "README.md", p, base_info, file_sha256(train_file), summary)
    return summary


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
    memory); the writer also deletes checkpoints of other params/data and restores the
    live logs."""
    inputs = [f for f in data_files if f]
    inputs += [f for f in (Path(base_dir) / "config.json", Path(base_dir) / "tunelab_base.json")
               if f.is_file()]
    fingerprint = checkpoints.fingerprint(p, inputs, section, data)
    if writer:
        checkpoints.claim(checkpoint_dir, fingerprint, section)
    resume_from = checkpoints.latest(checkpoint_dir, fingerprint)
    resumed = checkpoints.read_marker(resume_from) if resume_from else None
    if resume_from and writer:
        print(f"{section}: resuming from {resume_from} (step {resumed['step']})")
        checkpoints.restore_live(resume_from, live_dir)
    return resume_from, CheckpointKeeper(fingerprint, live_dir, resumed)


def check_target_modules_of(base_dir: str | Path, target_modules) -> None:
    """check_target_modules without reading weights: the model is built on the meta device."""
    from transformers import AutoConfig, AutoModelForCausalLM

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(base_dir))
    check_target_modules(model, target_modules)


def check_target_modules(model, target_modules) -> None:
    if isinstance(target_modules, str):
        return  # "all-linear" or a regex: PEFT resolves it
    names = {name.rsplit(".", 1)[-1] for name, _ in model.named_modules()}
    missing = [m for m in target_modules if m not in names]
    if missing:
        from tunelab.errors import ParamsError

        linear = sorted({name.rsplit(".", 1)[-1] for name, module in model.named_modules()
                         if isinstance(module, torch.nn.Linear)})
        raise ParamsError(f"params.yaml: train.lora.target_modules: {', '.join(missing)} not in "
                          f"the model (its linear layers: {', '.join(linear)})")


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

# Left out of the model card: models/adapter is a DVC output, and a wall-clock time would
# make every run's bytes (and hash) differ. metrics/train/summary.json keeps it.
NOT_IN_MODEL_CARD = ("train_seconds",)
METHOD_TITLES = {"lora": "LoRA adapter", "qlora": "QLoRA adapter (trained on a quantized base)",
                 "full": "Full fine-tune"}


def write_model_card(path: Path, p: TrainParams, base_info: dict, data_sha256: str,
                     summary: dict) -> None:
    lines = [
        "---", *(["library_name: peft"] if p.method != "full" else []),
        f"base_model: {base_info['base']}", f"tags: [tunelab, {p.method}]", "---",
        "", f"# {METHOD_TITLES[p.method]} of {base_info['base']}", "",
        "Fine-tuned by tunelab (`dvc repro`); reproduce with the same `params.yaml`, data and `dvc.lock`.",
        "", f"- Base model: `{base_info['base']}` ({base_info['source']})",
        f"- Training data: `data/prepared/train.jsonl`, sha256 `{data_sha256}`",
        f"- Method: {p.method}, precision {summary['precision']}",
        "", "## Final metrics", "",
        *[f"- {k}: {v}" for k, v in summary.items() if k not in NOT_IN_MODEL_CARD],
        "", "## Training params", "", "```json", json.dumps(p.model_dump(), indent=2), "```", "",
    ]
    path.write_text("\n".join(lines))
