"""The general-ability set: did tuning break what the base model could already do?

Owns reading the hand-written prompts of data/general/ (``load``), the rules that check
an answer to one of them (``passes``), the per-category pass shares (``category_scores``)
and the base -> tuned -> aligned change with its paired bootstrap interval, as the
eval.json block (``compare``) and as printed lines (``change_lines``).

Each line of the JSONL file is ``{"id", "category", "prompt", "check"}``; ``category`` is
one of CATEGORIES and ``check`` is one check or a non-empty list of checks that must all
pass. A check is ``{"type": ..., <its arguments>}``:

    bullets       {n}        exactly n lines that start with "- " or "* " (a markdown bullet;
                             a numbered "1." line is not one, nor a "**bold**" line)
    contains_word {word}     word (or phrase) appears as a whole word, any case
    avoids_word   {word}     ... does not ("very" is avoided by "every")
    lowercase     {}         no capital letter (and at least one letter)
    json_keys     {keys}     the answer, or the inside of its first ``` fence, is a JSON
                             object whose key set equals keys (prose around bare JSON fails)
    max_words     {n}        at most n words
    ends_with     {phrase}   ends with phrase, any case, ignoring trailing spaces and quotes
    answer_in     {answers}  one of the answers (aliases) appears as a whole word, any case
    number        {value}    the last number in the answer ("-3", "1,024", "12.0") equals
                             the integer value (a model restates the sum, "7 + 5 = 12", before
                             its result, as lm-evaluation-harness's GSM8K extracts the last)

An empty or blank answer passes no check: saying nothing follows no instruction.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from tunelab.errors import DataError
from tunelab.eval.intervals import mean_interval
from tunelab.util.names import did_you_mean, shown

CATEGORIES = ("instruction_following", "facts", "arithmetic")
LABELS = {"instruction_following": "instruction following", "facts": "facts",
          "arithmetic": "arithmetic", "all": "all"}

# Each check type's arguments, each named by what a valid value is (load's messages say it).
CHECK_ARGUMENTS = {
    "bullets": {"n": "a positive integer"},
    "contains_word": {"word": "a non-empty string"},
    "avoids_word": {"word": "a non-empty string"},
    "lowercase": {},
    "json_keys": {"keys": "a non-empty list of strings"},
    "max_words": {"n": "a positive integer"},
    "ends_with": {"phrase": "a non-empty string"},
    "answer_in": {"answers": "a non-empty list of strings"},
    "number": {"value": "an integer"},
}
VALID = {  # type() is int, not isinstance: JSON's true is no count
    "a positive integer": lambda value: type(value) is int and value > 0,
    "an integer": lambda value: type(value) is int,
    "a non-empty string": lambda value: isinstance(value, str) and bool(value.strip()),
    "a non-empty list of strings": lambda value: isinstance(value, list) and bool(value) and all(
        VALID["a non-empty string"](entry) for entry in value),
}
ITEM_KEYS = ("id", "category", "prompt", "check")
# The changes compare reports: (before, after, prefix of its delta keys in the block).
STEPS = (("base", "tuned", ""), ("tuned", "aligned", "aligned_"))


@dataclass(frozen=True)
class GeneralItem:
    """One prompt of the set and the rule its answer must pass."""
    id: str
    category: str
    prompt: str
    check: dict | list


def load(path: str | Path) -> list[GeneralItem]:
    """The items of a general-set JSONL file, in file order; any bad line is a DataError
    naming ``path:line`` and why."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found (evaluate.general)")
    items: list[GeneralItem] = []
    first_line: dict[str, int] = {}
    for number, text in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not text.strip():
            continue
        try:
            item = _item(text)
        except ValueError as err:
            raise DataError(f"{path}:{number}: {err}") from None
        if item.id in first_line:
            raise DataError(f"{path}:{number}: duplicate id {shown(item.id)} "
                            f"(first on line {first_line[item.id]})")
        first_line[item.id] = number
        items.append(item)
    if not items:
        raise DataError(f"{path}: no items")
    return items


