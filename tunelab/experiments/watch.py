"""`tunelab watch`: continuous learning from a folder of incoming data files.

For each new file in ``--incoming`` (one at a time, oldest name first):

1. validate it with the code `tunelab validate-data` runs; a bad file moves to
   ``INCOMING/rejected/`` with ``NAME.reason.txt`` beside it and is never ingested;
2. copy it into ``prepare.raw_dir`` as ``incoming-<UTC time>-<name>`` (never over a file);
3. run the pipeline as a DVC experiment in a temp copy (``dvc exp run --temp -n NAME``),
   so the workspace stays at HEAD whatever happens;
4. promote if ``metric`` beats HEAD's by at least ``--min-gain`` (experiments.promotion):
   apply, commit, register ``<artifact>@vX.Y.Z`` and assign it to ``--stage`` (staging), so
   `gto show` lists it and `tunelab serve --artifact NAME@staging` serves it. Otherwise the ingested copy leaves the
   workspace again; the experiment stays for inspection (``dvc exp show``/``apply``).

The incoming file then moves to ``INCOMING/processed/``. Every decision is one JSON line
in ``--log`` (logs/watch.jsonl: local, git-ignored) with the metrics that drove it.
"""

from __future__ import annotations

import datetime
import json
import os
import re
import shutil
import time
from pathlib import Path

from tunelab.config import params
from tunelab.experiments.promotion import (WatchError, decide, discard_ingested, metric_value,
                                           promote)
from tunelab.experiments.repo import (experiment_commit, head, read_json_at, require_clean,
                                      run_temp_experiment, stage)

EVAL_METRICS = "metrics/eval.json"
DEFAULT_METRIC = "tuned.task_accuracy"
DEFAULT_LOG = Path("logs/watch.jsonl")
PARTIAL_SUFFIXES = (".tmp", ".part", ".partial", ".crdownload", ".swp")
REJECTED, PROCESSED = "rejected", "processed"


def watch(incoming: Path, metric: str = DEFAULT_METRIC, min_gain: float = 0.0,
          interval: float = 60.0, settle: float = 2.0, once: bool = False,
          log: Path = DEFAULT_LOG, registry_stage: str | None = "staging") -> int:
    """Process every settled file in ``incoming``; again every ``interval`` s unless ``once``.
    A promoted model's versions go to ``registry_stage`` (None: registered only)."""
    repo = Path.cwd().resolve()
    if not (repo / "dvc.yaml").is_file() or not (repo / ".git").exists():
        raise WatchError(f"{repo}: not a tunelab repo (run watch in the folder with dvc.yaml)")
    given = incoming
    incoming = Path(incoming).resolve()
    if not incoming.is_dir():
        raise WatchError(f"{given}: no such folder")
    raw_dir = (repo / params.load("prepare").raw_dir).resolve()
    if incoming == raw_dir or raw_dir in incoming.parents:
        raise WatchError(f"{given}: the incoming folder must not be inside {raw_dir}")
    require_clean(repo)
    checker = FileChecker(repo)
    while True:
        for path in settled_files(incoming, settle):
            record = process(path, repo, incoming, raw_dir, checker, metric, min_gain,
                             registry_stage)
            append_log(repo / log, record)
            print(f"watch: {path.name}: {record['decision']}: {record['reason']}")
        if once:
            return 0
        time.sleep(interval)


def process(path: Path, repo: Path, incoming: Path, raw_dir: Path, checker, metric: str,
            min_gain: float, registry_stage: str | None = "staging") -> dict:
    record = {"time": utc_now(), "file": path.name, "metric": metric, "min_gain": min_gain}
    errors = checker.errors(path)
    if errors:
        moved = set_aside(path, incoming / REJECTED, errors)
        return {**record, "decision": "invalid", "set_aside_as": str(moved),
                "reason": f"{len(errors)} errors; first: {errors[0]}"}
    require_clean(repo)  # someone may have edited the workspace since the last file
    baseline = head(repo)
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%S")
    ingested = ingest(path, raw_dir, stamp)
    exp_name = experiment_name(stamp, path)
    record.update(ingested_as=str(ingested.relative_to(repo)), experiment=exp_name)
    promoted = False
    try:
        # Staged, because a `--temp` experiment sees only files tracked by Git or DVC.
        stage(ingested.relative_to(repo), repo)
        exit_code = run_temp_experiment(exp_name, repo)
        exp_commit = experiment_commit(repo, baseline, exp_name)
        if exit_code != 0 or exp_commit is None:
            set_aside(path, incoming / REJECTED, [f"the pipeline failed (dvc exp run exited "
                                                  f"{exit_code}); see the watch output"])
            return {**record, "decision": "failed",
                    "reason": f"dvc exp run exited {exit_code}; the workspace is unchanged"}
        decision = decide(metric_value(read_json_at(repo, baseline, EVAL_METRICS), metric),
                          metric_value(read_json_at(repo, exp_commit, EVAL_METRICS), metric),
                          min_gain, metric)
        record.update(current=decision.current, candidate=decision.candidate,
                      gain=None if decision.gain is None else round(decision.gain, 6),
                      exp_commit=exp_commit, reason=decision.reason)
        discard_ingested(repo, ingested)  # promotion brings it back from the experiment commit
        if decision.promote:
            message = f"watch: promote {exp_name} ({path.name}): {decision.reason}"
            promotion = promote(repo, exp_commit, message, registry_stage)
            promoted = True
            record.update(decision="promoted", commit=promotion.commit, tag=promotion.tag,
                          registered=promotion.registered, stage=promotion.stage)
        else:
            record.update(decision="rejected")
        move_unique(path, incoming / PROCESSED)
        return record
    finally:
        if not promoted:
            discard_ingested(repo, ingested)  # nothing of a rejected run stays in the workspace


