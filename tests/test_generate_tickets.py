"""The sample-data generator: shape, label consistency, variety, determinism, no clobbering."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
GENERATOR = REPO / "data" / "generate_tickets.py"
OUTPUT_KEYS = ["category", "priority", "sentiment", "product", "order_id"]
CATEGORIES = {"billing", "technical", "account", "shipping", "feedback"}
PRIORITIES = {"low", "medium", "high", "urgent"}
SENTIMENTS = {"negative", "neutral", "positive"}
# Every id shape the generator writes, as a pattern of the id alone (the label).
ID_PATTERNS = {"ORD-999999": r"ORD-\d{6}", "INV-y-9999": r"INV-20\d\d-\d{4}", "#99999": r"#\d{5}",
               "aaaa-aaaa": r"[A-Z0-9]{4}-[A-Z0-9]{4}", "y/m/9999": r"20\d\d/(0[1-9]|1[0-2])/\d{4}",
               "PO 99-9999": r"PO \d\d-\d{4}", "SO9999999": r"SO\d{7}", "RMA-99999": r"RMA-\d{5}",
               "lll999999": r"[A-Z]{3}\d{6}", "999-9999999-9999999": r"\d{3}-\d{7}-\d{7}",
               "W999999999": r"W\d{9}", "REF 9999 9999": r"REF \d{4} \d{4}"}
ANY_ID = re.compile(r"(?<![\w#/-])(?:" + "|".join(ID_PATTERNS.values()) + r")(?![\w/-])")
TEMPLATE = re.compile(r"(billing|technical|account|shipping)/\d+|feedback/(negative|neutral|positive)/\d+")
SHA256_SEED_13 = "3db813b3b79a8c9c9755f4d57550a88f95b35bed85583fc5f9deab096deaf84f"  # the default file


def load_generator():
    spec = importlib.util.spec_from_file_location("generate_tickets", GENERATOR)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


PRODUCTS = set(load_generator().PRODUCTS)


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
        assert list(example) == ["instruction", "input", "output", "task", "template"]
        assert example["task"] == "ticket_triage"


def test_template_names_the_category_and_feedback_mood(examples):
    for example in examples:
        labels = json.loads(example["output"])
        match = TEMPLATE.fullmatch(example["template"])
        assert match, example["template"]
        assert example["template"].split("/")[0] == labels["category"]
        if labels["category"] == "feedback":
            assert match.group(2) == labels["sentiment"]
    counts = Counter(example["template"] for example in examples)
    assert (len(counts), min(counts.values()), max(counts.values())) == (116, 1, 9)


def test_outputs_are_json_with_the_five_keys_and_allowed_values(examples):
    for example in examples:
        labels = json.loads(example["output"])
        assert list(labels) == OUTPUT_KEYS
        assert example["output"] == json.dumps(labels)  # compact, default separators
        assert labels["category"] in CATEGORIES
        assert labels["priority"] in PRIORITIES
        assert labels["sentiment"] in SENTIMENTS
        assert labels["product"] is None or labels["product"] in PRODUCTS
        assert labels["order_id"] is None or any(re.fullmatch(pattern, labels["order_id"])
                                                 for pattern in ID_PATTERNS.values())


def test_product_and_order_id_are_taken_from_the_text(examples):
    for example in examples:
        labels = json.loads(example["output"])
        ticket_text = example["input"]
        if labels["order_id"] is not None:  # written exactly as labelled, once, and no other id
            assert ticket_text.count(labels["order_id"]) == 1
            ticket_text = ticket_text.replace(labels["order_id"], " ")
        assert not ANY_ID.search(ticket_text), example["input"]
        if labels["product"] is not None:  # in any casing; the label is the canonical name
            assert labels["product"].lower() in ticket_text.lower()
            ticket_text = re.sub(re.escape(labels["product"]), " ", ticket_text, flags=re.IGNORECASE)
        assert not any(product.lower() in ticket_text.lower() for product in PRODUCTS), example["input"]


def test_ids_come_in_every_format(examples):
    order_ids = [json.loads(e["output"])["order_id"] for e in examples]
    counts = Counter(next(shape for shape, pattern in ID_PATTERNS.items() if re.fullmatch(pattern, order_id))
                     for order_id in order_ids if order_id)
    assert counts == {"y/m/9999": 30, "#99999": 20, "W999999999": 20, "lll999999": 19, "aaaa-aaaa": 19,
                      "999-9999999-9999999": 19, "REF 9999 9999": 17, "ORD-999999": 13, "SO9999999": 12,
                      "PO 99-9999": 10, "RMA-99999": 9, "INV-y-9999": 8}
    categories = {shape: {json.loads(e["output"])["category"] for e in examples
                          if re.fullmatch(ID_PATTERNS[shape], json.loads(e["output"])["order_id"] or "")}
                  for shape in ("INV-y-9999", "RMA-99999")}
    assert categories == {"INV-y-9999": {"billing"}, "RMA-99999": {"shipping"}}  # invoices, returns


def test_forty_products_in_many_casings(examples):
    assert len(PRODUCTS) == 40 and {"Acme Cloud Backup", "Zen Notes Pro", "Vista Router X2"} <= PRODUCTS
    named = [(json.loads(e["output"])["product"], e["input"]) for e in examples]
    named = [(product, text) for product, text in named if product]
    assert len({product for product, _ in named}) == 40
    assert sum(" " in product for product, _ in named) == 271  # multi-word names
    assert sum(product not in text for product, text in named) == 141  # lower or upper case only
    assert sum(product.upper() in text and product.upper() != product for product, text in named) > 0


def test_tickets_vary_in_length_tone_and_missing_fields(examples):
    texts = [e["input"] for e in examples]
    all_labels = [json.loads(e["output"]) for e in examples]
    words = [len(text.split()) for text in texts]
    assert (min(words), max(words)) == (9, 73)
    assert sum("\n" not in text for text in texts) == 201       # one line
    assert sum("\n\n" in text for text in texts) == 194        # paragraphs
    assert sum(text.startswith("Subject: ") for text in texts) == 86
    assert sum(text == text.lower() for text in texts) == 53     # all lower case
    assert sum(text.startswith(("Dear Sir", "To whom", "Dear Customer")) for text in texts) > 40
    no_product = [labels["product"] is None for labels in all_labels]
    no_id = [labels["order_id"] is None for labels in all_labels]
    assert (sum(no_product), sum(no_id), sum(map(all, zip(no_product, no_id)))) == (134, 284, 84)


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
    assert hashlib.sha256(generated_path.read_bytes()).hexdigest() == SHA256_SEED_13


def test_shipped_sample_is_what_the_default_command_makes(generated_path):
    assert (REPO / "data/raw/tickets.jsonl").read_bytes() == generated_path.read_bytes()


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
