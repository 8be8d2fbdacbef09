"""Turn a normalised example into token ids and loss labels.

One function serves validation, training and evaluation, so what the validator
checks is exactly what the trainer sees. Chat examples train on every assistant turn
(``train_on="all_assistant"``, skipping messages marked ``"train": false``) or on the
final one only (``"last"``); each turn's span is where the conversation rendered up to
and including that turn goes past the conversation rendered up to its generation
prompt, through the chat template's end-of-turn token (tunelab.chat.stops) at least,
so the model learns to stop after every turn. Plain ``text`` examples train on every
token plus EOS (domain adaptation).

An example with ``tools`` or tool calls renders through tunelab.data.tool_calls: with
``tools=`` where the template renders tools, else as its fallback messages. Tool
results are never assistant turns, so they carry no loss; the calls and answers do.
"""

from __future__ import annotations

from dataclasses import dataclass

from tunelab.chat import families, stops
from tunelab.config import params
from tunelab.data import tool_calls

IGNORE_INDEX = -100  # label value that the loss skips
# Chat data on a tokenizer without a template (most base models): what to set, in one line.
NO_TEMPLATE = ("the data is chat (messages) but the base model's tokenizer has no chat template: "
               f"set model.chat_template to one of {', '.join(families.FAMILIES)} or a .jinja "
               "file (docs/model-families.md), or use plain `text` data")


@dataclass
class Encoded:
    input_ids: list[int]
    labels: list[int]
    prompt_tokens: int       # tokens before the completion starts
    full_tokens: int         # length before truncation
    truncated: bool
    prefix_ok: bool          # prompt renders as a prefix of prompt+completion
    ends_with_eos: bool      # the completion carries a stop token (EOS or the end-of-turn token)
    trained_turns: int = 1   # assistant turns that carry loss

    @property
    def loss_tokens(self) -> int:
        return sum(label != IGNORE_INDEX for label in self.labels)

    @property
    def cut_to_no_answer(self) -> bool:
        """max_length cut it before any answer token: it cannot train (validate.untrainable).
        Not a chat none of whose turns asks for loss: nothing of that was cut."""
        return self.truncated and self.loss_tokens == 0


def split_prompt(example: dict) -> tuple[list[dict], dict]:
    """Chat example -> (prompt messages, final assistant message)."""
    messages = example["messages"]
    return messages[:-1], messages[-1]


def chat_ids(tokenizer, messages: list[dict], add_generation_prompt: bool = False,
             tools: list[dict] | None = None) -> list[int]:
    messages, tools = template_inputs(tokenizer, messages, tools)
    encoded = tokenizer.apply_chat_template(messages, tools=tools, tokenize=True,
                                            add_generation_prompt=add_generation_prompt)
    return list(encoded["input_ids"] if hasattr(encoded, "keys") else encoded)


def template_inputs(tokenizer, messages: list[dict],
                    tools: list[dict] | None) -> tuple[list[dict], list[dict] | None]:
    """The messages and ``tools=`` for the tokenizer's chat template (tool_calls.for_template)."""
    def render(probe_messages, probe_tools):
        return tokenizer.apply_chat_template(probe_messages, tools=probe_tools, tokenize=False)

    return tool_calls.for_template(messages, tools, tokenizer.chat_template, render)


def prompt_ids(tokenizer, example: dict) -> list[int]:
    """Token ids the model sees at inference time, ending where its answer starts."""
    prompt, _ = split_prompt(example)
    return chat_ids(tokenizer, prompt, add_generation_prompt=True, tools=example.get("tools"))


TRAIN_ON = params.CHOICES["train.train_on"]  # the schema's list: what train.train_on accepts


def trained_turns(messages: list[dict], train_on: str) -> list[int]:
    """Indexes of the assistant messages that carry loss."""
    if train_on not in TRAIN_ON:
        raise ValueError(f"unknown train_on '{train_on}' (use {', '.join(TRAIN_ON)})")
    if train_on == "last":  # the final answer, as evaluation scores it
        return [len(messages) - 1]
    return [i for i, m in enumerate(messages) if m["role"] == "assistant" and m.get("train", True)]


