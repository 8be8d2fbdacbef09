"""tunelab.train.align on a tiny random Llama, CPU, fp32: each objective trains a few steps
from an SFT adapter, against the SFT model as its reference, and writes one adapter that
loads as models/adapter does."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import TrainerCallback

from tunelab.models.loading import load_trained
from tunelab.train import align_data
from tunelab.config.params import AlignParams
from tunelab.train.align import align

REPO = Path(__file__).resolve().parents[1]
QUESTIONS = ["The printer on floor 2 is jammed.", "I cannot log in to my email.",
             "The VPN drops every hour.", "My laptop screen flickers."]
TEAMS = ["hardware", "accounts", "network", "hardware"]
PAIRS = [{"prompt": [{"role": "user", "content": question}],
          "chosen": [{"role": "assistant", "content": json.dumps({"team": team})}],
          "rejected": [{"role": "assistant", "content": "Please ask someone else."}],
          "source": f"pairs.jsonl:{line}"}
         for line, (question, team) in enumerate(zip(QUESTIONS, TEAMS), start=1)]
UNPAIRED = [{"prompt": pair["prompt"], "completion": pair[side], "label": side == "chosen",
             "source": pair["source"]} for pair in PAIRS[:2] for side in ("chosen", "rejected")]

# One step is the whole data set (batch 4), so the logged losses compare like with like.
TINY = dict(learning_rate=1e-3, batch_size=4, gradient_accumulation=1, max_length=64,
            precision="fp32", seed=0, logging_steps=1)
STEPS = 5


class LogRecorder(TrainerCallback):
    """Every training log, and (at the end of training) the reference adapter's weights."""

    def __init__(self):
        self.logs = []
        self.reference = {}

    def on_train_end(self, args, state, control, model=None, **kwargs):
        self.reference = {name.replace(".ref.", "."): param.detach().clone()
                          for name, param in model.named_parameters() if ".ref." in name}

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs and "train_runtime" not in logs:
            self.logs.append(dict(logs))

    def values(self, key):
        return [log[key] for log in self.logs if key in log]


@pytest.fixture(scope="module")
def sft_adapter(make_tiny_adapter):
    return make_tiny_adapter("sft", seed=1)


def run(tmp_path, tiny_base_dir, sft_adapter, settings, examples, **kwargs):
    recorder = LogRecorder()
    summary = align(settings, tiny_base_dir, sft_adapter, examples, tmp_path / "adapter",
                    tmp_path / "checkpoints", tmp_path / "live", callbacks=[recorder], **kwargs)
    return summary, recorder


def test_dpo_starts_at_ln2_against_the_sft_model_and_learns_the_pairs(
        tmp_path, tiny_base_dir, sft_adapter):
    settings = AlignParams(objective="dpo", max_steps=STEPS, **TINY)
    summary, recorder = run(tmp_path, tiny_base_dir, sft_adapter, settings, PAIRS,
                            eval_examples=PAIRS[:2])
    losses = recorder.values("loss")
    assert len(losses) == STEPS
    # Policy == reference before the first step only if the reference is base + SFT adapter
    # (with the bare base as reference the SFT adapter's random weights would move it).
    assert losses[0] == pytest.approx(math.log(2), abs=1e-6)
    assert losses == pytest.approx(EXPECTED_DPO_LOSSES, abs=1e-4)
    assert losses[-1] < losses[0]
    margins, accuracies = recorder.values("rewards/margins"), recorder.values("rewards/accuracies")
    assert margins[0] == pytest.approx(0.0, abs=1e-6) and margins[-1] > margins[0]
    assert accuracies[0] == 0.0 and accuracies[-1] > accuracies[0]
    assert summary["steps"] == STEPS
    assert summary["final_loss"] == pytest.approx(losses[-1], abs=1e-6)
    # Held-out pairs, before the first step (policy == reference) and after the last.
    pairs = summary["heldout_pairs"]
    assert pairs["rows"] == 2
    assert pairs["before"] == {"loss": pytest.approx(math.log(2), abs=1e-6),
                               "preference_accuracy": 0.0, "reward_margin": 0.0}
    assert 0 < pairs["after"]["loss"] < math.log(2)
    assert pairs["after"]["preference_accuracy"] == 1.0 and pairs["after"]["reward_margin"] > 0
    # The reference is a frozen copy of the SFT adapter, still equal to it after training.
    sft = load_file(sft_adapter / "adapter_model.safetensors")
    assert recorder.reference.keys() == sft.keys()
    assert all(torch.equal(recorder.reference[name], sft[name]) for name in sft)
    check_saved_adapter(tmp_path / "adapter", tiny_base_dir, sft_adapter, "dpo", STEPS)
    model, _ = load_trained(tiny_base_dir, tmp_path / "adapter")
    assert not any(p.isnan().any() for p in model.parameters())


