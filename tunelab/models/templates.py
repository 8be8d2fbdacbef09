"""``model.chat_template``: the chat template models/base carries, and the tokens it needs.

- ``auto``: the tokenizer's own (none for most base models: chat data then needs another
  choice, and validation says so in one line naming the key).
- a family name (tunelab.chat.families): tunelab's copy of that family's template.
- a ``.jinja`` file: its text, which must render a user + assistant conversation.

The template goes into the tokenizer saved in models/base, and from there into the
adapter, the merged model, the GGUF metadata and the Modelfile. Texts the chosen family
writes as single tokens but the vocabulary lacks are added (a think block's tags as plain
added tokens, the others as special tokens). Their embedding rows (and output rows, where
untied) start as the mean of the existing rows, so every new token starts as an "average"
token, deterministically; LoRA training then trains exactly those rows through PEFT's
``trainable_token_indices`` (tunelab.train.training), so the model can learn to write an
end-of-turn token it never saw. The ids of the added tokens are recorded in
tunelab_base.json ("added_tokens").

The stop ids (tunelab.chat.stops) go into the generation config, which generation reads.
"""

from __future__ import annotations

import json
from pathlib import Path

from tunelab.chat import families, stops
from tunelab.errors import ModelSourceError

KEY = "model.chat_template"
BASE_INFO = "tunelab_base.json"
PROBE = [{"role": "user", "content": "U"}, {"role": "assistant", "content": "A"}]


def choose(choice: str) -> tuple[str, tuple[str, ...], tuple[str, ...]]:
    """(template text, special tokens, plain added tokens) for ``choice`` (not auto)."""
    if choice.endswith(".jinja"):
        path = Path(choice)
        if not path.is_file():
            raise ModelSourceError(f"{KEY}: {choice}: file not found")
        return path.read_text(encoding="utf-8"), (), ()
    try:
        family = families.family(choice)
    except KeyError as err:
        raise ModelSourceError(f"{KEY}: {err.args[0]}") from None
    plain = family.think or ()
    return family.jinja, tuple(t for t in family.special_tokens if t not in plain), plain


def apply(choice: str, tokenizer, model) -> dict:
    """Put the chosen template into ``tokenizer`` (adding the tokens it needs to it and to
    ``model``) and the stop ids into ``model.generation_config``; what tunelab_base.json
    records of the choice."""
    added: dict[str, int] = {}
    if choice != "auto":
        template, special, plain = choose(choice)
        tokenizer.chat_template = template
        check_renders(tokenizer, choice)
        tokenizer.chat_template = with_bos(template, tokenizer)
        added = add_tokens(tokenizer, model, special, plain)
    set_stop_ids(tokenizer, model.generation_config)
    recognised = families.recognise(tokenizer.chat_template)
    return {"chat_template": choice, "template_family": recognised.name if recognised else None,
            "added_tokens": added}


def with_bos(template: str, tokenizer) -> str:
    """``template``, made to write BOS first where the tokenizer starts text with BOS
    (Llama 2's vocabulary under the phi3 or chatml format): llama.cpp and Ollama add BOS
    to a prompt for such a vocabulary, so training must see it too; and the base model
    was pretrained with it."""
    if not families.adds_bos(tokenizer):
        return template
    probe = tokenizer.apply_chat_template(PROBE, tokenize=False, chat_template=template)
    return template if probe.startswith(tokenizer.bos_token) else \
        "{{- bos_token }}" + template


def check_renders(tokenizer, what: str) -> None:
    """One line naming the key when the template cannot render a plain conversation."""
    try:
        text = tokenizer.apply_chat_template(PROBE, tokenize=False)
    except Exception as err:  # jinja2 raises many kinds; any of them is the template's fault
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise ModelSourceError(f"{KEY}: {what} fails to render a user + assistant "
                               f"conversation ({type(err).__name__}: {reason})") from None
    if "U" not in text or "A" not in text:
        raise ModelSourceError(f"{KEY}: {what} leaves out the user or assistant text of a "
                               "conversation")


def add_tokens(tokenizer, model, special: tuple[str, ...],
               plain: tuple[str, ...]) -> dict[str, int]:
    """Add the tokens the vocabulary lacks; {text: id} of those added."""
    from tokenizers import AddedToken

    vocab = tokenizer.get_vocab()
    missing_special = [t for t in special if t not in vocab]
    missing_plain = [t for t in plain if t not in vocab]
    if not missing_special and not missing_plain:
        return {}
    if missing_special:
        tokenizer.add_special_tokens({"additional_special_tokens": missing_special},
                                     replace_extra_special_tokens=False)
    if missing_plain:
        tokenizer.add_tokens([AddedToken(t, special=False, normalized=False)
                              for t in missing_plain])
    added = {t: tokenizer.convert_tokens_to_ids(t) for t in missing_special + missing_plain}
    mean_resize(model, len(tokenizer))
    return added


def mean_resize(model, vocab_size: int) -> None:
    """Grow the embedding (and an untied output layer) to ``vocab_size`` rows, each new
    row the mean of the old ones (deterministic, unlike transformers' sampled init)."""
    import torch

    old = model.get_input_embeddings().weight.shape[0]
    model.resize_token_embeddings(vocab_size, mean_resizing=False)
    with torch.no_grad():
        for layer in {id(m): m for m in (model.get_input_embeddings(),
                                         model.get_output_embeddings()) if m is not None}.values():
            layer.weight[old:] = layer.weight[:old].mean(dim=0)


def set_stop_ids(tokenizer, generation_config) -> None:
    """The generation config's eos ids become tunelab's stop ids; left as they were
    (int or list) where they already are that set."""
    ids = stops.stop_ids(tokenizer, generation_config)
    current = generation_config.eos_token_id
    if (current if isinstance(current, list) else [current]) != ids:
        generation_config.eos_token_id = ids if len(ids) > 1 else ids[0]


def added_token_ids(base_dir: str | Path) -> list[int]:
    """Ids of the tokens the base stage added for the chat template (they train)."""
    path = Path(base_dir) / BASE_INFO
    info = json.loads(path.read_text()) if path.is_file() else {}
    return sorted((info.get("added_tokens") or {}).values())

