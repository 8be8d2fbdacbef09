"""Plots and the HTML report, on small fake inputs shaped like the real stages' outputs."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from rich.console import Console

from tunelab.report import html_page, plotting
from conftest import MIXED_FILE_FIGURES, stage_args

REPO_ROOT = Path(__file__).resolve().parents[1]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

# Loss went down (improved), task_accuracy went down (worse), exact_match unchanged.
EVAL_METRICS = {
    "method": "lora",
    "examples": 48,
    "base": {"loss": 2.5, "perplexity": 12.18, "task_accuracy": 0.75, "exact_match": 0.25,
             "field_category": 0.5, "field_priority": 0.4, "rougeL": 0.3, "chrf": 35.0},
    "tuned": {"loss": 1.1, "perplexity": 3.0, "task_accuracy": 0.5, "exact_match": 0.25,
              "field_category": 0.9, "field_priority": 0.8, "rougeL": 0.6, "chrf": 61.5},
}
EVAL_METRICS["delta"] = {k: EVAL_METRICS["tuned"][k] - v for k, v in EVAL_METRICS["base"].items()}

# metrics/export.json as the export stage writes it: settings, then one object per model.
EXPORT_METRICS = {
    "examples": 56, "speed_examples": 8, "max_new_tokens": 64, "threads": 2,
    "transformers": {"task_accuracy": 0.83, "json_valid": 1.0, "exact_match": 0.5,
                     "field_category": 0.9, "rougeL": 0.9, "chrf": 80.1, "tokens_per_second": 7.3},
    "q8_0": {"file": "models/gguf/tuned-q8_0.gguf", "size_mb": 145.2, "task_accuracy": 0.83,
             "json_valid": 1.0, "exact_match": 0.5, "field_category": 0.9, "rougeL": 0.9,
             "chrf": 80.0, "agreement": 0.96, "template_differences": 0, "tokens_per_second": 40.1,
             "speedup": 5.5},
    "q4_k_m": {"file": "models/gguf/tuned-q4_k_m.gguf", "size_mb": 98.4, "task_accuracy": 0.8,
               "json_valid": 1.0, "exact_match": 0.4375, "field_category": 0.875, "rougeL": 0.85,
               "chrf": 77.2, "agreement": 0.75, "template_differences": 2,
               "tokens_per_second": 61.6, "speedup": 8.438},
    "lora": {"file": "models/gguf/adapter-f32.gguf", "base_file_type": "f32", "size_mb": 3.6,
             "task_accuracy": 0.83, "json_valid": 1.0, "exact_match": 0.5, "field_category": 0.9,
             "rougeL": 0.9, "chrf": 80.1, "agreement": 1.0, "template_differences": 0,
             "tokens_per_second": 12.25, "speedup": 1.678},
}
# task accuracy, valid JSON, exact match, agreement, template differences, tokens/s, speed-up, MB
EXPORT_CELLS = {
    "transformers": ["0.8300", "1.0000", "0.5000", "\u2014", "\u2014", "7.3", "\u2014", "\u2014"],
    "q8_0": ["0.8300", "1.0000", "0.5000", "0.9600", "0", "40.1", "5.50\u00d7", "145.2"],
    "q4_k_m": ["0.8000", "1.0000", "0.4375", "0.7500", "2", "61.6", "8.44\u00d7", "98.4"],
    "lora": ["0.8300", "1.0000", "0.5000", "1.0000", "0", "12.2", "1.68\u00d7", "3.6"],
}

PARAMS_YAML = """\
model: {base: smollm2-135m-instruct}
prepare: {seed: 7}
train: {learning_rate: 2.0e-4, lora: {r: 8}}
evaluate: {max_new_tokens: 64}
plot: {dpi: 80}
report: {max_samples: 3}
"""


def write_tsv(path: Path, name: str, points: list[tuple[int, float]], timestamp: bool = False):
    path.parent.mkdir(parents=True, exist_ok=True)
    header = ("timestamp\t" if timestamp else "") + f"step\t{name}\n"
    rows = "".join(("1700000000\t" if timestamp else "") + f"{step}\t{value}\n" for step, value in points)
    path.write_text(header + rows)


def make_fake_inputs(root: Path, sample_count: int = 5, with_grad_norm: bool = True) -> None:
    """The files the plot and report stages read, under ``root``."""
    tsv_dir = root / "metrics/train/plots/metrics"
    write_tsv(tsv_dir / "loss.tsv", "loss", [(s, 3.0 - 0.1 * s) for s in range(0, 20, 2)])
    write_tsv(tsv_dir / "eval/loss.tsv", "loss", [(5, 2.6), (10, 2.2), (15, 2.0)], timestamp=True)
    write_tsv(tsv_dir / "learning_rate.tsv", "learning_rate", [(s, 1e-3 * (1 - s / 20)) for s in range(20)])
    if with_grad_norm:
        write_tsv(tsv_dir / "grad_norm.tsv", "grad_norm", [(s, 1.0 + 0.05 * s) for s in range(20)])
    (root / "metrics/train/metrics.json").write_text(json.dumps({"train": {"loss": 1.1}, "step": 19}))
    (root / "metrics/eval.json").write_text(json.dumps(EVAL_METRICS))
    samples = [{"prompt": f"prompt {i} <script>alert('x')</script> & more",
                "reference": f"reference {i}", "base": f"base answer {i}", "tuned": f"tuned answer {i}"}
               for i in range(sample_count)]
    (root / "metrics/samples.jsonl").write_text("".join(json.dumps(s) + "\n" for s in samples))
    (root / "metrics/data.json").write_text(json.dumps({
        "examples_read": 480, "duplicates_dropped": 0, "splits": {"train": 384, "val": 48, "test": 48},
        "tokens": {"mean": 141.2, "p50": 139, "p95": 180, "max": 220}}))
    (root / "metrics/validation.json").write_text(json.dumps(
        {"errors": 0, "warnings": ["3 examples exceed train.max_length <b>"]}))
    (root / "metrics/export.json").write_text(json.dumps(EXPORT_METRICS))
    # The align stage always writes its summary; with alignment off it is only this.
    (root / "metrics/align").mkdir()
    (root / "metrics/align/summary.json").write_text(json.dumps({"objective": "none"}))
    (root / "params.yaml").write_text(PARAMS_YAML)


def assert_png(path: Path) -> None:
    assert path.exists(), path
    assert path.read_bytes()[:8] == PNG_MAGIC, f"{path} is not a PNG"


def assert_self_contained(html: str) -> None:
    external = re.findall(r"""(?:src|href)\s*=\s*["']?\s*(?:https?:)?//""", html, flags=re.IGNORECASE)
    assert not external, external
    assert "@import" not in html and "url(" not in html