def messages(item: GeneralItem) -> list[dict]:
    """The chat the model answers: the prompt alone, no system message."""
    return [{"role": "user", "content": item.prompt}]


def passes(item_or_check: GeneralItem | dict | list, answer: str) -> bool:
    """Whether ``answer`` passes an item's check, one check or every check of a list."""
    check = item_or_check.check if isinstance(item_or_check, GeneralItem) else item_or_check
    if isinstance(check, list):
        return all(passes(one, answer) for one in check)
    answer = answer or ""
    if not answer.strip():
        return False
    return RULES[check["type"]](check, answer)


def category_scores(items: list[GeneralItem], answers: list[str]) -> dict[str, float]:
    """The share of items passed per category present (CATEGORIES order), then "all"."""
    return _shares(_results(items, answers))


def compare(items: list[GeneralItem], answers: dict[str, list[str]]) -> dict:
    """eval.json's general block: each model's shares, and the change base -> tuned (and
    tuned -> aligned when ``answers`` has "aligned") with its 95% paired bootstrap interval."""
    for model in ("base", "tuned"):
        if model not in answers:
            raise ValueError(f"compare needs the {model} model's answers")
    results = {model: _results(items, model_answers) for model, model_answers in answers.items()}
    block: dict = {"examples": len(items),
                   "counts": {key: len(passed) for key, passed in results["base"].items()
                              if key != "all"}}
    for before, after, prefix in STEPS:
        if after in results:
            block.setdefault(before, _shares(results[before]))
            block[after] = _shares(results[after])
            block.update(_change(results[before], results[after], prefix))
    return block


def change_lines(block: dict) -> list[str]:
    """One line per category and "all" for each change in a ``compare`` block:
    ``facts -0.040 [-0.090, +0.010] (base 0.620 -> tuned 0.580, 30 prompts)``."""
    counts = {**block["counts"], "all": block["examples"]}
    lines = []
    for before, after, prefix in STEPS:
        if after not in block:
            continue
        for key, delta in block[f"{prefix}delta"].items():
            lines.append(f"{LABELS.get(key, key)} {delta:+.3f} "
                         f"[{block[f'{prefix}delta_low'][key]:+.3f}, "
                         f"{block[f'{prefix}delta_high'][key]:+.3f}] "
                         f"({before} {block[before][key]:.3f} -> {after} "
                         f"{block[after][key]:.3f}, {counts[key]} prompts)")
    return lines


# --- reading ------------------------------------------------------------------

def _item(text: str) -> GeneralItem:
    """One line as an item; a ValueError says what is wrong with it."""
    try:
        record = json.loads(text)
    except json.JSONDecodeError as err:
        raise ValueError(f"invalid JSON: {err.msg}") from None
    if not isinstance(record, dict):
        raise ValueError("not a JSON object")
    for key in ITEM_KEYS:
        if key not in record:
            raise ValueError(f"missing key {shown(key)}")
    for key in ("id", "prompt"):
        if not VALID["a non-empty string"](record[key]):
            raise ValueError(f"{shown(key)} must be a non-empty string")
    if record["category"] not in CATEGORIES:
        raise ValueError(f"unknown category {shown(str(record['category']))}"
                         f"{did_you_mean(record['category'], CATEGORIES)}")
    checks = record["check"] if isinstance(record["check"], list) else [record["check"]]
    if not checks:
        raise ValueError("'check' is an empty list")
    for check in checks:
        _validate_check(check)
    return GeneralItem(record["id"], record["category"], record["prompt"], record["check"])


def _validate_check(check) -> None:
    if not isinstance(check, dict) or "type" not in check:
        raise ValueError("a check must be an object with a 'type'")
    kind = check["type"]
    if not isinstance(kind, str) or kind not in CHECK_ARGUMENTS:
        raise ValueError(f"unknown check type {shown(str(kind))}"
                         f"{did_you_mean(kind, CHECK_ARGUMENTS)}")
    arguments = CHECK_ARGUMENTS[kind]
    for key in check:
        if key != "type" and key not in arguments:
            raise ValueError(f"check {kind!r} has no argument {shown(key)}"
                             f"{did_you_mean(key, arguments)}")
    for key, wanted in arguments.items():
        if key not in check:
            raise ValueError(f"check {kind!r} needs {key!r} ({wanted})")
        if not VALID[wanted](check[key]):
            raise ValueError(f"check {kind!r}: {key!r} must be {wanted}")


