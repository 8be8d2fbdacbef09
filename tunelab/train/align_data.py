"""Preference and RL examples as the datasets TRL's alignment trainers read (conversational
columns; TRL applies the chat template itself).

    dpo, orpo  {"prompt": [messages], "chosen": [messages], "rejected": [messages]}
    kto        {"prompt": [messages], "completion": [messages], "label": bool}
    grpo       {"prompt": [messages], "reference": "the answer the reward checks against",
                "record": "the example as JSON text (a scorer plugin's third argument)"}

plus ``"tools"`` where an example declares tools. The input is tunelab.data.preferences'
normalised examples (paired or unpaired); GRPO also takes SFT chat examples
(``{"messages": [...]}``), whose final assistant message is the reference. The loss flag
tunelab keeps on a prompt's assistant messages (``"train": false``) is dropped: TRL
trains on the answer side only.
"""

from __future__ import annotations

import json


def to_preference_dataset(examples: list[dict]):
    """Paired examples -> DPO/ORPO's prompt / chosen / rejected dataset."""
    return _dataset([_with_tools(example, {
        "prompt": _messages(example["prompt"]),
        "chosen": _messages(example["chosen"]),
        "rejected": _messages(example["rejected"]),
    }) for example in _only(examples, "chosen", "paired (chosen/rejected)")])


def to_kto_dataset(examples: list[dict]):
    """Unpaired examples -> KTO's prompt / completion / label dataset. Paired examples
    count too, as one desirable and one undesirable completion each (TRL's own
    unpair_preference_dataset does the same)."""
    rows = []
    for example in examples:
        prompt = _messages(example["prompt"])
        if "label" in example:
            answers = [(example["completion"], example["label"])]
        else:
            answers = [(example["chosen"], True), (example["rejected"], False)]
        rows += [_with_tools(example, {"prompt": prompt, "completion": _messages(answer),
                                       "label": label}) for answer, label in answers]
    return _dataset(rows)


def to_grpo_dataset(examples: list[dict]):
    """Prompts and their reference answers for GRPO's reward: a pair's chosen answer, a
    desirable KTO completion (undesirable ones have no reference and are left out), or
    an SFT example's final assistant message."""
    rows = []
    for example in examples:
        if "messages" in example:  # an SFT example
            prompt, answer = example["messages"][:-1], [example["messages"][-1]]
        elif "chosen" in example:
            prompt, answer = example["prompt"], example["chosen"]
        elif example["label"]:
            prompt, answer = example["prompt"], example["completion"]
        else:
            continue
        rows.append(_with_tools(example, {"prompt": _messages(prompt),
                                          "reference": reference_text(answer, example),
                                          "record": json.dumps(example, ensure_ascii=False)}))
    return _dataset(rows)


def reference_text(answer: list[dict], example: dict) -> str:
    """The final assistant message's text: what evaluation compares a prediction with."""
    final = answer[-1]
    if final.get("role") != "assistant" or not final.get("content"):
        where = example.get("source", "an example")
        raise ValueError(f"{where}: GRPO needs a reference answer in text; the final message is "
                         f"{'empty' if final.get('role') == 'assistant' else final.get('role')}")
    return final["content"]


def _only(examples: list[dict], key: str, kind: str) -> list[dict]:
    wrong = next((example for example in examples if key not in example), None)
    if wrong is not None:
        raise ValueError(f"{wrong.get('source', 'an example')}: expected {kind} examples")
    return examples


def _messages(messages: list[dict]) -> list[dict]:
    return [{key: value for key, value in message.items() if key != "train"}
            for message in messages]


def _with_tools(example: dict, row: dict) -> dict:
    if example.get("tools"):
        row["tools"] = example["tools"]
    return row


def _dataset(rows: list[dict]):
    from datasets import Dataset

    if not rows:
        raise ValueError("no examples to align on")
    return Dataset.from_list(rows)
