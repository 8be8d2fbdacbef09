"""params.yaml: one pydantic model per section, the only copy of each default and range.

Each stage calls ``load("train")`` and gets that section validated, defaults filled in.
Every problem is one line naming the params key and the reason (tunelab.config.schema
words them), so a typo fails before any stage does work. params.yaml's comments are
the user's manual; a test checks that its values equal the defaults here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal, get_args, get_origin

import yaml
from pydantic import (AfterValidator, BaseModel, Field, RootModel, field_validator,
                      model_validator)

from tunelab.chat import families
from tunelab.config.schema import (Bool, Float, Int, Names, RepoPath, RepoPathOrNone, Section,
                                   Str, StepLimit, choice, complaint, is_model, parse,
                                   path_in_repo)
from tunelab.errors import ParamsError
from tunelab.util.names import did_you_mean

PARAMS_FILE = "params.yaml"
UNIT_INTERVAL = {"ge": 0, "lt": 1}  # shares of a whole: 0 allowed, 1 (all of it) not

# The choice keys; params.CHOICES lists their options for command-line flags.
TextSplit = choice("file", "blank_lines")
TrainOn = choice("all_assistant", "last")
Reasoning = choice("keep", "drop")
Untrainable = choice("drop", "fail")
DataFormat = choice("auto", "alpaca", "chat", "sharegpt", "prompt_completion", "text")
Method = choice("lora", "qlora", "full")
Scheduler = choice("cosine", "linear", "constant", "constant_with_warmup")
Precision = choice("auto", "bf16", "fp16", "fp32")
QuantBits = choice(4, 8)
QuantType = choice("nf4", "fp4")
Better = choice("higher", "lower")
# llama.cpp's GGUF file types (its LLAMA_FTYPE_MOSTLY_* names, lower case): full precision,
# 8-bit, the k-quants and the older block types.
Objective = choice("none", "dpo", "orpo", "kto", "grpo")
PreferenceFormat = choice("auto", "paired", "kto")
GgufType = choice("f32", "f16", "bf16", "q8_0", "q6_k", "q5_k_m", "q5_k_s", "q5_1", "q5_0",
                  "q4_k_m", "q4_k_s", "q4_1", "q4_0", "q3_k_l", "q3_k_m", "q3_k_s", "q2_k")


def _template_choice(value: str) -> str:
    """auto, a .jinja file or a registered family (families.family words the refusal)."""
    if value == "auto" or value.endswith(".jinja"):
        return value
    try:
        families.family(value)
    except KeyError as err:
        raise complaint(err.args[0]) from None
    return value


class ModelParams(Section):
    base: Str = "smollm2-135m-instruct"
    chat_template: Annotated[Str, AfterValidator(_template_choice)] = "auto"


# What prepare.columns may rename a field to: the keys tunelab's formats (and the
# preference shapes of tunelab.data.preferences) read at a record's top level or inside
# each message; and the role names prepare.roles may give (tunelab's own and ShareGPT's).
# tunelab.data.columns applies the maps; a test checks that the formats accept every
# role name here.
RECORD_FIELDS = ("instruction", "input", "output", "system", "prompt", "completion", "text",
                 "messages", "conversations", "task", "tools", "chosen", "rejected", "label")
MESSAGE_FIELDS = ("role", "content", "from", "value", "train", "loss_weight", "weight",
                  "tool_calls", "tool_call_id", "name")
ROLE_NAMES = ("system", "user", "assistant", "tool", "human", "gpt", "function_call",
              "observation")


def _one_of(names: tuple[str, ...], what: str):
    def check(value: str) -> str:
        if value not in names:
            raise complaint(f"unknown {what} {value!r}{did_you_mean(value, names)} "
                            f"(use one of {', '.join(names)})")
        return value
    return check


def _each_target_once(columns: dict[str, str]) -> dict[str, str]:
    targets = list(columns.values())
    twice = sorted({t for t in targets if targets.count(t) > 1})
    if twice:
        raise complaint(f"two fields map to '{twice[0]}'")
    return columns


ColumnMap = Annotated[dict[Str, Annotated[Str, AfterValidator(
    _one_of(RECORD_FIELDS + MESSAGE_FIELDS, "tunelab field"))]], AfterValidator(_each_target_once)]
RoleMap = dict[Str, Annotated[Str, AfterValidator(_one_of(ROLE_NAMES, "role"))]]


class FieldMaps(Section):
    columns: ColumnMap = {}
    roles: RoleMap = {}


class PrepareParams(Section):
    raw_dir: RepoPath = "data/raw"  # RepoPath: dvc.yaml puts it into a shell command
    format: DataFormat = "auto"
    val_ratio: Float = Field(0.1, **UNIT_INTERVAL)
    test_ratio: Float = Field(0.1, **UNIT_INTERVAL)
    seed: Int = 42
    system_prompt: Str = ""
    text_split: TextSplit = "file"
    columns: ColumnMap = {}
    roles: RoleMap = {}
    per_file: dict[Str, FieldMaps] = {}
    group_by: Str = ""


class ValidateParams(Section):
    max_truncated_ratio: Float = Field(0.05, **UNIT_INTERVAL)
    untrainable: Untrainable = "drop"
    max_dropped_ratio: Float = Field(0.05, ge=0, le=1)  # 1: drop any number
    fail_on_warning: Bool = False


class LoraParams(Section):
    r: Int = Field(16, gt=0)
    alpha: Int = Field(32, gt=0)
    dropout: Float = Field(0.0, **UNIT_INTERVAL)
    target_modules: Names = "all-linear"
    use_dora: Bool = False
    use_rslora: Bool = False


class QuantizationParams(Section):
    bits: QuantBits = 4
    quant_type: QuantType = "nf4"
    double_quant: Bool = True


class GuardParams(Section):
    grad_norm_factor: Float = Field(100.0, ge=0)
    warmup_logs: Int = Field(3, gt=0)


class TrainParams(Section):
    method: Method = "lora"
    learning_rate: Float = Field(1e-3, gt=0)
    full_learning_rate: Float = Field(2e-5, gt=0)
    epochs: Float = Field(1.0, ge=0)
    max_steps: StepLimit = 90
    batch_size: Int = Field(4, gt=0)
    gradient_accumulation: Int = Field(1, gt=0)
    warmup_ratio: Float = Field(0.05, **UNIT_INTERVAL)
    lr_scheduler: Scheduler = "cosine"
    weight_decay: Float = Field(0.0, ge=0)
    max_grad_norm: Float = Field(1.0, ge=0)
    max_length: Int = Field(256, gt=0)
    reasoning: Reasoning = "keep"
    train_on: TrainOn = "all_assistant"
    text_stride: Int = Field(0, ge=0)
    seed: Int = 42
    precision: Precision = "auto"
    gradient_checkpointing: Bool = False
    packing: Bool = False
    padding_free: Bool = True
    answer_only_logits: Bool = True
    group_by_length: Bool = False
    compile: Bool = False
    logging_steps: Int = Field(5, gt=0)
    eval_steps: Int = Field(30, ge=0)
    save_steps: Int = Field(10, ge=0)
    keep_checkpoints: Int = Field(0, ge=0)
    early_stopping_patience: Int = Field(0, ge=0)
    lora: LoraParams = Field(default_factory=LoraParams)
    quantization: QuantizationParams = Field(default_factory=QuantizationParams)
    guard: GuardParams = Field(default_factory=GuardParams)

    @field_validator("text_stride")
    @classmethod
    def _stride_within_window(cls, stride, info):
        max_length = info.data.get("max_length")
        if max_length and stride > max_length:
            raise complaint(f"must be at most train.max_length ({max_length}), got {stride}: "
                            "a longer step would skip tokens between windows")
        return stride

    @property
    def peak_learning_rate(self) -> float:
        """Full fine-tuning moves every weight, so it wants a far smaller rate."""
        return self.full_learning_rate if self.method == "full" else self.learning_rate


# align.beta when it is null: DPO/KTO's KL weight (0.1, the papers' and TRL's default),
# ORPO's odds-ratio weight λ (0.1, TRL's), GRPO's KL weight to the SFT model (0.04,
# DeepSeekMath's; TRL defaults to 0, which drops the reference and its forward pass but lets
# the policy drift from the answer format SFT taught).
DEFAULT_BETA = {"dpo": 0.1, "orpo": 0.1, "kto": 0.1, "grpo": 0.04}
WITH_REFERENCE = ("dpo", "kto", "grpo")  # grpo only when beta > 0


# GRPO's reward: {score name of the evaluate scorer: weight} (tunelab.eval.reward). They sum
# to 1, so a reward reads as a score: task_accuracy (the share of the reference's fields
# right) carries the task; exact_match, which `tunelab check` also gates, adds the whole
# object right and no key invented; json_valid is a small first step that GRPO can find
# before any field is right.
DEFAULT_REWARD = {"json_valid": 0.1, "task_accuracy": 0.8, "exact_match": 0.1}


def _reward_weights(weights: dict) -> dict:
    odd = next((name for name in weights if not name.isidentifier()), None)
    if odd is not None:
        raise complaint(f"{odd!r} is not a score name (letters, digits, _: a name the "
                        "evaluate scorer gives)")
    negative = next((name for name, weight in weights.items() if weight < 0), None)
    if negative is not None:
        raise complaint(f"{negative}: must be >= 0, got {weights[negative]}")
    if not any(weights.values()):
        raise complaint("every weight is 0: every answer would get the same reward, and "
                        "GRPO would learn nothing")
    return weights


RewardWeights = Annotated[dict[Str, Float], AfterValidator(_reward_weights)]


class AlignParams(Section):
    objective: Objective = "none"
    data: RepoPath = "data/preferences"
    format: PreferenceFormat = "auto"
    beta: Float | None = None
    learning_rate: Float = Field(1e-4, gt=0)
    max_steps: StepLimit = 30
    epochs: Float = Field(1.0, ge=0)
    batch_size: Int = Field(2, gt=0)
    gradient_accumulation: Int = Field(4, gt=0)
    max_length: Int = Field(512, gt=0)
    seed: Int = 42
    precision: Precision = "auto"
    loss_type: Str = "sigmoid"
    num_generations: Int = Field(4, ge=2)
    max_completion_length: Int = Field(64, gt=0)
    temperature: Float = Field(1.0, gt=0)
    logging_steps: Int = Field(1, gt=0)
    save_steps: Int = Field(5, ge=0)
    reward: RewardWeights = Field(default_factory=lambda: dict(DEFAULT_REWARD))

    @field_validator("beta")
    @classmethod
    def _beta_not_negative(cls, beta):
        if beta is not None and beta < 0:
            raise complaint(f"must be >= 0 (or null: the objective's default), got {beta}")
        return beta

    @property
    def objective_beta(self) -> float:
        return DEFAULT_BETA.get(self.objective, 0.0) if self.beta is None else self.beta

    @property
    def has_reference(self) -> bool:
        """dpo, kto and grpo (with beta > 0) compare the policy with the SFT model."""
        return self.objective in WITH_REFERENCE and (self.objective != "grpo"
                                                     or self.objective_beta > 0)


HELDOUT_DIR = "data/heldout"  # the evaluate stage's dvc.yaml dep: the file must be inside


def _in_heldout_dir(value: str) -> str:
    return _in_folder(value, HELDOUT_DIR, "the evaluate stage depends", "\"\" for none")


GENERAL_DIR = "data/general"  # as HELDOUT_DIR, for evaluate.general
SCORER_DIR = "configs/scorers"  # the scoring stages' (evaluate, align, export) dvc.yaml dep


def _in_general_dir(value: str) -> str:
    return _in_folder(value, GENERAL_DIR, "the evaluate stage depends", "\"\" for none")


def _in_folder(value: str, folder: str, who: str, otherwise: str) -> str:
    if value and not value.startswith(folder + "/"):
        raise complaint(f"{value!r} is not in {folder}/, the folder {who} on in dvc.yaml "
                        f"(move the file there, or {otherwise})")
    return value


def _scorer_spec(value: str) -> str:
    """auto, or configs/scorers/FILE.py:FUNCTION (tunelab.eval.scorers)."""
    if value == "auto":
        return value
    path, colon, function = value.rpartition(":")
    if not colon or not path.endswith(".py") or not function.isidentifier():
        raise complaint(f"{value!r} is neither auto nor {SCORER_DIR}/FILE.py:FUNCTION")
    path_in_repo(path)
    _in_folder(path, SCORER_DIR, "the stages that score (evaluate, align, export) depend",
               "auto")
    return value


class EvaluateParams(Section):
    max_new_tokens: Int = Field(64, gt=0)
    batch_size: Int = Field(24, gt=0)
    max_examples: Int = Field(0, ge=0)
    heldout: Annotated[RepoPathOrNone, AfterValidator(_in_heldout_dir)] = ""
    scorer: Annotated[Str, AfterValidator(_scorer_spec)] = "auto"
    general: Annotated[RepoPathOrNone,
                       AfterValidator(_in_general_dir)] = "data/general/general.jsonl"
    general_max_new_tokens: Int = Field(96, gt=0)


JUDGE_SUMMARY_KEYS = ("judgements", "unparseable")  # beside the criteria in judge.json's rubric


def _criterion_names(criteria: list[str]) -> list[str]:
    """Identifiers, each once, none a key judge.json's rubric already has."""
    odd = next((c for c in criteria if not c.isidentifier() or c in JUDGE_SUMMARY_KEYS), None)
    if not criteria or odd is not None or len(set(criteria)) != len(criteria):
        raise complaint(f"a list of one or more names (letters, digits, _), each once and none "
                        f"of {', '.join(JUDGE_SUMMARY_KEYS)}, got {criteria}")
    return criteria


