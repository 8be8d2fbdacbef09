"""What the judge is asked, the JSON its verdict must be, and reading a verdict back.

Two questions, each a chat (a system message with the rules, a user message with the
request, the reference answer and the answer or answers):

    pairwise  which of answers A and B is better: {"winner": "A" | "B" | "tie"}
    rubric    one answer scored 1..5 on each criterion: {"correctness": 4, ...}

The schemas are what the engines constrain the judge's output to (a llama.cpp grammar, or
an endpoint's ``response_format``). Parsing still checks every verdict against them: an
endpoint may ignore ``response_format``, and a grammar-bound answer cut at max_new_tokens
is not JSON. A verdict that does not fit is None, which the judging counts as unparseable.
"""

from __future__ import annotations

from tunelab.util.files import InvalidJSON, parse_json

WINNERS = ("A", "B", "tie")
SCORES = (1, 2, 3, 4, 5)

PAIRWISE_SCHEMA = {"type": "object", "properties": {"winner": {"type": "string",
                                                                "enum": list(WINNERS)}},
                   "required": ["winner"], "additionalProperties": False}

PAIRWISE_RULES = (
    "You are an impartial judge. Two assistants, A and B, answered the same request. Decide "
    "which answer is better: more correct, more coherent and more relevant to the request "
    "(the reference answer shows what a correct one says). Their order says nothing about "
    "their quality, and a longer answer is not a better one. Answer \"tie\" when neither is "
    'better. Reply with JSON only: {"winner": "A"}, {"winner": "B"} or {"winner": "tie"}.')

RUBRIC_RULES = (
    "You are an impartial judge. Score the assistant's answer to the request on each "
    "criterion from 1 (poor) to 5 (excellent); the reference answer shows what a correct "
    "one says. Criteria: {criteria}. Reply with JSON only: {example}.")


def rubric_schema(criteria: list[str]) -> dict:
    """An object of every criterion, each an integer 1..5 (an enum: llama.cpp's schema
    converter ignores minimum and maximum)."""
    return {"type": "object",
            "properties": {name: {"type": "integer", "enum": list(SCORES)} for name in criteria},
            "required": list(criteria), "additionalProperties": False}


def pairwise_messages(sample: dict, answer_a: str, answer_b: str) -> list[dict]:
    return [{"role": "system", "content": PAIRWISE_RULES},
            {"role": "user", "content": _request(sample)
             + f"[Answer A]\n{answer_a}\n\n[Answer B]\n{answer_b}"}]


def rubric_messages(sample: dict, answer: str, criteria: list[str]) -> list[dict]:
    example = "{" + ", ".join(f'"{name}": N' for name in criteria) + "}"
    return [{"role": "system", "content": RUBRIC_RULES.format(criteria=", ".join(criteria),
                                                              example=example)},
            {"role": "user", "content": _request(sample) + f"[Answer]\n{answer}"}]


def _request(sample: dict) -> str:
    reference = sample.get("reference")
    return (f"[Request]\n{sample['prompt']}\n\n"
            + (f"[Reference answer]\n{reference}\n\n" if reference else ""))


def parse_pairwise(text: str) -> dict | None:
    """``{"winner": "A" | "B" | "tie"}`` from the judge's text, else None."""
    verdict = _json_object(text)
    if verdict is None or set(verdict) != {"winner"} or verdict["winner"] not in WINNERS:
        return None
    return verdict


def parse_rubric(text: str, criteria: list[str]) -> dict | None:
    """``{criterion: 1..5}`` for exactly ``criteria``, else None (a score of 7, 4.5 or
    "4" does not fit the schema)."""
    verdict = _json_object(text)
    if verdict is None or set(verdict) != set(criteria):
        return None
    if not all(type(score) is int and score in SCORES for score in verdict.values()):
        return None
    return {name: verdict[name] for name in criteria}


def _json_object(text: str) -> dict | None:
    """The JSON object ``text`` holds (a ```json fence around it allowed), else None."""
    text = text.strip()
    if text.startswith("```") and text.endswith("```") and len(text) > 6:
        text = text[3:-3].removeprefix("json").strip()
    try:
        value = parse_json(text)
    except InvalidJSON:
        return None
    return value if isinstance(value, dict) else None
