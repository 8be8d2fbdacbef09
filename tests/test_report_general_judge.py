"""The run report's General ability section (eval.json "general"), its Judge section
(metrics/judge.json), and a headline that shows only the metrics eval.json has: a free-text
run without task_accuracy, a scorer plugin's own metric. Inputs are fakes shaped like what
the evaluate and judge stages write."""

import json
import re
from pathlib import Path

import pytest
from rich.console import Console

from tunelab.report import general_section, html_page, judge_section, plotting
from test_plotting_reporting import (  # noqa: E402  (tests/ is on sys.path under pytest)
    EVAL_METRICS, assert_png, make_fake_inputs, run_stage)
from test_alignment_report import section  # noqa: E402

# instruction_following: interval across 0 (no clear change); facts: all below 0 (worse);
# arithmetic: all above 0 (better); all: across 0.
GENERAL = {
    "examples": 110, "engine": "transformers",
    "counts": {"instruction_following": 50, "facts": 30, "arithmetic": 30},
    "base": {"instruction_following": 0.62, "facts": 0.5, "arithmetic": 0.3, "all": 0.49},
    "tuned": {"instruction_following": 0.58, "facts": 0.3, "arithmetic": 0.4, "all": 0.45},
    "delta": {"instruction_following": -0.04, "facts": -0.2, "arithmetic": 0.1, "all": -0.04},
    "delta_low": {"instruction_following": -0.09, "facts": -0.33, "arithmetic": 0.033333,
                  "all": -0.09},
    "delta_high": {"instruction_following": 0.01, "facts": -0.066667, "arithmetic": 0.166667,
                   "all": 0.01},
}
ALIGNED_GENERAL = {
    **GENERAL,
    "aligned": {"instruction_following": 0.66, "facts": 0.3, "arithmetic": 0.4, "all": 0.48},
    "aligned_delta": {"instruction_following": 0.08, "facts": 0.0, "arithmetic": 0.0, "all": 0.03},
    "aligned_delta_low": {"instruction_following": 0.02, "facts": -0.1, "arithmetic": -0.07,
                          "all": -0.01},
    "aligned_delta_high": {"instruction_following": 0.14, "facts": 0.1, "arithmetic": 0.07,
                           "all": 0.07},
}
GENERAL_EVAL_METRICS = {**EVAL_METRICS, "general": GENERAL}

# metrics/judge.json in the shape: the pairs under "pairwise", the criteria listed.
JUDGE = {
    "model": "smollm2-135m-instruct", "engine": "llama.cpp", "examples": 20, "unparseable": 3,
    "pairwise": {"tuned_vs_base": {
        "judgements": 40, "win": 0.45, "tie": 0.2, "loss": 0.35, "preference": 0.55,
        "preference_low": 0.41, "preference_high": 0.69, "unparseable": 1,
        "position_consistency": 0.6}},
    "rubric": {"criteria": ["correctness", "coherence", "relevance"],
               "base": {"correctness": 2.9, "coherence": 3.4, "relevance": 3.1, "unparseable": 2},
               "tuned": {"correctness": 3.3, "coherence": 3.6, "relevance": 3.5,
                         "unparseable": 0}},
}
# The judge stage's own shape (tunelab.judge.judging): the pairs beside the other keys, each
# rubric model with its criteria, judgements and unparseable.
JUDGE_STAGE_OUTPUT = {
    "model": "smollm2-135m-instruct", "engine": "llama.cpp", "examples": 20, "verdicts": 140,
    "unparseable": 3,
    "tuned_vs_base": {**JUDGE["pairwise"]["tuned_vs_base"], "examples": 20},
    "aligned_vs_tuned": {"judgements": 40, "win": 0.6, "tie": 0.1, "loss": 0.3,
                         "preference": 0.65, "preference_low": 0.52, "preference_high": 0.78,
                         "examples": 20, "position_consistency": 0.75, "unparseable": 0},
    "rubric": {model: {**{name: value for name, value in scores.items()}, "judgements": 19}
               for model, scores in JUDGE["rubric"].items() if model != "criteria"},
}