def metric_status(html: str, metric: str) -> str:
    row = re.search(rf'<tr data-metric="{metric}">(.*?)</tr>', html, flags=re.DOTALL)
    assert row, f"no row for {metric}"
    return re.search(r'class="status status-[a-z]+">([^<]+)<', row.group(1)).group(1)


@pytest.fixture
def fake_run(tmp_path: Path) -> Path:
    make_fake_inputs(tmp_path)
    return tmp_path


def test_training_curves_written_as_png(fake_run: Path):
    written = plotting.plot_training_curves(fake_run / "metrics/train", fake_run / "plots")
    assert sorted(p.name for p in written) == ["grad_norm.png", "learning_rate.png", "loss.png"]
    for path in written:
        assert_png(path)


def test_training_curves_skip_absent_series(tmp_path: Path):
    make_fake_inputs(tmp_path, with_grad_norm=False)
    written = plotting.plot_training_curves(tmp_path / "metrics/train", tmp_path / "plots")
    assert sorted(p.name for p in written) == ["learning_rate.png", "loss.png"]
    assert plotting.plot_training_curves(tmp_path / "no_such_dir", tmp_path / "empty") == []


def test_dvclive_series_keyed_by_relative_path(fake_run: Path):
    series = plotting.read_dvclive_series(fake_run / "metrics/train")
    assert set(series) == {"loss", "eval/loss", "learning_rate", "grad_norm"}
    steps, values = series["eval/loss"]  # the file with a timestamp column
    assert steps == [5, 10, 15] and values == [2.6, 2.2, 2.0]


def test_base_vs_tuned_bars(tmp_path: Path):
    out_path = plotting.plot_base_vs_tuned(EVAL_METRICS, tmp_path / "base_vs_tuned.png")
    assert_png(out_path)
    assert plotting.plot_base_vs_tuned({"base": {"loss": 1.0}, "tuned": {"loss": 0.5}},
                                       tmp_path / "none.png") is None
    assert not (tmp_path / "none.png").exists()


