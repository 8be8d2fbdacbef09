"""Paired comparison of two runs on the same test examples: `tunelab compare-runs A B`.

Two runs evaluated on one test split are scored example by example, so their gap
comes with a 95% bootstrap confidence interval of the mean per-example difference
(scipy.stats.bootstrap, BCa). On 56 examples a gap of 0.06 can be noise; the
interval says whether it is. A and B are each a samples file (metrics/samples.jsonl
as evaluate writes it), a git revision, or a DVC experiment name. A run's answers are its
final model's: the aligned one where the align stage trained one, else the tuned one, so
`tunelab compare-runs main dpo-exp` is SFT alone against SFT + DPO.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tunelab.errors import DataError
from tunelab.eval import scoring
from tunelab.eval.intervals import CONFIDENCE, mean_interval
from tunelab.experiments import repo

SAMPLES_FILE = "metrics/samples.jsonl"
METRICS = ("task_accuracy", "json_valid", "exact_match")


@dataclass
class Difference:
    """B minus A for one metric: means over the paired examples and the interval."""
    metric: str
    mean_a: float
    mean_b: float
    low: float
    high: float

    @property
    def diff(self) -> float:
        return self.mean_b - self.mean_a

    def verdict(self, margin: float | None = None) -> str:
        if margin is not None:
            if -margin <= self.low and self.high <= margin:
                return f"within ±{margin:g}"
            if self.high < -margin or self.low > margin:
                return f"differs by more than {margin:g}"
            return f"undecided at ±{margin:g}: more examples needed"
        if self.low > 0:
            return "B higher"
        if self.high < 0:
            return "B lower"
        return "no clear difference"


def load_samples(spec: str, root: repo.PathLike = ".") -> list[dict]:
    """The samples of ``spec``: a file, or metrics/samples.jsonl at a revision or experiment
    of the repo at ``root``."""
    if Path(spec).is_file():
        origin, text = spec, Path(spec).read_text(encoding="utf-8")
    else:
        commit = resolve_revision(spec, root)
        shown = repo.show_file(commit, SAMPLES_FILE, root)
        if shown is None:
            raise DataError(f"{spec}: no {SAMPLES_FILE} at {commit[:7]} (run evaluate first)")
        origin, text = f"{spec}:{SAMPLES_FILE}", shown
    samples = []
    for line_number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            sample = json.loads(line)
        except json.JSONDecodeError as err:
            raise DataError(f"{origin}:{line_number}: not valid JSON ({err.msg})") from None
        missing = [key for key in ("prompt", "reference", "tuned")
                   if not isinstance(sample, dict) or not isinstance(sample.get(key), str)]
        if missing:
            raise DataError(f"{origin}:{line_number}: no text for {', '.join(missing)}")
        samples.append(sample)
    if not samples:
        raise DataError(f"{origin}: no samples")
    return samples


def resolve_revision(spec: str, root: repo.PathLike = ".") -> str:
    """The commit of a git revision, or of a DVC experiment of that name (preferring
    one run on HEAD when several experiments share the name)."""
    commit = repo.resolve_commit(spec, root)
    if commit is not None:
        return commit
    head = repo.resolve_commit("HEAD", root)
    matches = [(baseline, sha) for baseline, name, sha in repo.experiments(root)
               if name == spec]
    on_head = [sha for baseline, sha in matches if baseline == head]
    if on_head or len(matches) == 1:
        return (on_head or [matches[0][1]])[0]
    if matches:
        raise DataError(f"{spec}: {len(matches)} DVC experiments have this name on other "
                        "commits; give the experiment's commit instead (dvc exp show --sha)")
    raise DataError(f"{spec}: not a file, git revision or DVC experiment")


def final_answer(sample: dict) -> str:
    """The answer of the run's final model: aligned after an align stage, else tuned."""
    return sample["aligned"] if isinstance(sample.get("aligned"), str) else sample["tuned"]


def per_example_scores(samples: list[dict]) -> dict[tuple, dict]:
    """{example key: {metric: score in 0..1}} for the final answer of every sample."""
    scored = {}
    for index, sample in enumerate(samples):
        key = (sample.get("source", index), sample["prompt"])
        scores = scoring.task_scores([final_answer(sample)], [sample["reference"]])
        scored[key] = {metric: float(value) for metric, value in scores.items()}
    return scored


def compare(samples_a: list[dict], samples_b: list[dict], metrics=METRICS,
            seed: int = 0) -> list[Difference]:
    """B minus A per metric, over the examples both runs answered."""
    scores_a, scores_b = per_example_scores(samples_a), per_example_scores(samples_b)
    differences = []
    for metric in metrics:
        a, b = paired(scores_a, scores_b, metric)
        low, high = mean_interval(b - a, seed)
        differences.append(Difference(metric, float(a.mean()), float(b.mean()), low, high))
    return differences


def paired(scores_a: dict[tuple, dict], scores_b: dict[tuple, dict],
           metric: str) -> tuple[np.ndarray, np.ndarray]:
    """A's and B's ``metric`` per example (per_example_scores), both in one order of the
    examples; DataError when the runs answered different examples or nothing scores it."""
    only_a, only_b = scores_a.keys() - scores_b.keys(), scores_b.keys() - scores_a.keys()
    if only_a or only_b:
        raise DataError(f"A and B were evaluated on different examples ({len(only_a)} only in A, "
                        f"{len(only_b)} only in B): a paired comparison needs the same test split")
    keys = sorted(scores_a, key=str)
    if not all(metric in scores_a[k] and metric in scores_b[k] for k in keys):
        scored = sorted(scores_a[keys[0]])
        raise DataError(f"--metrics: {metric} is not scored for these samples "
                        f"(choose from {', '.join(scored)})")
    return (np.array([scores_a[k][metric] for k in keys]),
            np.array([scores_b[k][metric] for k in keys]))


def table(differences: list[Difference], label_a: str, label_b: str, examples: int,
          margin: float | None):
    from rich.table import Table

    out = Table(title=f"B = {label_b} vs A = {label_a}: {examples} paired test examples, "
                      f"{CONFIDENCE:.0%} bootstrap interval of B - A")
    for column in ("metric", "A", "B", "B - A", "interval", "verdict"):
        out.add_column(column, justify="left" if column in ("metric", "verdict") else "right")
    for row in differences:
        out.add_row(row.metric, f"{row.mean_a:.3f}", f"{row.mean_b:.3f}", f"{row.diff:+.3f}",
                    f"[{row.low:+.3f}, {row.high:+.3f}]", row.verdict(margin))
    return out


def compare_runs(run_a: str, run_b: str, metrics=METRICS, margin: float | None = None) -> int:
    """Print the comparison table; 1 when ``margin`` is given and the first metric's
    interval lies wholly outside it."""
    from rich.console import Console

    if margin is not None and not margin >= 0:
        raise DataError(f"--margin must be >= 0, got {margin}")
    samples_a, samples_b = load_samples(run_a), load_samples(run_b)
    if not metrics:
        raise DataError("--metrics: give at least one metric, e.g. task_accuracy")
    differences = compare(samples_a, samples_b, metrics=list(metrics))
    Console(width=120).print(table(differences, run_a, run_b, len(samples_a), margin))
    headline = differences[0]
    return 1 if margin is not None and "more than" in headline.verdict(margin) else 0
