"""Loading, deduplicating and splitting training data (tunelab.data)."""

from __future__ import annotations

import pytest

from tunelab.data import prepare
from tunelab.errors import DataError


def qa(number: int, source: str | None = None) -> dict:
    """A normalised chat example whose content is unique per ``number``."""
    return {"messages": [{"role": "user", "content": f"q{number}"},
                         {"role": "assistant", "content": f"a{number}"}],
            "task": None, "source": source or f"data.jsonl:{number}"}


def sources(examples: list[dict]) -> list[str]:
    return [e["source"] for e in examples]


# --- load_files -------------------------------------------------------------------

def test_load_files_normalises_and_counts_per_file(tmp_path, write_jsonl):
    first = write_jsonl(tmp_path / "a.jsonl", [{"instruction": "Hi", "output": "Hello"},
                                               {"prompt": "2+2?", "completion": "4"}])
    second = write_jsonl(tmp_path / "b.jsonl", [{"instruction": "Bye", "output": "Ciao"}])
    loaded = prepare.load_files([first, second])
    assert loaded.errors == []
    assert loaded.files == {str(first): 2, str(second): 1}
    assert sources(loaded.examples) == [f"{first}:1", f"{first}:2", f"{second}:1"]
    assert loaded.examples[1]["messages"] == [{"role": "user", "content": "2+2?"},
                                              {"role": "assistant", "content": "4"}]


def test_errors_from_several_files_are_all_collected(tmp_path, write_jsonl):
    fields = write_jsonl(tmp_path / "fields.jsonl", [{"instruction": "Hi", "output": "Hello"},
                                                     {"instruction": "No answer"},
                                                     {"messages": [{"role": "user", "content": "x"}]}])
    broken = write_jsonl(tmp_path / "broken.jsonl", [{"text": "fine"}, "{not json"])
    unsupported = tmp_path / "notes.docx"
    unsupported.write_text("hello\n")
    good = write_jsonl(tmp_path / "good.jsonl", [{"instruction": "Q", "output": "A"}])
    loaded = prepare.load_files([fields, broken, unsupported, good])
    assert loaded.errors == [
        f"{fields}:2: missing field 'output'",
        f"{fields}:3: conversation must end with an assistant message",
        f"{broken}:2: invalid JSON: Expecting property name enclosed in double quotes",
        f"{unsupported}: unsupported file type '.docx' (use .jsonl, .json, .csv, .parquet, "
        ".jsonl.gz, .json.gz, .txt, .md)",
    ]
    # The good records of the files are still read; unreadable files contribute none.
    assert sources(loaded.examples) == [f"{fields}:1", f"{good}:1"]
    assert loaded.files == {str(fields): 3, str(good): 1}


