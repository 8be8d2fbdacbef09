"""Tool calling: one normalised shape for both data conventions, and one rendering that
training and `tunelab serve` share.

The normalised shape is what Hugging Face chat templates take:

    example["tools"]  [{"type": "function", "function": {"name", "description", "parameters"}}]
    a call            {"role": "assistant", "content": "" (or text before the call),
                       "tool_calls": [{"type": "function",
                                       "function": {"name": str, "arguments": {...}}}]}
    a result          {"role": "tool", "content": str}  (+ "tool_call_id", "name" if given)

OpenAI-style records carry ``tool_calls`` on assistant messages (``arguments`` a dict or,
as on OpenAI's wire, a JSON string), ``tool`` messages and a ``tools`` list; ShareGPT-style
ones (glaive, LLaMA-Factory) a ``function_call`` turn whose value is the call as JSON
(``{"name", "arguments"}`` or a list of them), ``observation`` turns and a ``tools``
column, often a JSON string. A tool may be given bare (``{"name", ...}``). An ``id`` on a
call and ``tool_call_id`` on a result are kept and must match where given. Every call
must name a tool in ``tools`` and get a result (the tool messages right after it, one
per call); every result must answer a call.

Rendering: a chat template that renders tools (probed once per template string: a tiny
conversation rendered with ``tools=`` must show the tool's description, the call's
arguments and the result) gets ``tools=`` and the messages as they are. Any other (the
embedded SmolLM2 template) gets the fallback: the conversation turned into plain
system/user/assistant messages in the Hermes/Qwen2.5 style, then the normal template.

    system     its own text + "\\n\\n" (if any), then TOOLS_PROMPT: the tools one JSON
               object per line inside <tools></tools>, and how to call one
    assistant  its text + "\\n" (if any), then per call, joined by "\\n":
               <tool_call>\\n{"name": ..., "arguments": {...}}\\n</tool_call>
    tool       a user turn "<tool_response>\\n...\\n</tool_response>"; consecutive results
               are one user turn, their blocks joined by "\\n"

JSON is written by json.dumps with ensure_ascii=False and keys in a fixed order (a
tool's as normalised, a call's name then arguments), so equal inputs render equal
text. Assistant turns stay assistant turns in order (their ``"train"`` flags kept), so
loss spans computed on the transformed conversation are those of the original. The
server renders with the same ``for_template`` and reads ``<tool_call>`` blocks in the
model's answer back into calls (``parse_calls``).
"""

from __future__ import annotations

import json
import re
from typing import Any, Callable

from tunelab.util import files
from tunelab.util.names import did_you_mean, shown, type_name

TOOLS_PROMPT = (
    "# Tools\n\nYou may call one or more functions to assist with the user query.\n\n"
    "You are provided with function signatures within <tools></tools> XML tags:\n"
    "<tools>\n{tools}\n</tools>\n\n"
    "For each function call, return a json object with function name and arguments within "
    "<tool_call></tool_call> XML tags:\n<tool_call>\n"
    '{{"name": <function-name>, "arguments": <args-json-object>}}\n</tool_call>')
CALL_BLOCK = re.compile(r"<tool_call>\s*(.*?)\s*</tool_call>", re.DOTALL)

Render = Callable[[list, list], str]  # (messages, tools) -> the template's text


# --- reading ----------------------------------------------------------------------------

def normalise_tools(value: Any) -> list[dict]:
    """A record's ``tools``: a list or a JSON string of one (null, blank or missing: none);
    each tool OpenAI-shaped (``{"type": "function", "function": {...}}``) or bare."""
    if value is None:
        return []
    if isinstance(value, str):
        value = _loads(value, "field 'tools'") if value.strip() else []
    if not isinstance(value, list):
        raise ValueError("field 'tools' must be a list of tool schemas (or a JSON string of "
                         f"one), got {type_name(value)}")
    tools = [_tool(item, number) for number, item in enumerate(value, start=1)]
    names = [tool["function"]["name"] for tool in tools]
    twice = next((name for name in names if names.count(name) > 1), None)
    if twice is not None:
        raise ValueError(f"field 'tools' has two tools named {shown(twice)}")
    return tools


