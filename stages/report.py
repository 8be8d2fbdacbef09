"""Stage: write the HTML report and print the base-vs-tuned (vs aligned) table, a line per
GGUF file and one for the alignment.

Usage (dvc.yaml): python stages/report.py EVAL_METRICS SAMPLES DATA_STATS VALIDATION
                  EXPORT ALIGN_SUMMARY JUDGE PLOTS_DIR REPORT
Reads EVAL_METRICS (required; its "general" block is the General ability section), SAMPLES,
DATA_STATS, VALIDATION, EXPORT (the export stage's GGUF parity metrics), ALIGN_SUMMARY (the
align stage's summary.json: the Alignment section, left out when its objective is "none"),
JUDGE (the judge stage's metrics/judge.json: the Judge section, left out when the file is
not there) and PLOTS_DIR/*.png (each optional: the report says what is missing), plus the
params sections it shows; writes REPORT, one self-contained HTML file.
"""

from pathlib import Path

from rich.console import Console

from tunelab import pipeline
from tunelab.config import params
from tunelab.errors import DataError
from tunelab.report import general_section, html_page, judge_section
from tunelab.util import files

LOG_WIDTH = 140  # columns: the table with the aligned model's three columns needs about 130


def main(eval_metrics: str, samples: str, data_stats: str, validation: str, export: str,
         align_summary: str, judge: str, plots_dir: str, report: str) -> int:
    report_params = params.load("report")
    # Validated sections, defaults filled in: the report shows what the run used (less the
    # knobs that change no result, which dvc.yaml does not declare for this stage either).
    shown_params = {section: params.result_settings(params.load(section), section)
                    for section in html_page.REPORTED_PARAM_SECTIONS}
    if not Path(eval_metrics).exists():
        raise DataError(f"{eval_metrics} not found; run the evaluate stage first")

    metrics = files.read_json(eval_metrics)
    export_metrics = _read_optional_json(export)
    align_metrics = _read_optional_json(align_summary)
    judge_metrics = _read_optional_json(judge)
    html = html_page.build_report(
        eval_metrics=metrics,
        params=shown_params,
        samples=files.read_jsonl(samples) if Path(samples).exists() else [],
        data_stats=_read_optional_json(data_stats),
        validation=_read_optional_json(validation),
        export=export_metrics,
        align_summary=align_metrics,
        judge=judge_metrics,
        plot_paths=sorted(Path(plots_dir).glob("*.png")),
        max_samples=report_params.max_samples,
    )
    files.write_text_atomic(report, html)

    console = Console()
    if not console.is_terminal:
        # Off a terminal (dvc repro in CI, a log file) rich assumes 80 columns, which cuts the
        # aligned table's names and statuses to "improv…"; a log line may be that wide.
        console.width = LOG_WIDTH
    console.print(html_page.summary_table(metrics))
    if export_metrics is not None:
        console.print(html_page.export_summary(export_metrics), soft_wrap=True)
    # Each None: no such block (no alignment ran, no general check, no judge.json)
    for line in (html_page.alignment_summary(align_metrics),
                 general_section.general_summary(metrics),
                 judge_section.judge_summary(judge_metrics)):
        if line:
            print(line)
    print(f"report: wrote {report}")
    return 0


def _read_optional_json(path: str) -> dict | None:
    """A JSON object, or None when ``path`` does not exist; a broken file is a one-line error
    (files.read_json; the report shows a missing input, not a wrong one)."""
    if not Path(path).exists():
        return None
    loaded = files.read_json(path)
    if not isinstance(loaded, dict):
        raise DataError(f"{path}: expected a JSON object, got {type(loaded).__name__}")
    return loaded


if __name__ == "__main__":
    pipeline.run(main, "report")