# A free-text task: no task_accuracy, json_valid, field_* or reward, only likelihood and text.
FREE_TEXT_EVAL_METRICS = {
    "method": "lora", "examples": 12,
    "base": {"loss": 2.4, "perplexity": 11.02, "rougeL": 0.21, "chrf": 30.5},
    "tuned": {"loss": 1.6, "perplexity": 4.95, "rougeL": 0.34, "chrf": 41.0},
}
# A scorer plugin's 0..1 metric "correct" beside them (and on the held-out set too).
PLUGIN_EVAL_METRICS = {
    **FREE_TEXT_EVAL_METRICS,
    "base": {**FREE_TEXT_EVAL_METRICS["base"], "correct": 0.25},
    "tuned": {**FREE_TEXT_EVAL_METRICS["tuned"], "correct": 0.5},
    "heldout": {"examples": 8,
                "base": {"loss": 2.0, "perplexity": 7.39, "rougeL": 0.2, "correct": 0.125},
                "tuned": {"loss": 1.5, "perplexity": 4.48, "rougeL": 0.3, "correct": 0.375}},
}


def general_cells(html: str) -> dict[str, dict[str, str]]:
    """{category: {column: text}} of the General ability table's change and verdict cells."""
    rows = re.findall(r'<tr data-category="([a-z_]+)">(.*?)</tr>', section(html, "general"),
                      flags=re.DOTALL)
    return {category: {column: re.sub(r"<[^>]+>", "", text).strip() for column, text in
                       re.findall(r'data-column="([a-z_]+)">(.*?)</td>', row, flags=re.DOTALL)}
            for category, row in rows}


def bars_drawn(monkeypatch) -> dict[str, dict]:
    """Per PNG written: its bar heights, x tick labels and the whiskers' (low, high)."""
    drawn, save = {}, plotting._save

    def record(fig, out_path, dpi):
        ax = fig.axes[0]
        whiskers = [(round(float(segment[0][1]), 4), round(float(segment[1][1]), 4))
                    for collection in ax.collections for segment in collection.get_segments()]
        drawn[Path(out_path).name] = {
            "bars": [round(patch.get_height(), 6) for patch in ax.patches],
            "ticks": [label.get_text() for label in ax.get_xticklabels()],
            "whiskers": whiskers, "ylim": ax.get_ylim()}
        return save(fig, out_path, dpi)

    monkeypatch.setattr(plotting, "_save", record)
    return drawn


# --- General ability --------------------------------------------------------------------

def test_general_section_shows_each_category_with_its_interval_and_verdict():
    html = html_page.build_report(eval_metrics=GENERAL_EVAL_METRICS)
    general = section(html, "general")
    assert "<h2>General ability (what tuning changed)</h2>" in general
    assert "with transformers on 110 prompts" in general
    assert '<a href="#general">General ability</a>' in html
    cells = general_cells(html)
    assert list(cells) == ["instruction_following", "facts", "arithmetic", "all"]
    assert cells["instruction_following"] == {"change": "-0.040 [-0.090, +0.010]",
                                              "verdict": "no clear change"}
    assert cells["facts"] == {"change": "-0.200 [-0.330, -0.067]", "verdict": "worse"}
    assert cells["arithmetic"] == {"change": "+0.100 [+0.033, +0.167]", "verdict": "better"}
    assert ">instruction following</td>" in general and ">50</td>" in general
    assert '<span class="status status-worse">worse</span>' in general
    # The general block is its own section, never rows of the flat headline table.
    assert not any(row.name.startswith(("general", "instruction")) for row in
                   html_page.metric_rows(GENERAL_EVAL_METRICS))


@pytest.mark.parametrize("low, high, verdict", [
    (-0.09, -0.01, "worse"), (0.01, 0.2, "better"), (-0.09, 0.01, "no clear change"),
    (0.0, 0.1, "no clear change"), (-0.1, 0.0, "no clear change"),
])
def test_general_verdict_reads_the_interval(low, high, verdict):
    assert general_section.general_verdict(low, high) == verdict


