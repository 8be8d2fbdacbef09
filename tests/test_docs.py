"""The docs: the site builds with `mkdocs build --strict` (a broken link or anchor fails it),
docs/params.md is the reference tunelab.config.params_reference generates from the schema
and params.yaml (every key, every comment), and the README is a short front page that
links to every page of the site."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from pydantic import BaseModel

from tunelab.config import params, params_reference
from tunelab.errors import ParamsError

REPO = Path(__file__).resolve().parents[1]
PAGE = REPO / "docs" / "params.md"


# --- the params reference -------------------------------------------------------------------

@pytest.fixture(scope="module")
def reference() -> str:
    return params_reference.render(REPO / "params.yaml")


def test_committed_reference_is_the_generated_one(reference):
    assert PAGE.read_text(encoding="utf-8") == reference, (
        "docs/params.md is out of date with params.yaml or tunelab/config/params.py: "
        "run `make docs` and commit docs/params.md")


def schema_keys(model: type[BaseModel], prefix: str) -> list[str]:
    keys = []
    for name, info in model.model_fields.items():
        if isinstance(info.annotation, type) and issubclass(info.annotation, BaseModel):
            keys += schema_keys(info.annotation, f"{prefix}.{name}")
        else:
            keys.append(f"{prefix}.{name}")
    return keys


def test_reference_has_a_row_for_every_schema_key(reference):
    keys = [key for section, model in params.SECTIONS.items() if section != "check"
            for key in schema_keys(model, section)]
    keys += schema_keys(params.MetricTolerance, "check.METRIC")
    assert len(keys) > 90
    missing = [key for key in keys if f"| `{key}` |" not in reference]
    assert not missing, f"keys without a row in the params reference: {missing}"


def readable(markdown: str) -> str:
    """The page's text as a reader sees it: escapes undone, whitespace as single spaces."""
    text = re.sub(r"\\([|*{}])", r"\1", markdown).replace("&lt;", "<")
    return " ".join(text.split())


def test_reference_quotes_every_params_yaml_comment(reference):
    comments = [line.split("#", 1)[1].strip()
                for line in (REPO / "params.yaml").read_text(encoding="utf-8").splitlines()
                if "#" in line]
    comments = [" ".join(comment.split()) for comment in comments if comment]
    assert len(comments) > 150
    page = readable(reference)
    missing = [comment for comment in comments if comment not in page]
    assert not missing, f"params.yaml comments missing from the params reference: {missing}"


# A few rows whole: type, default, allowed values and comment, each from its source.
PINNED_ROWS = [
    "| `train.learning_rate` | float | `0.001` | > 0 | peak LR for lora/qlora; 1e-4..2e-3 on "
    "small models, 1e-4..3e-4 on 7B+ |",
    "| `train.method` | choice | `lora` | `lora`, `qlora`, `full` | lora (adapter, frozen base) "
    "\\| qlora (adapter on a 4/8-bit base: least memory) \\| full (every weight; most memory, "
    "output is a whole model) |",
    "| `prepare.seed` | int | `42` (params.yaml: `35`) | any | split seed: same data + same seed "
    "= same split (35: the shipped sample's template split then puts all five categories in val "
    "and test) |",
    "| `prepare.val_ratio` | float | `0.1` | in [0, 1) | share held out for validation loss "
    "during training; 0.05..0.2 |",
    "| `align.max_steps` | int | `30` | -1 (train for `epochs`) or > 0 | > 0: optimizer steps; "
    "-1 = `epochs` passes. 30 x 8 pairs took 16 min of DPO on 2 CPU cores (docs/align.md) |",
    "| `train.text_stride` | int | `0` | >= 0; at most `train.max_length` | plain text longer "
    "than max_length is cut into max_length windows, each starting this many tokens after the "
    "last; the overlap is context, not loss (0 = max_length: no overlap); 0..max_length |",
    "| `align.reward.task_accuracy` | float | `0.8` | as `align.reward` | the share of the "
    "reference's fields it gets right |",
    "| `check.general.tuned.all` | higher | 0.03 | What tuning broke: the general-ability set's "
    "share passed (evaluate.general; 0.009 = one of its 110 prompts). A run with the set "
    "switched off fails too (missing from its metrics). |",
]


@pytest.mark.parametrize("row", PINNED_ROWS, ids=lambda row: row.split("`")[1])
def test_pinned_rows(reference, row):
    assert row in reference.splitlines()


def test_chat_template_row_lists_the_registered_families(reference):
    row = next(line for line in reference.splitlines() if line.startswith("| `model.chat_template`"))
    assert ("`auto` (the tokenizer's own), a family: `chatml`, `qwen3`, `llama3`, `gemma`, "
            "`llama2`, `mistral`, `phi3`, `alpaca`, or a `.jinja` file") in row


# Each cross-key rule the reference states, broken: the schema must refuse it, naming the key.
BROKEN_ACROSS_KEYS = [
    ("prepare", {"val_ratio": 0.5, "test_ratio": 0.5}, "prepare.val_ratio + prepare.test_ratio"),
    ("train", {"save_steps": 7, "logging_steps": 5}, "train.save_steps"),
    ("train", {"early_stopping_patience": 2, "eval_steps": 7, "logging_steps": 5,
               "save_steps": 0}, "train.eval_steps"),
    ("align", {"save_steps": 3, "logging_steps": 2}, "align.save_steps"),
    ("align", {"objective": "kto", "batch_size": 1}, "align.batch_size"),
]


