"""`tunelab watch`: the promotion rule (the candidate against the current model on the same
examples), file handling, and a real run in a temporary Git + DVC copy of this repo with a
tiny model (one full experiment, then a cheap second one)."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tunelab.cli import app as cli
from tunelab.experiments import promotion, registry, watch
from tunelab.experiments.promotion import decide
from conftest import TINY_PIPELINE, copy_repo, free_port, run_tool

REPO = Path(__file__).resolve().parents[1]
PROMOTED_TAGS = ["ticket-triage-adapter@v0.0.1", "ticket-triage-gguf@v0.0.1",
                 "ticket-triage-adapter#staging#1", "ticket-triage-gguf#staging#1"]
# A metric committed at HEAD without a model: watch compares models on the same examples,
# never eval.json's numbers, so with no model in the workspace the first one is promoted.
BASELINE = {"tuned": {"task_accuracy": 0.25}}


# --- the rule ------------------------------------------------------------------------

RIGHT = json.dumps({"category": "billing", "priority": "low"})
WRONG = json.dumps({"category": "technical", "priority": "high"})


def answered(answers: list[str], first: int = 0) -> list[dict]:
    """Samples rows (as evaluate writes them) of tickets first, first + 1, ... answered so."""
    return [{"source": f"data/raw/t.jsonl:{first + i + 1}", "prompt": f"ticket {first + i}",
             "reference": RIGHT, "tuned": answer} for i, answer in enumerate(answers)]


def test_an_easier_new_split_alone_does_not_promote():
    """HEAD scored 12/20 = 0.60 on the old test split. The new data adds 20 easy test
    examples: the candidate's own split scores 31/40 = 0.775, which beat 0.60 by 0.175 under
    the old rule (eval.json against eval.json). The current model, scored on those same
    40 examples, gets 30: the gain is 0.025, and its interval reaches below 0."""
    old_split = [RIGHT] * 12 + [WRONG] * 8  # both models answer the old examples alike
    candidate = answered(old_split) + answered([RIGHT] * 5 + [WRONG] + [RIGHT] * 14, first=20)
    current = answered(old_split) + answered([WRONG] * 2 + [RIGHT] * 18, first=20)
    assert 31 / 40 - 12 / 20 >= 0.05  # what the old rule compared: it promoted
    d = decide(current, candidate, 0.05, "tuned.task_accuracy")
    assert not d.promote
    assert (d.current, d.candidate, d.examples) == (0.75, 0.775, 40)
    assert (d.gain, d.low, d.high) == pytest.approx((0.025, -0.05, 0.125), abs=1e-12)
    assert d.reason == ("tuned.task_accuracy 0.7750 vs current 0.7500 on the same 40 examples: "
                        "gain +0.0250, 95% interval [-0.0500, +0.1250]; its low end < "
                        "min_gain +0.05")
    # The mean gain reaching min_gain is not enough: the interval's low end must.
    assert not decide(current, candidate, 0.02, "tuned.task_accuracy").promote


def test_promotes_when_the_intervals_low_end_reaches_min_gain():
    current, candidate = answered([RIGHT] * 10 + [WRONG] * 20), answered([RIGHT] * 30)
    d = decide(current, candidate, 0.5, "tuned.task_accuracy")
    assert d.promote and (d.low, d.high) == pytest.approx((0.5, 0.833333), abs=1e-6)
    assert d.reason.endswith("gain +0.6667, 95% interval [+0.5000, +0.8333]; its low end >= "
                             "min_gain +0.5")
    assert not decide(current, candidate, 0.6, "tuned.task_accuracy").promote
    # The same answers: every gap is 0, so min_gain 0 promotes (more data, nothing lost).
    same = decide(candidate, candidate, 0.0, "tuned.exact_match")
    assert same.promote and (same.gain, same.low, same.high) == (0.0, 0.0, 0.0)
    assert not decide(candidate, candidate, 0.01, "tuned.exact_match").promote


def test_first_model_and_no_answers():
    first = decide(None, answered([RIGHT] * 3 + [WRONG]), 5.0, "tuned.task_accuracy")
    assert first.promote and (first.current, first.candidate, first.examples) == (None, 0.75, 4)
    assert first.reason == ("no current model: the first model is promoted "
                            "(tuned.task_accuracy 0.7500 on 4 examples)")
    nothing = decide(answered([RIGHT]), [], -1.0, "tuned.task_accuracy")
    assert not nothing.promote and nothing.reason == "the experiment answered no test example"


def test_a_metric_without_a_per_example_score_is_refused(tmp_path, capsys):
    assert promotion.per_example_metric("tuned.task_accuracy") == "task_accuracy"
    assert promotion.per_example_metric("aligned.exact_match") == "exact_match"
    assert promotion.per_example_metric("field_priority") == "field_priority"
    for metric in ("tuned.loss", "tuned.rougeL", "heldout.tuned.task_accuracy"):
        with pytest.raises(promotion.WatchError) as refused:
            promotion.per_example_metric(metric)
        assert str(refused.value) == (
            f"--metric {metric}: no per-example score to pair the candidate with the current "
            "model on (use tuned.task_accuracy, tuned.exact_match, tuned.json_valid or "
            "tuned.field_NAME)")
    # Refused before watch looks at the repo or the folder.
    assert cli.main(["watch", "--incoming", str(tmp_path), "--once", "--metric", "tuned.loss"]) == 1
    assert capsys.readouterr().err == (
        "tunelab watch: error: --metric tuned.loss: no per-example score to pair the candidate "
        "with the current model on (use tuned.task_accuracy, tuned.exact_match, "
        "tuned.json_valid or tuned.field_NAME)\n")


# --- files and git -------------------------------------------------------------------

def git(repo, *args):
    return subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True,
                          text=True).stdout.strip()


def init_repo(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    git(path, "init", "-q")
    git(path, "config", "user.email", "watch@tunelab.local")
    git(path, "config", "user.name", "tunelab watch test")
    return path


def test_settled_files_skip_hidden_partial_and_growing_files(tmp_path, monkeypatch):
    for name in ("b.jsonl", "a.csv", ".hidden.jsonl", "c.jsonl.part", "d.tmp", "grows.jsonl"):
        (tmp_path / name).write_text("x\n")
    (tmp_path / "rejected").mkdir()

    def sleep_while_a_writer_appends(seconds):
        with (tmp_path / "grows.jsonl").open("a") as f:
            f.write("more\n")

    monkeypatch.setattr(watch.time, "sleep", sleep_while_a_writer_appends)
    assert [p.name for p in watch.settled_files(tmp_path, 2.0)] == ["a.csv", "b.jsonl"]


def test_ingest_and_set_aside_never_overwrite(tmp_path):
    raw, incoming = tmp_path / "raw", tmp_path / "incoming"
    raw.mkdir()
    incoming.mkdir()
    source = incoming / "new data.jsonl"
    source.write_text('{"text": "hello"}\n')
    (raw / "incoming-20260101T000000-new_data.jsonl").write_text("already here\n")
    ingested = watch.ingest(source, raw, "20260101T000000")
    assert ingested.name == "incoming-20260101T000000-new_data-2.jsonl"
    assert ingested.read_text() == source.read_text()
    assert (raw / "incoming-20260101T000000-new_data.jsonl").read_text() == "already here\n"
    assert sorted(p.name for p in raw.iterdir()) == [  # no partial copy left behind
        "incoming-20260101T000000-new_data-2.jsonl", "incoming-20260101T000000-new_data.jsonl"]
    (incoming / "rejected").mkdir()
    (incoming / "rejected" / "new data.jsonl").write_text("older reject\n")
    moved = watch.set_aside(source, incoming / "rejected", ["x.jsonl:1: bad"])
    assert moved.name == "new data-2.jsonl" and not source.exists()
    assert (incoming / "rejected" / "new data-2.jsonl.reason.txt").read_text() == "x.jsonl:1: bad\n"


def folders(tmp_path, monkeypatch) -> tuple[Path, Path]:
    """incoming/ and raw/ under ``tmp_path``, with this repo's params.yaml read (group_by
    template) and no models/base beside them (no token checks)."""
    monkeypatch.chdir(REPO)
    (tmp_path / "incoming").mkdir()
    (tmp_path / "raw").mkdir()
    return tmp_path / "incoming", tmp_path / "raw"


def set_aside_now(path: Path, tmp_path: Path) -> dict:
    """watch.process on one file that FileChecker refuses (no git, no experiment)."""
    return watch.process(path, tmp_path, tmp_path / "incoming", tmp_path / "raw",
                         watch.FileChecker(tmp_path), "tuned.task_accuracy", 0.0)


def test_a_file_without_the_group_by_field_is_set_aside(tmp_path, monkeypatch):
    """prepare.group_by is template: a record without it would fail the experiment in
    prepare's split, so watch refuses it with prepare's own message."""
    incoming, raw = folders(tmp_path, monkeypatch)
    ticket = {"instruction": "Classify the ticket.", "input": "I was billed twice.",
              "output": RIGHT}
    grouped = incoming / "grouped.jsonl"
    grouped.write_text(json.dumps({**ticket, "template": "billing-1"}) + "\n")
    assert watch.FileChecker(tmp_path).errors(grouped) == []
    ungrouped = incoming / "ungrouped.jsonl"
    ungrouped.write_text(json.dumps(ticket) + "\n")
    record = set_aside_now(ungrouped, tmp_path)
    expected = (f"{ungrouped}:1: no field 'template' to split by (prepare.group_by; \"\" splits "
                "example by example)")
    assert record["decision"] == "invalid" and record["reason"] == f"1 errors; first: {expected}"
    assert (incoming / "rejected/ungrouped.jsonl.reason.txt").read_text() == expected + "\n"
    assert not ungrouped.exists() and list(raw.iterdir()) == []


def test_a_symlink_is_set_aside_and_never_followed(tmp_path, monkeypatch):
    """A link in the incoming folder to a valid file outside it is listed as itself and set
    aside unread; ingest refuses to read through one too."""
    incoming, raw = folders(tmp_path, monkeypatch)
    outside = tmp_path / "elsewhere/secret.jsonl"
    outside.parent.mkdir()
    outside.write_text(json.dumps({"instruction": "Classify.", "input": "x", "output": RIGHT,
                                   "template": "t"}) + "\n")
    link = incoming / "linked.jsonl"
    link.symlink_to(outside)
    assert watch.settled_files(incoming, 0) == [link]
    with pytest.raises(OSError):
        watch.ingest(link, raw, "20260101T000000")
    record = set_aside_now(link, tmp_path)
    expected = ("linked.jsonl: a symbolic link; watch takes regular files only (copy the file "
                "into the folder instead)")
    assert record["decision"] == "invalid" and record["reason"] == f"1 errors; first: {expected}"
    moved = incoming / "rejected/linked.jsonl"
    assert moved.is_symlink() and os.readlink(moved) == str(outside)
    assert (incoming / "rejected/linked.jsonl.reason.txt").read_text() == expected + "\n"
    assert list(raw.iterdir()) == [] and outside.read_text().endswith('"template": "t"}\n')


def test_next_version_bumps_the_highest_gto_tag(tmp_path):
    repo = init_repo(tmp_path / "r")
    (repo / "f").write_text("x")
    git(repo, "add", "f")
    git(repo, "commit", "-qm", "one")
    assert registry.next_version(repo, "ticket-triage-adapter") == "v0.0.1"
    # Annotated, as GTO (and `tunelab watch`) make them; GTO does not count lightweight tags.
    for tag in ("ticket-triage-adapter@v0.0.2", "ticket-triage-adapter@v0.0.10", "other@v3.0.0"):
        git(repo, "tag", "-a", tag, "-m", f"register {tag}")
    assert registry.next_version(repo, "ticket-triage-adapter") == "v0.0.11"
    assert promotion.artifact_name(REPO) == "ticket-triage-adapter"  # dvc.yaml's adapter artifact


def test_discard_ingested_leaves_index_and_workspace_at_head(tmp_path):
    repo = init_repo(tmp_path / "r")
    (repo / "kept.txt").write_text("x")
    git(repo, "add", "kept.txt")
    git(repo, "commit", "-qm", "one")
    new = repo / "data" / "incoming.jsonl"
    new.parent.mkdir()
    new.write_text("{}\n")
    git(repo, "add", "data/incoming.jsonl")
    promotion.discard_ingested(repo, new)
    assert not new.exists() and git(repo, "status", "--porcelain") == ""


# --- a real run ----------------------------------------------------------------------

e2e = pytest.mark.e2e  # real `dvc exp run`s: skipped by `make test-fast`


@pytest.fixture(scope="module")
def tiny_repo(tiny_base_dir, tmp_path_factory):
    """A git + DVC copy of this repo on the tiny model; HEAD holds a baseline metric but no
    model and no dvc.lock, so the first experiment runs every stage."""
    repo = copy_repo(tmp_path_factory.mktemp("watch") / "repo", TINY_PIPELINE, tiny_base_dir)
    (repo / "dvc.lock").unlink()
    (repo / "metrics/eval.json").write_text(json.dumps(BASELINE))
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "baseline")
    return repo


@pytest.fixture(scope="module")
def first_watch(tiny_repo, tmp_path_factory):
    """A valid and a malformed file; min_gain -1 promotes any candidate."""
    incoming = tmp_path_factory.mktemp("incoming")
    tickets = (REPO / "data/raw/tickets.jsonl").read_text().splitlines()
    (incoming / "good.jsonl").write_text("\n".join(tickets[:3]) + "\n")
    (incoming / "bad.jsonl").write_text(tickets[0] + "\n{not json\n")
    code = in_repo(tiny_repo, ["watch", "--incoming", str(incoming), "--once",
                               "--settle", "0", "--min-gain", "-1"])
    return incoming, code, log_lines(tiny_repo)


def in_repo(repo: Path, argv: list[str]) -> int:
    cwd = os.getcwd()
    os.chdir(repo)
    try:
        return cli.main(argv)
    finally:
        os.chdir(cwd)


def log_lines(repo: Path) -> list[dict]:
    return [json.loads(line) for line in (repo / "logs/watch.jsonl").read_text().splitlines()]


@e2e
def test_a_dirty_workspace_is_refused(tiny_repo, tmp_path, capsys):
    params = tiny_repo / "params.yaml"
    original = params.read_text()
    params.write_text(original + "\n# edited\n")
    try:
        assert in_repo(tiny_repo, ["watch", "--incoming", str(tmp_path), "--once"]) == 1
    finally:
        params.write_text(original)
    assert capsys.readouterr().err.startswith(
        "tunelab watch: error: uncommitted changes in params.yaml: commit or stash them first")


@e2e
def test_malformed_file_is_set_aside_with_its_reason(first_watch):
    incoming, code, log = first_watch
    assert code == 0
    assert not (incoming / "bad.jsonl").exists()
    reason = (incoming / "rejected/bad.jsonl.reason.txt").read_text()
    assert reason == f"{incoming / 'bad.jsonl'}:2: invalid JSON: Expecting property name " \
                     "enclosed in double quotes\n"
    assert log[0]["file"] == "bad.jsonl" and log[0]["decision"] == "invalid"
    assert "ingested_as" not in log[0]


@e2e
def test_valid_file_is_ingested_run_and_promoted(first_watch, tiny_repo):
    incoming, _, log = first_watch
    record = log[1]
    assert record["file"] == "good.jsonl" and record["decision"] == "promoted"
    assert record["metric"] == "tuned.task_accuracy" and record["min_gain"] == -1.0
    metrics = json.loads((tiny_repo / "metrics/eval.json").read_text())
    # No model at HEAD (its eval.json's 0.25 is not compared): the mean of the candidate's
    # per-example scores on its 2 test examples, its eval.json value (all tickets have the
    # same fields).
    assert record["current"] is None and record["gain"] is None and record["examples"] == 2
    assert record["candidate"] == pytest.approx(metrics["tuned"]["task_accuracy"], abs=1e-6)
    assert record["reason"] == ("no current model: the first model is promoted (tuned."
                                f"task_accuracy {record['candidate']:.4f} on 2 examples)")
    # Ingested under a new name next to the original data, byte for byte.
    ingested = tiny_repo / record["ingested_as"]
    assert ingested.parent == tiny_repo / "data/raw" and ingested.name.endswith("-good.jsonl")
    assert ingested.read_text() == (incoming / "processed/good.jsonl").read_text()
    assert sorted(p.name for p in ingested.parent.iterdir()) == sorted(
        [ingested.name, "tickets.jsonl"])
    # Committed and tagged: the tag names the commit that holds the new data and results.
    assert git(tiny_repo, "rev-parse", "HEAD") == record["commit"]
    assert record["tag"] == "ticket-triage-adapter@v0.0.1"
    assert git(tiny_repo, "rev-parse", f"{record['tag']}^{{commit}}") == record["commit"]
    # Both artifacts of the commit are registered and in staging, as `gto show` lists them.
    assert record["registered"] == PROMOTED_TAGS[:2] and record["stage"] == "staging"
    shown = json.loads(run_tool(["gto", "show", "--json"], tiny_repo).stdout)
    assert shown == {name: {"version": "v0.0.1", "stage": {"staging": "v0.0.1", "prod": None},
                            "registered": True, "active": True}
                     for name in ("ticket-triage-adapter", "ticket-triage-gguf")}
    committed = git(tiny_repo, "show", "--name-only", "--format=", "HEAD").splitlines()
    assert {record["ingested_as"], "dvc.lock", "metrics/eval.json"} <= set(committed)
    assert git(tiny_repo, "status", "--porcelain", "--untracked-files=no") == ""
    assert (tiny_repo / "models/adapter/adapter_model.safetensors").is_file()


@e2e
def test_same_data_again_gains_nothing_and_is_rejected(first_watch, tiny_repo):
    """A copy of the promoted file: prepare drops the duplicates, DVC skips train and
    evaluate; the current (promoted) model, scored anew on the candidate's 2 test examples
    and the 2 held-out ones, answers each as the candidate does, so every gap is 0 and
    min_gain 0.01 rejects it."""
    incoming, _, _ = first_watch
    head = git(tiny_repo, "rev-parse", "HEAD")
    shutil.copy(incoming / "processed/good.jsonl", incoming / "again.jsonl")
    assert in_repo(tiny_repo, ["watch", "--incoming", str(incoming), "--once",
                               "--settle", "0", "--min-gain", "0.01"]) == 0
    record = log_lines(tiny_repo)[-1]
    assert record["file"] == "again.jsonl" and record["decision"] == "rejected"
    assert record["gain"] == 0.0 and record["current"] == record["candidate"]
    assert (record["low"], record["high"], record["examples"]) == (0.0, 0.0, 4)
    assert record["reason"].endswith("on the same 4 examples: gain +0.0000, 95% interval "
                                     "[+0.0000, +0.0000]; its low end < min_gain +0.01")
    # Nothing of it stays: same HEAD, no new tag, no ingested copy, a clean index.
    assert git(tiny_repo, "rev-parse", "HEAD") == head
    assert sorted(git(tiny_repo, "tag", "--list").splitlines()) == sorted(PROMOTED_TAGS)
    assert not (tiny_repo / record["ingested_as"]).exists()
    assert git(tiny_repo, "status", "--porcelain", "--untracked-files=no") == ""
    # The experiment is kept for inspection, with the data it was run on.
    assert git(tiny_repo, "show", "--name-only", "--format=", record["exp_commit"], "--",
               record["ingested_as"]) == record["ingested_as"]
    assert (incoming / "processed/again.jsonl").is_file()


@e2e
def test_serve_answers_with_the_version_in_prod(first_watch, tiny_repo, tmp_path):
    """`gto assign` moves v0.0.1 to prod; `tunelab serve --artifact NAME@prod` fetches that
    version's adapter and base through DVC and answers the official client with it."""
    import openai

    run_tool(["gto", "assign", "ticket-triage-adapter", "--version", "v0.0.1", "--stage", "prod"],
             tiny_repo)
    fetched = registry.fetch_for_serving(tiny_repo, "ticket-triage-adapter@prod", tmp_path)
    assert (fetched.version.version, fetched.version.stage) == ("v0.0.1", "prod")
    adapter = fetched.adapters[0][1] / "adapter_model.safetensors"
    assert adapter.read_bytes() == \
        (tiny_repo / "models/adapter/adapter_model.safetensors").read_bytes()
    assert fetched.base == tmp_path / "base" and (fetched.base / "config.json").is_file()
    # The GGUF export of the same promotion, each tuned-TYPE.gguf served as NAME:TYPE.
    gguf = registry.fetch_for_serving(tiny_repo, "ticket-triage-gguf@staging", tmp_path / "g")
    assert [name for name, _ in gguf.gguf] == ["ticket-triage-gguf:q8_0"] and gguf.base is None
    assert gguf.gguf[0][1].read_bytes() == (tiny_repo / "models/gguf/tuned-q8_0.gguf").read_bytes()
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "tunelab.cli.app", "serve", "--artifact",
         "ticket-triage-adapter@prod", "--port", str(port), "--threads", "1"],
        cwd=tiny_repo, stderr=subprocess.PIPE, text=True)
    try:
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="none",
                               max_retries=0, timeout=30)
        wait_for(client)
        assert [model.id for model in client.models.list()] == ["base", "ticket-triage-adapter"]
        answer = client.chat.completions.create(
            model="ticket-triage-adapter", max_tokens=3, temperature=0,
            messages=[{"role": "user", "content": "My printer is jammed."}])
        assert answer.model == "ticket-triage-adapter" and answer.usage.completion_tokens > 0
    finally:
        server.terminate()
        stderr = server.communicate(timeout=30)[1]
    commit = git(tiny_repo, "rev-parse", "ticket-triage-adapter@v0.0.1^{commit}")
    assert (f"ticket-triage-adapter v0.0.1 (stage prod): commit {commit[:12]}, models/adapter"
            in stderr.splitlines())


def wait_for(client, seconds: float = 120) -> None:
    """Until the server lists its models (loading the fetched base takes a few seconds)."""
    import time

    import openai

    deadline = time.monotonic() + seconds
    while True:
        try:
            client.models.list()
            return
        except openai.APIConnectionError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)
