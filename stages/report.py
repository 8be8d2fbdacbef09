"""Stage: write reports/report.html and print the base-vs-tuned table.

Reads metrics/eval.json (required), metrics/samples.jsonl, metrics/data.json,
metrics/validation.json and reports/plots/*.png (each optional: the report
says what is missing), plus the params sections it shows.
"""

import dataclasses
from pathlib import Path

from rich.console import Console

from tunelab import io, params, reporting, stage

EVAL_METRICS = Path("metrics/eval.json")
SAMPLES = Path("metrics/samples.jsonl")
DATA_STATS = Path("metrics/data.json")
VALIDATION = Path("metrics/validation.json")
PLOTS_DIR = Path("reports/plots")
REPORT = Path("reports/report.html")


def main() -> int:
    report_params = params.load("report")
    # Validated sections, defaults filled in: the report shows what the run used.
    shown_params = {section: dataclasses.asdict(params.load(section))
                    for section in reporting.REPORTED_PARAM_SECTIONS}
    if not EVAL_METRICS.exists():
        raise io.DataError(f"{EVAL_METRICS} not found; run the evaluate stage first")

    eval_metrics = io.read_json(EVAL_METRICS)
    html = reporting.build_report(
        eval_metrics=eval_metrics,
        params=shown_params,
        samples=io.read_jsonl(SAMPLES) if SAMPLES.exists() else [],
        data_stats=_read_optional_json(DATA_STATS),
        validation=_read_optional_json(VALIDATION),
        plot_paths=sorted(PLOTS_DIR.glob("*.png")),
        max_samples=report_params.max_samples,
    )
    io.write_text_atomic(REPORT, html)

    Console().print(reporting.summary_table(eval_metrics))
    print(f"report: wrote {REPORT}")
    return 0


def _read_optional_json(path: Path):
    return io.read_json(path) if path.exists() else None


if __name__ == "__main__":
    stage.run(main, "report")
