"""Stage: materialise model.base once as a plain safetensors folder.

Usage (dvc.yaml): python stages/base.py BASE_DIR
Reads params `model`; writes BASE_DIR (weights, tokenizer with the chosen chat template,
tunelab_base.json).
A GGUF is dequantized here once, so later stages load in seconds and 4-bit
loading becomes possible.
"""

from tunelab import pipeline
from tunelab.config import params
from tunelab.models import source


def main(base_dir: str) -> int:
    p = params.load("model")
    print(f"base: materialising {p.base} into {base_dir}/")
    info = source.materialise(p.base, base_dir, p.chat_template)
    print(f"base: {info['parameters'] / 1e6:.0f}M parameters from {info['source']}")
    if info["added_tokens"]:
        print(f"base: added {', '.join(info['added_tokens'])} for model.chat_template "
              f"{p.chat_template} (trained through LoRA's trainable token rows)")
    return 0


if __name__ == "__main__":
    pipeline.run(main, "base")
