"""`tunelab ensemble` on tiny random adapters: logit_mean and weighted_vote."""

import copy
import dataclasses

import pytest
import torch

from tunelab.adapters import ensemble
from tunelab.cli import app as cli
from tunelab.data import encoding
from tunelab.eval import inference

PROMPT = "Name a colour."
TOKENS = 6


@pytest.fixture(scope="module")
def members(make_tiny_adapter):
    """Two adapters that answer PROMPT differently, with those answers."""
    a, b = make_tiny_adapter("vote_a", seed=11), make_tiny_adapter("vote_b", seed=12)
    answers = {str(d): inference.answer(d, PROMPT, max_new_tokens=TOKENS)["tuned"] for d in (a, b)}
    assert answers[str(a)] != answers[str(b)]  # the vote tests need two different answers
    return str(a), str(b), answers


@pytest.fixture(scope="module")
def loaded(members):
    """The two adapters loaded once: {"a": Member, "b": Member} (weights set per test)."""
    a, b, _ = members
    return dict(zip("ab", ensemble.load_members([a, b], [1.0, 1.0])))


def weighted(loaded, order: str, weights: list[float]) -> list:
    return [dataclasses.replace(loaded[key], weight=w)
            for key, w in zip(order, ensemble.check_weights(weights))]


def greedy_on_mean_log_probs(members: list, weights: list[float]) -> tuple[str, float]:
    """By hand, without a KV cache: (the answer greedy decoding on sum_i w_i *
    log_softmax(logits_i) gives, the smallest top-1 minus top-2 gap over its steps)."""
    tokenizer = members[0].tokenizer
    messages = [{"role": "user", "content": PROMPT}, {"role": "assistant", "content": ""}]
    ids = encoding.prompt_ids(tokenizer, {"messages": messages})
    answer, smallest_gap = [], float("inf")
    for _ in range(TOKENS):
        with torch.no_grad():
            mixed = sum(w * torch.log_softmax(m.model(input_ids=torch.tensor([ids]))
                                              .logits[0, -1, :len(tokenizer)], dim=-1)
                        for m, w in zip(members, weights))
        top = mixed.topk(2).values
        smallest_gap = min(smallest_gap, float(top[0] - top[1]))
        token = int(mixed.argmax())
        if token == tokenizer.eos_token_id:
            break
        answer.append(token)
        ids = ids + [token]
    return tokenizer.decode(answer, skip_special_tokens=True).strip(), smallest_gap


def test_logit_mean_of_a_model_with_itself_is_its_greedy_answer(members, loaded):
    a, _, answers = members
    result = ensemble.aggregate(weighted(loaded, "aa", [0.3, 0.7]), "logit_mean", PROMPT,
                                max_new_tokens=TOKENS)
    assert result == {"answer": answers[a]}


@pytest.mark.parametrize("weights", [[0.5, 0.5], [0.9, 0.1], [0.1, 0.9], [0.3, 0.7]])
def test_logit_mean_is_greedy_on_the_weighted_mean_of_log_probs(loaded, weights):
    expected, smallest_gap = greedy_on_mean_log_probs([loaded["a"], loaded["b"]], weights)
    assert smallest_gap > 1e-3  # no near-tie: float summation order cannot flip a token
    result = ensemble.aggregate(weighted(loaded, "ab", weights), "logit_mean", PROMPT,
                                max_new_tokens=TOKENS)
    assert result == {"answer": expected}


def test_logit_mean_of_two_models_mixes_them(members, loaded):
    """Equal weights give an answer neither model gives alone: the mean was really taken."""
    a, b, answers = members
    mixed, _ = greedy_on_mean_log_probs([loaded["a"], loaded["b"]], [0.5, 0.5])
    assert mixed not in (answers[a], answers[b])
    assert greedy_on_mean_log_probs([loaded["a"], loaded["b"]], [1.0, 0.0])[0] == answers[a]
    assert greedy_on_mean_log_probs([loaded["a"], loaded["b"]], [0.0, 1.0])[0] == answers[b]


def test_logit_mean_of_two_models_prints_one_answer(members, loaded, capsys):
    a, b, _ = members
    code = cli.main(["ensemble", "--models", f"{a},{b}", "--weights", "1,1", "--prompt", PROMPT,
                     "--max-new-tokens", str(TOKENS)])
    assert code == 0
    printed = capsys.readouterr().out.strip()
    assert printed != ""
    assert printed == greedy_on_mean_log_probs([loaded["a"], loaded["b"]], [0.5, 0.5])[0]


@pytest.mark.parametrize("order, weights, winner", [
    ("ab", [0.3, 0.7], "b"),          # the heavier answer wins
    ("aab", [0.3, 0.3, 0.4], "a"),    # identical answers pool their weight: 0.6 > 0.4
    ("ab", [0.5, 0.5], "a"),          # a tie goes to the answer given first
    ("ab", [0.9, 0.1], "a"),          # the same two models: the weights alone pick the winner
    ("ab", [0.1, 0.9], "b"),
    ("ba", [0.9, 0.1], "b"),
    ("ba", [0.1, 0.9], "a"),
])
def test_weighted_vote(members, loaded, order, weights, winner):
    a, b, answers = members
    result = ensemble.aggregate(weighted(loaded, order, weights), "weighted_vote", PROMPT,
                                max_new_tokens=TOKENS)
    assert result["answer"] == answers[{"a": a, "b": b}[winner]]
    pooled = {answers[a]: sum(w for k, w in zip(order, weights) if k == "a") / sum(weights),
              answers[b]: sum(w for k, w in zip(order, weights) if k == "b") / sum(weights)}
    assert result["votes"] == pytest.approx(pooled)


def test_models_with_different_tokenizers_are_refused(loaded):
    other_tokenizer = copy.deepcopy(loaded["b"].tokenizer)
    other_tokenizer.add_tokens(["<extra_token>"])
    other = dataclasses.replace(loaded["b"], name="other", tokenizer=other_tokenizer)
    with pytest.raises(ensemble.EnsembleError) as raised:
        ensemble.check_same_tokenizer([loaded["a"], other])
    vocab = len(loaded["a"].tokenizer.get_vocab())
    assert str(raised.value) == (f"other: its tokenizer differs from {loaded['a'].name}'s "
                                 f"({vocab + 1} vs {vocab} tokens, 1 with other ids); "
                                 "an ensemble needs one tokenizer")


@pytest.mark.parametrize("weights, message", [
    ("1", "--weights: 1 weights for 2 models"),
    ("1,-1", "--weights: must be >= 0 with a positive sum, got 1, -1"),
    ("0,0", "--weights: must be >= 0 with a positive sum, got 0, 0"),
])
def test_bad_weights_are_one_line_errors(members, capsys, weights, message):
    code = cli.main(["ensemble", "--models", f"{members[0]},{members[1]}", "--weights", weights,
                     "--prompt", PROMPT])
    assert code == 1
    assert capsys.readouterr().err == f"tunelab ensemble: error: {message}\n"
