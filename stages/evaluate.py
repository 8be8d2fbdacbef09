"""Stage: evaluate the base and the fine-tuned model on the held-out test split.

Usage (dvc.yaml): python stages/evaluate.py BASE_DIR ADAPTER_DIR TEST_FILE HELDOUT_FILE
EVAL_METRICS SAMPLES
Reads params `evaluate` (HELDOUT_FILE is evaluate.heldout, interpolated by dvc.yaml; ""
for none) and prepare.format, prepare.system_prompt, prepare.columns and prepare.roles
(HELDOUT_FILE is read as prepare reads raw data, with the global maps); writes EVAL_METRICS ({"base", "tuned", "delta"}, identical keys,
accuracies in 0..1; with HELDOUT_FILE also "heldout": the same three on its examples, and
their count) and SAMPLES (every test example's base and tuned answer).
"""

from tunelab import pipeline
from tunelab.config import params
from tunelab.data import columns, prepare
from tunelab.errors import DataError
from tunelab.eval import evaluation
from tunelab.models import loading
from tunelab.util import files


def main(base_dir: str, adapter_dir: str, test_file: str, heldout_file: str,
         eval_metrics: str, samples: str) -> int:
    p = params.load("evaluate")
    examples = files.read_jsonl(test_file)
    if p.max_examples:
        examples = examples[:p.max_examples]
    if not examples:
        raise DataError(f"{test_file}: the test split is empty (raise prepare.test_ratio)")
    heldout = []
    if heldout_file:  # data from outside the train/test source, scored the same way
        prep = params.load("prepare")
        # The global column/role maps apply; per_file globs are relative to raw_dir, which
        # this file is not under.
        mapping = columns.build(prep.columns, prep.roles)
        heldout = prepare.load_file(heldout_file, prep.format, prep.system_prompt,
                                    "evaluate.heldout", mapping)[:p.max_examples or None]

    base_model, tokenizer = loading.load_trained(base_dir)
    base, base_heldout = score(base_model, tokenizer, p, examples, heldout, "base")
    del base_model
    tuned_model, _ = loading.load_trained(base_dir, adapter_dir)
    tuned, tuned_heldout = score(tuned_model, tokenizer, p, examples, heldout, "tuned")

    result = evaluation.compare(base, tuned)
    result["method"] = loading.read_train_info(adapter_dir)["method"]
    result["examples"] = len(examples)
    if heldout:
        result["heldout"] = {**evaluation.compare(base_heldout, tuned_heldout),
                             "examples": len(heldout)}
    files.write_json_atomic(eval_metrics, result)
    files.write_jsonl_atomic(samples, evaluation.samples(examples, base, tuned))
    for where, scores in (("", result), (" heldout", result.get("heldout"))):
        for key in ("task_accuracy", "exact_match", "loss"):
            if scores and key in scores["base"]:
                print(f"evaluate{where}: {key}: base {scores['base'][key]:.4f} -> tuned "
                      f"{scores['tuned'][key]:.4f} ({scores['delta'][key]:+.4f})")
    return 0


def score(model, tokenizer, p, examples: list[dict], heldout: list[dict], name: str):
    """(result on the test split, on the held-out set or None): one model load for both."""
    def run(part, desc):
        return evaluation.evaluate_model(model, tokenizer, part, p.max_new_tokens, p.batch_size,
                                         desc=desc)
    return run(examples, name), (run(heldout, f"{name} heldout") if heldout else None)


if __name__ == "__main__":
    pipeline.run(main, "evaluate")
