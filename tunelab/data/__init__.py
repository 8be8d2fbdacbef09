"""tunelab.data: data as people bring it, up to the encoded training example.

Owns reading raw files in every supported format (formats), normalising, deduplicating
and splitting them (prepare), turning an example into token ids and a loss mask with the
model's chat template (encoding), tool calls in one shape and the fallback rendering that
training and `tunelab serve` share (tool_calls), checking the prepared data against the tokenizer
(validation), the figures `tunelab analyze-data` prints and metrics/data.json keeps: token
lengths, truncation, loss share, duplicates (analysis), the multi-task split by `task`
(multitask), and preference pairs and KTO examples for the align stage, read, checked and
split as SFT data is (preferences). May import tunelab.chat, tunelab.config, tunelab.util and
tunelab.errors; never a model, the trainer or anything above them.
"""
