"""LLaMA-Factory's YAML config (`llamafactory-cli train FILE`) as tunelab params: its key
table, and the rules that read several keys at once (the method from finetuning_type +
quantization_bit, the objective from stage + pref_loss).

A ``stage: dpo`` or ``kto`` config trains on preferences, which tunelab runs as its align
step after SFT, so its run keys (learning_rate, per_device_train_batch_size, ...) go to
``align.*``. LLaMA-Factory's lora_alpha defaults to 2 x lora_rank, so a config that gives
only lora_rank sets train.lora.alpha to that.
"""

from __future__ import annotations

from tunelab.config.key_maps import (ATTENTION, CACHE, EVAL_DATA, FULL_WEIGHT_ALIGN, HUB,
                                     KERNELS, MULTI_GPU, NEW_ADAPTER, NO_COUNTERPART, OUTPUT_DIR,
                                     RAW_DATA, RESUME, SPECIAL_TOKENS, TRACKER, WANDB, WORKERS,
                                     Converted, Mapped, NoCounterpart, To, Unmapped, base_model,
                                     by_table, epochs, eval_strategy, module_names, number, one_of,
                                     optimizer, precision, prompt_loss, share, warmup, whole)

NAME = "LLaMA-Factory config"
CLUES = ("model_name_or_path", "stage", "finetuning_type", "lora_rank", "lora_target",
         "template", "cutoff_len", "per_device_train_batch_size", "num_train_epochs", "dataset",
         "lr_scheduler_type", "quantization_bit", "val_size", "pref_beta", "pref_loss",
         "do_train", "dataset_dir", "overwrite_output_dir", "plot_loss")
NULL_IS_A_VALUE = ()

TEMPLATES = {"chatml": "chatml", "qwen3": "qwen3", "llama3": "llama3", "gemma": "gemma",
             "gemma3": "gemma", "llama2": "llama2", "mistral": "mistral", "phi": "phi3",
             "alpaca": "alpaca"}
NO_TEMPLATE = ("no tunelab family matches {value}: model.chat_template auto keeps the model's own "
               "template, or save one as configs/chat_templates/NAME.jinja")
QWEN = ("LLaMA-Factory's qwen template is ChatML plus Qwen's default system prompt: auto keeps "
        "the model's own, or set model.chat_template: chatml and prepare.system_prompt")
# pref_loss of a dpo stage -> (align.objective, align.loss_type or None)
PREFERENCE_LOSSES = {"sigmoid": ("dpo", "sigmoid"), "hinge": ("dpo", "hinge"),
                     "ipo": ("dpo", "ipo"), "orpo": ("orpo", None)}
NO_ALIGN_KNOB = "tunelab's align step has no counterpart (it uses TRL's default)"
DATASET_NAMES = f"dataset names of LLaMA-Factory's data/dataset_info.json; {RAW_DATA}"


def _template(value):
    if value == "qwen":
        raise NoCounterpart(QWEN)
    return one_of(TEMPLATES, NO_TEMPLATE)(value)


def _report_to(value) -> str:
    if value in ("none", []):
        return "tunelab logs every run with DVCLive (metrics/train, `dvc plots`) anyway"
    return WANDB if "wandb" in str(value) else TRACKER


