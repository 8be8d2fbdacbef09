"""Task scores for generated answers.

JSON answers (the reference parses as a JSON object) are scored per field and
as an exact match of the whole object; other answers by normalised exact
match. ROUGE-L (rouge-score) and chrF (sacrebleu) cover both. score_json_answer and
text_match check one answer; task_scores averages them over a split, and
tunelab.eval.reward weighs the same checks into a GRPO reward.
"""

from __future__ import annotations

import json
import re
import string
from collections.abc import Iterable
from dataclasses import dataclass

from rouge_score import rouge_scorer
from sacrebleu.metrics import CHRF


def parse_json_object(text: str):
    """The first JSON object in ``text``, or None (a model may wrap it in prose)."""
    decoder = json.JSONDecoder()
    start = text.find("{")
    while start >= 0:
        try:
            value, _ = decoder.raw_decode(text, start)
            if isinstance(value, dict):
                return value
        except json.JSONDecodeError:
            pass
        start = text.find("{", start + 1)
    return None


def normalise_text(text: str) -> str:
    text = text.lower().translate(str.maketrans("", "", string.punctuation))
    return re.sub(r"\s+", " ", text).strip()


def task_scores(predictions: list[str], references: list[str]) -> dict:
    """Accuracy-type scores in 0..1 (keys are the same for any model on the same references)."""
    # A missing prediction counts as wrong; one with no reference cannot be scored.
    if len(predictions) > len(references):
        raise ValueError(f"{len(predictions)} predictions for {len(references)} references")
    parsed_refs = [parse_json_object(r) for r in references]
    n = max(len(references), 1)
    if references and all(ref is not None for ref in parsed_refs):
        fields = sorted({key for ref in parsed_refs for key in ref})
        answers = [score_json_answer(p, r, fields) for p, r in zip(predictions, parsed_refs)]
        scores = {"json_valid": sum(a.json_valid for a in answers) / n,
                  "exact_match": sum(a.exact_match for a in answers) / n}
        for key in fields:
            scores[f"field_{key}"] = sum(a.fields[key] for a in answers) / n
        scores["task_accuracy"] = sum(scores[f"field_{k}"] for k in fields) / max(len(fields), 1)
        return scores
    exact = sum(text_match(p, r) for p, r in zip(predictions, references)) / n
    return {"exact_match": exact, "task_accuracy": exact}


@dataclass(frozen=True)
class JsonAnswer:
    """One answer checked against a JSON-object reference: what task_scores averages
    over a split and tunelab.eval.reward weighs into a GRPO reward."""
    json_valid: bool         # the answer holds a JSON object (prose around it is allowed)
    exact_match: bool        # that object equals the reference, no key more or less
    fields: dict[str, bool]  # per field: the answer has the key, with the reference's value


def score_json_answer(prediction: str, reference: dict,
                      fields: Iterable[str] | None = None) -> JsonAnswer:
    """``prediction`` checked against the parsed ``reference`` on ``fields`` (by default the
    reference's own keys; task_scores passes every key of its references, and a key this
    reference lacks counts right only where the answer has it as null)."""
    answer = parse_json_object(prediction)
    fields = reference if fields is None else fields
    return JsonAnswer(
        json_valid=answer is not None,
        exact_match=answer == reference,
        fields={key: answer is not None and key in answer and answer[key] == reference.get(key)
                for key in fields})


def text_match(prediction: str, reference: str) -> bool:
    """A free-text answer is right when it equals the reference after normalise_text."""
    return normalise_text(prediction) == normalise_text(reference)


class _WordTokenizer:
    """rouge-score's default tokenizer drops everything but [a-z0-9], which
    scores identical non-Latin answers 0; split normalised text on whitespace."""

    def tokenize(self, text: str) -> list[str]:
        return normalise_text(text).split()


def text_scores(predictions: list[str], references: list[str]) -> dict:
    scorer = rouge_scorer.RougeScorer(["rougeL"], tokenizer=_WordTokenizer())
    rouge = [scorer.score(r, p)["rougeL"].fmeasure for p, r in zip(predictions, references)]
    chrf = CHRF().corpus_score(predictions, [references]).score if references else 0.0
    return {"rougeL": sum(rouge) / max(len(rouge), 1), "chrf": chrf}
