"""Stage: a second step after SFT (align.objective: dpo | orpo | kto | grpo), or none.

Usage (dvc.yaml): python stages/align.py BASE_DIR SFT_ADAPTER_DIR DATA ALIGNED_DIR
                  CHECKPOINT_DIR LIVE_DIR
Reads params `align` (DATA is align.data, interpolated by dvc.yaml), evaluate.scorer (GRPO's
reward is the evaluate scorer's scores, weighted by align.reward) and prepare's split
keys (val_ratio, test_ratio, seed, group_by, columns, roles: preference files split as the
SFT data is, so a template held out of SFT is held out here too); writes ALIGNED_DIR (the
SFT adapter trained on by the objective, loadable as models/adapter is, with
tunelab_align.json) and LIVE_DIR (summary.json, DVCLive curves under plots/, training.log).
A killed run resumes from CHECKPOINT_DIR (align.save_steps; DVC keeps it between runs), which
a finished one leaves holding only ABOUT.md.

With objective none (the default) nothing trains: ALIGNED_DIR holds only
tunelab_align.json saying so, LIVE_DIR only summary.json, and evaluate and export use the
SFT adapter. Trained on the train pairs; the val and test pairs (templates SFT did not
train on either) are the held-out pairs whose preference accuracy the summary reports.
"""

import json
from pathlib import Path

from tunelab import pipeline
from tunelab.config import params
from tunelab.data import preferences
from tunelab.models import loading
from tunelab.train import checkpoints
from tunelab.util import files


def main(base_dir: str, sft_adapter_dir: str, data: str, aligned_dir: str,
         checkpoint_dir: str, live_dir: str) -> int:
    p = params.load("align")
    if p.objective == "none":
        Path(checkpoint_dir).mkdir(parents=True, exist_ok=True)
        checkpoints.clean(checkpoint_dir, 0, checkpoints.ALIGN_ABOUT_TEXT)
        with files.atomic_path(aligned_dir) as staging:
            staging.mkdir()
            files.write_json_atomic(staging / loading.ALIGN_INFO, {"objective": "none"})
        with files.atomic_path(live_dir) as staging:
            staging.mkdir()
            files.write_json_atomic(staging / "summary.json", {"objective": "none"})
        print("align: objective none: evaluate and export use the SFT adapter")
        return 0
    # Imported once params.yaml has passed (torch, transformers and TRL take seconds).
    from transformers import AutoTokenizer

    from tunelab.eval import reward, scorers
    from tunelab.train import align, align_data

    splits = preferences.load_splits(data, p.format, params.load("prepare"),
                                     AutoTokenizer.from_pretrained(base_dir), p.max_length)
    heldout = splits["val"] + splits["test"]
    reward_funcs = []
    if p.objective == "grpo":  # rewarded by the evaluate scorer (evaluate.scorer)
        spec = params.load("evaluate").scorer
        prompts = align_data.to_grpo_dataset(splits["train"])
        reward.check_weights(scorers.load(spec), prompts["reference"],
                             [json.loads(r) for r in prompts["record"]], p.reward)
        reward_funcs = [reward.reward_function(spec, p.reward)]
    with files.atomic_path(aligned_dir) as staging, files.atomic_path(live_dir) as live:
        summary = align.align(p, base_dir, sft_adapter_dir, splits["train"], staging,
                              checkpoint_dir, live, eval_examples=heldout,
                              reward_funcs=reward_funcs)
        seconds = summary.pop("train_seconds")  # the files hold what equal runs share
        summary["pairs"] = {"train": len(splits["train"]), "heldout": len(heldout)}
        files.write_json_atomic(Path(live) / "summary.json", summary)
    checkpoints.clean(checkpoint_dir, 0, checkpoints.ALIGN_ABOUT_TEXT)  # the adapter is in place
    print(f"align: {p.objective} {summary['steps']} steps in {seconds:.0f} s, "
          + ", ".join(f"{key}={value}" for key, value in summary.items()
                      if key not in ("objective", "steps")))
    return 0


if __name__ == "__main__":
    pipeline.run(main, "align")
