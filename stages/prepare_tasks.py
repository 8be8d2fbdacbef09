"""Stage (multitask/dvc.yaml): read the multi-task data, normalise, deduplicate, split.

Reads multitask/params.yaml `multitask` and `prepare`; writes
multitask/data/prepared/{train,val,test}.jsonl (every example keeps its `task`)
and multitask/metrics/data.json (examples per task and split). Fails when a
task listed in multitask.tasks has no train or no test examples.
"""

import sys

from tunelab import data, io, multitask, params, stage

PARAMS = multitask.PARAMS_FILE
PREPARED_DIR = "multitask/data/prepared"
DATA_METRICS = "multitask/metrics/data.json"


def main() -> int:
    tasks = multitask.load_params(PARAMS).tasks
    p = params.load("prepare", PARAMS)
    params.check_split(p, PARAMS)
    loaded = data.load_files(data.raw_files(p.raw_dir), p.format, p.system_prompt)
    if loaded.errors:
        for message in loaded.errors[:20]:
            print(message, file=sys.stderr)
        raise io.DataError(f"{len(loaded.errors)} bad records in {p.raw_dir}; nothing was written")
    unique, duplicates = data.deduplicate(loaded.examples)
    splits = data.split(unique, p.val_ratio, p.test_ratio, p.seed)
    multitask.check_tasks(splits, tasks, p.raw_dir)

    with io.atomic_path(PREPARED_DIR) as staging:
        staging.mkdir()
        for name, examples in splits.items():
            io.write_jsonl_atomic(staging / f"{name}.jsonl", examples)
    counts = multitask.count_by_task(splits)
    io.write_json_atomic(DATA_METRICS, {"examples_read": len(loaded.examples),
                                        "duplicates_dropped": duplicates,
                                        "splits": {n: len(e) for n, e in splits.items()},
                                        "tasks": counts})
    unused = sorted(t or "(no task)" for t in counts if t not in tasks)
    print(f"prepare_tasks: {len(unique)} examples, per task {counts}"
          + (f"; not trained (not in multitask.tasks): {', '.join(unused)}" if unused else ""))
    return 0


if __name__ == "__main__":
    stage.run(main, "prepare_tasks")
