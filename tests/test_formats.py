"""Reading and normalising user training data (tunelab.formats)."""

from __future__ import annotations

import json
import re

import pandas as pd
import pytest

from tunelab.data.formats import detect_format, FORMATS, load_examples, normalise
from tunelab.data.readers import read_records
from tunelab.errors import DataError

ALPACA = {"instruction": "Add", "input": "2 and 3", "output": "5"}
CHAT = {"messages": [{"role": "system", "content": "Be brief."},
                     {"role": "user", "content": "Hi"},
                     {"role": "assistant", "content": "Hello"}]}
SHAREGPT = {"conversations": [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hello"}]}
PROMPT_COMPLETION = {"prompt": "Hi", "completion": "Hello"}
TEXT = {"text": "Once upon a time."}


def write_jsonl(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def load_error(path, fmt="auto") -> str:
    with pytest.raises(DataError) as caught:
        load_examples(path, fmt)
    message = str(caught.value)
    assert "\n" not in message
    return message


def record_error(tmp_path, record, fmt="auto") -> str:
    """The error for a single bad record, written on line 2 after a good one."""
    path = write_jsonl(tmp_path / "data.jsonl", [TEXT, record])
    message = load_error(path, fmt)
    prefix = f"{path}:2: "
    assert message.startswith(prefix)
    return message[len(prefix):]


# --- formats ------------------------------------------------------------------

def test_each_format_normalises_from_jsonl(tmp_path):
    path = write_jsonl(tmp_path / "data.jsonl",
                       [ALPACA, CHAT, SHAREGPT, PROMPT_COMPLETION, {**TEXT, "task": "stories"}])
    examples = load_examples(path)
    assert examples == [
        {"messages": [{"role": "user", "content": "Add\n\n2 and 3"},
                      {"role": "assistant", "content": "5"}],
         "task": None, "source": f"{path}:1"},
        {"messages": CHAT["messages"], "task": None, "source": f"{path}:2"},
        {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}],
         "task": None, "source": f"{path}:3"},
        {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}],
         "task": None, "source": f"{path}:4"},
        {"text": "Once upon a time.", "task": "stories", "source": f"{path}:5"},
    ]


def test_alpaca_empty_input_and_system():
    example = normalise({"instruction": "Greet", "input": "  ", "output": "Hi", "system": "Be kind.",
                         "task": "greet", "extra": 1}, "alpaca", "f.jsonl:7")
    assert example == {"messages": [{"role": "system", "content": "Be kind."},
                                    {"role": "user", "content": "Greet"},
                                    {"role": "assistant", "content": "Hi"}],
                       "task": "greet", "source": "f.jsonl:7"}


@pytest.mark.parametrize("speaker, role", [("system", "system"), ("human", "user"), ("user", "user"),
                                           ("gpt", "assistant"), ("assistant", "assistant"),
                                           ("bot", "assistant")])
def test_sharegpt_role_names(speaker, role):
    turns = [{"from": speaker, "value": "x"}, {"from": "human", "value": "Hi"}, {"from": "bot", "value": "Yo"}]
    example = normalise({"conversations": turns}, "sharegpt", "f:1")
    assert example["messages"][0]["role"] == role


@pytest.mark.parametrize("record, fmt", [(ALPACA, "alpaca"), (CHAT, "chat"), (SHAREGPT, "sharegpt"),
                                         (PROMPT_COMPLETION, "prompt_completion"), (TEXT, "text"),
                                         ({"instruction": "x"}, "alpaca"), ({"completion": "x"}, "prompt_completion")])
def test_detect_format(record, fmt):
    assert detect_format(record) == fmt
    assert fmt in FORMATS


def test_detect_format_fails_naming_keys():
    with pytest.raises(ValueError, match=re.escape("cannot tell the format: expected keys 'messages', ")) as caught:
        detect_format({"question": "q", "answer": "a"})
    assert str(caught.value).endswith("got 'question', 'answer'")


def test_explicit_format_overrides_detection(tmp_path):
    # Both keys present: auto picks chat (messages first), explicit text wins.
    path = write_jsonl(tmp_path / "data.jsonl", [{**CHAT, "text": "flat"}])
    assert "messages" in load_examples(path)[0]
    assert load_examples(path, "text")[0]["text"] == "flat"


def test_explicit_format_is_enforced(tmp_path):
    path = write_jsonl(tmp_path / "data.jsonl", [ALPACA, PROMPT_COMPLETION])
    assert load_error(path, "alpaca") == f"{path}:2: missing field 'instruction'"
    assert load_error(path, "chat") == f"{path}:1: missing field 'messages'"


