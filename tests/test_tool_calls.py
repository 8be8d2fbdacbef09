"""Tool-calling data end to end: both conventions read into one example, the exact tokens
that carry loss under the fallback rendering and under a template with tool support, the
one-line errors of bad records, and `tunelab serve` taking tools and giving back
tool_calls (the official `openai` client against the app, generation canned)."""

from __future__ import annotations

import copy
import json
import re
from types import SimpleNamespace

import openai
import pytest

from tunelab.data import encoding, formats, tool_calls
from tunelab.errors import DataError

WEATHER = {"name": "get_weather", "description": "Current weather in a city",
           "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                          "required": ["city"]}}
TOOLS = [{"type": "function", "function": WEATHER}]
QUESTION = "Weather in Paris and Oslo?"
ANSWER = "Paris: 18 °C and sunny; Oslo: 9 °C with rain."

# OpenAI's convention: arguments as JSON text (its wire shape) or as an object.
OPENAI_RECORD = {"tools": TOOLS, "messages": [
    {"role": "user", "content": QUESTION},
    {"role": "assistant", "content": None, "tool_calls": [
        {"type": "function", "function": {"name": "get_weather",
                                          "arguments": "{\"city\": \"Paris\"}"}},
        {"type": "function", "function": {"name": "get_weather", "arguments": {"city": "Oslo"}}}]},
    {"role": "tool", "content": "18 °C, sunny"},
    {"role": "tool", "content": "9 °C, rain"},
    {"role": "assistant", "content": ANSWER}]}
# ShareGPT's (glaive, LLaMA-Factory): the tools column as JSON text of bare functions.
SHAREGPT_RECORD = {"tools": json.dumps([WEATHER]), "conversations": [
    {"from": "human", "value": QUESTION},
    {"from": "function_call", "value": json.dumps([
        {"name": "get_weather", "arguments": {"city": "Paris"}},
        {"name": "get_weather", "arguments": {"city": "Oslo"}}])},
    {"from": "observation", "value": "18 °C, sunny"},
    {"from": "observation", "value": "9 °C, rain"},
    {"from": "gpt", "value": ANSWER}]}


def call(city: str) -> dict:
    return {"type": "function", "function": {"name": "get_weather", "arguments": {"city": city}}}


EXAMPLE = {"messages": [{"role": "user", "content": QUESTION},
                        {"role": "assistant", "content": "", "tool_calls": [call("Paris"),
                                                                            call("Oslo")]},
                        {"role": "tool", "content": "18 °C, sunny"},
                        {"role": "tool", "content": "9 °C, rain"},
                        {"role": "assistant", "content": ANSWER}],
           "tools": TOOLS, "task": None}

# The fallback's system block, written out once: the documented format.
TOOLS_BLOCK = (
    "# Tools\n\nYou may call one or more functions to assist with the user query.\n\n"
    "You are provided with function signatures within <tools></tools> XML tags:\n<tools>\n"
    '{"type": "function", "function": {"name": "get_weather", "description": "Current weather '
    'in a city", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, '
    '"required": ["city"]}}}\n</tools>\n\n'
    "For each function call, return a json object with function name and arguments within "
    "<tool_call></tool_call> XML tags:\n<tool_call>\n"
    '{"name": <function-name>, "arguments": <args-json-object>}\n</tool_call>')
PARIS_CALL = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>'
OSLO_CALL = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Oslo"}}\n</tool_call>'

# A template with tool support of its own: tools, calls and results in its own words.
TOOL_TEMPLATE = (
    "{% if tools %}<|im_start|>system\n{% for tool in tools %}TOOL {{ tool.function.name }}: "
    "{{ tool.function.description }}\n{% endfor %}<|im_end|>\n{% endif %}"
    "{% for message in messages %}<|im_start|>{{ message.role }}\n{{ message.content }}"
    "{% for call in message.tool_calls or [] %}CALL {{ call.function.name }} "
    "{{ call.function.arguments | tojson }}{% endfor %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


def loss_spans(tokenizer, encoded) -> list[str]:
    """The text of each run of tokens that carries loss."""
    spans, run = [], []
    for token_id, label in zip(encoded.input_ids, encoded.labels):
        if label != encoding.IGNORE_INDEX:
            run.append(token_id)
        elif run:
            spans.append(run)
            run = []
    return [tokenizer.decode(ids) for ids in spans + ([run] if run else [])]


def without_source(example: dict) -> dict:
    return {key: value for key, value in example.items() if key != "source"}


# --- reading ----------------------------------------------------------------------------

def test_both_conventions_read_into_the_same_example(tmp_path, write_jsonl):
    chat = write_jsonl(tmp_path / "chat.jsonl", [OPENAI_RECORD])
    sharegpt = write_jsonl(tmp_path / "sharegpt.jsonl", [SHAREGPT_RECORD])
    [from_chat] = formats.load_examples(chat)
    [from_sharegpt] = formats.load_examples(sharegpt)
    assert from_chat == {**EXAMPLE, "source": f"{chat}:1"}
    assert from_sharegpt == {**EXAMPLE, "source": f"{sharegpt}:1"}


def test_ids_are_kept_and_a_tools_string_of_openai_schemas_is_read():
    record = {"tools": json.dumps(TOOLS), "messages": [
        {"role": "user", "content": "Paris?"},
        {"role": "assistant", "content": "", "tool_calls": [
            {"id": "call_1", "type": "function",
             "function": {"name": "get_weather", "arguments": "{\"city\": \"Paris\"}"}}]},
        {"role": "tool", "tool_call_id": "call_1", "name": "get_weather", "content": "18 °C"},
        {"role": "assistant", "content": "18 °C."}]}
    example = formats.normalise(record, "chat", "f:1")
    assert example["tools"] == TOOLS
    assert example["messages"][1:3] == [
        {"role": "assistant", "content": "", "tool_calls": [{"id": "call_1", **call("Paris")}]},
        {"role": "tool", "content": "18 °C", "tool_call_id": "call_1", "name": "get_weather"}]


# --- loss -------------------------------------------------------------------------------

def test_loss_is_on_the_calls_and_the_answer_never_on_the_results(tokenizer):
    encoded = encoding.encode(tokenizer, EXAMPLE, max_length=4096)
    assert tokenizer.decode(encoded.input_ids) == (
        f"<|im_start|>system\n{TOOLS_BLOCK}<|im_end|>\n"
        f"<|im_start|>user\n{QUESTION}<|im_end|>\n"
        f"<|im_start|>assistant\n{PARIS_CALL}\n{OSLO_CALL}<|im_end|>\n"
        "<|im_start|>user\n<tool_response>\n18 °C, sunny\n</tool_response>\n"
        "<tool_response>\n9 °C, rain\n</tool_response><|im_end|>\n"
        f"<|im_start|>assistant\n{ANSWER}<|im_end|>\n")
    assert loss_spans(tokenizer, encoded) == [f"{PARIS_CALL}\n{OSLO_CALL}<|im_end|>\n",
                                              f"{ANSWER}<|im_end|>\n"]
    assert (encoded.prefix_ok, encoded.ends_with_eos, encoded.trained_turns) == (True, True, 2)
    # The final answer alone, as evaluation scores it:
    last = encoding.encode(tokenizer, EXAMPLE, max_length=4096, train_on="last")
    assert loss_spans(tokenizer, last) == [f"{ANSWER}<|im_end|>\n"]


def test_the_fallback_keeps_system_text_text_before_a_call_and_loss_flags(tokenizer):
    messages = [{"role": "system", "content": "Be brief."},
                {"role": "user", "content": "Paris?"},
                {"role": "assistant", "content": "Checking.", "tool_calls": [call("Paris")],
                 "train": False},
                {"role": "tool", "content": "18 °C", "tool_call_id": "x"},
                {"role": "user", "content": "And Oslo?"},
                {"role": "assistant", "content": "", "tool_calls": [call("Oslo")]},
                {"role": "tool", "content": "9 °C"},
                {"role": "assistant", "content": "9 °C."}]
    assert tool_calls.fallback_messages(messages, TOOLS) == [
        {"role": "system", "content": f"Be brief.\n\n{TOOLS_BLOCK}"},
        {"role": "user", "content": "Paris?"},
        {"role": "assistant", "content": f"Checking.\n{PARIS_CALL}", "train": False},
        {"role": "user", "content": "<tool_response>\n18 °C\n</tool_response>"},
        {"role": "user", "content": "And Oslo?"},
        {"role": "assistant", "content": OSLO_CALL},
        {"role": "user", "content": "<tool_response>\n9 °C\n</tool_response>"},
        {"role": "assistant", "content": "9 °C."}]
    encoded = encoding.encode(tokenizer, {"messages": messages, "tools": TOOLS}, 4096)
    assert loss_spans(tokenizer, encoded) == [f"{OSLO_CALL}<|im_end|>\n", "9 °C.<|im_end|>\n"]
    assert encoded.prefix_ok


def test_a_template_with_tool_support_gets_tools_not_the_fallback(tokenizer):
    custom = copy.deepcopy(tokenizer)
    custom.chat_template = TOOL_TEMPLATE
    assert tool_calls.supports_tools(TOOL_TEMPLATE, lambda m, t: custom.apply_chat_template(
        m, tools=t, tokenize=False))
    assert not tool_calls.supports_tools(tokenizer.chat_template, lambda m, t:
                                         tokenizer.apply_chat_template(m, tools=t, tokenize=False))
    encoded = encoding.encode(custom, EXAMPLE, max_length=4096)
    assert custom.decode(encoded.input_ids) == (
        "<|im_start|>system\nTOOL get_weather: Current weather in a city\n<|im_end|>\n"
        f"<|im_start|>user\n{QUESTION}<|im_end|>\n"
        '<|im_start|>assistant\nCALL get_weather {"city": "Paris"}'
        'CALL get_weather {"city": "Oslo"}<|im_end|>\n'
        "<|im_start|>tool\n18 °C, sunny<|im_end|>\n<|im_start|>tool\n9 °C, rain<|im_end|>\n"
        f"<|im_start|>assistant\n{ANSWER}<|im_end|>\n")
    assert loss_spans(custom, encoded) == [
        'CALL get_weather {"city": "Paris"}CALL get_weather {"city": "Oslo"}<|im_end|>\n',
        f"{ANSWER}<|im_end|>\n"]
    assert custom.decode(encoding.prompt_ids(custom, EXAMPLE)).endswith(
        "<|im_start|>tool\n9 °C, rain<|im_end|>\n<|im_start|>assistant\n")


# --- bad records ------------------------------------------------------------------------

def record(*turns, tools=TOOLS) -> dict:
    return {"messages": [{"role": "user", "content": "Paris?"}, *turns], "tools": tools}


def assistant_call(name="get_weather", arguments="{\"city\": \"Paris\"}", **extra) -> dict:
    return {"role": "assistant", "content": "",
            "tool_calls": [{**extra, "type": "function",
                            "function": {"name": name, "arguments": arguments}}]}


RESULT = {"role": "tool", "content": "18 °C"}
FINAL = {"role": "assistant", "content": "18 °C."}
BAD_RECORDS = [
    ("unknown tool", record(assistant_call("get_wether"), RESULT, FINAL),
     "tool call 'get_wether' in message 2 names no tool in 'tools' (did you mean "
     "'get_weather'?)"),
    ("no tools at all", record(assistant_call(), RESULT, FINAL, tools=None),
     "tool call 'get_weather' in message 2 names no tool in 'tools' (the record has no 'tools')"),
    ("arguments not JSON", record(assistant_call(arguments="{city: Paris}"), RESULT, FINAL),
     "invalid JSON in the arguments of tool call 'get_weather' in message 2: Expecting property "
     "name enclosed in double quotes"),
    ("arguments not an object", record(assistant_call(arguments="[1]"), RESULT, FINAL),
     "the arguments of tool call 'get_weather' in message 2 must be a JSON object, got list"),
    ("call without a result", record(assistant_call(), FINAL),
     "tool call 'get_weather' in message 2 gets no result (a tool message must follow it)"),
    ("conversation ends on a call", record(FINAL, {"role": "user", "content": "Oslo?"},
                                           assistant_call()),
     "tool call 'get_weather' in message 4 gets no result (a tool message must follow it)"),
    ("result without a call", record(RESULT, FINAL),
     "the tool result in message 2 answers no tool call (it must follow an assistant "
     "message's tool calls)"),
    ("two results for one call", record(assistant_call(), RESULT, RESULT, FINAL),
     "the tool result in message 4 answers no tool call (it must follow an assistant "
     "message's tool calls)"),
    ("result for another id", record(assistant_call(id="call_1"),
                                     {**RESULT, "tool_call_id": "call_2"}, FINAL),
     "the tool result in message 3 answers no call with id 'call_2'"),
    ("tools not a list", record(FINAL, tools=5),
     "field 'tools' must be a list of tool schemas (or a JSON string of one), got int"),
    ("tools text not JSON", record(FINAL, tools="[{name: x}]"),
     "invalid JSON in field 'tools': Expecting property name enclosed in double quotes"),
    ("tools text of one object", record(FINAL, tools=json.dumps(WEATHER)),
     "field 'tools' must be a list of tool schemas (or a JSON string of one), got dict"),
    ("tool without a name", record(FINAL, tools=[{"description": "x"}]),
     "tool 1 in 'tools' has no name"),
    ("two tools of one name", record(FINAL, tools=[WEATHER, WEATHER]),
     "field 'tools' has two tools named 'get_weather'"),
    ("call on a user message", {"messages": [{**assistant_call(), "role": "user",
                                              "content": "hi"}, FINAL], "tools": TOOLS},
     "only assistant messages make tool calls in message 1"),
    ("loss asked of a result", record(assistant_call(), {**RESULT, "train": True}, FINAL),
     "only assistant messages carry loss; drop the loss flag in message 3"),
    ("sharegpt call not JSON", {"tools": [WEATHER], "conversations": [
        {"from": "human", "value": "Paris?"}, {"from": "function_call", "value": "get_weather"},
        {"from": "observation", "value": "18 °C"}, {"from": "gpt", "value": "18 °C."}]},
     "invalid JSON in the tool call in message 2: Expecting value"),
    ("sharegpt call without a name", {"tools": [WEATHER], "conversations": [
        {"from": "human", "value": "Paris?"},
        {"from": "function_call", "value": "{\"arguments\": {}}"},
        {"from": "observation", "value": "18 °C"}, {"from": "gpt", "value": "18 °C."}]},
     "a tool call in message 2 has no function name"),
]


@pytest.mark.parametrize("bad, reason", [case[1:] for case in BAD_RECORDS],
                         ids=[case[0] for case in BAD_RECORDS])
def test_a_bad_tool_record_is_one_line_naming_file_and_line(tmp_path, write_jsonl, bad, reason):
    path = write_jsonl(tmp_path / "tools.jsonl", [OPENAI_RECORD, bad])
    with pytest.raises(DataError) as caught:
        formats.load_examples(path)
    assert str(caught.value) == f"{path}:2: {reason}"


# --- a model's answer -------------------------------------------------------------------

@pytest.mark.parametrize("answer, expected", [
    (f"{PARIS_CALL}\n{OSLO_CALL}", ("", [call("Paris"), call("Oslo")])),
    (f"Let me look.\n{PARIS_CALL}", ("Let me look.", [call("Paris")])),
    ("<tool_call>{\"name\": \"get_weather\", \"arguments\": \"{\\\"city\\\": \\\"Oslo\\\"}\"}"
     "</tool_call>", ("", [call("Oslo")])),  # arguments as JSON text, no newlines
    ("It is sunny.", ("It is sunny.", [])),
    (PARIS_CALL.replace("get_weather", "get_time"), (PARIS_CALL.replace("get_weather",
                                                                        "get_time"), [])),
    ("<tool_call>\n{\"name\": \"get_weather\"\n</tool_call>",
     ("<tool_call>\n{\"name\": \"get_weather\"\n</tool_call>", [])),
    (PARIS_CALL[:-len("</tool_call>")], (PARIS_CALL[:-len("</tool_call>")], [])),  # cut short
])
def test_parse_calls_reads_the_blocks_the_fallback_writes(answer, expected):
    assert tool_calls.parse_calls(answer, ["get_weather"]) == expected


# --- tunelab serve ----------------------------------------------------------------------

@pytest.fixture(scope="module")
def served(tokenizer):
    """(engine, client): the transformers engine whose generation says ``engine.answer``
    (tokenized and fed through its own text assembly) and records each prompt."""
    from tunelab.serve import engine, server
    from tunelab.serve.jobs import TextAssembler, finish

    class CannedEngine(engine.Engine):
        answer = ""
        prompts: list[list[int]] = []

        def _generate(self, job):
            self.prompts.append(job.prompt_ids)
            assembler = TextAssembler(self.tokenizer, job.stops, self.eos_ids.__contains__)
            ids = self.tokenizer(self.answer, add_special_tokens=False)["input_ids"]
            for token_id in [*ids, self.tokenizer.eos_token_id]:
                delta = assembler.feed(token_id)
                if delta:
                    job.emit(("text", delta))
            finish(job, assembler)

    model = SimpleNamespace(config=SimpleNamespace(max_position_embeddings=2048),
                            generation_config=SimpleNamespace(eos_token_id=tokenizer.eos_token_id))
    canned = CannedEngine(model, tokenizer, "base", [])
    url, stop = server.start_in_thread(server.create_app(canned))
    yield canned, openai.OpenAI(base_url=f"{url}/v1", api_key="none", max_retries=0, timeout=60)
    stop()
    canned.close()


def ask(client, messages, **kwargs):
    return client.chat.completions.create(model="base", messages=messages, max_tokens=64,
                                          temperature=0, **kwargs)


def test_served_tools_come_back_as_tool_calls_and_prompts_match_training(served, tokenizer):
    engine, client = served
    engine.answer = PARIS_CALL
    question = [{"role": "user", "content": "Weather in Paris?"}]
    response = ask(client, question, tools=TOOLS)
    choice = response.choices[0]
    assert (choice.finish_reason, choice.message.content) == ("tool_calls", None)
    [sent] = choice.message.tool_calls
    assert re.fullmatch(r"call_[0-9a-f]{24}", sent.id)
    assert (sent.type, sent.function.name, sent.function.arguments) == \
        ("function", "get_weather", '{"city": "Paris"}')
    assert engine.prompts[-1] == encoding.chat_ids(tokenizer, question,
                                                   add_generation_prompt=True, tools=TOOLS)
    assert tokenizer.decode(engine.prompts[-1]).startswith(f"<|im_start|>system\n{TOOLS_BLOCK}")

    # The call and its result sent back: the prompt is the one training puts before the answer.
    engine.answer = "18 °C and sunny."
    follow_up = [*question, choice.message,
                 {"role": "tool", "tool_call_id": sent.id, "content": "18 °C, sunny"}]
    response = ask(client, follow_up, tools=TOOLS)
    assert (response.choices[0].finish_reason, response.choices[0].message.content,
            response.choices[0].message.tool_calls) == ("stop", "18 °C and sunny.", None)
    trained = formats.normalise({"tools": TOOLS, "messages": [
        *question, assistant_call(), {"role": "tool", "content": "18 °C, sunny"},
        {"role": "assistant", "content": "18 °C and sunny."}]}, "chat", "t:1")
    assert engine.prompts[-1] == encoding.prompt_ids(tokenizer, trained)


@pytest.mark.parametrize("answer, content, calls", [
    (f"On it.\n{PARIS_CALL}\n{OSLO_CALL}", "On it.",
     [("get_weather", '{"city": "Paris"}'), ("get_weather", '{"city": "Oslo"}')]),
    (PARIS_CALL.replace("get_weather", "get_time"), PARIS_CALL.replace("get_weather",
                                                                       "get_time"), None),
    ("Sunny.", "Sunny.", None),
])
def test_served_answers_are_calls_only_when_they_parse_as_calls(served, answer, content, calls):
    engine, client = served
    engine.answer = answer
    message = ask(client, [{"role": "user", "content": "Weather?"}], tools=TOOLS,
                  tool_choice="auto").choices[0].message
    assert message.content == content
    assert calls == (None if message.tool_calls is None else
                     [(c.function.name, c.function.arguments) for c in message.tool_calls])


def test_tool_choice_none_shows_no_tools_and_reads_no_calls(served, tokenizer):
    engine, client = served
    engine.answer = PARIS_CALL
    question = [{"role": "user", "content": "Weather in Paris?"}]
    response = ask(client, question, tools=TOOLS, tool_choice="none")
    assert (response.choices[0].finish_reason, response.choices[0].message.content,
            response.choices[0].message.tool_calls) == ("stop", PARIS_CALL, None)
    assert engine.prompts[-1] == encoding.chat_ids(tokenizer, question, add_generation_prompt=True)


@pytest.mark.parametrize("extra, param, message", [
    ({"tool_choice": "required"}, "tool_choice",
     "tool_choice: only 'auto' and 'none' are supported by this server, got \"required\""),
    ({"stream": True}, "stream", "stream: streaming with tools is not supported by this server "
     "(tool calls are read from the whole answer); send stream false"),
    ({"tools": [{"type": "function", "function": {**WEATHER, "strict": True}}]},
     "tools.0.function.strict", "tools.0.function.strict: strict function calling is not "
     "supported by this server (nothing holds the arguments to the schema); send false or "
     "leave it out"),
    ({"tools": [TOOLS[0], TOOLS[0]]}, "tools", "tools: field 'tools' has two tools named "
     "'get_weather'"),
    ({"messages": [{"role": "user", "content": "Paris?"}, {"role": "assistant", "tool_calls": [
        {"id": "c1", "type": "function",
         "function": {"name": "get_weather", "arguments": "{city}"}}]}]},
     "messages.1.tool_calls.0.function.arguments", "messages.1.tool_calls.0.function.arguments: "
     "invalid JSON in the arguments of tool call 'get_weather': Expecting property name "
     "enclosed in double quotes"),
    ({"messages": [{"role": "user", "content": "Paris?"}, {"role": "assistant"}]},
     "messages.1", "messages.1: content is required (it may be null only beside tool_calls)"),
])
def test_bad_tool_requests_are_400_naming_the_param(served, extra, param, message):
    _, client = served
    body = {"messages": [{"role": "user", "content": "Weather?"}], "tools": TOOLS, **extra}
    with pytest.raises(openai.BadRequestError) as caught:
        ask(client, **body)
    assert (caught.value.param, caught.value.body["message"]) == (param, message)
