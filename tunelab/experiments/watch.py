"""`tunelab watch`: continuous learning from a folder of incoming data files.

For each new file in ``--incoming`` (one at a time, oldest name first):

1. check it as prepare and validate will (FileChecker: `tunelab validate-data`'s parsing,
   prepare.group_by, token lengths); a bad file or a symbolic link moves to
   ``INCOMING/rejected/`` with ``NAME.reason.txt`` beside it and is never ingested;
2. copy it into ``prepare.raw_dir`` as ``incoming-<UTC time>-<name>`` (never over a file);
3. run the pipeline as a DVC experiment in a temp copy (``dvc exp run --temp -n NAME``),
   so the workspace stays at HEAD whatever happens;
4. score the current model on the candidate's test examples and evaluate.heldout (judge)
   and promote if the lower bound of the paired bootstrap interval of the candidate's gain
   in ``metric`` reaches ``--min-gain`` (experiments.promotion): apply, commit, register
   ``<artifact>@vX.Y.Z`` and assign it to ``--stage`` (staging), so `gto show` lists it and
   `tunelab serve --artifact NAME@staging` serves it. Otherwise the ingested copy leaves
   the workspace again; the experiment stays for inspection (``dvc exp show``/``apply``).

The incoming file then moves to ``INCOMING/processed/``. Every decision is one JSON line
in ``--log`` (logs/watch.jsonl: local, git-ignored) with the metrics that drove it.
"""

from __future__ import annotations

import datetime
import json
import os
import re
import shutil
import stat
import tempfile
import time
from pathlib import Path

from tunelab.config import params
from tunelab.experiments import registry
from tunelab.experiments.promotion import (Decision, WatchError, decide, discard_ingested,
                                           per_example_metric, promote)
from tunelab.experiments.repo import (experiment_commit, head, require_clean,
                                      run_temp_experiment, show_file, stage)

DEFAULT_METRIC = "tuned.task_accuracy"
BASE_DIR, ADAPTER_DIR, ALIGNED_DIR = "models/base", "models/adapter", "models/aligned"
TEST_SPLIT = "data/prepared/test.jsonl"
DEFAULT_LOG = Path("logs/watch.jsonl")
PARTIAL_SUFFIXES = (".tmp", ".part", ".partial", ".crdownload", ".swp")
REJECTED, PROCESSED = "rejected", "processed"


