"""How the report writes a number, and the dash for a number a model lacks: shared by the
page (html_page) and its sections (general_section, judge_section), and the key eval.json
and samples.jsonl give the aligned model.
"""

from __future__ import annotations

import math

ALIGNED = "aligned"  # eval.json's and samples.jsonl's key of the aligned model, when one ran
MISSING_CELL = "\u2014"  # an em dash: this model has no such number


def format_value(value) -> str:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, int):
        return f"{value:,}"
    if not math.isfinite(value):
        return str(value)
    if value != 0 and abs(value) < 1e-3:
        return f"{value:.2e}"  # four fixed decimals would print a small change as 0.0000
    return f"{value:,.1f}" if abs(value) >= 1000 else f"{value:.4f}"


def format_change(change: float) -> str:
    formatted = format_value(change)
    if change == 0 or formatted.startswith(("-", "nan", "inf")):
        return formatted
    return f"+{formatted}"
