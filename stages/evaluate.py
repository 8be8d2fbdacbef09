"""Stage: evaluate the base, the fine-tuned and (where the align stage trained one) the
aligned model on the held-out test split.

Usage (dvc.yaml): python stages/evaluate.py BASE_DIR ADAPTER_DIR ALIGNED_DIR TEST_FILE
HELDOUT_FILE EVAL_METRICS SAMPLES
Reads params `evaluate` (HELDOUT_FILE is evaluate.heldout, interpolated by dvc.yaml; ""
for none), align.reward (each answer's GRPO reward is a metric, "reward") and
prepare.format, prepare.system_prompt, prepare.columns and prepare.roles (HELDOUT_FILE is
read as prepare reads raw data, with the global maps); writes EVAL_METRICS ({"base",
"tuned", "delta"}, identical keys, accuracies in 0..1; after an alignment also "objective",
"aligned" and "aligned_delta" = aligned - tuned; with HELDOUT_FILE also "heldout": the
same on its examples, and their count) and SAMPLES (every test example's answers).
"""

from tunelab import pipeline
from tunelab.config import params
from tunelab.data import columns, prepare
from tunelab.errors import DataError
from tunelab.eval import evaluation, reward
from tunelab.models import loading
from tunelab.util import files


def main(base_dir: str, adapter_dir: str, aligned_dir: str, test_file: str, heldout_file: str,
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

    weights = params.load("align").reward
    models = {"base": None, "tuned": adapter_dir}
    objective = loading.aligned_objective(aligned_dir)
    if objective:
        models["aligned"] = aligned_dir
    test, held = {}, {}
    for name, trained_dir in models.items():
        model, tokenizer = loading.load_trained(base_dir, trained_dir)
        test[name], held[name] = score(model, tokenizer, p, examples, heldout, name, weights)
        del model

    result = evaluation.compare(test["base"], test["tuned"], test.get("aligned"))
    result["method"] = loading.read_train_info(adapter_dir)["method"]
    if objective:
        result["objective"] = objective
    result["examples"] = len(examples)
    if heldout:
        result["heldout"] = {**evaluation.compare(held["base"], held["tuned"], held.get("aligned")),
                             "examples": len(heldout)}
    files.write_json_atomic(eval_metrics, result)
    files.write_jsonl_atomic(samples, evaluation.samples(examples, test["base"], test["tuned"],
                                                         test.get("aligned")))
    for where, scores in (("", result), (" heldout", result.get("heldout"))):
        for key in ("task_accuracy", "exact_match", "loss"):
            if scores and key in scores["base"]:
                aligned = (f" -> aligned {scores['aligned'][key]:.4f}" if "aligned" in scores
                           else "")
                print(f"evaluate{where}: {key}: base {scores['base'][key]:.4f} -> tuned "
                      f"{scores['tuned'][key]:.4f} ({scores['delta'][key]:+.4f}){aligned}")
    return 0


def score(model, tokenizer, p, examples: list[dict], heldout: list[dict], name: str,
          weights: reward.RewardWeights):
    """(result on the test split, on the held-out set or None): one model load for both."""
    def run(part, desc):
        return evaluation.evaluate_model(model, tokenizer, part, p.max_new_tokens, p.batch_size,
                                         desc=desc, reward_weights=weights)
    return run(examples, name), (run(heldout, f"{name} heldout") if heldout else None)


if __name__ == "__main__":
    pipeline.run(main, "evaluate")