class FileChecker:
    """`tunelab validate-data`'s checks: parsing and fields, then tokens when models/base exists."""

    def __init__(self, repo: Path):
        self.repo = repo
        self.tokenizer = None
        self.prepare = params.load("prepare")
        self.validate = params.load("validate")
        train = params.load("train")
        self.max_length, self.train_on = train.max_length, train.train_on
        self.text_stride = train.text_stride

    def errors(self, path: Path) -> list[str]:
        from tunelab.data import columns, prepare, readers, validation

        if not readers.is_data_file(path):
            return [f"{path.name}: unsupported file type (use {' '.join(readers.SUFFIXES)})"]
        mapping_for = columns.from_params(self.prepare, self.repo / self.prepare.raw_dir)
        base = self.repo / "models/base"
        if not (base / "tokenizer_config.json").is_file():
            return prepare.load_files([path], self.prepare.format, text_split=self.prepare.text_split,
                                      mapping_for=mapping_for).errors
        if self.tokenizer is None:
            from transformers import AutoTokenizer

            self.tokenizer = AutoTokenizer.from_pretrained(base)
        result = validation.validate_files([path], self.tokenizer, self.max_length,
                                           self.prepare.format, self.validate.max_truncated_ratio,
                                           self.train_on, self.prepare.text_split,
                                           self.text_stride, mapping_for)
        # The pipeline's validate stage fails on warnings too when fail_on_warning is set.
        return result.errors + (result.warnings if self.validate.fail_on_warning else [])


def settled_files(incoming: Path, settle: float) -> list[Path]:
    """Data files whose size and mtime did not change over ``settle`` seconds."""
    first = snapshot(incoming)
    if settle > 0 and first:
        time.sleep(settle)
    second = snapshot(incoming) if settle > 0 else first
    return sorted(path for path, stat in first.items() if second.get(path) == stat)


def snapshot(incoming: Path) -> dict[Path, tuple[int, int]]:
    files = {}
    for path in incoming.iterdir():
        if path.name.startswith(".") or path.name.lower().endswith(PARTIAL_SUFFIXES):
            continue  # hidden or still being written by a downloader / editor
        if path.is_file():
            stat = path.stat()
            files[path] = (stat.st_size, stat.st_mtime_ns)
    return files


def unique_path(folder: Path, name: str) -> Path:
    """``folder/name``, or ``folder/stem-2.suffix`` etc. when that is taken."""
    stem, suffix = os.path.splitext(name)
    candidate, n = folder / name, 1
    while candidate.exists():
        n += 1
        candidate = folder / f"{stem}-{n}{suffix}"
    return candidate


def move_unique(path: Path, folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    target = unique_path(folder, path.name)
    os.replace(path, target)  # same folder tree: atomic; never over an existing name
    return target


def set_aside(path: Path, folder: Path, errors: list[str]) -> Path:
    target = move_unique(path, folder)
    target.with_name(target.name + ".reason.txt").write_text("\n".join(errors) + "\n")
    return target


def ingest(path: Path, raw_dir: Path, stamp: str) -> Path:
    """Copy into the raw folder under a new name; an existing file is never replaced."""
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", path.name)
    target = unique_path(raw_dir, f"incoming-{stamp}-{safe}")
    partial = raw_dir / f".{target.name}.partial"  # hidden: not a data file if we crash
    shutil.copyfile(path, partial)
    try:
        os.link(partial, target)  # fails if the name appeared meanwhile: no overwrite
    finally:
        partial.unlink()
    return target


def experiment_name(stamp: str, path: Path) -> str:
    stem = re.sub(r"[^a-z0-9-]+", "-", path.name.lower()).strip("-")[:40] or "data"
    return f"watch-{stamp.lower()}-{stem}"


def append_log(log: Path, record: dict) -> None:
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("a", encoding="utf-8") as f:
        f.write(json.dumps(record, ensure_ascii=False) + "\n")
        f.flush()
        os.fsync(f.fileno())


def utc_now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
