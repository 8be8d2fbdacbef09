"""The argument types and list parsers of every command, in one place.

Those passed as ``type=`` raise ``argparse.ArgumentTypeError``, so argparse prints
``tunelab CMD: error: argument --FLAG: ...`` and exits 2. The list parsers run in the
handlers instead and raise DataError, which `tunelab` prints as one line and exits 1.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import yaml

from tunelab.errors import DataError

DEFAULT_BASE = "models/base"  # what `dvc repro base` writes; --base of several commands


def positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {value}")
    return value


def non_negative_float(text: str) -> float:
    value = float(text)
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
    return value


def unit_float(text: str) -> float:
    value = float(text)
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"must be in (0, 1], got {text}")
    return value


def adapter_spec(text: str) -> tuple[str, Path]:
    """``NAME=DIR`` of `tunelab serve --adapter`."""
    from tunelab.serve import server

    try:
        return server.parse_adapter_spec(text)
    except ValueError as err:  # argparse would print only "invalid adapter_spec value"
        raise argparse.ArgumentTypeError(str(err)) from None


def gguf_spec(text: str) -> tuple[str, Path]:
    """``NAME=FILE`` of `tunelab serve --gguf` (and `tunelab bench-serve --gguf`)."""
    from tunelab.serve import server

    try:
        return server.parse_gguf_spec(text)
    except ValueError as err:  # argparse would print only "invalid gguf_spec value"
        raise argparse.ArgumentTypeError(str(err)) from None


def learning_rates(text: str) -> list[float]:
    """`tunelab lr-test --rates 1e-4,3e-4`; empty items are skipped."""
    try:
        rates = [float(part) for part in text.split(",") if part.strip()]
    except ValueError:
        # SystemExit, not ArgumentTypeError: argparse would replace the message with its own.
        raise SystemExit(f"tunelab lr-test: error: --rates: not a comma-separated list of "
                         f"numbers: {text!r}") from None
    return rates


def parse_list(text: str, option: str) -> list[str]:
    """``A,B,C`` with no empty item; ``option`` names the flag in the error."""
    items = [item.strip() for item in text.split(",")]
    if not text.strip() or any(not item for item in items):
        raise DataError(f"{option}: expected a comma-separated list, got {text!r}")
    return items


def parse_weights(text: str, count: int, noun: str = "adapters") -> list[float]:
    """Floats, one per input; a clear error for a bad number or a wrong count."""
    try:
        weights = [float(w) for w in parse_list(text, "--weights")]
    except ValueError:
        raise DataError(f"--weights: expected numbers, got {text!r}") from None
    if len(weights) != count:
        raise DataError(f"--weights: {len(weights)} weights for {count} {noun}")
    if not all(math.isfinite(w) for w in weights):
        raise DataError(f"--weights: must be finite numbers, got {text!r}")
    return weights


def parse_sets(items: list[str]) -> dict:
    """``--set KEY=VALUE`` items as {key: YAML value}, as `dvc exp run -S` reads them."""
    values = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep or not key:
            raise DataError(f"--set {item}: expected KEY=VALUE, e.g. train.max_steps=2")
        values[key] = yaml.safe_load(text)
    return values
