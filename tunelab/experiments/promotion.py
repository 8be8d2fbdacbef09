"""Promote a DVC experiment by one metric, or keep it aside: the rule, and the Git side.

Promotion = the experiment's files and outputs into the workspace (as ``dvc exp apply``
does), a commit of what it changed, and a registry version ``<artifact>@vX.Y.Z`` of each of
dvc.yaml's ``artifacts`` the commit holds (the adapter; the GGUF export when the pipeline
wrote one), each assigned to a stage (``staging`` unless told otherwise), so ``gto show``,
``dvc artifacts get`` and `tunelab serve --artifact NAME@STAGE` can name the promoted model.
Git and DVC are reached through experiments.repo, GTO through experiments.registry.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from tunelab.eval.metric_names import lower_is_better, metric_number
from tunelab.experiments import registry
from tunelab.experiments.repo import (RepoError, checkout_outputs, commit_all_staged,
                                      take_files_of, unstage)
from tunelab.util.names import lookup

ADAPTER_PATH = "models/adapter"
FALLBACK_ARTIFACT = "model"
FLOAT_SLACK = 1e-9  # a gain equal to min_gain up to float noise counts as reaching it


class WatchError(ValueError):
    """A condition under which `tunelab watch` must stop; one line saying what to do."""


@dataclass
class Decision:
    promote: bool
    current: float | None
    candidate: float | None
    gain: float | None   # improvement in the metric's own direction (> 0 = better)
    reason: str


def metric_value(metrics: dict | None, metric: str) -> float | None:
    """``metrics["tuned"]["task_accuracy"]`` for ``tuned.task_accuracy``; None if absent."""
    return metric_number(lookup(metrics, metric))


def decide(current: float | None, candidate: float | None, min_gain: float,
           metric: str) -> Decision:
    """Promote when the candidate beats the current value by at least ``min_gain``."""
    if candidate is None:
        return Decision(False, current, None, None, f"the experiment wrote no {metric}")
    if current is None:
        return Decision(True, None, candidate, None,
                        f"no current {metric} at HEAD: the first model is promoted")
    gain = current - candidate if lower_is_better(metric) else candidate - current
    promote = gain >= min_gain - FLOAT_SLACK
    direction = "lower" if lower_is_better(metric) else "higher"
    reason = (f"{metric} {candidate:.6g} vs current {current:.6g} ({direction} is better): "
              f"gain {gain:+.6g} {'>=' if promote else '<'} min_gain {min_gain:+.6g}")
    return Decision(promote, current, candidate, gain, reason)


# --- the Git side, through experiments.repo ------------------------------------------

def artifact_name(repo: Path) -> str:
    """The dvc.yaml artifact whose path is the adapter; "model" if there is none."""
    names = [name for name, path in registry.artifacts(repo).items() if path == ADAPTER_PATH]
    return names[0] if names else FALLBACK_ARTIFACT


@dataclass
class Promotion:
    commit: str
    tag: str               # the adapter's version tag, <artifact>@vX.Y.Z
    registered: list[str]  # every version tag made: the adapter's, the GGUF export's
    stage: str | None


def promote(repo: Path, exp_commit: str, message: str, stage: str | None = "staging"
            ) -> Promotion:
    """Apply the experiment, commit what it changed, register its artifacts, assign them
    to ``stage`` (None: register only).

    Applied as `dvc exp apply` does, but its DVC outputs are checked out for the root
    dvc.yaml only: `dvc exp apply` fails when another pipeline's outputs (multitask/) were
    never built, although this experiment is complete."""
    take_files_of(exp_commit, repo)  # into the index and the workspace
    try:
        checkout_outputs("dvc.yaml", repo)  # models/adapter etc. from the DVC cache
    except RepoError as err:
        raise WatchError(f"{err} after taking the files of {exp_commit[:8]}: the workspace "
                         "holds them uncommitted") from None
    commit = commit_all_staged(message, repo)
    adapter = artifact_name(repo)
    paths = {adapter: ADAPTER_PATH, **registry.artifacts(repo)}
    registered, adapter_tag = [], None
    for name, path in paths.items():
        if not (repo / path).exists():
            continue  # e.g. no GGUF export in this pipeline
        version = registry.next_version(repo, name)
        tag = registry.register_version(repo, name, commit, version, message)
        registered.append(tag)
        if stage is not None:
            registry.assign_stage(repo, name, version, stage)
        if name == adapter:
            adapter_tag = tag
    return Promotion(commit, adapter_tag, registered, stage)


def discard_ingested(repo: Path, ingested: Path) -> None:
    """Take an ingested copy out of the index and the workspace (the experiment keeps it)."""
    unstage(ingested.relative_to(repo), repo)
    ingested.unlink(missing_ok=True)
