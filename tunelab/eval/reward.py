"""The GRPO reward: the evaluate scorer's scores of one answer, weighted into a number.

What is rewarded is what is measured: an answer gets the scores of the scorer
``evaluate.scorer`` names (tunelab.eval.scorers), the same the evaluate stage averages over
the test split, and ``align.reward`` weighs them: ``{score name: weight}``. With the auto
scorer on JSON answers the names are json_valid, exact_match, task_accuracy (the share of
the reference's fields right) and field_NAME; on short free text, exact_match; a plugin
names its own. Averaged over a split, each weighted score equals the evaluate metric of
that name when every reference is a JSON object with the same keys (tests/test_reward.py).

A weight on a name the scorer does not give these references is an error before GRPO
starts (check_weights): a reward that silently scores 0 teaches nothing.

For TRL's GRPOTrainer, reward_function gives the reward in its calling convention.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Mapping

from tunelab.errors import ParamsError
from tunelab.eval import scorers

REWARD_KEY = "align.reward"


def weighted(scores: Mapping[str, float], weights: Mapping[str, float]) -> float:
    """The reward of one answer's ``scores``; a weight of 0 needs no score."""
    return sum(weight * scores[name] for name, weight in weights.items() if weight)


def missing_names(scores: Mapping[str, float], weights: Mapping[str, float]) -> list[str]:
    """The weighted names ``scores`` lacks."""
    return [name for name, weight in weights.items() if weight and name not in scores]


def check_weights(scorer: scorers.Scorer, references: list[str], records: list[dict],
                  weights: Mapping[str, float]) -> None:
    """One line naming the first weighted score the scorer does not give a reference
    (scored against itself, the answer that gets every score it can)."""
    for index, (reference, record) in enumerate(zip(references, records)):
        where = scorers.example_name(record, index)
        scores = scorer.score_one(reference, reference, record, where=where)
        missing = missing_names(scores, weights)
        if missing:
            raise ParamsError(
                f"{REWARD_KEY}.{missing[0]}: the scorer {scorer.spec} gives no {missing[0]!r} "
                f"for {where} (it gives: {', '.join(sorted(scores)) or 'no score'}); weigh "
                "those names, or set evaluate.scorer to one that scores this task")


def reward_function(scorer_spec: str, weights: Mapping[str, float]) -> TaskReward:
    """The weighted scores as a GRPOTrainer ``reward_funcs`` entry; the dataset's
    ``reference`` column holds each prompt's reference answer, ``record`` the example
    (JSON text) a plugin scorer is given."""
    return TaskReward(scorer_spec, dict(weights))


@dataclass(frozen=True)
class TaskReward:
    """A TRL reward function: called with keyword lists (``prompts``, ``completions``,
    ``completion_ids``, one per dataset column) and TRL's extras, it returns one float per
    completion. It holds the scorer's spec, not its function, so it pickles (TRL's async
    GRPO sends reward functions to a child process); TRL logs it under ``__name__``."""
    scorer_spec: str
    weights: dict
    __name__ = "task_reward"

    def __call__(self, completions: list, reference: list[str], record: list[str] | None = None,
                 **kwargs) -> list[float]:
        scorer = _scorer(self.scorer_spec)
        records = [json.loads(r) for r in record] if record else [{} for _ in reference]
        return [weighted(scorer.score_one(completion_text(completion), answer, example),
                         self.weights)
                for completion, answer, example in zip(completions, reference, records,
                                                        strict=True)]


_LOADED: dict[str, scorers.Scorer] = {}


def _scorer(spec: str) -> scorers.Scorer:
    """The scorer, imported once per process (a reward is called every step)."""
    if spec not in _LOADED:
        _LOADED[spec] = scorers.load(spec)
    return _LOADED[spec]


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