def test_unknown_format_name():
    with pytest.raises(ValueError, match=r"unknown format 'yaml' \(use auto, alpaca, chat"):
        normalise(TEXT, "yaml", "f:1")


# --- record errors ---------------------------------------------------------------

@pytest.mark.parametrize("record, reason", [
    ({"instruction": "x", "input": ""}, "missing field 'output'"),
    ({"instruction": "x", "output": " \n"}, "empty field 'output'"),
    ({"instruction": "", "output": "y"}, "empty field 'instruction'"),
    ({"instruction": "x", "output": 5}, "field 'output' must be a str, got int"),
    ({"instruction": "x", "input": None, "output": "y", "system": 3}, "field 'system' must be a str, got int"),
    ({"prompt": "x"}, "missing field 'completion'"),
    ({"text": "   "}, "empty field 'text'"),
    ({"text": None}, "field 'text' must be a str, got null"),
    ({"text": "x", "task": ["a"]}, "field 'task' must be a str, got list"),
    ({"messages": "hi"}, "field 'messages' must be a list, got str"),
    ({"messages": []}, "empty field 'messages'"),
    ({"messages": [{"role": "user", "content": "a"}, {"role": "robot", "content": "b"}]},
     "unknown role 'robot' in message 2 (use system, user, assistant, tool)"),
    ({"messages": [{"role": "human", "content": "a"}]},
     "unknown role 'human' in message 1 (use system, user, assistant, tool)"),
    ({"messages": [{"role": "user", "content": "a"}, {"role": "assistant"}]},
     "missing field 'content' in message 2"),
    ({"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": " "}]},
     "empty field 'content' in message 2"),
    ({"messages": [{"role": "user", "content": "a"}, {"content": "b"}]}, "missing field 'role' in message 2"),
    ({"messages": [{"role": "user", "content": "a"}, "b"]}, "message 2 must be an object, got str"),
    ({"messages": [{"role": "assistant", "content": "a"}, {"role": "user", "content": "b"}]},
     "conversation must end with an assistant message"),
    ({"messages": [{"role": "system", "content": "a"}, {"role": "assistant", "content": "b"}]},
     "conversation has no user message"),
    ({"conversations": [{"from": "human", "value": "a"}, {"from": "robot", "value": "b"}]},
     "unknown role 'robot' in message 2 (use system, human, user, gpt, assistant, bot, "
     "function_call, observation)"),
    ({"conversations": [{"from": "human", "value": "a"}, {"from": "gpt"}]}, "missing field 'value' in message 2"),
    ({"conversations": [{"from": "human", "value": "a"}]}, "conversation must end with an assistant message"),
    ({"question": "q"}, "cannot tell the format: expected keys 'messages', 'conversations', "
                        "'instruction'+'output', 'prompt'+'completion' or 'text'; got 'question'"),
])
def test_record_errors(tmp_path, record, reason):
    assert record_error(tmp_path, record) == reason


# --- loss flags on the messages that never carry loss (issue 29) -------------------

def v1_message(role, text, loss_weight):
    """A message as LLaMA-Factory's v1 data writes it (v1_sft_demo, v1_dpo_demo)."""
    return {"role": role, "content": [{"type": "text", "value": text}], "loss_weight": loss_weight}


def test_llama_factory_v1_sft_record_reads_with_zero_weights_on_system_and_user():
    record = {"messages": [v1_message("system", "Be brief.", 0.0),
                           v1_message("user", "Who are you?", 0.0),
                           v1_message("assistant", "An AI assistant.", 1.0),
                           v1_message("user", "Sure?", 0.0),
                           v1_message("assistant", "Yes.", 0.0),
                           v1_message("user", "Really?", 0.0),
                           v1_message("assistant", "Really.", 1.0)]}
    assert normalise(record, "auto", "v1_sft_demo.jsonl:1")["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Who are you?"},
        {"role": "assistant", "content": "An AI assistant."},
        {"role": "user", "content": "Sure?"},
        {"role": "assistant", "content": "Yes.", "train": False},
        {"role": "user", "content": "Really?"},
        {"role": "assistant", "content": "Really."}]