class JudgeParams(Section):
    model: Str = ""  # "" = off; tunelab.judge.engines checks the name, file or URL
    endpoint_model: Str = ""
    api_key_env: Str = "TUNELAB_JUDGE_API_KEY"
    criteria: Annotated[list[Str], AfterValidator(_criterion_names)] = Field(
        default_factory=lambda: ["correctness", "coherence", "relevance"])
    max_examples: Int = Field(20, ge=0)
    max_new_tokens: Int = Field(64, gt=0)
    pairwise: Bool = True
    rubric: Bool = True
    timeout: Float = Field(60.0, gt=0)
    threads: Int = Field(0, ge=0)


class ExportParams(Section):
    quantizations: list[GgufType] = Field(default_factory=lambda: ["q8_0", "q4_k_m"])
    lora: Bool = True
    allow_template_drift: Bool = False
    speed_examples: Int = Field(8, gt=0)
    threads: Int = Field(0, ge=0)

    @field_validator("quantizations")
    @classmethod
    def _each_type_once(cls, quantizations):
        if not quantizations or len(set(quantizations)) != len(quantizations):
            raise complaint(f"a list of one or more types, each once, got {quantizations}")
        return quantizations


class PlotParams(Section):
    dpi: Int = Field(100, gt=0)


class ReportParams(Section):
    max_samples: Int = Field(10, ge=0)


