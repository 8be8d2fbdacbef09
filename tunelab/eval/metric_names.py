"""Metric names, their values and directions: what counts as a metric's number, and which
way is better for a metric when nothing says.

A metric name is a dotted key of a metrics file (``tuned.loss``, ``train.eval_loss``,
``tuned.task_accuracy``). Where a direction is written down (params.yaml ``check:``, a sweep
file's ``direction:``) that one counts; where it is not (the run report's base-vs-tuned
table), a name ending in one of LOWER_IS_BETTER_SUFFIXES is
lower-is-better and every other metric higher-is-better.
"""

from __future__ import annotations

LOWER_IS_BETTER_SUFFIXES = ("loss", "perplexity")


def metric_number(value) -> float | None:
    """A metric's value as a float; None for anything else (absent, text, and true/false,
    which JSON keeps apart from 1/0)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


def lower_is_better(metric: str) -> bool:
    """True for ``tuned.loss``, ``train.eval_loss``, ``perplexity``; False for accuracies."""
    return metric.lower().endswith(LOWER_IS_BETTER_SUFFIXES)
