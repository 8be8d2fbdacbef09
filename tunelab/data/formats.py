"""Normalise a record of user training data, in any of FORMATS, to tunelab's one
example schema (tunelab.data.readers reads the files):

    {"messages": [{"role": ..., "content": ...}, ...], "task": ..., "source": "path:line"}
    {"text": ..., "task": ..., "source": "path:line"}

A message opted out of the loss (``"train": false``, or ``"loss_weight"``/``"weight"``
0, the axolotl and LLaMA-Factory spellings) keeps ``"train": false``; on a user, system or
tool message, which never carries loss, such a flag is accepted and dropped (LLaMA-Factory's
v1 data writes ``"loss_weight": 0.0`` on each), and one asking for loss is refused. Content
given as a list of text parts (OpenAI's and Hugging Face's form) is joined into one string.
Tool calls (OpenAI's ``tool_calls`` and ``tool`` messages, ShareGPT's ``function_call``
and ``observation`` turns) and a record's ``tools`` take tunelab.data.tool_calls' shape,
and are checked there; the example then carries ``"tools"`` too.

Any problem in the data raises ``DataError`` as one line ``path:line: reason``,
so a typo in row 40,000 is found in seconds.
"""

from __future__ import annotations

import json
import os
from typing import Any

from tunelab.chat import reasoning
from tunelab.config import params
from tunelab.data import readers, tool_calls
from tunelab.errors import DataError
from tunelab.util.names import shown as _shown, shown_keys, type_name as _type_name

FORMATS = params.CHOICES["prepare.format"]  # the schema's list: what prepare.format accepts
ROLES = ("system", "user", "assistant", "tool")
CHAT_ROLES = {role: role for role in ROLES}  # role/content messages: each role is its own name
# Parts of a message's content list that are not text: refused, not dropped.
MEDIA_PARTS = ("image", "image_url", "input_image", "audio", "input_audio", "video", "video_url", "file")
TEXT_KEYS = ("text", "value")  # the text of a part: OpenAI/HF spell it `text`, some projects `value`
# ShareGPT's tool turns (glaive, LLaMA-Factory): `function_call` holds the call as JSON,
# `observation` the tool's result.
SHAREGPT_ROLES = {"system": "system", "human": "user", "user": "user",
                  "gpt": "assistant", "assistant": "assistant", "bot": "assistant",
                  "function_call": "assistant", "observation": "tool"}
# Auto-detection: the first key present decides; one distinctive key is
# enough, so a half-filled alpaca record gets "missing field 'output'" rather
# than a vague "cannot tell the format".
DETECTED_BY = (("messages", "chat"), ("conversations", "sharegpt"), ("instruction", "alpaca"),
               ("prompt", "prompt_completion"), ("completion", "prompt_completion"), ("text", "text"))


def load_examples(path: str | os.PathLike, fmt: str = "auto") -> list[dict]:
    """Read ``path`` and normalise every record; ``fmt="auto"`` detects per record."""
    return [normalise(record, fmt, f"{path}:{line}") for line, record in readers.read_records(path)]


def detect_format(record: dict) -> str:
    """Name the format of ``record`` from its keys; raise ValueError if none fits."""
    for key, fmt in DETECTED_BY:
        if key in record:
            return fmt
    raise ValueError("cannot tell the format: expected keys 'messages', 'conversations', "
                     f"'instruction'+'output', 'prompt'+'completion' or 'text'; got "
                     f"{shown_keys(record)}")


