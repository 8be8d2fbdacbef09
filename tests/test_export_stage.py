"""stages/export.py on a tiny seeded model: the GGUF files, the Modelfile and
metrics/export.json, and one-line failures that leave nothing in models/gguf/."""

from __future__ import annotations

import copy
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import stage_args
from tunelab.deploy import llama_runtime

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = [
    {"messages": [{"role": "user", "content": f"Ticket {i}: the app {what}."},
                  {"role": "assistant", "content": json.dumps({"category": category})}]}
    for i, (what, category) in enumerate([("crashes on start", "bug"),
                                          ("charged me twice", "billing"),
                                          ("needs a dark mode", "feature")])]
PARAMS = {"evaluate": {"max_new_tokens": 10},
          "export": {"quantizations": ["f32", "q8_0"], "speed_examples": 2, "threads": 2}}


def make_workspace(root: Path, base_dir: Path, adapter_dir: Path, tokenizer,
                   method: str = "lora") -> Path:
    """models/base, models/adapter (trained by ``method``: qlora = on the 4-bit nf4 base,
    full = a whole model), the test split, and eval.json/samples.jsonl as the evaluate
    stage writes them (the transformers answers, greedy, one at a time)."""
    from tunelab.data import encoding
    from tunelab.eval import evaluation, scoring
    from tunelab.models import loading

    shutil.copytree(base_dir, root / "models/base")
    shutil.copytree(adapter_dir, root / "models/adapter")
    tokenizer.save_pretrained(root / "models/adapter")
    quantization = loading.QuantizationParams() if method == "qlora" else None
    loading.write_train_info(root / "models/adapter", method, "fp32", quantization)
    (root / "data/prepared").mkdir(parents=True)
    (root / "data/prepared/test.jsonl").write_text(
        "".join(json.dumps(e) + "\n" for e in EXAMPLES))
    model, _ = loading.load_trained(root / "models/base", root / "models/adapter")
    prompts = [encoding.prompt_ids(tokenizer, e) for e in EXAMPLES]
    answers = evaluation.generate(model, tokenizer, prompts, PARAMS["evaluate"]["max_new_tokens"],
                                  batch_size=1)
    references = [e["messages"][-1]["content"] for e in EXAMPLES]
    tuned = {**scoring.task_scores(answers, references), **scoring.text_scores(answers, references),
             "loss": 9.0, "perplexity": 8103.08}
    (root / "metrics").mkdir()
    (root / "metrics/eval.json").write_text(json.dumps({"tuned": tuned}))
    (root / "metrics/samples.jsonl").write_text("".join(json.dumps({"tuned": a}) + "\n"
                                                        for a in answers))
    (root / "params.yaml").write_text(yaml.safe_dump(PARAMS))
    return root


def run_export(workdir: Path):
    return subprocess.run([sys.executable, str(REPO / "stages/export.py"),
                           *stage_args("export", workdir)], cwd=workdir,
                          capture_output=True, text=True)


@pytest.fixture(scope="module")
def exported(tiny_base_dir, make_tiny_adapter, tokenizer, tmp_path_factory):
    workdir = make_workspace(tmp_path_factory.mktemp("export"), tiny_base_dir,
                             make_tiny_adapter("export", r=4, seed=5), tokenizer)
    result = run_export(workdir)
    assert result.returncode == 0, result.stderr[-3000:]
    return workdir, result


def test_writes_a_gguf_per_type_the_lora_and_the_modelfile(exported):
    workdir, result = exported
    gguf_dir = workdir / "models/gguf"
    assert sorted(p.name for p in gguf_dir.iterdir()) == [
        "Modelfile", "adapter-f32.gguf", "tuned-f32.gguf", "tuned-q8_0.gguf"]
    assert (gguf_dir / "Modelfile").read_text().splitlines()[2] == "FROM ./tuned-f32.gguf"
    assert not list(workdir.glob("models/.gguf*"))  # no staging folder left behind
    assert "next: ollama create NAME -f models/gguf/Modelfile" in result.stdout


def test_metrics_compare_every_file_with_transformers(exported):
    workdir, _ = exported
    metrics = json.loads((workdir / "metrics/export.json").read_text())
    assert list(metrics) == ["examples", "speed_examples", "max_new_tokens", "threads",
                             "llama_cpp_cpu", "transformers", "f32", "q8_0", "lora"]
    assert (metrics["examples"], metrics["speed_examples"], metrics["max_new_tokens"],
            metrics["threads"]) == (3, 2, 10, 2)
    # the CPU backend the stage's llama.cpp ran: the one this machine loads (test_deploy pins
    # which that is for the CPU's features)
    assert metrics["llama_cpp_cpu"] == llama_runtime.cpu_backend()
    reference = json.loads((workdir / "metrics/eval.json").read_text())["tuned"]
    assert "loss" not in metrics["transformers"]
    for name in ("f32", "q8_0", "lora"):
        row = metrics[name]
        assert row["template_differences"] == 0
        assert row["tokens_per_second"] > 0
        assert row["speedup"] == pytest.approx(row["tokens_per_second"]
                                               / metrics["transformers"]["tokens_per_second"],
                                               rel=1e-4)
    # f32, and the f32 LoRA on the f32 base: the transformers answers, so its scores.
    for name in ("f32", "lora"):
        assert metrics[name]["agreement"] == 1.0
        for key in ("task_accuracy", "json_valid", "exact_match", "field_category", "rougeL"):
            assert metrics[name][key] == pytest.approx(reference[key], abs=1e-6)
    assert metrics["f32"]["file"] == "models/gguf/tuned-f32.gguf"
    assert metrics["lora"]["file"] == "models/gguf/adapter-f32.gguf"
    assert metrics["lora"]["base_file_type"] == "f32"
    assert metrics["q8_0"]["size_mb"] < metrics["f32"]["size_mb"]


