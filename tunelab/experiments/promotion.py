"""Promote a DVC experiment, or keep it aside: the rule (a paired comparison with the
current model on the same examples), and the Git side.

Promotion = the experiment's files and outputs into the workspace (as ``dvc exp apply``
does), a commit of what it changed, and a registry version ``<artifact>@vX.Y.Z`` of each of
dvc.yaml's ``artifacts`` the commit holds (the model it ships: the aligned adapter where the
align stage trained one, else the SFT adapter; the GGUF export when the pipeline wrote one),
each assigned to a stage (``staging`` unless told otherwise), so ``gto show``,
``dvc artifacts get`` and `tunelab serve --artifact NAME@STAGE` can name the promoted model.
Git and DVC are reached through experiments.repo, GTO through experiments.registry.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from tunelab.experiments import registry
from tunelab.experiments.repo import (RepoError, checkout_outputs, commit_all_staged,
                                      take_files_of, unstage)

ADAPTER_PATH = "models/adapter"
FALLBACK_ARTIFACT = "model"
FLOAT_SLACK = 1e-9  # a gain equal to min_gain up to float noise counts as reaching it


class WatchError(ValueError):
    """A condition under which `tunelab watch` must stop; one line saying what to do."""


@dataclass
class Decision:
    """The candidate against the current model, both scored on the same examples."""
    promote: bool
    current: float | None     # the current model's mean score on the paired examples
    candidate: float | None   # the candidate's mean on the same examples
    gain: float | None        # candidate - current (> 0 = better)
    reason: str
    low: float | None = None  # the bootstrap confidence interval of the gain
    high: float | None = None
    examples: int = 0         # how many examples were paired


# The scores one example has (tunelab.eval.scoring.task_scores of one answer, as compare-runs
# pairs them), and field_NAME: one JSON field's. A loss, perplexity, reward or corpus score
# (rougeL, chrf) has no per-example value, so it cannot be paired.
PER_EXAMPLE_METRICS = ("task_accuracy", "exact_match", "json_valid")
MODEL_PREFIXES = ("tuned.", "aligned.")  # eval.json's models; the final model answers either way


def per_example_metric(metric: str) -> str:
    """The per-example score behind ``metric`` (``tuned.task_accuracy`` -> ``task_accuracy``);
    WatchError, one line, for a metric that no single example has."""
    name = metric.split(".", 1)[1] if metric.startswith(MODEL_PREFIXES) else metric
    if name in PER_EXAMPLE_METRICS or (name.startswith("field_") and name != "field_"):
        return name
    raise WatchError(f"--metric {metric}: no per-example score to pair the candidate with the "
                     "current model on (use tuned.task_accuracy, tuned.exact_match, "
                     "tuned.json_valid or tuned.field_NAME)")


def decide(current: list[dict] | None, candidate: list[dict], min_gain: float,
           metric: str) -> Decision:
    """Promote when the lower bound of the bootstrap interval of the candidate's gain over
    the current model reaches ``min_gain``.

    ``current`` and ``candidate`` are samples rows (compare_runs: source, prompt, reference
    and the answers) of the same examples, answered by the current model and by the
    candidate; ``current`` is None when there is no current model (the first is promoted).
    Each run's mean on its own test split would not do: new data brings new test examples,
    and an easier split alone would look like a gain."""
    from tunelab.eval import intervals
    from tunelab.experiments import compare_runs  # loads the scorers: only when deciding

    name = per_example_metric(metric)
    if not candidate:
        return Decision(False, None, None, None, "the experiment answered no test example")
    candidate_scores = compare_runs.per_example_scores(candidate)
    if current is None:
        # Paired with itself: the candidate's scores, or the one-line error of an unscored field.
        scores = compare_runs.paired(candidate_scores, candidate_scores, name)[1]
        return Decision(True, None, float(scores.mean()), None,
                        f"no current model: the first model is promoted ({metric} "
                        f"{scores.mean():.4f} on {len(scores)} examples)", examples=len(scores))
    before, after = compare_runs.paired(compare_runs.per_example_scores(current),
                                        candidate_scores, name)
    low, high = intervals.mean_interval(after - before)
    gain = float(after.mean() - before.mean())
    promote = low >= min_gain - FLOAT_SLACK
    reason = (f"{metric} {after.mean():.4f} vs current {before.mean():.4f} on the same "
              f"{len(after)} examples: gain {gain:+.4f}, {intervals.CONFIDENCE:.0%} interval "
              f"[{low:+.4f}, {high:+.4f}]; its low end {'>=' if promote else '<'} "
              f"min_gain {min_gain:+g}")
    return Decision(promote, float(before.mean()), float(after.mean()), gain, reason,
                    low, high, len(after))


# --- the Git side, through experiments.repo ------------------------------------------

# The two models a run may ship, each a LoRA on models/base: the SFT adapter, or that
# adapter trained on by the align stage. One run ships one of them (export's choice).
ALIGNED_PATH = "models/aligned"
MODEL_PATHS = (ADAPTER_PATH, ALIGNED_PATH)


def shipped_model(repo: Path) -> str:
    """The path of the model the workspace's run ships, as export chooses it
    (tunelab.models.loading.final_model): models/aligned where the align stage trained an
    adapter, else models/adapter (objective none leaves only a note in models/aligned)."""
    from tunelab.models import loading  # imports torch: only when promoting

    return ALIGNED_PATH if loading.aligned_objective(repo / ALIGNED_PATH) else ADAPTER_PATH


def artifact_name(repo: Path) -> str:
    """The dvc.yaml artifact of the model the run ships; "model" if none has its path."""
    shipped = shipped_model(repo)
    names = [name for name, path in registry.artifacts(repo).items() if path == shipped]
    return names[0] if names else FALLBACK_ARTIFACT


@dataclass
class Promotion:
    commit: str
    tag: str               # the shipped model's version tag, <artifact>@vX.Y.Z
    registered: list[str]  # every version tag made: the model's, the GGUF export's
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
    model = artifact_name(repo)
    declared = registry.artifacts(repo)
    # The model this run did not ship (an aligned run's SFT adapter, an unaligned run's
    # note in models/aligned) is not a version: a version is what evaluate scored last
    # and export turned into the GGUF files registered beside it.
    not_shipped = [name for name, path in declared.items()
                   if path in MODEL_PATHS and name != model]
    paths = {model: shipped_model(repo), **declared}
    registered, model_tag = [], None
    for name, path in paths.items():
        if name in not_shipped or not (repo / path).exists():
            continue  # e.g. no GGUF export in this pipeline
        version = registry.next_version(repo, name)
        tag = registry.register_version(repo, name, commit, version, message)
        registered.append(tag)
        if stage is not None:
            registry.assign_stage(repo, name, version, stage)
        if name == model:
            model_tag = tag
    if stage is not None:
        for name in not_shipped:
            vacate(repo, name, stage, message)
    return Promotion(commit, model_tag, registered, stage)


def vacate(repo: Path, artifact: str, stage: str, message: str) -> None:
    """Take ``stage`` from the model artifact this run did not ship, so a stage names one
    model: else ticket-triage-adapter@staging would go on serving an older run's adapter
    beside the aligned one just promoted."""
    held = registry.version_in_stage(repo, artifact, stage)
    if held is not None:
        registry.unassign_stage(repo, artifact, held, stage, message)


def discard_ingested(repo: Path, ingested: Path) -> None:
    """Take an ingested copy out of the index and the workspace (the experiment keeps it)."""
    unstage(ingested.relative_to(repo), repo)
    ingested.unlink(missing_ok=True)
