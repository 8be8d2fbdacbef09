"""Preference data for the align stage (tunelab.data.preferences) and the shipped sample
that data/generate_preferences.py writes."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from tunelab.config import params
from tunelab.data import columns, prepare
from tunelab.data.preferences import (check_lengths, load_file, load_preferences, normalise,
                                      split_preferences)
from tunelab.errors import DataError

REPO = Path(__file__).resolve().parents[1]
GENERATOR = REPO / "data" / "generate_preferences.py"
SHIPPED = REPO / "data" / "preferences" / "tickets_pref.jsonl"
MISTAKES = {"wrong_priority", "wrong_category", "wrong_sentiment", "missing_field", "prose",
            "invented_order_id"}


def user(text):
    return {"role": "user", "content": text}


def v1_message(role, text, loss_weight):
    """A message as LLaMA-Factory's v1 data writes it."""
    return {"role": role, "content": [{"type": "text", "value": text}], "loss_weight": loss_weight}


def assistant(text):
    return {"role": "assistant", "content": text}


SYSTEM = {"role": "system", "content": "Be brief."}
GOOD = {"prompt": "2+2?", "chosen": "4", "rejected": "5"}
GOOD_EXAMPLE = {"prompt": [user("2+2?")], "chosen": [assistant("4")], "rejected": [assistant("5")]}

# Each accepted shape, and what it normalises to (without its source).
SHAPES = [
    ("trl standard", GOOD, GOOD_EXAMPLE),
    ("trl conversational",
     {"prompt": [SYSTEM, user("2+2?")], "chosen": [assistant("4")], "rejected": [assistant("5")]},
     {"prompt": [SYSTEM, user("2+2?")], "chosen": [assistant("4")], "rejected": [assistant("5")]}),
    ("content parts and extra fields",
     {"prompt": [{"role": "user", "content": [{"type": "text", "text": "2+"},
                                              {"type": "text", "text": "2?"}]}],
      "chosen": "4", "rejected": [assistant("5")], "template": "sums/1", "id": 7},
     GOOD_EXAMPLE),
    ("trl implicit prompt",
     {"chosen": [SYSTEM, user("2+2?"), assistant("4")],
      "rejected": [SYSTEM, user("2+2?"), assistant("5")]},
     {"prompt": [SYSTEM, user("2+2?")], "chosen": [assistant("4")], "rejected": [assistant("5")]}),
    ("implicit prompt, multi-turn: the shared answer is prompt",
     {"chosen": [user("2+2?"), assistant("4"), user("And 3+3?"), assistant("6")],
      "rejected": [user("2+2?"), assistant("4"), user("And 3+3?"), assistant("Seven"),
                   assistant("Sorry, 6")]},
     {"prompt": [user("2+2?"), assistant("4"), user("And 3+3?")], "chosen": [assistant("6")],
      "rejected": [assistant("Seven"), assistant("Sorry, 6")]}),
    ("chosen_messages and rejected_messages",
     {"chosen_messages": [user("2+2?"), assistant("4")],
      "rejected_messages": [user("2+2?"), assistant("5")]},
     GOOD_EXAMPLE),
    ("llama-factory sharegpt",
     {"conversations": [{"from": "system", "value": "Be brief."}, {"from": "human", "value": "2+2?"}],
      "chosen": {"from": "gpt", "value": "4"}, "rejected": {"from": "gpt", "value": "5"}},
     {"prompt": [SYSTEM, user("2+2?")], "chosen": [assistant("4")], "rejected": [assistant("5")]}),
    ("sharegpt turns in trl fields",
     {"prompt": [{"from": "human", "value": "2+2?"}], "chosen": [{"from": "gpt", "value": "4"}],
      "rejected": [{"from": "bot", "value": "5"}]},
     GOOD_EXAMPLE),
    ("tool call in the answer",
     {"tools": [{"name": "add", "parameters": {"type": "object"}}], "prompt": "2+2?",
      "chosen": [{"role": "assistant", "content": "",
                  "tool_calls": [{"name": "add", "arguments": {"a": 2, "b": 2}}]},
                 {"role": "tool", "content": "4"}, assistant("4")],
      "rejected": "5"},
     {"prompt": [user("2+2?")],
      "chosen": [{"role": "assistant", "content": "",
                  "tool_calls": [{"type": "function",
                                  "function": {"name": "add", "arguments": {"a": 2, "b": 2}}}]},
                 {"role": "tool", "content": "4"}, assistant("4")],
      "rejected": [assistant("5")],
      "tools": [{"type": "function", "function": {"name": "add", "parameters": {"type": "object"}}}]}),
    ("kto, string prompt",
     {"prompt": "2+2?", "completion": "4", "label": True},
     {"prompt": [user("2+2?")], "completion": [assistant("4")], "label": True}),
    ("kto, messages prompt, message completion",
     {"messages": [SYSTEM, user("2+2?")], "completion": [assistant("5")], "label": False},
     {"prompt": [SYSTEM, user("2+2?")], "completion": [assistant("5")], "label": False}),
    # LLaMA-Factory's demo files (issue 29): v1_dpo_demo puts content parts and a loss weight
    # on every message; kto_en_demo's answer is the last of its messages.
    ("llama-factory v1 dpo, loss weights on every message",
     {"chosen_messages": [v1_message("user", "2+2?", 0.0), v1_message("assistant", "4", 1.0)],
      "rejected_messages": [v1_message("user", "2+2?", 0.0), v1_message("assistant", "5", 1.0)]},
     GOOD_EXAMPLE),
    ("llama-factory kto, the last message is the answer",
     {"messages": [{"content": "2+2?", "role": "user"}, {"content": "4", "role": "assistant"}],
      "label": True},
     {"prompt": [user("2+2?")], "completion": [assistant("4")], "label": True}),
    ("llama-factory kto, multi-turn",
     {"messages": [user("2+2?"), assistant("4"), user("And 3+3?"), assistant("7")],
      "label": False},
     {"prompt": [user("2+2?"), assistant("4"), user("And 3+3?")], "completion": [assistant("7")],
      "label": False}),
]


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


