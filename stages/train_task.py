"""Stage (multitask/dvc.yaml, one per task): fine-tune an adapter on one task's examples.

Usage (dvc.yaml's matrix stage train_task@TASK):
    python stages/train_task.py TASK PARAMS_FILE BASE_DIR PREPARED_DIR ADAPTER_DIR
                                CHECKPOINT_DIR LIVE_DIR
Reads PARAMS_FILE (multitask/params.yaml) `train` (the same knobs as the main pipeline);
trains with tunelab.train.training.train on the examples whose `task` is TASK; writes
ADAPTER_DIR and LIVE_DIR (curves, summary.json). CHECKPOINT_DIR lies outside the main
train stage's persisted models/checkpoints (which would then show as changed).
"""

import tempfile
from pathlib import Path

from tunelab import pipeline
from tunelab.config import params
from tunelab.data import multitask
from tunelab.errors import ParamsError
from tunelab.train import checkpoints, training
from tunelab.util import files


def main(task: str, params_file: str, base_dir: str, prepared_dir: str, adapter_dir: str,
         checkpoint_dir: str, live_dir: str) -> int:
    tasks = multitask.load_params(params_file).tasks
    if task not in tasks:
        raise ParamsError(f"{params_file}: multitask.tasks: {task!r} is not "
                          f"listed ({', '.join(tasks)})")
    p = params.load("train", params_file)
    with tempfile.TemporaryDirectory(prefix=f"tunelab-{task}-") as scratch:
        split_files = multitask.write_task_split(prepared_dir, task, scratch)
        with files.atomic_path(adapter_dir) as staging:
            summary = training.train(p, base_dir, split_files["train"], split_files["val"],
                                     staging, live_dir, checkpoint_dir)
    checkpoints.clean(checkpoint_dir, p.keep_checkpoints)  # the adapter is in place
    summary = {"task": task, **summary}
    files.write_json_atomic(Path(live_dir) / "summary.json", summary)
    print(f"train_task@{task}: " + ", ".join(f"{k}={v}" for k, v in summary.items()))
    return 0


if __name__ == "__main__":
    pipeline.run(main, "train_task")
