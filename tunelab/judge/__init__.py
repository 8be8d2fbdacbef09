"""tunelab.judge: an LLM judge of the evaluated answers (the judge stage).

Owns the judge's prompts and the JSON schemas its verdicts must follow, and reading a
verdict back (prompts); the judge model itself, a GGUF file run through llama.cpp with a
grammar made from the schema or an OpenAI-compatible endpoint asked for that schema as
``response_format`` (engines); and the judging: base vs tuned (and tuned vs aligned) in
both orders, each answer scored on a rubric, win/tie/loss rates with a bootstrap
interval, and every unparseable verdict counted (judging).
May import tunelab.deploy, tunelab.eval, tunelab.models, tunelab.data, tunelab.chat,
tunelab.config, tunelab.util and tunelab.errors.
"""
