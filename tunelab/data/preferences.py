"""Preference data for the align stage (DPO, ORPO, KTO, GRPO; issue 16): records in the
shapes TRL and LLaMA-Factory read, normalised to one of two shapes (TRL's conversational
preference and unpaired-preference shapes), checked as SFT data is and split so that all
pairs of one prompt land on one side.

    paired    {"prompt": [messages], "chosen": [assistant messages],
               "rejected": [assistant messages], "source": "path:line"}
    unpaired  {"prompt": [messages], "completion": [assistant messages], "label": bool,
               "source": "path:line"}      (KTO: a thumbs up or down, without a partner)

plus ``"tools"`` when the record declares tools. Accepted records, told apart per record
by their keys (or by ``fmt``: auto | paired | kto):

    {"prompt": "...", "chosen": "...", "rejected": "..."}              TRL standard
    {"prompt": [msgs], "chosen": [msgs], "rejected": [msgs]}           TRL conversational
    {"chosen": [msgs], "rejected": [msgs]}                             TRL implicit prompt
    {"chosen_messages": [msgs], "rejected_messages": [msgs]}           whole conversations
    {"conversations": [turns], "chosen": {"from": "gpt", "value": ...},
     "rejected": {"from": "gpt", "value": ...}}                        LLaMA-Factory ShareGPT
    {"prompt" or "messages": ..., "completion": ..., "label": true}    KTO
    {"messages": [..., assistant answer], "label": true}              LLaMA-Factory KTO

Where both sides are whole conversations, the prompt is the leading messages they share
(TRL's extract_prompt) and each side is the rest. A field may be a string (one user
message for a prompt, one assistant message for an answer), one message object, or a
list of them, as role/content messages or ShareGPT from/value turns; a message is read
by tunelab.data.formats' read_conversation, so content parts, ShareGPT role names and tool
calls mean the same here as in SFT data.

Files are read by prepare.read_examples, as SFT data is: the same file types, column
maps where given (``mapping_for``, from ``prepare.columns`` by columns.from_params), and
every problem one line ``path:line: reason``, all of a file's collected.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Callable

from tunelab.data import columns, encoding, formats, prepare, readers, tool_calls
from tunelab.errors import DataError
from tunelab.util.names import did_you_mean, shown, shown_keys, type_name

FORMATS = ("auto", "paired", "kto")
SIDES = ("chosen", "rejected")
PAIRED_KEYS = ("chosen", "rejected", "chosen_messages", "rejected_messages")
UNPAIRED_KEYS = ("completion", "label")
# The fields this module reads; any other (a template, a mistake, an id) is passed over,
# but one that looks like a missing field's misspelling is named in the error.
KNOWN_FIELDS = (*PAIRED_KEYS, *UNPAIRED_KEYS, "prompt", "messages", "conversations", "tools")
ANSWER_ROLES = ("assistant", "tool")  # an answer may call a tool and read its result


def load_preferences(paths, fmt: str = "auto", group_by: str = "",
                     mapping_for: Callable[[Path], columns.Mapping] | None = None
                     ) -> prepare.LoadResult:
    """Read and normalise every record of ``paths`` as prepare.read_examples reads SFT
    records, collecting every error rather than the first; ``mapping_for(path)`` gives a
    file's column and role maps (columns.from_params), ``group_by`` the record field each
    example keeps as its ``group`` (split_preferences). Duplicates stay:
    prepare.deduplicate drops them."""
    result = prepare.read_examples(paths, lambda record, source: normalise(record, fmt, source),
                                   mapping_for=mapping_for, group_by=group_by)
    # DPO and KTO train on different losses: one run takes one kind.
    if len({"label" in example for example in result.examples}) > 1:
        first_unpaired = next(e["source"] for e in result.examples if "label" in e)
        result.errors.append(f"{first_unpaired}: unpaired (KTO) examples mixed with chosen/"
                             "rejected pairs; align them in separate runs (split the files)")
    return result


def load_splits(data: str | Path, fmt: str, prep, tokenizer, max_length: int,
                params_key: str = "align.data") -> dict[str, list]:
    """The preference files at ``data`` (a folder or one file) read, deduplicated, checked
    against ``max_length`` and split as prepare splits SFT data: ``prep`` (the prepare
    section) gives the global column and role maps, ratios, seed and group_by, so with
    group_by a ticket template lands on the same side as in the SFT split."""
    mapping = columns.build(prep.columns, prep.roles)
    result = load_preferences(prepare.raw_files(data, params_key), fmt, prep.group_by,
                              mapping_for=lambda _path: mapping)
    examples, _ = prepare.deduplicate(result.examples_or_raise())
    too_long = check_lengths(examples, tokenizer, max_length)
    if too_long:
        more = len(too_long) - 1
        raise DataError(too_long[0] + (f" (and {more} more; raise align.max_length)" if more
                                       else " (raise align.max_length)"))
    return split_preferences(examples, prep.val_ratio, prep.test_ratio, prep.seed,
                             prep.group_by)


def load_file(path: str | os.PathLike, fmt: str = "auto") -> list[dict]:
    """One file's examples; DataError on its first bad record (and how many more)."""
    return load_preferences([path], fmt).examples_or_raise()


