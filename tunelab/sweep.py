"""Hyperparameter sweeps whose every trial is a DVC experiment.

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

This module parses and checks the file and turns it into trials; tunelab.sweep_run
runs them and tunelab.sweep_report reports them.
"""

from __future__ import annotations

import dataclasses
import difflib
import itertools
import math
import random
import re
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import yaml

from tunelab import gate, params
from tunelab.io import DataError

STRATEGIES = ("grid", "random", "bayesian")
DIRECTIONS = ("minimize", "maximize")
TOP_KEYS = ("name", "strategy", "metric", "direction", "max_trials", "parallel", "seed", "set",
            "search_space")
RANGE_KEYS = ("low", "high", "log", "step", "num")
NOT_SWEEPABLE = ("check",)  # read by no stage: changing it cannot change a metric
SIGNIFICANT_DIGITS = 4      # sampled floats are rounded to this many (readable -S values)


class SweepError(DataError):
    """A sweep file problem; the message names the file and the key."""


@dataclass
class Dimension:
    """One swept params key: a list of choices, or a numeric range."""
    key: str
    choices: list | None = None
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    num: int | None = None

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
            return [self._tidy(self.low + i * self.step) for i in range(count)]
        if self.log:
            ratio = math.log(self.high / self.low)
            return [self._tidy(self.low * math.exp(ratio * i / (self.num - 1)))
                    for i in range(self.num)]
        return [self._tidy(self.low + (self.high - self.low) * i / (self.num - 1))
                for i in range(self.num)]

    def sample(self, rng: random.Random):
        if self.choices is not None:
            return rng.choice(self.choices)
        if self.step is not None or self.num is not None:
            return rng.choice(self.grid_values())
        if self.log:
            return self._tidy(math.exp(rng.uniform(math.log(self.low), math.log(self.high))))
        return self._tidy(rng.uniform(self.low, self.high))

    def distribution(self):
        from optuna.distributions import (CategoricalDistribution, FloatDistribution,
                                          IntDistribution)

        if self.choices is not None:
            return CategoricalDistribution(self.choices)
        if self.num is not None:
            return CategoricalDistribution(self.grid_values())
        if self.integer:
            return IntDistribution(self.low, self.high, log=self.log, step=self.step or 1)
        return FloatDistribution(self.low, self.high, log=self.log, step=self.step)

    def text(self) -> str:
        if self.choices is not None:
            return "one of " + ", ".join(map(str, self.choices))
        extra = "".join(f", {name} {getattr(self, name)}" for name in ("step", "num")
                        if getattr(self, name) is not None)
        return f"{'log-uniform' if self.log else 'uniform'} {self.low:g}..{self.high:g}{extra}"

    def _tidy(self, value):
        if self.integer:
            return int(round(value))
        value = float(f"{value:.{SIGNIFICANT_DIGITS}g}")
        return min(max(value, self.low), self.high)


@dataclass
class SweepSpec:
    path: str
    name: str
    strategy: str
    metric: str
    direction: str
    max_trials: int | None
    parallel: int = 1
    seed: int = 0
    fixed: dict = field(default_factory=dict)
    space: list[Dimension] = field(default_factory=list)

    @property
    def keys(self) -> list[str]:
        return [dim.key for dim in self.space]

    @property
    def total_trials(self) -> int:
        if self.strategy == "grid":
            return math.prod(len(dim.grid_values()) for dim in self.space)
        return self.max_trials


