"""tunelab compare-runs: paired per-example gaps with bootstrap intervals."""

import json
import subprocess

import pytest

from tunelab.cli import app as cli
from tunelab.errors import DataError
from tunelab.experiments import compare_runs

REFERENCE = json.dumps({"category": "billing", "priority": "low"})
WRONG = json.dumps({"category": "technical", "priority": "high"})
HALF = json.dumps({"category": "billing", "priority": "high"})


def samples(answers: list[str]) -> list[dict]:
    return [{"source": f"data/raw/t.jsonl:{i + 1}", "prompt": f"ticket {i}",
             "reference": REFERENCE, "base": "", "tuned": answer}
            for i, answer in enumerate(answers)]


def write(path, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def by_metric(differences):
    return {row.metric: row for row in differences}


def test_gap_is_the_mean_per_example_difference_with_a_bootstrap_interval():
    run_a = samples([REFERENCE] * 20)
    run_b = samples([REFERENCE] * 10 + [WRONG] * 10)
    rows = by_metric(compare_runs.compare(run_a, run_b))
    accuracy = rows["task_accuracy"]
    assert (accuracy.mean_a, accuracy.mean_b, accuracy.diff) == (1.0, 0.5, -0.5)
    # Gaps are 0 or -1, half each: standard error 0.5 / sqrt(20) = 0.112, so the 95%
    # interval is about -0.5 +- 0.22 (the bootstrap's own is a little narrower).
    assert accuracy.low < -0.5 < accuracy.high < 0
    assert accuracy.low == pytest.approx(-0.5 - 0.219, abs=0.05)
    assert accuracy.high == pytest.approx(-0.5 + 0.219, abs=0.05)
    assert accuracy.verdict() == "B lower"
    assert rows["json_valid"].diff == 0 and rows["json_valid"].verdict() == "no clear difference"
    # Half-right answers count half on task accuracy and nothing on exact match.
    halves = by_metric(compare_runs.compare(run_a, samples([HALF] * 20)))
    assert halves["task_accuracy"].diff == -0.5 and halves["exact_match"].diff == -1.0


def test_the_same_seed_gives_the_same_interval():
    run_a, run_b = samples([REFERENCE, WRONG, HALF] * 6), samples([WRONG, REFERENCE, REFERENCE] * 6)
    first, second = compare_runs.compare(run_a, run_b), compare_runs.compare(run_a, run_b)
    assert [(r.low, r.high) for r in first] == [(r.low, r.high) for r in second]


def test_margin_verdicts():
    row = compare_runs.Difference("task_accuracy", 0.70, 0.68, low=-0.04, high=0.01)
    assert row.verdict(0.05) == "within ±0.05"
    assert row.verdict() == "no clear difference"
    assert compare_runs.Difference("m", 0.7, 0.55, -0.2, -0.1).verdict(0.05) == \
        "differs by more than 0.05"
    assert compare_runs.Difference("m", 0.7, 0.64, -0.11, -0.01).verdict(0.05) == \
        "undecided at ±0.05: more examples needed"


def test_unknown_metric_is_named_with_the_choices():
    run_a = samples([REFERENCE] * 3)
    with pytest.raises(DataError, match=r"--metrics: field_prio is not scored for these samples "
                       r"\(choose from exact_match, field_category, field_priority, json_valid, "
                       r"task_accuracy\)"):
        compare_runs.compare(run_a, run_a, metrics=["task_accuracy", "field_prio"])
    assert by_metric(compare_runs.compare(run_a, samples([HALF] * 3), ["field_priority"])) \
        ["field_priority"].diff == -1.0


def test_runs_on_different_examples_cannot_be_paired():
    with pytest.raises(DataError, match=r"different examples \(1 only in A, 0 only in B\)"):
        compare_runs.compare(samples([REFERENCE] * 3), samples([REFERENCE] * 2))


def test_bad_samples_line_names_file_and_line(tmp_path, capsys):
    good = write(tmp_path / "a.jsonl", samples([REFERENCE]))
    bad = tmp_path / "b.jsonl"
    bad.write_text(json.dumps(samples([REFERENCE])[0]) + "\n{not json\n")
    assert cli.main(["compare-runs", str(good), str(bad)]) == 1
    error = capsys.readouterr().err.strip()
    assert error.startswith(f"tunelab compare-runs: error: {bad}:2: not valid JSON")
    assert len(error.splitlines()) == 1
    write(bad, [{"prompt": "p", "reference": REFERENCE}])
    with pytest.raises(DataError, match=r"b.jsonl:1: no text for tuned"):
        compare_runs.load_samples(str(bad))


def git(repo, *args):
    return subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True,
                          text=True).stdout.strip()


def test_revisions_and_experiment_names(tmp_path, monkeypatch, capsys):
    repo = tmp_path / "repo"
    repo.mkdir()
    git(repo, "init", "-q")
    git(repo, "config", "user.email", "t@example.com")
    git(repo, "config", "user.name", "t")
    write(repo / compare_runs.SAMPLES_FILE, samples([REFERENCE] * 20))
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "lora")
    head = git(repo, "rev-parse", "HEAD")
    write(repo / compare_runs.SAMPLES_FILE, samples([REFERENCE] * 10 + [WRONG] * 10))
    git(repo, "commit", "-qam", "qlora")
    experiment = git(repo, "rev-parse", "HEAD")
    git(repo, "reset", "-q", "--hard", head)
    # DVC 3 keeps an experiment as refs/exps/<baseline[:2]>/<baseline[2:]>/<name>.
    git(repo, "update-ref", f"refs/exps/{head[:2]}/{head[2:]}/qlora", experiment)
    monkeypatch.chdir(repo)

    assert compare_runs.resolve_revision("qlora") == experiment
    assert cli.main(["compare-runs", "HEAD", "qlora", "--margin", "0.05"]) == 1
    out = capsys.readouterr().out
    assert "20 paired test examples" in out and "differs by more than 0.05" in out
    assert cli.main(["compare-runs", "HEAD", "qlora", "--metrics", "json_valid",
                     "--margin", "0.05"]) == 0
    assert "within ±0.05" in capsys.readouterr().out

    assert cli.main(["compare-runs", "HEAD", "nope"]) == 1
    assert "nope: not a file, git revision or DVC experiment" in capsys.readouterr().err
    other = "ab" * 20
    git(repo, "update-ref", f"refs/exps/{other[:2]}/{other[2:]}/twice", experiment)
    git(repo, "update-ref", f"refs/exps/{other[:2]}/{other[2:-1]}0/twice", head)
    with pytest.raises(DataError, match="twice: 2 DVC experiments have this name"):
        compare_runs.resolve_revision("twice")
