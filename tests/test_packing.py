"""Padding-free packing: examples concatenated into one row must not see each other.
The per-example losses of a packed batch equal those of the examples run one by one."""

import pytest
import torch
from transformers import AutoModelForCausalLM
from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

from tunelab.data import encoding

EXAMPLES = [
    {"messages": [{"role": "user", "content": "Color of sky?"},
                  {"role": "assistant", "content": "blue"}]},
    {"messages": [{"role": "user", "content": "Name three primary colours of paint, please."},
                  {"role": "assistant", "content": "Red, yellow and blue."}]},
    {"text": "Support tickets arrive all day; triage sorts them by urgency."},
]


def per_token_losses(logits, labels):
    shifted = labels[:, 1:]
    losses = torch.nn.functional.cross_entropy(
        logits[:, :-1].transpose(1, 2).float(), shifted, ignore_index=-100, reduction="none")
    return losses[shifted != -100]


@pytest.mark.parametrize("attention", ["sdpa", "eager"])
def test_packed_batch_losses_equal_one_by_one(tiny_base_dir, tokenizer, attention):
    model = AutoModelForCausalLM.from_pretrained(tiny_base_dir, dtype=torch.float32,
                                                 attn_implementation=attention).eval()
    encoded = [encoding.encode(tokenizer, e, max_length=256) for e in EXAMPLES]
    rows = [{"input_ids": e.input_ids, "labels": e.labels} for e in encoded]

    with torch.no_grad():
        alone = []
        for row in rows:
            ids = torch.tensor([row["input_ids"]])
            alone.append(per_token_losses(model(input_ids=ids).logits, torch.tensor([row["labels"]])))
        collate = DataCollatorForLanguageModeling(pad_token_id=tokenizer.pad_token_id,
                                                  padding_free=True)
        batch = collate(rows)
        assert batch["input_ids"].shape == (1, sum(len(r["input_ids"]) for r in rows))
        # use_cache=False as in training: transformers detects packed rows from position_ids
        # only without a KV cache; with one, the rows silently attend across examples.
        packed_logits = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"],
                              use_cache=False).logits

    # Score the packed logits per example, each against its own labels.
    packed, start = [], 0
    for row in rows:
        end = start + len(row["input_ids"])
        packed.append(per_token_losses(packed_logits[:, start:end], torch.tensor([row["labels"]])))
        start = end
    for one, together in zip(alone, packed):
        assert together.shape == one.shape
        assert torch.allclose(together, one, atol=1e-5, rtol=1e-5)


def test_training_with_packing_fills_rows_and_learns(tiny_base_dir, tokenizer, tmp_path):
    from test_training import color_examples
    from tunelab.config.params import LoraParams, TrainParams
    from tunelab.train import training
    from tunelab.util import files

    files.write_jsonl_atomic(tmp_path / "train.jsonl", color_examples(4))
    p = TrainParams(learning_rate=3e-2, max_steps=8, batch_size=1, eval_steps=0, logging_steps=1,
                    warmup_ratio=0.0, precision="fp32", packing=True, max_length=128,
                    lora=LoraParams(r=8, alpha=32, dropout=0.0))
    summary = training.train(p, tiny_base_dir, tmp_path / "train.jsonl", tmp_path / "train.jsonl",
                             tmp_path / "adapter", tmp_path / "live", tmp_path / "ckpt")
    losses = [float(line.split("\t")[-1]) for line in
              (tmp_path / "live/plots/metrics/loss.tsv").read_text().splitlines()[1:]]
    assert summary["steps"] == 8
    assert losses[-1] < 0.7 * losses[0]
    # 32 examples of 35-38 tokens, packed whole into rows of <= 128 tokens: 3 per row.
    lengths = [len(row["input_ids"]) for row in
               (training.to_dataset(color_examples(4), tokenizer, 128))]
    assert max(lengths) * 3 <= 128 < min(lengths) * 4
    assert summary["train_rows"] == 11
