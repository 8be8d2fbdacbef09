"""The one set of token ids that ends an answer, for every consumer alike.

A model stops on any of: its tokenizer's EOS, every id in its generation config's
``eos_token_id`` (Llama 3 and Qwen list several), and the end-of-turn token its chat
template writes after an assistant turn (``<|im_end|>``, ``<|eot_id|>``,
``<end_of_turn>``, ``<|end|>``...). Evaluation, the parity check, ensembles and the
server stop on these ids; the base stage writes them into generation_config.json, and the
Modelfile's ``PARAMETER stop`` lists their texts. A GGUF stops on llama.cpp's own
end-of-generation set, which holds every registered family's end-of-turn token
(tests/test_families.py serves each one and checks that its answer stops).
"""

from __future__ import annotations

PROBE_ANSWER = "tunelab-answer-text"  # no whitespace: templates that trim keep it


def end_of_turn_text(tokenizer) -> str:
    """What the chat template writes right after an assistant answer ("" without one)."""
    if not getattr(tokenizer, "chat_template", None):
        return ""
    messages = [{"role": "user", "content": "Hi"},
                {"role": "assistant", "content": PROBE_ANSWER}]
    text = tokenizer.apply_chat_template(messages, tokenize=False)
    return text.partition(PROBE_ANSWER)[2]


def end_of_turn_id(tokenizer) -> int | None:
    """The first special token the template writes after an answer: the token a model
    must learn to emit to end its turn. None where it writes no special token there.
    Found once per tokenizer and template (encoding asks for every example)."""
    key = (id(tokenizer), tokenizer.name_or_path, getattr(tokenizer, "chat_template", None),
           len(tokenizer))
    if key not in _END_OF_TURN:
        _END_OF_TURN[key] = _find_end_of_turn(tokenizer)
    return _END_OF_TURN[key]


_END_OF_TURN: dict[tuple, int | None] = {}


def _find_end_of_turn(tokenizer) -> int | None:
    after = end_of_turn_text(tokenizer)
    if not after:
        return None
    special = set(tokenizer.all_special_ids) | {
        index for index, token in getattr(tokenizer, "added_tokens_decoder", {}).items()
        if getattr(token, "special", False)}
    for token_id in tokenizer(after, add_special_tokens=False)["input_ids"]:
        if token_id in special:
            return token_id
    return None


def stop_ids(tokenizer, generation_config=None) -> list[int]:
    """Every id that ends an answer, in a fixed order: EOS, the generation config's
    ids, the template's end-of-turn token."""
    ids = [tokenizer.eos_token_id]
    configured = getattr(generation_config, "eos_token_id", None)
    ids += configured if isinstance(configured, list) else [configured]
    if getattr(tokenizer, "chat_template", None):
        ids.append(end_of_turn_id(tokenizer))
    return list(dict.fromkeys(token for token in ids if token is not None))


def stop_texts(tokenizer, generation_config=None) -> list[str]:
    """The stop ids as token texts (the Modelfile's ``PARAMETER stop`` values)."""
    return [tokenizer.convert_ids_to_tokens(token)
            for token in stop_ids(tokenizer, generation_config)]


def cut_at_stop(token_ids: list[int], stops: list[int] | set[int]) -> list[int]:
    """``token_ids`` up to and including the first stop id (all of them when none)."""
    for position, token in enumerate(token_ids):
        if token in stops:
            return token_ids[:position + 1]
    return token_ids
