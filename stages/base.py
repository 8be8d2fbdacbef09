"""Stage: materialise model.base once as a plain safetensors folder.

Reads params `model`; writes models/base/ (weights, tokenizer, tunelab_base.json).
A GGUF is dequantized here once, so later stages load in seconds and 4-bit
loading becomes possible.
"""

from tunelab import basemodel, params, stage

BASE_DIR = "models/base"


def main() -> int:
    p = params.load("model")
    print(f"base: materialising {p.base} into {BASE_DIR}/")
    info = basemodel.materialise(p.base, BASE_DIR)
    print(f"base: {info['parameters'] / 1e6:.0f}M parameters from {info['source']}")
    return 0


if __name__ == "__main__":
    stage.run(main, "base")