@pytest.mark.parametrize("flag", [{"train": False}, {"loss_weight": 0}, {"weight": 0.0}])
def test_opt_out_flag_on_user_system_and_tool_messages_is_accepted_and_dropped(flag):
    record = {"tools": [{"name": "add", "parameters": {"type": "object"}}], "messages": [
        {"role": "system", "content": "Be brief.", **flag},
        {"role": "user", "content": "2+2?", **flag},
        {"role": "assistant", "content": "", "tool_calls": [{"name": "add", "arguments": {}}]},
        {"role": "tool", "content": "4", **flag},
        {"role": "assistant", "content": "4"}]}
    messages = normalise(record, "chat", "f:1")["messages"]
    assert [m["role"] for m in messages] == ["system", "user", "assistant", "tool", "assistant"]
    assert not any("train" in m or "loss_weight" in m or "weight" in m for m in messages)


@pytest.mark.parametrize("record", [
    {"messages": [{"role": "user", "content": "a", "loss_weight": 1.0},
                  {"role": "assistant", "content": "b"}]},
    {"messages": [{"role": "user", "content": "a", "train": True},
                  {"role": "assistant", "content": "b"}]},
    {"conversations": [{"from": "human", "value": "a", "weight": 1},
                       {"from": "gpt", "value": "b"}]},
])
def test_a_loss_flag_asking_for_loss_on_a_user_message_is_refused(tmp_path, record):
    assert record_error(tmp_path, record) == (
        "only assistant messages carry loss; drop the loss flag in message 1")


# --- files ------------------------------------------------------------------------

def test_jsonl_blank_lines_keep_true_line_numbers(tmp_path):
    path = tmp_path / "data.jsonl"
    path.write_text("\n" + json.dumps(TEXT) + "\n  \n\n" + json.dumps(ALPACA) + "\n\n", encoding="utf-8")
    assert [line for line, _ in read_records(path)] == [2, 5]
    assert [e["source"] for e in load_examples(path)] == [f"{path}:2", f"{path}:5"]


def test_jsonl_invalid_json_names_line(tmp_path):
    path = tmp_path / "data.jsonl"
    path.write_text(json.dumps(TEXT) + "\n\n{\"text\": oops}\n", encoding="utf-8")
    assert load_error(path) == f"{path}:3: invalid JSON: Expecting value"


def test_jsonl_not_an_object(tmp_path):
    path = tmp_path / "data.jsonl"
    path.write_text(json.dumps(TEXT) + "\n[1, 2]\n", encoding="utf-8")
    assert load_error(path) == f"{path}:2: not a JSON object (got list)"


def test_json_array_uses_real_line_numbers(tmp_path):
    path = tmp_path / "data.json"
    path.write_text(json.dumps([TEXT, {**ALPACA, "task": "math"}, CHAT], indent=2), encoding="utf-8")
    lines = path.read_text().split("\n")
    starts = [number for number, row in enumerate(lines, start=1) if row == "  {"]
    examples = load_examples(path)
    assert [e["source"] for e in examples] == [f"{path}:{line}" for line in starts]
    assert examples[1]["task"] == "math" and examples[2]["messages"] == CHAT["messages"]


def test_json_compact_array_and_errors(tmp_path):
    path = tmp_path / "data.json"
    path.write_text("[" + json.dumps(TEXT) + ",\n " + json.dumps(TEXT) + "]", encoding="utf-8")
    assert [line for line, _ in read_records(path)] == [1, 2]
    # The json module reports a missing comma where the next element starts.
    path.write_text('[\n  {"text": "a"},\n  {"text": "b"}\n  {"text": "c"}\n]', encoding="utf-8")
    assert load_error(path) == f"{path}:4: invalid JSON: Expecting ',' delimiter"
    path.write_text('\n{"text": "a"}', encoding="utf-8")
    assert load_error(path) == f"{path}:2: expected a JSON array of objects, got dict"
    path.write_text('[\n  {"text": "a"},\n  "b"\n]', encoding="utf-8")
    assert load_error(path) == f"{path}:3: not a JSON object (got str)"
    path.write_text('[\n  {"text": "a"},\n  {"text": ""}\n]', encoding="utf-8")
    assert load_error(path) == f"{path}:3: empty field 'text'"
    path.write_text("[]", encoding="utf-8")
    assert load_error(path) == f"{path}: no records"


def test_csv_rows_and_line_numbers(tmp_path):
    path = tmp_path / "data.csv"
    # Row 2 has a quoted cell spanning two lines; the blank line is skipped.
    path.write_text('instruction,input,output,task\n'
                    'Add,2 and 3,5,math\n'
                    '"Say\nhi",,Hi,\n'
                    '\n'
                    'Count,,,\n', encoding="utf-8")
    assert [line for line, _ in read_records(path)] == [2, 3, 6]
    first, second = (normalise(record, "alpaca", f"{path}:{line}") for line, record in read_records(path)[:2])
    assert first["messages"][0]["content"] == "Add\n\n2 and 3" and first["task"] == "math"
    assert second == {"messages": [{"role": "user", "content": "Say\nhi"},
                                   {"role": "assistant", "content": "Hi"}],
                      "task": None, "source": f"{path}:3"}
    # Empty cells are missing keys, so the error says "missing", not "empty".
    assert load_error(path) == f"{path}:6: missing field 'output'"