def normalise_calls(value: Any, where: str) -> list[dict]:
    """A message's calls: a list of calls, or (a ShareGPT ``function_call`` value) the JSON
    text of one call or of a list of them."""
    if isinstance(value, str):
        value = _loads(value, f"the tool call{where}")
    calls = value if isinstance(value, list) else [value] if isinstance(value, dict) else None
    if not calls:
        raise ValueError(f"the tool calls{where} must be a call object or a non-empty list "
                         f"of them, got {type_name(value) if calls is None else 'an empty list'}")
    return [normalise_call(call, where) for call in calls]


def normalise_call(call: Any, where: str) -> dict:
    """``{"type": "function", "function": {"name", "arguments"}}`` (OpenAI's, with an
    optional ``id``) or a bare ``{"name", "arguments"}``, as the normalised call."""
    if not isinstance(call, dict):
        raise ValueError(f"a tool call{where} must be an object, got {type_name(call)}")
    function = call.get("function", call)
    if not isinstance(function, dict):
        raise ValueError(f"field 'function' of a tool call{where} must be an object, "
                         f"got {type_name(function)}")
    name = function.get("name")
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"a tool call{where} has no function name")
    if "arguments" not in function:
        raise ValueError(f"tool call {shown(name)}{where} has no 'arguments'")
    arguments = function["arguments"]
    if isinstance(arguments, str):
        arguments = _loads(arguments, f"the arguments of tool call {shown(name)}{where}")
    if not isinstance(arguments, dict):
        raise ValueError(f"the arguments of tool call {shown(name)}{where} must be a JSON "
                         f"object, got {type_name(arguments)}")
    normalised = {"type": "function", "function": {"name": name, "arguments": arguments}}
    if isinstance(call.get("id"), str):
        normalised = {"id": call["id"], **normalised}
    return normalised


def check_calls(messages: list[dict], tools: list[dict]) -> None:
    """Every call names a tool in ``tools`` and gets a result right after it (matched by
    id where both give one); every result answers a call."""
    names = [tool["function"]["name"] for tool in tools]
    pending: list[tuple[int, dict]] = []  # (message number, call) still owed a result
    for number, message in enumerate(messages, start=1):
        if message["role"] == "tool":
            if not pending:
                raise ValueError(f"the tool result in message {number} answers no tool call "
                                 "(it must follow an assistant message's tool calls)")
            pending.remove(_answered(pending, message, number))
            continue
        if pending:
            raise ValueError(_no_result(*pending[0]))
        for call in message.get("tool_calls", ()):
            name = call["function"]["name"]
            if name not in names:
                hint = did_you_mean(name, names) if names else " (the record has no 'tools')"
                raise ValueError(f"tool call {shown(name)} in message {number} names no tool "
                                 f"in 'tools'{hint}")
            pending.append((number, call))
    if pending:
        raise ValueError(_no_result(*pending[0]))


def _answered(pending: list[tuple[int, dict]], result: dict, number: int) -> tuple[int, dict]:
    call_id = result.get("tool_call_id")
    if call_id is None:
        return pending[0]
    for entry in pending:
        if entry[1].get("id") in (call_id, None):
            return entry
    raise ValueError(f"the tool result in message {number} answers no call with id "
                     f"{shown(call_id)}")


def _no_result(number: int, call: dict) -> str:
    return (f"tool call {shown(call['function']['name'])} in message {number} gets no result "
            "(a tool message must follow it)")


def _tool(item: Any, number: int) -> dict:
    where = f" of tool {number} in 'tools'"
    if not isinstance(item, dict):
        raise ValueError(f"tool {number} in 'tools' must be an object, got {type_name(item)}")
    function = item.get("function", item) if item.get("type", "function") == "function" else None
    if not isinstance(function, dict):
        raise ValueError(f"tool {number} in 'tools' must be {{\"type\": \"function\", "
                         "\"function\": {\"name\": ...}} or {\"name\": ...}")
    name = function.get("name")
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"tool {number} in 'tools' has no name")
    schema = {"name": name}
    for key, kind in (("description", str), ("parameters", dict)):
        value = function.get(key)
        if isinstance(value, str) and kind is dict:  # a JSON string, as in some exports
            value = _loads(value, f"field '{key}'{where}")
        if value is not None and not isinstance(value, kind):
            raise ValueError(f"field '{key}'{where} must be a {kind.__name__}, "
                             f"got {type_name(value)}")
        if value is not None:
            schema[key] = value
    return {"type": "function", "function": schema}


