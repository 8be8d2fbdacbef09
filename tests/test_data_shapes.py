"""Data as people bring it, file to loss mask: each new shape is written here as a user
would write it, read through prepare.load_files (what the prepare stage runs) and encoded
with the real SmolLM2 tokenizer; every test names the exact text that carries the loss."""

from __future__ import annotations

import gzip
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tunelab.config import params
from tunelab.data import columns, encoding, formats, prepare, readers, validation
from tunelab.errors import ParamsError
from conftest import stage_args

REPO = Path(__file__).resolve().parents[1]

SYSTEM = "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"


def loss_spans(tokenizer, encoded) -> list[str]:
    """The decoded runs of consecutive loss-carrying tokens."""
    spans, run = [], []
    for token, label in [*zip(encoded.input_ids, encoded.labels), (None, encoding.IGNORE_INDEX)]:
        if label != encoding.IGNORE_INDEX:
            run.append(token)
        elif run:
            spans.append(tokenizer.decode(run))
            run = []
    return spans


def load_one(path, **kwargs) -> list[dict]:
    loaded = prepare.load_files([path], **kwargs)
    assert loaded.errors == []
    return loaded.examples


MULTI_TURN = {"messages": [
    {"role": "user", "content": "Capital of France?"},
    {"role": "assistant", "content": "Paris."},
    {"role": "user", "content": "And of Italy?"},
    {"role": "assistant", "content": "Rome, I think.", "train": False},
    {"role": "user", "content": "Sure?"},
    {"role": "assistant", "content": "Yes: Rome."}]}


def test_multi_turn_trains_every_assistant_turn_but_the_opted_out_one(tmp_path, write_jsonl,
                                                                     tokenizer):
    [example] = load_one(write_jsonl(tmp_path / "chat.jsonl", [MULTI_TURN]))
    assert example["messages"][3] == {"role": "assistant", "content": "Rome, I think.",
                                      "train": False}
    encoded = encoding.encode(tokenizer, example, 256)
    assert loss_spans(tokenizer, encoded) == ["Paris.<|im_end|>\n", "Yes: Rome.<|im_end|>\n"]
    assert encoded.trained_turns == 2
    # train_on=last: the final answer only, as before this option existed
    last = encoding.encode(tokenizer, example, 256, train_on="last")
    assert loss_spans(tokenizer, last) == ["Yes: Rome.<|im_end|>\n"]


@pytest.mark.parametrize("flag", [{"loss_weight": 0}, {"weight": 0}, {"train": False}])
def test_sharegpt_opt_out_spellings(tmp_path, write_jsonl, tokenizer, flag):
    record = {"conversations": [
        {"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hello!", **flag},
        {"from": "human", "value": "Bye"}, {"from": "gpt", "value": "Goodbye.", "loss_weight": 1}]}
    [example] = load_one(write_jsonl(tmp_path / "sg.jsonl", [record]))
    assert loss_spans(tokenizer, encoding.encode(tokenizer, example, 256)) == ["Goodbye.<|im_end|>\n"]


def test_single_turn_labels_are_the_same_under_both_settings(tokenizer):
    example = {"messages": [{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "4"}]}
    every = encoding.encode(tokenizer, example, 256, "all_assistant")
    last = encoding.encode(tokenizer, example, 256, "last")
    assert every == last
    assert loss_spans(tokenizer, every) == ["4<|im_end|>\n"]


def test_preview_shows_the_multi_turn_example(tokenizer):
    single = {"messages": [{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "4"}],
              "source": "a.jsonl:1"}
    result = validation.check_examples([single, {**MULTI_TURN, "source": "a.jsonl:2"}], tokenizer, 256)
    assert result.ok
    assert result.preview == (
        SYSTEM + "<|im_start|>user\nCapital of France?<|im_end|>\n<|im_start|>assistant\n"
        "[[Paris.<|im_end|>\n]]<|im_start|>user\nAnd of Italy?<|im_end|>\n<|im_start|>assistant\n"
        "Rome, I think.<|im_end|>\n<|im_start|>user\nSure?<|im_end|>\n<|im_start|>assistant\n"
        "[[Yes: Rome.<|im_end|>\n]]")


def test_content_parts_are_joined(tmp_path, write_jsonl, tokenizer):
    record = {"messages": [
        {"role": "user", "content": [{"type": "text", "text": "Translate: "},
                                     {"type": "text", "text": "chat"}]},
        {"role": "assistant", "content": [{"type": "text", "value": "cat"}]}]}
    [example] = load_one(write_jsonl(tmp_path / "parts.jsonl", [record]))
    assert [m["content"] for m in example["messages"]] == ["Translate: chat", "cat"]
    assert loss_spans(tokenizer, encoding.encode(tokenizer, example, 256)) == ["cat<|im_end|>\n"]


