"""Stage: evaluate the base and the fine-tuned model on the held-out test split.

Usage (dvc.yaml): python stages/evaluate.py BASE_DIR ADAPTER_DIR TEST_FILE EVAL_METRICS SAMPLES
Reads params `evaluate`; writes EVAL_METRICS ({"base", "tuned", "delta"}, identical keys,
accuracies in 0..1) and SAMPLES (every test example's base and tuned answer).
"""

from tunelab import pipeline
from tunelab.config import params
from tunelab.errors import DataError
from tunelab.eval import evaluation
from tunelab.models import loading
from tunelab.util import files


def main(base_dir: str, adapter_dir: str, test_file: str, eval_metrics: str,
         samples: str) -> int:
    p = params.load("evaluate")
    examples = files.read_jsonl(test_file)
    if p.max_examples:
        examples = examples[:p.max_examples]
    if not examples:
        raise DataError(f"{test_file}: the test split is empty (raise prepare.test_ratio)")

    base_model, tokenizer = loading.load_trained(base_dir)
    base = evaluation.evaluate_model(base_model, tokenizer, examples, p.max_new_tokens,
                                     p.batch_size, desc="base")
    del base_model
    tuned_model, _ = loading.load_trained(base_dir, adapter_dir)
    tuned = evaluation.evaluate_model(tuned_model, tokenizer, examples, p.max_new_tokens,
                                      p.batch_size, desc="tuned")

    result = evaluation.compare(base, tuned)
    result["method"] = loading.read_train_info(adapter_dir)["method"]
    result["examples"] = len(examples)
    files.write_json_atomic(eval_metrics, result)
    files.write_jsonl_atomic(samples, evaluation.samples(examples, base, tuned))
    for key in ("task_accuracy", "exact_match", "loss"):
        if key in result["base"]:
            print(f"evaluate: {key}: base {result['base'][key]:.4f} -> tuned "
                  f"{result['tuned'][key]:.4f} ({result['delta'][key]:+.4f})")
    return 0


if __name__ == "__main__":
    pipeline.run(main, "evaluate")