def test_orpo_loss_falls_without_a_reference(tmp_path, tiny_base_dir, sft_adapter):
    settings = AlignParams(objective="orpo", max_steps=STEPS, **TINY)
    _, recorder = run(tmp_path, tiny_base_dir, sft_adapter, settings, PAIRS)
    losses = recorder.values("loss")
    assert losses == pytest.approx(EXPECTED_ORPO_LOSSES, abs=1e-4)
    assert losses[-1] < losses[0]
    check_saved_adapter(tmp_path / "adapter", tiny_base_dir, sft_adapter, "orpo", STEPS)


def test_kto_starts_at_half_against_the_sft_model_and_loss_falls(
        tmp_path, tiny_base_dir, sft_adapter):
    settings = AlignParams(objective="kto", max_steps=STEPS, **TINY)
    _, recorder = run(tmp_path, tiny_base_dir, sft_adapter, settings, UNPAIRED)
    losses = recorder.values("loss")
    # Policy == reference: every implied reward and the KL estimate are 0, and KTO's loss is
    # 1 - sigmoid(0) for each completion.
    assert losses[0] == pytest.approx(0.5, abs=1e-6)
    assert losses == pytest.approx(EXPECTED_KTO_LOSSES, abs=1e-4)
    assert losses[-1] < losses[0]
    check_saved_adapter(tmp_path / "adapter", tiny_base_dir, sft_adapter, "kto", STEPS)


def test_grpo_rewards_completions_against_the_reference_column(
        tmp_path, tiny_base_dir, sft_adapter):
    from tunelab.config.params import DEFAULT_REWARD
    from tunelab.eval.reward import completion_text, reward_function

    seen_references = []

    class RecordingReward:
        __name__ = "task_reward"
        reward = reward_function("auto", DEFAULT_REWARD)

        def __call__(self, completions, reference, **kwargs):
            seen_references.extend(reference)
            return self.reward(completions, reference, **kwargs)

    def text_length(completions, **kwargs):
        """A reward that varies on a random model's output, so advantages are not all 0 (the
        task reward is 0 for every random completion, and with it the policy gradient)."""
        return [len(completion_text(completion)) / 40 for completion in completions]

    steps = 2
    settings = AlignParams(objective="grpo", max_steps=steps, beta=0.04, num_generations=2,
                             max_completion_length=8, **{**TINY, "batch_size": 2})
    _, recorder = run(tmp_path, tiny_base_dir, sft_adapter, settings, PAIRS[:2],
                            reward_funcs=[RecordingReward(), text_length])
    for key in ("reward", "rewards/task_reward/mean", "rewards/text_length/mean", "kl",
                "completions/mean_length", "loss"):
        assert len(recorder.values(key)) == steps, key
    assert all(0 < length <= 8 for length in recorder.values("completions/mean_length"))
    kl = recorder.values("kl")
    assert kl[0] == pytest.approx(0.0, abs=1e-6) and kl[1] > 0  # the reference is the SFT model
    # Each prompt's two completions were scored against that prompt's chosen answer.
    references = {pair["chosen"][0]["content"] for pair in PAIRS[:2]}
    assert seen_references and set(seen_references) == references
    check_saved_adapter(tmp_path / "adapter", tiny_base_dir, sft_adapter, "grpo", steps)


def test_grpo_raises_a_reward_the_tiny_model_can_learn(tmp_path, tiny_base_dir, sft_adapter):
    """GRPO's policy gradient points the right way: the mean sampled reward rises.

    The task reward cannot show it here (a random model never writes JSON, so every sample
    scores 0 and every advantage is 0). The reward is the share of even token ids in the
    completion: at temperature 0.3 the tiny model picks among a few likely tokens per
    position (entropy ~1.5 nats instead of ~8 at 1.0, where it samples nearly uniformly from
    49k tokens and no small adapter moves a half-vocabulary class), so samples differ in
    reward and the adapter can move probability between the candidates.
    """
    def even_tokens(completions, completion_ids, **kwargs):
        return [sum(token % 2 == 0 for token in ids) / len(ids) for ids in completion_ids]

    steps = 16
    settings = AlignParams(objective="grpo", max_steps=steps, beta=0.04, num_generations=8,
                           max_completion_length=8, temperature=0.3,
                           **{**TINY, "batch_size": 2, "learning_rate": 3e-3})
    _, recorder = run(tmp_path, tiny_base_dir, sft_adapter, settings, PAIRS[:2],
                      reward_funcs=[even_tokens])
    rewards = recorder.values("reward")
    assert len(rewards) == steps
    # The first step samples the SFT model itself: 59 of its 128 tokens are even.
    assert rewards[0] == pytest.approx(59 / 128)
    first, last = sum(rewards[:4]) / 4, sum(rewards[-4:]) / 4
    assert last > first + 0.15, rewards  # measured 0.475 -> 0.742
    assert recorder.values("kl")[-1] > 0