def load_sweep(path: str | Path, overrides: dict | None = None,
               root: str | Path = ".") -> SweepSpec:
    """Read and check a sweep file; ``overrides`` (top-level keys, e.g. from the command
    line) replace the file's values before checking."""
    path = str(path)
    raw = read_yaml(path)
    raw.update(overrides or {})
    for key in raw:
        if key not in TOP_KEYS:
            raise SweepError(f"{path}: {key}: unknown key{_did_you_mean(key, TOP_KEYS)}")
    strategy = raw.get("strategy", "grid")
    if strategy not in STRATEGIES:
        raise SweepError(f"{path}: strategy: must be one of {', '.join(STRATEGIES)}, "
                         f"got {strategy!r}")
    direction = raw.get("direction", "maximize")
    if direction not in DIRECTIONS:
        raise SweepError(f"{path}: direction: must be one of {', '.join(DIRECTIONS)}, "
                         f"got {direction!r}")
    metric = raw.get("metric")
    if not isinstance(metric, str) or not metric:
        raise SweepError(f"{path}: metric: required, a key of metrics/eval.json such as "
                         f"tuned.task_accuracy (or train.KEY of metrics/train/summary.json)")
    reason = gate.unknown_metric_reason(metric, root)
    if reason:
        raise SweepError(f"{path}: metric: {reason}")
    name = str(raw.get("name") or Path(path).stem)
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", name) or name.endswith(".") or ".." in name:
        raise SweepError(f"{path}: name: {name!r} must be letters, digits, '_', '-' or '.' "
                         "(it prefixes the experiment names)")
    max_trials = _int(raw, "max_trials", path, minimum=1, required=strategy != "grid")
    spec = SweepSpec(path=path, name=name, strategy=strategy, metric=metric,
                     direction=direction, max_trials=max_trials,
                     parallel=_int(raw, "parallel", path, minimum=1) or 1,
                     seed=_int(raw, "seed", path, minimum=0) or 0,
                     fixed=_fixed(raw.get("set"), path),
                     space=_space(raw.get("search_space"), strategy, path))
    overlap = sorted(set(spec.fixed) & set(spec.keys))
    if overlap:
        raise SweepError(f"{path}: set.{overlap[0]}: also in search_space; keep it in one")
    if strategy == "grid" and max_trials is not None and spec.total_trials > max_trials:
        raise SweepError(f"{path}: max_trials: the grid has {spec.total_trials} points, more "
                         f"than max_trials {max_trials}; raise it or shrink search_space")
    return spec


def expand(spec: SweepSpec) -> list[dict]:
    """The trials of a grid or random sweep, each a {params key: value} dict."""
    if spec.strategy == "grid":
        combos = itertools.product(*(dim.grid_values() for dim in spec.space))
        return [dict(zip(spec.keys, combo)) for combo in combos]
    if spec.strategy == "random":
        rng = random.Random(spec.seed)
        trials: list[dict] = []
        for _ in range(spec.max_trials):
            # Resample a few times to avoid rerunning a point of a small discrete space.
            for _attempt in range(20):
                trial = {dim.key: dim.sample(rng) for dim in spec.space}
                if trial not in trials:
                    break
            trials.append(trial)
        return trials
    raise ValueError(f"expand() is for grid and random sweeps, not {spec.strategy}")


def optimize(spec: SweepSpec, run_batch: Callable[[list[dict]], list[float | None]]):
    """Bayesian search: Optuna's TPE asks ``spec.parallel`` trials at a time,
    ``run_batch`` runs them and returns their metric (None = failed). Returns the study."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    # TPE needs a few random points first; half the budget (at most Optuna's 10).
    sampler = optuna.samplers.TPESampler(seed=spec.seed,
                                         n_startup_trials=max(1, min(10, spec.max_trials // 2)))
    study = optuna.create_study(direction=spec.direction, sampler=sampler)
    distributions = {dim.key: dim.distribution() for dim in spec.space}
    done = 0
    while done < spec.max_trials:
        batch = [study.ask(distributions) for _ in range(min(spec.parallel,
                                                             spec.max_trials - done))]
        values = run_batch([dict(trial.params) for trial in batch])
        for trial, value in zip(batch, values):
            if value is None or math.isnan(value):
                study.tell(trial, state=optuna.trial.TrialState.FAIL)
            else:
                study.tell(trial, value)
        done += len(batch)
    return study


def cli_value(value) -> str:
    """A value as `dvc exp run -S key=VALUE` text that YAML reads back unchanged."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)
    text = str(value)
    return text if yaml.safe_load(text) == value else yaml.safe_dump(value).strip()


def describe(trial: dict) -> str:
    return " ".join(f"{key.rsplit('.', 1)[-1]}={value:g}" if isinstance(value, float)
                    else f"{key.rsplit('.', 1)[-1]}={value}" for key, value in trial.items())


