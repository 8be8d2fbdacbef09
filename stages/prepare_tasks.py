"""Stage (multitask/dvc.yaml): read the multi-task data, normalise, deduplicate, split.

Usage (dvc.yaml): python stages/prepare_tasks.py PARAMS_FILE RAW_DIR PREPARED_DIR DATA_METRICS
Reads PARAMS_FILE (multitask/params.yaml) `multitask` and `prepare`; writes
PREPARED_DIR/{train,val,test}.jsonl (every example keeps its `task`) and DATA_METRICS
(examples per task and split). Fails when a task listed in multitask.tasks has no train
or no test examples.
"""

import sys

from tunelab import pipeline
from tunelab.config import params
from tunelab.data import columns, multitask, prepare
from tunelab.errors import DataError
from tunelab.util import files


def main(params_file: str, raw_dir: str, prepared_dir: str, data_metrics: str) -> int:
    tasks = multitask.load_params(params_file).tasks
    p = params.load("prepare", params_file)
    loaded = prepare.load_files(prepare.raw_files(raw_dir), p.format, p.system_prompt,
                                p.text_split, columns.from_params(p, raw_dir), p.group_by)
    if loaded.errors:
        for message in loaded.errors[:20]:
            print(message, file=sys.stderr)
        raise DataError(f"{len(loaded.errors)} bad records in {raw_dir}; nothing was written")
    unique, duplicates = prepare.deduplicate(loaded.examples)
    splits = prepare.split(unique, p.val_ratio, p.test_ratio, p.seed, p.group_by)
    multitask.check_tasks(splits, tasks, raw_dir)

    with files.atomic_path(prepared_dir) as staging:
        staging.mkdir()
        for name, examples in splits.items():
            files.write_jsonl_atomic(staging / f"{name}.jsonl", examples)
    counts = multitask.count_by_task(splits)
    files.write_json_atomic(data_metrics, {"examples_read": len(loaded.examples),
                                           "duplicates_dropped": duplicates,
                                           "splits": {n: len(e) for n, e in splits.items()},
                                           "tasks": counts})
    unused = sorted(t or "(no task)" for t in counts if t not in tasks)
    print(f"prepare_tasks: {len(unique)} examples, per task {counts}"
          + (f"; not trained (not in multitask.tasks): {', '.join(unused)}" if unused else ""))
    return 0


if __name__ == "__main__":
    pipeline.run(main, "prepare_tasks")