def test_metric_status_knows_which_direction_is_better():
    statuses = {row.name: row.status for row in html_page.metric_rows(EVAL_METRICS)}
    assert statuses["loss"] == "improved"
    assert statuses["perplexity"] == "improved"
    assert statuses["task_accuracy"] == "worse"
    assert statuses["exact_match"] == "same"
    assert statuses["chrf"] == "improved"
    assert html_page.compare_status("loss", 1.0, 1.0 + 1e-9) == "same"
    assert html_page.compare_status("loss", 1.0, 1.5) == "worse"


def test_report_is_self_contained_and_escaped(fake_run: Path):
    plot_paths = plotting.plot_training_curves(fake_run / "metrics/train", fake_run / "plots")
    plot_paths.append(plotting.plot_base_vs_tuned(EVAL_METRICS, fake_run / "plots/base_vs_tuned.png"))
    samples = [json.loads(line) for line in (fake_run / "metrics/samples.jsonl").read_text().splitlines()]
    html = html_page.build_report(
        eval_metrics=EVAL_METRICS, params={"model": {"base": "tiny"}, "train": {"lora": {"r": 8}}},
        samples=samples, data_stats=json.loads((fake_run / "metrics/data.json").read_text()),
        validation={"errors": 0, "warnings": ["<b>bold</b>"]}, plot_paths=plot_paths, max_samples=2)

    assert_self_contained(html)
    assert html.count("data:image/png;base64,") == len(plot_paths) == 4
    assert metric_status(html, "loss") == "improved"
    assert metric_status(html, "task_accuracy") == "worse"
    assert "<script>" not in html and "&lt;script&gt;" in html
    assert "<b>bold</b>" not in html
    assert html.count('class="sample"') == 2
    assert "prompt 1 " in html and "prompt 2 " not in html
    assert "splits.train" in html and "lora.r" in html


def test_report_with_only_eval_metrics_says_what_is_missing():
    html = html_page.build_report(eval_metrics=EVAL_METRICS)
    assert metric_status(html, "loss") == "improved"
    assert "No plots were found." in html and "No samples were found." in html
    assert "metrics/data.json was not found." in html


def test_summary_table_has_the_same_rows():
    table = html_page.summary_table(EVAL_METRICS)
    assert [c.header for c in table.columns] == ["metric", "initial (base)", "final (tuned)", "change", "status"]
    console = Console(width=120, record=True)
    console.print(table)
    text = console.export_text()
    assert re.search(r"loss .*improved", text) and re.search(r"task_accuracy .*worse", text)


def export_table(html: str) -> dict[str, list[str]]:
    """{model: its cells} of the report's export table, in row order; a highlighted cell
    comes back as "!" + its text."""
    section = re.search(r'<section id="export">(.*?)</section>', html, flags=re.DOTALL).group(1)
    table = {}
    for name, row in re.findall(r'<tr data-model="([^"]+)">(.*?)</tr>', section, flags=re.DOTALL):
        cells = re.findall(r'<td class="number" data-column="[a-z_]+">(.*?)</td>', row)
        table[name] = [re.sub(r'<span class="status status-worse">(.*)</span>', r"!\1", cell)
                       for cell in cells]
    return table


def test_export_rows_put_transformers_first_and_lora_last():
    shuffled = {key: EXPORT_METRICS[key] for key in
                ("examples", "lora", "q4_k_m", "threads", "transformers", "q8_0")}
    rows = html_page.export_rows(shuffled)
    assert [row.name for row in rows] == ["transformers", "q4_k_m", "q8_0", "lora"]
    assert [(row.file, row.note) for row in rows] == [
        (None, "reference"), ("models/gguf/tuned-q4_k_m.gguf", None),
        ("models/gguf/tuned-q8_0.gguf", None), ("models/gguf/adapter-f32.gguf", "adapter on the f32 base")]
    assert [row.template_mismatch for row in rows] == [False, True, False, False]
    assert html_page.export_settings(shuffled) == [("test examples", 56), ("CPU threads", 2)]