@pytest.mark.parametrize("record, expected", [(r, e) for _, r, e in SHAPES],
                         ids=[name for name, _, _ in SHAPES])
def test_each_shape_normalises_exactly(tmp_path, record, expected):
    path = write_jsonl(tmp_path / "prefs.jsonl", [record])
    loaded = load_preferences([path])
    assert loaded.errors == []
    assert loaded.examples == [{**expected, "source": f"{path}:1"}]
    assert loaded.files == {str(path): 1}


def test_format_override_reads_a_record_as_asked():
    record = {"prompt": "2+2?", "chosen": "4", "completion": "4", "label": True}
    # auto: "chosen" makes it a pair
    with pytest.raises(DataError, match=r"^f:1: missing field 'rejected'$"):
        normalise(record, "auto", "f:1")
    assert normalise(record, "kto", "f:1") == {"prompt": [user("2+2?")], "completion": [assistant("4")],
                                               "label": True, "source": "f:1"}
    with pytest.raises(DataError, match=r"^f:1: missing field 'chosen'$"):
        normalise({"prompt": "2+2?", "completion": "4", "label": True}, "paired", "f:1")
    with pytest.raises(ValueError, match=r"unknown preference format 'dpo' \(use auto, paired, kto\)"):
        normalise(GOOD, "dpo", "f:1")


