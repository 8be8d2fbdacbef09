"""Stage (multitask/dvc.yaml): evaluate each task's adapter against the base on that task.

Reads multitask/params.yaml `multitask` and `evaluate` (max_examples is per task);
writes multitask/metrics/eval.json:
  {"tasks": {TASK: {"base": {...}, "tuned": {...}, "delta": {...}, "examples": N}}}
"""

from tunelab import evaluation, io, models, multitask, params, stage

BASE_DIR = "models/base"
TEST_FILE = "multitask/data/prepared/test.jsonl"
EVAL_FILE = "multitask/metrics/eval.json"


def main() -> int:
    tasks = multitask.load_params(multitask.PARAMS_FILE).tasks
    p = params.load("evaluate", multitask.PARAMS_FILE)
    test_examples = io.read_jsonl(TEST_FILE)
    base_model, tokenizer = models.load_trained(BASE_DIR)
    results = {}
    for task in tasks:
        examples = multitask.select(test_examples, task)[:p.max_examples or None]
        if not examples:
            raise io.DataError(f"{TEST_FILE}: no test examples of task {task!r}")
        base = evaluation.evaluate_model(base_model, tokenizer, examples, p.max_new_tokens,
                                         p.batch_size, desc=f"{task}: base")
        tuned_model, _ = models.load_trained(BASE_DIR, multitask.adapter_dir(task))
        tuned = evaluation.evaluate_model(tuned_model, tokenizer, examples, p.max_new_tokens,
                                          p.batch_size, desc=f"{task}: tuned")
        del tuned_model
        results[task] = {**evaluation.compare(base, tuned), "examples": len(examples)}
        for key in ("task_accuracy", "exact_match", "loss"):
            print(f"evaluate_tasks: {task}: {key}: base {base.metrics[key]:.4f} -> tuned "
                  f"{tuned.metrics[key]:.4f}")
    io.write_json_atomic(EVAL_FILE, {"tasks": results})
    return 0


if __name__ == "__main__":
    stage.run(main, "evaluate_tasks")