def encode(tokenizer, example: dict, max_length: int, train_on: str = "all_assistant") -> Encoded:
    if "text" in example:
        ids = tokenizer(example["text"], add_special_tokens=False)["input_ids"]
        ids = ids + [tokenizer.eos_token_id]
        return _finish(ids, ids, 0, max_length, prefix_ok=True, ends_with_eos=True)

    # Transformed first, so the turn indexes below are those of the rendered messages.
    messages, tools = template_inputs(tokenizer, example["messages"], example.get("tools"))
    full = chat_ids(tokenizer, messages, tools=tools)
    labels = [IGNORE_INDEX] * len(full)
    prefix_ok, start = True, len(full)
    turns = trained_turns(messages, train_on)
    ends = stops.stop_ids(tokenizer)
    for index in turns:
        before = chat_ids(tokenizer, messages[:index], add_generation_prompt=True, tools=tools)
        start = _common_prefix(before, full)
        prefix_ok &= start == len(before)
        end = len(full) if index == len(messages) - 1 else _turn_end(
            chat_ids(tokenizer, messages[:index + 1], tools=tools), full, start, ends)
        labels[start:end] = full[start:end]
    return _finish(full, labels, start, max_length, prefix_ok,
                   ends_with_eos=any(token in ends for token in full[start:]),
                   trained_turns=len(turns))


def _turn_end(rendered_to_turn: list[int], full: list[int], start: int, ends: list[int]) -> int:
    """Where an earlier assistant turn that starts at ``start`` ends in ``full``: at least
    through its end-of-turn (or EOS) token, so the model learns to stop after every turn;
    and on as far as the conversation rendered up to the turn agrees with the whole (the
    template's closing text, ChatML's newline). The second alone fails where a template
    writes a turn differently when it is last (Qwen3's think block)."""
    through_stop = next((position + 1 for position in range(start, len(full))
                         if full[position] in ends), 0)
    return max(_common_prefix(rendered_to_turn, full), through_stop)


def windows(tokenizer, example: dict, max_length: int, train_on: str = "all_assistant",
            stride: int = 0) -> list[Encoded]:
    """The training rows of one example. A chat example is one row (cut at max_length,
    as the validator reports); a ``text`` example longer than max_length becomes windows of
    max_length tokens, each starting ``stride`` tokens (0 = max_length) after the last.
    Where windows overlap, the later one sees the overlap as context only, so each token
    carries loss once (the sliding window of Hugging Face's perplexity guide)."""
    if "text" not in example:
        return [encode(tokenizer, example, max_length, train_on)]
    whole = encode(tokenizer, example, 1 << 30)
    ids, step = whole.input_ids, stride or max_length
    if not 0 < step <= max_length:
        raise ValueError(f"stride {stride} must be between 0 and max_length ({max_length})")
    rows, begin, trained_to = [], 0, 0
    while trained_to < len(ids):
        end = min(begin + max_length, len(ids))
        window = ids[begin:end]
        labels = [IGNORE_INDEX] * (trained_to - begin) + window[trained_to - begin:]
        rows.append(Encoded(input_ids=window, labels=labels, prompt_tokens=trained_to - begin,
                            full_tokens=len(window), truncated=False, prefix_ok=True,
                            ends_with_eos=end == len(ids)))
        begin, trained_to = begin + step, end
    return rows


def _finish(ids, labels, prompt_len, max_length, prefix_ok, ends_with_eos,
            trained_turns: int = 1) -> Encoded:
    return Encoded(input_ids=ids[:max_length], labels=labels[:max_length],
                   prompt_tokens=prompt_len, full_tokens=len(ids),
                   truncated=len(ids) > max_length, prefix_ok=prefix_ok,
                   ends_with_eos=ends_with_eos, trained_turns=trained_turns)


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
