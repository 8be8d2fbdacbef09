"""The layout of the fine-tuning guide tunelab grew from, as tunelab params and sweep files:
its lora_config.yaml (``model_name``, ``lora_config.r``, ``training.num_epochs``,
``optimization.fp16``, ``validation.validation_split``, ...) and its hp_search.yaml
(``search_space`` lists, ``search_strategy``, ``max_trials``, ``metric``).

The guide's runs are supervised LoRA fine-tunes, so every key goes to ``train.*`` (or
prepare's split); its hp_search.yaml becomes a sweep file (tunelab.config.sweep_file) whose
search space names the same knobs by their params keys.
"""

from __future__ import annotations

from tunelab.config.key_maps import (WORKERS, Converted, Mapped, To, Unmapped, base_model,
                                     by_table, epochs, eval_strategy, flattened, module_names,
                                     number, precision, share, warmup, whole)

NAME = "the guide's lora_config.yaml layout"
CLUES = ("model_name", "base_model_path", "lora_config", "training", "optimization",
         "validation")
GROUPS = ("lora_config", "training", "optimization", "validation")
NULL_IS_A_VALUE = ()

TABLE = {
    "model_name": To("model.base", base_model),
    "base_model_path": To("model.base", base_model),
    "lora_config.r": To("train.lora.r"),
    "lora_config.lora_alpha": To("train.lora.alpha"),
    "lora_config.lora_dropout": To("train.lora.dropout", number),
    "lora_config.target_modules": To("train.lora.target_modules", module_names),
    "lora_config.bias": lambda value: (
        "tunelab trains no bias terms, which none asks: nothing to set" if value == "none"
        else f"tunelab trains no bias terms; no counterpart for {value}"),
    "training.batch_size": To("*.batch_size"),
    "training.gradient_accumulation": To("*.gradient_accumulation"),
    "training.learning_rate": To("*.learning_rate", number),
    "training.max_length": To("*.max_length"),
    "training.max_steps": To("*.max_steps"),
    "training.weight_decay": To("*.weight_decay", number),
    "training.lr_scheduler": To("*.lr_scheduler"),
    "training.seed": To("*.seed"),
    "optimization.gradient_checkpointing": To("*.gradient_checkpointing"),
    "optimization.max_grad_norm": To("*.max_grad_norm", number),
    "optimization.dataloader_num_workers": WORKERS,
    "validation.eval_steps": To("*.eval_steps", whole),
    "validation.save_steps": To("*.save_steps", whole),
    "validation.validation_split": To("prepare.val_ratio", share),
}
RULE_KEYS = ("training.num_epochs", "training.warmup_steps", "training.warmup_ratio",
             "optimization.fp16", "optimization.bf16", "validation.eval_strategy")


def convert(raw: dict) -> Converted:
    raw = flattened(raw, GROUPS)
    lines = [*precision(raw, "optimization.bf16", "optimization.fp16"),
             *warmup(raw, "training.warmup_steps", "training.warmup_ratio",
                     "training.max_steps")]
    if "training.num_epochs" in raw:
        lines += epochs("training.num_epochs", raw["training.num_epochs"],
                        raw.get("training.max_steps"))
    if "validation.eval_strategy" in raw:
        lines.append(eval_strategy("validation.eval_strategy", raw["validation.eval_strategy"]))
    if "model_name" in raw and "base_model_path" in raw:  # the path is the model loaded
        lines.append(Unmapped("model_name", "a name for the guide's model list; "
                                            "base_model_path gives the weights (model.base)"))
    rest = {key: value for key, value in raw.items()
            if key not in RULE_KEYS and not (key == "model_name" and "base_model_path" in raw)}
    return Converted(lines + by_table(rest, TABLE))


# --- hp_search.yaml -> a sweep file ------------------------------------------------------