# (record, the reason after "path:2: ")
ERRORS = [
    ({"prompt": "2+2?", "chosen": "4", "rejected": "4"}, "'chosen' and 'rejected' are identical"),
    ({"chosen_messages": [user("2+2?"), assistant("4")], "rejected_messages": [user("2+2?"), assistant("4")]},
     "'chosen_messages' and 'rejected_messages' are identical"),
    ({"prompt": "2+2?", "chosen": "  ", "rejected": "5"}, "empty field 'chosen'"),
    ({"prompt": "2+2?", "chosen": "4", "rejected": []}, "empty field 'rejected'"),
    ({"prompt": "2+2?", "chosen": [{"role": "assistant", "content": ""}], "rejected": "5"},
     "chosen: empty field 'content' in message 1"),
    ({"chosen": [user("2+2?"), assistant("4")], "rejected": [user("2+2?"), assistant("4"), assistant("5")]},
     "'chosen' has no messages after the prompt both sides share"),
    ({"chosen": [user("2+2?"), assistant("4")], "rejected": [user("3+3?"), assistant("6")]},
     "'chosen' and 'rejected' have different prompts: they part at message 1, before the "
     "assistant's answer"),
    ({"chosen_messages": [SYSTEM, user("2+2?"), assistant("4")],
      "rejected_messages": [{"role": "system", "content": "Be wrong."}, user("2+2?"), assistant("5")]},
     "'chosen_messages' and 'rejected_messages' have different prompts: they part at message 1, "
     "before the assistant's answer"),
    ({"chosen": [user("2+2?"), assistant("4"), user("3+3?"), assistant("6")],
      "rejected": [user("2+2?"), assistant("5"), user("3+3?"), assistant("6")]},
     "'chosen' and 'rejected' have different prompts: they part at message 2, before the "
     "assistant's answer"),
    ({"chosen": "2+2? 4", "rejected": "2+2? 5"},
     "field 'chosen' must be a list of messages (a whole conversation) when the record has no "
     "'prompt' or 'conversations', got str"),
    ({"prompt": "2+2?", "chosen": [user("4")], "rejected": "5"},
     "'chosen' must be the assistant's answer, but its message 1 has role 'user'"),
    ({"conversations": [{"from": "human", "value": "2+2?"}], "chosen": {"from": "gpt", "value": "4"},
      "rejected": {"from": "human", "value": "5"}},
     "'rejected' must be the assistant's answer, but its message 1 has role 'user'"),
    ({"prompt": "2+2?", "chosen": [assistant("4"), {"role": "tool", "content": "4"}], "rejected": "5"},
     "'chosen' must be the assistant's answer, but its message 2 has role 'tool'"),
    ({"prompt": [SYSTEM], "chosen": "4", "rejected": "5"}, "the prompt has no user message"),
    ({"prompt": "2+2?", "chosen": 4, "rejected": "5"},
     "field 'chosen' must be a string, a message or a list of messages, got int"),
    ({"prompt": "2+2?", "chosen": [{"role": "robot", "content": "4"}], "rejected": "5"},
     "chosen: unknown role 'robot' in message 1 (use system, user, assistant, tool)"),
    ({"prompt": [{"role": "user", "content": [{"type": "image", "image": "x.png"}]}], "chosen": "4",
      "rejected": "5"},
     "prompt: multimodal content is not supported ('image' part in message 1)"),
    ({"prompt": "2+2?", "chosen": [{"role": "assistant", "content": "",
                                    "tool_calls": [{"name": "add", "arguments": {}}]}], "rejected": "5"},
     "tool call 'add' in message 2 names no tool in 'tools' (the record has no 'tools')"),
    ({"prompt": "2+2?", "chosen": "4"}, "missing field 'rejected'"),
    ({"prompt": "2+2?", "chosen": "4", "rejectd": "5"}, "unknown field 'rejectd' (did you mean 'rejected'?)"),
    ({"chosn_messages": [], "template": "sums/1"},
     "unknown field 'chosn_messages' (did you mean 'chosen_messages'?)"),
    ({"question": "2+2?", "answer": "4"},
     "cannot tell the preference format: expected 'chosen'+'rejected' (with 'prompt' or "
     "'conversations', or as whole conversations), 'chosen_messages'+'rejected_messages' or "
     "'completion'+'label'; got 'question', 'answer'"),
    ({"prompt": "2+2?", "completion": "4", "label": "yes"}, "field 'label' must be true or false, got \"yes\""),
    ({"prompt": "2+2?", "completion": "4", "label": 1}, "field 'label' must be true or false, got 1"),
    ({"prompt": "2+2?", "completion": "4"}, "missing field 'label'"),
    ({"completion": "4", "label": True}, "missing field 'prompt' (or 'messages')"),
    ({"prompt": "2+2?", "completion": [user("4")], "label": True},
     "'completion' must be the assistant's answer, but its message 1 has role 'user'"),
    ({"messages": [user("2+2?"), assistant("4"), user("Sure?")], "label": True},
     "'messages' must end with the assistant's answer when the record has no 'completion'"),
    ({"chosen_messages": [v1_message("user", "2+2?", 1.0), v1_message("assistant", "4", 1.0)],
      "rejected_messages": [v1_message("user", "2+2?", 0.0), v1_message("assistant", "5", 1.0)]},
     "chosen_messages: only assistant messages carry loss; drop the loss flag in message 1"),
]


