"""Turn a normalised example into token ids and loss labels.

One function serves validation, training and evaluation, so what the validator
checks is exactly what the trainer sees. Chat examples train on the final
assistant turn only (the "completion"); the chat template's end-of-turn token is
part of it, so the model learns to stop. Plain ``text`` examples train on every
token plus EOS (domain adaptation).
"""

from __future__ import annotations

from dataclasses import dataclass

IGNORE_INDEX = -100  # label value that the loss skips


@dataclass
class Encoded:
    input_ids: list[int]
    labels: list[int]
    prompt_tokens: int       # tokens before the completion starts
    full_tokens: int         # length before truncation
    truncated: bool
    prefix_ok: bool          # prompt renders as a prefix of prompt+completion
    ends_with_eos: bool      # the completion carries the EOS token

    @property
    def loss_tokens(self) -> int:
        return sum(label != IGNORE_INDEX for label in self.labels)


def split_prompt(example: dict) -> tuple[list[dict], dict]:
    """Chat example -> (prompt messages, final assistant message)."""
    messages = example["messages"]
    return messages[:-1], messages[-1]


def chat_ids(tokenizer, messages: list[dict], add_generation_prompt: bool = False) -> list[int]:
    encoded = tokenizer.apply_chat_template(messages, tokenize=True,
                                            add_generation_prompt=add_generation_prompt)
    return list(encoded["input_ids"] if hasattr(encoded, "keys") else encoded)


def prompt_ids(tokenizer, example: dict) -> list[int]:
    """Token ids the model sees at inference time, ending where its answer starts."""
    prompt, _ = split_prompt(example)
    return chat_ids(tokenizer, prompt, add_generation_prompt=True)


def encode(tokenizer, example: dict, max_length: int) -> Encoded:
    if "text" in example:
        ids = tokenizer(example["text"], add_special_tokens=False)["input_ids"]
        ids = ids + [tokenizer.eos_token_id]
        return _finish(ids, ids, 0, max_length, prefix_ok=True, ends_with_eos=True)

    prompt = prompt_ids(tokenizer, example)
    full = chat_ids(tokenizer, example["messages"])
    prefix_ok = full[:len(prompt)] == prompt
    prompt_len = _common_prefix(prompt, full)
    completion = full[prompt_len:]
    labels = [IGNORE_INDEX] * prompt_len + completion
    return _finish(full, labels, prompt_len, max_length, prefix_ok,
                   ends_with_eos=tokenizer.eos_token_id in completion)


def _finish(ids, labels, prompt_len, max_length, prefix_ok, ends_with_eos) -> Encoded:
    return Encoded(input_ids=ids[:max_length], labels=labels[:max_length],
                   prompt_tokens=prompt_len, full_tokens=len(ids),
                   truncated=len(ids) > max_length, prefix_ok=prefix_ok,
                   ends_with_eos=ends_with_eos)


def _common_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


def render_loss_preview(tokenizer, encoded: Encoded) -> str:
    """Human-readable view of one example: tokens that carry loss are in [[ ]]."""
    parts = []
    in_loss = False
    for token_id, label in zip(encoded.input_ids, encoded.labels):
        carries = label != IGNORE_INDEX
        if carries != in_loss:
            parts.append("[[" if carries else "]]")
            in_loss = carries
        parts.append(tokenizer.decode([token_id]))
    if in_loss:
        parts.append("]]")
    return "".join(parts)
