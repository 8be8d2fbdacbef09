"""The bootstrap interval of a mean: how sure a paired difference is.

One helper for every paired comparison tunelab reports: `tunelab compare-runs`, watch's
promotion rule, the general-ability check's per-category change and the judge's win rate.
scipy's BCa bootstrap, seeded, so the same scores give the same interval.
"""

from __future__ import annotations

import numpy as np

CONFIDENCE = 0.95
RESAMPLES = 10_000


def mean_interval(values, seed: int = 0) -> tuple[float, float]:
    """The CONFIDENCE bootstrap interval (BCa) of the mean of ``values`` (per-example
    scores or paired gaps)."""
    from scipy.stats import bootstrap

    values = np.asarray(values, dtype=float)
    if len(values) == 0:
        raise ValueError("no values to bootstrap")
    if np.all(values == values[0]):  # no spread: the bootstrap interval is the point itself
        return float(values[0]), float(values[0])
    interval = bootstrap((values,), np.mean, confidence_level=CONFIDENCE, n_resamples=RESAMPLES,
                         rng=np.random.default_rng(seed)).confidence_interval
    return float(interval.low), float(interval.high)