@pytest.mark.parametrize("record, reason", ERRORS, ids=[reason[:50] for _, reason in ERRORS])
def test_each_error_is_one_line_and_nothing_else_is_accepted(tmp_path, record, reason):
    good = {"prompt": "2+2?", "completion": "4", "label": True} if "label" in record else GOOD
    path = write_jsonl(tmp_path / "prefs.jsonl", [good, record])
    loaded = load_preferences([path])
    assert loaded.errors == [f"{path}:2: {reason}"]
    assert [example["source"] for example in loaded.examples] == [f"{path}:1"]


def test_errors_are_collected_over_the_whole_file(tmp_path):
    path = write_jsonl(tmp_path / "prefs.jsonl",
                       [GOOD, {"prompt": "2+2?", "chosen": "4", "rejected": "4"}, GOOD,
                        {"prompt": "2+2?", "chosen": "4"}])
    assert load_preferences([path]).errors == [f"{path}:2: 'chosen' and 'rejected' are identical",
                                                f"{path}:4: missing field 'rejected'"]
    with pytest.raises(DataError) as caught:
        load_file(path)
    assert str(caught.value) == f"{path}:2: 'chosen' and 'rejected' are identical (and 1 more bad records)"


def test_unreadable_files_are_errors_too(tmp_path):
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"prompt": "2+2?",\n', encoding="utf-8")
    good = write_jsonl(tmp_path / "good.jsonl", [GOOD])
    loaded = load_preferences([broken, good])
    assert len(loaded.errors) == 1 and loaded.errors[0].startswith(f"{broken}:1: invalid JSON")
    assert len(loaded.examples) == 1 and loaded.files == {str(good): 1}


def test_pairs_and_kto_examples_do_not_mix(tmp_path):
    path = write_jsonl(tmp_path / "prefs.jsonl", [GOOD, {"prompt": "2+2?", "completion": "4", "label": True}])
    assert load_preferences([path]).errors == [
        f"{path}:2: unpaired (KTO) examples mixed with chosen/rejected pairs; align them in "
        "separate runs (split the files)"]


def test_kto_labels_are_kept_as_booleans(tmp_path):
    path = write_jsonl(tmp_path / "kto.jsonl", [{"prompt": "2+2?", "completion": "4", "label": True},
                                                {"prompt": "2+2?", "completion": "5", "label": False}])
    assert [(e["completion"][0]["content"], e["label"]) for e in load_file(path)] == [("4", True), ("5", False)]


def test_gzip_and_csv_are_read_through_readers(tmp_path):
    gz_path = tmp_path / "prefs.jsonl.gz"
    gz_path.write_bytes(gzip.compress((json.dumps(GOOD) + "\n\n" + json.dumps(GOOD) + "\n").encode()))
    assert load_file(gz_path) == [{**GOOD_EXAMPLE, "source": f"{gz_path}:1"},
                                  {**GOOD_EXAMPLE, "source": f"{gz_path}:3"}]
    csv_path = tmp_path / "prefs.csv"
    csv_path.write_text('prompt,chosen,rejected\n"2+2?",4,5\n', encoding="utf-8")
    assert load_file(csv_path) == [{**GOOD_EXAMPLE, "source": f"{csv_path}:2"}]


