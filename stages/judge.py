"""Stage: an LLM judge of the evaluated answers, base vs tuned (vs aligned) and on a rubric.

Usage (dvc.yaml): python stages/judge.py SAMPLES JUDGE_METRICS VERDICTS
Reads params `judge` and SAMPLES (the evaluate stage's answers); writes JUDGE_METRICS
(win/tie/loss rates and the preference interval per pair, rubric means per model, the
unparseable count: tunelab.judge.judging) and VERDICTS (every question's raw answer and
its parsed verdict, null where it did not parse). judge.model "" (the default) writes
{"judge": "off"} and no verdicts, and loads nothing. The judge's API key comes from the
environment variable judge.api_key_env, never from params.yaml.
"""

from tunelab import pipeline
from tunelab.config import params
from tunelab.errors import DataError, ParamsError
from tunelab.judge import engines, judging
from tunelab.util import files

SHOWN_UNPARSEABLE = 3  # raw answers printed of the verdicts that did not parse


def main(samples_file: str, judge_metrics: str, verdicts_file: str) -> int:
    p = params.load("judge")
    if not p.model:
        files.write_json_atomic(judge_metrics, {"judge": "off"})
        files.write_jsonl_atomic(verdicts_file, [])
        print("judge: off (set judge.model to judge the answers)")
        return 0
    if not (p.pairwise or p.rubric):
        raise ParamsError("judge.pairwise and judge.rubric: both false, so the judge has "
                          "nothing to do (set judge.model \"\" to turn it off)")
    samples = files.read_jsonl(samples_file)[:p.max_examples or None]
    if not samples:
        raise DataError(f"{samples_file}: no samples to judge (the evaluate stage wrote none)")

    engine = engines.open_engine(p)
    try:
        summary, verdicts = judging.judge(engine, samples, p.criteria, p.pairwise, p.rubric)
    finally:
        engine.close()
    result = {"model": p.model, "engine": engine.engine, **engine.details, **summary}
    files.write_json_atomic(judge_metrics, result)
    files.write_jsonl_atomic(verdicts_file, verdicts)
    print_summary(result, verdicts, verdicts_file)
    return 0


def print_summary(result: dict, verdicts: list[dict], verdicts_file: str) -> None:
    for name in judging.PAIRS:
        pair = result.get(name)
        if pair and pair["judgements"]:
            print(f"judge: {name}: win {pair['win']:.2f} tie {pair['tie']:.2f} loss "
                  f"{pair['loss']:.2f}; preference {pair['preference']:.3f} "
                  f"[{pair['preference_low']:.3f}, {pair['preference_high']:.3f}]; position "
                  f"consistency {fraction(pair['position_consistency'])}")
    for model, scores in result.get("rubric", {}).items():
        means = ", ".join(f"{key} {fraction(value)}" for key, value in scores.items()
                          if key not in params.JUDGE_SUMMARY_KEYS)
        print(f"judge: rubric {model}: {means}")
    print(f"judge: {result['unparseable']} of {result['verdicts']} verdicts unparseable "
          f"(\"verdict\": null in {verdicts_file})")
    for verdict in [v for v in verdicts if v["verdict"] is None][:SHOWN_UNPARSEABLE]:
        print(f"judge:   unparseable ({verdict['source']}, {verdict['task']}): "
              f"{verdict['raw'][:120]!r}")


def fraction(value) -> str:
    return "-" if value is None else f"{value:.2f}"


if __name__ == "__main__":
    pipeline.run(main, "judge")
