"""`tunelab watch`: continuous learning from a folder of incoming data files.

For each new file in ``--incoming`` (one at a time, oldest name first):

1. validate it with the code `tunelab validate-data` runs; a bad file moves to
   ``INCOMING/rejected/`` with ``NAME.reason.txt`` beside it and is never ingested;
2. copy it into ``prepare.raw_dir`` as ``incoming-<UTC time>-<name>`` (never over a file);
3. run the pipeline as a DVC experiment in a temp copy (``dvc exp run --temp -n NAME``),
   so the workspace stays at HEAD whatever happens;
4. promote if ``metric`` beats HEAD's by at least ``--min-gain`` (tunelab.promotion):
   apply, commit, tag ``<artifact>@vX.Y.Z``. Otherwise the ingested copy leaves the
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
import sys
import time
from pathlib import Path

from tunelab import params
from tunelab.promotion import (WatchError, decide, discard_ingested, dvc, experiment_commit,
                               git, metric_value, promote, read_json_at, require_clean)

EVAL_METRICS = "metrics/eval.json"
PARTIAL_SUFFIXES = (".tmp", ".part", ".partial", ".crdownload", ".swp")
REJECTED, PROCESSED = "rejected", "processed"


def register(commands) -> None:
    cmd = commands.add_parser("watch", help="ingest new data files, run the pipeline as an "
                              "experiment, promote it if the metric improves")
    cmd.add_argument("--incoming", required=True, type=Path, help="folder to watch for data files")
    cmd.add_argument("--interval", type=float, default=60.0, help="seconds between looks")
    cmd.add_argument("--min-gain", type=float, default=0.0,
                     help="promote when the metric improves by at least this much "
                          "(negative: accept a small loss for the new data)")
    cmd.add_argument("--metric", default="tuned.task_accuracy",
                     help=f"dotted key in {EVAL_METRICS}; keys ending in loss or perplexity "
                          "count lower as better")
    cmd.add_argument("--once", action="store_true", help="process what is there, then exit")
    cmd.add_argument("--settle", type=float, default=2.0,
                     help="a file is taken only when its size and mtime stay the same this long")
    cmd.add_argument("--log", type=Path, default=Path("logs/watch.jsonl"))
    cmd.set_defaults(handler=run)


def run(args) -> int:
    try:
        return watch(args)
    except WatchError as err:
        print(f"tunelab watch: error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("tunelab watch: stopped", file=sys.stderr)
        return 130


def watch(args) -> int:
    repo = Path.cwd().resolve()
    if not (repo / "dvc.yaml").is_file() or not (repo / ".git").exists():
        raise WatchError(f"{repo}: not a tunelab repo (run watch in the folder with dvc.yaml)")
    incoming = args.incoming.resolve()
    if not incoming.is_dir():
        raise WatchError(f"{args.incoming}: no such folder")
    raw_dir = (repo / params.load("prepare").raw_dir).resolve()
    if incoming == raw_dir or raw_dir in incoming.parents:
        raise WatchError(f"{args.incoming}: the incoming folder must not be inside {raw_dir}")
    require_clean(repo)
    checker = FileChecker(repo)
    while True:
        for path in settled_files(incoming, args.settle):
            record = process(path, repo, incoming, raw_dir, checker, args)
            append_log(repo / args.log, record)
            print(f"watch: {path.name}: {record['decision']}: {record['reason']}")
        if args.once:
            return 0
        time.sleep(args.interval)


def process(path: Path, repo: Path, incoming: Path, raw_dir: Path, checker, args) -> dict:
    record = {"time": utc_now(), "file": path.name, "metric": args.metric,
              "min_gain": args.min_gain}
    errors = checker.errors(path)
    if errors:
        moved = set_aside(path, incoming / REJECTED, errors)
        return {**record, "decision": "invalid", "set_aside_as": str(moved),
                "reason": f"{len(errors)} errors; first: {errors[0]}"}
    require_clean(repo)  # someone may have edited the workspace since the last file
    baseline = git(repo, "rev-parse", "HEAD")
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%S")
    ingested = ingest(path, raw_dir, stamp)
    exp_name = experiment_name(stamp, path)
    record.update(ingested_as=str(ingested.relative_to(repo)), experiment=exp_name)
    promoted = False
    try:
        # Staged, because a `--temp` experiment sees only files tracked by Git or DVC.
        git(repo, "add", "--", str(ingested.relative_to(repo)))
        ran = dvc(repo, "exp", "run", "--temp", "-n", exp_name)
        exp_commit = experiment_commit(repo, baseline, exp_name)
        if ran.returncode != 0 or exp_commit is None:
            set_aside(path, incoming / REJECTED, [f"the pipeline failed (dvc exp run exited "
                                                  f"{ran.returncode}); see the watch output"])
            return {**record, "decision": "failed",
                    "reason": f"dvc exp run exited {ran.returncode}; the workspace is unchanged"}
        decision = decide(metric_value(read_json_at(repo, baseline, EVAL_METRICS), args.metric),
                          metric_value(read_json_at(repo, exp_commit, EVAL_METRICS), args.metric),
                          args.min_gain, args.metric)
        record.update(current=decision.current, candidate=decision.candidate,
                      gain=None if decision.gain is None else round(decision.gain, 6),
                      exp_commit=exp_commit, reason=decision.reason)
        discard_ingested(repo, ingested)  # promotion brings it back from the experiment commit
        if decision.promote:
            message = f"watch: promote {exp_name} ({path.name}): {decision.reason}"
            commit, tag = promote(repo, exp_commit, message)
            promoted = True
            record.update(decision="promoted", commit=commit, tag=tag)
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
        self.max_length = params.load("train").max_length

    def errors(self, path: Path) -> list[str]:
        from tunelab import data, validation

        if path.suffix.lower() not in data.DATA_SUFFIXES:
            return [f"{path.name}: unsupported file type (use {' '.join(data.DATA_SUFFIXES)})"]
        base = self.repo / "models/base"
        if not (base / "tokenizer_config.json").is_file():
            return data.load_files([path], self.prepare.format).errors
        if self.tokenizer is None:
            from transformers import AutoTokenizer

            self.tokenizer = AutoTokenizer.from_pretrained(base)
        result = validation.validate_files([path], self.tokenizer, self.max_length,
                                           self.prepare.format, self.validate.max_truncated_ratio)
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
