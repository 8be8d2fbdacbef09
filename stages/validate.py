"""Stage: check the prepared data against the tokenizer before any training.

Reads params `validate` and `train.max_length`; writes metrics/validation.json
and metrics/preview.txt (one training example, loss-carrying tokens in [[ ]]).
Errors name the raw file:line and fail the stage; warnings do not (unless
validate.fail_on_warning).
"""

import sys

from transformers import AutoTokenizer

from tunelab import io, params, stage, validation

BASE_DIR = "models/base"
SPLITS = ("train", "val", "test")
VALIDATION_METRICS = "metrics/validation.json"
PREVIEW = "metrics/preview.txt"


def main() -> int:
    p = params.load("validate")
    max_length = params.load("train").max_length
    tokenizer = AutoTokenizer.from_pretrained(BASE_DIR)
    examples = [e for name in SPLITS for e in io.read_jsonl(f"data/prepared/{name}.jsonl")]
    result = validation.check_examples(examples, tokenizer, max_length, p.max_truncated_ratio)

    for warning in result.warnings:
        print(f"validate: warning: {warning}", file=sys.stderr)
    for error in result.errors:
        print(error, file=sys.stderr)
    failed = not result.ok or (p.fail_on_warning and result.warnings)
    if failed:
        reason = (f"{len(result.errors)} errors" if result.errors
                  else "warnings with validate.fail_on_warning=true")
        raise io.DataError(f"{reason} in the prepared data; fix the raw files and rerun")
    io.write_json_atomic(VALIDATION_METRICS, result.summary())
    io.write_text_atomic(PREVIEW, "Tokens inside [[ ]] carry the training loss.\n\n"
                         + result.preview + "\n")
    print(f"validate: {result.checked} examples OK, {result.truncated} truncated at "
          f"max_length={max_length}")
    return 0


if __name__ == "__main__":
    stage.run(main, "validate")
