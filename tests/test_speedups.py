"""The training speed-ups are exact where they claim to be (tunelab.train.speedups):
answer-only logits and padding-free attention give the loss (and gradients) of the plain
full-logits, padded computation to 1e-6; torch.compile gives the eager first loss to 1e-5.
Real trainers (training.build_trainer) on the tiny random Llama, fp32 on CPU."""

import inspect

import pytest
import torch

from tunelab.config.params import LoraParams, TrainParams
from tunelab.train import speedups, training
from tunelab.util import files

from test_resume import colour_rows  # noqa: E402  (tests/ is on sys.path under pytest)

BEFORE = dict(padding_free=False, answer_only_logits=False)  # tunelab's path before issue 14


def params(**changes) -> TrainParams:
    return TrainParams(method="lora", max_steps=1, batch_size=4, eval_steps=0, save_steps=0,
                       precision="fp32", lora=LoraParams(r=4, alpha=8), **changes)


@pytest.fixture(scope="module")
def train_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("speedups") / "train.jsonl"
    rows = colour_rows(2)
    # Prompts of different lengths, so a padded batch really has padding.
    rows[1]["messages"][0]["content"] += " Please answer with one word, in lower case."
    files.write_jsonl_atomic(path, rows)
    return path


def build(p, tiny_base_dir, train_file, tmp_path):
    trainer, _, _ = training.build_trainer(p, tiny_base_dir, train_file, tmp_path / "checkpoints")
    trainer.model.train()
    return trainer


def loss_and_grads(trainer, examples=4):
    """(loss, {name: grad}) of the first ``examples`` training rows, one collated batch."""
    rows = [trainer.train_dataset[i] for i in range(examples)]
    inputs = trainer._prepare_inputs(trainer.data_collator(rows))
    trainer.model.zero_grad()
    loss = trainer.compute_loss(trainer.model, inputs)
    loss.backward()
    grads = {name: p.grad.clone() for name, p in trainer.model.named_parameters() if p.requires_grad}
    return loss.item(), grads, inputs


def reference_loss(trainer, examples=4) -> float:
    """transformers' own loss: the full logits of a right-padded batch, labels shifted inside."""
    rows = [trainer.train_dataset[i] for i in range(examples)]
    width = max(len(r["input_ids"]) for r in rows)
    ids = torch.tensor([r["input_ids"] + [0] * (width - len(r["input_ids"])) for r in rows])
    labels = torch.tensor([r["labels"] + [-100] * (width - len(r["labels"])) for r in rows])
    mask = torch.tensor([[1] * len(r["input_ids"]) + [0] * (width - len(r["input_ids"]))
                         for r in rows])
    with torch.no_grad():
        return trainer.model(input_ids=ids, attention_mask=mask, labels=labels).loss.item()


def test_every_speedup_gives_the_plain_padded_full_logits_loss(tiny_base_dir, train_file, tmp_path):
    before = build(params(**BEFORE), tiny_base_dir, train_file, tmp_path / "before")
    before_loss, before_grads, before_inputs = loss_and_grads(before)
    assert "attention_mask" in before_inputs and (before_inputs["attention_mask"] == 0).any()
    assert before_loss == pytest.approx(reference_loss(before), abs=1e-6)
    assert before_loss > 1.0  # a random model: a real loss, not a degenerate zero
    for changes in ({"answer_only_logits": True, "padding_free": False},
                    {"answer_only_logits": False, "padding_free": True},
                    {}):  # the defaults: both
        fast = build(params(**changes), tiny_base_dir, train_file, tmp_path / str(len(changes)))
        loss, grads, inputs = loss_and_grads(fast)
        assert ("attention_mask" in inputs) == (not fast.args.padding_free)
        assert loss == pytest.approx(before_loss, abs=1e-6), changes
        assert grads.keys() == before_grads.keys()
        for name, grad in grads.items():
            torch.testing.assert_close(grad, before_grads[name], atol=1e-6, rtol=1e-5, msg=name)


def scored_rows(trainer, monkeypatch) -> int:
    """How many positions TRL's fused LM head projects for one batch."""
    from types import SimpleNamespace

    from trl.trainer import utils as trl_utils

    seen = []
    apply = trl_utils._ChunkedLogProbFunction.apply
    monkeypatch.setattr(trl_utils, "_ChunkedLogProbFunction", SimpleNamespace(
        apply=lambda hidden, *rest: seen.append(hidden.shape[0]) or apply(hidden, *rest)))
    loss_and_grads(trainer)
    return seen[0]


