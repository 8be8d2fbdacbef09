"""Task scores for generated answers (tunelab.scoring), computed by hand."""

from __future__ import annotations

import pytest

from tunelab.eval import scoring

JSON_REFERENCES = ['{"name": "Ann", "age": 30}',
                   '{"name": "Bob", "age": 41}',
                   '{"name": "Cy", "age": 25}']
JSON_PREDICTIONS = ['{"age": 30, "name": "Ann"}',                                 # exact, key order differs
                    'Sure! Here it is: {"name": "Bob", "age": 40} Hope it helps.',  # in prose, age wrong
                    '{"name": "Cy", "age": ']                                      # cut off: invalid


def test_json_answers_scored_per_field():
    scores = scoring.task_scores(JSON_PREDICTIONS, JSON_REFERENCES)
    assert scores == pytest.approx({"json_valid": 2 / 3, "exact_match": 1 / 3,
                                    "field_age": 1 / 3, "field_name": 2 / 3,
                                    "task_accuracy": 0.5})
    assert list(scores) == ["json_valid", "exact_match", "field_age", "field_name", "task_accuracy"]


def test_missing_field_and_extra_field_in_prediction():
    scores = scoring.task_scores(['{"name": "Ann"}', '{"name": "Bob", "age": 41, "city": "Rome"}'],
                                 ['{"name": "Ann", "age": 30}', '{"name": "Bob", "age": 41}'])
    assert scores == pytest.approx({"json_valid": 1.0, "exact_match": 0.0, "field_age": 0.5,
                                    "field_name": 1.0, "task_accuracy": 0.75})


def test_non_json_references_use_normalised_exact_match():
    scores = scoring.task_scores(["  PARIS! ", "the answer   is 42", "red"],
                                 ["Paris", "The answer is 42.", "blue"])
    assert scores == pytest.approx({"exact_match": 2 / 3, "task_accuracy": 2 / 3})


def test_one_non_json_reference_switches_all_to_text_match():
    scores = scoring.task_scores(['{"a": 1}', "yes"], ['{"a": 1}', "Yes."])
    assert scores == {"exact_match": 1.0, "task_accuracy": 1.0}


def test_missing_predictions_count_as_wrong():
    assert scoring.task_scores(["a"], ["a", "b"]) == {"exact_match": 0.5, "task_accuracy": 0.5}


@pytest.mark.parametrize("text, expected", [
    ('{"a": 1}', {"a": 1}),
    ('```json\n{"a": [1, 2]}\n```', {"a": [1, 2]}),
    ('Answer: {"a": {"b": null}} done', {"a": {"b": None}}),
    ("[1, 2]", None),
    ("no json here", None),
    ('{"a": ', None),
])
def test_parse_json_object(text, expected):
    assert scoring.parse_json_object(text) == expected


def test_parse_json_object_after_a_brace_in_prose():
    assert scoring.parse_json_object('Use {braces}: {"a": 1}') == {"a": 1}


def test_normalise_text():
    assert scoring.normalise_text("  The  Answer:\n42!! ") == "the answer 42"


def test_identical_answers_score_full_marks():
    scores = scoring.text_scores(["the cat sat on the mat", "Blue."], ["the cat sat on the mat", "Blue."])
    assert scores["rougeL"] == 1.0
    assert scores["chrf"] == pytest.approx(100.0)


def test_rouge_l_of_a_prefix_answer():
    # LCS 3 tokens: precision 3/3, recall 3/6, F1 = 2/3; averaged with an exact pair -> 5/6.
    scores = scoring.text_scores(["the cat sat", "blue"], ["the cat sat on the mat", "blue"])
    assert scores["rougeL"] == pytest.approx(5 / 6)
    assert 0 < scores["chrf"] < 100


def test_unrelated_answers_score_zero_rouge():
    assert scoring.text_scores(["green"], ["blue"])["rougeL"] == 0.0


def test_no_references_scores_zero():
    assert scoring.text_scores([], []) == {"rougeL": 0.0, "chrf": 0.0}


def test_identical_non_latin_answers_score_full_rouge():
    assert scoring.text_scores(["привет мир"], ["привет мир"])["rougeL"] == 1.0


def test_unequal_prediction_and_reference_counts_are_refused():
    with pytest.raises(ValueError, match="^3 predictions for 2 references$"):
        scoring.task_scores(['{"a": 1}'] * 3, ['{"a": 1}'] * 2)