class MetricTolerance(BaseModel):
    # Not a Section: an empty rule is an error here, not "all defaults".
    model_config = Section.model_config
    direction: Better = "higher"          # which way is better
    tolerance: Float = Field(0.0, ge=0)   # how far (absolute) it may move the other way

    def __init__(self, *args, **kwargs):  # MetricTolerance("higher", 0.02) reads well in tests
        super().__init__(**dict(zip(type(self).model_fields, args)), **kwargs)

    @model_validator(mode="before")
    @classmethod
    def _direction_is_required(cls, rule):
        if isinstance(rule, MetricTolerance):
            return rule
        if not isinstance(rule, dict) or "direction" not in rule:
            raise complaint(f"expected {{direction: higher|lower, tolerance: NUMBER}}, "
                            f"got {rule!r}")
        return rule


class CheckParams(RootModel[dict[str, MetricTolerance]]):
    """`check:` maps metric names to tolerances for `tunelab check`
    (tunelab.experiments.check); no stage reads it. Empty means these defaults."""
    root: dict[str, MetricTolerance] = Field(default_factory=lambda: {
        "tuned.task_accuracy": MetricTolerance("higher", 0.02),
        "tuned.json_valid": MetricTolerance("higher", 0.02),
        "tuned.exact_match": MetricTolerance("higher", 0.05),
        "tuned.loss": MetricTolerance("lower", 0.02),
        "general.tuned.all": MetricTolerance("higher", 0.03)})

    @model_validator(mode="before")
    @classmethod
    def _empty_is_defaults(cls, values):
        return values or cls.model_fields["root"].default_factory()

    @property
    def tolerances(self) -> dict[str, MetricTolerance]:
        return self.root


