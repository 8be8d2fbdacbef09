"""axolotl's YAML config as tunelab params: its key table, and the rules that read several
keys at once (the method from adapter + load_in_*bit, the objective from rl, the datasets).

axolotl trains one run per config: supervised fine-tuning, or (with ``rl:``) a preference or
RL run, which tunelab runs as its align step after SFT; so with ``rl:`` the run's keys
(learning_rate, micro_batch_size, ...) go to ``align.*``. A config without ``adapter:``
fine-tunes every weight in axolotl, so its import sets train.method: full (except with
``rl:``: tunelab's align step trains the SFT adapter, so a full-weight preference run has no
counterpart, a line says so).
"""

from __future__ import annotations

from pathlib import Path

from tunelab.config.key_maps import (ATTENTION, EVAL_DATA, FULL_WEIGHT_ALIGN, HUB, KERNELS,
                                     MULTI_GPU, NEW_ADAPTER, NO_COUNTERPART, OUTPUT_DIR, RAW_DATA,
                                     RESUME, SPECIAL_TOKENS, TOKENIZER, TRACKER, WANDB, WORKERS,
                                     Converted, Mapped, To, Unmapped, base_model, by_table, epochs,
                                     flattened, module_names, number, one_of, optimizer,
                                     precision, prompt_loss, share, warmup, whole)

NAME = "axolotl config"
# Keys only axolotl configs have (format detection; shared names like learning_rate are not).
CLUES = ("base_model", "adapter", "sequence_len", "micro_batch_size", "num_epochs", "lora_r",
         "lora_target_linear", "load_in_4bit", "load_in_8bit", "sample_packing",
         "val_set_size", "datasets", "rl", "special_tokens", "lora_target_modules",
         "pad_to_sequence_len", "dataset_prepared_path", "wandb_project", "optimizer",
         "lr_scheduler", "base_model_config")
GROUPS = ("trl", "bnb_config_kwargs")  # mappings whose keys are read one by one (trl.beta)
NULL_IS_A_VALUE = ("adapter",)         # `adapter:` left empty means a full fine-tune

CHAT_TEMPLATES = {"chatml": "chatml", "qwen3": "qwen3", "llama3": "llama3", "gemma": "gemma",
                  "gemma3": "gemma", "mistral_v1": "mistral", "phi_3": "phi3", "phi_35": "phi3",
                  "alpaca": "alpaca", "tokenizer_default": "auto"}
DATA_FORMATS = {"alpaca": "alpaca", "sharegpt": "sharegpt", "chat_template": "chat",
                "completion": "text"}
# rl: -> (align.objective, align.loss_type or None); `rl: true` is the old spelling of dpo.
OBJECTIVES = {"dpo": ("dpo", None), True: ("dpo", None), "ipo": ("dpo", "ipo"),
              "orpo": ("orpo", None), "kto": ("kto", None), "grpo": ("grpo", None)}
TF32 = "tunelab has no TF32 switch (PyTorch's default: matmuls in full fp32)"
NO_ALIGN_KNOB = "tunelab's align step has no counterpart (it uses TRL's default)"