def test_general_section_adds_the_aligned_change_after_an_alignment():
    html = html_page.build_report(eval_metrics={**EVAL_METRICS, "objective": "dpo",
                                                "general": ALIGNED_GENERAL})
    cells = general_cells(html)
    assert cells["instruction_following"]["aligned_change"] == "+0.080 [+0.020, +0.140]"
    assert cells["instruction_following"]["aligned_verdict"] == "better"
    assert cells["facts"]["aligned_change"] == "+0.000 [-0.100, +0.100]"
    assert cells["facts"]["aligned_verdict"] == "no clear change"
    assert "<th>aligned (dpo)</th><th>change vs tuned</th>" in section(html, "general")


def test_no_general_block_no_section():
    html = html_page.build_report(eval_metrics=EVAL_METRICS)
    assert 'id="general"' not in html and "General ability" not in html
    assert general_section.general_summary(EVAL_METRICS) is None


def test_general_summary_is_the_all_row():
    assert general_section.general_summary(GENERAL_EVAL_METRICS) == (
        "general ability (110 prompts): all 0.490 -> tuned 0.450, -0.040 [-0.090, +0.010] "
        "no clear change")


def test_general_plot_draws_bars_with_the_change_intervals(tmp_path: Path, monkeypatch):
    drawn = bars_drawn(monkeypatch)
    path = plotting.plot_general(GENERAL_EVAL_METRICS, tmp_path / "general.png")
    assert_png(path)
    figure = drawn["general.png"]
    assert figure["ticks"] == ["instruction following", "facts", "arithmetic", "all"]
    assert figure["bars"] == [0.62, 0.5, 0.3, 0.49, 0.58, 0.3, 0.4, 0.45]
    # The tuned bar's whisker: base + the change's interval, on the 0..1 scale.
    assert figure["whiskers"] == [(0.53, 0.63), (0.17, 0.4333), (0.3333, 0.4667), (0.4, 0.5)]
    assert figure["ylim"][0] == 0 and figure["ylim"][1] <= 1.2
    assert plotting.plot_general(EVAL_METRICS, tmp_path / "none.png") is None
    assert not (tmp_path / "none.png").exists()


def test_general_plot_in_its_section_not_under_plots(tmp_path: Path):
    paths = [plotting.plot_general(GENERAL_EVAL_METRICS, tmp_path / "general.png"),
             plotting.plot_base_vs_tuned(GENERAL_EVAL_METRICS, tmp_path / "base_vs_tuned.png")]
    html = html_page.build_report(eval_metrics=GENERAL_EVAL_METRICS, plot_paths=paths)
    assert section(html, "general").count("data:image/png;base64,") == 1
    assert section(html, "plots").count("data:image/png;base64,") == 1
    # Without the block in eval.json a stray general.png is still shown, under Plots.
    html = html_page.build_report(eval_metrics=EVAL_METRICS, plot_paths=paths)
    assert section(html, "plots").count("data:image/png;base64,") == 2


# --- Judge ------------------------------------------------------------------------------

def judge_rows(html: str, attribute: str) -> dict[str, list[str]]:
    rows = re.findall(rf'<tr {attribute}="([^"]+)">(.*?)</tr>', section(html, "judge"),
                      flags=re.DOTALL)
    return {name: [re.sub(r"<[^>]+>", "", cell).strip()
                   for cell in re.findall(r"<td[^>]*>(.*?)</td>", row, flags=re.DOTALL)]
            for name, row in rows}