SECTIONS = {
    "model": ModelParams,
    "prepare": PrepareParams,
    "validate": ValidateParams,
    "train": TrainParams,
    "align": AlignParams,
    "evaluate": EvaluateParams,
    "judge": JudgeParams,
    "export": ExportParams,
    "plot": PlotParams,
    "report": ReportParams,
    "check": CheckParams,
}
# Knobs that change no trained or evaluated number: a run may resume across a change of
# them (tunelab.train.checkpoints), and the report does not show them.
CHANGES_NO_RESULT = {"train": ("keep_checkpoints", "guard"),
                     "judge": ("api_key_env", "timeout", "threads")}


def _choices(model, prefix: str) -> dict[str, tuple]:
    found = {}
    for name, field in getattr(model, "model_fields", {}).items():
        if get_origin(field.annotation) is Literal:
            found[f"{prefix}.{name}"] = get_args(field.annotation)
        elif is_model(field.annotation):
            found.update(_choices(field.annotation, f"{prefix}.{name}"))
    return found


# The allowed values of each choice key ("prepare.format": ("auto", ...)), read off the
# models above for command-line flags that mirror a params key.
CHOICES = {key: options for section, model in SECTIONS.items()
           for key, options in _choices(model, section).items()}


def load(section: str, path: str | Path = PARAMS_FILE):
    """Return the validated model for one section of params.yaml."""
    raw = read_file(path)
    loaded = parse(SECTIONS[section], raw.get(section) or {}, section, path)
    _check_across(section, loaded, path)
    return loaded


