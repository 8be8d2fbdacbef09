"""Reasoning ("thinking") as records bring it and as answers give it back.

Records carry an assistant turn's reasoning as ``reasoning_content`` on the message (the
OpenAI-compatible servers' and Qwen3's template's field) or as ``{"type": "reasoning",
...}`` content parts (LLaMA-Factory's reasoning data); tunelab.data.formats reads both into
``reasoning_content``. ``train.reasoning: keep`` hands it to the chat template, which
writes it inside its think block; ``drop`` removes it, so a reasoning model trains on
answers alone (under Qwen3's template: the empty think block, then the answer).

A generated answer from a template with a think block starts with that block; ``split``
takes it off, so evaluation scores, the parity check compares and the server returns the
answer and its reasoning apart (the server as ``reasoning_content``).
"""

from __future__ import annotations

from tunelab.chat.families import FAMILIES

REASONING_KEY = "reasoning_content"
MARK = "tunelab-reasoning-text"
# Every think block a registered family writes.
THINK_BLOCKS = tuple(dict.fromkeys(f.think for f in FAMILIES.values() if f.think))


def writes_reasoning(tokenizer) -> bool:
    """Whether the chat template writes an assistant turn's ``reasoning_content``."""
    if not getattr(tokenizer, "chat_template", None):
        return False
    probe = [{"role": "user", "content": "Hi"},
             {"role": "assistant", "content": "Hello", REASONING_KEY: MARK}]
    return MARK in tokenizer.apply_chat_template(probe, tokenize=False)


def think_block(template: str | None) -> tuple[str, str] | None:
    """The think block's opening and closing text a template writes, if any."""
    for opening, closing in THINK_BLOCKS:
        if template and opening in template and closing in template:
            return opening, closing
    return None


def drop(messages: list[dict]) -> list[dict]:
    """The messages without their reasoning (a new list; the input is left as it was)."""
    return [{k: v for k, v in m.items() if k != REASONING_KEY} for m in messages]


def without_reasoning(example: dict) -> dict:
    """``example`` with its messages' reasoning dropped (a text example as it was)."""
    return {**example, "messages": drop(example["messages"])} if "messages" in example else example


def has_reasoning(example: dict) -> bool:
    return any(m.get(REASONING_KEY) for m in example.get("messages", ()))


def split(answer: str, template: str | None) -> tuple[str, str]:
    """(reasoning, answer) of generated text: a leading think block taken off (its text
    stripped); ("", answer) where the template has none or the answer starts without it.
    An unclosed block (the answer ran out of tokens while thinking) is all reasoning."""
    block = think_block(template)
    text = answer.lstrip()
    if not block or not text.startswith(block[0]):
        return "", answer
    inside, closed, rest = text[len(block[0]):].partition(block[1])
    return inside.strip(), rest.strip() if closed else ""


def unsupported(tokenizer, examples: list[dict], keep: bool) -> str | None:
    """A one-line complaint when examples carry reasoning that ``train.reasoning: keep``
    would hand to a chat template that does not write it; None when all is well."""
    if not keep or not any(has_reasoning(e) for e in examples) or writes_reasoning(tokenizer):
        return None
    return ("the data carries reasoning (reasoning_content) but the chat template has no think "
            "block to write it in: set train.reasoning: drop, or model.chat_template: qwen3 (or a "
            "template that writes reasoning_content)")