TABLE = {
    "base_model": To("model.base", base_model),
    "base_model_config": TOKENIZER,
    "tokenizer_config": TOKENIZER,
    "model_type": "tunelab loads every model as AutoModelForCausalLM",
    "tokenizer_type": TOKENIZER,
    "trust_remote_code": "tunelab loads models with transformers' own code only",
    "chat_template": To("model.chat_template", one_of(
        CHAT_TEMPLATES, "no tunelab family matches {value}: model.chat_template auto keeps the "
        "model's own template, or save one as configs/chat_templates/NAME.jinja")),
    "chat_template_jinja": "save the template as configs/chat_templates/NAME.jinja and set "
                           "model.chat_template to that path",
    "default_system_message": To("prepare.system_prompt"),
    "lora_r": To("train.lora.r"),
    "lora_alpha": To("train.lora.alpha"),
    "lora_dropout": To("train.lora.dropout", number),
    "peft_use_dora": To("train.lora.use_dora"),
    "peft_use_rslora": To("train.lora.use_rslora"),
    "lora_modules_to_save": "tunelab saves the adapter only (plus the rows of the tokens "
                            "model.chat_template adds); whole modules beside it have no key",
    "lora_fan_in_fan_out": f"PEFT detects the layer layout itself; {NO_COUNTERPART}",
    "lora_model_dir": NEW_ADAPTER,
    "bnb_config_kwargs.bnb_4bit_quant_type": To("train.quantization.quant_type"),
    "bnb_config_kwargs.bnb_4bit_use_double_quant": To("train.quantization.double_quant"),
    "sequence_len": To("*.max_length"),
    "sample_packing": To("*.packing"),
    "eval_sample_packing": "tunelab measures validation loss on unpacked examples",
    "pad_to_sequence_len": "tunelab pads a batch only to its longest example (not at all with "
                           "train.padding_free)",
    "micro_batch_size": To("*.batch_size"),
    "gradient_accumulation_steps": To("*.gradient_accumulation"),
    "batch_size": "axolotl's total batch; tunelab's is train.batch_size x "
                  "train.gradient_accumulation (micro_batch_size, gradient_accumulation_steps)",
    "eval_batch_size": "tunelab measures validation loss at train.batch_size",
    "max_steps": To("*.max_steps"),
    "learning_rate": To("*.learning_rate", number),
    "lr_scheduler": To("*.lr_scheduler"),
    "weight_decay": To("*.weight_decay", number),
    "max_grad_norm": To("*.max_grad_norm", number),
    "gradient_checkpointing": To("*.gradient_checkpointing"),
    "gradient_checkpointing_kwargs": f"tunelab's gradient checkpointing has no options; "
                                     f"{NO_COUNTERPART}",
    "group_by_length": To("*.group_by_length"),
    "torch_compile": To("*.compile"),
    "seed": To("*.seed"),
    "logging_steps": To("*.logging_steps", whole),
    "eval_steps": To("*.eval_steps", whole),
    "save_steps": To("*.save_steps", whole),
    "evals_per_epoch": "tunelab counts evaluations in steps (train.eval_steps)",
    "saves_per_epoch": "tunelab counts checkpoints in steps (train.save_steps)",
    "save_total_limit": "tunelab keeps a run's checkpoints while it trains and "
                        "train.keep_checkpoints after it",
    "early_stopping_patience": To("*.early_stopping_patience"),
    "val_set_size": To("prepare.val_ratio", share),
    "test_datasets": EVAL_DATA,
    "dataset_prepared_path": "the prepare stage writes data/prepared, a DVC output",
    "output_dir": OUTPUT_DIR,
    "resume_from_checkpoint": RESUME,
    "auto_resume_from_checkpoints": RESUME,
    "tf32": TF32,
    "bfloat16": "tunelab loads the base in float32 and trains in train.precision",
    "float16": "tunelab loads the base in float32 and trains in train.precision",
    "optimizer": optimizer,
    "flash_attention": ATTENTION,
    "sdp_attention": ATTENTION,
    "xformers_attention": ATTENTION,
    "flex_attention": ATTENTION,
    "plugins": f"axolotl plugins (Liger, Cut Cross Entropy); {KERNELS}",
    "liger_rope": KERNELS, "liger_rms_norm": KERNELS, "liger_glu_activation": KERNELS,
    "liger_fused_linear_cross_entropy": KERNELS, "unsloth_lora_mlp": KERNELS,
    "deepspeed": MULTI_GPU, "fsdp": MULTI_GPU, "fsdp_config": MULTI_GPU, "fsdp_version": MULTI_GPU,
    "ddp_timeout": MULTI_GPU, "ddp_bucket_cap_mb": MULTI_GPU,
    "ddp_find_unused_parameters": MULTI_GPU,
    "wandb_project": WANDB, "wandb_entity": WANDB, "wandb_watch": WANDB, "wandb_name": WANDB,
    "wandb_run_id": WANDB, "wandb_log_model": WANDB, "wandb_mode": WANDB,
    "mlflow_tracking_uri": TRACKER, "mlflow_experiment_name": TRACKER, "use_tensorboard": TRACKER,
    "hub_model_id": HUB, "hub_strategy": HUB, "push_dataset_to_hub": HUB,
    "hf_use_auth_token": HUB,
    "special_tokens": SPECIAL_TOKENS, "tokens": SPECIAL_TOKENS,
    "strict": "axolotl's check of the config's keys; tunelab always refuses unknown params keys",
    "dataloader_num_workers": WORKERS, "dataloader_pin_memory": WORKERS,
    "dataloader_prefetch_factor": WORKERS, "dataset_processes": WORKERS,
    "train_on_inputs": prompt_loss,
    "neftune_noise_alpha": f"noise on the embeddings (NEFTune); {NO_COUNTERPART}",
    "unfrozen_parameters": "tunelab's full method trains every weight; freezing some has no key",
    "rl_beta": To("align.beta", number),
    "dpo_beta": To("align.beta", number),
    "trl.beta": To("align.beta", number),
    "orpo_alpha": To("align.beta", number),
    "trl.num_generations": To("align.num_generations"),
    "trl.max_completion_length": To("align.max_completion_length"),
    "trl.temperature": To("align.temperature", number),
    "trl.reward_funcs": "tunelab's GRPO reward is the evaluate scorer's scores weighted by "
                        "align.reward (docs/align.md)",
    "trl.reward_weights": "tunelab's GRPO reward weights are align.reward, by score name",
    "trl.use_vllm": "tunelab samples GRPO answers with transformers' generate",
    "rpo_alpha": NO_ALIGN_KNOB, "simpo_gamma": NO_ALIGN_KNOB, "cpo_alpha": NO_ALIGN_KNOB,
    "kto_desirable_weight": NO_ALIGN_KNOB, "kto_undesirable_weight": NO_ALIGN_KNOB,
    "dpo_label_smoothing": NO_ALIGN_KNOB, "rl_adapter_ref_model": NO_ALIGN_KNOB,
}
# Keys the rules below read (not the table).
RULE_KEYS = ("adapter", "load_in_4bit", "load_in_8bit", "lora_target_linear",
             "lora_target_modules", "bf16", "fp16", "rl", "num_epochs", "warmup_steps",
             "warmup_ratio", "datasets")


