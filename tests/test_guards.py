"""Training guards: non-finite loss and grad-norm spikes stop training with the knob to
turn; out-of-memory is answered with the next settings to try (tunelab.guards)."""

import math

import pytest
import torch
from trl import SFTTrainer

from tunelab import pipeline
from tunelab.config.params import GuardParams, LoraParams, TrainParams
from tunelab.errors import TrainingError
from tunelab.train import guards, training
from tunelab.train.guards import Guard
from tunelab.util import files

ROWS = [{"messages": [{"role": "user", "content": f"Colour of thing {i}?"},
                      {"role": "assistant", "content": ["red", "blue"][i % 2]}],
         "task": None, "source": f"c.jsonl:{i}"} for i in range(8)]


def tiny_params(**changes) -> TrainParams:
    base = dict(learning_rate=1e-2, max_steps=4, batch_size=4, logging_steps=1, save_steps=0,
                eval_steps=0, warmup_ratio=0.0, precision="fp32", lora=LoraParams(r=4, alpha=8))
    return TrainParams(**{**base, **changes})


@pytest.fixture
def run_training(tiny_base_dir, tmp_path):
    files.write_jsonl_atomic(tmp_path / "train.jsonl", ROWS)

    def run(p):
        return training.train(p, tiny_base_dir, tmp_path / "train.jsonl", None,
                              tmp_path / "adapter", tmp_path / "live", tmp_path / "ckpt")
    return run


# --- Guard on logged values --------------------------------------------------------

def test_nan_loss_names_the_learning_rate_and_clipping():
    guard = Guard(TrainParams(learning_rate=1e-3, max_grad_norm=0.0))
    with pytest.raises(TrainingError) as caught:
        guard.check(7, {"loss": math.nan, "grad_norm": 1.0})
    assert str(caught.value) == ("loss is nan at step 7: training diverged; lower "
                                 "train.learning_rate (try 1e-04) or enable clipping with "
                                 "train.max_grad_norm (try 1.0)")


def test_infinite_grad_norm_with_full_method_names_full_learning_rate():
    guard = Guard(TrainParams(method="full", full_learning_rate=2e-5, max_grad_norm=1.0))
    with pytest.raises(TrainingError, match=r"^grad norm is inf at step 3: training diverged; "
                       r"lower train.full_learning_rate \(try 2e-06\) or lower "
                       r"train.max_grad_norm \(try 0.5\)$"):
        guard.check(3, {"loss": 1.0, "grad_norm": math.inf})


def test_grad_norm_spike_after_warmup_logs_stops_training():
    guard = Guard(TrainParams(guard=GuardParams(grad_norm_factor=10.0, warmup_logs=3)))
    guard.check(1, {"grad_norm": 500.0})  # no level yet: early norms are not judged
    for step, norm in enumerate([2.0, 1.0, 1.5, 1.2], start=2):
        guard.check(step, {"loss": 1.0, "grad_norm": norm})
    guard.check(6, {"grad_norm": 14.9})  # under 10 x the median of (500, 2, 1, 1.5, 1.2)
    with pytest.raises(TrainingError) as caught:
        guard.check(7, {"grad_norm": 30.0})
    assert str(caught.value) == (
        "grad norm 30 at step 7 is 17x its recent median 1.75 (train.guard.grad_norm_factor=10): "
        "training is unstable; lower train.learning_rate (try 1e-04) or lower "
        "train.max_grad_norm (try 0.5)")


def test_grad_norm_factor_zero_turns_the_spike_check_off():
    guard = Guard(TrainParams(guard=GuardParams(grad_norm_factor=0.0, warmup_logs=1)))
    for step, norm in enumerate([1.0, 1.0, 1e6], start=1):
        guard.check(step, {"grad_norm": norm})


def test_injected_nan_stops_real_training_with_nothing_written(run_training, monkeypatch, tmp_path):
    compute_loss = SFTTrainer.compute_loss

    def nan_from_step_3(self, *args, **kwargs):
        loss = compute_loss(self, *args, **kwargs)
        return loss * math.nan if self.state.global_step >= 2 else loss

    monkeypatch.setattr(SFTTrainer, "compute_loss", nan_from_step_3)
    with pytest.raises(TrainingError) as caught:
        run_training(tiny_params(max_grad_norm=1.0))
    assert str(caught.value).startswith("loss is nan at step 3: training diverged; lower "
                                        "train.learning_rate (try 1e-03)")
    assert not (tmp_path / "adapter").exists()
    logged = (tmp_path / "live/plots/metrics/loss.tsv").read_text().splitlines()
    assert logged[-1].startswith("3\tnan")  # the diverged step is in the curve, then it stops


def test_huge_learning_rate_is_stopped_naming_the_knob(run_training):
    with pytest.raises(TrainingError) as caught:
        run_training(tiny_params(learning_rate=1e4, max_grad_norm=0.0, max_steps=12,
                                 guard=GuardParams(grad_norm_factor=5.0, warmup_logs=1)))
    message = str(caught.value)
    assert "lower train.learning_rate (try 1e+03)" in message, message
    assert "enable clipping with train.max_grad_norm (try 1.0)" in message, message


def test_training_error_is_one_line_from_a_stage(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "params.yaml").write_text("train:\n  max_steps: 2\n")

    def main():
        raise TrainingError("loss is nan at step 3: training diverged")

    with pytest.raises(SystemExit) as exited:
        pipeline.run(main, "train", argv=[])
    assert exited.value.code == 1
    assert capsys.readouterr().err == "train: error: loss is nan at step 3: training diverged\n"


# --- out of memory -----------------------------------------------------------------

@pytest.mark.parametrize("error", [
    torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB\nmore detail"),
    RuntimeError("[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't allocate "
                 "memory: you tried to allocate 4294967296 bytes."),
])
def test_out_of_memory_in_a_step_gives_the_next_settings(run_training, monkeypatch, tmp_path,
                                                         error):
    def out_of_memory(self, *args, **kwargs):
        raise error

    monkeypatch.setattr(SFTTrainer, "training_step", out_of_memory)
    with pytest.raises(TrainingError) as caught:
        run_training(tiny_params())
    reason = str(error).splitlines()[0][:160]
    assert str(caught.value) == (
        f"out of memory at train.batch_size=4, train.max_length=256 ({reason}); try "
        "train.batch_size: 2 with train.gradient_accumulation: 2 (same effective batch); "
        "train.method: qlora (a 4-bit base); train.gradient_checkpointing: true; "
        "train.max_length: 128")
    assert not (tmp_path / "adapter").exists()


def test_oom_advice_skips_what_is_already_set():
    p = TrainParams(method="qlora", batch_size=1, gradient_checkpointing=True, max_length=128)
    assert guards.oom_advice(p, MemoryError()) == (
        "out of memory at train.batch_size=1, train.max_length=128 (MemoryError); "
        "try a machine with more memory")


def test_other_runtime_errors_pass_through(run_training, monkeypatch):
    def broken(self, *args, **kwargs):
        raise RuntimeError("shape mismatch")

    monkeypatch.setattr(SFTTrainer, "training_step", broken)
    with pytest.raises(RuntimeError, match="^shape mismatch$"):
        run_training(tiny_params())
