"""An example scorer plugin for a verifiable task whose answer is one number or one word
("How many legs has a spider?" -> "8", "Which planet is called the red planet?" -> "Mars").

Use it with evaluate.scorer: configs/scorers/short_answer.py:score, and for GRPO weigh its
scores in align.reward, e.g. {correct: 0.9, concise: 0.1}. A scorer is a function of the
answer, the reference and the record (the example as prepared: messages, source and the raw
record's other fields) returning named scores in 0..1; tunelab averages each over the test
split into eval.json, and `tunelab check` and sweeps read them there as tuned.NAME.

- correct: a numeric reference is matched by the last number in the answer (so "8",
  "8.0", "It has 8 legs." and "4 + 4 = 8" are right, "80" is not: a model often restates
  the question before its result); a word, by that word appearing whole in the answer,
  any case ("mars" and "It is Mars." are right, "Marsh" is not).
- concise: 1 for the bare value, 1/n for an answer of n words, 0 for an empty one: the
  task asks for the value alone, and this part rewards it before any answer is right.
"""

import re

NUMBER = re.compile(r"[-+]?\d+(?:\.\d+)?")


def score(answer: str, reference: str, record: dict) -> dict:
    words = answer.split()
    value = NUMBER.fullmatch(reference.strip().replace(",", ""))
    if value:
        found = NUMBER.findall(answer.replace(",", ""))
        correct = bool(found) and float(found[-1]) == float(value.group())
    else:
        word = re.escape(reference.strip().strip(".!?").lower())
        correct = bool(word) and re.search(rf"(?<!\w){word}(?!\w)", answer.lower()) is not None
    return {"correct": float(correct), "concise": 1 / len(words) if words else 0.0}
