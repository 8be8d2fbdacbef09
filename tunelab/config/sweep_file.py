"""Sweep files (sweeps/*.yaml): their schema, and the spec a sweep runs from.

A sweep file (see sweeps/lr_rank.yaml)::

    strategy: grid          # grid (every combination) | random | bayesian (Optuna TPE)
    metric: tuned.loss      # a dotted key of metrics/eval.json, or train.KEY of
                            # metrics/train/summary.json (train.eval_loss = validation loss)
    direction: minimize     # minimize | maximize
    max_trials: 8           # random/bayesian: trials to run; grid: optional upper bound
    parallel: 1             # experiments the DVC queue runs at once
    seed: 0                 # sampling seed (random, bayesian)
    set:                    # params every trial gets, e.g. a short run; optional
      train.max_steps: 10
    search_space:           # params key -> list of values, or a range
      train.learning_rate: {low: 1.0e-4, high: 3.0e-3, log: true}   # log-uniform
      train.lora.r: [8, 16, 32]
      train.warmup_ratio: {low: 0.0, high: 0.1, num: 3}   # num points (or step): discrete

Every swept or set value is checked against params.yaml's schema (tunelab.config.params).
tunelab.experiments.sweep_space turns a spec into trials.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any, Callable, Literal, Optional

from pydantic import (BaseModel, ConfigDict, Field, StrictInt, ValidationError,
                      ValidationInfo, field_validator)

from tunelab.config import params
from tunelab.config.schema import (bounds, carried, complaint, dotted, is_model, parse,
                                   reason)
from tunelab.errors import DataError, ParamsError
from tunelab.util.names import did_you_mean

RANGE_KEYS = ("low", "high", "log", "step", "num")
NOT_SWEEPABLE = ("check",)  # read by no stage: changing it cannot change a metric
SIGNIFICANT_DIGITS = 4      # sampled floats are rounded to this many (readable -S values)
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
Count = Optional[StrictInt]  # a whole number (not a bool), or absent


class SweepError(DataError):
    """A sweep file problem; the message names the file and the key."""


class Dimension(BaseModel):
    """One swept params key: a list of choices, or a numeric range."""
    key: str
    choices: Optional[list] = None
    low: Optional[float | int] = None
    high: Optional[float | int] = None
    log: bool = False
    step: Optional[float | int] = None
    num: Optional[int] = None

    @property
    def integer(self) -> bool:
        return self.choices is None and all(
            isinstance(v, int) and not isinstance(v, bool)
            for v in (self.low, self.high, self.step if self.step is not None else 1))

    def grid_values(self) -> list:
        if self.choices is not None:
            return list(self.choices)
        if self.step is not None:
            count = int(math.floor((self.high - self.low) / self.step + 1e-9)) + 1
            return [self.tidy(self.low + i * self.step) for i in range(count)]
        if self.log:
            ratio = math.log(self.high / self.low)
            return [self.tidy(self.low * math.exp(ratio * i / (self.num - 1)))
                    for i in range(self.num)]
        return [self.tidy(self.low + (self.high - self.low) * i / (self.num - 1))
                for i in range(self.num)]

    def text(self) -> str:
        if self.choices is not None:
            return "one of " + ", ".join(map(str, self.choices))
        extra = "".join(f", {name} {getattr(self, name)}" for name in ("step", "num")
                        if getattr(self, name) is not None)
        return f"{'log-uniform' if self.log else 'uniform'} {self.low:g}..{self.high:g}{extra}"

    def tidy(self, value):
        """A point of the range as a trial gets it: an int, or a float rounded to
        SIGNIFICANT_DIGITS and kept inside the range."""
        if self.integer:
            return int(round(value))
        value = float(f"{value:.{SIGNIFICANT_DIGITS}g}")
        return min(max(value, self.low), self.high)


class SweepSpec(BaseModel):
    path: str
    name: str
    strategy: str
    metric: str
    direction: str
    max_trials: Optional[int]
    parallel: int = 1
    seed: int = 0
    fixed: dict = Field(default_factory=dict)
    space: list[Dimension] = Field(default_factory=list)

    @property
    def keys(self) -> list[str]:
        return [dim.key for dim in self.space]

    @property
    def total_trials(self) -> int:
        if self.strategy == "grid":
            return math.prod(len(dim.grid_values()) for dim in self.space)
        return self.max_trials


class SweepFile(BaseModel):
    """The file's keys as written, checked in this order. ``context`` of the validation
    holds the file's ``path`` and ``metric_reason(metric) -> str | None``, which says why
    a metric is no number of the workspace's metrics (the metrics files are not config)."""
    model_config = ConfigDict(extra="forbid", validate_default=True)

    strategy: Literal["grid", "random", "bayesian"] = "grid"
    direction: Literal["minimize", "maximize"] = "maximize"
    metric: Any = None
    name: Any = None
    max_trials: Count = Field(None, ge=1)
    parallel: Count = Field(1, ge=1)
    seed: Count = Field(0, ge=0)
    fixed: Any = Field(None, alias="set")
    search_space: Any = None

    @field_validator("metric")
    @classmethod
    def _known_metric(cls, metric, info: ValidationInfo):
        if not isinstance(metric, str) or not metric:
            raise complaint("required, a key of metrics/eval.json such as tuned.task_accuracy "
                            "(or train.KEY of metrics/train/summary.json)")
        unknown = info.context["metric_reason"](metric)
        if unknown:
            raise complaint(unknown)
        return metric

    @field_validator("name")
    @classmethod
    def _experiment_prefix(cls, name, info: ValidationInfo):
        name = str(name or Path(info.context["path"]).stem)
        if not NAME.fullmatch(name) or name.endswith(".") or ".." in name:
            raise complaint(f"{name!r} must be letters, digits, '_', '-' or '.' "
                            "(it prefixes the experiment names)")
        return name

    @field_validator("max_trials")
    @classmethod
    def _trials_unless_grid(cls, max_trials, info: ValidationInfo):
        strategy = info.data.get("strategy")
        if max_trials is None and strategy not in (None, "grid"):
            raise complaint(f"required for strategy {strategy}")
        return max_trials

    @field_validator("parallel", "seed")
    @classmethod
    def _none_is_default(cls, value, info: ValidationInfo):
        return cls.model_fields[info.field_name].default if value is None else value

    @field_validator("fixed")
    @classmethod
    def _fixed(cls, values, info: ValidationInfo):
        if values is None:
            return {}
        if not isinstance(values, dict):
            raise complaint("expected a mapping of params keys to values")
        for key, value in values.items():
            check_param(str(key), value, f"{info.context['path']}: set")
        return {str(key): value for key, value in values.items()}

    @field_validator("search_space")
    @classmethod
    def _space(cls, values, info: ValidationInfo) -> list[Dimension]:
        if not isinstance(values, dict) or not values:
            raise complaint("empty; give at least one params key with a list of values or a "
                            "range {low, high}")
        strategy = info.data.get("strategy", "grid")
        return [_dimension(str(key), spec, strategy, info.context["path"])
                for key, spec in values.items()]


