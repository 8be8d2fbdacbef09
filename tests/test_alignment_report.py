"""The align stage in the plots and the report: align_*.png from TRL's DVCLive curves, the
aligned model beside the tuned one, and the Alignment section from metrics/align/summary.json.
The inputs are fakes shaped like what the align and evaluate stages write."""

import json
import re
from html import unescape
from pathlib import Path

import pytest
from rich.console import Console

from tunelab.report import html_page, plotting
from test_plotting_reporting import (  # noqa: E402  (tests/ is on sys.path under pytest)
    EVAL_METRICS, assert_png, assert_self_contained, make_fake_inputs, metric_status, run_stage,
    write_tsv)

# eval.json after a DPO run: every model also scored by the reward; aligned = SFT + DPO.
# Aligned vs tuned: loss worse, task_accuracy and reward better, exact_match the same.
ALIGNED_EVAL_METRICS = {
    **EVAL_METRICS,
    "objective": "dpo",
    "base": {**EVAL_METRICS["base"], "reward": 0.2},
    "tuned": {**EVAL_METRICS["tuned"], "reward": 0.6},
    "aligned": {"loss": 1.3, "perplexity": 3.67, "task_accuracy": 0.625, "exact_match": 0.25,
                "field_category": 0.9, "field_priority": 0.85, "rougeL": 0.58, "chrf": 60.0,
                "reward": 0.7},
    "heldout": {"examples": 20,
                "base": {"loss": 2.0, "task_accuracy": 0.1, "json_valid": 0.2, "rougeL": 0.1,
                         "reward": 0.1},
                "tuned": {"loss": 0.5, "task_accuracy": 0.7, "json_valid": 1.0, "rougeL": 0.8,
                          "reward": 0.55},
                "aligned": {"loss": 0.6, "task_accuracy": 0.75, "json_valid": 1.0, "rougeL": 0.8,
                            "reward": 0.65}},
}
ALIGNED_EVAL_METRICS["aligned_delta"] = {key: value - ALIGNED_EVAL_METRICS["tuned"][key]
                                         for key, value in ALIGNED_EVAL_METRICS["aligned"].items()}
# {metric row: (aligned, change vs SFT, status vs SFT)} as the report prints them.
EXPECTED_ALIGNED_CELLS = {
    "loss": ("1.3000", "+0.2000", "worse"), "perplexity": ("3.6700", "+0.6700", "worse"),
    "task_accuracy": ("0.6250", "+0.1250", "improved"), "exact_match": ("0.2500", "0.0000", "same"),
    "field_category": ("0.9000", "0.0000", "same"),
    "field_priority": ("0.8500", "+0.0500", "improved"),
    "rougeL": ("0.5800", "-0.0200", "worse"), "chrf": ("60.0000", "-1.5000", "worse"),
    "reward": ("0.7000", "+0.1000", "improved"),
    "heldout loss": ("0.6000", "+0.1000", "worse"),
    "heldout task_accuracy": ("0.7500", "+0.0500", "improved"),
    "heldout json_valid": ("1.0000", "0.0000", "same"),
    "heldout reward": ("0.6500", "+0.1000", "improved"),
}

DPO_SUMMARY = {"objective": "dpo", "beta": 0.1, "precision": "fp32", "steps": 30,
               "train_loss": 0.52, "final_loss": 0.47, "train_rows": 255,
               "pairs": {"train": 255, "test": 21},
               "heldout_pairs": {"rows": 21,
                                 "before": {"loss": 0.693147, "preference_accuracy": 0.0,
                                            "reward_margin": 0.0},
                                 "after": {"loss": 0.47, "preference_accuracy": 0.79,
                                           "reward_margin": 1.02}}}
GRPO_SUMMARY = {"objective": "grpo", "beta": 0.04, "precision": "fp32", "steps": 20,
                "train_loss": 0.011, "final_loss": 0.02, "train_rows": 120}
# {held-out pair metric: (before, after, change, status)}
EXPECTED_DPO_PAIRS = {"loss": ("0.6931", "0.4700", "-0.2231", "improved"),
                      "preference_accuracy": ("0.0000", "0.7900", "+0.7900", "improved"),
                      "reward_margin": ("0.0000", "1.0200", "+1.0200", "improved")}

