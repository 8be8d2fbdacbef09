"""The GRPO reward (tunelab.eval.reward) on hand-written answers: its values by hand, and its
parts (the auto scorer's scores of one answer) equal to the evaluate stage's scores
(scoring.task_scores) for the same answers."""

from __future__ import annotations

import json
import pickle

import pytest

from tunelab.config import params, schema
from tunelab.errors import ParamsError
from tunelab.eval import reward, scorers, scoring

TICKET = {"category": "technical", "priority": "high", "sentiment": "neutral",
          "product": "MailBridge", "order_id": None}
REFERENCE = json.dumps(TICKET)
RIGHT = json.dumps(dict(reversed(TICKET.items())))  # key order does not matter


def ticket(**changes) -> str:
    return json.dumps({**TICKET, **changes})


# (answer, (json_valid, task_accuracy, exact_match)) against REFERENCE.
ANSWERS = {
    "right": (RIGHT, (1, 1, 1)),
    "fenced": (f"```json\n{RIGHT}\n```", (1, 1, 1)),
    "whitespace": (f"\n\n   {RIGHT}  \n", (1, 1, 1)),
    "in prose": (f"Sure! Here it is: {RIGHT} Hope it helps.", (1, 1, 1)),
    "one wrong field": (ticket(priority="low"), (1, 4 / 5, 0)),
    "two wrong fields": (ticket(priority="low", product="Mailbridge"), (1, 3 / 5, 0)),
    "null as a string": (ticket(order_id="null"), (1, 4 / 5, 0)),
    "missing field": (json.dumps({k: v for k, v in TICKET.items() if k != "order_id"}), (1, 4 / 5, 0)),
    "extra field": (ticket(language="en"), (1, 1, 0)),
    "other object": ('{"answer": "technical"}', (1, 0, 0)),
    "prose": ("This is a technical ticket about MailBridge, high priority.", (0, 0, 0)),
    "invalid json": ('{"category": "technical", "priority": ', (0, 0, 0)),
    "json list": ('["technical", "high"]', (0, 0, 0)),
    "empty": ("", (0, 0, 0)),
}
DEFAULTS = params.AlignParams().reward
CUSTOM = {"json_valid": 1.0, "task_accuracy": 2.0, "exact_match": 4.0}
PARTS = ("json_valid", "task_accuracy", "exact_match")


def reward_parts(answer: str, reference: str) -> tuple:
    scores = scorers.auto_scores(answer, reference)
    return tuple(scores[name] for name in PARTS)


def task_reward(answer: str, reference: str, weights: dict) -> float:
    return reward.weighted(scorers.auto_scores(answer, reference), weights)


@pytest.mark.parametrize("name", ANSWERS)
def test_reward_parts_by_hand(name):
    answer, parts = ANSWERS[name]
    assert reward_parts(answer, REFERENCE) == pytest.approx(parts)


@pytest.mark.parametrize("name, default_reward, custom_reward", [
    ("right", 1.0, 7.0),
    ("fenced", 1.0, 7.0),
    ("whitespace", 1.0, 7.0),
    ("one wrong field", 0.1 + 0.8 * 4 / 5, 1 + 2 * 4 / 5),   # 0.74
    ("missing field", 0.74, 2.6),
    ("two wrong fields", 0.1 + 0.8 * 3 / 5, 1 + 2 * 3 / 5),  # 0.58
    ("extra field", 0.9, 3.0),
    ("other object", 0.1, 1.0),
    ("prose", 0.0, 0.0),
    ("invalid json", 0.0, 0.0),
])
def test_reward_values(name, default_reward, custom_reward):
    answer, _ = ANSWERS[name]
    assert task_reward(answer, REFERENCE, DEFAULTS) == pytest.approx(default_reward, abs=1e-12)
    assert task_reward(answer, REFERENCE, CUSTOM) == pytest.approx(custom_reward, abs=1e-12)