def load(path: str | Path, overrides: dict | None = None,
         metric_reason: Callable[[str], str | None] = lambda metric: None) -> SweepSpec:
    """Read and check a sweep file; ``overrides`` (top-level keys, e.g. from the command
    line) replace the file's values before checking."""
    path = str(path)
    raw = read_yaml(path)
    raw.update(overrides or {})
    try:
        written = SweepFile.model_validate(raw, context={"path": path,
                                                         "metric_reason": metric_reason})
    except ValidationError as err:
        raise _one_line(err, path) from None
    spec = SweepSpec(path=path, name=written.name, strategy=written.strategy,
                     metric=written.metric, direction=written.direction,
                     max_trials=written.max_trials, parallel=written.parallel,
                     seed=written.seed, fixed=written.fixed, space=written.search_space)
    overlap = sorted(set(spec.fixed) & set(spec.keys))
    if overlap:
        raise SweepError(f"{path}: set.{overlap[0]}: also in search_space; keep it in one")
    if spec.strategy == "grid" and spec.max_trials is not None \
            and spec.total_trials > spec.max_trials:
        raise SweepError(f"{path}: max_trials: the grid has {spec.total_trials} points, more "
                         f"than max_trials {spec.max_trials}; raise it or shrink search_space")
    return spec


def _one_line(err: ValidationError, path: str) -> Exception:
    """Unknown keys first, then the keys in SweepFile's order (that of the old checks)."""
    errors = sorted(err.errors(), key=lambda e: e["type"] != "extra_forbidden")
    first = errors[0]
    if carried(first):
        return carried(first)
    key = first["loc"][0]
    field = SweepFile.model_fields.get(key)
    if field is not None and field.annotation == Count and first["type"] in (
            "int_type", "greater_than_equal"):
        text = f"must be an integer {bounds(field.metadata)}, got {first['input']!r}"
    else:
        text = reason(SweepFile, first)
    return SweepError(f"{path}: {dotted('', first['loc'])}: {text}")


