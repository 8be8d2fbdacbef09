"""The GRPO reward: the evaluate stage's own checks of one answer, weighted into a number.

What is rewarded is what is measured: an answer is checked by scoring.score_json_answer
(or scoring.text_match), the functions task_scores averages over the test split, so a
change to how evaluation scores an answer changes the reward with it. Three parts, each
in 0..1 and each the per-example form of an evaluate metric:

- json_valid: the answer holds a JSON object              (metric ``json_valid``)
- fields: the share of the reference's fields it gets right (metric ``task_accuracy``)
- exact_match: the object equals the reference              (metric ``exact_match``)

The reward is their sum weighted by RewardWeights. Averaged over a split, each part equals
task_scores' metric when every reference is a JSON object with the same keys, as in one
JSON task (tests/test_reward.py). Where references' keys differ, task_scores averages each
field over every reference and the reward over each reference's own fields.

A reference that is not a JSON object (a free-text task) has one check, normalised exact
match, as task_scores has for such references; it stands for all three parts, so a right
answer earns the full reward on every task. (task_scores scores a whole split as text once
any reference is not JSON; the reward sees one example and scores it by its own reference.)

For TRL's GRPOTrainer, reward_function gives the reward in its calling convention.
"""

from __future__ import annotations

from dataclasses import dataclass

from tunelab.config.params import RewardParams
from tunelab.eval import scoring


# What each part of an answer is worth: params.yaml's align.reward section, the one copy of
# the defaults. They sum to 1, so a reward reads as a score: 1 for the evaluate stage's
# perfect answer, 0 for prose. Fields carry the task, as task_accuracy does among the
# metrics; exact_match, which `tunelab check` also gates, adds the whole object right and no
# key invented; json_valid is a small first step that GRPO can find before any field is right.
RewardWeights = RewardParams


@dataclass(frozen=True)
class RewardParts:
    """One answer's checks as numbers in 0..1 (see the module docstring)."""
    json_valid: float
    fields: float
    exact_match: float


def task_reward(prediction: str, reference: str, weights: RewardWeights) -> float:
    """``prediction``'s reward against the ``reference`` answer (both as text)."""
    parts = reward_parts(prediction, reference)
    return (weights.json_valid * parts.json_valid + weights.fields * parts.fields
            + weights.exact_match * parts.exact_match)


def reward_parts(prediction: str, reference: str) -> RewardParts:
    parsed_reference = scoring.parse_json_object(reference)
    if parsed_reference is None:
        right = float(scoring.text_match(prediction, reference))
        return RewardParts(json_valid=right, fields=right, exact_match=right)
    answer = scoring.score_json_answer(prediction, parsed_reference)
    # A reference with no fields scores 0 on them, as task_accuracy does.
    return RewardParts(json_valid=float(answer.json_valid),
                       fields=sum(answer.fields.values()) / max(len(answer.fields), 1),
                       exact_match=float(answer.exact_match))


def reward_function(weights: RewardWeights) -> TaskReward:
    """task_reward as a GRPOTrainer ``reward_funcs`` entry; the dataset's ``reference``
    column holds each prompt's reference answer."""
    return TaskReward(weights)


@dataclass(frozen=True)
class TaskReward:
    """A TRL reward function: called with keyword lists (``prompts``, ``completions``,
    ``completion_ids``, one per dataset column) and TRL's extras, it returns one float per
    completion. A class, not a closure, so it pickles (TRL's async GRPO sends reward
    functions to a child process); TRL logs it under ``__name__``."""
    weights: RewardWeights
    __name__ = "task_reward"

    def __call__(self, completions: list, reference: list[str], **kwargs) -> list[float]:
        return [task_reward(completion_text(completion), answer, self.weights)
                for completion, answer in zip(completions, reference, strict=True)]


def completion_text(completion) -> str:
    """The answer in a completion as TRL passes it: a string, or for a conversational
    dataset the messages generated (tool calls and results may come before the answer),
    whose last assistant message is the answer."""
    if isinstance(completion, str):
        return completion
    replies = [message for message in completion if message.get("role", "assistant") == "assistant"]
    content = replies[-1].get("content") if replies else None
    if isinstance(content, list):  # content blocks, as multimodal chat templates use
        return "".join(block.get("text", "") for block in content if block.get("type") == "text")
    return content or ""
