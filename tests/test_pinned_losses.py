"""Pinned loss curves, torchtune recipe-test style: tunelab's real training path
(training.train: TRL SFTTrainer + PEFT) on the tiny seeded random Llama, fp32 on CPU,
a loss logged every step and compared with the values written below (to 1e-5). Then
the run is crashed right after a checkpoint is complete and resumed from it: the
resumed run's whole logged curve must equal the same pinned values.

When a torch/transformers/TRL/PEFT upgrade moves these numbers, this test fails: rerun
with ``-s`` (the measured curve is printed), check why they moved, and update them in
the commit that does the upgrade, saying why."""

import pytest

from tunelab.config.params import LoraParams, TrainParams
from tunelab.train import run_support, training
from tunelab.util import files

from test_resume import colour_rows  # noqa: E402  (tests/ is on sys.path under pytest)
from test_training import read_tsv  # noqa: E402

STEPS = 5  # colour_rows(3): 12 examples, 3 batches of 4 an epoch: the run reshuffles once
SAVE_EVERY = 2
CRASH_AT = 2  # the crashed run leaves checkpoint-2; the resumed run trains steps 3..5
COMMON = dict(max_steps=STEPS, batch_size=4, logging_steps=1, eval_steps=0,
              save_steps=SAVE_EVERY, warmup_ratio=0.0, precision="fp32", seed=42)
PARAMS = {
    "lora": TrainParams(method="lora", learning_rate=1e-2,
                        lora=LoraParams(r=4, alpha=8, dropout=0.0), **COMMON),
    "full": TrainParams(method="full", full_learning_rate=1e-4, **COMMON),
}
# Measured with torch 2.13.0+cpu, transformers 5.24.0, TRL 1.16.0, PEFT 0.21.2.
EXPECTED_LOSSES = {
    "lora": [12.834389, 11.143505, 10.232564, 8.945996, 8.323678],
    "full": [12.834389, 11.938271, 12.400121, 11.365577, 12.070854],
}
EXPECTED_EVAL_LOSS = {"lora": 8.365897, "full": 11.737057}


class SimulatedCrash(Exception):
    """Raised from the trainer's save hook: the process "dies" with a checkpoint on disk."""


@pytest.fixture(scope="module")
def colour_data(tmp_path_factory):
    folder = tmp_path_factory.mktemp("colours")
    files.write_jsonl_atomic(folder / "train.jsonl", colour_rows(3))
    files.write_jsonl_atomic(folder / "val.jsonl", colour_rows(1))
    return folder


def run_training(method: str, base_dir, data_dir, out_dir) -> tuple[dict, list[tuple[int, float]]]:
    """(summary, [(step, loss), ...] as logged to out_dir/live) of one training.train call."""
    summary = training.train(PARAMS[method], base_dir, data_dir / "train.jsonl",
                             data_dir / "val.jsonl", out_dir / "trained", out_dir / "live",
                             out_dir / "checkpoints")
    curve = read_tsv(out_dir / "live/plots/metrics/loss.tsv")
    print(f"{method}: losses {[loss for _, loss in curve]}, eval_loss {summary['eval_loss']}")
    return summary, curve


def assert_pinned(method: str, summary: dict, curve: list[tuple[int, float]]) -> None:
    assert [step for step, _ in curve] == list(range(1, STEPS + 1))  # each step logged once
    assert [loss for _, loss in curve] == pytest.approx(EXPECTED_LOSSES[method], abs=1e-5)
    # The summary's train_loss is the mean over all steps, across a resume too.
    assert summary["train_loss"] == pytest.approx(sum(EXPECTED_LOSSES[method]) / STEPS, abs=1e-5)
    assert summary["eval_loss"] == pytest.approx(EXPECTED_EVAL_LOSS[method], abs=1e-5)
    assert summary["steps"] == STEPS


@pytest.mark.parametrize("method", list(PARAMS))
def test_loss_curve_is_pinned(method, tiny_base_dir, colour_data, tmp_path):
    summary, curve = run_training(method, tiny_base_dir, colour_data, tmp_path)
    assert_pinned(method, summary, curve)


@pytest.mark.parametrize("method", list(PARAMS))
def test_crashed_and_resumed_run_logs_the_pinned_curve(method, tiny_base_dir, colour_data,
                                                       tmp_path, capsys):
    completed_save = run_support.CheckpointKeeper.on_save

    def save_then_crash(self, args, state, control, **kwargs):
        completed_save(self, args, state, control, **kwargs)  # marker written: checkpoint complete
        if state.global_step == CRASH_AT:
            raise SimulatedCrash(f"crashed after checkpoint-{CRASH_AT}")

    with pytest.MonkeyPatch.context() as monkeypatch:
        monkeypatch.setattr(run_support.CheckpointKeeper, "on_save", save_then_crash)
        with pytest.raises(SimulatedCrash):
            run_training(method, tiny_base_dir, colour_data, tmp_path)
    assert not (tmp_path / "trained").exists()
    crashed_curve = read_tsv(tmp_path / "live/plots/metrics/loss.tsv")
    assert [step for step, _ in crashed_curve] == list(range(1, CRASH_AT + 1))
    capsys.readouterr()

    summary, curve = run_training(method, tiny_base_dir, colour_data, tmp_path)
    # It continued from the checkpoint (a fresh start would log the same curve).
    assert f"train: resuming from {tmp_path / 'checkpoints'}/checkpoint-{CRASH_AT} " \
           f"(step {CRASH_AT})" in capsys.readouterr().out
    assert_pinned(method, summary, curve)
    log = (tmp_path / "live/training.log").read_text().splitlines()
    assert [line.split()[1] for line in log if " loss=" in line] == \
        [f"{step}/{STEPS}" for step in range(1, STEPS + 1)]
