"""tunelab/bench/gpu_check.py's code path, run on CPU with a tiny Llama (the 8B run needs a GPU)."""

import ast
import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_tiny_gpu_check_runs_lora_and_qlora_on_cpu(tmp_path):
    output = tmp_path / "gpu_check.json"
    result = subprocess.run([sys.executable, str(REPO / "tunelab/bench/gpu_check.py"), "--tiny",
                             "--steps", "1", "--warmup", "0", "--output", str(output)],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads(output.read_text())
    rows = {row["method"]: row for row in report["results"]}
    assert set(rows) == {"lora", "qlora"}
    assert all(row["error"] is None and row["tokens_per_s"] > 0 for row in rows.values())
    assert rows["lora"]["trainable_params"] == rows["qlora"]["trainable_params"] > 0
    # QLoRA really trains over 4-bit layers, LoRA over plain ones.
    assert rows["qlora"]["lora_layer_type"] == "peft.tuners.lora.bnb.Linear4bit over Linear4bit"
    assert rows["lora"]["lora_layer_type"] == "peft.tuners.lora.layer.Linear over Linear"
    assert "torchtune RTX 4090" in result.stdout
    # Its figures must never pass for tunelab's: the output and the JSON both say so.
    assert "gpu_check: plain PyTorch loop on random weights; does not run tunelab's code" in result.stdout
    assert report["code"] == "plain PyTorch loop on random weights; does not run tunelab's code"


def test_gpu_check_imports_nothing_from_tunelab():
    # It runs under a GPU machine's system python3, where tunelab's dependencies may be missing.
    tree = ast.parse((REPO / "tunelab/bench/gpu_check.py").read_text())
    imported = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import)
                for alias in node.names}
    imported |= {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert "torch" in imported and "peft" in imported  # the walk sees the lazy imports too
    assert [name for name in imported if name.split(".")[0] == "tunelab"] == []
