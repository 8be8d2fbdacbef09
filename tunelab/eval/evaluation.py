"""Evaluate base and tuned models on the same held-out examples.

Both get the same prompts (the chat template with the generation prompt) and
greedy decoding, so any difference comes from the adapter.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field

import torch
from tqdm import tqdm

from tunelab.chat import reasoning, stops
from tunelab.data import encoding
from tunelab.eval import reward, scorers, scoring

# Causal LMs whose forward is exactly ``lm_head(model(...).last_hidden_state)``, read in
# transformers' modeling files: no logit soft-capping (Gemma 2/3), scaling (Granite,
# Cohere) or router outputs. For these the LM head can run on the loss positions alone;
# any other model gets its own forward and full logits.
PLAIN_HEAD_MODELS = {"LlamaForCausalLM", "MistralForCausalLM", "Qwen2ForCausalLM",
                     "Qwen3ForCausalLM", "Phi3ForCausalLM", "SmolLM3ForCausalLM",
                     "GemmaForCausalLM", "Olmo2ForCausalLM"}


@dataclass
class ModelResult:
    metrics: dict
    outputs: list[str] = field(default_factory=list)


@torch.no_grad()
def completion_loss(model, tokenizer, examples: list[dict], batch_size: int,
                    loss_positions_only: bool = True) -> float:
    """Mean negative log-likelihood per loss-carrying token (the training objective).

    With ``loss_positions_only`` (and a model in PLAIN_HEAD_MODELS) the LM head runs only
    where a label is trained: the prompt positions of a chat example need no logits, and
    the vocabulary-wide head is the largest matmul of a small model. The same loss up to
    float rounding as computing every position (tests/test_generation_speed.py)."""
    total_nll, total_tokens = 0.0, 0
    encoded = [encoding.encode(tokenizer, e, max_length=1 << 30, train_on="last") for e in examples]
    # Batches of similar lengths pad less; the loss is a sum, so the order does not matter.
    encoded.sort(key=lambda e: len(e.input_ids), reverse=True)
    device = model.device
    for start in tqdm(range(0, len(encoded), batch_size), desc="loss", leave=False):
        batch = encoded[start:start + batch_size]
        width = max(len(e.input_ids) for e in batch)
        pad = tokenizer.pad_token_id
        input_ids = torch.tensor([e.input_ids + [pad] * (width - len(e.input_ids)) for e in batch])
        labels = torch.tensor([e.labels + [encoding.IGNORE_INDEX] * (width - len(e.labels))
                               for e in batch])
        attention = (torch.arange(width)[None, :] < torch.tensor([len(e.input_ids) for e in batch])[:, None])
        # Position t predicts token t + 1: the loss positions are where the next label counts.
        targets = labels[:, 1:]
        loss_mask = targets != encoding.IGNORE_INDEX
        logits = loss_position_logits(model, input_ids.to(device), attention.long().to(device),
                                      loss_mask.to(device), loss_positions_only)
        nll = torch.nn.functional.cross_entropy(logits.float(), targets[loss_mask].to(device),
                                                reduction="none")
        total_nll += nll.double().sum().item()  # fp64: a long fp32 sum rounds by ~1e-6
        total_tokens += int(loss_mask.sum())
    return total_nll / max(total_tokens, 1)


def loss_position_logits(model, input_ids, attention_mask, loss_mask,
                         loss_positions_only: bool = True) -> torch.Tensor:
    """Logits (tokens, vocab) at the positions ``loss_mask`` (batch, length - 1) marks."""
    parts = body_and_head(model) if loss_positions_only else None
    if parts is None:
        logits = model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).logits
        return logits[:, :-1][loss_mask]
    body, head = parts
    hidden = body(input_ids=input_ids, attention_mask=attention_mask,
                  use_cache=False).last_hidden_state
    return head(hidden[:, :-1][loss_mask])


def body_and_head(model):
    """(decoder body, LM head) of a plain causal LM, also inside a LoRA PeftModel (whose
    layers live in the base model's modules, so the body runs them); None otherwise."""
    if hasattr(model, "get_base_model"):  # a PeftModel
        if model.active_peft_config.is_prompt_learning:  # its forward adds virtual tokens
            return None
        model = model.get_base_model()
    if type(model).__name__ not in PLAIN_HEAD_MODELS:
        return None
    return model.model, model.lm_head


def generate(model, tokenizer, prompts: list[list[int]], max_new_tokens: int,
             batch_size: int, desc: str = "generate", **options) -> list[str]:
    """Answers for token-id prompts, in the prompts' order; ``options`` as generate_ids."""
    return decode_answers(tokenizer, generate_ids(model, tokenizer, prompts, max_new_tokens,
                                                  batch_size, desc, **options))


def decode_answers(tokenizer, answer_ids: list[list[int]]) -> list[str]:
    """The answers' text, a leading think block taken off (tunelab.chat.reasoning)."""
    return [reasoning.split(tokenizer.decode(ids, skip_special_tokens=True).strip(),
                            tokenizer.chat_template)[1] for ids in answer_ids]


@torch.no_grad()
def generate_ids(model, tokenizer, prompts: list[list[int]], max_new_tokens: int,
                 batch_size: int, desc: str = "generate", sort_by_length: bool = True,
                 share_prefix: bool = False, cache_implementation: str | None = None,
                 **sampling) -> list[list[int]]:
    """Each prompt's new token ids up to and including its first EOS (none of the padding
    that follows while the rest of its batch finishes), in the prompts' order.

    Batched with left padding; greedy unless ``sampling`` says otherwise (do_sample,
    temperature, top_p). ``model.generate`` keeps its KV cache across the decoding steps
    and ends a batch once every row has produced EOS. Options, the same answers up to
    float rounding (the amount of padding changes), timed by `tunelab bench-generate`:

    - ``sort_by_length``: batches of the longest prompts first. Similar lengths pad less,
      and a batch too big for memory fails in the first batch, not minutes later.
    - ``share_prefix``: the prompts' common prefix (chat template, system prompt, a shared
      instruction) runs through the model once; every batch starts from a copy of its KV
      cache, padded between the prefix and the rest of each prompt.
    - ``cache_implementation``: passed to ``model.generate`` ("static": a preallocated
      StaticCache, compiled by transformers only on GPUs); not with ``share_prefix``.
    """
    sampling = sampling or {"do_sample": False}
    if cache_implementation:
        sampling["cache_implementation"] = cache_implementation
    pad = tokenizer.pad_token_id
    ends = stops.stop_ids(tokenizer, getattr(model, "generation_config", None))
    device = model.device
    prefix = common_prefix(prompts) if share_prefix else []
    prefix_cache = prefill_cache(model, prefix) if prefix else None
    order = list(range(len(prompts)))
    if sort_by_length:
        order.sort(key=lambda index: len(prompts[index]), reverse=True)  # stable: ties keep order
    # Answers go back to the prompts' order: callers zip them with references and examples.
    answers: list[list[int]] = [[] for _ in prompts]
    for start in tqdm(range(0, len(order), batch_size), desc=desc, disable=len(prompts) == 1):
        rows = order[start:start + batch_size]
        rests = [prompts[index][len(prefix):] for index in rows]
        width = max(len(rest) for rest in rests)
        input_ids = torch.tensor([prefix + [pad] * (width - len(rest)) + rest for rest in rests])
        attention = torch.tensor([[1] * len(prefix) + [0] * (width - len(rest)) + [1] * len(rest)
                                  for rest in rests])
        prefilled = {}
        if prefix_cache is not None:
            # generate extends the cache it is given, so each batch gets its own copy.
            prefilled["cache"] = copy.deepcopy(prefix_cache)
            prefilled["cache"].batch_repeat_interleave(len(rows))
        output = model.generate(input_ids=input_ids.to(device), attention_mask=attention.to(device),
                                max_new_tokens=max_new_tokens, pad_token_id=pad,
                                eos_token_id=ends, **prefilled, **sampling)
        for index, new_ids in zip(rows, output[:, input_ids.shape[1]:].tolist()):
            answers[index] = stops.cut_at_stop(new_ids, ends)
    return answers


def common_prefix(prompts: list[list[int]]) -> list[int]:
    """The longest prefix all prompts share, short of each prompt's last token (which
    must run with the rest of its prompt to give the first answer token)."""
    if not prompts:
        return []
    limit = min(len(p) for p in prompts) - 1
    length = 0
    while length < limit and all(p[length] == prompts[0][length] for p in prompts):
        length += 1
    return prompts[0][:length]


def prefill_cache(model, prefix: list[int]):
    """A DynamicCache holding ``prefix``'s keys and values, batch size 1."""
    from transformers import DynamicCache

    cache = DynamicCache(config=model.config)
    model(input_ids=torch.tensor([prefix], device=model.device), cache=cache, use_cache=True)
    return cache


def evaluate_model(model, tokenizer, examples: list[dict], max_new_tokens: int,
                   batch_size: int, desc: str, scorer: scorers.Scorer | None = None,
                   reward_weights: dict[str, float] | None = None) -> ModelResult:
    """Loss and perplexity; for chat examples also the greedy answers, the ``scorer``'s
    metrics (auto by default: tunelab.eval.scorers) and the text scores, and with
    ``reward_weights`` the mean GRPO reward (tunelab.eval.reward) of the answers, the number
    GRPO raises, where the scorer gives every weighted score."""
    scorer = scorer or scorers.load(scorers.AUTO)
    loss = completion_loss(model, tokenizer, examples, batch_size)
    metrics = {"loss": loss, "perplexity": math.exp(min(loss, 50))}
    chat = [e for e in examples if "messages" in e]
    if not chat:  # plain-text data: likelihood is the measure
        return ModelResult(metrics)
    references = [encoding.split_prompt(e)[1]["content"] for e in chat]
    prompts = [encoding.prompt_ids(tokenizer, e) for e in chat]
    outputs = generate(model, tokenizer, prompts, max_new_tokens, batch_size, desc)
    scores, rows = scorer.score_all(outputs, references, chat)
    metrics.update(scores)
    metrics.update(scoring.text_scores(outputs, references))
    if reward_weights is not None:
        if not any(reward.missing_names(row, reward_weights) for row in rows):
            metrics["reward"] = sum(reward.weighted(row, reward_weights) for row in rows) / len(rows)
    return ModelResult(metrics, outputs)


def compare(base: ModelResult, tuned: ModelResult, aligned: ModelResult | None = None) -> dict:
    """{"base", "tuned", "delta": tuned - base}; with ``aligned`` (the align stage's model)
    also "aligned" and "aligned_delta": aligned - tuned, what the second step added."""
    def rounded(metrics):
        return {k: round(v, 6) for k, v in metrics.items()}

    def gain(after, before):
        return {k: round(after.metrics[k] - before.metrics[k], 6) for k in before.metrics}

    result = {"base": rounded(base.metrics), "tuned": rounded(tuned.metrics),
              "delta": gain(tuned, base)}
    if aligned is not None:
        result.update(aligned=rounded(aligned.metrics), aligned_delta=gain(aligned, tuned))
    return result


def samples(examples: list[dict], base: ModelResult, tuned: ModelResult,
            aligned: ModelResult | None = None) -> list[dict]:
    """Each chat example's prompt, reference and answers (base, tuned and, where the align
    stage trained a model, aligned)."""
    rows = []
    chat = [e for e in examples if "messages" in e]
    for index, (example, base_out, tuned_out) in enumerate(zip(chat, base.outputs, tuned.outputs)):
        prompt, answer = encoding.split_prompt(example)
        rows.append({"source": example.get("source"), "prompt": prompt[-1]["content"],
                     "reference": answer["content"], "base": base_out, "tuned": tuned_out})
        if aligned is not None:
            rows[-1]["aligned"] = aligned.outputs[index]
    return rows
