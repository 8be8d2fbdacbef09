"""prepare.group_by: examples that share a field's value land in one split, so the test
split holds unseen groups (tunelab.data.prepare)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tunelab.config import params
from tunelab.data import prepare
from tunelab.errors import DataError

REPO = Path(__file__).resolve().parents[1]

# 200 tickets written from 20 templates, 10 each, as data/generate_tickets.py writes them.
RECORDS = [{"instruction": f"Triage ticket {i}", "output": json.dumps({"n": i}),
            "template": f"topic/{i % 20}"} for i in range(200)]


@pytest.fixture
def raw_file(tmp_path, write_jsonl):
    return write_jsonl(tmp_path / "tickets.jsonl", RECORDS)


def grouped_split(path, seed=42, val_ratio=0.2, test_ratio=0.2):
    examples = prepare.load_files([path], group_by="template").examples
    return prepare.split(examples, val_ratio, test_ratio, seed, group_by="template")


def groups_of(part: list[dict]) -> list[str]:
    return sorted({e["group"] for e in part}, key=lambda name: int(name.split("/")[1]))


def test_load_files_keeps_the_group_field_and_only_when_asked(raw_file):
    grouped = prepare.load_files([raw_file], group_by="template").examples
    assert grouped[3] == {"messages": [{"role": "user", "content": "Triage ticket 3"},
                                       {"role": "assistant", "content": '{"n": 3}'}],
                          "task": None, "source": f"{raw_file}:4", "group": "topic/3"}
    assert all("group" not in e for e in prepare.load_files([raw_file]).examples)


def test_no_group_spans_two_splits_and_the_split_is_pinned(raw_file):
    parts = grouped_split(raw_file)
    sides = {}
    for name, part in parts.items():
        for example in part:
            sides.setdefault(example["group"], set()).add(name)
    assert all(len(names) == 1 for names in sides.values())
    assert len(sides) == 20
    assert {name: groups_of(part) for name, part in parts.items()} == {
        "train": ["topic/0", "topic/2", "topic/3", "topic/4", "topic/6", "topic/7", "topic/9",
                  "topic/10", "topic/15", "topic/16", "topic/17", "topic/18", "topic/19"],
        "val": ["topic/8", "topic/14"],
        "test": ["topic/1", "topic/5", "topic/11", "topic/12", "topic/13"]}
    # Whole groups of 10: the sizes follow the groups, not the 0.6/0.2/0.2 ratios.
    assert {name: len(part) for name, part in parts.items()} == {"train": 130, "val": 20, "test": 50}


def test_a_groups_side_depends_only_on_its_value_and_the_seed(raw_file, tmp_path, write_jsonl):
    # Other text, other files, more groups: every old group keeps its side.
    other = write_jsonl(tmp_path / "more.jsonl", [
        {"instruction": f"Another ticket {i}", "output": "x", "template": f"topic/{i % 30}"}
        for i in range(90)])
    before = {e["group"]: name for name, part in grouped_split(raw_file).items() for e in part}
    examples = prepare.load_files([other, raw_file], group_by="template").examples
    after = {}
    for name, part in prepare.split(examples, 0.2, 0.2, 42, group_by="template").items():
        for example in part:
            assert after.setdefault(example["group"], name) == name
    assert {group: after[group] for group in before} == before
    assert grouped_split(raw_file, seed=7) != grouped_split(raw_file, seed=42)


def test_equal_text_in_two_groups_is_one_duplicate(tmp_path, write_jsonl):
    # The group says where an example came from, like its source: not part of its content.
    path = write_jsonl(tmp_path / "twice.jsonl", [
        {"instruction": "Same ticket", "output": "x", "template": "a/1"},
        {"instruction": "Same ticket", "output": "x", "template": "b/2"}])
    kept, dropped = prepare.deduplicate(prepare.load_files([path], group_by="template").examples)
    assert (dropped, kept[0]["group"]) == (1, "a/1")


def test_an_example_without_the_field_is_named_with_the_key(tmp_path, write_jsonl):
    path = write_jsonl(tmp_path / "mixed.jsonl", [
        {"instruction": "Q1", "output": "A", "template": "t/1"},
        {"instruction": "Q2", "output": "A"},
        {"instruction": "Q3", "output": "A", "template": None}])
    examples = prepare.load_files([path], group_by="template").examples
    with pytest.raises(DataError) as caught:
        prepare.split(examples, 0.1, 0.1, 42, group_by="template")
    assert str(caught.value) == (f"{path}:2: no field 'template' to split by (prepare.group_by; "
                                 '"" splits example by example)')


def test_too_few_groups_names_the_count_and_the_key(tmp_path, write_jsonl):
    path = write_jsonl(tmp_path / "two.jsonl", [
        {"instruction": f"Q{i}", "output": "A", "template": f"t/{i % 2}"} for i in range(10)])
    examples = prepare.load_files([path], group_by="template").examples
    with pytest.raises(DataError) as caught:
        prepare.split(examples, 0.1, 0.1, 42, group_by="template")
    assert str(caught.value).startswith("only 2 groups (prepare.group_by=template): the ")


def test_the_shipped_sample_splits_by_template_with_no_template_on_two_sides():
    p = params.load("prepare", REPO / "params.yaml")
    assert p.group_by == "template"
    examples = prepare.load_files(prepare.raw_files(REPO / p.raw_dir), group_by=p.group_by).examples
    parts = prepare.split(prepare.deduplicate(examples)[0], p.val_ratio, p.test_ratio, p.seed,
                          group_by=p.group_by)
    train, val, test = ({e["group"] for e in parts[name]} for name in ("train", "val", "test"))
    assert not (train & test or train & val or val & test)
    assert {name: len(part) for name, part in parts.items()} == {"train": 383, "val": 52, "test": 45}
    # seed 35 (params.yaml): every category has tickets in val and in test
    for name in ("val", "test"):
        categories = {json.loads(e["messages"][-1]["content"])["category"] for e in parts[name]}
        assert categories == {"billing", "technical", "account", "shipping", "feedback"}, name
