"""The scorer: which 0..1 scores an answer gets against its reference (params
``evaluate.scorer``). One scorer is the evaluate stage's task metrics, the GRPO reward
(weighted by ``align.reward``), the export stage's parity check, and so what `tunelab
check` gates and a sweep optimises.

- ``auto``: by the references of the split at hand. Every reference a JSON object: the
  JSON checks of tunelab.eval.scoring (json_valid, exact_match, field_NAME and their mean
  task_accuracy). Free text whose every reference is at most SHORT_ANSWER_WORDS words: a
  normalised exact match, reported as ``exact_match`` (no ``task_accuracy``: an exact
  match of a free answer is not a task's accuracy). Longer free text: no score at all, as
  an exact match of a paragraph is about 0 for every model and measures nothing; ROUGE-L
  and chrF (scoring.text_scores) and an LLM judge are what such data has.
- ``configs/scorers/FILE.py:FUNCTION``: a plugin, ``FUNCTION(answer, reference, record)``
  returning ``{name: score in 0..1}`` (or one number, named ``score``). ``record`` is the
  example as prepared (its messages, source and the raw record's other fields). Its
  split-level metrics are the means of its scores. The file lives in configs/scorers/,
  which the scoring stages depend on in dvc.yaml, so editing it reruns exactly them.

A plugin is the user's own code in their repository, imported like a module they wrote;
nothing is loaded from a pickle.
"""

from __future__ import annotations

import importlib.util
import inspect
import numbers
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from tunelab.config.params import SCORER_DIR
from tunelab.errors import DataError, ParamsError
from tunelab.eval import scoring

AUTO = "auto"
SHORT_ANSWER_WORDS = 8  # auto: free-text references up to this many words get exact_match

# The references' kind, as auto reads it (reference_kind).
JSON, SHORT_TEXT, LONG_TEXT = "JSON objects", "short free text", "long free text"


def reference_kind(references: list[str]) -> str:
    """JSON when every reference is a JSON object, SHORT_TEXT when every one is at most
    SHORT_ANSWER_WORDS words, else LONG_TEXT."""
    if references and all(scoring.parse_json_object(r) is not None for r in references):
        return JSON
    if all(len(scoring.normalise_text(r).split()) <= SHORT_ANSWER_WORDS for r in references):
        return SHORT_TEXT
    return LONG_TEXT


@dataclass(frozen=True)
class Scorer:
    """``spec`` is evaluate.scorer's value; ``function`` the plugin's (None for auto)."""
    spec: str
    function: Callable | None = None

    def score_one(self, answer: str, reference: str, record: dict | None = None,
                  where: str = "an answer") -> dict[str, float]:
        """One answer's scores. auto reads this reference alone (a JSON object, or a short
        or long text); ``where`` names the example in a plugin's one-line error."""
        if self.function is None:
            return auto_scores(answer, reference)
        return self._plugin_scores(answer, reference, record or {}, where)

    def score_split(self, answers: list[str], references: list[str],
                    records: list[dict] | None = None) -> dict[str, float]:
        """The split's metrics (score_all's first part)."""
        return self.score_all(answers, references, records)[0]

    def score_all(self, answers: list[str], references: list[str],
                  records: list[dict] | None = None) -> tuple[dict[str, float], list[dict]]:
        """(the split's metrics, each answer's scores), each answer scored once. auto's
        metrics go by the kind of all its references (JSON: scoring.task_scores, as before
        plugins); a plugin's are the mean of each of its scores."""
        if len(answers) != len(references):
            raise ValueError(f"{len(answers)} answers for {len(references)} references")
        rows = self.score_rows(answers, references, records)
        if self.function is not None:
            return ({name: sum(row[name] for row in rows) / len(rows) for name in rows[0]}
                    if rows else {}), rows
        kind = reference_kind(references)
        if kind == JSON:
            return scoring.task_scores(answers, references), rows
        if kind == SHORT_TEXT:
            return {"exact_match": sum(row["exact_match"] for row in rows)
                    / max(len(references), 1)}, rows
        return {}, rows

    def score_rows(self, answers: list[str], references: list[str],
                   records: list[dict] | None = None) -> list[dict[str, float]]:
        """Each answer's scores; a plugin must give the same names for every answer."""
        records = records or [{} for _ in references]
        rows = [self.score_one(a, r, record, where=example_name(record, index))
                for index, (a, r, record) in enumerate(zip(answers, references, records,
                                                           strict=True))]
        if self.function is not None and rows:
            for index, row in enumerate(rows):
                if row.keys() != rows[0].keys():
                    raise DataError(
                        f"evaluate.scorer {self.spec} gave {sorted(row)} for "
                        f"{example_name(records[index], index)} but {sorted(rows[0])} for "
                        f"{example_name(records[0], 0)} (give every answer the same names)")
        return rows

    def _plugin_scores(self, answer, reference, record, where) -> dict[str, float]:
        value = self.function(answer, reference, record)
        scores = {"score": value} if _is_number(value) else value
        if not isinstance(scores, dict) or not scores:
            raise DataError(f"evaluate.scorer {self.spec} returned {type(value).__name__} "
                            f"{_short(value)} for {where}; expected {{name: number in 0..1}} "
                            "or a number")
        checked = {}
        for name, score in scores.items():
            if not isinstance(name, str) or not name.isidentifier():
                raise DataError(f"evaluate.scorer {self.spec} returned the name {name!r} for "
                                f"{where}; names are identifiers (letters, digits, _)")
            if not _is_number(score):
                raise DataError(f"evaluate.scorer {self.spec} returned {type(score).__name__} "
                                f"{_short(score)} as {name!r} for {where}; expected a number "
                                "in 0..1")
            if not 0 <= score <= 1:  # NaN too: it compares false with every number
                raise DataError(f"evaluate.scorer {self.spec} returned {name!r} = {score} for "
                                f"{where}, outside 0..1")
            checked[name] = float(score)
        return checked


