"""Task scores for generated answers.

JSON answers (the reference parses as a JSON object) are scored per field and
as an exact match of the whole object; other answers by normalised exact
match. ROUGE-L (rouge-score) and chrF (sacrebleu) cover both.
"""

from __future__ import annotations

import json
import re
import string

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
    parsed_refs = [parse_json_object(r) for r in references]
    n = max(len(references), 1)
    if references and all(ref is not None for ref in parsed_refs):
        parsed_preds = [parse_json_object(p) for p in predictions]
        fields = sorted({key for ref in parsed_refs for key in ref})
        scores = {"json_valid": sum(p is not None for p in parsed_preds) / n,
                  "exact_match": sum(p == r for p, r in zip(parsed_preds, parsed_refs)) / n}
        for key in fields:
            hits = sum(p is not None and key in p and p[key] == r.get(key)
                       for p, r in zip(parsed_preds, parsed_refs))
            scores[f"field_{key}"] = hits / n
        scores["task_accuracy"] = sum(scores[f"field_{k}"] for k in fields) / max(len(fields), 1)
        return scores
    exact = sum(normalise_text(p) == normalise_text(r) for p, r in zip(predictions, references)) / n
    return {"exact_match": exact, "task_accuracy": exact}


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