def test_report_shows_the_export_table_with_dashes_and_the_drift_marked():
    html = html_page.build_report(eval_metrics=EVAL_METRICS, export=EXPORT_METRICS)
    table = export_table(html)
    assert list(table) == ["transformers", "q8_0", "q4_k_m", "lora"]
    expected = {name: list(cells) for name, cells in EXPORT_CELLS.items()}
    expected["q4_k_m"][4] = "!2"  # template_differences > 0: marked like a worse metric
    assert table == expected
    section = re.search(r'<section id="export">(.*?)</section>', html, flags=re.DOTALL).group(1)
    headers = re.findall(r"<th>([^<]+)</th>", section)
    assert headers == ["model", "task accuracy", "valid JSON", "exact match",
                       "agreement with transformers", "template differences", "tokens/s",
                       "speed-up", "file size MB"]
    assert ("test examples: 56 \u00b7 examples timed: 8 \u00b7 max new tokens: 64 \u00b7 CPU threads: 2"
            in section)
    assert "<small>models/gguf/tuned-q4_k_m.gguf</small>" in section
    assert "(adapter on the f32 base)" in section
    assert "<code>ollama create NAME -f models/gguf/Modelfile</code>" in section
    assert "Agreement: the share of test examples where llama.cpp's answer" in section


def test_report_without_export_says_it_is_missing():
    html = html_page.build_report(eval_metrics=EVAL_METRICS)
    assert "metrics/export.json was not found." in html and 'data-model="' not in html


def test_export_summary_is_one_line_per_gguf_file():
    assert html_page.export_summary(EXPORT_METRICS) == (
        "llama.cpp q8_0: task accuracy 0.8300, agreement 0.9600, speed-up 5.50\u00d7, 145.2 MB\n"
        "llama.cpp q4_k_m: task accuracy 0.8000, agreement 0.7500, speed-up 8.44\u00d7, 98.4 MB, "
        "[bold red]2 template differences[/]\n"
        "llama.cpp lora: task accuracy 0.8300, agreement 1.0000, speed-up 1.68\u00d7, 3.6 MB")