def convert(raw: dict) -> Converted:
    raw = flattened(raw, GROUPS)
    run = "align" if raw.get("rl") else "train"
    lines = [*_method(raw), *_target_modules(raw), *precision(raw, "bf16", "fp16"),
             *_objective(raw), *warmup(raw, "warmup_steps", "warmup_ratio", "max_steps"),
             *_datasets(raw.get("datasets"), run)]
    if "num_epochs" in raw:
        lines += epochs("num_epochs", raw["num_epochs"], raw.get("max_steps"))
    rest = {key: value for key, value in raw.items() if key not in RULE_KEYS}
    return Converted(lines + by_table(rest, TABLE), run)


def _method(raw: dict) -> list:
    """train.method and quantization.bits from adapter and load_in_4bit / load_in_8bit."""
    adapter = raw.get("adapter")
    bits = [b for b, key in ((4, "load_in_4bit"), (8, "load_in_8bit")) if raw.get(key) is True]
    quantized = adapter == "qlora" or (adapter == "lora" and bits)
    lines = []
    if len(bits) == 2:
        return [Unmapped(key, "load_in_4bit and load_in_8bit are both on; tunelab quantizes the "
                              "base one way (train.quantization.bits)")
                for key in ("load_in_4bit", "load_in_8bit")]
    if adapter in ("lora", "qlora"):
        note = f"on a {bits[0]}-bit base (load_in_{bits[0]}bit)" if adapter == "lora" and bits \
            else ""
        lines.append(Mapped("adapter", adapter, "train.method", "qlora" if quantized else "lora",
                            note))
    elif adapter is None and ("adapter" in raw or "base_model" in raw):
        lines.append(Unmapped("adapter", FULL_WEIGHT_ALIGN) if raw.get("rl") else
                     Mapped("adapter", raw.get("adapter", "(not set)"), "train.method", "full",
                            "no adapter: axolotl trains every weight"))
    elif "adapter" in raw:
        lines.append(Unmapped("adapter", f"tunelab trains a LoRA adapter (lora, qlora) or every "
                                         f"weight (full); no counterpart for {adapter}"))
    for bit, key in ((4, "load_in_4bit"), (8, "load_in_8bit")):
        if key not in raw:
            continue
        if raw[key] is not True:
            lines.append(Unmapped(key, "off: nothing to set"))
        elif quantized:
            lines.append(Mapped(key, True, "train.quantization.bits", bit))
        else:
            lines.append(Unmapped(key, "tunelab quantizes the base only under an adapter "
                                       "(train.method qlora); a full fine-tune trains "
                                       "unquantized weights"))
    return lines


