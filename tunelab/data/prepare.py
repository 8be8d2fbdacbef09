"""Prepare: raw files -> deduplicated, split, normalised JSON Lines.

The split is by a seeded hash of each example's content, not by position, so
adding a file later keeps the old examples in the splits they were in. With
prepare.group_by the hash is of a field's value instead (a template, a product, a
near-duplicate cluster), so examples that share it stay on one side: a test split of
unseen groups, not of near-copies of training examples.
"""

from __future__ import annotations

import hashlib
import json
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from tunelab.data import columns, formats, readers
from tunelab.errors import DataError

# Beside the splits in the prepared folder: the examples in no split because no answer
# token of theirs fits train.max_length (tunelab.data.validation judges them).
UNTRAINABLE_FILE = "untrainable.jsonl"


@dataclass
class LoadResult:
    examples: list[dict] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    files: dict[str, int] = field(default_factory=dict)   # file -> examples read

    def examples_or_raise(self) -> list[dict]:
        """The examples; DataError with the first error (and how many more) if any."""
        if self.errors:
            more = len(self.errors) - 1
            raise DataError(self.errors[0] + (f" (and {more} more bad records)" if more else ""))
        return self.examples


def raw_files(raw_dir: str | Path, params_key: str = "prepare.raw_dir") -> list[Path]:
    """The data files under ``raw_dir`` (or ``raw_dir`` itself, where it is one file), sorted."""
    folder = Path(raw_dir)
    if folder.is_file() and readers.is_data_file(folder):
        return [folder]
    if not folder.is_dir():
        raise DataError(f"{folder}: data folder not found ({params_key})")
    files = sorted(p for p in folder.rglob("*") if p.is_file() and readers.is_data_file(p))
    if not files:
        raise DataError(f"{folder}: no data files ({' '.join(readers.SUFFIXES)})")
    return files


def load_files(paths, fmt: str = "auto", system_prompt: str = "", text_split: str = "file",
               mapping_for: Callable[[Path], columns.Mapping] | None = None,
               group_by: str = "") -> LoadResult:
    """Read and normalise every record (read_examples with formats.normalise), then put
    ``system_prompt`` first in every chat example that has no system message."""
    result = read_examples(paths, lambda record, source: formats.normalise(record, fmt, source),
                           text_split, mapping_for, group_by)
    if system_prompt:
        for example in result.examples:
            if "messages" in example and example["messages"][0]["role"] != "system":
                example["messages"].insert(0, {"role": "system", "content": system_prompt})
    kinds = {"text" if "text" in e else "chat" for e in result.examples}
    if len(kinds) > 1:
        first_text = next(e["source"] for e in result.examples if "text" in e)
        result.errors.append(f"{first_text}: plain-text examples mixed with chat examples; "
                             "train them in separate runs (set prepare.format or split the files)")
    return result


def read_examples(paths, normalise_record: Callable[[dict, str], dict], text_split: str = "file",
                  mapping_for: Callable[[Path], columns.Mapping] | None = None,
                  group_by: str = "") -> LoadResult:
    """Read every record of ``paths`` and turn it into an example with
    ``normalise_record(record, "path:line")``, collecting every DataError rather than the
    first. ``mapping_for(path)`` gives a file's column and role maps (columns.from_params);
    ``group_by`` names the record field each example keeps as its ``group`` (split)."""
    result = LoadResult()
    for path in paths:
        try:
            records = readers.read_records(path, text_split)
        except DataError as err:
            result.errors.append(str(err))
            continue
        mapping = mapping_for(Path(path)) if mapping_for else columns.Mapping()
        for line, record in records:
            try:
                example = normalise_record(columns.apply(record, mapping), f"{path}:{line}")
            except DataError as err:
                result.errors.append(str(err))
                continue
            if group_by and record.get(group_by) is not None:  # a missing one: split() says where
                example["group"] = record[group_by]
            result.examples.append(example)
        result.files[str(path)] = len(records)
    return result


def load_file(path, fmt: str = "auto", system_prompt: str = "", params_key: str = "",
              mapping: columns.Mapping | None = None) -> list[dict]:
    """One file's examples, normalised as load_files does (no dedupe, no split) with
    ``mapping``'s column and role renames, for data read beside the prepared splits;
    DataError on the first bad record."""
    if not Path(path).is_file():
        raise DataError(f"{path}: file not found" + (f" ({params_key})" if params_key else ""))
    return load_files([path], fmt, system_prompt,
                      mapping_for=(lambda _path: mapping) if mapping else None).examples_or_raise()


def content_key(example: dict) -> str:
    """What makes two examples duplicates: their text, not where they came from (their
    source, their group)."""
    body = {k: v for k, v in example.items() if k not in ("source", "group")}
    return json.dumps(body, sort_keys=True, ensure_ascii=False)


def distinct_indexes(examples: list[dict]) -> list[int]:
    """Indexes of the first example of each content (content_key), in order: the examples
    deduplicate keeps."""
    first_of: dict[str, int] = {}
    for index, example in enumerate(examples):
        first_of.setdefault(content_key(example), index)
    return sorted(first_of.values())


def deduplicate(examples: list[dict]) -> tuple[list[dict], int]:
    kept = [examples[i] for i in distinct_indexes(examples)]
    return kept, len(examples) - len(kept)


def split(examples: list[dict], val_ratio: float, test_ratio: float, seed: int,
          group_by: str = "") -> dict[str, list]:
    """Assign each example by where its seeded content hash falls in [0, 1); with
    ``group_by``, the hash of its ``group`` (load_files), so a group is never split.

    Membership depends only on the example itself, so adding data never moves
    an old example to another split; sizes are therefore close to, not exactly,
    the ratios (with groups, a whole group at a time).
    """
    parts: dict[str, list] = {"train": [], "val": [], "test": []}
    for example in examples:  # file order is kept inside each split: easier to read and diff
        key = group_key(example, group_by) if group_by else content_key(example)
        digest = hashlib.sha256(f"{seed}\0{key}".encode()).digest()
        position = int.from_bytes(digest[:8], "big") / 2**64
        name = "test" if position < test_ratio else "val" if position < test_ratio + val_ratio else "train"
        parts[name].append(example)
    empty = [name for name, ratio in (("train", 1), ("val", val_ratio), ("test", test_ratio))
             if ratio > 0 and not parts[name]]
    if empty:
        counted = (f"{len({group_key(e, group_by) for e in examples})} groups (prepare.group_by="
                   f"{group_by})" if group_by else f"{len(examples)} unique examples")
        raise DataError(f"only {counted}: the {' and '.join(empty)} split "
                        f"would be empty (prepare.val_ratio={val_ratio}, "
                        f"prepare.test_ratio={test_ratio}); add data or raise the ratios")
    return parts


def group_key(example: dict, group_by: str) -> str:
    if "group" not in example:
        raise DataError(f"{example.get('source', '?')}: no field '{group_by}' to split by "
                        f"(prepare.group_by; \"\" splits example by example)")
    return json.dumps(example["group"], sort_keys=True, ensure_ascii=False)


def length_stats(lengths: list[int]) -> dict:
    if not lengths:
        return {"mean": 0, "p50": 0, "p95": 0, "max": 0}
    ordered = sorted(lengths)
    return {"mean": round(statistics.fmean(ordered), 1),
            "p50": ordered[len(ordered) // 2],
            "p95": ordered[min(len(ordered) - 1, int(len(ordered) * 0.95))],
            "max": ordered[-1]}