TABLE = {
    "model_name_or_path": To("model.base", base_model),
    "adapter_name_or_path": NEW_ADAPTER,
    "cache_dir": "the base stage saves the model into models/base, a DVC output",
    "trust_remote_code": "tunelab loads models with transformers' own code only",
    "template": To("model.chat_template", _template),
    "do_train": "tunelab runs every stage with `dvc repro`: nothing to switch on",
    "do_eval": "tunelab runs every stage with `dvc repro`: nothing to switch on",
    "do_predict": "tunelab runs every stage with `dvc repro`: nothing to switch on",
    "lora_rank": To("train.lora.r"),
    "lora_alpha": To("train.lora.alpha"),
    "lora_dropout": To("train.lora.dropout", number),
    "lora_target": To("train.lora.target_modules", module_names),
    "use_dora": To("train.lora.use_dora"),
    "use_rslora": To("train.lora.use_rslora"),
    "additional_target": "tunelab saves the adapter only (plus the rows of the tokens "
                         "model.chat_template adds); whole modules beside it have no key",
    "loraplus_lr_ratio": f"LoRA+ learning rates; {NO_COUNTERPART}",
    "pissa_init": f"PiSSA initialisation; {NO_COUNTERPART}",
    "create_new_adapter": NEW_ADAPTER,
    "use_galore": f"GaLore; {NO_COUNTERPART}", "use_apollo": f"APOLLO; {NO_COUNTERPART}",
    "use_badam": f"BAdam; {NO_COUNTERPART}", "use_llama_pro": f"LLaMA Pro; {NO_COUNTERPART}",
    "quantization_type": To("train.quantization.quant_type"),
    "double_quantization": To("train.quantization.double_quant"),
    "quantization_method": lambda value: (
        "bitsandbytes, which tunelab's qlora uses: nothing to set" if value in ("bnb",
                                                                              "bitsandbytes")
        else f"tunelab quantizes with bitsandbytes only; no counterpart for {value}"),
    "dataset": DATASET_NAMES,
    "dataset_dir": DATASET_NAMES,
    "eval_dataset": EVAL_DATA,
    "max_samples": "tunelab trains on every record in prepare.raw_dir; cut the files to train "
                   "on fewer",
    "overwrite_cache": CACHE,
    "preprocessing_num_workers": WORKERS,
    "dataloader_num_workers": WORKERS,
    "cutoff_len": To("*.max_length"),
    "packing": To("*.packing"),
    "neat_packing": To("*.packing"),
    "train_on_prompt": prompt_loss,
    "mask_history": To("train.train_on", one_of({True: "last", False: "all_assistant"},
                                                "expected true or false, got {value!r}")),
    "val_size": To("prepare.val_ratio", share),
    "per_device_train_batch_size": To("*.batch_size"),
    "per_device_eval_batch_size": "tunelab measures validation loss at train.batch_size",
    "gradient_accumulation_steps": To("*.gradient_accumulation"),
    "learning_rate": To("*.learning_rate", number),
    "max_steps": To("*.max_steps"),
    "lr_scheduler_type": To("*.lr_scheduler"),
    "weight_decay": To("*.weight_decay", number),
    "max_grad_norm": To("*.max_grad_norm", number),
    "seed": To("*.seed"),
    "disable_gradient_checkpointing": To("*.gradient_checkpointing",
                                         lambda value: not value if isinstance(value, bool)
                                         else value),
    "group_by_length": To("*.group_by_length"),
    "torch_compile": To("*.compile"),
    "logging_steps": To("*.logging_steps", whole),
    "save_steps": To("*.save_steps", whole),
    "eval_steps": To("*.eval_steps", whole),
    "save_strategy": "tunelab saves a checkpoint every train.save_steps steps (0 = off)",
    "save_total_limit": "tunelab keeps a run's checkpoints while it trains and "
                        "train.keep_checkpoints after it",
    "save_only_model": RESUME,
    "resume_from_checkpoint": RESUME,
    "load_best_model_at_end": "tunelab keeps the best checkpoint when "
                              "train.early_stopping_patience > 0",
    "output_dir": OUTPUT_DIR,
    "overwrite_output_dir": OUTPUT_DIR,
    "plot_loss": "tunelab plots every run (reports/plots/, `dvc plots`)",
    "report_to": _report_to,
    "run_name": "`dvc exp run -n NAME` names a run",
    "pure_bf16": "tunelab's bf16 keeps fp32 master weights (mixed precision); no pure-bf16 switch",
    "tf32": "tunelab has no TF32 switch (PyTorch's default: matmuls in full fp32)",
    "optim": optimizer,
    "flash_attn": ATTENTION, "shift_attn": ATTENTION,
    "enable_liger_kernel": KERNELS, "use_unsloth": KERNELS,
    "deepspeed": MULTI_GPU, "fsdp": MULTI_GPU, "fsdp_config": MULTI_GPU, "ddp_timeout": MULTI_GPU,
    "ddp_find_unused_parameters": MULTI_GPU,
    "rope_scaling": "tunelab keeps the model's own position settings",
    "new_special_tokens": SPECIAL_TOKENS, "add_special_tokens": SPECIAL_TOKENS,
    "resize_vocab": SPECIAL_TOKENS,
    "pref_beta": To("align.beta", number),
    "pref_ftx": lambda value: (
        "0: no SFT loss mixed into the preference loss, as tunelab's align: nothing to set"
        if not value else "SFT loss mixed into the preference loss (TRL's rpo_alpha); "
                          + NO_ALIGN_KNOB),
    "ref_model": "tunelab's reference model is the SFT model (align)",
    "dpo_label_smoothing": NO_ALIGN_KNOB, "simpo_gamma": NO_ALIGN_KNOB,
    "kto_chosen_weight": NO_ALIGN_KNOB, "kto_rejected_weight": NO_ALIGN_KNOB,
    "pref_bco_weight": NO_ALIGN_KNOB,
    "push_to_hub": HUB, "hub_model_id": HUB, "hf_hub_token": HUB,
}
RULE_KEYS = ("finetuning_type", "quantization_bit", "stage", "pref_loss", "bf16", "fp16",
             "num_train_epochs", "warmup_steps", "warmup_ratio", "eval_strategy",
             "evaluation_strategy")


