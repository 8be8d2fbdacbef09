"""Stage (multitask/dvc.yaml): evaluate each task's adapter against the base on that task.

Usage (dvc.yaml): python stages/evaluate_tasks.py PARAMS_FILE BASE_DIR ADAPTERS_DIR
                  TEST_FILE EVAL_METRICS
Reads PARAMS_FILE (multitask/params.yaml) `multitask` and `evaluate` (max_examples is per
task) and ADAPTERS_DIR/TASK for each task; writes EVAL_METRICS:
  {"tasks": {TASK: {"base": {...}, "tuned": {...}, "delta": {...}, "examples": N}}}
"""

from pathlib import Path

from tunelab import pipeline
from tunelab.config import params
from tunelab.data import multitask
from tunelab.errors import DataError
from tunelab.eval import evaluation, scorers
from tunelab.models import loading
from tunelab.util import files


def main(params_file: str, base_dir: str, adapters_dir: str, test_file: str,
         eval_metrics: str) -> int:
    tasks = multitask.load_params(params_file).tasks
    p = params.load("evaluate", params_file)
    test_examples = files.read_jsonl(test_file)
    scorer = scorers.load(p.scorer)
    base_model, tokenizer = loading.load_trained(base_dir)
    results = {}
    for task in tasks:
        examples = multitask.select(test_examples, task)[:p.max_examples or None]
        if not examples:
            raise DataError(f"{test_file}: no test examples of task {task!r}")
        base = evaluation.evaluate_model(base_model, tokenizer, examples, p.max_new_tokens,
                                         p.batch_size, f"{task}: base", scorer)
        tuned_model, _ = loading.load_trained(base_dir, Path(adapters_dir) / task)
        tuned = evaluation.evaluate_model(tuned_model, tokenizer, examples, p.max_new_tokens,
                                          p.batch_size, f"{task}: tuned", scorer)
        del tuned_model
        results[task] = {**evaluation.compare(base, tuned), "examples": len(examples)}
        for key in [k for k in ("task_accuracy", "exact_match", "loss") if k in base.metrics]:
            print(f"evaluate_tasks: {task}: {key}: base {base.metrics[key]:.4f} -> tuned "
                  f"{tuned.metrics[key]:.4f}")
    files.write_json_atomic(eval_metrics, {"tasks": results})
    return 0


if __name__ == "__main__":
    pipeline.run(main, "evaluate_tasks")