SEARCH_NAME = "the guide's hp_search.yaml layout"
SEARCH_CLUES = ("search_space", "search_strategy", "max_trials", "metric")
# The guide's knob names -> params keys, for search_space.
SEARCH_KEYS = {"learning_rate": "train.learning_rate", "lora_r": "train.lora.r",
               "lora_alpha": "train.lora.alpha", "lora_dropout": "train.lora.dropout",
               "batch_size": "train.batch_size",
               "gradient_accumulation": "train.gradient_accumulation",
               "num_epochs": "train.epochs", "max_length": "train.max_length",
               "weight_decay": "train.weight_decay", "warmup_ratio": "train.warmup_ratio",
               "max_steps": "train.max_steps"}
STRATEGIES = {"grid": "grid", "random": "random", "bayesian": "bayesian"}
# metric -> (a sweep metric: train.KEY is metrics/train/summary.json's, direction)
METRICS = {"validation_loss": ("train.eval_loss", "minimize"),
           "eval_loss": ("train.eval_loss", "minimize"),
           "val_loss": ("train.eval_loss", "minimize"),
           "train_loss": ("train.train_loss", "minimize"),
           "training_loss": ("train.train_loss", "minimize")}
NO_METRIC = ("tunelab's sweep metric is a number of metrics/eval.json (tuned.task_accuracy, "
             "tuned.loss, ...) or of metrics/train/summary.json (train.eval_loss); no "
             "counterpart for {value}")


def convert_search(raw: dict) -> list:
    """Lines whose keys are the sweep file's (search_space.train.lora.r, strategy, ...)."""
    lines = []
    for key, value in raw.items():
        if key == "search_space":
            lines += _space(value)
        elif key == "search_strategy":
            lines.append(Mapped(key, value, "strategy", STRATEGIES[value])
                         if value in STRATEGIES else
                         Unmapped(key, f"tunelab sweeps grid, random or bayesian (Optuna TPE); "
                                       f"no counterpart for {value}"))
        elif key in ("max_trials", "n_trials"):
            lines.append(Mapped(key, value, "max_trials", value))
        elif key == "seed":
            lines.append(Mapped(key, value, "seed", value))
        elif key == "metric":
            lines += _metric(value, raw.get("direction"))
        elif key == "direction":
            lines.append(Mapped(key, value, "direction", value) if value in ("minimize",
                                                                             "maximize")
                         else Unmapped(key, f"expected minimize or maximize, got {value!r}"))
        else:
            lines.append(Unmapped(key, "a key tunelab's import does not know; no counterpart "
                                       "in a sweep file"))
    return lines


def _space(space) -> list:
    if not isinstance(space, dict):
        return [Unmapped("search_space", "expected a mapping of knob names to lists of values")]
    lines = []
    for name, values in space.items():
        source = f"search_space.{name}"
        if name not in SEARCH_KEYS:
            lines.append(Unmapped(source, "no params key for this knob in tunelab's sweeps"
                                  + ("; tunelab sets warmup as a share of the run: search "
                                     "warmup_ratio instead" if name == "warmup_steps" else "")))
        elif not isinstance(values, list) or not values:
            lines.append(Unmapped(source, "expected a list of values; tunelab ranges are "
                                          "{low, high} (write them in the sweep file)"))
        else:
            converted = [number(v) if SEARCH_KEYS[name] in _FLOAT_KEYS else v for v in values]
            lines.append(Mapped(source, values, f"search_space.{SEARCH_KEYS[name]}", converted))
    return lines


_FLOAT_KEYS = ("train.learning_rate", "train.lora.dropout", "train.weight_decay",
               "train.warmup_ratio")


def _metric(value, direction) -> list:
    if value not in METRICS:
        return [Unmapped("metric", NO_METRIC.format(value=value))]
    metric, implied = METRICS[value]
    lines = [Mapped("metric", value, "metric", metric)]
    if direction is None:
        lines.append(Mapped("metric", value, "direction", implied, "a loss: lower is better"))
    return lines
