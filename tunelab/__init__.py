"""tunelab: a declarative, reproducible lab for fine-tuning local LLMs."""

__version__ = "0.1.0"