DPO_SERIES = ("loss", "learning_rate", "grad_norm", "rewards/chosen", "rewards/rejected",
              "rewards/accuracies", "rewards/margins", "logps/chosen", "logps/rejected")
GRPO_SERIES = ("loss", "learning_rate", "grad_norm", "reward", "reward_std", "kl",
               "completions/mean_length", "rewards/task_reward/mean", "entropy")


def write_align_curves(align_dir: Path, series_names: tuple[str, ...], steps: int = 6) -> None:
    """DVCLive TSVs as TRL's trainer logs leave them: "a/b" in a subfolder, a timestamp column.
    Series i at step s is i + 0.1 * s, so every figure has distinct lines."""
    for index, name in enumerate(series_names):
        write_tsv(align_dir / "plots/metrics" / f"{name}.tsv", name.rsplit("/", 1)[-1],
                  [(step, index + 0.1 * step) for step in range(1, steps + 1)], timestamp=True)


def make_aligned_run(root: Path, summary: dict = DPO_SUMMARY,
                     series_names: tuple[str, ...] = DPO_SERIES) -> Path:
    """make_fake_inputs, then what an alignment adds: its curves and summary, the aligned
    model in eval.json and an aligned answer in every sample."""
    make_fake_inputs(root)
    write_align_curves(root / "metrics/align", series_names)
    (root / "metrics/align/summary.json").write_text(json.dumps(summary))
    eval_metrics = {**ALIGNED_EVAL_METRICS, "objective": summary["objective"]}
    (root / "metrics/eval.json").write_text(json.dumps(eval_metrics))
    samples_path = root / "metrics/samples.jsonl"
    samples = [{**json.loads(line), "aligned": f"aligned answer {index}"}
               for index, line in enumerate(samples_path.read_text().splitlines())]
    samples_path.write_text("".join(json.dumps(sample) + "\n" for sample in samples))
    return root


def section(html: str, section_id: str) -> str:
    found = re.search(rf'<section id="{section_id}">(.*?)</section>', html, flags=re.DOTALL)
    assert found, f"no {section_id} section"
    return found.group(1)


def aligned_cells(html: str) -> dict[str, tuple[str, str, str]]:
    """{metric row: (aligned, change vs SFT, status vs SFT)} of the metrics table."""
    cells = {}
    rows = re.findall(r'<tr data-metric="([^"]+)">(.*?)</tr>', section(html, "metrics"),
                      flags=re.DOTALL)
    for name, row in rows:
        value = re.search(r'data-column="aligned">([^<]*)<', row).group(1)
        change = re.search(r'data-column="aligned_change">([^<]*)<', row).group(1)
        status = re.search(r'data-column="aligned_status">(?:<span[^>]*>)?([^<]*)<', row).group(1)
        cells[name] = (value, change, status)
    return cells


def pair_rows(html: str) -> dict[str, tuple[str, ...]]:
    """{held-out pair metric: (before, after, change, status)} of the Alignment section."""
    rows = re.findall(r'<tr data-pair-metric="([^"]+)">(.*?)</tr>', section(html, "alignment"),
                      flags=re.DOTALL)
    return {name: tuple(re.findall(r'<td class="number">([^<]*)</td>', row))
            + (re.search(r'class="status status-[a-z]+">([^<]+)<', row).group(1),)
            for name, row in rows}


def drawn_figures(monkeypatch) -> dict[str, dict]:
    """Record, per PNG written, the labels of its lines and the y range of its bands."""
    drawn, save = {}, plotting._save

    def record(fig, out_path, dpi):
        ax = fig.axes[0]
        drawn[Path(out_path).name] = {
            "lines": [line.get_label() for line in ax.get_lines()],
            "bands": [(round(float(c.get_paths()[0].vertices[:, 1].min()), 6),
                       round(float(c.get_paths()[0].vertices[:, 1].max()), 6))
                      for c in ax.collections],
            "bars": [round(patch.get_height(), 6) for patch in ax.patches],
            "legend": [text.get_text() for text in ax.get_legend().get_texts()],
            "title": ax.get_title()}
        return save(fig, out_path, dpi)

    monkeypatch.setattr(plotting, "_save", record)
    return drawn


