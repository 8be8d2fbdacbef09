"""Stage: evaluate the base, the fine-tuned and (where the align stage trained one) the
aligned model on the held-out test split, and on the general-ability set.

Usage (dvc.yaml): python stages/evaluate.py BASE_DIR ADAPTER_DIR ALIGNED_DIR TEST_FILE
HELDOUT_FILE GENERAL_FILE EVAL_METRICS SAMPLES GENERAL_ANSWERS
Reads params `evaluate` (HELDOUT_FILE is evaluate.heldout and GENERAL_FILE evaluate.general,
interpolated by dvc.yaml; "" for none; evaluate.scorer scores the answers), align.reward
(each answer's GRPO reward is a metric, "reward", where the scorer gives every weighted
score) and prepare.format, prepare.system_prompt, prepare.columns and prepare.roles
(HELDOUT_FILE is read as prepare reads raw data, with the global maps); writes EVAL_METRICS
({"base", "tuned", "delta"}, identical keys, scores in 0..1; after an alignment also
"objective", "aligned" and "aligned_delta" = aligned - tuned; with HELDOUT_FILE also
"heldout": the same on its examples, and their count; with GENERAL_FILE "general": each
category's share passed and its paired change with a bootstrap interval), SAMPLES (every
test example's answers) and GENERAL_ANSWERS (each general prompt's answers and verdicts;
empty when GENERAL_FILE is "").
"""

from tunelab import pipeline
from tunelab.config import params
from tunelab.data import columns, encoding, prepare
from tunelab.errors import DataError
from tunelab.eval import evaluation, general, scorers, scoring
from tunelab.models import loading
from tunelab.util import files


def main(base_dir: str, adapter_dir: str, aligned_dir: str, test_file: str, heldout_file: str,
         general_file: str, eval_metrics: str, samples: str, general_answers: str) -> int:
    p = params.load("evaluate")
    scorer = scorers.load(p.scorer)
    examples = files.read_jsonl(test_file)
    if p.max_examples:
        examples = examples[:p.max_examples]
    if not examples:
        raise DataError(f"{test_file}: the test split is empty (raise prepare.test_ratio)")
    heldout = load_heldout(heldout_file, p.max_examples) if heldout_file else []
    if heldout:
        check_same_task(examples, heldout, heldout_file)
    general_items = general.load(general_file) if general_file else []

    weights = params.load("align").reward
    models = {"base": None, "tuned": adapter_dir}
    objective = loading.aligned_objective(aligned_dir)
    if objective:
        models["aligned"] = aligned_dir
    test, held, general_out = {}, {}, {}
    for name, trained_dir in models.items():
        model, tokenizer = loading.load_trained(base_dir, trained_dir)

        def run(part, desc):
            return evaluation.evaluate_model(model, tokenizer, part, p.max_new_tokens,
                                             p.batch_size, desc, scorer, weights)
        test[name] = run(examples, name)
        held[name] = run(heldout, f"{name} heldout") if heldout else None
        if general_items:
            prompts = [encoding.chat_ids(tokenizer, general.messages(item),
                                         add_generation_prompt=True) for item in general_items]
            general_out[name] = evaluation.generate(model, tokenizer, prompts,
                                                    p.general_max_new_tokens, p.batch_size,
                                                    f"{name} general")
        del model

    result = evaluation.compare(test["base"], test["tuned"], test.get("aligned"))
    result["method"] = loading.read_train_info(adapter_dir)["method"]
    if objective:
        result["objective"] = objective
    result["examples"] = len(examples)
    result["scorer"] = p.scorer
    if heldout:
        result["heldout"] = {**evaluation.compare(held["base"], held["tuned"], held.get("aligned")),
                             "examples": len(heldout)}
    if general_items:
        result["general"] = {**general.compare(general_items, general_out),
                             "engine": "transformers"}
    files.write_json_atomic(eval_metrics, result)
    files.write_jsonl_atomic(samples, evaluation.samples(examples, test["base"], test["tuned"],
                                                         test.get("aligned")))
    files.write_jsonl_atomic(general_answers, [
        {"id": item.id, "category": item.category, "prompt": item.prompt,
         **{name: answers[index] for name, answers in general_out.items()},
         **{f"{name}_passed": general.passes(item.check, answers[index])
            for name, answers in general_out.items()}}
        for index, item in enumerate(general_items)])
    report(result)
    return 0


def load_heldout(heldout_file: str, max_examples: int) -> list[dict]:
    """Data from outside the train/test source, read as prepare reads data/raw: the global
    column/role maps apply; per_file globs are relative to raw_dir, which it is not under."""
    prep = params.load("prepare")
    mapping = columns.build(prep.columns, prep.roles)
    return prepare.load_file(heldout_file, prep.format, prep.system_prompt, "evaluate.heldout",
                             mapping)[:max_examples or None]


def check_same_task(test: list[dict], heldout: list[dict], heldout_file: str) -> None:
    """The held-out file is scored as the test split is, so it must be the same task: JSON
    objects sharing a key with the test answers where those are JSON, free text where they
    are text. The sample's ticket file does not score a user's own task unnoticed."""
    def fields(split):
        answers = [encoding.split_prompt(e)[1]["content"] for e in split if "messages" in e]
        if answers and scorers.reference_kind(answers) == scorers.JSON:
            return set().union(*(scoring.parse_json_object(a) for a in answers))
        return None  # free text

    ours, theirs = fields(test), fields(heldout)
    if (ours is None) != (theirs is None) or (ours is not None and not ours & theirs):
        def shape(keys):
            return "free text" if keys is None else f"JSON objects with {', '.join(sorted(keys))}"
        raise DataError(f"evaluate.heldout: {heldout_file}'s answers are {shape(theirs)}, the "
                        f"test split's {shape(ours)}: it is another task (give a held-out "
                        "file of this data's task, or \"\" for none)")


def report(result: dict) -> None:
    for where, scores in (("", result), (" heldout", result.get("heldout"))):
        if not scores:
            continue
        for key in ("task_accuracy", "exact_match", "reward", "loss"):
            if key in scores["base"]:
                aligned = (f" -> aligned {scores['aligned'][key]:.4f}" if "aligned" in scores
                           else "")
                print(f"evaluate{where}: {key}: base {scores['base'][key]:.4f} -> tuned "
                      f"{scores['tuned'][key]:.4f} ({scores['delta'][key]:+.4f}){aligned}")
    if "general" in result:
        for line in general.change_lines(result["general"]):
            print(f"evaluate general: {line}")


if __name__ == "__main__":
    pipeline.run(main, "evaluate")
