"""tunelab.experiments.registry on a real Git repo with GTO tags: references resolve to the
version a stage holds now, and bad references or stages are one clear line."""

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from tunelab.experiments import registry
from tunelab.experiments.repo import RepoError
from conftest import run_tool

REPO = Path(__file__).resolve().parents[1]
NAME = "ticket-triage-adapter"


def git(repo, *args):
    return subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True,
                          text=True).stdout.strip()


@pytest.fixture
def registered(tmp_path):
    """Two commits; v0.0.1 (the first) in prod, v0.0.2 (the second) in staging."""
    repo = tmp_path / "repo"
    repo.mkdir()
    git(repo, "init", "-q")
    git(repo, "config", "user.email", "t@tunelab.local")
    git(repo, "config", "user.name", "t")
    shutil.copy(REPO / "dvc.yaml", repo / "dvc.yaml")
    shutil.copy(REPO / ".gto", repo / ".gto")
    commits = []
    for text in ("first", "second"):
        (repo / "note.txt").write_text(text)
        git(repo, "add", "-A")
        git(repo, "commit", "-qm", text)
        commits.append(git(repo, "rev-parse", "HEAD"))
    for number, commit in enumerate(commits, start=1):
        version = registry.next_version(repo, NAME)
        assert version == f"v0.0.{number}"
        assert registry.register_version(repo, NAME, commit, version, "m") == f"{NAME}@{version}"
    assert registry.assign_stage(repo, NAME, "v0.0.2", "staging") == f"{NAME}#staging#1"
    assert registry.assign_stage(repo, NAME, "v0.0.1", "prod") == f"{NAME}#prod#2"
    return repo, commits


def test_a_stage_resolves_to_the_version_it_holds(registered):
    repo, (first, second) = registered
    prod = registry.resolve(repo, f"{NAME}@prod")
    assert prod == registry.ArtifactVersion(NAME, "v0.0.1", first, "models/adapter", "prod")
    staging = registry.resolve(repo, f"{NAME}@staging")
    assert (staging.version, staging.commit) == ("v0.0.2", second)
    assert registry.resolve(repo, f"{NAME}@v0.0.2").commit == second
    assert registry.stages_of(repo, NAME) == {"staging": "v0.0.2", "prod": "v0.0.1"}
    # Moving prod on: the newest assignment wins.
    registry.assign_stage(repo, NAME, "v0.0.2", "prod")
    assert registry.resolve(repo, f"{NAME}@prod").commit == second


def test_gto_show_lists_versions_and_stages(registered):
    repo, _ = registered
    shown = json.loads(run_tool(["gto", "show", "--json"], repo).stdout)
    assert shown == {NAME: {"version": "v0.0.2", "stage": {"staging": "v0.0.2", "prod": "v0.0.1"},
                            "registered": True, "active": True}}

@pytest.mark.parametrize("reference, message", [
    ("ticket-triage-adapter", "artifact 'ticket-triage-adapter': write NAME@STAGE "
                              "(staging|prod) or NAME@vX.Y.Z, e.g. ticket-triage-adapter@prod"),
    ("ticket-triage-adapter@live", "artifact 'ticket-triage-adapter@live': 'live' is neither "
                                   "a version (vX.Y.Z) nor a stage (staging, prod)"),
    ("other@prod", "artifact 'other' is not in dvc.yaml's artifacts (ticket-triage-adapter, "
                   "ticket-triage-gguf)"),
    ("ticket-triage-adapter@v0.0.9", "ticket-triage-adapter@v0.0.9 is not registered here "
     "(`gto show ticket-triage-adapter` lists the versions; `git fetch --tags` brings a "
     "teammate's)"),
    ("ticket-triage-gguf@prod", "no version of ticket-triage-gguf is in stage prod: assign "
     "one with `gto assign ticket-triage-gguf --version vX.Y.Z --stage prod`"),
])
def test_bad_references_are_one_line(registered, reference, message):
    repo, _ = registered
    with pytest.raises(RepoError) as raised:
        registry.resolve(repo, reference)
    assert str(raised.value) == message


def test_an_unknown_stage_is_refused(registered):
    repo, _ = registered
    with pytest.raises(RepoError, match="^stage 'live': the registry's stages are staging, prod$"):
        registry.assign_stage(repo, NAME, "v0.0.1", "live")
