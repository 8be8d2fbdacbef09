"""The scorer (tunelab.eval.scorers, params evaluate.scorer): auto by the kind of the
references, plugins written to files, their one-line errors, the params schema's check of
the spec, the shipped configs/scorers/short_answer.py and the GRPO reward through a plugin."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import pytest

from tunelab.config import params, schema
from tunelab.errors import DataError, ParamsError
from tunelab.eval import reward, scorers, scoring

REPO = Path(__file__).resolve().parent.parent
EIGHT_WORDS = "One, two - three four five six seven eight"  # the lone "-" goes in normalising
NINE_WORDS = EIGHT_WORDS + " nine"
JSON_REFERENCES = ['{"name": "Ann", "age": 30}', 'Here: {"name": "Bob", "age": 41}',
                   '{"name": "Cy", "age": 25}']
JSON_ANSWERS = ['{"age": 30, "name": "Ann"}', 'Sure! {"name": "Bob", "age": 40} Done.',
                '{"name": "Cy", "age": ']


@pytest.mark.parametrize("references, kind", [
    (['{"a": 1}', 'The answer: {"b": [1, 2]} as asked.'], scorers.JSON),
    (["Paris", EIGHT_WORDS], scorers.SHORT_TEXT),
    (["Paris", NINE_WORDS], scorers.LONG_TEXT),
    (['{"a": 1}', "yes"], scorers.SHORT_TEXT),      # a mix of JSON and text is text
    (['{"a": 1}', NINE_WORDS], scorers.LONG_TEXT),
    (["[1, 2]"], scorers.SHORT_TEXT),               # a JSON list is not an object
])
def test_reference_kind(references, kind):
    assert scoring.normalise_text(EIGHT_WORDS) == "one two three four five six seven eight"
    assert scorers.reference_kind(references) == kind


def test_auto_score_split_by_the_kind_of_the_references():
    auto = scorers.load("auto")
    assert auto == scorers.Scorer("auto") and auto.function is None
    json_scores = auto.score_split(JSON_ANSWERS, JSON_REFERENCES)
    assert json_scores == scoring.task_scores(JSON_ANSWERS, JSON_REFERENCES)
    assert json_scores == pytest.approx({"json_valid": 2 / 3, "exact_match": 1 / 3, "field_age": 1 / 3,
                                         "field_name": 2 / 3, "task_accuracy": 0.5})
    # Short free text: a normalised exact match, and no task_accuracy claim.
    assert auto.score_split(["  PARIS! ", "the answer   is 42", "red"],
                            ["Paris", "The answer is 42.", "blue"]) == {"exact_match": 2 / 3}
    assert auto.score_split([EIGHT_WORDS.upper()], [EIGHT_WORDS]) == {"exact_match": 1.0}
    # Long free text: no accuracy at all, even for an answer equal to its reference.
    assert auto.score_split([NINE_WORDS, "x"], [NINE_WORDS, "x"]) == {}
    with pytest.raises(ValueError, match=r"^1 answers for 2 references$"):
        auto.score_split(["x"], ["x", "y"])


def test_auto_scores_of_one_answer():
    assert scorers.auto_scores('Sure: {"name": "Ann", "age": 31}', '{"name": "Ann", "age": 30}') == {
        "json_valid": 1.0, "exact_match": 0.0, "task_accuracy": 0.5, "field_name": 1.0, "field_age": 0.0}
    # task_accuracy is the share of this reference's own fields (one of one here).
    assert scorers.auto_scores('{"a": 1, "b": 2}', '{"a": 1}') == {
        "json_valid": 1.0, "exact_match": 0.0, "task_accuracy": 1.0, "field_a": 1.0}
    assert scorers.auto_scores("not json", '{"a": 1}') == {
        "json_valid": 0.0, "exact_match": 0.0, "task_accuracy": 0.0, "field_a": 0.0}
    assert scorers.auto_scores("PARIS!", "Paris") == {"exact_match": 1.0}
    assert scorers.auto_scores("Lyon", "Paris") == {"exact_match": 0.0}
    assert scorers.auto_scores(NINE_WORDS, NINE_WORDS) == {}
    assert scorers.Scorer("auto").score_one("PARIS!", "Paris") == {"exact_match": 1.0}


PLUGIN = '''\
from os.path import join

THRESHOLD = 0.5


def graded(answer, reference, record):
    return {"correct": float(answer.strip() == reference), "seen": float(record.get("task") == "demo")}


def number(answer, reference, record):
    return 0.25 if answer else 1


def given(answer, reference, record):
    return record["value"]
'''


@pytest.fixture
def plugin(tmp_path) -> Path:
    path = tmp_path / "my_scorer.py"
    path.write_text(PLUGIN)
    return path


def test_a_plugin_scores_are_averaged_per_name(plugin):
    scorer = scorers.load(f"{plugin}:graded")
    assert scorer.spec == f"{plugin}:graded"
    records = [{"task": "demo"}, {"task": "other"}, {"task": "demo"}, {}]
    assert scorer.score_rows(["a", " b ", "x", "d"], ["a", "b", "c", "d"], records) == [
        {"correct": 1.0, "seen": 1.0}, {"correct": 1.0, "seen": 0.0},
        {"correct": 0.0, "seen": 1.0}, {"correct": 1.0, "seen": 0.0}]
    assert scorer.score_split(["a", " b ", "x", "d"], ["a", "b", "c", "d"], records) == {
        "correct": 0.75, "seen": 0.5}
    assert scorer.score_split([], []) == {}
    # A plain number is the score named "score".
    number = scorers.load(f"{plugin}:number")
    assert number.score_one("x", "y") == {"score": 0.25}
    assert number.score_split(["x", "", "z", "w"], ["y"] * 4) == {"score": (0.25 * 3 + 1) / 4}


@pytest.mark.parametrize("value, problem", [
    (True, "returned bool True for {where}; expected {{name: number in 0..1}} or a number"),
    ({"ok": False}, "returned bool False as 'ok' for {where}; expected a number in 0..1"),
    ({"ok": "0.5"}, "returned str '0.5' as 'ok' for {where}; expected a number in 0..1"),
    ("0.5", "returned str '0.5' for {where}; expected {{name: number in 0..1}} or a number"),
    (None, "returned NoneType None for {where}; expected {{name: number in 0..1}} or a number"),
    ({}, "returned dict {{}} for {where}; expected {{name: number in 0..1}} or a number"),
    ({"two words": 1.0}, "returned the name 'two words' for {where}; names are identifiers "
                         "(letters, digits, _)"),
    (float("nan"), "returned 'score' = nan for {where}, outside 0..1"),
    (-0.1, "returned 'score' = -0.1 for {where}, outside 0..1"),
    ({"ok": 1.5}, "returned 'ok' = 1.5 for {where}, outside 0..1"),
])
def test_a_plugin_value_that_is_not_a_score_is_one_line(plugin, value, problem):
    scorer = scorers.load(f"{plugin}:given")
    with pytest.raises(DataError) as raised:
        scorer.score_split(["a", "b"], ["a", "b"], [{"value": 0.5}, {"value": value, "source": "t.jsonl:7"}])
    assert str(raised.value) == f"evaluate.scorer {plugin}:given " + problem.format(where="t.jsonl:7")
    with pytest.raises(DataError) as raised:
        scorer.score_split(["a", "b", "c"], ["a"] * 3, [{"value": 0.5}] * 2 + [{"value": value}])
    assert str(raised.value) == f"evaluate.scorer {plugin}:given " + problem.format(where="example 3")


def test_a_plugin_giving_different_names_names_both_examples(plugin):
    scorer = scorers.load(f"{plugin}:given")
    records = [{"value": {"a": 1.0}, "source": "t.jsonl:1"}, {"value": {"a": 0.0}},
               {"value": {"a": 1.0, "b": 0.5}}]
    with pytest.raises(DataError) as raised:
        scorer.score_split(["x"] * 3, ["y"] * 3, records)
    assert str(raised.value) == (f"evaluate.scorer {plugin}:given gave ['a', 'b'] for example 3 but "
                                 "['a'] for t.jsonl:1 (give every answer the same names)")


def test_load_errors_are_one_line(tmp_path, plugin):
    missing = tmp_path / "nope.py"
    with pytest.raises(ParamsError) as raised:
        scorers.load(f"{missing}:score")
    assert str(raised.value) == (f"evaluate.scorer: {missing} does not exist (a scorer is "
                                 "configs/scorers/FILE.py:FUNCTION, or auto)")
    # Only the module's own functions are listed: not os.path.join, not the constant.
    for name in ("score", "THRESHOLD"):
        with pytest.raises(ParamsError) as raised:
            scorers.load(f"{plugin}:{name}", key="export.scorer")
        assert str(raised.value) == (f"export.scorer: {plugin} has no function {name!r} "
                                     "(it has: given, graded, number)")
    empty = tmp_path / "empty.py"
    empty.write_text("from os.path import join\n")
    with pytest.raises(ParamsError) as raised:
        scorers.load(f"{empty}:score")
    assert str(raised.value) == f"evaluate.scorer: {empty} has no function 'score' (it has: none)"
    broken = tmp_path / "broken.py"
    broken.write_text("def score(answer, reference, record):\n    return 1.0\n\nRATE = 1 / 0\n")
    with pytest.raises(ParamsError) as raised:
        scorers.load(f"{broken}:score")
    assert str(raised.value) == (f"evaluate.scorer: {broken} failed to import: "
                                 "ZeroDivisionError: division by zero")


def test_a_plugin_may_define_a_dataclass(tmp_path):
    path = tmp_path / "with_class.py"
    path.write_text("from __future__ import annotations\nfrom dataclasses import dataclass\n\n\n"
                    "@dataclass\nclass Limit:\n    words: int = 3\n\n\n"
                    "def score(answer, reference, record):\n"
                    "    return float(len(answer.split()) <= Limit().words)\n")
    assert scorers.load(f"{path}:score").score_one("a b", "x") == {"score": 1.0}


def test_numpy_numbers_are_numbers(tmp_path):
    path = tmp_path / "numpy_scores.py"
    path.write_text("import numpy as np\n\n\ndef score(answer, reference, record):\n"
                    "    return {'a': np.float32(0.5), 'b': np.int64(1)}\n")
    assert scorers.load(f"{path}:score").score_one("x", "y") == {"a": 0.5, "b": 1.0}


@pytest.mark.parametrize("value", ["auto", "configs/scorers/x.py:score"])
def test_params_accept_a_scorer(value):
    assert schema.parse(params.EvaluateParams, {"scorer": value}, "evaluate", "params.yaml").scorer == value
    assert params.EvaluateParams().scorer == "auto"


@pytest.mark.parametrize("value, message", [
    ("x.py:score", "'x.py' is not in configs/scorers/, the folder the stages that score "
                   "(evaluate, align, export) depend on in dvc.yaml (move the file there, or auto)"),
    ("configs/scorers/x.py", "'configs/scorers/x.py' is neither auto nor configs/scorers/FILE.py:FUNCTION"),
    ("configs/scorers/x.txt:score",
     "'configs/scorers/x.txt:score' is neither auto nor configs/scorers/FILE.py:FUNCTION"),
    ("configs/scorers/x.py:two-words",
     "'configs/scorers/x.py:two-words' is neither auto nor configs/scorers/FILE.py:FUNCTION"),
    ("configs/scorers/../x.py:score", "'configs/scorers/../x.py' has a '..' part, which can lead out "
                                      "of the repository (give the path inside it without '..')"),
    ("configs/scorers/a b.py:score", "'configs/scorers/a b.py' has a space, which would split the "
                                     "stage's shell command (dvc.yaml cmd) into two arguments "
                                     "(use _ or - instead)"),
])
def test_params_refuse_a_scorer_in_one_line(value, message):
    with pytest.raises(ParamsError) as raised:
        schema.parse(params.EvaluateParams, {"scorer": value}, "evaluate", "params.yaml")
    assert str(raised.value) == f"params.yaml: evaluate.scorer: {message}"


SHIPPED = "configs/scorers/short_answer.py:score"
# (answer, reference, scores) for the shipped example plugin.
SHORT_ANSWERS = [
    ("8", "8", {"correct": 1.0, "concise": 1.0}),
    ("It has 8 legs.", "8", {"correct": 1.0, "concise": 0.25}),
    ("80", "8", {"correct": 0.0, "concise": 1.0}),
    ("1,024", "1024", {"correct": 1.0, "concise": 1.0}),
    ("It is Mars.", "Mars", {"correct": 1.0, "concise": 1 / 3}),
    ("Marsh", "Mars", {"correct": 0.0, "concise": 1.0}),
    ("", "8", {"correct": 0.0, "concise": 0.0}),
]


def test_the_shipped_short_answer_scorer(monkeypatch):
    monkeypatch.chdir(REPO)
    schema.parse(params.EvaluateParams, {"scorer": SHIPPED}, "evaluate", "params.yaml")
    scorer = scorers.load(SHIPPED)
    for answer, reference, scores in SHORT_ANSWERS:
        assert scorer.function(answer, reference, {}) == scores, answer
        assert scorer.score_one(answer, reference) == scores, answer
    answers, references, _ = zip(*SHORT_ANSWERS)
    assert scorer.score_split(list(answers), list(references)) == pytest.approx(
        {"correct": 4 / 7, "concise": 55 / 84}, abs=1e-12)


def test_the_reward_of_a_plugin_and_it_pickles(plugin):
    spec = f"{plugin}:graded"
    records = [{"task": "demo", "source": "t.jsonl:1"}, {"task": "other"}, {"task": "demo"}]
    calls = {"prompts": ["p"] * 3, "completions": ["a", [{"role": "assistant", "content": " b "}], "x"],
             "completion_ids": [[1]] * 3, "reference": ["a", "b", "c"],
             "record": [json.dumps(record) for record in records], "trainer_state": object()}
    correct = reward.reward_function(spec, {"correct": 1.0})
    assert correct(**calls) == [1.0, 1.0, 0.0]
    # The record reaches the plugin through the dataset's JSON column.
    both = reward.reward_function(spec, {"correct": 1.0, "seen": 0.5})
    assert both(**calls) == [1.5, 1.0, 0.5]
    copied = pickle.loads(pickle.dumps(both))
    assert copied == both and copied(**calls) == [1.5, 1.0, 0.5]
    # Without a record column the plugin gets {}.
    assert both(**{**calls, "record": None}) == [1.0, 1.0, 0.0]
