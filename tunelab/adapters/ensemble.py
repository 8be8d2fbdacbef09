"""`tunelab ensemble`: answer one prompt with several models that share a tokenizer.

- logit_mean: greedy decoding on the weighted mean of the models' next-token
  log-probabilities, one token at a time, each model keeping its own KV cache.
  Log-softmax subtracts each model's logsumexp, one constant across all tokens at
  a step, so it picks the same token the weighted mean of raw logits would, for
  any weights: a model whose logits spread wider still weighs more. It makes the
  mixed score a weighted mean of log-probabilities (the log of the models'
  weighted geometric mean, unnormalised), comparable across steps and prompts.
- weighted_vote: every model answers greedily on its own; identical answers
  pool their weights and the heaviest answer wins (a tie goes to the answer
  given first, in --models order).
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass

from tunelab.chat import stops
from tunelab.errors import AdapterError

AGGREGATIONS = ("logit_mean", "weighted_vote")


class EnsembleError(AdapterError):
    """Models or weights that cannot form an ensemble."""


@dataclass
class Member:
    name: str
    model: object
    tokenizer: object
    weight: float


def check_weights(weights: list[float]) -> list[float]:
    """Weights normalised to sum 1; all must be >= 0 and at least one > 0."""
    if any(w < 0 for w in weights) or not sum(weights) > 0:
        raise EnsembleError(f"--weights: must be >= 0 with a positive sum, got "
                            f"{', '.join(f'{w:g}' for w in weights)}")
    total = sum(weights)
    return [w / total for w in weights]


def check_same_tokenizer(members: list[Member]) -> None:
    first = members[0]
    vocab = first.tokenizer.get_vocab()
    for other in members[1:]:
        other_vocab = other.tokenizer.get_vocab()
        if other_vocab != vocab:
            differing = sum(1 for token, i in other_vocab.items() if vocab.get(token) != i)
            raise EnsembleError(
                f"{other.name}: its tokenizer differs from {first.name}'s ({len(other_vocab)} vs "
                f"{len(vocab)} tokens, {differing} with other ids); an ensemble needs one tokenizer")
        if stops.stop_ids(other.tokenizer) != stops.stop_ids(first.tokenizer):
            raise EnsembleError(f"{other.name}: its stop tokens (EOS, end of turn) differ from "
                                f"{first.name}'s; an ensemble needs one tokenizer")


def load_members(model_dirs: list[str], weights: list[float], base=None) -> list[Member]:
    from tunelab.eval.inference import resolve_model
    from tunelab.models import loading

    members = []
    for model_dir, weight in zip(model_dirs, weights):
        base_dir, trained_dir = resolve_model(model_dir, base)
        model, tokenizer = loading.load_trained(base_dir or trained_dir, trained_dir)
        members.append(Member(str(model_dir), model, tokenizer, weight))
    check_same_tokenizer(members)
    return members


def cache_argument(model) -> str:
    """The forward() keyword for the KV cache: transformers 5 renames past_key_values to cache."""
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    return "cache" if "cache" in inspect.signature(inner.forward).parameters else "past_key_values"


def logit_mean(members: list[Member], prompt_ids: list[int], max_new_tokens: int) -> str:
    import torch
    from transformers import DynamicCache

    tokenizer = members[0].tokenizer
    vocab_size = len(tokenizer)  # models may pad their output layer beyond the vocabulary
    # Each model keeps its own cache (updated in place), so every step feeds one new token.
    caches = [{cache_argument(m.model): DynamicCache(config=m.model.config)} for m in members]
    step_input = torch.tensor([prompt_ids])
    answer: list[int] = []
    ends = stops.stop_ids(tokenizer, members[0].model.generation_config)
    for _ in range(max_new_tokens):
        mixed = torch.zeros(vocab_size)
        for member, cache in zip(members, caches):
            with torch.no_grad():
                logits = member.model(input_ids=step_input, use_cache=True, **cache).logits
            mixed += member.weight * torch.log_softmax(logits[0, -1, :vocab_size].float(), dim=-1)
        token = int(mixed.argmax())
        if token in ends:
            break
        answer.append(token)
        step_input = torch.tensor([[token]])
    return tokenizer.decode(answer, skip_special_tokens=True).strip()


def weighted_vote(members: list[Member], prompt_ids: list[int],
                  max_new_tokens: int) -> tuple[str, dict[str, float]]:
    """(winning answer, each distinct answer's pooled weight, in first-given order)."""
    from tunelab.eval import evaluation

    tally: dict[str, float] = {}
    for member in members:
        answer = evaluation.generate(member.model, member.tokenizer, [prompt_ids],
                                     max_new_tokens, 1)[0]
        tally[answer] = tally.get(answer, 0.0) + member.weight
    winner = None
    for answer, weight in tally.items():  # strict >: a tie keeps the earlier answer
        if winner is None or weight > tally[winner] + 1e-12:
            winner = answer
    return winner, tally


def answer(model_dirs: list[str], weights: list[float], aggregation: str, prompt: str,
           system: str | None = None, max_new_tokens: int = 128, base=None) -> dict:
    if aggregation not in AGGREGATIONS:
        raise EnsembleError(f"--aggregation: unknown {aggregation!r} "
                            f"(choose from {', '.join(AGGREGATIONS)})")
    if len(weights) != len(model_dirs):
        raise EnsembleError(f"--weights: {len(weights)} weights for {len(model_dirs)} models")
    members = load_members(model_dirs, check_weights(weights), base)
    return aggregate(members, aggregation, prompt, system, max_new_tokens)


def aggregate(members: list[Member], aggregation: str, prompt: str, system: str | None = None,
              max_new_tokens: int = 128) -> dict:
    """{"answer": ...} (and "votes" for weighted_vote) from loaded, weighted members."""
    from tunelab.data import encoding

    messages = ([{"role": "system", "content": system}] if system else []) + \
        [{"role": "user", "content": prompt}, {"role": "assistant", "content": ""}]
    prompt_ids = encoding.prompt_ids(members[0].tokenizer, {"messages": messages})
    if aggregation == "logit_mean":
        return {"answer": logit_mean(members, prompt_ids, max_new_tokens)}
    winner, tally = weighted_vote(members, prompt_ids, max_new_tokens)
    return {"answer": winner, "votes": tally}
