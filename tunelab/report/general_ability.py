"""The general-ability check's categories (metrics/eval.json "general", scored by the
evaluate stage) as the report and its plot name them: one table, read by both.

A category not listed shows with "_" as a space, so a new one needs no entry to be
readable.
"""

from __future__ import annotations

CATEGORY_LABELS = {"instruction_following": "instruction following", "facts": "facts",
                   "arithmetic": "arithmetic", "all": "all"}


def category_label(name: str) -> str:
    """"instruction following" for instruction_following; unknown categories likewise."""
    return CATEGORY_LABELS.get(name, name.replace("_", " "))
