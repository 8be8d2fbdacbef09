"""Stage: check the prepared data against the tokenizer before any training.

Usage (dvc.yaml): python stages/validate.py PREPARED_DIR BASE_DIR VALIDATION_METRICS PREVIEW
Reads params `validate` and `train.max_length`, `train.train_on`, `train.text_stride`;
checks the splits and the examples prepare set aside (PREPARED_DIR/untrainable.jsonl: no
answer token of theirs fits train.max_length), which validate.untrainable leaves out of
training (drop: each named in a warning and in VALIDATION_METRICS) or fails on; writes
VALIDATION_METRICS and PREVIEW (one training example, loss-carrying tokens in [[ ]]).
Errors name the raw file:line and fail the stage; warnings do not (unless
validate.fail_on_warning).
"""

import sys
from pathlib import Path

from transformers import AutoTokenizer

from tunelab import pipeline
from tunelab.config import params
from tunelab.data import prepare, validation
from tunelab.errors import DataError
from tunelab.util import files

SPLITS = ("train", "val", "test")


def main(prepared_dir: str, base_dir: str, validation_metrics: str, preview: str) -> int:
    p = params.load("validate")
    train = params.load("train")
    max_length = train.max_length
    tokenizer = AutoTokenizer.from_pretrained(base_dir)
    examples = [e for name in SPLITS for e in files.read_jsonl(Path(prepared_dir, f"{name}.jsonl"))]
    set_aside = files.read_jsonl(Path(prepared_dir, prepare.UNTRAINABLE_FILE))
    result = validation.check_examples(examples + set_aside, tokenizer, max_length,
                                       p.max_truncated_ratio, train.train_on, train.text_stride,
                                       untrainable=p.untrainable,
                                       max_dropped_ratio=p.max_dropped_ratio)
    # "drop" holds only for what prepare kept out of the splits, which train reads.
    set_aside_sources = {example["source"] for example in set_aside}
    in_a_split = [source for source in result.dropped if source not in set_aside_sources]
    if in_a_split:
        raise DataError(f"{in_a_split[0]}: no answer token fits train.max_length={max_length}, yet "
                        f"it is in a split of {prepared_dir}: rerun the prepare stage")

    for warning in result.warnings:
        print(f"validate: warning: {warning}", file=sys.stderr)
    for error in result.errors:
        print(error, file=sys.stderr)
    failed = not result.ok or (p.fail_on_warning and result.warnings)
    if failed:
        reason = (f"{len(result.errors)} errors" if result.errors
                  else "warnings with validate.fail_on_warning=true")
        raise DataError(f"{reason} in the prepared data; fix the raw files and rerun")
    files.write_json_atomic(validation_metrics, result.summary())
    files.write_text_atomic(preview, "Tokens inside [[ ]] carry the training loss.\n\n"
                            + result.preview + "\n")
    print(f"validate: {result.kept} examples OK, {result.truncated} "
          f"truncated at max_length={max_length}"
          + (f", {len(result.dropped)} left out of training (validate.untrainable=drop)"
             if result.dropped else ""))
    return 0


if __name__ == "__main__":
    pipeline.run(main, "validate")