def read_yaml(path: str) -> dict:
    try:
        return params.read_file(path)  # the same one-line YAML errors as params.yaml's
    except ParamsError as err:
        raise SweepError(str(err)) from None


def _dimension(key: str, spec, strategy: str, path: str) -> Dimension:
    where = f"{path}: search_space.{key}"
    if isinstance(spec, list):
        if not spec:
            raise SweepError(f"{where}: empty list of values")
        for value in spec:
            if not isinstance(value, (str, int, float, bool)):
                raise SweepError(f"{where}: values must be numbers, strings or booleans, "
                                 f"got {value!r}")
            check_param(key, value, f"{path}: search_space")
        if len(set(map(repr, spec))) != len(spec):
            raise SweepError(f"{where}: repeated value in {spec}")
        return Dimension(key=key, choices=list(spec))
    if not isinstance(spec, dict):
        raise SweepError(f"{where}: expected a list of values or a range {{low, high}}, "
                         f"got {spec!r}")
    for name in spec:
        if name not in RANGE_KEYS:
            raise SweepError(f"{where}.{name}: unknown range key{did_you_mean(name, RANGE_KEYS)}")
    low, high = _range_number(spec, "low", where), _range_number(spec, "high", where)
    if not low < high:
        raise SweepError(f"{where}: low must be < high, got low={low} high={high}")
    log, step, num = bool(spec.get("log", False)), spec.get("step"), spec.get("num")
    if log and low <= 0:
        raise SweepError(f"{where}: a log range needs low > 0, got {low}")
    if step is not None and (_not_number(step) or step <= 0 or log):
        raise SweepError(f"{where}.step: must be a number > 0 (and not with log), got {step!r}")
    if num is not None and (isinstance(num, bool) or not isinstance(num, int) or num < 2):
        raise SweepError(f"{where}.num: must be an integer >= 2, got {num!r}")
    if step is not None and num is not None:
        raise SweepError(f"{where}: give step or num, not both")
    if strategy == "grid" and step is None and num is None:
        raise SweepError(f"{where}: a grid needs the points of a range: add `num: N` or "
                         "`step: S`, or give a list")
    for bound in (low, high):
        check_param(key, bound, f"{path}: search_space")
    return Dimension(key=key, low=low, high=high, log=log, step=step, num=num)


def _range_number(spec: dict, name: str, where: str):
    value = spec.get(name)
    if isinstance(value, str):  # YAML 1.1 reads 1e-4 (no dot) as a string
        try:
            value = float(value)
        except ValueError:
            pass
    if _not_number(value) or not math.isfinite(value):
        raise SweepError(f"{where}.{name}: must be a number, got {value!r}")
    return value


def _not_number(value) -> bool:
    return isinstance(value, bool) or not isinstance(value, (int, float))


def check_param(key: str, value, where: str) -> None:
    """Fail unless ``key`` is a params.yaml key a stage reads and ``value`` is valid for it."""
    section, _, rest = key.partition(".")
    sections = [s for s in params.SECTIONS if s not in NOT_SWEEPABLE]
    if section not in sections or not rest:
        raise SweepError(f"{where}.{key}: not a params key (sections: {', '.join(sections)})"
                         f"{did_you_mean(section, sections) if rest else ''}")
    model, parts = params.SECTIONS[section], rest.split(".")
    for depth, part in enumerate(parts):
        if part not in model.model_fields:
            raise SweepError(f"{where}.{key}: unknown params key"
                             f"{did_you_mean(part, model.model_fields)}")
        annotation = model.model_fields[part].annotation
        is_last = depth == len(parts) - 1
        if is_model(annotation) == is_last:
            raise SweepError(f"{where}.{key}: not a single value (sweep its keys instead)"
                             if is_last else f"{where}.{key}: {part} is a single value")
        model = annotation
    nested = value
    for part in reversed(parts):
        nested = {part: nested}
    parse(params.SECTIONS[section], nested, section, where, error=SweepError)
