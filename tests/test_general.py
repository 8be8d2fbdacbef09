"""The general-ability set: each check's verdict on hand-written answers, load's one-line
errors, the shipped data/general file, and the eval.json block and lines built from it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tunelab.errors import DataError
from tunelab.eval import general
from tunelab.eval.general import GeneralItem

SHIPPED = Path(__file__).resolve().parents[1] / "data" / "general" / "general.jsonl"


# --- checks: a passing and a failing answer for every type ---------------------

VERDICTS = [
    # bullets: "- " and "* " lines count; numbered lines, "**bold**" and "---" do not.
    ({"type": "bullets", "n": 3}, "- apple\n- pear\n- plum", True),
    ({"type": "bullets", "n": 3}, "Here you go:\n* apple\n  * pear\n- plum", True),
    ({"type": "bullets", "n": 3}, "- apple\n- pear", False),
    ({"type": "bullets", "n": 3}, "1. apple\n2. pear\n3. plum", False),
    ({"type": "bullets", "n": 2}, "**Fruits**\n- apple\n---\n- pear", True),
    ({"type": "bullets", "n": 2}, "- apple - pear", False),
    ({"type": "bullets", "n": 1}, "-\nstray dash\n- pear", True),
    # contains_word / avoids_word: whole words, any case.
    ({"type": "contains_word", "word": "river"}, "We walked by the River.", True),
    ({"type": "contains_word", "word": "river"}, "We saw two rivers.", False),
    ({"type": "avoids_word", "word": "very"}, "Every day was good.", True),
    ({"type": "avoids_word", "word": "very"}, "It was Very good.", False),
    # lowercase: no capital, and at least one letter.
    ({"type": "lowercase"}, "bees make honey.", True),
    ({"type": "lowercase"}, "Bees make honey.", False),
    ({"type": "lowercase"}, "42", False),
    # json_keys: the whole answer, or its first fence, is an object with exactly these keys.
    ({"type": "json_keys", "keys": ["name", "age"]}, '{"age": 30, "name": "Ana"}', True),
    ({"type": "json_keys", "keys": ["name", "age"]},
     'Sure:\n```json\n{"name": "Ana", "age": 30}\n```', True),
    ({"type": "json_keys", "keys": ["name", "age"]}, '{"name": "Ana"}', False),
    ({"type": "json_keys", "keys": ["name", "age"]}, '{"name": "Ana", "age": 30, "x": 1}', False),
    ({"type": "json_keys", "keys": ["name", "age"]}, 'Sure: {"name": "Ana", "age": 30}', False),
    ({"type": "json_keys", "keys": ["name", "age"]}, '["name", "age"]', False),
    # max_words: at most n; "don't" and "well-known" are one word each.
    ({"type": "max_words", "n": 5}, "Don't lose a well-known map.", True),
    ({"type": "max_words", "n": 5}, "A map shows you where to go.", False),
    # ends_with: any case, trailing spaces and quotes ignored.
    ({"type": "ends_with", "phrase": "Hope this helps."}, 'Boil it.\nhope this helps."  \n', True),
    ({"type": "ends_with", "phrase": "Hope this helps."}, "Hope this helps! Bye.", False),
    ({"type": "ends_with", "phrase": "Hope this helps."}, "Hope this helps!", False),
    # answer_in: any alias as a whole word; "Parisian" is not "Paris".
    ({"type": "answer_in", "answers": ["Rome", "Roma"]}, "roma", True),
    ({"type": "answer_in", "answers": ["Paris"]}, "The capital is Paris.", True),
    ({"type": "answer_in", "answers": ["Paris"]}, "A Parisian city.", False),
    ({"type": "answer_in", "answers": ["carbon dioxide", "CO2"]}, "Carbon\ndioxide", True),
    ({"type": "answer_in", "answers": ["carbon dioxide", "CO2"]}, "carbon monoxide", False),
    # number: the last number, with a minus, thousands commas or a ".0".
    ({"type": "number", "value": 1024}, "1,024", True),
    ({"type": "number", "value": 1024}, "The answer is 1024.", True),
    ({"type": "number", "value": -3}, "-3 degrees", True),
    ({"type": "number", "value": -3}, "3", False),
    ({"type": "number", "value": 12}, "12.0", True),
    ({"type": "number", "value": 12}, "12.5", False),
    ({"type": "number", "value": 7}, "5 + 2 = 7", True),   # the sum restated, then its result
    ({"type": "number", "value": 12}, "7 + 5 = 12.", True),
    ({"type": "number", "value": 7}, "5 + 2 = 8", False),
    ({"type": "number", "value": 45}, "Half of 90 is 40.", False),
    ({"type": "number", "value": -7}, "3 - 10 = -7", True),
    ({"type": "number", "value": 2}, "step-2", True),
    ({"type": "number", "value": 7}, "seven", False),
]


@pytest.mark.parametrize("check, answer, verdict", VERDICTS)
def test_check_verdicts(check, answer, verdict):
    assert general.passes(check, answer) is verdict


def test_every_check_type_has_a_pass_and_a_fail():
    seen = {(check["type"], verdict) for check, _, verdict in VERDICTS}
    assert seen == {(kind, verdict) for kind in general.CHECK_ARGUMENTS for verdict in (True, False)}


@pytest.mark.parametrize("check", [{"type": "avoids_word", "word": "very"}, {"type": "lowercase"},
                                   {"type": "max_words", "n": 5}])
def test_a_blank_answer_passes_nothing(check):
    assert general.passes(check, "  \n") is False


def test_a_list_of_checks_must_all_pass():
    both = [{"type": "bullets", "n": 2}, {"type": "lowercase"}]
    assert general.passes(both, "- tea\n- milk") is True
    assert general.passes(both, "- Tea\n- milk") is False
    item = GeneralItem("if-1", "instruction_following", "List two drinks.", both)
    assert general.passes(item, "- tea\n- milk") is True


def test_messages_is_the_prompt_alone():
    item = GeneralItem("fact-1", "facts", "Capital of France?", {"type": "answer_in", "answers": ["Paris"]})
    assert general.messages(item) == [{"role": "user", "content": "Capital of France?"}]


# --- load's errors: one line naming file:line ----------------------------------

GOOD = {"id": "x-1", "category": "facts", "prompt": "Capital of France?",
        "check": {"type": "answer_in", "answers": ["Paris"]}}


def write_lines(tmp_path, *records) -> Path:
    path = tmp_path / "general.jsonl"
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records))
    return path


@pytest.mark.parametrize("bad, reason", [
    ("{oops", "invalid JSON: Expecting property name enclosed in double quotes"),
    ("[1, 2]", "not a JSON object"),
    ({k: v for k, v in GOOD.items() if k != "check"}, "missing key 'check'"),
    ({**GOOD, "id": ""}, "'id' must be a non-empty string"),
    ({**GOOD, "category": "fact"}, "unknown category 'fact' (did you mean 'facts'?)"),
    ({**GOOD, "check": {"type": "bullet", "n": 3}}, "unknown check type 'bullet' (did you mean 'bullets'?)"),
    ({**GOOD, "check": {"type": "bullets"}}, "check 'bullets' needs 'n' (a positive integer)"),
    ({**GOOD, "check": {"type": "bullets", "n": 0}}, "check 'bullets': 'n' must be a positive integer"),
    ({**GOOD, "check": {"type": "number", "value": "7"}}, "check 'number': 'value' must be an integer"),
    ({**GOOD, "check": {"type": "max_words", "n": True}}, "check 'max_words': 'n' must be a positive integer"),
    ({**GOOD, "check": {"type": "answer_in", "answers": ["Paris", ""]}},
     "check 'answer_in': 'answers' must be a non-empty list of strings"),
    ({**GOOD, "check": {"type": "contains_word", "words": "x"}},
     "check 'contains_word' has no argument 'words' (did you mean 'word'?)"),
    ({**GOOD, "check": [{"type": "lowercase"}, "lowercase"]}, "a check must be an object with a 'type'"),
    ({**GOOD, "check": []}, "'check' is an empty list"),
    ({**GOOD, "id": "x-0"}, "duplicate id 'x-0' (first on line 1)"),
])
def test_load_names_the_line_and_the_reason(tmp_path, bad, reason):
    path = write_lines(tmp_path, {**GOOD, "id": "x-0"}, "", bad)
    with pytest.raises(DataError) as raised:
        general.load(path)
    message = str(raised.value)
    assert "\n" not in message
    assert message == f"{path}:3: {reason}"


def test_load_refuses_an_empty_or_missing_file(tmp_path):
    empty = write_lines(tmp_path, "", "  ")
    with pytest.raises(DataError, match=r"general\.jsonl: no items$"):
        general.load(empty)
    with pytest.raises(DataError, match=r"nope\.jsonl: file not found \(evaluate\.general\)$"):
        general.load(tmp_path / "nope.jsonl")


def test_load_reads_items_in_file_order(tmp_path):
    second = {**GOOD, "id": "x-2", "category": "arithmetic", "check": {"type": "number", "value": 3}}
    items = general.load(write_lines(tmp_path, GOOD, second))
    assert items == [GeneralItem("x-1", "facts", "Capital of France?", GOOD["check"]),
                     GeneralItem("x-2", "arithmetic", "Capital of France?", {"type": "number", "value": 3})]


# --- the shipped set -----------------------------------------------------------

def correct_answer(check) -> str:
    """An answer built to pass ``check`` (one or a list): proves each shipped rule can be
    met, and that combined rules do not contradict each other."""
    checks = check if isinstance(check, list) else [check]
    kinds = {one["type"]: one for one in checks}
    if "answer_in" in kinds:
        return f"It is {kinds['answer_in']['answers'][0]}."
    if "number" in kinds:
        return str(kinds["number"]["value"])
    if "json_keys" in kinds:
        return json.dumps({key: "x" for key in kinds["json_keys"]["keys"]})
    words = [one["word"] for one in checks if one["type"] == "contains_word"]
    if "bullets" in kinds:
        lines = [f"- point {k}" for k in range(kinds["bullets"]["n"])]
        lines[0] += "".join(f" {word}" for word in words)
    else:
        lines = [" ".join(["this is it", *words]) + "."]
    if "ends_with" in kinds:
        lines.append(kinds["ends_with"]["phrase"])
    answer = "\n".join(lines)
    return answer.lower() if "lowercase" in kinds else answer


def test_the_shipped_set_loads_with_enough_items_per_category():
    items = general.load(SHIPPED)
    counts = {category: sum(item.category == category for item in items)
              for category in general.CATEGORIES}
    assert len(items) >= 100
    assert min(counts.values()) >= 25, counts
    assert len({item.id for item in items}) == len(items)
    assert all(len(item.prompt.split()) <= 40 for item in items)  # short prompts, short answers


def test_every_shipped_item_passes_on_a_correct_answer():
    items = general.load(SHIPPED)
    failing = [item.id for item in items if not general.passes(item, correct_answer(item.check))]
    assert failing == []
    assert general.category_scores(items, [correct_answer(item.check) for item in items]) == {
        "instruction_following": 1.0, "facts": 1.0, "arithmetic": 1.0, "all": 1.0}


def test_every_shipped_item_fails_on_a_blank_answer():
    items = general.load(SHIPPED)
    assert [item.id for item in items if general.passes(item, "")] == []


# --- scores, the eval.json block and its lines -----------------------------------

ITEMS = ([GeneralItem(f"math-{v}", "arithmetic", f"{v} + 0?", {"type": "number", "value": v})
          for v in range(10)]
         + [GeneralItem("fact-1", "facts", "Capital of France?", {"type": "answer_in", "answers": ["Paris"]}),
            GeneralItem("fact-2", "facts", "Capital of Italy?", {"type": "answer_in", "answers": ["Rome", "Roma"]})]
         + [GeneralItem(f"if-{k}", "instruction_following", "Reply in lower case.", {"type": "lowercase"})
            for k in range(2)])
BASE = [str(v) for v in range(10)] + ["Paris", "Roma"] + ["ok", "fine"]
TUNED = [str(v) for v in range(7)] + ["no idea"] * 3 + ["Paris.", "It is Rome."] + ["OK", "Fine"]
ALIGNED = [str(v) for v in range(8)] + ["no idea"] * 2 + ["Paris.", "It is Rome."] + ["OK", "Fine"]


def test_category_scores():
    assert general.category_scores(ITEMS, TUNED) == {
        "facts": 1.0, "arithmetic": 0.7, "all": 0.642857, "instruction_following": 0.0}
    assert list(general.category_scores(ITEMS, TUNED)) == [*general.CATEGORIES, "all"]
    assert general.category_scores(ITEMS[:10], BASE[:10]) == {"arithmetic": 1.0, "all": 1.0}
    with pytest.raises(ValueError, match="^13 answers for 14 items$"):
        general.category_scores(ITEMS, TUNED[:-1])


def test_compare_base_and_tuned():
    block = general.compare(ITEMS, {"base": BASE, "tuned": TUNED})
    assert block == {
        "examples": 14,
        "counts": {"instruction_following": 2, "facts": 2, "arithmetic": 10},
        "base": {"instruction_following": 1.0, "facts": 1.0, "arithmetic": 1.0, "all": 1.0},
        "tuned": {"instruction_following": 0.0, "facts": 1.0, "arithmetic": 0.7, "all": 0.642857},
        "delta": {"instruction_following": -1.0, "facts": 0.0, "arithmetic": -0.3, "all": -0.357143},
        # Every instruction_following gap is -1 and every facts gap 0: each interval is its point.
        "delta_low": {"instruction_following": -1.0, "facts": 0.0, "arithmetic": -0.6,
                      "all": -0.642857},
        "delta_high": {"instruction_following": -1.0, "facts": 0.0, "arithmetic": -0.1,
                       "all": -0.142857},
    }


def test_compare_with_aligned_adds_the_tuned_to_aligned_change():
    block = general.compare(ITEMS, {"base": BASE, "tuned": TUNED, "aligned": ALIGNED})
    assert block["aligned"] == {"instruction_following": 0.0, "facts": 1.0, "arithmetic": 0.8,
                                "all": 0.714286}
    assert block["aligned_delta"] == {"instruction_following": 0.0, "facts": 0.0,
                                      "arithmetic": 0.1, "all": 0.071429}
    assert block["aligned_delta_low"] == {"instruction_following": 0.0, "facts": 0.0,
                                          "arithmetic": 0.0, "all": 0.0}
    assert block["aligned_delta_high"] == {"instruction_following": 0.0, "facts": 0.0,
                                           "arithmetic": 0.4, "all": 0.357143}
    assert general.change_lines(block) == [
        "instruction following -1.000 [-1.000, -1.000] (base 1.000 -> tuned 0.000, 2 prompts)",
        "facts +0.000 [+0.000, +0.000] (base 1.000 -> tuned 1.000, 2 prompts)",
        "arithmetic -0.300 [-0.600, -0.100] (base 1.000 -> tuned 0.700, 10 prompts)",
        "all -0.357 [-0.643, -0.143] (base 1.000 -> tuned 0.643, 14 prompts)",
        "instruction following +0.000 [+0.000, +0.000] (tuned 0.000 -> aligned 0.000, 2 prompts)",
        "facts +0.000 [+0.000, +0.000] (tuned 1.000 -> aligned 1.000, 2 prompts)",
        "arithmetic +0.100 [+0.000, +0.400] (tuned 0.700 -> aligned 0.800, 10 prompts)",
        "all +0.071 [+0.000, +0.357] (tuned 0.643 -> aligned 0.714, 14 prompts)",
    ]


def test_change_lines_without_aligned():
    block = general.compare(ITEMS[10:], {"base": BASE[10:], "tuned": TUNED[10:]})
    assert general.change_lines(block) == [
        "instruction following -1.000 [-1.000, -1.000] (base 1.000 -> tuned 0.000, 2 prompts)",
        "facts +0.000 [+0.000, +0.000] (base 1.000 -> tuned 1.000, 2 prompts)",
        "all -0.500 [-1.000, +0.000] (base 1.000 -> tuned 0.500, 4 prompts)",
    ]


def test_compare_needs_base_and_tuned():
    with pytest.raises(ValueError, match="^compare needs the tuned model's answers$"):
        general.compare(ITEMS, {"base": BASE})