# --- plots ---------------------------------------------------------------------------------

def test_dpo_curves_give_the_loss_and_the_rewards_figures(tmp_path: Path, monkeypatch):
    write_align_curves(tmp_path / "metrics/align", DPO_SERIES)
    drawn = drawn_figures(monkeypatch)
    written = plotting.plot_training_curves(tmp_path / "metrics/align", tmp_path / "plots",
                                            figures=plotting.ALIGN_FIGURES)
    assert [path.name for path in written] == ["align_loss.png", "align_rewards.png"]
    for path in written:
        assert_png(path)
    assert drawn["align_loss.png"]["lines"] == ["train loss"]
    assert drawn["align_rewards.png"]["lines"] == ["reward margin (chosen - rejected)",
                                                   "preference accuracy (share, 0..1)"]
    assert drawn["align_rewards.png"]["bands"] == []


def test_grpo_curves_give_the_reward_band_kl_and_length_figures(tmp_path: Path, monkeypatch):
    write_align_curves(tmp_path / "metrics/align", GRPO_SERIES)
    drawn = drawn_figures(monkeypatch)
    written = plotting.plot_training_curves(tmp_path / "metrics/align", tmp_path / "plots",
                                            figures=plotting.ALIGN_FIGURES)
    assert [path.name for path in written] == ["align_loss.png", "align_rewards.png",
                                               "align_kl.png", "align_completion_length.png"]
    assert drawn["align_rewards.png"]["lines"] == ["mean reward"]
    # reward (series 3) = 3 + 0.1 s, reward_std (series 4) = 4 + 0.1 s, s = 1..6: the band's
    # bottom is -1 at every step, its top 3.6 + 4.6 at step 6.
    assert drawn["align_rewards.png"]["bands"] == [(-1.0, 8.2)]
    assert drawn["align_kl.png"]["lines"] == ["KL"]
    assert drawn["align_completion_length.png"]["lines"] == ["mean completion length"]


def test_no_align_curves_no_align_figures(tmp_path: Path):
    assert plotting.plot_training_curves(tmp_path / "metrics/align", tmp_path / "plots",
                                         figures=plotting.ALIGN_FIGURES) == []


def test_bars_add_the_aligned_model_when_eval_json_has_it(tmp_path: Path, monkeypatch):
    drawn = drawn_figures(monkeypatch)
    plotting.plot_base_vs_tuned(ALIGNED_EVAL_METRICS, tmp_path / "aligned.png")
    plotting.plot_base_vs_tuned(EVAL_METRICS, tmp_path / "sft.png")
    aligned, sft = drawn["aligned.png"], drawn["sft.png"]
    assert aligned["legend"] == ["base (initial)", "tuned (SFT)", "aligned"]
    assert aligned["title"] == "Base vs tuned vs aligned on the test split"
    # task_accuracy, exact_match, field_category, field_priority, rougeL, reward; one model
    # after the other.
    assert aligned["bars"] == [0.75, 0.25, 0.5, 0.4, 0.3, 0.2, 0.5, 0.25, 0.9, 0.8, 0.6, 0.6,
                               0.625, 0.25, 0.9, 0.85, 0.58, 0.7]
    assert sft["legend"] == ["base (initial)", "tuned (SFT)"]
    assert sft["title"] == "Base vs tuned on the test split"
    assert sft["bars"] == [0.75, 0.25, 0.5, 0.4, 0.3, 0.5, 0.25, 0.9, 0.8, 0.6]


# --- the report ----------------------------------------------------------------------------

