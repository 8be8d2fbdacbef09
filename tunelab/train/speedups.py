"""Training speed-ups that change no result beyond float rounding (tests/test_speedups.py):

- **Answer-only logits.** TRL's SFTTrainer already computes the loss through a fused,
  chunked LM head (``trl.trainer.utils.add_fused_lm_head``: no ``batch x length x vocab``
  logits tensor, the backward recomputes each tile). On CUDA it scores only the positions
  whose label is trained; elsewhere it scores every position and masks afterwards (so that
  tile shapes stay fixed for compilers such as Neuron's). On a CPU nothing recompiles, and
  in completion-only training most positions are prompt: ``answer_only_scoring`` makes TRL
  score only the trained positions there too, the same loss to float rounding.
- **Padding-free attention.** TRL's padding-free batches put a batch's examples in one row
  with no padding and ``cu_seq_lens_q`` marking where each example starts (the varlen
  kernels' input). transformers' SDPA then builds a dense row x row block-diagonal mask and
  computes attention across the whole row; ``VARLEN_SDPA`` instead runs SDPA causally on
  each example's own span, so no position attends to (or computes against) another
  example's tokens: the arithmetic of a padded batch without its padding.
"""

from __future__ import annotations

from contextlib import contextmanager

import torch
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, sdpa_mask

VARLEN_SDPA = "tunelab_varlen_sdpa"


def varlen_sdpa_attention(module, query, key, value, attention_mask, cu_seq_lens_q=None,
                          cu_seq_lens_k=None, **kwargs):
    """SDPA per example of a padding-free row (``cu_seq_lens_q``); plain SDPA otherwise.

    query: (batch, heads, length, head_dim); returns (batch, length, heads, head_dim), None,
    as every transformers attention function does."""
    if cu_seq_lens_q is None or query.shape[0] != 1:  # a padded batch, or generation
        return sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)
    kwargs.pop("is_causal", None)
    bounds = cu_seq_lens_q.tolist()
    spans = [sdpa_attention_forward(module, query[:, :, start:end], key[:, :, start:end],
                                    value[:, :, start:end], None, is_causal=True, **kwargs)[0]
             for start, end in zip(bounds, bounds[1:])]
    return torch.cat(spans, dim=1), None


def register_varlen_sdpa() -> None:
    """Make ``VARLEN_SDPA`` an attention implementation (idempotent). Its mask is SDPA's, so a
    padded batch through it (evaluation, generation) is masked exactly as under "sdpa"."""
    AttentionInterface.register(VARLEN_SDPA, varlen_sdpa_attention)
    ALL_MASK_ATTENTION_FUNCTIONS.register(VARLEN_SDPA, sdpa_mask)


def use_varlen_sdpa(model) -> str:
    """Switch ``model`` (PEFT-wrapped or not) to ``VARLEN_SDPA``; return the implementation it
    had, so the caller can put it back before saving."""
    register_varlen_sdpa()
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    before = base.config._attn_implementation
    base.set_attn_implementation(VARLEN_SDPA)
    return before


@contextmanager
def answer_only_scoring():
    """Within this block, TRL's fused LM head scores only trained positions on every device.

    TRL decides per call with ``trl.trainer.utils._use_triton(device)`` (true on CUDA/XPU);
    only that decision changes here: the tile arithmetic (torch ops off GPU) is TRL's own.
    A private name of a pinned TRL: tests/test_speedups.py fails if an upgrade moves it."""
    from trl.trainer import utils as trl_utils

    on_gpu = trl_utils._use_triton
    trl_utils._use_triton = lambda device: True
    try:
        yield
    finally:
        trl_utils._use_triton = on_gpu