@pytest.mark.parametrize("column_map, record, expected", [
    ({"question": "prompt", "good": "chosen", "bad": "rejected"},
     {"question": "2+2?", "good": "4", "bad": "5", "template": "sums/1"}, GOOD_EXAMPLE),
    ({"question": "prompt", "answer": "completion", "thumbs_up": "label"},
     {"question": "2+2?", "answer": "4", "thumbs_up": True, "template": "sums/1"},
     {"prompt": [user("2+2?")], "completion": [assistant("4")], "label": True}),
], ids=["paired", "kto"])
def test_column_maps_rename_fields_as_for_sft_data(tmp_path, column_map, record, expected):
    path = write_jsonl(tmp_path / "prefs.jsonl", [record])
    mapping_for = columns.from_params(params.PrepareParams(columns=column_map), tmp_path)
    loaded = load_preferences([path], group_by="template", mapping_for=mapping_for)
    assert loaded.errors == []
    assert loaded.examples == [{**expected, "source": f"{path}:1", "group": "sums/1"}]
    unmapped = load_preferences([path])
    assert unmapped.errors[0].startswith(f"{path}:1: cannot tell the preference format")


# --- lengths ------------------------------------------------------------------

LONG = "word " * 40  # 71 tokens as a SmolLM2 prompt, system message and generation prompt included


def test_check_lengths_flags_prompts_that_leave_no_answer(tokenizer):
    long_pair = normalise({"prompt": LONG, "chosen": "Yes.", "rejected": "No."}, "auto", "f:1")
    short_pair = normalise({"prompt": "Hi", "chosen": "Yes.", "rejected": "No."}, "auto", "f:2")
    long_kto = normalise({"prompt": LONG, "completion": "Yes.", "label": False}, "kto", "f:3")
    assert check_lengths([long_pair, short_pair, long_kto], tokenizer, 71) == [
        "f:1: the prompt takes 71 tokens: nothing of the answer fits in max_length 71",
        "f:3: the prompt takes 71 tokens: nothing of the answer fits in max_length 71"]
    # One token of the answer left is enough to learn from.
    assert check_lengths([long_pair, short_pair, long_kto], tokenizer, 72) == []


def test_check_lengths_counts_only_the_answer_not_the_prompts_assistant_turns(tokenizer):
    turns = [user(LONG), assistant("ok"), user("again")]
    pair = normalise({"chosen": [*turns, assistant("Yes")], "rejected": [*turns, assistant("No")]},
                     "auto", "f:1")
    assert check_lengths([pair], tokenizer, 84) == [
        "f:1: the prompt takes 84 tokens: nothing of the answer fits in max_length 84"]
    assert check_lengths([pair], tokenizer, 85) == []


# --- `tunelab validate-data` on preference files (issue 29) ---------------------------
# Records in the shapes of LLaMA-Factory's demo files, each file as the demo is (a JSON array).

DPO_EN_DEMO = [  # ShareGPT: the prompt's turns, then each side as one from/value turn
    {"conversations": [{"from": "human", "value": "2+2?"}],
     "chosen": {"from": "gpt", "value": "4"}, "rejected": {"from": "gpt", "value": "5"}},
    {"conversations": [{"from": "system", "value": "Be brief."}, {"from": "human", "value": "3+3?"}],
     "chosen": {"from": "gpt", "value": "6"}, "rejected": {"from": "gpt", "value": "Seven"}}]
V1_DPO_DEMO = [
    {"chosen_messages": [v1_message("user", "2+2?", 0.0), v1_message("assistant", "4", 1.0)],
     "rejected_messages": [v1_message("user", "2+2?", 0.0), v1_message("assistant", "5", 1.0)]}]
