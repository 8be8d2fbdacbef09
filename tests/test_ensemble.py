"""`tunelab ensemble` on tiny random adapters: logit_mean and weighted_vote."""

import copy
import dataclasses

import pytest
from tunelab import cli, ensemble, inference

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


def test_logit_mean_of_a_model_with_itself_is_its_greedy_answer(members, loaded):
    a, _, answers = members
    result = ensemble.aggregate(weighted(loaded, "aa", [0.3, 0.7]), "logit_mean", PROMPT,
                                max_new_tokens=TOKENS)
    assert result == {"answer": answers[a]}


def test_logit_mean_of_two_models_prints_one_answer(members, capsys):
    a, b, _ = members
    code = cli.main(["ensemble", "--models", f"{a},{b}", "--weights", "1,1", "--prompt", PROMPT,
                     "--max-new-tokens", str(TOKENS)])
    assert code == 0
    assert capsys.readouterr().out.strip() != ""


@pytest.mark.parametrize("order, weights, winner", [
    ("ab", [0.3, 0.7], "b"),          # the heavier answer wins
    ("aab", [0.3, 0.3, 0.4], "a"),    # identical answers pool their weight: 0.6 > 0.4
    ("ab", [0.5, 0.5], "a"),          # a tie goes to the answer given first
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