def test_csv_errors(tmp_path):
    path = tmp_path / "data.csv"
    path.write_text("text,task\nhello,greet\nhi,a,b\n", encoding="utf-8")
    assert load_error(path) == f"{path}:3: row has 3 cells, the header has 2"
    path.write_text("text,text\nhello,hi\n", encoding="utf-8")
    assert load_error(path) == f"{path}:1: duplicate column 'text' in header"
    path.write_text("text,task\n", encoding="utf-8")
    assert load_error(path) == f"{path}: no records"


def test_csv_with_byte_order_mark(tmp_path):
    path = tmp_path / "data.csv"
    path.write_bytes(b"\xef\xbb\xbftext\nhello\n")
    assert load_examples(path) == [{"text": "hello", "task": None, "source": f"{path}:2"}]


def test_parquet_rows(tmp_path):
    path = tmp_path / "data.parquet"
    pd.DataFrame({"prompt": ["Hi", "Bye"], "completion": ["Hello", None],
                  "task": ["greet", None]}).to_parquet(path)
    records = read_records(path)
    assert records == [(1, {"prompt": "Hi", "completion": "Hello", "task": "greet"}), (2, {"prompt": "Bye"})]
    assert load_error(path) == f"{path}:2: missing field 'completion'"


def test_parquet_nested_chat(tmp_path):
    path = tmp_path / "data.parquet"
    pd.DataFrame({"messages": [CHAT["messages"]]}).to_parquet(path)
    assert load_examples(path) == [{"messages": CHAT["messages"], "task": None, "source": f"{path}:1"}]


def test_parquet_invalid_and_empty(tmp_path):
    path = tmp_path / "data.parquet"
    path.write_bytes(b"not parquet at all")
    assert load_error(path).startswith(f"{path}: not a valid Parquet file: ")
    path.write_bytes(b"")
    assert load_error(path) == f"{path}: empty file"
    pd.DataFrame({"text": pd.Series([], dtype=str)}).to_parquet(path)
    assert load_error(path) == f"{path}: no records"


def test_not_utf8_names_line(tmp_path):
    for suffix in (".jsonl", ".json", ".csv"):
        path = tmp_path / f"data{suffix}"
        path.write_bytes(b'[{"text": "a"},\n{"text": "b"},\n{"text": "caf\xe9"}]\n')
        assert load_error(path) == f"{path}:3: not valid UTF-8"


@pytest.mark.parametrize("content", [b"", b"\n  \n"])
@pytest.mark.parametrize("suffix", [".jsonl", ".json", ".csv"])
def test_empty_file(tmp_path, content, suffix):
    path = tmp_path / f"data{suffix}"
    path.write_bytes(content)
    assert load_error(path) == f"{path}: empty file"


def test_unsupported_extension(tmp_path):
    path = tmp_path / "data.xyz"
    path.write_text("text\n")
    assert load_error(path) == (f"{path}: unsupported file type '.xyz' (use .jsonl, .json, .csv, "
                                f".parquet, .jsonl.gz, .json.gz, .txt, .md)")
    path = tmp_path / "data"
    path.write_text("text\n")
    assert load_error(path) == (f"{path}: unsupported file type (no extension) (use .jsonl, .json, "
                                f".csv, .parquet, .jsonl.gz, .json.gz, .txt, .md)")


def test_input_files_are_not_modified(tmp_path):
    paths = [write_jsonl(tmp_path / "data.jsonl", [ALPACA, CHAT]), tmp_path / "data.json",
             tmp_path / "data.csv", tmp_path / "data.parquet"]
    paths[1].write_text(json.dumps([SHAREGPT]), encoding="utf-8")
    paths[2].write_bytes(b"\xef\xbb\xbfprompt,completion\r\nHi,Hello\r\n")
    pd.DataFrame([TEXT]).to_parquet(paths[3])
    before = {path: (path.read_bytes(), path.stat().st_mtime_ns) for path in paths}
    for path in paths:
        load_examples(path)
    assert {path: (path.read_bytes(), path.stat().st_mtime_ns) for path in paths} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in paths)