def test_judge_section_shows_pairs_rubric_and_every_unparseable_count():
    html = html_page.build_report(eval_metrics=EVAL_METRICS, judge=JUDGE)
    judge = section(html, "judge")
    assert "<h2>Judge</h2>" in judge and '<a href="#judge">Judge</a>' in html
    assert "<strong>smollm2-135m-instruct</strong> on llama.cpp, 20 test examples" in judge
    assert 'Unparseable verdicts: <span class="status status-warn">3</span>' in judge
    assert judge_rows(html, "data-pair") == {"tuned vs base": [
        "tuned vs base", "40", "0.45 / 0.20 / 0.35", "0.550 [0.410, 0.690]",
        "no clear preference", "0.60", "1"]}
    assert judge_rows(html, "data-rubric-model") == {
        "base": ["base", "2.90", "3.40", "3.10", "2"],
        "tuned": ["tuned", "3.30", "3.60", "3.50", "0"]}  # 0 is shown, not left blank
    assert "<th>correctness</th><th>coherence</th><th>relevance</th><th>unparseable</th>" in judge


def test_judge_section_reads_the_judge_stages_own_layout():
    html = html_page.build_report(eval_metrics=EVAL_METRICS, judge=JUDGE_STAGE_OUTPUT)
    pairs = judge_rows(html, "data-pair")
    assert list(pairs) == ["tuned vs base", "aligned vs tuned"]
    assert pairs["aligned vs tuned"][3:5] == ["0.650 [0.520, 0.780]", "prefers aligned"]
    rubric = judge_rows(html, "data-rubric-model")
    assert rubric["base"] == ["base", "2.90", "3.40", "3.10", "2"]
    # judgements and unparseable are counts, not criteria
    assert ("<th>model</th><th>correctness</th><th>coherence</th><th>relevance</th>"
            "<th>unparseable</th></tr>") in section(html, "judge")
    assert 'status-warn">3</span> of 140' in section(html, "judge")
    assert judge_section.judge_summary(JUDGE_STAGE_OUTPUT).splitlines()[:2] == [
        "judge smollm2-135m-instruct (llama.cpp): tuned vs base preference "
        "0.550 [0.410, 0.690] no clear preference, 1 unparseable",
        "judge smollm2-135m-instruct (llama.cpp): aligned vs tuned preference "
        "0.650 [0.520, 0.780] prefers aligned, 0 unparseable"]


def test_judge_off_is_one_line_and_no_file_no_section():
    off = section(html_page.build_report(eval_metrics=EVAL_METRICS, judge={"judge": "off"}),
                  "judge")
    assert "LLM judge off (judge.model in params.yaml)" in off and "<table" not in off
    assert judge_section.judge_summary({"judge": "off"}) == (
        "LLM judge off (judge.model in params.yaml)")
    missing = html_page.build_report(eval_metrics=EVAL_METRICS)
    assert 'id="judge"' not in missing and "Judge" not in missing
    assert judge_section.judge_summary(None) is None


# --- headline: only the metrics the data has ----------------------------------------------

def test_free_text_run_has_no_task_metric_rows_or_bars(tmp_path: Path, monkeypatch):
    assert [row.name for row in html_page.metric_rows(FREE_TEXT_EVAL_METRICS)] == [
        "loss", "perplexity", "rougeL", "chrf"]
    metrics = section(html_page.build_report(eval_metrics=FREE_TEXT_EVAL_METRICS), "metrics")
    for absent in ("task_accuracy", "json_valid", "reward", "exact_match", "field_"):
        assert absent not in metrics
    console = Console(width=120, record=True)
    console.print(html_page.summary_table(FREE_TEXT_EVAL_METRICS))
    assert "task_accuracy" not in console.export_text()

    drawn = bars_drawn(monkeypatch)
    assert plotting.share_metrics(FREE_TEXT_EVAL_METRICS) == ["rougeL"]
    plotting.plot_base_vs_tuned(FREE_TEXT_EVAL_METRICS, tmp_path / "base_vs_tuned.png")
    chart = drawn["base_vs_tuned.png"]
    assert chart["ticks"] == ["rougeL"] and chart["bars"] == [0.21, 0.34]  # no zero bars


