"""tunelab.data.analysis and `tunelab analyze-data`: the token-length histogram, percentiles
and suggested max_length, truncation, loss share, exact and near duplicates, per-task and
per-format counts, in the CLI and in the prepare stage's metrics/data.json. The figures are
pinned from the real SmolLM2 tokenizer."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import MIXED_FILE_FIGURES, stage_args
from tunelab.cli import app as cli
from tunelab.data import analysis, prepare

REPO = Path(__file__).resolve().parents[1]

QUESTION = ("Our team moved the shared calendar to the new server last week and since then "
            "every meeting invite arrives twice for people outside the office, what should we check")
ANSWER = "Check the mail relay rules on the new server first."
# Token lengths with SmolLM2's template (its default system prompt included), at max_length 64:
ROWS = [
    {"instruction": "Say hi", "output": "hi", "task": "greet"},  # 35 tokens, 3 carry loss
    {"instruction": "Say hi", "output": "hi", "task": "greet"},  # an exact duplicate of line 1
    {"messages": [{"role": "user", "content": QUESTION},        # 73 tokens, cut: 4 of loss left
                  {"role": "assistant", "content": ANSWER}], "task": "support"},
    # Line 3 with its first word changed: 34 of 36 word 5-grams shared, Jaccard 0.944.
    {"messages": [{"role": "user", "content": QUESTION.replace("Our", "My")},
                  {"role": "assistant", "content": ANSWER}], "task": "support"},
    # 82 tokens, no task: the answer is cut, 27 of its tokens are left.
    {"prompt": "Count to ten, four times.",
     "completion": ", ".join(["one two three four five six seven eight nine ten"] * 4)},
    # A 90-token prompt: cut at 64, nothing of the answer is left.
    {"instruction": QUESTION + " " + QUESTION, "output": "Ask IT.", "task": "support"},
]
# Every figure analysis.analyze finds in ROWS: conftest.MIXED_FILE_FIGURES (the plot tests
# draw them too).

EXPECTED_HISTOGRAM = """\
token lengths (8-token bins, 6 examples; each # is one example):
  33-40 | ##                                       2
  41-48 |                                          0
  49-56 |                                          0
  57-64 |                                          0  <- max_length 64
  65-72 |                                          0
  73-80 | ##                                       2
  81-88 | #                                        1
  89-96 | #                                        1"""


@pytest.fixture
def data_file(tmp_path, write_jsonl, monkeypatch):
    """ROWS as data.jsonl, in a folder with no params.yaml (the schema defaults apply)."""
    monkeypatch.chdir(tmp_path)
    write_jsonl(tmp_path / "data.jsonl", ROWS)
    return Path("data.jsonl")  # relative, so the sources read data.jsonl:LINE


def analyze_file(path, tokenizer, max_length=64, train_on="all_assistant"):
    loaded = prepare.load_files([path])
    assert loaded.errors == []
    return analysis.analyze(loaded.examples, tokenizer, max_length=max_length, train_on=train_on,
                            format_counts=analysis.count_formats([path])).figures


def test_every_figure_of_a_mixed_file(data_file, tokenizer):
    assert analyze_file(data_file, tokenizer) == MIXED_FILE_FIGURES


def test_train_on_last_changes_only_what_carries_loss(tmp_path, write_jsonl, tokenizer,
                                                      monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = write_jsonl(tmp_path / "turns.jsonl", [{"messages": [
        {"role": "user", "content": "Say hi"}, {"role": "assistant", "content": "hi"},
        {"role": "user", "content": "Say bye"}, {"role": "assistant", "content": "bye"}]}])
    every_turn = analyze_file(path, tokenizer, max_length=256)
    last_turn = analyze_file(path, tokenizer, max_length=256, train_on="last")
    # "hi<|im_end|>\n" and "bye<|im_end|>\n": 3 tokens each, of the 50.
    assert every_turn["loss_tokens"] == {"count": 6, "of_tokens": 50, "share": 0.12}
    assert last_turn["loss_tokens"] == {"count": 3, "of_tokens": 50, "share": 0.06}
    assert every_turn["token_lengths"] == last_turn["token_lengths"]


def test_text_longer_than_max_length_is_windows_not_cut(tokenizer):
    text = " ".join(f"Line {i} of the manual says to restart the pump." for i in range(8))
    examples = [{"text": text, "task": None, "source": "doc.txt:1"},
                {"text": "Short note.", "task": None, "source": "doc.txt:3"}]
    figures = analysis.analyze(examples, tokenizer, max_length=32, train_on="all_assistant",
                               text_stride=16, format_counts={"text": 2}).figures
    assert figures["token_lengths"]["max"] == 97 and figures["token_lengths"]["min"] == 4
    assert figures["truncated"] == {"examples": 0, "share": 0.0, "tokens_cut": 0,
                                    "without_loss_tokens": 0}
    # 6 overlapping windows of 32 tokens, 16 apart, plus the note; each token trains once.
    assert figures["training_rows"] == 7
    assert figures["loss_tokens"] == {"count": 97 + 4, "of_tokens": 181, "share": 0.558}
    assert analysis.render_example(tokenizer, examples[0], 32, "all_assistant", 16) == (
        "--- doc.txt:1: 32 tokens, the first of 6 windows, 32 carry loss (in [[ ]]) ---\n"
        "[[Line 0 of the manual says to restart the pump. Line 1 of the manual says to restart "
        "the pump. Line 2 of the manual says to]]")


def test_percentiles_and_suggested_lengths():
    assert analysis.token_lengths(list(range(100, 0, -1))) == {
        "mean": 50.5, "p50": 51, "p95": 96, "max": 100, "min": 1, "p99": 100}
    assert [analysis.round_up(n) for n in (1, 8, 9, 96, 100, 194, 202)] == [
        8, 8, 16, 96, 104, 200, 208]


def test_histogram_bins_widen_to_fit_and_max_length_sits_on_an_edge():
    # 10..300 would need 37 bins of 8 tokens; 16-token bins need 19. Bin i holds
    # (edges[i], edges[i+1]]: 20, 20 and 30 share (16, 32].
    wide = analysis.histogram([10, 20, 20, 30, 300], max_length=64)
    assert wide["bin_width"] == 16 and wide["edges"] == list(range(0, 305, 16))
    assert wide["counts"] == [1, 3] + [0] * 16 + [1]
    # A max_length over twice the longest example is left off the chart.
    assert analysis.histogram([100, 120], max_length=4096) == {
        "bin_width": 8, "edges": [96, 104, 112, 120], "counts": [1, 0, 1]}
    assert analysis.render_histogram({"bin_width": 8, "edges": [96, 104, 112, 120],
                                      "counts": [1, 0, 1]}, 4096).splitlines()[-1] == (
        "  (max_length 4096 is beyond the longest example)")
    # A max_length inside a bin: that bin is partly cut.
    assert analysis.render_histogram({"bin_width": 8, "edges": [96, 104, 112, 120],
                                      "counts": [1, 0, 1]}, 100).splitlines()[1] == (
        "   97-104 | #" + " " * 40 + "1  <- max_length 100 (cut inside this bin)")


def test_histogram_bars_shrink_to_the_bar_width():
    text = analysis.render_histogram({"bin_width": 8, "edges": [0, 8, 16], "counts": [80, 20]}, 16)
    assert text.splitlines() == [
        "token lengths (8-token bins, 100 examples; each # is 2.0 examples):",
        "   1-8 | " + "#" * 40 + " 80",
        "  9-16 | " + "#" * 10 + " " * 30 + " 20  <- max_length 16"]


def test_near_duplicates_are_found_and_distinct_texts_are_not():
    words = [f"word{i}" for i in range(30)]  # 26 distinct 5-grams
    base = " ".join(words)
    last_changed = " ".join(words[:-1] + ["other"])         # 25 of 27 shared: 0.926
    middle_changed = " ".join(words[:15] + ["other"] + words[16:])  # 21 of 31 shared: 0.677
    unrelated = "a completely different sentence about gardening in spring and summer"
    pairs = analysis.near_duplicate_pairs([base, last_changed, middle_changed, unrelated])
    assert pairs == [(0, 1, pytest.approx(25 / 27))]
    # Case and punctuation are not content; a text of 5 words or fewer is one shingle.
    assert analysis.word_shingles("Hello, World!") == {"hello world"}


def test_exact_duplicates_ignore_the_source_and_are_not_near_pairs_too():
    example = {"messages": [{"role": "user", "content": QUESTION},
                            {"role": "assistant", "content": ANSWER}], "task": None}
    copies = [{**example, "source": f"a.jsonl:{line}"} for line in (1, 2, 3)]
    assert analysis.duplicates(copies) == {"exact": 2, "near_pairs": 0, "near_examples": 0,
                                           "near_threshold": 0.8, "near_listed": []}


def test_formats_are_counted_from_the_raw_records(tmp_path, write_jsonl):
    path = write_jsonl(tmp_path / "mixed.jsonl", [
        ROWS[0], ROWS[2], ROWS[4], {"conversations": [{"from": "human", "value": "hi"},
                                                      {"from": "gpt", "value": "hello"}]},
        {"neither": "format"}])  # rejected by load_files, so not counted here
    assert analysis.count_formats([path]) == {"alpaca": 1, "chat": 1, "prompt_completion": 1,
                                              "sharegpt": 1}
    assert analysis.count_formats([path], fmt="alpaca") == {"alpaca": 5}


def test_shown_examples_are_spread_over_the_file():
    assert analysis.shown_examples(3, 480) == [0, 240, 479]
    assert analysis.shown_examples(1, 10) == [0]
    assert analysis.shown_examples(5, 3) == [0, 1, 2]
    assert analysis.shown_examples(0, 3) == []


def test_chat_example_is_shown_with_its_loss_tokens_marked(tokenizer):
    chat = {"messages": [{"role": "user", "content": "Say hi"},
                         {"role": "assistant", "content": "hi"}], "task": None, "source": "a.jsonl:1"}
    assert analysis.render_example(tokenizer, chat, 64, "all_assistant") == (
        "--- a.jsonl:1: 35 tokens, 3 carry loss (in [[ ]]) ---\n<|im_start|>system\n"
        "You are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
        "<|im_start|>user\nSay hi<|im_end|>\n<|im_start|>assistant\n[[hi<|im_end|>\n]]")
    assert analysis.render_example(tokenizer, chat, 33, "all_assistant").startswith(
        "--- a.jsonl:1: 33 tokens, cut from 35, 1 carry loss (in [[ ]]) ---\n")


# --- tunelab analyze-data --------------------------------------------------------------

def test_cli_prints_the_histogram_figures_and_marked_examples(data_file, tokenizer_dir, capsys):
    code = cli.main(["analyze-data", str(data_file), "--base", str(tokenizer_dir),
                     "--max-length", "64", "--show-examples", "2"])
    out, err = capsys.readouterr()
    assert (code, err) == (0, "")
    assert out.startswith("6 examples in 1 files (max_length=64, train_on=all_assistant)\n\n"
                          + EXPECTED_HISTOGRAM + "\n\n")
    assert analysis.render_text(MIXED_FILE_FIGURES) in out
    assert "suggested train.max_length: 96 covers p95, 96 covers p99" in out
    assert "  data.jsonl:3 ~ data.jsonl:4 (0.944)\n" in out
    # Two examples, the first and the last, each with its loss tokens in [[ ]].
    headers = [line for line in out.splitlines() if line.startswith("--- ")]
    assert headers == ["--- data.jsonl:1: 35 tokens, 3 carry loss (in [[ ]]) ---",
                       "--- data.jsonl:6: 64 tokens, cut from 95, 0 carry loss (in [[ ]]) ---"]
    assert out.count("[[hi<|im_end|>\n]]") == 1


def test_cli_without_show_examples_prints_no_example(data_file, tokenizer_dir, capsys):
    assert cli.main(["analyze-data", str(data_file), "--base", str(tokenizer_dir)]) == 0
    out = capsys.readouterr().out
    # Without params.yaml: the schema's max_length, 256, which every example fits.
    assert "truncated at max_length 256: 0 of 6 examples (0.0%)" in out
    assert "--- " not in out and "[[" not in out


def test_cli_bad_file_exits_1_with_file_and_line(tmp_path, write_jsonl, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = write_jsonl(tmp_path / "bad.jsonl", [ROWS[0], "{not json", ROWS[2]])
    other = write_jsonl(tmp_path / "other.jsonl", [{"instruction": "No answer"}])
    code = cli.main(["analyze-data", str(path), str(other), "--base", str(tmp_path / "none")])
    out, err = capsys.readouterr()
    assert (code, out) == (1, "")
    assert err == (f"{path}:2: invalid JSON: Expecting property name enclosed in double quotes\n"
                   f"{other}:1: missing field 'output'\n"
                   "2 errors in 2 files\n")


def test_cli_without_a_tokenizer_says_how_to_get_one(data_file, tmp_path, capsys):
    code = cli.main(["analyze-data", str(data_file), "--base", "models/base"])
    assert code == 1
    assert capsys.readouterr().err == (
        "tunelab analyze-data: error: models/base: no tokenizer there to count tokens with; "
        "run `dvc repro base` or pass --base MODEL_DIR\n")


def test_cli_missing_file_exits_2(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert cli.main(["analyze-data", "nowhere.jsonl"]) == 2
    assert capsys.readouterr().err == "tunelab analyze-data: error: no such file: nowhere.jsonl\n"


# --- the prepare stage -----------------------------------------------------------------

def test_prepare_stage_writes_the_same_figures_to_metrics_data_json(tmp_path, tokenizer_dir,
                                                                    tokenizer, write_jsonl):
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["prepare"]["group_by"] = ""  # these rows have no `template` field
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    shutil.copytree(tokenizer_dir, tmp_path / "models/base")
    rows = ROWS + [{"instruction": f"Add {n} and {n + 1}.", "output": str(2 * n + 1)}
                   for n in range(40)]  # enough for a non-empty val and test split
    write_jsonl(tmp_path / "data/raw/data.jsonl", rows)
    result = subprocess.run([sys.executable, str(REPO / "stages/prepare.py"),
                             *stage_args("prepare", tmp_path)], cwd=tmp_path,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    metrics = json.loads((tmp_path / "metrics/data.json").read_text())
    assert list(metrics) == ["files", "examples_read", "duplicates_dropped", "kind", "tasks",
                             "splits", "tokens", "analysis"]
    figures = metrics["analysis"]
    assert figures["duplicates"]["exact"] == metrics["duplicates_dropped"] == 1
    assert figures["formats"] == {"alpaca": 43, "chat": 2, "prompt_completion": 1}
    assert figures["duplicates"]["near_listed"][0] == {
        "first": "data/raw/data.jsonl:3", "second": "data/raw/data.jsonl:4", "jaccard": 0.944}
    # What `tunelab analyze-data` computes for the same file with the same params.
    raw = tmp_path / "data/raw/data.jsonl"
    loaded = prepare.load_files([raw])
    for example in loaded.examples:
        example["source"] = example["source"].replace(f"{tmp_path}/", "")
    expected = analysis.analyze(loaded.examples, tokenizer, max_length=figures["max_length"],
                                train_on=figures["train_on"], text_stride=figures["text_stride"],
                                format_counts=analysis.count_formats([raw]))
    assert figures == expected.figures
    assert "near-duplicate pairs (`tunelab analyze-data` shows them)" in result.stdout
