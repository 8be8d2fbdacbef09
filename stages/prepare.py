"""Stage: read every raw data file, normalise, deduplicate and split.

Usage (dvc.yaml): python stages/prepare.py RAW_DIR BASE_DIR PREPARED_DIR DATA_METRICS
Reads params `prepare` (RAW_DIR is prepare.raw_dir, interpolated by dvc.yaml) and
train.max_length and train.train_on (for DATA_METRICS' "analysis", and to set aside the
examples no answer token of which fits) and train.reasoning (drop: reasoning is taken out
of every example); writes PREPARED_DIR/{train,val,test}.jsonl, PREPARED_DIR/untrainable.jsonl
(the examples set aside, in no split: the validate stage judges them) and DATA_METRICS.
RAW_DIR is only read.
"""

import sys

from transformers import AutoTokenizer

from tunelab import pipeline
from tunelab.chat import reasoning
from tunelab.config import params
from tunelab.data import analysis, columns, prepare
from tunelab.errors import DataError
from tunelab.util import files


def main(raw_dir: str, base_dir: str, prepared_dir: str, data_metrics: str) -> int:
    p = params.load("prepare")
    raw_files = prepare.raw_files(raw_dir)
    loaded = prepare.load_files(raw_files, p.format, p.system_prompt, p.text_split,
                                columns.from_params(p, raw_dir), p.group_by)
    if loaded.errors:
        for message in loaded.errors[:20]:
            print(message, file=sys.stderr)
        more = len(loaded.errors) - 20
        raise DataError(f"{len(loaded.errors)} bad records in {raw_dir}"
                        + (f" (first 20 shown, {more} more)" if more > 0 else "")
                        + "; nothing was written")
    train = params.load("train")
    if train.reasoning == "drop":  # the answers alone train (docs/your-model.md: Reasoning models)
        loaded.examples = [reasoning.without_reasoning(e) for e in loaded.examples]
    unique, duplicates = prepare.deduplicate(loaded.examples)
    splits = prepare.split(unique, p.val_ratio, p.test_ratio, p.seed, p.group_by)

    tokenizer = AutoTokenizer.from_pretrained(base_dir)
    # Of the examples as read (duplicates included), as `tunelab analyze-data` on the same
    # files prints them; at train's max_length and train_on, so as training will see them.
    # Its "tokens": lengths before truncation of the unique examples, so the user can pick
    # train.max_length from p95/max.
    analyzed = analysis.analyze(
        loaded.examples, tokenizer, max_length=train.max_length, train_on=train.train_on,
        text_stride=train.text_stride, format_counts=analysis.count_formats(
            raw_files, p.format, p.text_split, columns.from_params(p, raw_dir)))
    figures = analyzed.figures
    # An example whose prompt leaves no answer token within train.max_length leaves its
    # split, so train never sees it; the validate stage judges the set-aside file
    # (validate.untrainable: drop leaves them out, fail stops the run). Each example's split
    # depends on it alone, so the others stay where they were.
    untrainable = analyzed.untrainable
    set_aside = {example["source"] for example in untrainable}
    kept = {name: [e for e in examples if e["source"] not in set_aside]
            for name, examples in splits.items()}
    emptied = [name for name in splits if splits[name] and not kept[name]]
    if emptied:
        named = (f"{emptied[0]} split" if len(emptied) == 1
                 else f"{', '.join(emptied[:-1])} and {emptied[-1]} splits")
        raise DataError(f"every example of the {named} "
                        f"leaves no answer token within train.max_length={train.max_length} (the "
                        f"first: {splits[emptied[0]][0]['source']}); raise train.max_length (`tunelab "
                        "analyze-data` shows the lengths)")
    splits = kept

    with files.atomic_path(prepared_dir) as staging:
        staging.mkdir()
        for name, examples in splits.items():
            files.write_jsonl_atomic(staging / f"{name}.jsonl", examples)
        files.write_jsonl_atomic(staging / prepare.UNTRAINABLE_FILE, untrainable)
    stats = {
        "files": loaded.files,
        "examples_read": len(loaded.examples),
        "duplicates_dropped": duplicates,
        "kind": "text" if "text" in unique[0] else "chat",
        "tasks": sorted({e["task"] for e in unique if e.get("task")}),
        "splits": {name: len(examples) for name, examples in splits.items()},
        "tokens": analyzed.tokens,
        "analysis": figures,
    }
    files.write_json_atomic(data_metrics, stats)
    print(f"prepare: {len(loaded.examples)} examples read from {len(raw_files)} files, "
          f"{duplicates} duplicates dropped, split {stats['splits']}, "
          f"tokens p95={stats['tokens']['p95']} max={stats['tokens']['max']}")
    print(f"prepare: {figures['truncated']['examples']} examples longer than train.max_length="
          f"{train.max_length}; max_length {figures['suggested_max_length']['p95']} covers p95, "
          f"{figures['suggested_max_length']['p99']} p99; {figures['duplicates']['near_pairs']} "
          f"near-duplicate pairs (`tunelab analyze-data` shows them)")
    if untrainable:
        print(f"prepare: {len(untrainable)} examples leave no answer token within train.max_length="
              f"{train.max_length}: in no split, for the validate stage to judge "
              "(validate.untrainable)")
    return 0


if __name__ == "__main__":
    pipeline.run(main, "prepare")
