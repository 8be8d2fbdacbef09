"""Evaluate base and tuned models on the same held-out examples.

Both get the same prompts (the chat template with the generation prompt) and
greedy decoding, so any difference comes from the adapter.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from tqdm import tqdm

from tunelab.data import encoding
from tunelab.eval import scoring


@dataclass
class ModelResult:
    metrics: dict
    outputs: list[str] = field(default_factory=list)


@torch.no_grad()
def completion_loss(model, tokenizer, examples: list[dict], batch_size: int) -> float:
    """Mean negative log-likelihood per loss-carrying token (the training objective)."""
    total_nll, total_tokens = 0.0, 0
    encoded = [encoding.encode(tokenizer, e, max_length=1 << 30) for e in examples]
    for start in tqdm(range(0, len(encoded), batch_size), desc="loss", leave=False):
        batch = encoded[start:start + batch_size]
        width = max(len(e.input_ids) for e in batch)
        pad = tokenizer.pad_token_id
        input_ids = torch.tensor([e.input_ids + [pad] * (width - len(e.input_ids)) for e in batch])
        labels = torch.tensor([e.labels + [encoding.IGNORE_INDEX] * (width - len(e.labels))
                               for e in batch])
        attention = (torch.arange(width)[None, :] < torch.tensor([len(e.input_ids) for e in batch])[:, None])
        logits = model(input_ids=input_ids, attention_mask=attention.long()).logits
        shifted_labels = labels[:, 1:]
        nll = torch.nn.functional.cross_entropy(
            logits[:, :-1].reshape(-1, logits.size(-1)).float(), shifted_labels.reshape(-1),
            ignore_index=encoding.IGNORE_INDEX, reduction="sum")
        total_nll += nll.item()
        total_tokens += int((shifted_labels != encoding.IGNORE_INDEX).sum())
    return total_nll / max(total_tokens, 1)


@torch.no_grad()
def generate(model, tokenizer, prompts: list[list[int]], max_new_tokens: int,
             batch_size: int, desc: str = "generate", **sampling) -> list[str]:
    """Answers for token-id prompts, batched with left padding; greedy unless
    ``sampling`` says otherwise (do_sample, temperature, top_p)."""
    sampling = sampling or {"do_sample": False}
    answers = []
    pad = tokenizer.pad_token_id
    for start in tqdm(range(0, len(prompts), batch_size), desc=desc, disable=len(prompts) == 1):
        batch = prompts[start:start + batch_size]
        width = max(len(p) for p in batch)
        input_ids = torch.tensor([[pad] * (width - len(p)) + p for p in batch])
        attention = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in batch])
        output = model.generate(input_ids=input_ids, attention_mask=attention,
                                max_new_tokens=max_new_tokens, pad_token_id=pad,
                                eos_token_id=tokenizer.eos_token_id, **sampling)
        answers += tokenizer.batch_decode(output[:, width:], skip_special_tokens=True)
    return [a.strip() for a in answers]


def evaluate_model(model, tokenizer, examples: list[dict], max_new_tokens: int,
                   batch_size: int, desc: str) -> ModelResult:
    loss = completion_loss(model, tokenizer, examples, batch_size)
    metrics = {"loss": loss, "perplexity": math.exp(min(loss, 50))}
    chat = [e for e in examples if "messages" in e]
    if not chat:  # plain-text data: likelihood is the measure
        return ModelResult(metrics)
    references = [encoding.split_prompt(e)[1]["content"] for e in chat]
    prompts = [encoding.prompt_ids(tokenizer, e) for e in chat]
    outputs = generate(model, tokenizer, prompts, max_new_tokens, batch_size, desc)
    metrics.update(scoring.task_scores(outputs, references))
    metrics.update(scoring.text_scores(outputs, references))
    return ModelResult(metrics, outputs)


def compare(base: ModelResult, tuned: ModelResult) -> dict:
    def rounded(metrics):
        return {k: round(v, 6) for k, v in metrics.items()}

    return {"base": rounded(base.metrics), "tuned": rounded(tuned.metrics),
            "delta": {k: round(tuned.metrics[k] - base.metrics[k], 6) for k in base.metrics}}


def samples(examples: list[dict], base: ModelResult, tuned: ModelResult) -> list[dict]:
    rows = []
    for example, base_out, tuned_out in zip([e for e in examples if "messages" in e],
                                            base.outputs, tuned.outputs):
        prompt, answer = encoding.split_prompt(example)
        rows.append({"source": example.get("source"), "prompt": prompt[-1]["content"],
                     "reference": answer["content"], "base": base_out, "tuned": tuned_out})
    return rows
