"""tunelab.eval: how good a model's answers are.

Owns generating answers and the completion loss on a test split (evaluation), scoring an
answer against its reference (scoring), the GRPO reward built from those same checks
(reward), the bootstrap interval of a mean (intervals), answering one prompt for `tunelab generate` (inference) and the names and
directions of metrics (metric_names). May import tunelab.data, tunelab.models,
tunelab.chat, tunelab.config, tunelab.util and tunelab.errors.
(The package is `eval`, not a module of that name: nothing here shadows a builtin import.)
"""
