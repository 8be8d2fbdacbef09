"""Promote a DVC experiment by one metric, or keep it aside: the rule, and the Git side.

Promotion = the experiment's files and outputs into the workspace (as ``dvc exp apply``
does), a commit of what it changed, and an annotated GTO-style tag ``<artifact>@vX.Y.Z``
(the artifact of dvc.yaml's ``artifacts`` whose path is models/adapter), so ``gto show`` /
``dvc artifacts get`` can name the promoted adapter. Every command is an argument list.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import yaml

LOWER_IS_BETTER = ("loss", "perplexity")  # last part of the dotted metric key
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


def lower_is_better(metric: str) -> bool:
    return metric.rsplit(".", 1)[-1] in LOWER_IS_BETTER


def metric_value(metrics: dict | None, metric: str) -> float | None:
    """``metrics["tuned"]["task_accuracy"]`` for ``tuned.task_accuracy``; None if absent."""
    value = metrics
    for part in metric.split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


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


# --- Git and DVC -------------------------------------------------------------------

def git(repo: Path, *args: str, check: bool = True) -> str:
    result = subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True)
    if check and result.returncode != 0:
        detail = result.stderr.strip() or result.stdout.strip()
        raise WatchError(f"git {' '.join(args)} failed: {detail}")
    return result.stdout.strip()


def dvc(repo: Path, *args: str) -> subprocess.CompletedProcess:
    """Run dvc from this Python (the stages' `python` is this virtualenv's too); its
    output (stage progress) goes to our stderr, the channel for progress."""
    venv_bin = Path(sys.executable).parent
    env = dict(os.environ, PATH=f"{venv_bin}{os.pathsep}{os.environ.get('PATH', '')}")
    try:
        sys.stderr.fileno()
        out = sys.stderr  # a real file: dvc writes to it as it runs
    except (AttributeError, OSError, ValueError):
        out = subprocess.PIPE  # e.g. an in-memory stderr: pass the text on at the end
    result = subprocess.run([sys.executable, "-m", "dvc", *args], cwd=repo, env=env, text=True,
                            stdout=out, stderr=subprocess.STDOUT)
    if result.stdout:
        sys.stderr.write(result.stdout)
    return result


def dirty_files(repo: Path) -> list[str]:
    """Tracked files that differ from HEAD (untracked files do not count)."""
    return git(repo, "diff", "--name-only", "HEAD").splitlines()  # staged or not


def require_clean(repo: Path) -> None:
    dirty = dirty_files(repo)
    if dirty:
        shown = ", ".join(dirty[:5]) + (f" and {len(dirty) - 5} more" if len(dirty) > 5 else "")
        raise WatchError(f"uncommitted changes in {shown}: commit or stash them first "
                         "(watch commits each promotion on top of a clean HEAD)")


def read_json_at(repo: Path, rev: str, path: str) -> dict | None:
    result = subprocess.run(["git", "show", f"{rev}:{path}"], cwd=repo, capture_output=True,
                            text=True)
    if result.returncode != 0:
        return None
    try:
        return json.loads(result.stdout)
    except json.JSONDecodeError:
        return None


def experiment_commit(repo: Path, baseline: str, name: str) -> str | None:
    """The commit of experiment ``name`` run on ``baseline`` (DVC 3 ref layout)."""
    ref = f"refs/exps/{baseline[:2]}/{baseline[2:]}/{name}"
    return git(repo, "rev-parse", "--verify", "--quiet", ref, check=False) or None


def artifact_name(repo: Path) -> str:
    """The dvc.yaml artifact whose path is the adapter; "model" if there is none."""
    try:
        artifacts = (yaml.safe_load((repo / "dvc.yaml").read_text()) or {}).get("artifacts") or {}
    except (OSError, yaml.YAMLError):
        return FALLBACK_ARTIFACT
    names = [name for name, spec in artifacts.items()
             if isinstance(spec, dict) and spec.get("path", "").rstrip("/") == ADAPTER_PATH]
    return names[0] if names else FALLBACK_ARTIFACT


def next_version(repo: Path, artifact: str) -> str:
    """GTO's default: bump the patch of the highest ``<artifact>@vX.Y.Z`` tag; v0.0.1 first."""
    pattern = re.compile(rf"^{re.escape(artifact)}@v(\d+)\.(\d+)\.(\d+)$")
    versions = [tuple(map(int, m.groups())) for tag in git(repo, "tag", "--list").splitlines()
                if (m := pattern.match(tag))]
    major, minor, patch = max(versions) if versions else (0, 0, 0)
    return f"v{major}.{minor}.{patch + 1}"


def promote(repo: Path, exp_commit: str, message: str) -> tuple[str, str]:
    """Apply the experiment, commit what it changed, tag it. Returns (commit, tag).

    Applied as `dvc exp apply` does, but its DVC outputs are checked out for the root
    dvc.yaml only: `dvc exp apply` fails when another pipeline's outputs (multitask/) were
    never built, although this experiment is complete."""
    removed, changed = [], []
    for line in git(repo, "diff", "--name-status", "--no-renames", "HEAD", exp_commit).splitlines():
        status, path = line.split("\t", 1)
        (removed if status == "D" else changed).append(path)
    if removed:
        git(repo, "rm", "-q", "--", *removed)
    if changed:
        git(repo, "checkout", exp_commit, "--", *changed)  # into the index and the workspace
    checkout = dvc(repo, "checkout", "dvc.yaml")  # models/adapter etc. from the DVC cache
    if checkout.returncode != 0:
        raise WatchError(f"dvc checkout dvc.yaml exited {checkout.returncode} after taking the "
                         f"files of {exp_commit[:8]}: the workspace holds them uncommitted")
    git(repo, "commit", "-q", "-m", message)
    commit = git(repo, "rev-parse", "HEAD")
    artifact = artifact_name(repo)
    tag = f"{artifact}@{next_version(repo, artifact)}"
    git(repo, "tag", "-a", tag, "-m", message, commit)
    return commit, tag


def discard_ingested(repo: Path, ingested: Path) -> None:
    """Take an ingested copy out of the index and the workspace (the experiment keeps it)."""
    git(repo, "rm", "-q", "--cached", "--ignore-unmatch", "--", str(ingested.relative_to(repo)))
    ingested.unlink(missing_ok=True)