def test_every_documented_cross_key_rule_is_listed_once():
    documented = [rule for rules in params_reference.ACROSS_KEYS.values() for rule in rules]
    assert len(documented) == len(BROKEN_ACROSS_KEYS)


@pytest.mark.parametrize("section,values,named", BROKEN_ACROSS_KEYS)
def test_documented_cross_key_rules_are_enforced(tmp_path, section, values, named):
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump({section: values}))
    with pytest.raises(ParamsError, match=re.escape(f"{path}: {named}")):
        params.load(section, path)


def test_a_validator_without_rule_text_stops_the_reference(monkeypatch):
    monkeypatch.delitem(params_reference.RULES, "_scorer_spec")
    with pytest.raises(KeyError, match="_scorer_spec: no rule text in "
                                       "tunelab.config.params_reference.RULES"):
        params_reference.render(REPO / "params.yaml")


def test_comments_above_beside_and_below_a_key():
    notes = params_reference.read_comments(
        "# header\n"
        "\n"
        "train:\n"
        "  # above r\n"
        "  r: 16      # beside r\n"
        "             # below r\n"
        "  alpha: 32\n"
        "  # closing train\n"
        "check:       # the gate\n")
    assert notes.header == ["# header"]
    assert notes.by_key == {"train.r": ["above r", "beside r", "below r"],
                            "check": ["the gate"]}
    assert notes.closing == {"train": ["closing train"]}


# --- the site --------------------------------------------------------------------------------

def copy_of_the_docs(folder: Path) -> Path:
    """docs/, mkdocs.yml and params.yaml (the hook reads it) in ``folder``: a build there
    rewrites no file of the repo."""
    shutil.copytree(REPO / "docs", folder / "docs",
                    ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("mkdocs.yml", "params.yaml"):
        shutil.copy(REPO / name, folder / name)
    return folder


def build(folder: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-d",
                           str(folder / "site")], cwd=folder, capture_output=True, text=True,
                          env={**os.environ, "NO_MKDOCS_2_WARNING": "1"}, timeout=300)


def test_site_builds_strictly(tmp_path):
    built = build(copy_of_the_docs(tmp_path))
    assert built.returncode == 0, built.stdout + built.stderr
    assert (tmp_path / "site" / "index.html").is_file()
    assert (tmp_path / "site" / "params.html").is_file()
    assert not (tmp_path / "site" / "hooks").exists()


@pytest.mark.parametrize("link,warning", [
    ("no-such-page.md",
     "WARNING -  Doc file 'quick-start.md' contains a link 'no-such-page.md', but the target "
     "is not found among documentation files."),
    ("evaluate.md#no-such-anchor",
     "WARNING -  Doc file 'quick-start.md' contains a link 'evaluate.md#no-such-anchor', but "
     "the doc 'evaluate.md' does not contain an anchor '#no-such-anchor'."),
])
def test_a_broken_link_fails_the_strict_build(tmp_path, link, warning):
    folder = copy_of_the_docs(tmp_path)
    page = folder / "docs" / "quick-start.md"
    page.write_text(page.read_text(encoding="utf-8") + f"\nSee [this]({link}).\n",
                    encoding="utf-8")
    built = build(folder)
    assert built.returncode == 1
    assert warning in built.stderr
    assert "Aborted with 1 warnings in strict mode!" in built.stdout


# --- the README as the front page ------------------------------------------------------------

def nav_pages() -> list[str]:
    def pages(entries) -> list[str]:
        found = []
        for entry in entries:
            value = next(iter(entry.values())) if isinstance(entry, dict) else entry
            found += pages(value) if isinstance(value, list) else [value]
        return found
    return pages(yaml.safe_load((REPO / "mkdocs.yml").read_text(encoding="utf-8"))["nav"])


def test_nav_holds_every_page_once():
    pages = nav_pages()
    assert len(pages) == len(set(pages))
    written = sorted(path.name for path in (REPO / "docs").glob("*.md"))
    assert sorted(set(written) - set(pages)) == [], "pages missing from mkdocs.yml's nav"


def test_readme_is_a_short_front_page():
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    assert len(readme.splitlines()) <= 200
    # .ci/run and people run the test suite as the README says.
    assert "make test    # install (first time), then the test suite" in readme
    assert "make run     # install (first time), then `dvc repro`: the whole pipeline" in readme


def test_readme_links_to_every_page():
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    missing = [page for page in nav_pages() if f"](docs/{page})" not in readme]
    assert not missing, f"README.md does not link to: {missing}"


def test_readme_links_resolve():
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    targets = re.findall(r"\]\(((?!https?:)[^)#]+)(?:#[^)]*)?\)", readme)
    assert targets
    missing = sorted({target for target in targets if not (REPO / target).exists()})
    assert not missing, f"README.md links to files that do not exist: {missing}"


def headline_table(text: str) -> list[str]:
    lines = text.splitlines()
    start = lines.index("| metric | test: base | test: tuned | held-out: base | held-out: tuned |")
    end = next(i for i in range(start, len(lines)) if not lines[i].startswith("|"))
    return lines[start:end]


def test_readme_headline_table_is_the_quick_starts():
    readme = headline_table((REPO / "README.md").read_text(encoding="utf-8"))
    assert readme == headline_table((REPO / "docs/quick-start.md").read_text(encoding="utf-8"))
    assert "| task accuracy (mean of the 5 fields) | 0.013 | **0.831** | 0.019 | **0.775** |" in readme
