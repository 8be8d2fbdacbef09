"""The Data page: the workspace's data as the prepare stage reads it, analysed as
`tunelab analyze-data` analyses it (tunelab.data.analysis): the token-length histogram
against train.max_length (drawn by tunelab.report.plotting, as the plot stage draws
metrics/data.json's), truncation, loss share, exact and near duplicates, counts per task
and format; and a few examples as training sees them, the tokens that carry loss marked.

Everything is computed from prepare.raw_dir, params.yaml and models/base's tokenizer,
with the functions the stages use, so the page shows what the next run would train on
(metrics/data.json has the figures of the last run). The analysis is kept until a data
file, params.yaml or the tokenizer changes.
"""

from __future__ import annotations

import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

from fastapi import APIRouter, Request

from tunelab.chat import reasoning
from tunelab.config import params
from tunelab.data import analysis, columns, encoding, prepare
from tunelab.errors import DataError
from tunelab.report import plotting
from tunelab.ui.pages import PageError, png_data_uri, render

router = APIRouter()

BASE_DIR = "models/base"  # the base stage's output: its tokenizer counts the tokens
DEFAULT_EXAMPLES, MAX_EXAMPLES = 3, 20


@dataclass
class Analyzed:
    figures: dict         # analysis.analyze's figures (metrics/data.json's "analysis")
    examples: list[dict]  # the examples as prepare reads them
    tokenizer: object
    train: object         # the train section: max_length, train_on, text_stride
    files: list[str]
    histogram: str        # the histogram PNG as a data: URL


@dataclass
class Preview:
    source: str
    tokens: int
    loss_tokens: int
    note: str                        # cut from N / the first of N windows
    spans: list[tuple[str, bool]]    # (text, carries loss)


_cache: dict[tuple, Analyzed] = {}
_analysing = threading.Lock()


@router.get("/data")
def data_page(request: Request, examples: int = DEFAULT_EXAMPLES):
    if not 0 <= examples <= MAX_EXAMPLES:
        raise PageError(400, f"examples: give 0..{MAX_EXAMPLES}, got {examples}")
    found = analysed(request.app.state.root)
    shown = analysis.shown_examples(examples, len(found.examples)) if examples else []
    return render(request, "data.html.j2", title="Data", figures=found.figures,
                  files=found.files, histogram=found.histogram, examples=examples,
                  previews=[preview(found, found.examples[i]) for i in shown],
                  max_examples=MAX_EXAMPLES)


def analysed(root: Path) -> Analyzed:
    """The analysis of the workspace's data, computed again when its inputs change."""
    prepare_params = params.load("prepare", root / params.PARAMS_FILE)
    raw_dir = prepare_params.raw_dir  # relative, as the stage gets it: sources read data/raw/...
    files = prepare.raw_files(raw_dir)
    tokenizer_files = sorted((root / BASE_DIR).glob("tokenizer*")) + \
        sorted((root / BASE_DIR).glob("*.jinja"))
    if not tokenizer_files:
        raise DataError(f"{BASE_DIR}: no tokenizer to count tokens with: `dvc repro base` (or "
                        "`dvc checkout base`) puts the base model there")
    key = tuple((str(path), path.stat().st_mtime, path.stat().st_size)
                for path in [*files, root / params.PARAMS_FILE, *tokenizer_files])
    with _analysing:
        if key not in _cache:
            _cache.clear()
            _cache[key] = analyse(root, prepare_params, files)
        return _cache[key]


def analyse(root: Path, prepare_params, files: list[Path]) -> Analyzed:
    """As the prepare stage: load the raw files, then analysis.analyze at train's settings."""
    from transformers import AutoTokenizer

    train = params.load("train", root / params.PARAMS_FILE)
    mapping = columns.from_params(prepare_params, prepare_params.raw_dir)
    loaded = prepare.load_files(files, prepare_params.format, prepare_params.system_prompt,
                                prepare_params.text_split, mapping, prepare_params.group_by)
    examples = loaded.examples_or_raise()
    if train.reasoning == "drop":  # the prepare stage trains on the answers alone then
        examples = [reasoning.without_reasoning(e) for e in examples]
    tokenizer = AutoTokenizer.from_pretrained(root / BASE_DIR)
    figures = analysis.analyze(
        examples, tokenizer, max_length=train.max_length, train_on=train.train_on,
        text_stride=train.text_stride,
        format_counts=analysis.count_formats(files, prepare_params.format,
                                             prepare_params.text_split, mapping)).figures
    return Analyzed(figures, examples, tokenizer, train, [str(f) for f in files],
                    histogram_png(figures))


def histogram_png(figures: dict) -> str:
    with tempfile.TemporaryDirectory(prefix="tunelab-ui-data-") as folder:
        written = plotting.plot_token_lengths({"analysis": figures},
                                              Path(folder) / "token_lengths.png")
        return png_data_uri(written.read_bytes())


def preview(found: Analyzed, example: dict) -> Preview:
    """One example as training sees it (a long text: its first window), in spans of text
    that carry loss or not: encoding.render_loss_preview's [[ ]], as HTML can mark them."""
    train, tokenizer = found.train, found.tokenizer
    encoded = encoding.encode(tokenizer, example, train.max_length, train.train_on)
    rows = analysis.training_rows(tokenizer, example, encoded, train.max_length,
                                  train.train_on, train.text_stride)
    shown = rows[0]
    spans: list[tuple[str, bool]] = []
    for token_id, label in zip(shown.input_ids, shown.labels):
        carries = label != encoding.IGNORE_INDEX
        text = tokenizer.decode([token_id])
        if spans and spans[-1][1] == carries:
            spans[-1] = (spans[-1][0] + text, carries)
        else:
            spans.append((text, carries))
    note = (f"cut from {shown.full_tokens}" if shown.truncated
            else f"the first of {len(rows)} windows" if len(rows) > 1 else "")
    return Preview(example["source"], len(shown.input_ids), shown.loss_tokens, note, spans)