def _loads(text: str, what: str) -> Any:
    try:
        return files.parse_json(text)
    except files.InvalidJSON as err:
        raise ValueError(f"invalid JSON in {what}: {err.reason}") from None


# --- rendering --------------------------------------------------------------------------

def uses_tools(messages: list[dict], tools: list[dict] | None) -> bool:
    return bool(tools) or any(m["role"] == "tool" or m.get("tool_calls") for m in messages)


def for_template(messages: list[dict], tools: list[dict] | None, template: Any,
                 render: Render) -> tuple[list[dict], list[dict] | None]:
    """The messages and ``tools=`` to give a chat template: as they are where the template
    renders tools, else the fallback messages and no ``tools=``."""
    if not uses_tools(messages, tools):
        return messages, None
    if supports_tools(template, render):
        return messages, tools or None
    return fallback_messages(messages, tools), None


_PROBE_TOOLS = [{"type": "function", "function": {
    "name": "tunelab_probe", "description": "probe-description",
    "parameters": {"type": "object", "properties": {"probe_argument": {"type": "string"}}}}}]
# The id has 9 letters and digits: Mistral's templates refuse any other.
_PROBE_MESSAGES = [
    {"role": "user", "content": "probe-question"},
    {"role": "assistant", "content": "", "tool_calls": [{"id": "tunelab01", "type": "function",
     "function": {"name": "tunelab_probe", "arguments": {"probe_argument": "probe-value"}}}]},
    {"role": "tool", "content": "probe-result", "tool_call_id": "tunelab01",
     "name": "tunelab_probe"},
    {"role": "assistant", "content": "probe-answer"}]
_SUPPORT: dict[str, bool] = {}  # template text -> whether it renders tools


def supports_tools(template: Any, render: Render) -> bool:
    """Whether the template shows the tools, a call and its result (decided once per
    template text: rendering the probe costs as much as an example)."""
    key = template if isinstance(template, str) else repr(template)
    if key not in _SUPPORT:
        try:
            text = render(_PROBE_MESSAGES, _PROBE_TOOLS)
        except Exception:  # noqa: BLE001 - a template that fails on tools does not support them
            text = ""
        _SUPPORT[key] = all(marker in text for marker in
                            ("probe-description", "probe-value", "probe-result"))
    return _SUPPORT[key]


def fallback_messages(messages: list[dict], tools: list[dict] | None) -> list[dict]:
    """The conversation as plain system/user/assistant messages (the module docstring)."""
    rendered: list[dict] = []
    if tools:
        block = TOOLS_PROMPT.format(tools="\n".join(_dumps(tool) for tool in tools))
        if messages and messages[0]["role"] == "system":
            block = f"{messages[0]['content']}\n\n{block}"
            messages = messages[1:]
        rendered.append({"role": "system", "content": block})
    previous_role = None
    for message in messages:
        if message["role"] == "tool":
            response = f"<tool_response>\n{message['content']}\n</tool_response>"
            if previous_role == "tool":
                rendered[-1]["content"] += "\n" + response
            else:
                rendered.append({"role": "user", "content": response})
        else:
            plain = {key: message[key] for key in ("role", "content", "train") if key in message}
            if message.get("tool_calls"):
                calls = "\n".join(call_text(call) for call in message["tool_calls"])
                plain["content"] = f"{message['content']}\n{calls}" if message.get("content") \
                    else calls
            rendered.append(plain)
        previous_role = message["role"]
    return rendered


def call_text(call: dict) -> str:
    function = call["function"]
    body = _dumps({"name": function["name"], "arguments": function["arguments"]})
    return f"<tool_call>\n{body}\n</tool_call>"


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


# --- reading a model's answer -----------------------------------------------------------

def parse_calls(text: str, names: list[str]) -> tuple[str, list[dict]]:
    """``(text outside the calls, calls)`` from a model's answer: its ``<tool_call>``
    blocks as normalised calls. When any block is not a call of a tool in ``names`` (bad
    JSON, an unknown name) the answer is left as text: ``(text, [])``."""
    blocks = list(CALL_BLOCK.finditer(text))
    calls = []
    for block in blocks:
        try:
            call = normalise_call(json.loads(block.group(1)), "")
        except (ValueError, RecursionError):
            return text, []
        if call["function"]["name"] not in names:
            return text, []
        calls.append(call)
    return CALL_BLOCK.sub("", text).strip() if calls else text, calls