def read_yaml(path: str) -> dict:
    try:
        return params.read_file(path)  # the same one-line YAML errors as params.yaml's
    except params.ParamsError as err:
        raise SweepError(str(err)) from None


def _int(raw: dict, key: str, path: str, minimum: int, required: bool = False):
    value = raw.get(key)
    if value is None:
        if required:
            raise SweepError(f"{path}: {key}: required for strategy {raw.get('strategy')}")
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise SweepError(f"{path}: {key}: must be an integer >= {minimum}, got {value!r}")
    return value


def _fixed(values, path: str) -> dict:
    if values is None:
        return {}
    if not isinstance(values, dict):
        raise SweepError(f"{path}: set: expected a mapping of params keys to values")
    for key, value in values.items():
        check_param(str(key), value, f"{path}: set")
    return {str(key): value for key, value in values.items()}


def _space(values, strategy: str, path: str) -> list[Dimension]:
    if not isinstance(values, dict) or not values:
        raise SweepError(f"{path}: search_space: empty; give at least one params key with a "
                         "list of values or a range {low, high}")
    return [_dimension(str(key), spec, strategy, path) for key, spec in values.items()]


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
        return Dimension(key, choices=list(spec))
    if not isinstance(spec, dict):
        raise SweepError(f"{where}: expected a list of values or a range {{low, high}}, "
                         f"got {spec!r}")
    for name in spec:
        if name not in RANGE_KEYS:
            raise SweepError(f"{where}.{name}: unknown range key{_did_you_mean(name, RANGE_KEYS)}")
    low, high = _range_number(spec, "low", where), _range_number(spec, "high", where)
    if not low < high:
        raise SweepError(f"{where}: low must be < high, got low={low} high={high}")
    dim = Dimension(key, low=low, high=high, log=bool(spec.get("log", False)),
                    step=spec.get("step"), num=spec.get("num"))
    if dim.log and low <= 0:
        raise SweepError(f"{where}: a log range needs low > 0, got {low}")
    if dim.step is not None and (_not_number(dim.step) or dim.step <= 0 or dim.log):
        raise SweepError(f"{where}.step: must be a number > 0 (and not with log), got {dim.step!r}")
    if dim.num is not None and (isinstance(dim.num, bool) or not isinstance(dim.num, int)
                                or dim.num < 2):
        raise SweepError(f"{where}.num: must be an integer >= 2, got {dim.num!r}")
    if dim.step is not None and dim.num is not None:
        raise SweepError(f"{where}: give step or num, not both")
    if strategy == "grid" and dim.step is None and dim.num is None:
        raise SweepError(f"{where}: a grid needs the points of a range: add `num: N` or "
                         "`step: S`, or give a list")
    for bound in (low, high):
        check_param(key, bound, f"{path}: search_space")
    return dim


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
    if section not in params.SECTIONS or section in NOT_SWEEPABLE or not rest:
        sections = [s for s in params.SECTIONS if s not in NOT_SWEEPABLE]
        raise SweepError(f"{where}.{key}: not a params key (sections: {', '.join(sections)})"
                         f"{_did_you_mean(section, sections) if rest else ''}")
    cls, parts = params.SECTIONS[section], rest.split(".")
    for depth, part in enumerate(parts):
        fields = {f.name: f for f in dataclasses.fields(cls)}
        if part not in fields:
            raise SweepError(f"{where}.{key}: unknown params key{_did_you_mean(part, fields)}")
        hint = typing.get_type_hints(cls)[part]
        is_last = depth == len(parts) - 1
        if dataclasses.is_dataclass(hint) == is_last:
            raise SweepError(f"{where}.{key}: not a single value (sweep its keys instead)"
                             if is_last else f"{where}.{key}: {part} is a single value")
        cls = hint
    nested = value
    for part in reversed(parts):
        nested = {part: nested}
    try:
        params.build(params.SECTIONS[section], nested, section, where)
    except params.ParamsError as err:
        raise SweepError(str(err)) from None


def _did_you_mean(word: str, options) -> str:
    close = difflib.get_close_matches(word, list(options), n=1)
    return f" (did you mean '{close[0]}'?)" if close else ""