def test_system_prompt_added_only_where_missing(tmp_path, write_jsonl):
    path = write_jsonl(tmp_path / "chat.jsonl", [
        {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Yo"}]},
        {"messages": [{"role": "system", "content": "Own."}, {"role": "user", "content": "Hi"},
                      {"role": "assistant", "content": "Yo"}]},
    ])
    loaded = prepare.load_files([path], system_prompt="Be terse.")
    assert [e["messages"][0] for e in loaded.examples] == [
        {"role": "system", "content": "Be terse."}, {"role": "system", "content": "Own."}]
    assert [len(e["messages"]) for e in loaded.examples] == [3, 3]


def test_empty_system_prompt_adds_nothing(tmp_path, write_jsonl):
    path = write_jsonl(tmp_path / "chat.jsonl", [{"prompt": "Hi", "completion": "Yo"}])
    assert prepare.load_files([path]).examples[0]["messages"][0]["role"] == "user"


def test_system_prompt_leaves_text_examples_alone(tmp_path, write_jsonl):
    path = write_jsonl(tmp_path / "text.jsonl", [{"text": "Once upon a time."}])
    loaded = prepare.load_files([path], system_prompt="Be terse.")
    assert loaded.examples == [{"text": "Once upon a time.", "task": None, "source": f"{path}:1"}]


def test_mixed_text_and_chat_names_the_first_text_example(tmp_path, write_jsonl):
    chat = write_jsonl(tmp_path / "a_chat.jsonl", [{"prompt": "Hi", "completion": "Yo"}] * 2)
    text = write_jsonl(tmp_path / "b_text.jsonl", [{"prompt": "Q", "completion": "A"},
                                                   {"text": "first text"}, {"text": "second"}])
    loaded = prepare.load_files([chat, text])
    assert loaded.errors == [
        f"{text}:2: plain-text examples mixed with chat examples; train them in separate runs "
        "(set prepare.format or split the files)"]


def test_forced_format_applies_to_every_record(tmp_path, write_jsonl):
    path = write_jsonl(tmp_path / "a.jsonl", [{"text": "x", "prompt": "p", "completion": "c"}])
    assert "text" in prepare.load_files([path], fmt="text").examples[0]
    assert "messages" in prepare.load_files([path], fmt="auto").examples[0]


# --- raw_files --------------------------------------------------------------------

def test_raw_files_lists_data_files_recursively_sorted(tmp_path):
    for name in ["b.jsonl", "a.csv", "sub/c.JSON", "notes.md", "sub/d.parquet", "e.jsonl.gz",
                 "f.csv.gz", "g.docx", "h.gz", "i.dvc"]:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("x")
    # f.csv.gz is listed so that reading it refuses it by name, not skipped without a word
    assert [p.relative_to(tmp_path).as_posix() for p in prepare.raw_files(tmp_path)] == [
        "a.csv", "b.jsonl", "e.jsonl.gz", "f.csv.gz", "notes.md", "sub/c.JSON", "sub/d.parquet"]


def test_raw_files_missing_folder_and_no_files(tmp_path):
    with pytest.raises(DataError, match=r"nope: data folder not found \(prepare.raw_dir\)$"):
        prepare.raw_files(tmp_path / "nope")
    (tmp_path / "readme.docx").write_text("x")
    with pytest.raises(DataError) as caught:
        prepare.raw_files(tmp_path)
    assert str(caught.value) == (f"{tmp_path}: no data files (.jsonl .json .csv .parquet .jsonl.gz "
                                 ".json.gz .txt .md)")


# --- deduplicate ------------------------------------------------------------------

def test_same_content_from_two_files_counts_once():
    examples = [qa(1, "a.jsonl:1"), qa(2, "a.jsonl:2"), qa(1, "b.jsonl:7")]
    kept, dropped = prepare.deduplicate(examples)
    assert (sources(kept), dropped) == (["a.jsonl:1", "a.jsonl:2"], 1)


def test_near_duplicates_are_kept():
    base = qa(1)
    other_task = {**qa(1), "task": "math"}
    other_case = qa(1)
    other_case["messages"][1]["content"] = "A1"
    extra_space = qa(1)
    extra_space["messages"][0]["content"] = "q1 "
    kept, dropped = prepare.deduplicate([base, other_task, other_case, extra_space])
    assert (len(kept), dropped) == (4, 0)


# --- split ------------------------------------------------------------------------

def test_split_sizes_are_close_to_the_ratios_and_cover_everything():
    examples = [qa(i) for i in range(1000)]
    parts = prepare.split(examples, val_ratio=0.1, test_ratio=0.2, seed=42)
    sizes = {name: len(part) for name, part in parts.items()}
    # Binomial spread: +-4 standard deviations around 200 / 100.
    assert 150 <= sizes["test"] <= 250 and 60 <= sizes["val"] <= 140
    assert sum(sizes.values()) == 1000
    all_sources = sorted(s for part in parts.values() for s in sources(part))
    assert all_sources == sorted(sources(examples))


def test_split_is_deterministic_for_a_seed():
    examples = [qa(i) for i in range(100)]
    assert prepare.split(examples, 0.1, 0.1, seed=7) == prepare.split(examples, 0.1, 0.1, seed=7)


def test_split_depends_on_content_not_order_or_source():
    examples = [qa(i) for i in range(100)]
    relabelled = [qa(i, f"other.csv:{i}") for i in reversed(range(100))]
    parts = prepare.split(examples, 0.1, 0.1, seed=42)
    moved = prepare.split(relabelled, 0.1, 0.1, seed=42)
    for name in parts:
        assert sorted(e["messages"][0]["content"] for e in parts[name]) == \
            sorted(e["messages"][0]["content"] for e in moved[name])


def test_split_keeps_file_order_inside_each_part():
    examples = [qa(i) for i in range(100)]
    for part in prepare.split(examples, 0.2, 0.2, seed=42).values():
        numbers = [int(e["source"].split(":")[1]) for e in part]
        assert numbers == sorted(numbers)


def test_different_seed_gives_a_different_split():
    examples = [qa(i) for i in range(100)]
    first = prepare.split(examples, 0.1, 0.2, seed=42)["test"]
    second = prepare.split(examples, 0.1, 0.2, seed=43)["test"]
    assert first and second
    assert sources(first) != sources(second)


def test_adding_examples_keeps_old_test_examples_in_test():
    old = [qa(i) for i in range(40)]
    grown = old + [qa(i) for i in range(40, 80)]
    old_test = set(sources(prepare.split(old, 0.1, 0.1, seed=42)["test"]))
    new_test = set(sources(prepare.split(grown, 0.1, 0.1, seed=42)["test"]))
    assert old_test and old_test <= new_test


def test_too_few_examples_to_split_names_the_empty_splits():
    with pytest.raises(DataError) as caught:
        prepare.split([], val_ratio=0.4, test_ratio=0.4, seed=42)
    assert str(caught.value) == ("only 0 unique examples: the train and val and test split would "
                                 "be empty (prepare.val_ratio=0.4, prepare.test_ratio=0.4); add "
                                 "data or raise the ratios")


def test_zero_ratio_split_may_be_empty():
    parts = prepare.split([qa(i) for i in range(5)], val_ratio=0.0, test_ratio=0.0, seed=42)
    assert [len(parts[name]) for name in ("test", "val", "train")] == [0, 0, 5]


# --- length_stats -----------------------------------------------------------------

def test_length_stats():
    assert prepare.length_stats([5, 1, 3, 2, 4]) == {"mean": 3.0, "p50": 3, "p95": 5, "max": 5}
    assert prepare.length_stats(list(range(1, 101))) == {"mean": 50.5, "p50": 51, "p95": 96, "max": 100}
    assert prepare.length_stats([]) == {"mean": 0, "p50": 0, "p95": 0, "max": 0}