SHORT_ANSWER = f"{REPO}/configs/scorers/short_answer.py:score"
NUMBER_QUESTIONS = [({"role": "user", "content": question}, answer) for question, answer in
                    [("How many legs has a spider? Answer with the number only.", "8"),
                     ("What is 6 times 7? Answer with the number only.", "42")]]


def test_grpo_raises_the_shipped_short_answer_scorers_reward(tmp_path, tiny_base_dir, sft_adapter):
    """The plugin scorer (configs/scorers/short_answer.py) is GRPO's reward through
    align.reward's weights, by the same path the align stage takes (reward_function with
    the scorer's spec). A random tiny model never writes the right number, so what it can
    raise is `concise` (1 / words): shorter answers. The mean reward rises."""
    from tunelab.eval import reward, scorers

    examples = [{"messages": [question, {"role": "assistant", "content": answer}],
                 "source": f"numbers.jsonl:{line}"}
                for line, (question, answer) in enumerate(NUMBER_QUESTIONS, start=1)]
    weights = {"correct": 0.8, "concise": 0.2}
    prompts = align_data.to_grpo_dataset(examples)
    reward.check_weights(scorers.load(SHORT_ANSWER), prompts["reference"],
                         [json.loads(r) for r in prompts["record"]], weights)
    steps = 16
    settings = AlignParams(objective="grpo", max_steps=steps, beta=0.04, num_generations=8,
                           max_completion_length=8, temperature=0.3, reward=weights,
                           **{**TINY, "batch_size": 2, "learning_rate": 3e-3})
    _, recorder = run(tmp_path, tiny_base_dir, sft_adapter, settings, examples,
                      reward_funcs=[reward.reward_function(SHORT_ANSWER, weights)])
    rewards = recorder.values("reward")
    assert len(rewards) == steps
    assert rewards[0] == pytest.approx(EXPECTED_FIRST_SHORT_ANSWER_REWARD, abs=1e-6)
    first, last = sum(rewards[:4]) / 4, sum(rewards[-4:]) / 4
    assert last > first * 1.25, rewards  # measured 0.0437 -> 0.0606
    assert recorder.values("rewards/task_reward/mean") == rewards  # the one reward function


def test_datasets_carry_the_columns_trl_reads():
    paired = align_data.to_preference_dataset(PAIRS)
    assert paired.column_names == ["prompt", "chosen", "rejected"]
    kto = align_data.to_kto_dataset(PAIRS[:1])
    assert kto["label"] == [True, False]
    sft = {"messages": [{"role": "user", "content": "Hi"},
                        {"role": "assistant", "content": "Hello", "train": False},
                        {"role": "user", "content": "Route: disk full"},
                        {"role": "assistant", "content": '{"team": "hardware"}'}]}
    grpo = align_data.to_grpo_dataset([PAIRS[0], sft, UNPAIRED[1]])  # the rejected one is left out
    assert grpo["reference"] == ['{"team": "hardware"}', '{"team": "hardware"}']
    assert grpo["prompt"][1][1] == {"role": "assistant", "content": "Hello"}
    assert len(grpo["prompt"][1]) == 3


def check_saved_adapter(adapter_dir, base_dir, sft_dir, objective, steps):
    """One adapter, as models/adapter: loads with load_trained, differs from the SFT one."""
    config = json.loads((adapter_dir / "adapter_config.json").read_text())
    assert config["target_modules"] == sorted(config["target_modules"])
    assert not (adapter_dir / "ref").exists() and not (adapter_dir / "training_args.bin").exists()
    assert json.loads((adapter_dir / "tunelab_train.json").read_text())["method"] == "lora"
    info = json.loads((adapter_dir / "tunelab_align.json").read_text())
    assert info["objective"] == objective and info["steps"] == steps
    aligned = load_file(adapter_dir / "adapter_model.safetensors")
    sft = load_file(sft_dir / "adapter_model.safetensors")
    assert aligned.keys() == sft.keys()
    assert any(not torch.equal(aligned[name], sft[name]) for name in sft)


# Tiny seeded Llama, SFT adapter r4 seed 1, fp32, CPU, TRL 1.16 / PEFT 0.21 / torch 2.13: the
# first DPO and KTO values are exact (policy == reference); a library upgrade that moves the
# rest says so here.
EXPECTED_FIRST_SHORT_ANSWER_REWARD = 0.041488  # ~5 words per 8-token answer: 0.2 / 5
EXPECTED_DPO_LOSSES = [0.693147, 0.541675, 0.442924, 0.383534, 0.349459]
EXPECTED_ORPO_LOSSES = [13.982590, 13.810425, 13.678691, 13.584371, 13.523805]
EXPECTED_KTO_LOSSES = [0.5, 0.453814, 0.420301, 0.396818, 0.381585]
