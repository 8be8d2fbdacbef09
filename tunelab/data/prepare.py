"""Prepare: raw files -> deduplicated, split, normalised JSON Lines.

The split is by a seeded hash of each example's content, not by position, so
adding a file later keeps the old examples in the splits they were in.
"""

from __future__ import annotations

import hashlib
import json
import statistics
from dataclasses import dataclass, field
from pathlib import Path

from tunelab.data import formats
from tunelab.errors import DataError

DATA_SUFFIXES = (".jsonl", ".json", ".csv", ".parquet")


@dataclass
class LoadResult:
    examples: list[dict] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    files: dict[str, int] = field(default_factory=dict)   # file -> examples read


def raw_files(raw_dir: str | Path) -> list[Path]:
    folder = Path(raw_dir)
    if not folder.is_dir():
        raise DataError(f"{folder}: data folder not found (prepare.raw_dir)")
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in DATA_SUFFIXES)
    if not files:
        raise DataError(f"{folder}: no data files (.jsonl .json .csv .parquet)")
    return files


def load_files(paths, fmt: str = "auto", system_prompt: str = "") -> LoadResult:
    """Read and normalise every record, collecting every error rather than the first."""
    result = LoadResult()
    for path in paths:
        try:
            records = formats.read_records(path)
        except DataError as err:
            result.errors.append(str(err))
            continue
        for line, record in records:
            try:
                example = formats.normalise(record, fmt, f"{path}:{line}")
            except DataError as err:
                result.errors.append(str(err))
                continue
            if system_prompt and "messages" in example and example["messages"][0]["role"] != "system":
                example["messages"].insert(0, {"role": "system", "content": system_prompt})
            result.examples.append(example)
        result.files[str(path)] = len(records)
    kinds = {"text" if "text" in e else "chat" for e in result.examples}
    if len(kinds) > 1:
        first_text = next(e["source"] for e in result.examples if "text" in e)
        result.errors.append(f"{first_text}: plain-text examples mixed with chat examples; "
                             "train them in separate runs (set prepare.format or split the files)")
    return result


def content_key(example: dict) -> str:
    """What makes two examples duplicates: their text, not where they came from."""
    body = {k: v for k, v in example.items() if k != "source"}
    return json.dumps(body, sort_keys=True, ensure_ascii=False)


def deduplicate(examples: list[dict]) -> tuple[list[dict], int]:
    seen: set[str] = set()
    kept = []
    for example in examples:
        key = content_key(example)
        if key not in seen:
            seen.add(key)
            kept.append(example)
    return kept, len(examples) - len(kept)


def split(examples: list[dict], val_ratio: float, test_ratio: float, seed: int) -> dict[str, list]:
    """Assign each example by where its seeded content hash falls in [0, 1).

    Membership depends only on the example itself, so adding data never moves
    an old example to another split; sizes are therefore close to, not exactly,
    the ratios.
    """
    parts: dict[str, list] = {"train": [], "val": [], "test": []}
    for example in examples:  # file order is kept inside each split: easier to read and diff
        digest = hashlib.sha256(f"{seed}\0{content_key(example)}".encode()).digest()
        position = int.from_bytes(digest[:8], "big") / 2**64
        name = "test" if position < test_ratio else "val" if position < test_ratio + val_ratio else "train"
        parts[name].append(example)
    empty = [name for name, ratio in (("train", 1), ("val", val_ratio), ("test", test_ratio))
             if ratio > 0 and not parts[name]]
    if empty:
        raise DataError(f"only {len(examples)} unique examples: the {' and '.join(empty)} split "
                        f"would be empty (prepare.val_ratio={val_ratio}, "
                        f"prepare.test_ratio={test_ratio}); add data or raise the ratios")
    return parts


def length_stats(lengths: list[int]) -> dict:
    if not lengths:
        return {"mean": 0, "p50": 0, "p95": 0, "max": 0}
    ordered = sorted(lengths)
    return {"mean": round(statistics.fmean(ordered), 1),
            "p50": ordered[len(ordered) // 2],
            "p95": ordered[min(len(ordered) - 1, int(len(ordered) * 0.95))],
            "max": ordered[-1]}
