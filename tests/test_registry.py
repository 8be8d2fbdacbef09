"""tunelab.experiments.registry on a real Git repo with GTO tags: references resolve to the
version a stage holds now with the path its commit's dvc.yaml declares, bad references or
stages are one clear line, and an aligned run's promotion registers and serves (via
`tunelab serve --artifact`) the aligned adapter that export shipped."""

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
                   "ticket-triage-aligned, ticket-triage-gguf)"),
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


def test_the_path_is_the_one_dvc_yaml_declared_at_the_versions_commit(registered):
    """A later commit moves the adapter in dvc.yaml, and the working tree moves it again:
    each version keeps the path its own commit declared."""
    repo, (first, _) = registered
    moved = (repo / "dvc.yaml").read_text().replace("path: models/adapter\n",
                                                    "path: models/adapter-v2\n")
    (repo / "dvc.yaml").write_text(moved)
    git(repo, "commit", "-qam", "moved")
    registry.register_version(repo, NAME, git(repo, "rev-parse", "HEAD"), "v0.0.3", "m")
    (repo / "dvc.yaml").write_text(moved.replace("models/adapter-v2", "models/elsewhere"))
    assert registry.resolve(repo, f"{NAME}@prod") == \
        registry.ArtifactVersion(NAME, "v0.0.1", first, "models/adapter", "prod")
    assert registry.resolve(repo, f"{NAME}@v0.0.3").path == "models/adapter-v2"


# --- an aligned run: the registry ships the model export shipped ------------------------

CHAT = [{"role": "user", "content": "My printer is jammed."}]
MODELS = ["models/base", "models/adapter", "models/aligned"]


@pytest.fixture
def aligned_run(tmp_path, tiny_base_dir, make_tiny_adapter):
    """A Git + DVC repo with this repo's artifacts and .gto, an older run's SFT adapter
    v0.0.1 in staging, and an experiment commit (not applied) of a run whose align stage
    trained an adapter: its outputs are in the DVC cache only, as after `dvc exp run`."""
    import yaml

    repo = tmp_path / "repo"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    git(repo, "config", "user.email", "t@tunelab.local")
    git(repo, "config", "user.name", "t")
    run_tool(["dvc", "init", "-q"], repo)
    declared = yaml.safe_load((REPO / "dvc.yaml").read_text())["artifacts"]
    pipeline = {"stages": {"run": {"cmd": "true", "outs": MODELS}}, "artifacts": declared}
    (repo / "dvc.yaml").write_text(yaml.safe_dump(pipeline))
    shutil.copy(REPO / ".gto", repo / ".gto")
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "pipeline")
    registry.register_version(repo, NAME, git(repo, "rev-parse", "HEAD"), "v0.0.1", "m")
    registry.assign_stage(repo, NAME, "v0.0.1", "staging")
    git(repo, "checkout", "-q", "-b", "run")
    shutil.copytree(tiny_base_dir, repo / "models/base")
    shutil.copytree(make_tiny_adapter("sft", seed=1), repo / "models/adapter")
    shutil.copytree(make_tiny_adapter("aligned", seed=2), repo / "models/aligned")
    (repo / "models/aligned/tunelab_align.json").write_text('{"objective": "dpo"}')
    run_tool(["dvc", "commit", "-q", "-f", "run"], repo)
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "run: sft + dpo")
    exp_commit = git(repo, "rev-parse", "HEAD")
    git(repo, "checkout", "-q", "main")
    shutil.rmtree(repo / "models")  # promotion checks them out of the cache
    return repo, exp_commit


def greedy_answer(base_dir, adapter_dir, max_tokens: int) -> str:
    """The adapter's greedy answer to CHAT, loaded directly with PEFT (no server)."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(base_dir)
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base_dir),
                                      adapter_dir).eval()
    prompt = tokenizer.apply_chat_template(CHAT, add_generation_prompt=True, return_tensors="pt",
                                           return_dict=True)["input_ids"]
    with torch.inference_mode():
        out = model.generate(prompt, max_new_tokens=max_tokens, do_sample=False,
                             pad_token_id=tokenizer.eos_token_id)
    return tokenizer.decode(out[0, prompt.shape[1]:], skip_special_tokens=True)


def serve_artifact(repo, reference: str, monkeypatch) -> dict:
    """`tunelab serve --artifact REFERENCE` in ``repo``, with uvicorn swapped for an
    in-process client that asks the served model CHAT, greedily."""
    from fastapi.testclient import TestClient

    from tunelab.cli import app as cli

    asked = {}

    def run_in_process(app, **_):
        with TestClient(app) as client:
            asked["models"] = [card["id"] for card in client.get("/v1/models").json()["data"]]
            name = reference.split("@")[0]
            body = {"model": name, "messages": CHAT, "max_tokens": 8, "temperature": 0}
            reply = client.post("/v1/chat/completions", json=body).json()
            asked["answer"] = reply["choices"][0]["message"]["content"]

    monkeypatch.setattr("uvicorn.run", run_in_process)
    monkeypatch.chdir(repo)  # --artifact reads the registry of the repo it runs in
    assert cli.main(["serve", "--artifact", reference]) == 0
    return asked


def test_an_aligned_run_registers_and_serves_the_aligned_adapter(aligned_run, tiny_base_dir,
                                                                  monkeypatch, capsys):
    from tunelab.experiments import promotion

    repo, exp_commit = aligned_run
    monkeypatch.chdir(repo)  # as `tunelab watch` runs: DVC reads its targets from the cwd
    promoted = promotion.promote(repo, exp_commit, "promote sft + dpo")
    name = promoted.tag.split("@")[0]
    served = serve_artifact(repo, f"{name}@staging", monkeypatch)
    aligned = greedy_answer(tiny_base_dir, repo / "models/aligned", 8)
    assert aligned != greedy_answer(tiny_base_dir, repo / "models/adapter", 8)
    assert served == {"models": ["base", "ticket-triage-aligned"], "answer": aligned}
    assert (f"ticket-triage-aligned v0.0.1 (stage staging): commit {promoted.commit[:12]}, "
            "models/aligned") in capsys.readouterr().err.splitlines()
    # Only the shipped model is a version, and staging names it alone: the older SFT
    # adapter's staging is taken away, so ticket-triage-adapter@staging is refused.
    assert (promoted.tag, promoted.registered) == \
        ("ticket-triage-aligned@v0.0.1", ["ticket-triage-aligned@v0.0.1"])
    assert registry.stages_of(repo, "ticket-triage-aligned") == {"staging": "v0.0.1"}
    assert registry.stages_of(repo, NAME) == {}
    assert registry.latest_version(repo, NAME) == (0, 0, 1)
    with pytest.raises(RepoError) as refused:
        registry.resolve(repo, f"{NAME}@staging")
    assert str(refused.value) == (f"no version of {NAME} is in stage staging: assign one with "
                                  f"`gto assign {NAME} --version vX.Y.Z --stage staging`")
