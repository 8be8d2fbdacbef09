"""tunelab.data: data as people bring it, up to the encoded training example.

Owns reading raw files in every supported format (formats), normalising, deduplicating
and splitting them (prepare), turning an example into token ids and a loss mask with the
model's chat template (encoding), checking the prepared data against the tokenizer
(validation), and the multi-task split by `task` (multitask). May import tunelab.config,
tunelab.util and tunelab.errors; never a model, the trainer or anything above them.
"""