def test_metrics_table_gains_the_aligned_columns():
    html = html_page.build_report(eval_metrics=ALIGNED_EVAL_METRICS)
    headers = re.findall(r"<th>([^<]+)</th>", section(html, "metrics"))
    assert headers == ["metric", "initial (base)", "SFT (tuned)", "change", "status",
                       "aligned (dpo)", "change vs SFT", "status vs SFT"]
    assert aligned_cells(html) == EXPECTED_ALIGNED_CELLS
    assert metric_status(html, "loss") == "improved"  # base -> tuned, as without alignment
    assert "Metrics: base vs tuned vs aligned" in html


def test_a_metric_the_aligned_model_lacks_shows_dashes():
    partial = {**ALIGNED_EVAL_METRICS, "aligned": {"loss": 1.0}}
    cells = aligned_cells(html_page.build_report(eval_metrics=partial))
    assert cells["loss"] == ("1.0000", "-0.1000", "improved")
    assert cells["chrf"] == ("\u2014", "\u2014", "\u2014")


def test_console_table_has_the_aligned_columns():
    table = html_page.summary_table(ALIGNED_EVAL_METRICS)
    assert [column.header for column in table.columns] == [
        "metric", "initial (base)", "SFT (tuned)", "change", "status", "aligned (dpo)",
        "change vs SFT", "status vs SFT"]
    console = Console(width=160, record=True)
    console.print(table)
    assert re.search(r"task_accuracy .* 0\.6250 .* \+0\.1250 .* improved", console.export_text())


def test_alignment_section_shows_the_settings_pairs_and_plots(tmp_path: Path):
    write_align_curves(tmp_path / "metrics/align", DPO_SERIES)
    plot_paths = plotting.plot_training_curves(tmp_path / "metrics/align", tmp_path / "plots",
                                               figures=plotting.ALIGN_FIGURES)
    plot_paths += plotting.plot_training_curves(tmp_path / "metrics/align", tmp_path / "plots")
    html = html_page.build_report(eval_metrics=ALIGNED_EVAL_METRICS, align_summary=DPO_SUMMARY,
                                  plot_paths=plot_paths)
    assert_self_contained(html)
    alignment = section(html, "alignment")
    assert "<h2>Alignment (DPO)</h2>" in alignment
    assert "<h3>Held-out preference pairs (21): before (SFT) &rarr; after (aligned)</h3>" in alignment
    settings = dict(re.findall(r'<th scope="row">([^<]+)</th>\s*<td>\s*([^<]*?)\s*</td>',
                               alignment))
    assert settings == {"objective": "dpo", "beta": "0.1", "precision": "fp32", "steps": "30",
                        "train_loss": "0.52", "final_loss": "0.47", "train_rows": "255",
                        "pairs.train": "255", "pairs.test": "21"}
    assert pair_rows(html) == EXPECTED_DPO_PAIRS
    # The align_*.png go to the Alignment section, the SFT curves stay under Plots.
    assert [unescape(caption) for caption in
            re.findall(r"<figcaption>([^<]+)</figcaption>", alignment)] == [
        html_page.PLOT_CAPTIONS["align_loss"], html_page.PLOT_CAPTIONS["align_rewards"]]
    assert section(html, "plots").count("data:image/png;base64,") == 3
    assert '<a href="#alignment">Alignment</a>' in html


def test_grpo_has_no_pair_table_and_kto_only_the_pairs_it_has():
    grpo = section(html_page.build_report(eval_metrics=ALIGNED_EVAL_METRICS,
                                          align_summary=GRPO_SUMMARY), "alignment")
    assert "<h2>Alignment (GRPO)</h2>" in grpo and "data-pair-metric" not in grpo
    kto_summary = {"objective": "kto", "beta": 0.1, "steps": 12,
                   "heldout_pairs": {"before": {"loss": 0.5, "reward_margin": 0.0},
                                     "after": {"loss": 0.4, "reward_margin": 0.3}}}
    kto = html_page.build_report(eval_metrics=ALIGNED_EVAL_METRICS, align_summary=kto_summary)
    assert pair_rows(kto) == {"loss": ("0.5000", "0.4000", "-0.1000", "improved"),
                              "reward_margin": ("0.0000", "0.3000", "+0.3000", "improved")}
    assert "Held-out preference pairs: before" in kto  # no count in this summary


