"""Stage: evaluate the base and the fine-tuned model on the held-out test split.

Reads params `evaluate`; writes metrics/eval.json ({"base", "tuned", "delta"},
identical keys, accuracies in 0..1) and metrics/samples.jsonl.
"""

from tunelab import evaluation, io, models, params, stage

BASE_DIR = "models/base"
ADAPTER_DIR = "models/adapter"
TEST_FILE = "data/prepared/test.jsonl"


def main() -> int:
    p = params.load("evaluate")
    examples = io.read_jsonl(TEST_FILE)
    if p.max_examples:
        examples = examples[:p.max_examples]
    if not examples:
        raise io.DataError(f"{TEST_FILE}: the test split is empty (raise prepare.test_ratio)")

    base_model, tokenizer = models.load_trained(BASE_DIR)
    base = evaluation.evaluate_model(base_model, tokenizer, examples, p.max_new_tokens,
                                     p.batch_size, desc="base")
    del base_model
    tuned_model, _ = models.load_trained(BASE_DIR, ADAPTER_DIR)
    tuned = evaluation.evaluate_model(tuned_model, tokenizer, examples, p.max_new_tokens,
                                      p.batch_size, desc="tuned")

    result = evaluation.compare(base, tuned)
    result["method"] = models.read_train_info(ADAPTER_DIR)["method"]
    result["examples"] = len(examples)
    io.write_json_atomic("metrics/eval.json", result)
    io.write_jsonl_atomic("metrics/samples.jsonl", evaluation.samples(examples, base, tuned))
    for key in ("task_accuracy", "exact_match", "loss"):
        if key in result["base"]:
            print(f"evaluate: {key}: base {result['base'][key]:.4f} -> tuned "
                  f"{result['tuned'][key]:.4f} ({result['delta'][key]:+.4f})")
    return 0


if __name__ == "__main__":
    stage.run(main, "evaluate")
