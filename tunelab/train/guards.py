"""Training guards: stop a diverging run early and say which knob to turn;
answer out-of-memory with the next settings to try.

The checks run on every logged step (train.logging_steps): the trainer reports
loss and grad norm only there. transformers is imported lazily, so importing this
module stays quick.
"""

from __future__ import annotations

import math
import statistics
from collections import deque
from tunelab.errors import TrainingError

RECENT_LOGS = 10  # the grad-norm level is the median of this many recent logs



def _rate_knob(p) -> tuple[str, float]:
    if p.method == "full":
        return "train.full_learning_rate", p.full_learning_rate
    return "train.learning_rate", p.learning_rate


def _lower_rate(p) -> str:
    knob, rate = _rate_knob(p)
    return f"lower {knob} (try {rate / 10:.0e})"


def _clipping(p) -> str:
    if p.max_grad_norm <= 0:
        return "enable clipping with train.max_grad_norm (try 1.0)"
    return f"lower train.max_grad_norm (try {p.max_grad_norm / 2:g})"


class Guard:
    """Checks each log; raises TrainingError on non-finite loss or a grad-norm spike."""

    def __init__(self, p):
        self.p = p
        self.recent_norms: deque[float] = deque(maxlen=RECENT_LOGS)

    def check(self, step: int, logs: dict) -> None:
        for key in ("loss", "eval_loss"):
            value = logs.get(key)
            if value is not None and not math.isfinite(value):
                raise TrainingError(f"{key} is {value} at step {step}: training diverged; "
                                    f"{_lower_rate(self.p)} or {_clipping(self.p)}")
        norm = logs.get("grad_norm")
        if norm is None:
            return
        if not math.isfinite(norm):
            raise TrainingError(f"grad norm is {norm} at step {step}: training diverged; "
                                f"{_lower_rate(self.p)} or {_clipping(self.p)}")
        factor = self.p.guard.grad_norm_factor
        if factor > 0 and len(self.recent_norms) >= self.p.guard.warmup_logs:
            level = statistics.median(self.recent_norms)
            if level > 0 and norm > factor * level:
                raise TrainingError(
                    f"grad norm {norm:.4g} at step {step} is {norm / level:.0f}x its recent "
                    f"median {level:.4g} (train.guard.grad_norm_factor={factor:g}): training is "
                    f"unstable; {_lower_rate(self.p)} or {_clipping(self.p)}")
        self.recent_norms.append(norm)


def guard_callback(p):
    """A TrainerCallback running ``Guard(p)`` on every log."""
    from transformers import TrainerCallback

    class GuardCallback(TrainerCallback):
        def __init__(self):
            self.guard = Guard(p)

        def on_log(self, args, state, control, logs=None, **kwargs):
            self.guard.check(state.global_step, logs or {})

    return GuardCallback()


OOM_MARKERS = ("out of memory", "can't allocate memory", "cannot allocate memory",
               "not enough memory")


def is_out_of_memory(err: BaseException) -> bool:
    import torch

    if isinstance(err, (torch.OutOfMemoryError, MemoryError)):
        return True
    return isinstance(err, RuntimeError) and any(m in str(err).lower() for m in OOM_MARKERS)


def oom_advice(p, err: BaseException) -> str:
    """One line: what ran out, and the next settings to try, in order of cost."""
    reason = (str(err).strip().splitlines() or [type(err).__name__])[0][:160]
    tries = []
    if p.batch_size > 1:
        tries.append(f"train.batch_size: {max(p.batch_size // 2, 1)} with "
                     f"train.gradient_accumulation: {p.gradient_accumulation * 2} "
                     "(same effective batch)")
    if p.method != "qlora":
        tries.append("train.method: qlora (a 4-bit base)")
    if not p.gradient_checkpointing:
        tries.append("train.gradient_checkpointing: true")
    if p.max_length > 128:
        tries.append(f"train.max_length: {p.max_length // 2}")
    advice = "; ".join(tries) if tries else "a machine with more memory"
    return (f"out of memory at train.batch_size={p.batch_size}, "
            f"train.max_length={p.max_length} ({reason}); try {advice}")
