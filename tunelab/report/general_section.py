"""The report's General ability section: what tuning (and alignment) changed in the
general-ability check (metrics/eval.json "general", scored by the evaluate stage), each
change read off its 95% interval; and the check's category names, one table that the
section and its plot (plotting) both read.

A category not listed shows with "_" as a space, so a new one needs no entry to be
readable.
"""

from __future__ import annotations

from dataclasses import dataclass

from tunelab.eval.metric_names import metric_number
from tunelab.report.cells import ALIGNED, MISSING_CELL

CATEGORY_LABELS = {"instruction_following": "instruction following", "facts": "facts",
                   "arithmetic": "arithmetic", "all": "all"}
# A change is read off its 95% interval; each verdict gets a metric status's badge.
GENERAL_VERDICT_STATUS = {"better": "improved", "worse": "worse", "no clear change": "same"}


@dataclass
class GeneralRow:
    """One category of the general-ability check (or "all"): the scores, and each change
    with its 95% interval, formatted, and the verdict read off that interval."""
    category: str  # eval.json's key
    label: str
    prompts: int | None
    base: str
    tuned: str
    change: str  # "-0.040 [-0.090, +0.010]"
    verdict: str  # "better" | "worse" | "no clear change" | MISSING_CELL (no interval)
    aligned: str | None = None
    aligned_change: str | None = None  # aligned - tuned
    aligned_verdict: str | None = None


@dataclass
class GeneralSection:
    """What the report shows of eval.json's "general" block."""
    engine: str | None
    prompts: int | None
    rows: list[GeneralRow]
    show_aligned: bool
    plot: dict | None = None


def general_section(eval_metrics: dict) -> GeneralSection | None:
    """None when eval.json has no "general" block (the check was off, or an older run)."""
    general = eval_metrics.get("general")
    if not isinstance(general, dict) or not isinstance(general.get("base"), dict):
        return None
    counts = general.get("counts") if isinstance(general.get("counts"), dict) else {}
    show_aligned = isinstance(general.get(ALIGNED), dict)
    rows = []
    # "all" last, whatever the file's order: it sums up the rows above it.
    categories = sorted(general["base"], key=lambda name: name == "all")
    for category in categories:
        scores = {model: (general.get(model) or {}).get(category)
                  for model in ("base", "tuned", ALIGNED)}
        row = GeneralRow(category, category_label(category),
                         general.get("examples") if category == "all" else counts.get(category),
                         _score_cell(scores["base"]), _score_cell(scores["tuned"]),
                         *_change_and_verdict(general, "delta", category))
        if show_aligned:
            row.aligned = _score_cell(scores[ALIGNED])
            row.aligned_change, row.aligned_verdict = _change_and_verdict(
                general, "aligned_delta", category)
        rows.append(row)
    return GeneralSection(general.get("engine"), general.get("examples"), rows, show_aligned)


def general_verdict(low: float, high: float) -> str:
    """"worse" when the whole 95% interval of a change is below 0, "better" when above."""
    if high < 0:
        return "worse"
    if low > 0:
        return "better"
    return "no clear change"


def general_summary(eval_metrics: dict) -> str | None:
    """One console line: the "all" row's change (and the aligned model's), with verdicts."""
    section = general_section(eval_metrics)
    rows = section.rows if section else []
    overall = next((row for row in rows if row.category == "all"), None)
    if overall is None:
        return None
    line = (f"general ability ({section.prompts} prompts): all {overall.base} -> tuned "
            f"{overall.tuned}, {overall.change} {overall.verdict}")
    if section.show_aligned:
        line += (f"; -> aligned {overall.aligned}, {overall.aligned_change} "
                 f"{overall.aligned_verdict}")
    return line


def format_interval_change(change: float, low: float, high: float) -> str:
    """"-0.040 [-0.090, +0.010]": a change and its interval, signed, to 3 decimals."""
    return f"{_signed(change)} [{_signed(low)}, {_signed(high)}]"


def category_label(name: str) -> str:
    """"instruction following" for instruction_following; unknown categories likewise."""
    return CATEGORY_LABELS.get(name, name.replace("_", " "))


def _change_and_verdict(general: dict, delta_key: str, category: str) -> tuple[str, str]:
    change = metric_number((general.get(delta_key) or {}).get(category))
    low = metric_number((general.get(f"{delta_key}_low") or {}).get(category))
    high = metric_number((general.get(f"{delta_key}_high") or {}).get(category))
    if change is None:
        return MISSING_CELL, MISSING_CELL
    if low is None or high is None:
        return _signed(change), MISSING_CELL  # no interval: no verdict
    return format_interval_change(change, low, high), general_verdict(low, high)


def _signed(value: float) -> str:
    return f"{round(value, 3) + 0.0:+.3f}"  # + 0.0: a rounded -0.0001 prints +0.000


def _score_cell(value) -> str:
    number = metric_number(value)
    return MISSING_CELL if number is None else f"{number:.3f}"