def convert(raw: dict) -> Converted:
    run = "align" if raw.get("stage", "sft") not in ("sft", "pt") else "train"
    lines = [*_method(raw), *precision(raw, "bf16", "fp16"), *_objective(raw),
             *warmup(raw, "warmup_steps", "warmup_ratio", "max_steps")]
    if "num_train_epochs" in raw:
        lines += epochs("num_train_epochs", raw["num_train_epochs"], raw.get("max_steps"))
    for key in ("eval_strategy", "evaluation_strategy"):
        if key in raw:
            lines.append(eval_strategy(key, raw[key]))
    rest = {key: value for key, value in raw.items() if key not in RULE_KEYS}
    return Converted(lines + by_table(rest, TABLE) + _default_alpha(raw), run)


def _method(raw: dict) -> list:
    """train.method and quantization.bits from finetuning_type (default lora) and
    quantization_bit."""
    kind, bits = raw.get("finetuning_type", "lora"), raw.get("quantization_bit")
    lines = []
    if kind == "full" and raw.get("stage", "sft") not in ("sft", "pt"):
        lines.append(Unmapped("finetuning_type", FULL_WEIGHT_ALIGN))
    elif kind not in ("lora", "full"):
        lines.append(Unmapped("finetuning_type", f"tunelab trains a LoRA adapter (lora, qlora) "
                                                 f"or every weight (full); no counterpart for "
                                                 f"{kind}"))
    elif kind == "full" and bits is not None:
        lines += [Mapped("finetuning_type", kind, "train.method", "full"),
                  Unmapped("quantization_bit", "tunelab quantizes the base only under an "
                                               "adapter (train.method qlora); a full fine-tune "
                                               "trains unquantized weights")]
    elif bits is not None and bits not in (4, 8):
        lines += [Unmapped(key, f"tunelab quantizes the base to 4 or 8 bits (bitsandbytes); no "
                                f"counterpart for quantization_bit {bits}")
                  for key in ("finetuning_type", "quantization_bit") if key in raw]
    else:
        source = "finetuning_type" if "finetuning_type" in raw else "quantization_bit"
        method = "qlora" if bits is not None and kind == "lora" else kind
        if "finetuning_type" in raw or bits is not None:
            lines.append(Mapped(source, raw[source], "train.method", method,
                                f"on a {bits}-bit base (quantization_bit)" if method == "qlora"
                                else ""))
        if bits is not None:
            lines.append(Mapped("quantization_bit", bits, "train.quantization.bits", bits))
    return lines


def _default_alpha(raw: dict) -> list:
    """LLaMA-Factory's lora_alpha when the config gives none: 2 x lora_rank."""
    rank = raw.get("lora_rank")
    if raw.get("finetuning_type", "lora") != "lora" or "lora_alpha" in raw \
            or not isinstance(rank, int) or isinstance(rank, bool):
        return []
    return [Mapped("lora_rank", rank, "train.lora.alpha", 2 * rank,
                   "no lora_alpha: LLaMA-Factory's default is 2 x lora_rank")]


def _objective(raw: dict) -> list:
    """align.objective (and loss_type) from stage and pref_loss."""
    stage, loss = raw.get("stage"), raw.get("pref_loss")
    lines = []
    if stage == "sft":
        lines.append(Mapped("stage", stage, "align.objective", "none",
                            "supervised fine-tuning only"))
    elif stage == "pt":
        lines += [Mapped("stage", stage, "prepare.format", "text",
                         "pre-training reads plain-text records"),
                  Mapped("stage", stage, "align.objective", "none")]
    elif stage == "kto":
        lines.append(Mapped("stage", stage, "align.objective", "kto"))
    elif stage == "dpo" and (loss or "sigmoid") in PREFERENCE_LOSSES:
        objective, loss_type = PREFERENCE_LOSSES[loss or "sigmoid"]
        lines.append(Mapped("stage", stage, "align.objective", objective))
        if "pref_loss" in raw:
            lines.append(Mapped("pref_loss", loss, "align.loss_type", loss_type)
                         if loss_type else Mapped("pref_loss", loss, "align.objective", objective))
        return lines
    elif stage == "dpo":
        return [Unmapped(key, f"tunelab's align step runs dpo (sigmoid, hinge, ipo), orpo, kto "
                              f"or grpo; no counterpart for pref_loss {loss}")
                for key in ("stage", "pref_loss")]
    elif stage is not None:
        lines.append(Unmapped("stage", f"tunelab trains no reward model: its RL step is GRPO, "
                                       f"rewarded by the evaluate scorer (align.objective: "
                                       f"grpo); no counterpart for {stage}"))
    if "pref_loss" in raw:
        lines.append(Unmapped("pref_loss", "only a dpo stage reads it"))
    return lines
