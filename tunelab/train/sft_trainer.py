"""tunelab's SFTTrainer: TRL's, with its fused LM head scoring only trained positions on
every device (``answer_only_logits``; tunelab.train.speedups says why). A module of its own
so that importing tunelab.train.training does not import TRL."""

from __future__ import annotations

from trl import SFTTrainer

from tunelab.train import speedups


class AnswerOnlySFTTrainer(SFTTrainer):
    def __init__(self, *args, answer_only_logits: bool = True, **kwargs):
        super().__init__(*args, **kwargs)
        self.answer_only_logits = answer_only_logits

    def compute_loss(self, model, inputs, *args, **kwargs):
        if not self.answer_only_logits:
            return super().compute_loss(model, inputs, *args, **kwargs)
        with speedups.answer_only_scoring():
            return super().compute_loss(model, inputs, *args, **kwargs)