KTO_EN_DEMO = [  # messages whose last is the answer, and the thumbs up or down
    {"messages": [{"content": "2+2?", "role": "user"}, {"content": "4", "role": "assistant"}],
     "label": True},
    {"messages": [{"content": "3+3?", "role": "user"}, {"content": "7", "role": "assistant"}],
     "label": False},
    {"messages": [user("2+2?"), assistant("4"), user("Times 2?"), assistant("8")], "label": True}]
ALIGN_READER = "read as the align stage reads them"


@pytest.fixture
def run_validate_data(tmp_path, monkeypatch, capsys):
    """`tunelab validate-data ARGS` where no params.yaml is (the schema's defaults apply)."""
    from tunelab.cli import app as cli

    monkeypatch.chdir(tmp_path)

    def run(*args) -> tuple[int, str, str]:
        code = cli.main(["validate-data", *map(str, args)])
        out, err = capsys.readouterr()
        return code, out, err
    return run


def test_validate_data_reads_llama_factory_preference_files_as_the_align_stage(
        tmp_path, tokenizer_dir, run_validate_data):
    sft = write_jsonl(tmp_path / "sft.jsonl", [{"prompt": "2+2?", "completion": "4"}])
    found = {}
    for name, records in (("dpo_en_demo", DPO_EN_DEMO), ("v1_dpo_demo", V1_DPO_DEMO),
                          ("kto_en_demo", KTO_EN_DEMO)):
        path = tmp_path / f"{name}.json"
        path.write_text(json.dumps(records, indent=2), encoding="utf-8")
        found[name] = run_validate_data(path, sft, "--base", tokenizer_dir)
    sft_line = "OK: 1 examples in 1 files (0 longer than max_length=256)\n"
    fits = f"in 1 files ({ALIGN_READER}; answers fit max_length=512)\n"
    assert found == {
        "dpo_en_demo": (0, sft_line + f"OK: 2 preference pairs {fits}", ""),
        "v1_dpo_demo": (0, sft_line + f"OK: 1 preference pairs {fits}", ""),
        "kto_en_demo": (0, sft_line + f"OK: 3 KTO examples (2 up, 1 down) {fits}", "")}


def test_validate_data_names_a_preference_prompt_too_long_for_max_length(
        tmp_path, tokenizer_dir, run_validate_data):
    path = tmp_path / "dpo_en_demo.json"  # a record a line: the first is on line 2
    path.write_text("[\n" + ",\n".join(map(json.dumps, DPO_EN_DEMO)) + "\n]\n", encoding="utf-8")
    # "2+2?" is 34 prompt tokens with SmolLM2's default system message; "Be brief." + "3+3?" 21
    assert run_validate_data(path, "--base", tokenizer_dir, "--max-length", 30) == (
        1, "", f"{path}:2: the prompt takes 34 tokens: nothing of the answer fits in max_length 30\n"
               "1 errors in 1 files\n")


def test_validate_data_preferences_flag_reads_every_file_with_the_align_reader(
        tmp_path, run_validate_data):
    path = write_jsonl(tmp_path / "kto.jsonl", KTO_EN_DEMO[:2])
    note = "note: models/base not found; token checks skipped (run `dvc repro base`)\n"
    assert run_validate_data(path) == (0, f"OK: 2 KTO examples (1 up, 1 down) in 1 files "
                                          f"({ALIGN_READER})\n", note)
    # the first record decides a file's reader; --preferences reads all files so
    prompt_completion = write_jsonl(tmp_path / "pc.jsonl", [{"prompt": "2+2?", "completion": "4"}])
    assert run_validate_data(prompt_completion) == (
        0, "OK: 1 examples in 1 files (0 longer than max_length=256)\n", note)
    assert run_validate_data(prompt_completion, "--preferences") == (
        1, "", f"{note}{prompt_completion}:1: missing field 'label'\n1 errors in 1 files\n")


# --- split --------------------------------------------------------------------