def check_files(paths, fmt: str, tokenizer, max_length: int,
                mapping_for: Callable[[Path], columns.Mapping] | None = None
                ) -> prepare.LoadResult:
    """`tunelab validate-data` on preference files: every record read as the align stage
    reads it, then, with a ``tokenizer``, each checked against ``max_length``
    (check_lengths); every problem is in the result's errors."""
    result = load_preferences(paths, fmt, mapping_for=mapping_for)
    if tokenizer is not None and result.examples:
        if not tokenizer.chat_template:
            result.errors.append(encoding.NO_TEMPLATE)
        else:
            result.errors += check_lengths(result.examples, tokenizer, max_length)
    return result


def is_preference_file(path: str | os.PathLike, mapping: columns.Mapping,
                       text_split: str = "file") -> bool:
    """Whether ``path``'s first record (after ``mapping``'s renames) is preference data: a
    chosen or rejected side, or a true/false ``label`` beside a prompt (KTO). A file that
    does not read is not: the SFT reader names its error."""
    try:
        records = readers.read_records(path, text_split)
    except DataError:
        return False
    if not records or not isinstance(records[0][1], dict):
        return False
    record = columns.apply(records[0][1], mapping)
    return (any(key in record for key in PAIRED_KEYS)
            or (isinstance(record.get("label"), bool)
                and any(key in record for key in ("prompt", "messages", "completion"))))


def detect_format(record: dict) -> str:
    """The format ``record``'s keys say, "paired" or "kto"; ValueError when neither fits."""
    if any(key in record for key in PAIRED_KEYS):
        return "paired"
    if any(key in record for key in UNPAIRED_KEYS):
        return "kto"
    typo = _typo(record, PAIRED_KEYS + UNPAIRED_KEYS)
    if typo:
        raise ValueError(typo)
    raise ValueError("cannot tell the preference format: expected 'chosen'+'rejected' (with "
                     "'prompt' or 'conversations', or as whole conversations), "
                     "'chosen_messages'+'rejected_messages' or 'completion'+'label'; got "
                     f"{shown_keys(record)}")


