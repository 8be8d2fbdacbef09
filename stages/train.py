"""Stage: fine-tune on the prepared train split (train.method: lora | qlora | full).

Usage (dvc.yaml): python stages/train.py BASE_DIR TRAIN_FILE VAL_FILE ADAPTER_DIR
                  CHECKPOINT_DIR LIVE_DIR ENV_INFO
Reads params `train`; writes ADAPTER_DIR (the adapter, or a whole model for method=full,
with tokenizer, tunelab_train.json and a README.md model card), LIVE_DIR (DVCLive curves,
summary.json, training.log) and ENV_INFO (versions, CPU/GPU, threads). A killed run
resumes from CHECKPOINT_DIR, which DVC keeps between runs (persist).
"""

import tempfile
from pathlib import Path

from tunelab import pipeline
from tunelab.config import params
from tunelab.train import checkpoints
from tunelab.util import files, machine


def main(base_dir: str, train_file: str, val_file: str, adapter_dir: str,
         checkpoint_dir: str, live_dir: str, env_info: str) -> int:
    p = params.load("train")
    # Imported once params.yaml has passed: a typo fails in a second, before torch,
    # transformers and bitsandbytes load (and print their own warnings).
    from tunelab.train import run_support, training

    if not run_support.is_main_process():
        # A rank > 0 of `accelerate launch` (make train-multi): it trains in step with rank 0,
        # which alone writes the outputs; nothing is expected in this scratch folder.
        with tempfile.TemporaryDirectory(prefix="tunelab-rank-") as scratch:
            training.train(p, base_dir, train_file, val_file, Path(scratch, "adapter"),
                           Path(scratch, "live"), checkpoint_dir)
        return 0
    with files.atomic_path(adapter_dir) as staging:
        summary = training.train(p, base_dir, train_file, val_file, staging, live_dir,
                                 checkpoint_dir)
    checkpoints.clean(checkpoint_dir, p.keep_checkpoints)  # the adapter is in place now
    files.write_json_atomic(Path(live_dir) / "summary.json", summary)
    files.write_json_atomic(env_info, machine.collect(summary["precision"]))
    print("train: " + ", ".join(f"{k}={v}" for k, v in summary.items()))
    return 0


if __name__ == "__main__":
    pipeline.run(main, "train")
