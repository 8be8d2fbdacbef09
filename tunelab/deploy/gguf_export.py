"""Hugging Face model folder or PEFT adapter -> GGUF, with llama.cpp's own tools.

No home-made GGUF writer: llama.cpp's ``convert_hf_to_gguf.py`` and
``convert_lora_to_gguf.py`` (with the ``gguf-py`` beside them) come from the
llama-cpp-python source distribution that `make setup` builds, pinned in
requirements.txt, and are run as scripts with this Python. Quantization is llama.cpp's
``llama_model_quantize`` through the llama-cpp-python bindings, from an f32 GGUF, so every
requested type is made from full-precision weights.
"""

from __future__ import annotations

import ctypes
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

from tunelab.deploy import spm_vocab
from tunelab.errors import DeployError

# Where `make setup` unpacks the scripts; TUNELAB_LLAMA_CPP_DIR points elsewhere.
TOOLS_DIR = Path(sys.prefix) / "share" / "tunelab" / "llama.cpp"
TOOLS_ENV = "TUNELAB_LLAMA_CPP_DIR"
def tools_dir() -> Path:
    folder = Path(os.environ.get(TOOLS_ENV) or TOOLS_DIR)
    if not (folder / "convert_hf_to_gguf.py").is_file():
        raise DeployError(f"{folder}: llama.cpp's convert_hf_to_gguf.py is not there; run "
                          f"`make setup` (or set {TOOLS_ENV} to a llama.cpp checkout)")
    return folder


def run_script(script: str, args: list[str], what: str) -> None:
    """Run one of llama.cpp's convert scripts; its last error line becomes a DeployError."""
    command = [sys.executable, str(tools_dir() / script), *args]
    # The scripts read no hub when given local folders; offline makes sure of it.
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    env.pop("NO_LOCAL_GGUF", None)  # use the gguf-py shipped beside the script, as upstream does
    done = subprocess.run(command, capture_output=True, text=True, env=env)
    if done.returncode != 0:
        raise DeployError(f"{what}: llama.cpp's {script} failed: {last_error(done.stderr)}")


def last_error(stderr: str) -> str:
    """The line of a converter's output that says what went wrong."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    for line in reversed(lines):
        unsupported = re.search(r"(?:Model|Architecture) ('?[\w.-]+'?) (?:is )?not supported", line)
        if unsupported:
            return f"architecture {unsupported.group(1)} is not supported by the converter"
        if re.match(r"^\w*(Error|Exception)\b", line):
            return line
    return lines[-1] if lines else "no output"


def convert_model(model_dir: Path, out_file: Path, name: str) -> None:
    """``model_dir`` (a transformers folder with its tokenizer) -> an f32 GGUF file, its
    SentencePiece scores repaired where the converter had no tokenizer.model (spm_vocab)."""
    run_script("convert_hf_to_gguf.py",
               [str(model_dir), "--outfile", str(out_file), "--outtype", "f32",
                "--model-name", name], what=str(model_dir))
    spm_vocab.repair(Path(out_file), Path(model_dir))


def convert_lora(adapter_dir: Path, base_dir: Path, out_file: Path) -> None:
    """A PEFT LoRA folder -> a GGUF LoRA for llama.cpp's ``--lora`` (f32: it is small)."""
    run_script("convert_lora_to_gguf.py",
               [str(adapter_dir), "--base", str(base_dir), "--outfile", str(out_file),
                "--outtype", "f32"], what=str(adapter_dir))


def file_type(name: str) -> int:
    """llama.cpp's ``LLAMA_FTYPE_MOSTLY_*`` number for a type name (``q4_k_m``)."""
    import llama_cpp

    value = getattr(llama_cpp, f"LLAMA_FTYPE_MOSTLY_{name.upper()}", None)
    if value is None:
        raise DeployError(f"export.quantizations: llama.cpp knows no type {name!r}")
    return value


def quantize(f32_file: Path, out_file: Path, name: str, threads: int | None = None) -> None:
    """Write ``f32_file`` quantized to ``name`` (f32 is the conversion itself: copied)."""
    import llama_cpp

    if name == "f32":
        shutil.copyfile(f32_file, out_file)
        return
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = file_type(name)
    params.nthread = threads or os.cpu_count() or 1
    status = llama_cpp.llama_model_quantize(str(f32_file).encode(), str(out_file).encode(),
                                            ctypes.byref(params))
    if status != 0 or not out_file.is_file():
        raise DeployError(f"export.quantizations: llama.cpp could not quantize {f32_file} "
                          f"to {name} (status {status})")
