"""tunelab's SFTTrainer: TRL's, with its fused LM head scoring only trained positions on
every device (``answer_only_logits``; tunelab.train.speedups says why), and reading the
output layer's trainable token rows. A module of its own so that importing
tunelab.train.training does not import TRL."""

from __future__ import annotations

from contextlib import contextmanager, nullcontext

from trl import SFTTrainer

from tunelab.train import speedups


class AnswerOnlySFTTrainer(SFTTrainer):
    def __init__(self, *args, answer_only_logits: bool = True, **kwargs):
        super().__init__(*args, **kwargs)
        self.answer_only_logits = answer_only_logits

    def compute_loss(self, model, inputs, *args, **kwargs):
        scoring = speedups.answer_only_scoring() if self.answer_only_logits else nullcontext()
        with scoring, merged_output_rows(self.model):
            return super().compute_loss(model, inputs, *args, **kwargs)


class _MergedHead:
    """What TRL's fused LM head reads of the output layer: its weight with PEFT's trainable
    token rows (tunelab.models.templates' new tokens) in place, so their logits are scored
    and their rows get gradients; TRL reads ``weight``/``bias`` directly, past PEFT's wrapper."""
    bias = None

    def __init__(self, wrapper):
        self.adapter = wrapper.token_adapter

    @property
    def weight(self):
        return self.adapter.get_merged_weights(self.adapter.active_adapters)


@contextmanager
def merged_output_rows(model):
    """Within this block, the base model's output layer, where PEFT wraps it for trainable
    token rows, is seen by TRL's fused head with those rows merged in."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    head = base.get_output_embeddings()
    if not hasattr(head, "token_adapter"):
        yield
        return
    base.get_output_embeddings = lambda: _MergedHead(head)
    try:
        yield
    finally:
        del base.get_output_embeddings  # the class's method again
