"""Stage: fine-tune on the prepared train split (train.method: lora | qlora | full).

Reads params `train`; writes models/adapter/ (the adapter, or a whole model for
method=full, with tokenizer, tunelab_train.json and a README.md model card) and
metrics/train/ (DVCLive curves, summary.json, training.log) and metrics/env.json
(versions, CPU/GPU, threads). A killed run resumes from models/checkpoints/.
"""

import tempfile
from pathlib import Path

from tunelab import checkpoints, envinfo, io, params, stage, training

BASE_DIR = "models/base"
ADAPTER_DIR = "models/adapter"
LIVE_DIR = "metrics/train"
CHECKPOINT_DIR = "models/checkpoints"  # kept by DVC between runs (persist): a rerun resumes
ENV_INFO = "metrics/env.json"


def main() -> int:
    p = params.load("train")
    if not training.is_main_process():
        # A rank > 0 of `accelerate launch` (make train-multi): it trains in step with rank 0,
        # which alone writes the outputs; nothing is expected in this scratch folder.
        with tempfile.TemporaryDirectory(prefix="tunelab-rank-") as scratch:
            training.train(p, BASE_DIR, "data/prepared/train.jsonl", "data/prepared/val.jsonl",
                           Path(scratch, "adapter"), Path(scratch, "live"), CHECKPOINT_DIR)
        return 0
    with io.atomic_path(ADAPTER_DIR) as staging:
        summary = training.train(p, BASE_DIR, "data/prepared/train.jsonl",
                                 "data/prepared/val.jsonl", staging, LIVE_DIR, CHECKPOINT_DIR)
    checkpoints.clean(CHECKPOINT_DIR, p.keep_checkpoints)  # the adapter is in place now
    io.write_json_atomic(Path(LIVE_DIR) / "summary.json", summary)
    io.write_json_atomic(ENV_INFO, envinfo.collect(summary["precision"]))
    print("train: " + ", ".join(f"{k}={v}" for k, v in summary.items()))
    return 0


if __name__ == "__main__":
    stage.run(main, "train")