# --- scoring ------------------------------------------------------------------

def _results(items: list[GeneralItem], answers: list[str]) -> dict[str, list[int]]:
    """1 (passed) or 0 per item, grouped by category in CATEGORIES order, then "all"."""
    if len(answers) != len(items):
        raise ValueError(f"{len(answers)} answers for {len(items)} items")
    passed = [int(passes(item, answer)) for item, answer in zip(items, answers)]
    grouped = {category: [ok for item, ok in zip(items, passed) if item.category == category]
               for category in CATEGORIES}
    return {**{key: value for key, value in grouped.items() if value}, "all": passed}


def _shares(results: dict[str, list[int]]) -> dict[str, float]:
    return {key: round(sum(passed) / len(passed), 6) for key, passed in results.items()}


def _change(before: dict[str, list[int]], after: dict[str, list[int]], prefix: str) -> dict:
    """``{prefix}delta`` and its ``_low``/``_high`` bounds per category and "all"."""
    delta, low, high = {}, {}, {}
    for key, passed_after in after.items():
        # Per item 1/0 minus 1/0: the same prompts answered by both, so the gap is paired.
        gaps = [a - b for a, b in zip(passed_after, before[key])]
        delta[key] = round(sum(gaps) / len(gaps), 6)
        low[key], high[key] = (round(bound, 6) for bound in mean_interval(gaps, seed=0))
    return {f"{prefix}delta": delta, f"{prefix}delta_low": low, f"{prefix}delta_high": high}


def _has_word(text: str, word: str) -> bool:
    # Whole word: no letter or digit touching either end ("Paris" is not in "Parisian");
    # any run of spaces or a line break between a phrase's words.
    phrase = r"\s+".join(re.escape(part) for part in word.split())
    return re.search(rf"(?<!\w){phrase}(?!\w)", text, re.IGNORECASE) is not None


def _json_object(answer: str):
    fence = re.search(r"```(?:json)?\s*\n?(.*?)```", answer, re.DOTALL | re.IGNORECASE)
    try:
        value = json.loads(fence.group(1) if fence else answer)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


# A number: an optional minus (not a hyphen inside a word), digits with optional
# thousands commas, an optional decimal part ("12." at a sentence's end reads as 12).
NUMBER = re.compile(r"(?:(?<!\w)[-\u2212])?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?")


def _last_number_is(answer: str, value: int) -> bool:
    found = NUMBER.findall(answer)
    if not found:
        return False
    return float(found[-1].replace(",", "").replace("\u2212", "-")) == value


BULLET = re.compile(r"^[ \t]*[-*][ \t]+\S", re.MULTILINE)
QUOTES = " \t\r\n\"'`\u201c\u201d\u2018\u2019"

RULES = {
    "bullets": lambda check, answer: len(BULLET.findall(answer)) == check["n"],
    "contains_word": lambda check, answer: _has_word(answer, check["word"]),
    "avoids_word": lambda check, answer: not _has_word(answer, check["word"]),
    "lowercase": lambda check, answer: answer == answer.lower() and answer != answer.upper(),
    "json_keys": lambda check, answer: (
        (found := _json_object(answer)) is not None and set(found) == set(check["keys"])),
    "max_words": lambda check, answer: len(re.findall(r"\w+(?:['\u2019-]\w+)*", answer))
    <= check["n"],
    "ends_with": lambda check, answer: answer.rstrip(QUOTES).lower().endswith(
        check["phrase"].strip().lower()),
    "answer_in": lambda check, answer: any(_has_word(answer, alias) for alias in check["answers"]),
    "number": lambda check, answer: _last_number_is(answer, check["value"]),
}
