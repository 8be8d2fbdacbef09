"""The report's Judge section: the LLM judge's verdicts (metrics/judge.json, the judge
stage), pairwise preferences read off their 95% interval and the rubric's mean scores, with
every unparseable count; one line when the judge was off.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from tunelab.eval.metric_names import metric_number
from tunelab.report.cells import ALIGNED, MISSING_CELL, format_value

JUDGE_OFF_LINE = "LLM judge off (judge.model in params.yaml)"
JUDGE_PAIR_SEPARATOR = "_vs_"  # "tuned_vs_base": the later model first
JUDGE_RUBRIC_COUNTS = ("judgements", "unparseable")  # a rubric model's keys that are no criterion
NO_PREFERENCE = 0.5  # pairwise preference: the later model scores won 1, tie 0.5, lost 0


@dataclass
class JudgePair:
    """One pairwise comparison of metrics/judge.json: how often the judge preferred the
    first model's answer to the second's."""
    name: str  # "tuned vs base"
    first: str
    second: str
    judgements: str
    win_tie_loss: str  # "0.45 / 0.20 / 0.35"
    preference: str  # "0.550 [0.410, 0.690]"
    verdict: str  # "prefers tuned" | "prefers base" | "no clear preference" | MISSING_CELL
    verdict_status: str  # its badge, as a metric's status: the later model preferred "improved"
    position_consistency: str
    unparseable: int | None


@dataclass
class RubricRow:
    """One model's mean rubric scores (1..5) per criterion, formatted."""
    model: str
    scores: dict[str, str]
    unparseable: int | None


@dataclass
class JudgeSection:
    """What the report shows of metrics/judge.json; ``off`` when the judge did not run."""
    off: bool
    model: str | None = None
    engine: str | None = None
    examples: int | None = None
    unparseable: int | None = None
    verdicts: int | None = None  # how many the judge gave in all, parsed or not
    pairs: list[JudgePair] = field(default_factory=list)
    criteria: list[str] = field(default_factory=list)
    rubric_rows: list[RubricRow] = field(default_factory=list)


def judge_section(judge: dict | None) -> JudgeSection | None:
    """None when there is no metrics/judge.json (a run from before the judge stage): no
    Judge section at all."""
    if judge is None:
        return None
    if judge.get("judge") == "off":
        return JudgeSection(off=True)
    section = JudgeSection(off=False, model=judge.get("model"), engine=judge.get("engine"),
                           examples=judge.get("examples"),
                           unparseable=_count(judge.get("unparseable")),
                           verdicts=_count(judge.get("verdicts")))
    # The pairs under "pairwise", or beside the other keys ("tuned_vs_base": {...}).
    pairwise = judge.get("pairwise") if isinstance(judge.get("pairwise"), dict) else judge
    for key, result in pairwise.items():
        if JUDGE_PAIR_SEPARATOR in key and isinstance(result, dict):
            section.pairs.append(_judge_pair(key, result))
    rubric = judge.get("rubric") if isinstance(judge.get("rubric"), dict) else {}
    criteria = rubric.get("criteria") or [  # else each model's keys less the counts
        name for scores in rubric.values() if isinstance(scores, dict)
        for name in scores if name not in JUDGE_RUBRIC_COUNTS]
    section.criteria = list(dict.fromkeys(str(name) for name in criteria))
    for model in ("base", "tuned", ALIGNED):
        scores = rubric.get(model)
        if isinstance(scores, dict):
            section.rubric_rows.append(RubricRow(
                model, {name: _rubric_cell(scores.get(name)) for name in section.criteria},
                _count(scores.get("unparseable"))))
    return section


def judge_summary(judge: dict | None) -> str | None:
    """One console line per pairwise comparison (or "LLM judge off"); None without
    metrics/judge.json."""
    section = judge_section(judge)
    if section is None:
        return None
    if section.off:
        return JUDGE_OFF_LINE
    lines = [f"judge {section.model} ({section.engine}): {pair.name} preference "
             f"{pair.preference} {pair.verdict}, {_count_cell(pair.unparseable)} unparseable"
             for pair in section.pairs]
    if section.rubric_rows:
        lines.append(f"judge {section.model} rubric: " + "; ".join(
            f"{row.model} " + ", ".join(f"{name} {row.scores[name]}" for name in section.criteria)
            + f" ({_count_cell(row.unparseable)} unparseable)" for row in section.rubric_rows))
    return "\n".join(lines) or f"judge {section.model}: no pairwise or rubric judgement"


def _judge_pair(key: str, result: dict) -> JudgePair:
    first, _, second = key.partition(JUDGE_PAIR_SEPARATOR)
    preference = metric_number(result.get("preference"))
    low = metric_number(result.get("preference_low"))
    high = metric_number(result.get("preference_high"))
    verdict = MISSING_CELL
    if low is not None and high is not None:
        verdict = (f"prefers {first}" if low > NO_PREFERENCE else
                   f"prefers {second}" if high < NO_PREFERENCE else "no clear preference")
    if preference is None:
        preference_cell = MISSING_CELL
    elif verdict == MISSING_CELL:
        preference_cell = f"{preference:.3f}"
    else:
        preference_cell = f"{preference:.3f} [{low:.3f}, {high:.3f}]"
    shares = [metric_number(result.get(name)) for name in ("win", "tie", "loss")]
    consistency = metric_number(result.get("position_consistency"))
    return JudgePair(
        name=f"{first} vs {second}" if second else key.replace("_", " "), first=first,
        second=second, judgements=format_value(result.get("judgements", MISSING_CELL)),
        win_tie_loss=" / ".join(MISSING_CELL if share is None else f"{share:.2f}"
                                for share in shares),
        preference=preference_cell, verdict=verdict,
        verdict_status={f"prefers {first}": "improved", f"prefers {second}": "worse"}.get(
            verdict, "same"),
        position_consistency=MISSING_CELL if consistency is None else f"{consistency:.2f}",
        unparseable=_count(result.get("unparseable")))


def _rubric_cell(value) -> str:
    number = metric_number(value)
    return MISSING_CELL if number is None else f"{number:.2f}"


def _count(value) -> int | None:
    number = metric_number(value)
    return None if number is None else int(number)


def _count_cell(count: int | None) -> str:
    return MISSING_CELL if count is None else str(count)