def watch(incoming: Path, metric: str = DEFAULT_METRIC, min_gain: float = 0.0,
          interval: float = 60.0, settle: float = 2.0, once: bool = False,
          log: Path = DEFAULT_LOG, registry_stage: str | None = "staging") -> int:
    """Process every settled file in ``incoming``; again every ``interval`` s unless ``once``.
    A promoted model's versions go to ``registry_stage`` (None: registered only)."""
    per_example_metric(metric)  # a metric that cannot be paired is refused before anything runs
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
        decision = judge(repo, exp_commit, metric, min_gain)
        record.update(current=rounded(decision.current), candidate=rounded(decision.candidate),
                      gain=rounded(decision.gain), low=rounded(decision.low),
                      high=rounded(decision.high), examples=decision.examples,
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


# --- the candidate against the current model, on the same examples ---------------------

def judge(repo: Path, exp_commit: str, metric: str, min_gain: float) -> Decision:
    """Score the current model on the examples the candidate was scored on, then decide.

    The examples: the candidate's test split (as its evaluate stage read it) and the
    evaluate.heldout file. The candidate's answers to its test split are its
    metrics/samples.jsonl; the current model (the workspace's final model, which is HEAD's:
    watch starts on a clean HEAD and checks out each promotion) answers them all anew, and
    the candidate's final model, fetched at the experiment, answers the held-out file, whose
    answers evaluate does not keep. prepare splits by a hash of each example's group, so no
    test example of the candidate was in HEAD's training data."""
    from tunelab.errors import DataError
    from tunelab.experiments import compare_runs

    try:
        candidate = compare_runs.load_samples(exp_commit)  # read in the cwd, which is ``repo``
    except DataError as err:
        return Decision(False, None, None, None, f"no per-example answers to judge by: {err}")
    current_dir = current_model(repo)
    if current_dir is None:
        return decide(None, candidate, min_gain, metric)
    test = candidate_test_examples(repo, exp_commit, params.load("evaluate").max_examples)
    heldout = heldout_examples()
    current_test, current_heldout = answers(repo / BASE_DIR, current_dir, [test, heldout])
    if heldout:
        with tempfile.TemporaryDirectory(prefix="tunelab-watch-") as folder:
            # The base is HEAD's too: watch adds data only, so params (model.base) are HEAD's.
            candidate_dir = final_model_at(repo, exp_commit, Path(folder))
            candidate = candidate + answers(repo / BASE_DIR, candidate_dir, [heldout])[0]
    return decide(current_test + current_heldout, candidate, min_gain, metric)


def current_model(repo: Path) -> Path | None:
    """The workspace's final model, as evaluate and export pick it; None before the first."""
    from tunelab.models import loading

    final = loading.final_model(repo / ADAPTER_DIR, repo / ALIGNED_DIR)
    trained = (final / "adapter_config.json").is_file() or (final / "config.json").is_file()
    return final if trained else None


def final_model_at(repo: Path, commit: str, folder: Path) -> Path:
    """The final model of ``commit`` (aligned where its align stage trained one, else the
    adapter), fetched through DVC into ``folder``."""
    from tunelab.models import loading

    aligned = registry.fetch(repo, ALIGNED_DIR, commit, folder / "aligned")
    if loading.aligned_objective(aligned):
        return aligned
    return registry.fetch(repo, ADAPTER_DIR, commit, folder / "adapter")


def candidate_test_examples(repo: Path, commit: str, max_examples: int) -> list[dict]:
    """The test examples ``commit``'s evaluate stage scored: its split's first max_examples."""
    text = show_file(commit, TEST_SPLIT, repo)
    if text is None:
        raise WatchError(f"{TEST_SPLIT}: not found at the experiment {commit[:8]} (not in the "
                         "DVC cache?): the candidate cannot be compared")
    examples = [json.loads(line) for line in text.splitlines() if line.strip()]
    return examples[:max_examples] if max_examples else examples


def heldout_examples() -> list[dict]:
    """evaluate.heldout's examples, read as the evaluate stage reads them ([] for none)."""
    from tunelab.data import columns, prepare

    evaluate, prep = params.load("evaluate"), params.load("prepare")
    if not evaluate.heldout:
        return []
    # prepare's format and system prompt and its global maps (per_file globs are raw_dir's).
    examples = prepare.load_file(evaluate.heldout, prep.format, prep.system_prompt,
                                 "evaluate.heldout", columns.build(prep.columns, prep.roles))
    return examples[:evaluate.max_examples or None]


def answers(base_dir: Path, model_dir: Path, parts: list[list[dict]]) -> list[list[dict]]:
    """Samples rows (compare_runs) of ``model_dir``'s answers to each part, one model load."""
    from tunelab.eval import evaluation
    from tunelab.models import loading

    evaluate = params.load("evaluate")
    model, tokenizer = loading.load_trained(base_dir, model_dir)
    rows = []
    for examples in parts:
        # evaluate_model as the evaluate stage calls it, on each part as it scores each: the
        # same prompts, greedy decoding and batches, so an unchanged model answers the same.
        result = evaluation.evaluate_model(model, tokenizer, examples, evaluate.max_new_tokens,
                                           evaluate.batch_size, desc=f"watch: {model_dir.name}")
        # samples() writes the rows, keyed by source and prompt as the stage keys them; the
        # one model's answers fill both of its columns (compare_runs reads "tuned").
        rows.append(evaluation.samples(examples, result, result) if examples else [])
    return rows


# --- files -----------------------------------------------------------------------------

class FileChecker:
    """The data checks of the pipeline, on one incoming file: read as the prepare stage reads
    raw files (format, system prompt, column maps, prepare.group_by: `tunelab validate-data`'s
    parsing checks and prepare's own), then, when models/base exists, the validate stage's
    token checks on the examples as prepared. A file accepted here passes prepare and validate."""

    def __init__(self, repo: Path):
        self.repo = repo
        self.tokenizer = None
        self.prepare = params.load("prepare")
        self.validate = params.load("validate")
        train = params.load("train")
        self.max_length, self.train_on = train.max_length, train.train_on
        self.text_stride, self.reasoning = train.text_stride, train.reasoning

    def errors(self, path: Path) -> list[str]:
        from tunelab.chat import reasoning
        from tunelab.data import columns, prepare, readers, validation

        if path.is_symlink():  # never read what a link points to: it may be anywhere
            return [f"{path.name}: a symbolic link; watch takes regular files only (copy the "
                    "file into the folder instead)"]
        if not readers.is_data_file(path):
            return [f"{path.name}: unsupported file type (use {' '.join(readers.SUFFIXES)})"]
        p = self.prepare
        loaded = prepare.load_files([path], p.format, p.system_prompt, p.text_split,
                                    columns.from_params(p, self.repo / p.raw_dir), p.group_by)
        errors = loaded.errors + group_errors(loaded.examples, p.group_by)
        if not (self.repo / BASE_DIR / "tokenizer_config.json").is_file():
            return errors
        if self.tokenizer is None:
            from transformers import AutoTokenizer

            self.tokenizer = AutoTokenizer.from_pretrained(self.repo / BASE_DIR)
        examples = loaded.examples
        if self.reasoning == "drop":  # as the prepare stage leaves them for validate
            examples = [reasoning.without_reasoning(e) for e in examples]
        result = validation.check_examples(examples, self.tokenizer, self.max_length,
                                           self.validate.max_truncated_ratio, self.train_on,
                                           self.text_stride,
                                           untrainable=self.validate.untrainable,
                                           max_dropped_ratio=self.validate.max_dropped_ratio)
        # The pipeline's validate stage fails on warnings too when fail_on_warning is set.
        return errors + result.errors + (result.warnings if self.validate.fail_on_warning else [])


def group_errors(examples: list[dict], group_by: str) -> list[str]:
    """prepare.split's check of each example's prepare.group_by field (prepare.group_key),
    one line per example without it, rather than the experiment failing in prepare."""
    from tunelab.data import prepare
    from tunelab.errors import DataError

    found = []
    for example in examples if group_by else []:
        try:
            prepare.group_key(example, group_by)
        except DataError as err:
            found.append(str(err))
    return found


def settled_files(incoming: Path, settle: float) -> list[Path]:
    """Data files whose size and mtime did not change over ``settle`` seconds."""
    first = snapshot(incoming)
    if settle > 0 and first:
        time.sleep(settle)
    second = snapshot(incoming) if settle > 0 else first
    return sorted(path for path, stat in first.items() if second.get(path) == stat)


def snapshot(incoming: Path) -> dict[Path, tuple[int, int]]:
    """Regular files and symbolic links (as themselves, never followed: FileChecker sets a
    link aside) by (size, mtime); folders such as rejected/ and processed/ are not listed."""
    files = {}
    for path in incoming.iterdir():
        if path.name.startswith(".") or path.name.lower().endswith(PARTIAL_SUFFIXES):
            continue  # hidden or still being written by a downloader / editor
        info = path.lstat()
        if stat.S_ISREG(info.st_mode) or stat.S_ISLNK(info.st_mode):
            files[path] = (info.st_size, info.st_mtime_ns)
    return files


def unique_path(folder: Path, name: str) -> Path:
    """``folder/name``, or ``folder/stem-2.suffix`` etc. when that is taken."""
    stem, suffix = os.path.splitext(name)
    candidate, n = folder / name, 1
    while os.path.lexists(candidate):  # a dangling link holds its name too
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
    # O_NOFOLLOW: a name turned into a link since it was checked fails here, unread.
    with open(os.open(path, os.O_RDONLY | os.O_NOFOLLOW), "rb") as source, \
            partial.open("wb") as copy:
        shutil.copyfileobj(source, copy)
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


def rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 6)


def utc_now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