def test_split_keeps_every_pair_of_a_prompt_on_one_side():
    examples = [normalise({"prompt": f"question {q}", "chosen": f"right {a}", "rejected": f"wrong {a}"},
                          "auto", f"f:{q}.{a}") for q in range(40) for a in range(3)]
    parts = split_preferences(examples, 0.2, 0.2, seed=3)
    sides = {}
    for name, part in parts.items():
        for example in part:
            sides.setdefault(example["prompt"][0]["content"], set()).add(name)
    assert len(sides) == 40 and all(len(names) == 1 for names in sides.values())
    assert all(part for part in parts.values())
    assert sorted(e["source"] for part in parts.values() for e in part) == sorted(e["source"] for e in examples)
    assert "group" not in parts["train"][0]
    assert split_preferences(examples, 0.2, 0.2, seed=3) == parts  # seeded


def test_template_split_matches_the_sft_split():
    """Grouped by template with prepare's seed and ratios, a template of the shipped pairs
    lands on the side it has in the SFT split of data/raw/tickets.jsonl."""
    pairs = load_preferences([SHIPPED], group_by="template")
    sft = prepare.load_files([REPO / "data" / "raw" / "tickets.jsonl"], group_by="template")
    assert pairs.errors == [] and sft.errors == []
    sft_side = {e["group"]: name for name, part in prepare.split(sft.examples, 0.1, 0.1, 42, "template").items()
                for e in part}
    pref_sides = {}
    for name, part in split_preferences(pairs.examples, 0.1, 0.1, 42, group_by="template").items():
        for example in part:
            pref_sides.setdefault(example["group"], set()).add(name)
    assert all(len(names) == 1 for names in pref_sides.values())
    shared = set(pref_sides) & set(sft_side)
    assert len(shared) > 100
    assert all(pref_sides[template] == {sft_side[template]} for template in shared)


# --- the shipped sample -------------------------------------------------------

def run_generator(*args):
    return subprocess.run([sys.executable, str(GENERATOR), *args], capture_output=True, text=True,
                          timeout=120, cwd=REPO)


def test_generator_is_deterministic_and_the_shipped_file_is_its_default_output(tmp_path):
    first, second, other = tmp_path / "a.jsonl", tmp_path / "b.jsonl", tmp_path / "c.jsonl"
    for path, seed in ((first, "17"), (second, "17"), (other, "18")):
        result = run_generator("--out", str(path), "--seed", seed)
        assert result.returncode == 0, result.stderr
    assert first.read_bytes() == second.read_bytes() == SHIPPED.read_bytes()
    assert other.read_bytes() != first.read_bytes()
    refused = run_generator("--output", str(first), "--count", "6")
    assert refused.returncode != 0 and "--force" in refused.stderr
    assert run_generator("--output", str(first), "--count", "6", "--force").returncode == 0
    assert len(first.read_text().splitlines()) == 6


def test_every_shipped_pair_loads_and_its_mistake_is_the_one_named():
    records = [json.loads(line) for line in SHIPPED.read_text(encoding="utf-8").splitlines()]
    examples = load_file(SHIPPED)
    assert len(examples) == len(records) == 300
    assert Counter(record["mistake"] for record in records) == {mistake: 50 for mistake in MISTAKES}
    for record, example in zip(records, examples):
        assert example["chosen"] != example["rejected"]
        assert example["prompt"][0]["content"].startswith("Extract a JSON object from the support ticket")
        labels = json.loads(example["chosen"][0]["content"])
        rejected = example["rejected"][0]["content"]
        if record["mistake"] == "prose":
            assert not rejected.startswith("{")
            continue
        wrong = json.loads(rejected)
        changed = {key for key in labels if wrong.get(key, "missing") != labels[key]}
        expected = {"wrong_priority": "priority", "wrong_category": "category",
                    "wrong_sentiment": "sentiment", "invented_order_id": "order_id"}.get(record["mistake"])
        if expected:
            assert changed == {expected}, record
        else:  # missing_field
            assert len(changed) == 1 and len(wrong) == len(labels) - 1, record
