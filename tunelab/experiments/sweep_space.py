"""Hyperparameter sweeps whose every trial is a DVC experiment: the trials of a sweep.

tunelab.config.sweep_file reads and checks a sweep file into a SweepSpec; this module
turns the spec into trials (every grid point, seeded random samples, or Optuna's TPE
asking a batch at a time); tunelab.experiments.sweep runs them and
tunelab.experiments.sweep_report reports them.
"""

from __future__ import annotations

import itertools
import math
import random
from pathlib import Path
from typing import Callable

import yaml

from tunelab.config.sweep_file import Dimension, load, SweepSpec
from tunelab.experiments import check


def load_sweep(path: str | Path, overrides: dict | None = None,
               root: str | Path = ".") -> SweepSpec:
    """The checked spec of a sweep file; its metric must be a number in the metrics
    files under ``root`` (where those exist yet)."""
    return load(path, overrides, lambda metric: check.unknown_metric_reason(metric, root))


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
                trial = {dim.key: sample(dim, rng) for dim in spec.space}
                if trial not in trials:
                    break
            trials.append(trial)
        return trials
    raise ValueError(f"expand() is for grid and random sweeps, not {spec.strategy}")


def sample(dim: Dimension, rng: random.Random):
    """One random value of a dimension: a choice, a grid point, or a (log-)uniform draw."""
    if dim.choices is not None:
        return rng.choice(dim.choices)
    if dim.step is not None or dim.num is not None:
        return rng.choice(dim.grid_values())
    if dim.log:
        return dim.tidy(math.exp(rng.uniform(math.log(dim.low), math.log(dim.high))))
    return dim.tidy(rng.uniform(dim.low, dim.high))


def distribution(dim: Dimension):
    """The Optuna distribution a bayesian sweep samples the dimension from."""
    from optuna.distributions import (CategoricalDistribution, FloatDistribution,
                                      IntDistribution)

    if dim.choices is not None:
        return CategoricalDistribution(dim.choices)
    if dim.num is not None:
        return CategoricalDistribution(dim.grid_values())
    if dim.integer:
        return IntDistribution(dim.low, dim.high, log=dim.log, step=dim.step or 1)
    return FloatDistribution(dim.low, dim.high, log=dim.log, step=dim.step)


def optimize(spec: SweepSpec, run_batch: Callable[[list[dict]], list[float | None]]):
    """Bayesian search: Optuna's TPE asks ``spec.parallel`` trials at a time,
    ``run_batch`` runs them and returns their metric (None = failed). Returns the study."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    sampler = optuna.samplers.TPESampler(seed=spec.seed, n_startup_trials=startup_trials(spec))
    study = optuna.create_study(direction=spec.direction, sampler=sampler)
    distributions = {dim.key: distribution(dim) for dim in spec.space}
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


def startup_trials(spec: SweepSpec) -> int:
    """How many trials TPE samples at random before it models the results: half the
    budget, at most Optuna's 10."""
    return max(1, min(10, spec.max_trials // 2))


def trials_known_in_advance(spec: SweepSpec) -> list[dict]:
    """A bayesian sweep's trials that no result can change: the batches ``optimize`` asks
    while fewer than ``startup_trials`` have finished, drawn from TPE's own seeded random
    sampler. (A failed trial only prolongs that phase, so these stay the same.)"""
    batches = math.ceil(startup_trials(spec) / spec.parallel)
    asked: list[dict] = []

    def no_results(batch: list[dict]) -> list[None]:  # failures keep TPE sampling at random
        asked.extend(batch)
        return [None] * len(batch)

    optimize(spec, no_results)
    return asked[:min(spec.max_trials, batches * spec.parallel)]


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