@pytest.mark.parametrize("align_summary", [None, {"objective": "none"}])
def test_without_alignment_the_report_is_unchanged(align_summary):
    html = html_page.build_report(eval_metrics=EVAL_METRICS, align_summary=align_summary)
    assert html == html_page.build_report(eval_metrics=EVAL_METRICS)
    assert 'id="alignment"' not in html and "Alignment" not in html
    assert re.findall(r"<th>([^<]+)</th>", section(html, "metrics")) == [
        "metric", "initial (base)", "final (tuned)", "change", "status"]
    assert html_page.alignment_summary(align_summary) is None


def test_samples_show_the_aligned_answer_beside_base_and_tuned():
    samples = [{"prompt": "p", "reference": "r", "base": "b", "tuned": "t", "aligned": "<i>a</i>"}]
    html = section(html_page.build_report(eval_metrics=ALIGNED_EVAL_METRICS, samples=samples),
                   "samples")
    assert re.findall(r"<h4>([^<]+)</h4>", html) == ["Prompt", "Reference", "Base", "Tuned",
                                                     "aligned (dpo)"]
    assert '<div class="sample-outputs with-aligned">' in html
    assert "<pre>&lt;i&gt;a&lt;/i&gt;</pre>" in html


def test_alignment_console_line():
    assert html_page.alignment_summary(DPO_SUMMARY) == (
        "alignment dpo: held-out pairs (21) loss 0.6931 -> 0.4700, preference_accuracy 0.0000 "
        "-> 0.7900, reward_margin 0.0000 -> 1.0200")
    assert html_page.alignment_summary(GRPO_SUMMARY) == "alignment grpo: no held-out pairs"


# --- the stages, run as dvc.yaml runs them -------------------------------------------------

@pytest.mark.parametrize("summary, series, align_plots", [
    (DPO_SUMMARY, DPO_SERIES, ["align_loss.png", "align_rewards.png"]),
    (GRPO_SUMMARY, GRPO_SERIES, ["align_completion_length.png", "align_kl.png", "align_loss.png",
                                 "align_rewards.png"]),
], ids=["dpo", "grpo"])
def test_plot_and_report_stages_with_an_alignment(tmp_path: Path, summary, series, align_plots):
    make_aligned_run(tmp_path, summary, series)
    plot_run = run_stage("plot.py", tmp_path)
    assert plot_run.returncode == 0, plot_run.stderr
    sft_plots = ["base_vs_tuned.png", "grad_norm.png", "learning_rate.png", "loss.png"]
    assert sorted(p.name for p in (tmp_path / "reports/plots").iterdir()) == sorted(
        align_plots + sft_plots)

    report_run = run_stage("report.py", tmp_path)
    assert report_run.returncode == 0, report_run.stderr
    html = (tmp_path / "reports/report.html").read_text()
    assert_self_contained(html)
    assert section(html, "alignment").count("data:image/png;base64,") == len(align_plots)
    assert section(html, "plots").count("data:image/png;base64,") == len(sft_plots)
    assert aligned_cells(html) == EXPECTED_ALIGNED_CELLS
    assert "<pre>aligned answer 2</pre>" in html and "aligned answer 3" not in html  # max_samples 3
    # Off a terminal the table is printed whole, not cut to 80 columns.
    assert re.search(r"heldout task_accuracy .* 0\.7500 .* \+0\.0500 .* improved",
                     report_run.stdout)
    assert f"aligned ({summary['objective']})" in report_run.stdout
    expected_line = html_page.alignment_summary(summary)
    assert f"\n{expected_line}\n" in report_run.stdout
    if summary is DPO_SUMMARY:
        assert pair_rows(html) == EXPECTED_DPO_PAIRS


def test_report_stage_without_an_align_summary_still_writes_the_report(tmp_path: Path):
    make_fake_inputs(tmp_path)
    (tmp_path / "metrics/align/summary.json").unlink()  # a run from before the align stage
    report_run = run_stage("report.py", tmp_path)
    assert report_run.returncode == 0, report_run.stderr
    assert 'id="alignment"' not in (tmp_path / "reports/report.html").read_text()
