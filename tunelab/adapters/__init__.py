"""tunelab.adapters: what to do with trained adapters after training.

Owns merging several LoRA adapters into one (merge: linear, cat, svd, ties, dare),
folding an adapter into a plain model whose logits are checked against the adapter's
(export), and answering with several models at once (ensemble). May import tunelab.eval,
tunelab.models, tunelab.data, tunelab.chat, tunelab.config, tunelab.util and tunelab.errors.
"""