def auto_scores(answer: str, reference: str) -> dict[str, float]:
    """auto's scores of one answer by its own reference: a JSON object's checks
    (task_accuracy: the share of this reference's fields right), a short text's
    exact_match, nothing for a long text."""
    parsed = scoring.parse_json_object(reference)
    if parsed is not None:
        checked = scoring.score_json_answer(answer, parsed)
        scores = {"json_valid": float(checked.json_valid),
                  "exact_match": float(checked.exact_match),
                  "task_accuracy": sum(checked.fields.values()) / max(len(checked.fields), 1)}
        scores.update({f"field_{key}": float(right) for key, right in checked.fields.items()})
        return scores
    if reference_kind([reference]) == SHORT_TEXT:
        return {"exact_match": float(scoring.text_match(answer, reference))}
    return {}


def load(spec: str, key: str = "evaluate.scorer") -> Scorer:
    """The scorer ``spec`` names; one line naming ``key`` when the file or function is
    not there or the file fails to import."""
    if spec == AUTO:
        return Scorer(AUTO)
    return Scorer(spec, plugin_function(spec, key))


def plugin_function(spec: str, key: str) -> Callable:
    path_text, _, name = spec.rpartition(":")
    path = Path(path_text)
    if not path.is_file():
        raise ParamsError(f"{key}: {path_text} does not exist (a scorer is "
                          f"{SCORER_DIR}/FILE.py:FUNCTION, or auto)")
    module_spec = importlib.util.spec_from_file_location(f"tunelab_scorer_{path.stem}", path)
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[module_spec.name] = module  # as an import does: dataclasses and pickle look there
    try:
        module_spec.loader.exec_module(module)
    except Exception as error:  # the user's code: any failure is theirs to fix
        sys.modules.pop(module_spec.name, None)
        raise ParamsError(f"{key}: {path_text} failed to import: "
                          f"{type(error).__name__}: {error}") from error
    function = getattr(module, name, None)
    if not callable(function):
        found = sorted(n for n, v in vars(module).items()
                       if inspect.isfunction(v) and v.__module__ == module.__name__)
        raise ParamsError(f"{key}: {path_text} has no function {name!r} (it has: "
                          f"{', '.join(found) or 'none'})")
    return function


def _is_number(value) -> bool:
    """int, float and numpy's numbers; not True/False, which JSON keeps apart from 1/0."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def example_name(record: dict | None, index: int) -> str:
    return (record or {}).get("source") or f"example {index + 1}"


def _short(value) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."