def test_gguf_bytes_do_not_depend_on_the_folder(exported, tmp_path):
    """The export is a DVC output: the same run elsewhere must hash the same."""
    workdir, _ = exported
    elsewhere = tmp_path / "clone"
    shutil.copytree(workdir, elsewhere, ignore=shutil.ignore_patterns("gguf", "export.json"))
    assert run_export(elsewhere).returncode == 0
    for name in ("tuned-f32.gguf", "tuned-q8_0.gguf", "adapter-f32.gguf", "Modelfile"):
        assert (elsewhere / "models/gguf" / name).read_bytes() == \
            (workdir / "models/gguf" / name).read_bytes(), name


def test_a_template_that_drifts_from_training_fails_and_writes_nothing(
        tiny_base_dir, make_tiny_adapter, tokenizer, tmp_path):
    """The adapter folder's tokenizer (embedded in the GGUF) carries another default
    system prompt than the one the trainer used: llama.cpp would prompt differently. (The
    LoRA runs on the base's GGUF, which carries the base's template: no drift there.)"""
    drifted = copy.deepcopy(tokenizer)
    drifted.chat_template = tokenizer.chat_template.replace("named SmolLM", "named Drift")
    workdir = make_workspace(tmp_path, tiny_base_dir, make_tiny_adapter("drift", seed=6), tokenizer)
    drifted.save_pretrained(workdir / "models/adapter")
    result = run_export(workdir)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == (
        "export: error: export: llama.cpp builds other prompt tokens than the trainer from the "
        "GGUF's chat template (f32: 3, q8_0: 3 of 3 examples); models/gguf not written "
        "(export.allow_template_drift: true to ship it anyway)")
    assert not (workdir / "models/gguf").exists()
    assert not (workdir / "metrics/export.json").exists()


def test_a_missing_adapter_is_one_line(tiny_base_dir, make_tiny_adapter, tokenizer, tmp_path):
    workdir = make_workspace(tmp_path, tiny_base_dir, make_tiny_adapter("gone", seed=7), tokenizer)
    shutil.rmtree(workdir / "models/adapter")
    result = run_export(workdir)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1].startswith("export: error: models/adapter: ")
    assert "Traceback" not in result.stderr
    assert not (workdir / "models/gguf").exists()


def test_a_qlora_adapter_is_exported_merged_into_its_dequantized_base(
        tiny_base_dir, make_tiny_adapter, tokenizer, tmp_path):
    workdir = make_workspace(tmp_path, tiny_base_dir, make_tiny_adapter("qlora", seed=4),
                             tokenizer, method="qlora")
    result = run_export(workdir)
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((workdir / "metrics/export.json").read_text())
    assert [k for k in metrics if isinstance(metrics[k], dict)] == ["transformers", "f32",
                                                                    "q8_0", "lora"]
    assert metrics["f32"]["template_differences"] == 0
    # The f32 GGUF holds the dequantized 4-bit weights the adapter was evaluated on; the
    # LoRA file applies to the unquantized base, which it was not trained on.
    from gguf import GGUFReader

    reader = GGUFReader(workdir / "models/gguf/tuned-f32.gguf")
    tensor = next(t for t in reader.tensors if t.name == "blk.0.ffn_gate.weight")
    # gate_proj carries no LoRA: exactly the dequantized nf4 values, 16 levels per block of
    # 64 (one row here); the unquantized base has 64 different values in a row.
    assert tensor.data.shape == (128, 64)
    assert max(len(set(row.tolist())) for row in tensor.data) <= 16


def test_a_fully_fine_tuned_model_is_exported_whole_without_a_lora(
        tiny_base_dir, tokenizer, tmp_path):
    import torch
    from transformers import AutoModelForCausalLM

    full = AutoModelForCausalLM.from_pretrained(tiny_base_dir)
    with torch.no_grad():
        for parameter in full.parameters():  # a "trained" model: other weights than the base
            parameter.mul_(1.01)
    full.save_pretrained(tmp_path / "full")
    workdir = make_workspace(tmp_path / "ws", tiny_base_dir, tmp_path / "full", tokenizer,
                             method="full")
    result = run_export(workdir)
    assert result.returncode == 0, result.stderr[-3000:]
    assert sorted(p.name for p in (workdir / "models/gguf").iterdir()) == [
        "Modelfile", "tuned-f32.gguf", "tuned-q8_0.gguf"]
    metrics = json.loads((workdir / "metrics/export.json").read_text())
    assert "lora" not in metrics
    assert metrics["f32"]["agreement"] == 1.0


def test_a_tokenizer_without_a_chat_template_is_one_line(tiny_base_dir, make_tiny_adapter,
                                                          tokenizer, tmp_path):
    workdir = make_workspace(tmp_path, tiny_base_dir, make_tiny_adapter("bare", seed=8),
                             tokenizer)
    (workdir / "models/base/chat_template.jinja").unlink(missing_ok=True)
    config = json.loads((workdir / "models/base/tokenizer_config.json").read_text())
    config.pop("chat_template", None)
    (workdir / "models/base/tokenizer_config.json").write_text(json.dumps(config))
    result = run_export(workdir)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == (
        "export: error: models/base: the tokenizer the model was trained with has no chat "
        "template, so no GGUF chat template or Ollama TEMPLATE can be written")
    assert not (workdir / "models/gguf").exists()