def normalise(record: dict, fmt: str, source: str) -> dict:
    """Turn one record of ``fmt`` (auto | paired | kto) into a paired or unpaired example."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown preference format '{fmt}' (use {', '.join(FORMATS)})")
    try:
        if fmt == "auto":
            fmt = detect_format(record)
        tools = tool_calls.normalise_tools(record.get("tools"))
        example = _paired(record) if fmt == "paired" else _unpaired(record)
        for answer in ("chosen", "rejected", "completion"):
            if answer in example:
                tool_calls.check_calls(example["prompt"] + example[answer], tools)
        if tools:
            example["tools"] = tools
    except ValueError as err:
        raise DataError(f"{source}: {err}") from None
    example["source"] = source
    return example


def check_lengths(examples: list[dict], tokenizer, max_length: int) -> list[str]:
    """One line per example whose prompt leaves no token of an answer within
    ``max_length``: the answer is encoded after the prompt with the chat template, as
    tunelab.data.encoding encodes SFT examples, and cut where encoding cuts them."""
    errors = []
    for example in examples:
        # The prompt's own assistant turns are context: only the answer's turns count.
        prompt = [{**message, "train": False} if message["role"] == "assistant" else message
                  for message in example["prompt"]]
        for answer in ("chosen", "rejected", "completion"):
            if answer not in example:
                continue
            conversation = {"messages": prompt + example[answer], "tools": example.get("tools")}
            if encoding.encode(tokenizer, conversation, max_length).loss_tokens == 0:
                prompt_tokens = len(encoding.chat_ids(
                    tokenizer, example["prompt"], add_generation_prompt=True,
                    tools=example.get("tools")))
                errors.append(f"{example['source']}: the prompt takes {prompt_tokens} tokens: "
                              f"nothing of the answer fits in max_length {max_length}")
                break  # the same prompt fails the other side too: one line says it
    return errors


def split_preferences(examples: list[dict], val_ratio: float, test_ratio: float, seed: int,
                      group_by: str = "") -> dict[str, list]:
    """prepare.split, seeded, with every example of one prompt on the same side: a prompt
    often has several pairs, and a test pair whose prompt was trained on measures recall.
    With ``group_by`` (the field load_preferences kept as ``group``, a ticket's template)
    the group decides instead; with prepare's seed and ratios a template then lands on
    the same side as in the SFT split."""
    if group_by:
        return prepare.split(examples, val_ratio, test_ratio, seed, group_by)
    by_prompt = [{**example, "group": example["prompt"]} for example in examples]
    parts = prepare.split(by_prompt, val_ratio, test_ratio, seed, group_by="prompt")
    return {name: [{key: value for key, value in example.items() if key != "group"}
                   for example in part] for name, part in parts.items()}


# --- shapes -------------------------------------------------------------------

def _paired(record: dict) -> dict:
    if "chosen_messages" in record or "rejected_messages" in record:
        return _from_conversations(record, "chosen_messages", "rejected_messages", "")
    prompt_key = next((key for key in ("conversations", "prompt") if key in record), None)
    if prompt_key is None:
        return _from_conversations(record, "chosen", "rejected",
                                   " when the record has no 'prompt' or 'conversations'")
    prompt = _messages(record, prompt_key, "user")
    chosen, rejected = (_answer(record, side) for side in SIDES)
    _check_prompt(prompt)
    if chosen == rejected:
        raise ValueError("'chosen' and 'rejected' are identical")
    return {"prompt": prompt, "chosen": chosen, "rejected": rejected}


def _from_conversations(record: dict, chosen_key: str, rejected_key: str, why: str) -> dict:
    """Two whole conversations: the prompt is the leading messages they share."""
    for key in (chosen_key, rejected_key):
        if key in record and not isinstance(record[key], list):
            raise ValueError(f"field '{key}' must be a list of messages (a whole conversation)"
                             f"{why}, got {type_name(record[key])}")
    chosen_all = _messages(record, chosen_key, "assistant")
    rejected_all = _messages(record, rejected_key, "assistant")
    if chosen_all == rejected_all:
        raise ValueError(f"'{chosen_key}' and '{rejected_key}' are identical")
    shared = next((index for index, (one, other) in enumerate(zip(chosen_all, rejected_all))
                   if one != other), min(len(chosen_all), len(rejected_all)))
    tails = {chosen_key: chosen_all[shared:], rejected_key: rejected_all[shared:]}
    for key, tail in tails.items():
        if not tail:
            raise ValueError(f"'{key}' has no messages after the prompt both sides share")
    # A side that differs at a user, system or tool message differs in what was asked.
    if any(tail[0]["role"] != "assistant" or any(m["role"] not in ANSWER_ROLES for m in tail)
           for tail in tails.values()):
        raise ValueError(f"'{chosen_key}' and '{rejected_key}' have different prompts: they "
                         f"part at message {shared + 1}, before the assistant's answer")
    for key, tail in tails.items():
        _check_answer(key, tail, first_number=shared + 1)
    prompt = chosen_all[:shared]
    _check_prompt(prompt)
    return {"prompt": prompt, "chosen": tails[chosen_key], "rejected": tails[rejected_key]}


def _unpaired(record: dict) -> dict:
    prompt_key = next((key for key in ("prompt", "messages") if key in record), None)
    if prompt_key is None:
        raise ValueError(_missing(record, "prompt", "messages"))
    prompt = _messages(record, prompt_key, "user")
    if prompt_key == "messages" and "completion" not in record:
        # LLaMA-Factory's KTO data (kto_en_demo): the conversation's last message is the
        # answer that the label judges.
        if prompt[-1]["role"] != "assistant":
            raise ValueError("'messages' must end with the assistant's answer when the record "
                             "has no 'completion'")
        prompt, completion = prompt[:-1], prompt[-1:]
    else:
        completion = _answer(record, "completion")
    _check_prompt(prompt)
    if "label" not in record:
        raise ValueError(_missing(record, "label"))
    label = record["label"]
    if not isinstance(label, bool):
        raise ValueError(f"field 'label' must be true or false, got {json.dumps(label)[:40]}")
    return {"prompt": prompt, "completion": completion, "label": label}


# --- fields -------------------------------------------------------------------

def _messages(record: dict, key: str, bare_role: str) -> list[dict]:
    """A field as messages: a string is one ``bare_role`` message, an object one message
    (LLaMA-Factory gives each side so), a list a conversation of messages or turns."""
    if key not in record:
        raise ValueError(_missing(record, key))
    value = record[key]
    if isinstance(value, str):
        return [{"role": bare_role, "content": formats.required_str(record, key)}]
    turns = [value] if isinstance(value, dict) else value
    if not isinstance(turns, list):
        raise ValueError(f"field '{key}' must be a string, a message or a list of messages, "
                         f"got {type_name(value)}")
    if not turns:
        raise ValueError(f"empty field '{key}'")
    sharegpt = isinstance(turns[0], dict) and "from" in turns[0]
    role_key, content_key, roles = (("from", "value", formats.SHAREGPT_ROLES) if sharegpt
                                    else ("role", "content", formats.CHAT_ROLES))
    try:
        return formats.read_conversation({key: turns}, key, role_key, content_key, roles)
    except ValueError as err:  # formats numbers the message; the field is ours to name
        raise ValueError(f"{key}: {err}") from None


def _answer(record: dict, key: str) -> list[dict]:
    messages = _messages(record, key, "assistant")
    _check_answer(key, messages, first_number=1)
    return messages


def _check_answer(key: str, messages: list[dict], first_number: int) -> None:
    """An answer is the assistant's: it starts and ends with an assistant message, with
    only tool results in between."""
    last = first_number + len(messages) - 1
    for number, message in enumerate(messages, start=first_number):
        role = message["role"]
        if role not in ANSWER_ROLES or (number in (first_number, last) and role != "assistant"):
            raise ValueError(f"'{key}' must be the assistant's answer, but its message "
                             f"{number} has role '{role}'")


def _check_prompt(prompt: list[dict]) -> None:
    if not any(message["role"] == "user" for message in prompt):
        raise ValueError("the prompt has no user message")


def _missing(record: dict, key: str, *alternatives: str) -> str:
    """'missing field', or the record's field that looks like a misspelling of it."""
    typo = _typo(record, (key, *alternatives))
    if typo:
        return typo
    return f"missing field '{key}'" + "".join(f" (or '{other}')" for other in alternatives)


def _typo(record: dict, wanted: tuple[str, ...]) -> str:
    """``unknown field 'rejectd' (did you mean 'rejected'?)`` for the first of the record's
    unread fields close to one of ``wanted``; "" when none is."""
    for key in record:
        hint = did_you_mean(key, wanted) if key not in KNOWN_FIELDS else ""
        if hint:
            return f"unknown field {shown(str(key))}{hint}"
    return ""