def _target_modules(raw: dict) -> list:
    """lora_target_linear: true targets every linear layer, whatever lora_target_modules says."""
    lines = []
    linear = raw.get("lora_target_linear")
    if "lora_target_linear" in raw:
        lines.append(Mapped("lora_target_linear", True, "train.lora.target_modules", "all-linear")
                     if linear is True else Unmapped("lora_target_linear", "off: "
                                                     "lora_target_modules names the layers"))
    if "lora_target_modules" in raw:
        modules = raw["lora_target_modules"]
        lines.append(Unmapped("lora_target_modules", "lora_target_linear: true already targets "
                                                     "every linear layer") if linear is True
                     else Mapped("lora_target_modules", modules, "train.lora.target_modules",
                                 module_names(modules)))
    return lines


def _objective(raw: dict) -> list:
    if "rl" not in raw:
        return []
    rl = raw["rl"]
    if rl not in OBJECTIVES:
        return [Unmapped("rl", f"tunelab's align step runs dpo, orpo, kto or grpo; no counterpart "
                               f"for {rl}")]
    objective, loss_type = OBJECTIVES[rl]
    lines = [Mapped("rl", rl, "align.objective", objective)]
    if loss_type:
        lines.append(Mapped("rl", rl, "align.loss_type", loss_type, "DPO with the IPO loss"))
    return lines


def _datasets(datasets, run: str) -> list:
    """Each dataset's path (a local file or folder: the data key) and type (the format)."""
    if datasets is None:
        return []
    if not isinstance(datasets, list) or not all(isinstance(d, dict) for d in datasets):
        return [Unmapped("datasets", "expected a list of {path, type}")]
    data_key = "align.data" if run == "align" else "prepare.raw_dir"
    lines = []
    for index, dataset in enumerate(datasets):
        where = f"datasets[{index}]"
        if "path" in dataset:
            path = str(dataset["path"])
            lines.append(Mapped(f"{where}.path", path, data_key, path) if Path(path).exists()
                         else Unmapped(f"{where}.path", f"{path!r} is no file or folder here; "
                                                        f"{RAW_DATA}"))
        if "type" in dataset:
            lines.append(_dataset_type(f"{where}.type", dataset["type"], run))
        others = [key for key in dataset if key not in ("path", "type")]
        if others:
            lines.append(Unmapped(f"{where}: {', '.join(others)}",
                                  "tunelab's readers find the fields themselves; "
                                  "prepare.columns / prepare.roles rename others"))
    return lines


def _dataset_type(source: str, kind, run: str):
    if run == "align":
        return Unmapped(source, "the align step reads preference records itself (align.format "
                                "auto: chosen/rejected pairs or KTO labels)")
    if kind in DATA_FORMATS:
        return Mapped(source, kind, "prepare.format", DATA_FORMATS[kind])
    return Unmapped(source, f"no tunelab format matches {kind}; tunelab reads alpaca, chat, "
                            "sharegpt, prompt_completion and text records (prepare.format)")