def test_txt_is_one_document_and_md_splits_on_blank_lines(tmp_path, tokenizer):
    (tmp_path / "notes.txt").write_text("\n\nFirst line.\nSecond line.\n\nThird.\n", encoding="utf-8")
    [whole] = load_one(tmp_path / "notes.txt")
    assert (whole["text"], whole["source"]) == ("First line.\nSecond line.\n\nThird.",
                                                f"{tmp_path}/notes.txt:3")
    # A text example carries loss on every token, and EOS so the model learns to stop.
    assert loss_spans(tokenizer, encoding.encode(tokenizer, whole, 256)) == [
        "First line.\nSecond line.\n\nThird.<|im_end|>"]

    (tmp_path / "guide.md").write_text("# Setup\nRun it.\n\n\n## Use\nCall it.\n", encoding="utf-8")
    blocks = load_one(tmp_path / "guide.md", text_split="blank_lines")
    assert [(b["text"], b["source"].rsplit(":", 1)[1]) for b in blocks] == [
        ("# Setup\nRun it.", "1"), ("## Use\nCall it.", "5")]


def test_long_text_becomes_windows_with_the_overlap_as_context(tokenizer):
    text = " ".join(f"w{i}" for i in range(40))
    ids = tokenizer(text, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    assert len(ids) == 111
    rows = encoding.windows(tokenizer, {"text": text}, max_length=32, stride=24)
    assert [(len(r.input_ids), r.loss_tokens) for r in rows] == [(32, 32), (32, 24), (32, 24), (32, 24),
                                                             (15, 7)]
    # every token carries loss exactly once, in order; the windows cover the whole document
    trained = [t for r in rows for t, label in zip(r.input_ids, r.labels)
               if label != encoding.IGNORE_INDEX]
    assert trained == ids
    assert rows[1].input_ids[:8] == ids[24:32] and rows[1].labels[:8] == [encoding.IGNORE_INDEX] * 8
    assert [r.ends_with_eos for r in rows] == [False, False, False, False, True]
    # stride 0: back to back
    assert [len(r.input_ids) for r in encoding.windows(tokenizer, {"text": text}, 32)] == [32, 32, 32, 15]
    # a chat example stays one row, cut at max_length
    [chat] = encoding.windows(tokenizer, MULTI_TURN, 32)
    assert (len(chat.input_ids), chat.truncated) == (32, True)


def test_windows_of_a_document_stay_in_one_split(tmp_path, tokenizer):
    for i in range(30):
        (tmp_path / f"doc{i:02}.txt").write_text(" ".join(f"d{i}w{j}" for j in range(60)))
    examples = prepare.load_files(sorted(tmp_path.glob("*.txt"))).examples
    parts = prepare.split(examples, 0.2, 0.2, seed=1)
    sides = {e["source"]: name for name, split in parts.items() for e in split}
    assert len(sides) == 30  # the split is by document, before any window exists
    train_rows = [r for e in parts["train"] for r in encoding.windows(tokenizer, e, 64)]
    assert len(train_rows) > len(parts["train"])  # each document became several windows


def test_validation_counts_windows_not_truncation(tokenizer):
    text = {"text": " ".join(f"w{i}" for i in range(40)), "source": "t.txt:1"}
    result = validation.check_examples([text], tokenizer, max_length=32)
    assert (result.ok, result.truncated, result.windows, result.warnings) == (True, 0, 4, [])


def test_gzip_jsonl_and_json(tmp_path, tokenizer):
    rows = [{"instruction": "Say hi", "output": "hi"}, {"instruction": "Say bye", "output": "bye"}]
    (tmp_path / "a.jsonl.gz").write_bytes(gzip.compress(
        "".join(json.dumps(r) + "\n" for r in rows).encode()))
    (tmp_path / "b.json.gz").write_bytes(gzip.compress(json.dumps(rows).encode()))
    for name in ("a.jsonl.gz", "b.json.gz"):
        examples = load_one(tmp_path / name)
        assert [e["source"].rsplit(":", 1)[1] for e in examples] == (
            ["1", "2"] if name.startswith("a") else ["1", "1"])
        assert loss_spans(tokenizer, encoding.encode(tokenizer, examples[1], 256)) == ["bye<|im_end|>\n"]
    assert readers.is_data_file(tmp_path / "A.JSONL.GZ")
    assert not readers.is_data_file(tmp_path / "a.gz")


def test_column_map_record_level(tmp_path, write_jsonl, tokenizer):
    path = write_jsonl(tmp_path / "qa.jsonl", [{"question": "Why?", "answer": "Because.",
                                                "output": "an unrelated column"}])
    p = params.PrepareParams(columns={"question": "instruction", "answer": "output"})
    [example] = load_one(path, mapping_for=columns.from_params(p, tmp_path))
    assert example["messages"] == [{"role": "user", "content": "Why?"},
                                   {"role": "assistant", "content": "Because."}]
    assert loss_spans(tokenizer, encoding.encode(tokenizer, example, 256)) == ["Because.<|im_end|>\n"]


def test_column_and_role_map_inside_messages_and_per_file(tmp_path, write_jsonl, tokenizer):
    record = {"messages": [{"speaker": "customer", "text": "Refund?"},
                           {"speaker": "agent", "text": "Done."}]}
    write_jsonl(tmp_path / "support/calls.jsonl", [record])
    write_jsonl(tmp_path / "plain.jsonl", [{"query": "Q", "response": "R"}])
    p = params.PrepareParams(
        columns={"query": "prompt", "response": "completion"},
        per_file={"support/*.jsonl": {"columns": {"speaker": "role", "text": "content"},
                                      "roles": {"customer": "user", "agent": "assistant"}}})
    loaded = prepare.load_files(sorted(tmp_path.rglob("*.jsonl")),
                                mapping_for=columns.from_params(p, tmp_path))
    assert loaded.errors == []
    by_file = {e["source"].split(":")[0].rsplit("/", 1)[1]: e for e in loaded.examples}
    assert by_file["calls.jsonl"]["messages"] == [{"role": "user", "content": "Refund?"},
                                                 {"role": "assistant", "content": "Done."}]
    assert loss_spans(tokenizer, encoding.encode(tokenizer, by_file["calls.jsonl"], 256)) == [
        "Done.<|im_end|>\n"]
    assert by_file["plain.jsonl"]["messages"][1] == {"role": "assistant", "content": "R"}
    assert json.loads((tmp_path / "support/calls.jsonl").read_text()) == record  # raw untouched


def test_without_a_map_the_other_names_are_refused(tmp_path, write_jsonl):
    path = write_jsonl(tmp_path / "qa.jsonl", [{"question": "Why?", "answer": "Because."}])
    assert prepare.load_files([path]).errors == [
        f"{path}:1: cannot tell the format: expected keys 'messages', 'conversations', "
        "'instruction'+'output', 'prompt'+'completion' or 'text'; got 'question', 'answer'"]


@pytest.mark.parametrize("values, message", [
    ({"columns": {"question": "instrucion"}},
     "prepare.columns.question: unknown tunelab field 'instrucion' (did you mean 'instruction'?)"),
    ({"columns": {"q": "prompt", "question": "prompt"}}, "prepare.columns: two fields map to 'prompt'"),
    ({"roles": {"customer": "usr"}}, "prepare.roles.customer: unknown role 'usr' (did you mean 'user'?)"),
    ({"per_file": {"a/*.csv": {"colums": {}}}},
     "prepare.per_file.a/*.csv.colums: unknown key (did you mean 'columns'?)"),
])
def test_bad_maps_name_their_params_key(values, message):
    with pytest.raises(ParamsError) as raised:
        params.parse(params.PrepareParams, values, "prepare", "params.yaml")
    assert str(raised.value).startswith(f"params.yaml: {message}"), str(raised.value)


def test_every_mappable_name_is_read_by_the_formats():
    readable_roles = set(formats.ROLES) | set(formats.SHAREGPT_ROLES)
    assert set(params.ROLE_NAMES) <= readable_roles, set(params.ROLE_NAMES) - readable_roles


def test_a_multi_turn_file_through_prepare_and_validate_shows_every_answer_in_the_preview(
        tmp_path, tokenizer_dir, write_jsonl):
    params_file = yaml.safe_load((REPO / "params.yaml").read_text())
    params_file["prepare"]["group_by"] = ""  # these records have no `template`
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params_file, sort_keys=False))
    shutil.copytree(tokenizer_dir, tmp_path / "models/base")
    rows = [{"messages": [{"role": "user", "content": f"Count to {n}."},
                          {"role": "assistant", "content": " ".join(map(str, range(1, n + 1)))},
                          {"role": "user", "content": "Again, backwards."},
                          {"role": "assistant", "content": " ".join(map(str, range(n, 0, -1)))}]}
            for n in range(1, 31)]
    write_jsonl(tmp_path / "data/raw/counting.jsonl", rows)
    for stage in ("prepare", "validate"):
        run = subprocess.run([sys.executable, str(REPO / f"stages/{stage}.py"),
                              *stage_args(stage, tmp_path)], cwd=tmp_path, capture_output=True,
                             text=True, timeout=300)
        assert run.returncode == 0, run.stderr
    preview = (tmp_path / "metrics/preview.txt").read_text().split("\n\n", 1)[1]  # past the header
    # both answers of a conversation carry loss; the questions do not
    assert preview.count("[[") == 2 and preview.count("]]") == 2
    answers = re.findall(r"\[\[(.*?)<\|im_end\|>\n\]\]", preview, re.DOTALL)
    n = len(answers[0].split())
    assert answers == [" ".join(map(str, range(1, n + 1))), " ".join(map(str, range(n, 0, -1)))]


