"""The sample-data generator: shape, label consistency, determinism, no clobbering."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

GENERATOR = Path(__file__).resolve().parents[1] / "data" / "generate_tickets.py"
OUTPUT_KEYS = ["category", "priority", "sentiment", "product", "order_id"]
CATEGORIES = {"billing", "technical", "account", "shipping", "feedback"}
PRIORITIES = {"low", "medium", "high", "urgent"}
SENTIMENTS = {"negative", "neutral", "positive"}
PRODUCTS = {"CloudSync", "PayFlow", "SmartHub", "TaskPilot", "PhotoVault", "MailBridge", "DataDash", "SecureKey"}


def run_generator(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(GENERATOR), *args], capture_output=True, text=True, timeout=60)


@pytest.fixture(scope="module")
def generated_path(tmp_path_factory) -> Path:
    output_path = tmp_path_factory.mktemp("tickets") / "tickets.jsonl"
    result = run_generator("--output", str(output_path))
    assert result.returncode == 0, result.stderr
    return output_path


@pytest.fixture(scope="module")
def examples(generated_path) -> list[dict]:
    return [json.loads(line) for line in generated_path.read_text(encoding="utf-8").splitlines()]


def test_writes_480_unique_alpaca_examples(examples):
    assert len(examples) == 480
    assert len({example["input"] for example in examples}) == 480
    assert len({example["instruction"] for example in examples}) == 1
    for example in examples:
        assert list(example) == ["instruction", "input", "output", "task"]
        assert example["task"] == "ticket_triage"


def test_outputs_are_json_with_the_five_keys_and_allowed_values(examples):
    for example in examples:
        labels = json.loads(example["output"])
        assert list(labels) == OUTPUT_KEYS
        assert example["output"] == json.dumps(labels)  # compact, default separators
        assert labels["category"] in CATEGORIES
        assert labels["priority"] in PRIORITIES
        assert labels["sentiment"] in SENTIMENTS
        assert labels["product"] is None or labels["product"] in PRODUCTS
        assert labels["order_id"] is None or re.fullmatch(r"ORD-\d{6}", labels["order_id"])


def test_product_and_order_id_are_taken_from_the_text(examples):
    for example in examples:
        labels = json.loads(example["output"])
        ticket_text = example["input"]
        if labels["order_id"] is not None:
            assert labels["order_id"] in ticket_text
        else:
            assert "ORD-" not in ticket_text
        if labels["product"] is not None:
            assert labels["product"].lower() in ticket_text.lower()
        else:
            assert not any(product.lower() in ticket_text.lower() for product in PRODUCTS)


def test_labels_are_balanced(examples):
    all_labels = [json.loads(example["output"]) for example in examples]
    category_counts = Counter(labels["category"] for labels in all_labels)
    assert all(0.15 <= category_counts[category] / 480 <= 0.25 for category in CATEGORIES)
    for field, allowed in [("priority", PRIORITIES), ("sentiment", SENTIMENTS)]:
        counts = Counter(labels[field] for labels in all_labels)
        assert all(counts[value] / 480 >= 0.1 for value in allowed), (field, counts)
    order_id_share = sum(labels["order_id"] is not None for labels in all_labels) / 480
    assert 0.3 <= order_id_share <= 0.5


def test_same_seed_gives_byte_identical_file(generated_path, tmp_path):
    second_path = tmp_path / "again.jsonl"
    assert run_generator("--output", str(second_path)).returncode == 0
    assert second_path.read_bytes() == generated_path.read_bytes()


def test_count_and_seed_options(generated_path, tmp_path):
    other_path = tmp_path / "other.jsonl"
    assert run_generator("--count", "25", "--seed", "7", "--output", str(other_path)).returncode == 0
    assert len(other_path.read_text(encoding="utf-8").splitlines()) == 25
    assert other_path.read_bytes() != generated_path.read_bytes()


def test_refuses_to_overwrite_without_force(tmp_path):
    output_path = tmp_path / "tickets.jsonl"
    output_path.write_text("the user's own data\n", encoding="utf-8")

    refused = run_generator("--output", str(output_path))
    assert refused.returncode != 0
    assert len(refused.stderr.strip().splitlines()) == 1
    assert "--force" in refused.stderr
    assert output_path.read_text(encoding="utf-8") == "the user's own data\n"

    forced = run_generator("--output", str(output_path), "--force")
    assert forced.returncode == 0, forced.stderr
    assert len(output_path.read_text(encoding="utf-8").splitlines()) == 480
