"""The scores a SentencePiece-style vocabulary needs in a GGUF converted without
``tokenizer.model``.

Llama 2, Mistral and Phi-3 tokenizers are SentencePiece BPE. A folder that has only their
``tokenizer.json`` (what transformers saves, what the npm tokenizer packages ship)
goes through llama.cpp's ``LlamaHfVocab``, which writes a placeholder score of -1000 for
every token (its ``get_token_score``: "Placeholder for actual logic"). llama.cpp's SPM
tokenizer merges the pair whose merged token scores highest, so with equal scores it
merges left to right and tokenizes otherwise than the model was trained ("Say" as
"Sa"+"y" instead of "S"+"ay"). The merge ranks in ``tokenizer.json`` are the order a
SentencePiece model's scores encode: each merged token gets minus its rank, every other
token 0.

The other difference: llama.cpp puts a space (``▁``) before the text after every special
token (``add_space_prefix``, SentencePiece's legacy behaviour); transformers' tokenizers
here prefix only the start of the input, so ``<s>[INST]`` is ``<s>``, ``[`` in training.
Where the tokenizer does not prefix text after a special token, the GGUF says
``add_space_prefix: false``: chat prompts, which start with a special token, then
tokenize as in training (the parity check's template differences count them). Plain text
given to llama.cpp without a leading special token then lacks the first ``▁``.

The GGUF is rewritten with gguf-py's own ``gguf_new_metadata`` copy (llama.cpp's tool for
changing a GGUF's metadata), into a temporary file renamed over the original.
"""

from __future__ import annotations

import json
from pathlib import Path

from tunelab.deploy import llama_runtime

PLACEHOLDER_SCORE = -1000.0  # LlamaHfVocab's score for every token


def needs_repair(model_dir: Path) -> bool:
    """Whether ``model_dir`` converts through LlamaHfVocab: a byte-fallback BPE
    ``tokenizer.json`` and no ``tokenizer.model``."""
    tokenizer_json = Path(model_dir) / "tokenizer.json"
    if (Path(model_dir) / "tokenizer.model").is_file() or not tokenizer_json.is_file():
        return False
    model = json.loads(tokenizer_json.read_text(encoding="utf-8"))["model"]
    return model.get("type") == "BPE" and bool(model.get("byte_fallback"))


def merge_scores(model_dir: Path, tokens: list[str]) -> list[float]:
    """Each token's score: minus the rank of the merge that makes it, 0 for the others."""
    merges = json.loads((Path(model_dir) / "tokenizer.json").read_text(encoding="utf-8"))[
        "model"]["merges"]
    rank: dict[str, int] = {}
    for position, merge in enumerate(merges):
        left, right = merge.split(" ", 1) if isinstance(merge, str) else merge
        rank.setdefault(left + right, position)
    return [-float(rank[token]) if token in rank else 0.0 for token in tokens]


def prefixes_after_special(tokenizer) -> bool:
    """Whether the tokenizer writes ``▁`` before text that follows a special token."""
    special = tokenizer.bos_token or tokenizer.eos_token
    ids = tokenizer(f"{special}x", add_special_tokens=False)["input_ids"]
    return tokenizer.convert_ids_to_tokens(ids[1:2]) != ["x"]


def repair(gguf_file: Path, model_dir: Path) -> bool:
    """Give ``gguf_file`` (converted from ``model_dir``) the scores and space-prefix rule of
    the tokenizer it was converted from; False where nothing needed repair."""
    import gguf
    from gguf.scripts.gguf_new_metadata import MetadataDetails, copy_with_new_metadata
    from transformers import AutoTokenizer

    if not needs_repair(model_dir):
        return False
    # Only llama.cpp's SPM route ("llama") has the placeholder scores; asked of llama.cpp
    # first, as reading the whole file below costs ~25 s on Gemma 3's BPE ("gpt2") vocabulary.
    if llama_runtime.metadata(gguf_file).get(gguf.Keys.Tokenizer.MODEL) != "llama":
        return False
    reader = gguf.GGUFReader(gguf_file)
    scores = reader.get_field(gguf.Keys.Tokenizer.SCORES).contents()
    if any(score != PLACEHOLDER_SCORE for score in scores):
        return False  # llama.cpp had real scores (a newer converter)
    tokens = reader.get_field(gguf.Keys.Tokenizer.LIST).contents()
    array, float32 = gguf.GGUFValueType.ARRAY, gguf.GGUFValueType.FLOAT32
    changes = {
        gguf.Keys.Tokenizer.SCORES: MetadataDetails(array, merge_scores(model_dir, tokens),
                                                    sub_type=float32),
        gguf.Keys.Tokenizer.ADD_PREFIX: MetadataDetails(
            gguf.GGUFValueType.BOOL,
            prefixes_after_special(AutoTokenizer.from_pretrained(model_dir))),
    }
    arch = reader.get_field(gguf.Keys.General.ARCHITECTURE).contents()
    repaired = gguf_file.with_name(gguf_file.name + ".repaired")
    writer = gguf.GGUFWriter(repaired, arch=arch, endianess=reader.endianess)
    copy_with_new_metadata(reader, writer, changes, remove_metadata=())
    del reader
    repaired.replace(gguf_file)
    return True
