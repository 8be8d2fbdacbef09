"""The environment a run happened in, for metrics/env.json: library versions,
CPU/GPU, threads and the resolved precision. Two runs can only be expected to
match number for number where these match too."""

from __future__ import annotations

import os
import platform
from importlib import metadata

from tunelab.bench import cpu_model

PACKAGES = ("torch", "transformers", "peft", "trl", "accelerate", "datasets", "dvc", "dvclive",
            "bitsandbytes", "tunelab")


def package_versions() -> dict[str, str | None]:
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def collect(precision: str) -> dict:
    import torch

    gpu = None
    if torch.cuda.is_available():
        gpu = {"name": torch.cuda.get_device_name(0), "count": torch.cuda.device_count(),
               "cuda": torch.version.cuda}
    return {
        "python": platform.python_version(),
        "packages": package_versions(),
        "platform": platform.platform(),
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "cpu_affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "torch_threads": torch.get_num_threads(),
        "gpu": gpu,
        "precision": precision,
    }
