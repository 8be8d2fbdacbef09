"""The export stage's files: the tuned model as GGUF per type, the adapter as a GGUF LoRA,
and the Ollama Modelfile, written into a staging folder the caller renames into place.

- ``method: lora``: the adapter is merged into the fp32 base, then converted.
- ``method: qlora``: merged into the *dequantized* base, the weights the adapter was trained
  and evaluated on (tunelab.adapters.export), so the GGUF is the evaluated model; the GGUF
  LoRA, by contrast, applies to an unquantized base, which it was not trained on.
- ``method: full``: the trained folder is the whole model; there is no LoRA to write.
Every type is quantized from one f32 conversion, so none inherits another's rounding.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from tunelab.chat import stops
from tunelab.deploy import gguf_export, ollama
from tunelab.deploy.parity import Contender

MODELFILE = "Modelfile"
LORA_FILE = "adapter-f32.gguf"
LORA_ROW = "lora"


def tuned_file(quantization: str) -> str:
    return f"tuned-{quantization}.gguf"


def merged_folder(base_dir: Path, adapter_dir: Path, work: Path) -> Path:
    """A transformers folder of the whole tuned model (with its tokenizer) to convert."""
    from tunelab.adapters import export
    from tunelab.adapters.merge import tokenizer_folder
    from tunelab.eval.inference import resolve_model

    base, trained = resolve_model(adapter_dir, base_dir)
    if not (trained / "adapter_config.json").is_file():
        return trained  # method full: already the whole model
    from transformers import AutoTokenizer

    folder = work / "merged"
    export.merge_into_base(base, trained).save_pretrained(str(folder))
    AutoTokenizer.from_pretrained(tokenizer_folder(trained, base)).save_pretrained(str(folder))
    return folder


def write(base_dir: Path, adapter_dir: Path, staging: Path, final_dir: Path, work: Path,
          quantizations: list[str], lora: bool, tokenizer, system_prompt: str,
          max_new_tokens: int, check_prompts: list[list[dict]]) -> list[Contender]:
    """Write every file into ``staging``; the contenders the parity check runs (their
    ``shown_file`` under ``final_dir``)."""
    from tunelab.models import loading

    # The Modelfile first: a template Ollama cannot reproduce fails before minutes of work.
    shape = ollama.read_shape(tokenizer, check_prompts)
    staging.mkdir(parents=True, exist_ok=True)
    f32 = work / "tuned-f32-intermediate.gguf"
    print("export: converting the tuned model to GGUF (llama.cpp convert_hf_to_gguf.py)")
    gguf_export.convert_model(merged_folder(base_dir, adapter_dir, work), f32, "tunelab-tuned")
    contenders = []
    for quantization in quantizations:
        print(f"export: {tuned_file(quantization)}")
        gguf_export.quantize(f32, staging / tuned_file(quantization), quantization)
        contenders.append(Contender(quantization, staging / tuned_file(quantization),
                                    (final_dir / tuned_file(quantization)).as_posix()))
    f32.unlink()
    stop_texts = stops.stop_texts(tokenizer, loading.generation_config(base_dir))
    (staging / MODELFILE).write_text(ollama.modelfile(tuned_file(quantizations[0]), shape,
                                                      stop_texts, system_prompt, max_new_tokens))
    method = loading.read_train_info(adapter_dir).get("method", "lora")
    skipped = lora_skipped(adapter_dir) if lora and method != "full" else None
    if skipped:
        print(f"export: no {LORA_FILE}: {skipped}")
    elif lora and method != "full":
        print(f"export: {LORA_FILE} (llama.cpp convert_lora_to_gguf.py)")
        gguf_export.convert_lora(adapter_dir, base_dir, staging / LORA_FILE)
        base_gguf = work / "base-f32.gguf"  # the base to apply it to in the check; not shipped
        gguf_export.convert_model(base_dir, base_gguf, "tunelab-base")
        contenders.append(Contender(LORA_ROW, base_gguf, (final_dir / LORA_FILE).as_posix(),
                                    lora_file=staging / LORA_FILE,
                                    extra={"base_file_type": "f32"}))
    return contenders


def lora_skipped(adapter_dir: Path) -> str | None:
    """Why the adapter cannot be a GGUF LoRA, or None. llama.cpp's LoRA holds low-rank
    pairs only: the token rows trained for tokens the base stage added (trainable tokens)
    cannot go in it. The merged GGUFs carry them."""
    config_file = Path(adapter_dir) / "adapter_config.json"
    config = json.loads(config_file.read_text()) if config_file.is_file() else {}  # full: none
    if config.get("trainable_token_indices"):
        return ("the adapter trains the rows of tokens added for the chat template, which a "
                "llama.cpp LoRA cannot hold (the tuned GGUFs carry them)")
    return None


def scratch_folder():
    """Room for the f32 intermediates (several times the model's size), removed after."""
    return tempfile.TemporaryDirectory(prefix="tunelab-export-")