# LLaMA-Factory's glaive_toolcall demo shape: `tools` as a JSON string, ShareGPT turns with a
# function_call and its observation. Issue 29: one record of the demo's 300 has a prompt longer
# than max_length, and that one record stopped the whole run.
GLAIVE_TOOLS = json.dumps([{"name": "get_weather", "description": "Weather of a city",
                            "parameters": {"type": "object",
                                           "properties": {"city": {"type": "string"}}}}])


def glaive_record(question: str, city: str) -> dict:
    return {"tools": GLAIVE_TOOLS, "conversations": [
        {"from": "human", "value": question},
        {"from": "function_call",
         "value": json.dumps({"name": "get_weather", "arguments": {"city": city}})},
        {"from": "observation", "value": json.dumps({"temperature": len(city)})},
        {"from": "gpt", "value": f"It is {len(city)} degrees in {city}."}]}


def test_an_over_long_record_is_left_out_of_training_not_the_whole_file(tmp_path, tokenizer_dir,
                                                                         write_jsonl):
    params_file = yaml.safe_load((REPO / "params.yaml").read_text())
    params_file["prepare"]["group_by"] = ""  # these records have no `template`
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params_file, sort_keys=False))
    shutil.copytree(tokenizer_dir, tmp_path / "models/base")
    rows = [glaive_record(f"Weather in city number {n}?", f"City{n}") for n in range(40)]
    rows.insert(6, glaive_record("Summarise, then check: " + "the long forecast says " * 60, "Oslo"))
    raw = write_jsonl(tmp_path / "data/raw/glaive_toolcall_en_demo.jsonl", rows)
    before = raw.read_bytes()

    def run(stage):
        return subprocess.run([sys.executable, str(REPO / f"stages/{stage}.py"),
                               *stage_args(stage, tmp_path)], cwd=tmp_path, capture_output=True,
                              text=True, timeout=300)

    prepared, validated = run("prepare"), run("validate")
    assert (prepared.returncode, validated.returncode) == (0, 0), validated.stderr
    long_one = "data/raw/glaive_toolcall_en_demo.jsonl:7"
    sources = {name: [e["source"] for e in readers_jsonl(tmp_path / f"data/prepared/{name}.jsonl")]
               for name in ("train", "val", "test", "untrainable")}
    assert sources["untrainable"] == [long_one]  # in no split: train never sees it
    assert sorted(s for name in ("train", "val", "test") for s in sources[name]) == sorted(
        f"data/raw/glaive_toolcall_en_demo.jsonl:{line}" for line in range(1, 42) if line != 7)
    warning = (f"{long_one}: the prompt alone is 477 tokens, so no answer token survives "
               "train.max_length=256; left out of training (validate.untrainable=drop)")
    assert validated.stderr == f"validate: warning: {warning}\n"
    assert validated.stdout == ("validate: 40 examples OK, 0 truncated at max_length=256, 1 left "
                                "out of training (validate.untrainable=drop)\n")
    summary = json.loads((tmp_path / "metrics/validation.json").read_text())
    assert (summary["dropped_untrainable"], summary["dropped_untrainable_examples"],
            summary["examples_checked"], summary["warnings"]) == (1, [long_one], 41, [warning])
    assert raw.read_bytes() == before  # the user's data is never changed

    params_file["validate"]["untrainable"] = "fail"  # today's behaviour, on request
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params_file, sort_keys=False))
    failed = run("validate")
    assert failed.returncode == 1
    assert failed.stderr.splitlines()[-2:] == [
        f"{long_one}: the prompt alone is 477 tokens, so no answer token survives "
        "train.max_length=256 (raise train.max_length or shorten it)",
        "validate: error: 1 errors in the prepared data; fix the raw files and rerun"]

    params_file["train"]["max_length"] = 100  # below every prompt: nothing could train
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params_file, sort_keys=False))
    nothing = run("prepare")
    assert nothing.returncode == 1
    assert nothing.stderr.splitlines()[-1] == (
        "prepare: error: every example of the train, val and test splits leaves no answer token "
        f"within train.max_length=100 (the first: {long_one[:-1]}1); raise train.max_length "
        "(`tunelab analyze-data` shows the lengths)")
    # validate on the splits prepare wrote at 256 (as if it had not rerun) drops nothing
    # that train would still read
    params_file["validate"].update(untrainable="drop", max_dropped_ratio=1)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params_file, sort_keys=False))
    stale = run("validate")
    assert stale.returncode == 1
    assert stale.stderr.splitlines()[-1] == (
        f"validate: error: {long_one[:-1]}1: no answer token fits train.max_length=100, yet it is "
        "in a split of data/prepared: rerun the prepare stage")


def readers_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