def test_answer_only_logits_scores_only_trained_positions(tiny_base_dir, train_file, tmp_path,
                                                          monkeypatch):
    every = build(params(padding_free=True, answer_only_logits=False), tiny_base_dir, train_file,
                  tmp_path / "every")
    answer_only = build(params(padding_free=True), tiny_base_dir, train_file, tmp_path / "answers")
    rows = [answer_only.train_dataset[i] for i in range(4)]
    tokens = sum(len(r["input_ids"]) for r in rows)
    # Shifted: the last position predicts nothing; the first token of each example is masked.
    trained = sum(sum(label != -100 for label in r["labels"][1:]) for r in rows)
    assert 0 < trained < tokens / 2
    assert scored_rows(every, monkeypatch) == tokens - 1
    assert scored_rows(answer_only, monkeypatch) == trained


def test_the_trl_decision_answer_only_scoring_overrides_is_still_there():
    """answer_only_scoring swaps one private name of the pinned TRL; an upgrade that moves it
    must fail here, not silently score every position again."""
    from trl.trainer import utils as trl_utils

    assert "compact = _use_triton(hidden_states.device)" in inspect.getsource(
        trl_utils.add_fused_lm_head)
    assert trl_utils._use_triton(torch.device("cpu")) is False
    with speedups.answer_only_scoring():
        assert trl_utils._use_triton(torch.device("cpu")) is True
    assert trl_utils._use_triton(torch.device("cpu")) is False


def test_varlen_attention_equals_padded_attention(tiny_base_dir):
    """Hidden states of two examples in one padding-free row equal those of the padded batch."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_base_dir, dtype=torch.float32).eval()
    lengths = (7, 12)
    torch.manual_seed(0)
    examples = [torch.randint(3, 1000, (n,)) for n in lengths]
    padded = torch.zeros(2, max(lengths), dtype=torch.long)
    mask = torch.zeros_like(padded)
    for row, ids in enumerate(examples):
        padded[row, :len(ids)], mask[row, :len(ids)] = ids, 1
    with torch.no_grad():
        expected = model(input_ids=padded, attention_mask=mask, output_hidden_states=True)
        speedups.use_varlen_sdpa(model)
        row = torch.cat(examples)[None]
        positions = torch.cat([torch.arange(n) for n in lengths])[None]
        bounds = torch.tensor([0, lengths[0], sum(lengths)], dtype=torch.int32)
        got = model(input_ids=row, position_ids=positions, cu_seq_lens_q=bounds,
                    cu_seq_lens_k=bounds, max_length_q=max(lengths), max_length_k=max(lengths),
                    output_hidden_states=True)
    assert model.config._attn_implementation == speedups.VARLEN_SDPA
    for layer, hidden in enumerate(got.hidden_states):
        flat = torch.cat([expected.hidden_states[layer][i, :n] for i, n in enumerate(lengths)])
        # float rounding of another kernel (SDPA causal per span vs masked): 1e-5 of the scale
        scale = flat.abs().max().item()
        torch.testing.assert_close(hidden[0], flat, atol=1e-5 * scale, rtol=0, msg=f"layer {layer}")
    # A padded batch through the same implementation is masked as under sdpa.
    with torch.no_grad():
        again = model(input_ids=padded, attention_mask=mask).logits
    torch.testing.assert_close(again, expected.logits, atol=0, rtol=0)  # the very same kernel


def test_group_by_length_uses_the_length_grouped_sampler(tiny_base_dir, train_file, tmp_path):
    from transformers.trainer_pt_utils import LengthGroupedSampler

    grouped = build(params(group_by_length=True), tiny_base_dir, train_file, tmp_path / "g")
    plain = build(params(), tiny_base_dir, train_file, tmp_path / "p")
    assert isinstance(grouped._get_train_sampler(), LengthGroupedSampler)
    assert not isinstance(plain._get_train_sampler(), LengthGroupedSampler)


def test_compiled_and_eager_give_the_same_first_loss(tiny_base_dir, train_file, tmp_path):
    eager = training.train(params(), tiny_base_dir, train_file, None, tmp_path / "eager",
                           tmp_path / "eager_live", tmp_path / "eager_ckpt")
    compiled = training.train(params(compile=True), tiny_base_dir, train_file, None,
                              tmp_path / "compiled", tmp_path / "compiled_live",
                              tmp_path / "compiled_ckpt")
    assert eager["train_loss"] > 1.0
    assert compiled["train_loss"] == pytest.approx(eager["train_loss"], abs=1e-5)
