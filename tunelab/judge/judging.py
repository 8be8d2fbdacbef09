"""Judge the evaluated answers (metrics/samples.jsonl) and sum the verdicts up.

Pairwise: each pair of models, the earlier one and the later one (tuned_vs_base: base,
then tuned; aligned_vs_tuned: tuned, then aligned), is judged on every example twice,
once with each model as answer A, so a judge that favours a position favours both models
alike. Each verdict scores the later model's answer: won 1, tie 0.5, lost 0. An example's
score is the mean of its parsed verdicts; ``preference`` is the mean over examples with
its 95% bootstrap interval (tunelab.eval.intervals), so 0.5 is no difference and above
0.5 the later model is preferred. ``win``/``tie``/``loss`` are shares of the parsed
verdicts, and ``position_consistency`` is the share of examples, of those with both
verdicts parsed, whose two verdicts agree once the order is undone (a judge that always
says "A" scores 0 there, and 0.5 overall).

Rubric: every model's answer is scored 1..5 on each of ``judge.criteria``; each criterion's
mean is over the parsed verdicts.

A verdict that does not fit its schema is never dropped unseen: it is kept in the verdicts
file with ``"verdict": null``, counted per pair and model as ``unparseable`` and in all,
and left out of the means.
"""

from __future__ import annotations

from statistics import fmean

from tqdm import tqdm

from tunelab.eval.intervals import mean_interval
from tunelab.judge import prompts

MODELS = ("base", "tuned", "aligned")
PAIRS = {"tuned_vs_base": ("base", "tuned"), "aligned_vs_tuned": ("tuned", "aligned")}


def judge(engine, samples: list[dict], criteria: list[str], pairwise: bool = True,
          rubric: bool = True) -> tuple[dict, list[dict]]:
    """(the summary for metrics/judge.json, every verdict as a row) for ``samples``."""
    models = [m for m in MODELS if samples and all(m in sample for sample in samples)]
    pairs = {name: pair for name, pair in PAIRS.items()
             if pairwise and set(pair) <= set(models)}
    questions = [*pairwise_questions(samples, pairs), *rubric_questions(
        samples, models if rubric else [], criteria)]
    verdicts = []
    for row, messages, schema in tqdm(questions, desc="judge", unit="verdict", disable=None):
        raw = engine.answer(messages, schema, row["task"])
        parsed = (prompts.parse_pairwise(raw) if row["task"] == "pairwise"
                  else prompts.parse_rubric(raw, criteria))
        verdicts.append({**row, "raw": raw, "verdict": parsed})
    summary = {"examples": len(samples), "verdicts": len(verdicts),
               "unparseable": sum(v["verdict"] is None for v in verdicts)}
    for name, (_, later) in pairs.items():
        summary[name] = pair_summary([v for v in verdicts if v.get("pair") == name], later)
    if rubric:
        summary["rubric"] = {model: rubric_summary([v for v in verdicts if v.get("model") == model],
                                                   criteria) for model in models}
    return summary, verdicts


def pairwise_questions(samples: list[dict], pairs: dict[str, tuple[str, str]]):
    for name, (earlier, later) in pairs.items():
        for index, sample in enumerate(samples):
            for first, second in ((earlier, later), (later, earlier)):
                row = {"example": index, "source": sample.get("source"), "task": "pairwise",
                       "pair": name, "order": [first, second]}
                yield row, prompts.pairwise_messages(sample, sample[first], sample[second]), \
                    prompts.PAIRWISE_SCHEMA


def rubric_questions(samples: list[dict], models: list[str], criteria: list[str]):
    schema = prompts.rubric_schema(criteria)
    for model in models:
        for index, sample in enumerate(samples):
            row = {"example": index, "source": sample.get("source"), "task": "rubric",
                   "model": model}
            yield row, prompts.rubric_messages(sample, sample[model], criteria), schema


def later_score(verdict: dict, later: str) -> float:
    """A parsed pairwise verdict from the later model's side: won 1, tie 0.5, lost 0."""
    winner = verdict["verdict"]["winner"]
    if winner == "tie":
        return 0.5
    first, second = verdict["order"]
    return 1.0 if (first if winner == "A" else second) == later else 0.0


def pair_summary(verdicts: list[dict], later: str) -> dict:
    parsed = [v for v in verdicts if v["verdict"] is not None]
    scores = [later_score(v, later) for v in parsed]
    by_example: dict[int, list[float]] = {}
    for verdict, score in zip(parsed, scores):
        by_example.setdefault(verdict["example"], []).append(score)
    per_example = [fmean(values) for values in by_example.values()]
    both_orders = [values for values in by_example.values() if len(values) == 2]
    low, high = mean_interval(per_example) if per_example else (None, None)
    return {
        "judgements": len(parsed),
        "win": share(scores.count(1.0), len(scores)),
        "tie": share(scores.count(0.5), len(scores)),
        "loss": share(scores.count(0.0), len(scores)),
        "preference": fmean(per_example) if per_example else None,
        "preference_low": low,
        "preference_high": high,
        "examples": len(per_example),
        "position_consistency": share(sum(a == b for a, b in both_orders), len(both_orders)),
        "unparseable": len(verdicts) - len(parsed),
    }


def rubric_summary(verdicts: list[dict], criteria: list[str]) -> dict:
    parsed = [v["verdict"] for v in verdicts if v["verdict"] is not None]
    means = {name: fmean(v[name] for v in parsed) if parsed else None for name in criteria}
    return {**means, "judgements": len(parsed), "unparseable": len(verdicts) - len(parsed)}


def share(count: int, total: int) -> float | None:
    return count / total if total else None
