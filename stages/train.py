"""Stage: fine-tune on the prepared train split (train.method: lora | qlora | full).

Reads params `train`; writes models/adapter/ (the adapter, or a whole model for
method=full, with tokenizer, tunelab_train.json and a README.md model card) and
metrics/train/ (DVCLive curves, summary.json, training.log).
"""

from pathlib import Path

from tunelab import io, params, stage, training

BASE_DIR = "models/base"
ADAPTER_DIR = "models/adapter"
LIVE_DIR = "metrics/train"
CHECKPOINT_DIR = "models/checkpoints"


def main() -> int:
    p = params.load("train")
    with io.atomic_path(ADAPTER_DIR) as staging:
        summary = training.train(p, BASE_DIR, "data/prepared/train.jsonl",
                                 "data/prepared/val.jsonl", staging, LIVE_DIR, CHECKPOINT_DIR)
    io.write_json_atomic(Path(LIVE_DIR) / "summary.json", summary)
    print("train: " + ", ".join(f"{k}={v}" for k, v in summary.items()))
    return 0


if __name__ == "__main__":
    stage.run(main, "train")