def run_stage(script: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    args = stage_args(Path(script).stem, cwd)
    return subprocess.run([sys.executable, str(REPO_ROOT / "stages" / script), *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120)


def test_plot_and_report_stages_end_to_end(fake_run: Path):
    stale_plot = fake_run / "reports/plots/stale.png"
    stale_plot.parent.mkdir(parents=True)
    stale_plot.write_bytes(PNG_MAGIC)

    plot_run = run_stage("plot.py", fake_run)
    assert plot_run.returncode == 0, plot_run.stderr
    plots = sorted(p.name for p in (fake_run / "reports/plots").iterdir())
    assert plots == ["base_vs_tuned.png", "grad_norm.png", "learning_rate.png", "loss.png"]
    for name in plots:
        assert_png(fake_run / "reports/plots" / name)

    report_run = run_stage("report.py", fake_run)
    assert report_run.returncode == 0, report_run.stderr
    assert "task_accuracy" in report_run.stdout and "improved" in report_run.stdout
    html = (fake_run / "reports/report.html").read_text()
    assert_self_contained(html)
    assert html.count("data:image/png;base64,") == 4
    assert html.count('class="sample"') == 3  # report.max_samples in params.yaml
    # metrics/align/summary.json says "none": the report is the one without an align stage.
    assert 'id="alignment"' not in html and "Alignment" not in html
    assert 'data-column="aligned' not in html and "sample-outputs with-aligned" not in html
    assert "alignment" not in report_run.stdout
    assert "smollm2-135m-instruct" in html and "0.0002" in html  # params shown
    assert list(export_table(html)) == ["transformers", "q8_0", "q4_k_m", "lora"]
    assert ("llama.cpp q4_k_m: task accuracy 0.8000, agreement 0.7500, speed-up 8.44\u00d7, "
            "98.4 MB, 2 template differences\n") in report_run.stdout


@pytest.mark.parametrize("text, error", [
    ("[1, 2]", "metrics/export.json: expected a JSON object, got list"),
    ('{"q8_0": {}\n', "metrics/export.json:2: invalid JSON: Expecting ',' delimiter"),
])
def test_report_stage_rejects_a_broken_export_json_in_one_line(fake_run: Path, text, error):
    (fake_run / "metrics/export.json").write_text(text)
    report_run = run_stage("report.py", fake_run)
    assert report_run.returncode == 1
    assert report_run.stderr == f"report: error: {error}\n"
    assert not (fake_run / "reports/report.html").exists()


def test_report_stage_without_export_json_still_writes_the_report(fake_run: Path):
    (fake_run / "metrics/export.json").unlink()
    report_run = run_stage("report.py", fake_run)
    assert report_run.returncode == 0, report_run.stderr
    assert "llama.cpp" not in report_run.stdout
    assert "metrics/export.json was not found." in (fake_run / "reports/report.html").read_text()


def test_report_stage_fails_clearly_without_eval_metrics(tmp_path: Path):
    (tmp_path / "params.yaml").write_text(PARAMS_YAML)
    report_run = run_stage("report.py", tmp_path)
    assert report_run.returncode != 0
    assert "metrics/eval.json not found" in report_run.stderr


# --- the token-length histogram (metrics/data.json "analysis", tunelab.data.analysis) -------

# p95 moved below p99 (both 95 in the pinned figures), so the two dashed lines differ.
DATA_ANALYSIS = {**MIXED_FILE_FIGURES,
                 "token_lengths": {**MIXED_FILE_FIGURES["token_lengths"], "p95": 90}}


def test_token_length_histogram_draws_the_bins_and_the_lines(tmp_path: Path, monkeypatch):
    drawn = {}
    save = plotting._save

    def keep_axes(fig, out_path, dpi):
        ax = fig.axes[0]
        drawn["bars"] = [(patch.get_x(), patch.get_width(), patch.get_height())
                         for patch in ax.patches]
        drawn["lines"] = {line.get_label(): line.get_xdata()[0] for line in ax.get_lines()}
        drawn["title"] = ax.get_title()
        return save(fig, out_path, dpi)

    monkeypatch.setattr(plotting, "_save", keep_axes)
    path = plotting.plot_token_lengths({"analysis": DATA_ANALYSIS}, tmp_path / "token_lengths.png")
    assert_png(path)
    assert drawn["bars"] == [(32, 8, 2), (40, 8, 0), (48, 8, 0), (56, 8, 0), (64, 8, 0),
                             (72, 8, 2), (80, 8, 1), (88, 8, 1)]
    assert drawn["lines"] == {"p95 = 90": 90, "p99 = 95": 95, "train.max_length = 64": 64}
    assert drawn["title"] == "Token lengths of the examples: 4 of 6 cut"

    far = {**DATA_ANALYSIS, "max_length": 4096}
    plotting.plot_token_lengths({"analysis": far}, tmp_path / "far.png")
    assert "train.max_length = 4096" not in drawn["lines"]
    assert drawn["title"] == ("Token lengths of the examples (train.max_length = 4096, off the "
                              "chart): 4 of 6 cut")


def test_token_length_histogram_needs_the_analysis(tmp_path: Path):
    assert plotting.plot_token_lengths({"tokens": {"p95": 180}}, tmp_path / "none.png") is None
    assert not (tmp_path / "none.png").exists()


def test_report_shows_the_histogram_in_the_data_section(tmp_path: Path):
    plot_paths = [plotting.plot_token_lengths({"analysis": DATA_ANALYSIS},
                                              tmp_path / "token_lengths.png"),
                  plotting.plot_base_vs_tuned(EVAL_METRICS, tmp_path / "base_vs_tuned.png")]
    html = html_page.build_report(eval_metrics=EVAL_METRICS, plot_paths=plot_paths,
                                  data_stats={"examples_read": 6, "analysis": DATA_ANALYSIS})
    data = re.search(r'<section id="data">(.*?)</section>', html, flags=re.DOTALL).group(1)
    plots = re.search(r'<section id="plots">(.*?)</section>', html, flags=re.DOTALL).group(1)
    assert data.count("data:image/png;base64,") == 1 and plots.count("data:image/png;base64,") == 1
    assert "Token lengths of the raw examples against train.max_length" in data
    assert "Token lengths" not in plots
    # The figures are rows of the data table; the bins are the plot, not rows.
    assert "analysis.suggested_max_length.p95" in data and "analysis.loss_tokens.share" in data
    assert "analysis.histogram" not in html


def test_plot_and_report_stages_draw_the_histogram_from_data_json(fake_run: Path):
    data_json = fake_run / "metrics/data.json"
    data_json.write_text(json.dumps({**json.loads(data_json.read_text()), "analysis": DATA_ANALYSIS}))
    plot_run = run_stage("plot.py", fake_run)
    assert plot_run.returncode == 0, plot_run.stderr
    assert_png(fake_run / "reports/plots/token_lengths.png")
    assert "token_lengths.png" in plot_run.stdout
    report_run = run_stage("report.py", fake_run)
    assert report_run.returncode == 0, report_run.stderr
    html = (fake_run / "reports/report.html").read_text()
    data = re.search(r'<section id="data">(.*?)</section>', html, flags=re.DOTALL).group(1)
    assert data.count("data:image/png;base64,") == 1
    assert html.count("data:image/png;base64,") == 5