def test_default_weights_are_documented_values():
    assert DEFAULTS == {"json_valid": 0.1, "task_accuracy": 0.8, "exact_match": 0.1}
    # The weights are params.yaml's align.reward: a bad weight or name is a one-line params error.
    with pytest.raises(ParamsError, match=r"^params.yaml: align.reward: fields: must be >= 0, got -1.0$"):
        schema.parse(params.AlignParams, {"reward": {"fields": -1}}, "align", "params.yaml")
    with pytest.raises(ParamsError, match=r"^params.yaml: align.reward: 'two words' is not a score name"):
        schema.parse(params.AlignParams, {"reward": {"two words": 1}}, "align", "params.yaml")
    with pytest.raises(ParamsError, match=r"^params.yaml: align.reward: every weight is 0"):
        schema.parse(params.AlignParams, {"reward": {"correct": 0}}, "align", "params.yaml")


# Three tickets with the same keys; every answer scored against each reference it fits.
SECOND = {"category": "billing", "priority": "urgent", "sentiment": "negative",
          "product": None, "order_id": "A-10233"}
THIRD = {"category": "account", "priority": "medium", "sentiment": "neutral",
         "product": None, "order_id": None}
SPLIT = ([(answer, REFERENCE) for answer, _ in ANSWERS.values()]
         + [(json.dumps(SECOND), json.dumps(SECOND)),
            (json.dumps({**SECOND, "order_id": "A10233"}), json.dumps(SECOND)),
            ("billing, urgent", json.dumps(SECOND)),
            (json.dumps({**THIRD, "sentiment": "positive", "priority": "low"}), json.dumps(THIRD)),
            (f"```json\n{json.dumps(THIRD, indent=2)}\n```", json.dumps(THIRD))])


def test_reward_parts_average_to_the_evaluate_scores():
    """The issue's acceptance: on hand-written answers the reward's parts are the evaluate
    scorer's values (json_valid, task_accuracy, exact_match) for the same answers."""
    predictions, references = zip(*SPLIT)
    scores = scoring.task_scores(list(predictions), list(references))
    parts = [reward_parts(p, r) for p, r in SPLIT]
    assert scores["json_valid"] == pytest.approx(mean(p[0] for p in parts), abs=1e-12)
    assert scores["task_accuracy"] == pytest.approx(mean(p[1] for p in parts), abs=1e-12)
    assert scores["exact_match"] == pytest.approx(mean(p[2] for p in parts), abs=1e-12)
    # Not a degenerate split: every part is somewhere between all right and all wrong.
    assert 0 < scores["exact_match"] < scores["task_accuracy"] < scores["json_valid"] < 1
    # The mean reward is the weighted evaluate scores.
    mean_reward = mean(task_reward(p, r, CUSTOM) for p, r in SPLIT)
    assert mean_reward == pytest.approx(scores["json_valid"] + 2 * scores["task_accuracy"]
                                        + 4 * scores["exact_match"], abs=1e-12)


def test_one_answer_equals_task_scores_of_that_answer():
    for prediction, reference in SPLIT:
        scores = scoring.task_scores([prediction], [reference])
        assert reward_parts(prediction, reference) == pytest.approx(
            (scores["json_valid"], scores["task_accuracy"], scores["exact_match"]), abs=1e-12)


def test_free_text_reference_is_rewarded_by_its_normalised_exact_match():
    predictions, references = ["  PARIS! ", "the answer   is 42", "red"], ["Paris", "The answer is 42.", "blue"]
    assert [scorers.auto_scores(p, r) for p, r in zip(predictions, references)] == [
        {"exact_match": 1.0}, {"exact_match": 1.0}, {"exact_match": 0.0}]
    assert [task_reward(p, r, {"exact_match": 2.0}) for p, r in zip(predictions, references)] \
        == [2.0, 2.0, 0.0]
    # The default weights name JSON checks that free text does not have: one line before GRPO.
    with pytest.raises(ParamsError, match=r"^align.reward.json_valid: the scorer auto gives no "
                                          r"'json_valid' for a.jsonl:1 \(it gives: exact_match\)"):
        reward.check_weights(scorers.load("auto"), references, [{"source": "a.jsonl:1"}] * 3,
                             DEFAULTS)
    reward.check_weights(scorers.load("auto"), references, [{}] * 3, {"exact_match": 1.0})