def normalise(record: dict, fmt: str, source: str) -> dict:
    """Turn one record of format ``fmt`` (or "auto") into a tunelab example."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown format '{fmt}' (use {', '.join(FORMATS)})")
    try:
        if fmt == "auto":
            fmt = detect_format(record)
        if fmt == "text":
            example: dict[str, Any] = {"text": required_str(record, "text")}
        else:
            example = {"messages": _messages(record, fmt)}
            tools = tool_calls.normalise_tools(record.get("tools"))
            tool_calls.check_calls(example["messages"], tools)
            if tools:
                example["tools"] = tools
        example["task"] = _optional_str(record, "task")
    except ValueError as err:
        raise DataError(f"{source}: {err}") from None
    example["source"] = source
    return example


# --- formats ------------------------------------------------------------------

def _messages(record: dict, fmt: str) -> list[dict]:
    if fmt == "alpaca":
        instruction = required_str(record, "instruction")
        answer = required_str(record, "output")
        extra_input = _optional_str(record, "input")
        system = _optional_str(record, "system")
        user = f"{instruction}\n\n{extra_input}" if extra_input else instruction
        messages = [{"role": "user", "content": user}, {"role": "assistant", "content": answer}]
        return ([{"role": "system", "content": system}] if system else []) + messages
    if fmt == "prompt_completion":
        return [{"role": "user", "content": required_str(record, "prompt")},
                {"role": "assistant", "content": required_str(record, "completion")}]
    if fmt == "chat":
        messages = read_conversation(record, "messages", "role", "content", CHAT_ROLES)
    else:  # sharegpt
        messages = read_conversation(record, "conversations", "from", "value", SHAREGPT_ROLES)
    # Training learns from the assistant turns; without a user turn or a final
    # assistant answer the example teaches nothing useful.
    if not any(message["role"] == "user" for message in messages):
        raise ValueError("conversation has no user message")
    if messages[-1]["role"] != "assistant":
        raise ValueError("conversation must end with an assistant message")
    if not any(m["role"] == "assistant" and m.get("train", True) for m in messages):
        raise ValueError("every assistant message is opted out of the loss; nothing would train")
    return messages


def read_conversation(record: dict, key: str, role_key: str, content_key: str,
                      role_names: dict[str, str]) -> list[dict]:
    """The list at ``record[key]`` as messages: each turn's ``role_key`` (a name in
    ``role_names``, which gives tunelab's role for it) and ``content_key``, loss flags and
    tool calls read as this module reads them (tunelab.data.preferences reads its fields
    so too); ValueError naming the message number on the first bad turn."""
    turns = _required(record, key, list)
    if not turns:
        raise ValueError(f"empty field '{key}'")
    messages = []
    for number, turn in enumerate(turns, start=1):
        where = f" in message {number}"
        if not isinstance(turn, dict):
            raise ValueError(f"message {number} must be an object, got {_type_name(turn)}")
        role = _required(turn, role_key, str, where)
        if role not in role_names:
            raise ValueError(f"unknown role {_shown(role)}{where} (use {', '.join(role_names)})")
        message = _message(turn, role, role_names[role], content_key, where)
        flag = _loss_flag(turn, where)
        if message["role"] != "assistant":
            # A user, system or tool message never carries loss: a flag saying so again
            # (LLaMA-Factory's v1 data puts "loss_weight": 0.0 on each) is fine; one asking
            # for loss is not.
            if flag:
                raise ValueError(f"only assistant messages carry loss; drop the loss flag{where}")
        elif flag is False:
            message["train"] = False
        messages.append(message)
    return messages


def _message(turn: dict, given_role: str, role: str, content_key: str, where: str) -> dict:
    """One message: ``_spoken`` and, on an assistant message, its reasoning."""
    message = _spoken(turn, given_role, role, content_key, where)
    thought = _reasoning(turn, content_key, where)
    if thought:
        if message["role"] != "assistant":
            raise ValueError(f"only assistant messages carry reasoning{where}")
        message[reasoning.REASONING_KEY] = thought
    return message


def _reasoning(turn: dict, key: str, where: str) -> str:
    """An assistant turn's reasoning: its ``reasoning_content`` field, or the text of its
    ``{"type": "reasoning", ...}`` content parts (LLaMA-Factory's reasoning data)."""
    given = turn.get(reasoning.REASONING_KEY)
    if given is not None and not isinstance(given, str):
        raise ValueError(f"field '{reasoning.REASONING_KEY}'{where} must be a str, "
                         f"got {_type_name(given)}")
    parts = turn.get(key) if isinstance(turn.get(key), list) else []
    texts = [_part_text(part, number, where) for number, part in enumerate(parts, start=1)
             if isinstance(part, dict) and part.get("type") == "reasoning"]
    if given and texts:
        raise ValueError(f"reasoning given twice{where} (a reasoning_content field and "
                         "reasoning content parts)")
    return (given or "".join(texts)).strip()


def _spoken(turn: dict, given_role: str, role: str, content_key: str, where: str) -> dict:
    """One message's role, text and tool calls (in the shape of tunelab.data.tool_calls)."""
    if given_role == "function_call":  # ShareGPT: the turn's value is the call, as JSON
        calls = tool_calls.normalise_calls(_required(turn, content_key, object, where), where)
        return {"role": "assistant", "content": "", "tool_calls": calls}
    if turn.get("tool_calls"):  # [] is what some exports write on every message: no calls
        if role != "assistant":
            raise ValueError(f"only assistant messages make tool calls{where}")
        # The text before the calls is optional: OpenAI writes null or "" there.
        text = "" if turn.get(content_key) in (None, "") else _content(turn, content_key, where)
        return {"role": "assistant", "content": text,
                "tool_calls": tool_calls.normalise_calls(turn["tool_calls"], where)}
    message = {"role": role, "content": _content(turn, content_key, where)}
    for key in ("tool_call_id", "name") if role == "tool" else ():
        if turn.get(key) is not None:
            message[key] = _required(turn, key, str, where)
    return message


def _content(turn: dict, key: str, where: str) -> str:
    """A message's text: a string, or a list of text parts joined as chat templates join them."""
    value = turn.get(key)
    if not isinstance(value, list):
        return required_str(turn, key, where)
    texts = []
    for number, part in enumerate(value, start=1):
        kind = part.get("type", "text") if isinstance(part, dict) else None
        if kind in MEDIA_PARTS:
            raise ValueError(f"multimodal content is not supported ('{kind}' part{where})")
        if kind == "reasoning":  # read by _reasoning
            continue
        if kind != "text":
            raise ValueError(f"content part {number}{where} must be {{\"type\": \"text\", "
                             f"\"text\": ...}}, got {_shown(json.dumps(part, ensure_ascii=False))}")
        texts.append(_part_text(part, number, where))
    joined = "".join(texts)
    if not joined.strip():
        raise ValueError(f"empty field '{key}'{where}")
    return joined


def _part_text(part: dict, number: int, where: str) -> str:
    """The text of a content part (``text``, ``value``, or a reasoning part's ``reasoning``)."""
    text_key = next((k for k in (*TEXT_KEYS, "reasoning") if k in part), None)
    if text_key is None or not isinstance(part[text_key], str):
        raise ValueError(f"content part {number}{where} must be {{\"type\": "
                         f"\"{part.get('type', 'text')}\", \"text\": ...}}, got "
                         f"{_shown(json.dumps(part, ensure_ascii=False))}")
    return part[text_key]


def _loss_flag(turn: dict, where: str) -> bool | None:
    """What the message's loss flag asks: False to opt out (``"train": false``, weight 0),
    True for loss (``"train": true``, weight 1), None when it has none; only 0 and 1
    weights exist here."""
    if "train" in turn:
        return _required(turn, "train", bool, where)
    for key in ("loss_weight", "weight"):
        if key in turn:
            weight = turn[key]
            if isinstance(weight, bool) or weight not in (0, 1):
                raise ValueError(f"field '{key}'{where} must be 0 or 1 (fractional loss weights "
                                 f"are not supported), got {json.dumps(weight)}")
            return weight == 1
    return None


def _required(record: dict, key: str, kind: type, where: str = "") -> Any:
    if key not in record:
        raise ValueError(f"missing field '{key}'{where}")
    value = record[key]
    if not isinstance(value, kind):
        raise ValueError(f"field '{key}'{where} must be a {kind.__name__}, got {_type_name(value)}")
    return value


def required_str(record: dict, key: str, where: str = "") -> str:
    """``record[key]``, a string with more than blanks in it; ValueError otherwise."""
    value = _required(record, key, str, where)
    if not value.strip():
        raise ValueError(f"empty field '{key}'{where}")
    return value


def _optional_str(record: dict, key: str) -> str | None:
    """A missing, null or blank optional field all mean "not given"."""
    if record.get(key) is None:
        return None
    value = _required(record, key, str)
    return value if value.strip() else None
