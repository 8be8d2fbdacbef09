"""Supervised fine-tuning with TRL's SFTTrainer: a PEFT LoRA adapter on a full or
quantized base (lora, qlora), or every weight (full).

Examples are tokenized by ``tunelab.data.encoding`` (the same code the validator
ran), so TRL receives ``input_ids`` + ``labels`` with the prompt masked out.
DVCLive records every logged value under ``metrics/train/``.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import torch
from transformers import AutoTokenizer, EarlyStoppingCallback, set_seed

from tunelab.config.params import TrainParams
from tunelab.data import encoding
from tunelab.models import loading, templates
from tunelab.train import guards, run_support, speedups


def to_dataset(examples: list[dict], tokenizer, max_length: int, train_on: str = "all_assistant",
               text_stride: int = 0):
    from datasets import Dataset

    rows = []
    for example in examples:
        for encoded in encoding.windows(tokenizer, example, max_length, train_on, text_stride):
            if encoded.loss_tokens:  # the validator already rejected examples with none
                rows.append({"input_ids": encoded.input_ids, "labels": encoded.labels})
    return Dataset.from_list(rows)


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


def lora_config(p: TrainParams, trainable_rows: dict[str, list[int]] | None = None):
    """PEFT's LoRA config; ``trainable_rows`` (new_token_rows) train as PEFT's trainable
    tokens: those rows alone, the rest of each matrix stays frozen."""
    from peft import LoraConfig

    return LoraConfig(r=p.lora.r, lora_alpha=p.lora.alpha, lora_dropout=p.lora.dropout,
                      target_modules=p.lora.target_modules, use_dora=p.lora.use_dora,
                      use_rslora=p.lora.use_rslora, task_type="CAUSAL_LM",
                      trainable_token_indices=trainable_rows or None)


def new_token_rows(model, new_token_ids: list[int]) -> dict[str, list[int]] | None:
    """{module name: ids} for the rows of tokens the base stage added for the chat template
    (tunelab.models.templates): the input embedding's and, where the output layer is not
    tied to it, the output layer's, so the model can both read and write them."""
    if not new_token_ids:
        return None
    layers = [model.get_input_embeddings(), model.get_output_embeddings()]
    if layers[1] is None or layers[1].weight is layers[0].weight:
        layers = layers[:1]  # tied: PEFT updates the output rows with the input ones
    names = {id(module): name for name, module in model.named_modules()}
    return {names[id(layer)].rsplit(".", 1)[-1]: list(new_token_ids) for layer in layers}


def model_to_train(p: TrainParams, base_dir: str | Path, precision: str):
    """(model, PEFT config or None): lora and qlora train an adapter, full every weight."""
    if p.method == "full":
        model = loading.load_base(base_dir)
    else:
        model = run_support.adapter_base(base_dir, precision,
                             p.quantization if p.method == "qlora" else None)
    return ready_for_training(p, model, precision, templates.added_token_ids(base_dir))


def ready_for_training(p: TrainParams, model, precision: str, new_token_ids: list[int] = ()):
    """(model, PEFT config or None) for a loaded ``model``, as ``p.method`` trains it (the
    GPU check builds its random 8B model itself and comes in here); ``new_token_ids``:
    lora_config's."""
    if p.method == "qlora":
        from peft import prepare_model_for_kbit_training

        if os.environ.get("ACCELERATE_USE_FSDP", "").lower() == "true":
            # FSDP flattens each wrapped layer into one tensor of one dtype: keep the norms
            # in the compute dtype (the 4-bit storage is that dtype too, loading.bnb_config).
            if p.gradient_checkpointing:
                model.enable_input_require_grads()
            return model, lora_config(p, new_token_rows(model, new_token_ids))
        # Casts norms to fp32 and makes input embeddings require grads, as k-bit training needs.
        model = prepare_model_for_kbit_training(
            model, use_gradient_checkpointing=p.gradient_checkpointing)
        return model, lora_config(p, new_token_rows(model, new_token_ids))
    if p.method != "lora":
        return model, None
    return model, lora_config(p, new_token_rows(model, new_token_ids))


def build_trainer(p: TrainParams, base_dir: str | Path, train_file: str | Path,
                  checkpoint_dir: str | Path, val_file: str | Path | None = None,
                  callbacks=()) -> tuple:
    """(SFTTrainer, precision, train examples) for ``p``: seeded, tokenized by
    ``encoding``, the model loaded and PEFT-wrapped as ``p.method`` needs."""
    from tunelab.util.files import read_jsonl

    set_seed(p.seed)
    precision = run_support.resolve_precision(p.precision)
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

    writer = run_support.is_main_process()  # DDP/FSDP: other ranks train in step, write nothing
    resume_from, keeper = run_support.resume_point(p, base_dir, [train_file, val_file],
                                                   checkpoint_dir, live_dir, writer)
    callbacks = [keeper]  # first: it fixes the train_loss that DVCLive records
    if writer:
        resumed = resume_from is not None  # DVCLive and training.log continue the restored logs
        live = Live(dir=str(live_dir), resume=resumed, save_dvc_exp=False, dvcyaml=None)
        callbacks += [run_support.StepAlignedDVCLive(live=live),
                      run_support.TrainingLog(Path(live_dir) / "training.log",
                                              fresh=not resumed)]
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
    run_support.leave_process_group()
    if not writer:
        return summary
    trainer.processing_class.save_pretrained(str(adapter_dir))
    # save_model also pickles the TrainingArguments: nothing reads that file, a pickle runs
    # code when loaded, and the params that matter are in the model card below.
    (Path(adapter_dir) / run_support.TRAINING_ARGS_PICKLE).unlink(missing_ok=True)
    run_support.sort_target_modules(Path(adapter_dir) / "adapter_config.json")
    loading.write_train_info(adapter_dir, p.method, precision,
                            p.quantization if p.method == "qlora" else None)
    base_info = json.loads((Path(base_dir) / "tunelab_base.json").read_text())
    write_model_card(Path(adapter_dir) / "README.md", p, base_info,
                     run_support.file_sha256(train_file), summary)
    return summary


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