def test_a_reference_without_fields_scores_no_field_part():
    assert reward_parts("{}", "{}") == (1.0, 0.0, 1.0)
    assert scoring.task_scores(["{}"], ["{}"])["task_accuracy"] == 0.0


# TRL's GRPOTrainer calls each reward function with keywords: prompts, completions,
# completion_ids, one list per dataset column, and trainer_state, log_extra, log_metric.
PROMPTS = ["Ticket: MailBridge freezes on export."] * 3
COMPLETIONS = [RIGHT, ticket(priority="low"), "No idea."]
EXPECTED = [1.0, 0.74, 0.0]


def trl_extras(count: int) -> dict:
    return {"completion_ids": [[1, 2, 3]] * count, "reference": [REFERENCE] * count,
            "task": ["ticket_triage"] * count, "template": ["technical/2"] * count,
            "trainer_state": object(), "log_extra": lambda *a, **k: None,
            "log_metric": lambda *a, **k: None}


def test_trl_reward_function_on_text_completions():
    reward_function = reward.reward_function("auto", DEFAULTS)
    rewards = reward_function(prompts=PROMPTS, completions=COMPLETIONS, **trl_extras(3))
    assert rewards == pytest.approx(EXPECTED, abs=1e-12)
    assert all(isinstance(value, float) for value in rewards)


def test_trl_reward_function_on_conversational_completions():
    prompts = [[{"role": "user", "content": prompt}] for prompt in PROMPTS]
    completions = [[{"role": "assistant", "content": COMPLETIONS[0]}],
                   # A tool call and its result before the answer: the last assistant message counts.
                   [{"role": "assistant", "content": None,
                     "tool_calls": [{"type": "function", "function": {"name": "lookup", "arguments": {}}}]},
                    {"role": "tool", "name": "lookup", "content": RIGHT},
                    {"role": "assistant", "content": COMPLETIONS[1]}],
                   [{"role": "assistant", "content": [{"type": "text", "text": COMPLETIONS[2]}]}]]
    rewards = reward.reward_function("auto", DEFAULTS)(prompts=prompts, completions=completions, **trl_extras(3))
    assert rewards == pytest.approx(EXPECTED, abs=1e-12)


def test_completion_text():
    assert reward.completion_text("plain") == "plain"
    assert reward.completion_text([{"role": "assistant", "content": "a"}]) == "a"
    assert reward.completion_text([{"content": "no role"}]) == "no role"
    assert reward.completion_text([{"role": "assistant", "content": None}]) == ""
    assert reward.completion_text([]) == ""
    assert reward.completion_text([{"role": "assistant", "content": [
        {"type": "text", "text": "{\"a\": "}, {"type": "image"}, {"type": "text", "text": "1}"}]}]) == '{"a": 1}'


def test_trl_reward_function_needs_one_reference_per_completion():
    extras = trl_extras(2)
    with pytest.raises(ValueError):
        reward.reward_function("auto", DEFAULTS)(prompts=PROMPTS, completions=COMPLETIONS, **extras)


def test_trl_logs_it_as_task_reward_and_it_pickles():
    from trl.trainer.utils import get_callable_name

    reward_function = reward.reward_function("auto", CUSTOM)
    assert get_callable_name(reward_function) == "task_reward"
    copied = pickle.loads(pickle.dumps(reward_function))
    assert copied == reward_function
    assert copied(prompts=PROMPTS, completions=COMPLETIONS, **trl_extras(3)) \
        == pytest.approx([7.0, 1 + 2 * 4 / 5, 0.0])


def mean(values) -> float:
    values = list(values)
    return sum(values) / len(values)
