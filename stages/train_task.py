"""Stage (multitask/dvc.yaml, one per task): fine-tune an adapter on one task's examples.

Usage: python stages/train_task.py TASK  (DVC's matrix stage train_task@TASK runs it).
Reads multitask/params.yaml `train` (the same knobs as the main pipeline); trains
with tunelab.training.train on the examples whose `task` is TASK; writes
models/adapters/TASK/ and multitask/metrics/train/TASK/ (curves, summary.json).
"""

import sys
import tempfile
from pathlib import Path

from tunelab import checkpoints, io, multitask, params, stage, training

BASE_DIR = "models/base"
PREPARED_DIR = "multitask/data/prepared"
LIVE_ROOT = "multitask/metrics/train"
# Outside the main train stage's persisted models/checkpoints (which would then show changed).
CHECKPOINT_ROOT = "models/task_checkpoints"


def main() -> int:
    if len(sys.argv) != 2:
        raise params.ParamsError("usage: python stages/train_task.py TASK")
    task = sys.argv[1]
    tasks = multitask.load_params(multitask.PARAMS_FILE).tasks
    if task not in tasks:
        raise params.ParamsError(f"{multitask.PARAMS_FILE}: multitask.tasks: {task!r} is not "
                                 f"listed ({', '.join(tasks)})")
    p = params.load("train", multitask.PARAMS_FILE)
    live_dir = Path(LIVE_ROOT) / task
    with tempfile.TemporaryDirectory(prefix=f"tunelab-{task}-") as scratch:
        split_files = multitask.write_task_split(PREPARED_DIR, task, scratch)
        with io.atomic_path(multitask.adapter_dir(task)) as staging:
            summary = training.train(p, BASE_DIR, split_files["train"], split_files["val"],
                                     staging, live_dir, Path(CHECKPOINT_ROOT) / task)
    checkpoints.clean(Path(CHECKPOINT_ROOT) / task, p.keep_checkpoints)  # the adapter is in place
    summary = {"task": task, **summary}
    io.write_json_atomic(live_dir / "summary.json", summary)
    print(f"train_task@{task}: " + ", ".join(f"{k}={v}" for k, v in summary.items()))
    return 0


if __name__ == "__main__":
    stage.run(main, "train_task")
