"""Load a tuned model (adapter or full folder) and answer prompts with it."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from tunelab.errors import ModelSourceError


def resolve_model(model_dir: str | Path, base: str | Path | None = None) -> tuple[Path | None, Path]:
    """(base folder or None, trained folder) for a ``--model`` argument: an adapter
    folder (its base from --base or its own config) or a full model folder."""
    model_dir = Path(model_dir)
    adapter_config = model_dir / "adapter_config.json"
    if adapter_config.is_file():
        base_dir = Path(base or json.loads(adapter_config.read_text())["base_model_name_or_path"])
        if not (base_dir / "config.json").is_file():
            raise ModelSourceError(f"{adapter_config}: base model folder {base_dir} not found "
                                   "(pass --base DIR or run `dvc repro base`)")
        return base_dir, model_dir
    if (model_dir / "config.json").is_file():
        return (Path(base) if base else None), model_dir
    raise ModelSourceError(f"{model_dir}: neither an adapter (adapter_config.json) nor a model "
                           "folder (config.json)")


def answer(model_dir, prompt: str, base=None, system: str | None = None,
           compare_base: bool = False, max_new_tokens: int = 128, temperature: float = 0.0,
           top_p: float = 1.0, seed: int = 0) -> dict[str, str]:
    """{"tuned": ...} and, with ``compare_base``, {"base": ...} for one prompt."""
    from tunelab.data import encoding
    from tunelab.eval import evaluation
    from tunelab.models import loading

    base_dir, trained_dir = resolve_model(model_dir, base)
    if compare_base and base_dir is None:
        raise ModelSourceError(f"{model_dir} is a full model: --compare-base needs --base DIR")
    messages = ([{"role": "system", "content": system}] if system else []) + \
        [{"role": "user", "content": prompt}]
    example = {"messages": messages + [{"role": "assistant", "content": ""}]}
    contenders = {"base": None} if compare_base else {}
    contenders["tuned"] = trained_dir
    answers = {}
    for name, trained in contenders.items():
        model, tokenizer = loading.load_trained(base_dir or trained_dir, trained)
        ids = encoding.prompt_ids(tokenizer, example)
        torch.manual_seed(seed)
        sampling = {"do_sample": True, "temperature": temperature, "top_p": top_p} \
            if temperature > 0 else {}
        answers[name] = evaluation.generate(model, tokenizer, [ids], max_new_tokens, 1,
                                            **sampling)[0]
    return answers
