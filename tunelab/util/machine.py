"""The machine a run happened on: library versions, CPU/GPU, threads.

One home for both records of it: ``collect`` for the train stage's metrics/env.json
(with the resolved precision; two runs can only be expected to match number for number
where these match too) and ``bench_context`` for ``tunelab bench``'s metrics/bench.json.
Imports nothing from tunelab, and torch only inside the functions that need it, so
importing this module stays cheap.
"""

from __future__ import annotations

import os
import platform
from importlib import metadata
from pathlib import Path

PACKAGES = ("torch", "transformers", "peft", "trl", "accelerate", "datasets", "dvc", "dvclive",
            "bitsandbytes", "tunelab")
BENCH_PACKAGES = ("torch", "transformers", "trl", "peft")


def collect(precision: str) -> dict:
    """metrics/env.json: versions, platform, CPU/GPU, threads and ``precision``."""
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


def bench_context(cpu_native_bf16: bool) -> dict:
    """The ``machine`` block of metrics/bench.json; the load average tells how busy the
    machine was, so call it before the timed runs. ``cpu_native_bf16`` comes from the
    caller (tunelab.train decides it, and util may not import train)."""
    import torch

    return {
        "cpu": cpu_model(),
        "cpu_cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cpu_native_bf16": cpu_native_bf16,
        "cuda_device": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
        "load_average_1min": round(os.getloadavg()[0], 2),
        "versions": package_versions(BENCH_PACKAGES),
    }


def package_versions(names=PACKAGES) -> dict[str, str | None]:
    versions = {}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()