def load_all(path: str | Path = PARAMS_FILE, also_known: tuple[str, ...] = ()) -> dict:
    """Validate every section (unknown sections are errors too, except ``also_known``:
    sections another module validates, like multitask/params.yaml's `multitask`)."""
    raw = read_file(path)
    for name in raw:
        if name not in SECTIONS and name not in also_known:
            foreign = len(raw) > 1 and not any(key in SECTIONS for key in raw)
            hint = (f"; is this another tool's config? try `tunelab import-config {path}`"
                    if foreign else did_you_mean(name, SECTIONS))
            raise ParamsError(f"{path}: {name}: unknown section{hint}")
    sections = {name: parse(model, raw.get(name) or {}, name, path)
                for name, model in SECTIONS.items()}
    for name, loaded in sections.items():
        _check_across(name, loaded, path)
    return sections


def result_settings(loaded, section: str) -> dict:
    """A loaded section as plain values, less the knobs that change no result."""
    return {key: value for key, value in loaded.model_dump().items()
            if key not in CHANGES_NO_RESULT.get(section, ())}


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


def check_split(prepare: PrepareParams, path: str | Path = PARAMS_FILE) -> None:
    if prepare.val_ratio + prepare.test_ratio >= 1:
        raise ParamsError(f"{path}: prepare.val_ratio + prepare.test_ratio must be < 1 "
                          f"(the rest is the train split), got "
                          f"{prepare.val_ratio + prepare.test_ratio:g}")


def check_train(train: TrainParams, path: str | Path = PARAMS_FILE) -> None:
    check_save_steps(train, "train", path)
    # Early stopping keeps the best checkpoint (load_best_model_at_end), which transformers
    # allows only where every save falls on an evaluation: the trainer then saves at
    # train.eval_steps, not train.save_steps (tunelab.train.training.sft_config). Those
    # checkpoints too must fall on a logging step, for save_steps' reason below.
    if train.early_stopping_patience and train.eval_steps % train.logging_steps:
        raise ParamsError(f"{path}: train.eval_steps: must be a multiple of train.logging_steps "
                          f"({train.logging_steps}) when train.early_stopping_patience > 0 "
                          "(checkpoints are then saved at each evaluation) so a resumed run "
                          f"logs the same curve, got {train.eval_steps}")


def check_save_steps(loaded, section: str, path: str | Path = PARAMS_FILE) -> None:
    """train and align: a checkpoint must fall on a logging step. The trainer's running loss
    since the last log is not saved, so a resumed run would log a different curve."""
    if loaded.save_steps and loaded.save_steps % loaded.logging_steps:
        raise ParamsError(f"{path}: {section}.save_steps: must be a multiple of "
                          f"{section}.logging_steps ({loaded.logging_steps}) so a resumed run "
                          f"logs the same curve, got {loaded.save_steps}")


def check_align(align: AlignParams, path: str | Path = PARAMS_FILE) -> None:
    check_save_steps(align, "align", path)
    if align.objective == "kto" and align.batch_size < 2:
        raise ParamsError(f"{path}: align.batch_size: kto needs 2 or more (its KL term pairs "
                          f"each completion with another prompt's in the same batch), got "
                          f"{align.batch_size}")


def _check_across(section: str, loaded, path) -> None:
    """Checks that span several keys of one section (a sweep checks single values, so
    these stay out of the models)."""
    if section == "prepare":
        check_split(loaded, path)
    elif section == "train":
        check_train(loaded, path)
    elif section == "align":
        check_align(loaded, path)