def test_a_plugin_metric_is_in_the_headline_the_heldout_rows_and_the_chart(tmp_path: Path,
                                                                           monkeypatch):
    rows = {row.name: row for row in html_page.metric_rows(PLUGIN_EVAL_METRICS)}
    assert list(rows) == ["loss", "perplexity", "rougeL", "chrf", "correct",
                          "heldout loss", "heldout correct"]
    assert (rows["correct"].change, rows["correct"].status) == (0.25, "improved")
    html = html_page.build_report(eval_metrics=PLUGIN_EVAL_METRICS)
    assert '<tr data-metric="correct">' in html and '<tr data-metric="heldout correct">' in html

    drawn = bars_drawn(monkeypatch)
    assert plotting.share_metrics(PLUGIN_EVAL_METRICS) == ["rougeL", "correct"]
    plotting.plot_base_vs_tuned(PLUGIN_EVAL_METRICS, tmp_path / "base_vs_tuned.png")
    assert drawn["base_vs_tuned.png"]["ticks"] == ["rougeL", "correct"]
    assert drawn["base_vs_tuned.png"]["bars"] == [0.21, 0.25, 0.34, 0.5]


def test_share_metrics_leave_out_other_scales_and_values_outside_0_1():
    eval_metrics = {"base": {"loss": 0.4, "chrf": 0.9, "eval_loss": 0.3, "words": 12.0,
                             "concise": 0.8, "margin": -0.2},
                    "tuned": {"loss": 0.3, "chrf": 0.95, "eval_loss": 0.2, "words": 0.9,
                              "concise": 1.0, "margin": 0.5},
                    "aligned": {"concise": 0.9, "margin": 0.6}}
    # loss, chrf: another scale even in 0..1; words, margin: a value outside 0..1.
    assert plotting.share_metrics(eval_metrics) == ["concise"]


def test_export_columns_nobody_has_are_left_out():
    export = {"examples": 12, "transformers": {"rougeL": 0.3, "tokens_per_second": 7.0},
              "q8_0": {"file": "models/gguf/tuned-q8_0.gguf", "agreement": 0.9, "size_mb": 140.0,
                       "tokens_per_second": 40.0, "speedup": 5.7, "template_differences": 0}}
    export_section = section(html_page.build_report(eval_metrics=FREE_TEXT_EVAL_METRICS,
                                                    export=export), "export")
    headers = re.findall(r"<th>([^<]+)</th>", export_section)
    assert headers == ["model", "agreement with transformers", "template differences",
                       "tokens/s", "speed-up", "file size MB"]
    assert html_page.export_summary(export) == (
        "llama.cpp q8_0: agreement 0.9000, speed-up 5.70\u00d7, 140.0 MB")


# --- the stages -------------------------------------------------------------------------

def test_plot_and_report_stages_show_general_and_judge(tmp_path: Path):
    make_fake_inputs(tmp_path)
    (tmp_path / "metrics/eval.json").write_text(json.dumps(GENERAL_EVAL_METRICS))
    (tmp_path / "metrics/judge.json").write_text(json.dumps(JUDGE_STAGE_OUTPUT))
    plot_run = run_stage("plot.py", tmp_path)
    assert plot_run.returncode == 0, plot_run.stderr
    assert_png(tmp_path / "reports/plots/general.png")
    report_run = run_stage("report.py", tmp_path)
    assert report_run.returncode == 0, report_run.stderr
    html = (tmp_path / "reports/report.html").read_text()
    assert section(html, "general").count("data:image/png;base64,") == 1
    assert "prefers aligned" in section(html, "judge")
    assert "general ability (110 prompts): all 0.490 -> tuned 0.450" in report_run.stdout
    assert "tuned vs base preference 0.550 [0.410, 0.690]" in report_run.stdout

    (tmp_path / "metrics/judge.json").unlink()  # a run from before the judge stage
    report_run = run_stage("report.py", tmp_path)
    assert report_run.returncode == 0, report_run.stderr
    assert 'id="judge"' not in (tmp_path / "reports/report.html").read_text()
