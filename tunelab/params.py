"""params.yaml: typed, validated sections.

Each stage calls ``load("train")`` and gets a dataclass of plain values. Every
problem is one line naming the params key and the reason, so a typo fails
before any stage does work.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import typing
from dataclasses import dataclass, field
from pathlib import Path

import yaml

PARAMS_FILE = "params.yaml"


class ParamsError(ValueError):
    """A params.yaml problem; the message names the key and the reason."""


@dataclass
class ModelParams:
    base: str = "smollm2-135m-instruct"


@dataclass
class PrepareParams:
    raw_dir: str = "data/raw"
    format: str = "auto"
    val_ratio: float = 0.1
    test_ratio: float = 0.1
    seed: int = 42
    system_prompt: str = ""


@dataclass
class ValidateParams:
    max_truncated_ratio: float = 0.05
    fail_on_warning: bool = False


@dataclass
class LoraParams:
    r: int = 16
    alpha: int = 32
    dropout: float = 0.0
    target_modules: typing.Union[str, list] = "all-linear"
    use_dora: bool = False
    use_rslora: bool = False


@dataclass
class QuantizationParams:
    bits: int = 4
    quant_type: str = "nf4"
    double_quant: bool = True


@dataclass
class GuardParams:
    grad_norm_factor: float = 100.0
    warmup_logs: int = 3


@dataclass
class TrainParams:
    method: str = "lora"
    learning_rate: float = 1e-3
    full_learning_rate: float = 2e-5
    epochs: float = 1
    max_steps: int = 30
    batch_size: int = 8
    gradient_accumulation: int = 1
    warmup_ratio: float = 0.05
    lr_scheduler: str = "cosine"
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    max_length: int = 256
    seed: int = 42
    precision: str = "auto"
    gradient_checkpointing: bool = False
    packing: bool = False
    logging_steps: int = 5
    eval_steps: int = 15
    save_steps: int = 10
    keep_checkpoints: int = 0
    early_stopping_patience: int = 0
    lora: LoraParams = field(default_factory=LoraParams)
    quantization: QuantizationParams = field(default_factory=QuantizationParams)
    guard: GuardParams = field(default_factory=GuardParams)

    @property
    def peak_learning_rate(self) -> float:
        """Full fine-tuning moves every weight, so it wants a far smaller rate."""
        return self.full_learning_rate if self.method == "full" else self.learning_rate


@dataclass
class EvaluateParams:
    max_new_tokens: int = 64
    batch_size: int = 24
    max_examples: int = 0


@dataclass
class PlotParams:
    dpi: int = 100


@dataclass
class ReportParams:
    max_samples: int = 10


@dataclass
class MetricTolerance:
    direction: str = "higher"  # higher | lower: which way is better
    tolerance: float = 0.0     # how far (absolute) it may move the other way


DEFAULT_CHECKS = {"tuned.task_accuracy": ("higher", 0.02), "tuned.json_valid": ("higher", 0.02),
                  "tuned.exact_match": ("higher", 0.05), "tuned.loss": ("lower", 0.02)}


@dataclass
class CheckParams:
    """`check:` maps metric names to tolerances for `tunelab check` (tunelab.gate); no
    stage reads it. Its keys are free-form metric names, so it validates itself."""
    tolerances: dict = field(default_factory=lambda: {
        name: MetricTolerance(direction, tolerance)
        for name, (direction, tolerance) in DEFAULT_CHECKS.items()})

    @classmethod
    def from_mapping(cls, values: dict, prefix: str, path) -> "CheckParams":
        if not values:
            return cls()
        tolerances = {}
        for name, rule in values.items():
            key = f"{prefix}.{name}"
            if not isinstance(rule, dict) or "direction" not in rule:
                raise ParamsError(f"{path}: {key}: expected {{direction: higher|lower, "
                                  f"tolerance: NUMBER}}, got {rule!r}")
            tolerance = build(MetricTolerance, rule, key, path)
            if tolerance.direction not in ("higher", "lower"):
                raise ParamsError(f"{path}: {key}.direction: must be one of higher, lower, "
                                  f"got {tolerance.direction!r}")
            if tolerance.tolerance < 0:
                raise ParamsError(f"{path}: {key}.tolerance: must be >= 0, "
                                  f"got {tolerance.tolerance}")
            tolerances[str(name)] = tolerance
        return cls(tolerances)


SECTIONS = {
    "model": ModelParams,
    "prepare": PrepareParams,
    "validate": ValidateParams,
    "train": TrainParams,
    "evaluate": EvaluateParams,
    "plot": PlotParams,
    "report": ReportParams,
    "check": CheckParams,
}

CHOICES = {
    "prepare.format": ("auto", "alpaca", "chat", "sharegpt", "prompt_completion", "text"),
    "train.method": ("lora", "qlora", "full"),
    "train.quantization.bits": (4, 8),
    "train.quantization.quant_type": ("nf4", "fp4"),
    "train.lr_scheduler": ("cosine", "linear", "constant", "constant_with_warmup"),
    "train.precision": ("auto", "bf16", "fp16", "fp32"),
}
POSITIVE = {"train.learning_rate", "train.full_learning_rate", "train.batch_size", "train.gradient_accumulation",
            "train.max_length", "train.logging_steps", "train.lora.r", "train.lora.alpha",
            "train.guard.warmup_logs",
            "evaluate.max_new_tokens", "evaluate.batch_size", "plot.dpi"}
NON_NEGATIVE = {"train.epochs", "train.weight_decay", "train.max_grad_norm", "train.eval_steps",
                "train.save_steps", "train.early_stopping_patience", "evaluate.max_examples",
                "train.keep_checkpoints", "train.guard.grad_norm_factor",
                "report.max_samples"}
UNIT_INTERVAL = {"prepare.val_ratio", "prepare.test_ratio", "train.warmup_ratio",
                 "train.lora.dropout", "validate.max_truncated_ratio"}


def load(section: str, path: str | Path = PARAMS_FILE):
    """Return the validated dataclass for one section of params.yaml."""
    raw = read_file(path)
    loaded = build(SECTIONS[section], raw.get(section) or {}, section, path)
    _check_across(section, loaded, path)
    return loaded


def load_all(path: str | Path = PARAMS_FILE, also_known: tuple[str, ...] = ()) -> dict:
    """Validate every section (unknown sections are errors too, except ``also_known``:
    sections another module validates, like multitask/params.yaml's `multitask`)."""
    raw = read_file(path)
    for name in raw:
        if name not in SECTIONS and name not in also_known:
            raise ParamsError(f"{path}: {name}: unknown section{_did_you_mean(name, SECTIONS)}")
    sections = {name: build(cls, raw.get(name) or {}, name, path) for name, cls in SECTIONS.items()}
    for name, loaded in sections.items():
        _check_across(name, loaded, path)
    return sections


def read_file(path: str | Path) -> dict:
    try:
        with open(path, encoding="utf-8") as f:
            raw = yaml.safe_load(f) or {}
    except FileNotFoundError:
        raise ParamsError(f"{path}: file not found") from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f":{mark.line + 1}" if mark else ""
        raise ParamsError(f"{path}{where}: invalid YAML: {getattr(err, 'problem', err)}") from None
    if not isinstance(raw, dict):
        raise ParamsError(f"{path}: expected a mapping of sections at the top level")
    return raw


def build(cls, values: dict, prefix: str, path: str | Path = PARAMS_FILE):
    """Make ``cls`` from a mapping; ``prefix`` is its dotted key for messages."""
    if not isinstance(values, dict):
        raise ParamsError(f"{path}: {prefix}: expected a mapping, got {type(values).__name__}")
    if hasattr(cls, "from_mapping"):  # free-form keys (check:): the class validates them
        return cls.from_mapping(values, prefix, path)
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in values.items():
        full_key = f"{prefix}.{key}"
        if key not in known:
            raise ParamsError(f"{path}: {full_key}: unknown key{_did_you_mean(key, known)}")
        hint = hints[key]
        if dataclasses.is_dataclass(hint):
            kwargs[key] = build(hint, value or {}, full_key, path)
        else:
            kwargs[key] = _check_value(full_key, _coerce(full_key, value, hint, path), path)
    return cls(**kwargs)


def _coerce(key: str, value, hint, path):
    if hint is bool:
        if isinstance(value, bool):
            return value
    elif hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        # YAML 1.1 reads "1e-4" (no dot) as a string; accept it as the number it means.
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
    elif hint is str:
        if isinstance(value, str):
            return value
    else:  # str | list, e.g. lora.target_modules
        if isinstance(value, str) or (isinstance(value, list) and value
                                      and all(isinstance(v, str) for v in value)):
            return value
        raise ParamsError(f"{path}: {key}: expected a string or a non-empty list of strings, "
                          f"got {value!r}")
    raise ParamsError(f"{path}: {key}: expected {hint.__name__}, got {type(value).__name__} "
                      f"{value!r}")


def _check_value(key: str, value, path):
    if isinstance(value, float) and not math.isfinite(value):
        raise ParamsError(f"{path}: {key}: must be a finite number, got {value}")
    if key == "train.max_steps" and not (value == -1 or value > 0):
        raise ParamsError(f"{path}: {key}: must be -1 (train for `epochs`) or > 0, got {value}")
    if key in CHOICES and value not in CHOICES[key]:
        raise ParamsError(f"{path}: {key}: must be one of {', '.join(CHOICES[key])}, "
                          f"got {value!r}")
    if key in POSITIVE and value <= 0:
        raise ParamsError(f"{path}: {key}: must be > 0, got {value}")
    if key in NON_NEGATIVE and value < 0:
        raise ParamsError(f"{path}: {key}: must be >= 0, got {value}")
    if key in UNIT_INTERVAL and not 0 <= value < 1:
        raise ParamsError(f"{path}: {key}: must be in [0, 1), got {value}")
    return value


def check_split(prepare: PrepareParams, path: str | Path = PARAMS_FILE) -> None:
    if prepare.val_ratio + prepare.test_ratio >= 1:
        raise ParamsError(f"{path}: prepare.val_ratio + prepare.test_ratio must be < 1 "
                          f"(the rest is the train split), got "
                          f"{prepare.val_ratio + prepare.test_ratio:g}")


def check_train(train: TrainParams, path: str | Path = PARAMS_FILE) -> None:
    # A checkpoint must fall on a logging step: the trainer's running loss since the last
    # log is not saved, so a resumed run would log a different curve.
    if train.save_steps and train.save_steps % train.logging_steps:
        raise ParamsError(f"{path}: train.save_steps: must be a multiple of train.logging_steps "
                          f"({train.logging_steps}) so a resumed run logs the same curve, "
                          f"got {train.save_steps}")


def _check_across(section: str, loaded, path) -> None:
    """Checks that span several keys of one section."""
    if section == "prepare":
        check_split(loaded, path)
    elif section == "train":
        check_train(loaded, path)


def _did_you_mean(word: str, options) -> str:
    close = difflib.get_close_matches(word, list(options), n=1)
    return f" (did you mean '{close[0]}'?)" if close else ""
