"""`tunelab merge`: several LoRA adapters of one base -> one weighted adapter.

PEFT's ``add_weighted_adapter`` does the arithmetic; this module checks the
inputs first (same base, one weight per adapter, equal ranks where the method
needs them) so a mistake is one clear line, and writes the result as an
ordinary adapter folder that ``tunelab generate``, evaluation and the server
load like any trained one.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from tunelab.errors import AdapterError
from tunelab.util import files

# linear/ties/dare_ties combine the A and B matrices separately (same rank needed);
# cat stacks them (rank = sum); svd re-factorises the weighted sum of full deltas and
# keeps its top svd_rank singular values (PEFT's default: the largest input rank), so it
# is exact only when svd_rank reaches the rank of the sum.
METHODS = ("linear", "cat", "ties", "dare_ties", "svd")
DENSITY_METHODS = ("ties", "dare_ties")
MERGE_INFO = "tunelab_merge.json"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                   "chat_template.jinja", "vocab.json", "merges.txt", "tokenizer.model")


class MergeError(AdapterError):
    """Adapters that cannot be merged as asked; the message says why."""


def tokenizer_folder(adapter_dir: Path, base_dir: Path) -> Path:
    """Where an adapter's tokenizer is: the adapter folder when training saved one there
    (it may carry an edited chat template), else its base."""
    return adapter_dir if (Path(adapter_dir) / "tokenizer_config.json").is_file() else base_dir


def adapter_config(adapter_dir: Path) -> dict:
    path = Path(adapter_dir) / "adapter_config.json"
    if not path.is_file():
        raise MergeError(f"{adapter_dir}: not an adapter folder (no adapter_config.json)")
    return json.loads(path.read_text())


def base_identity(base_dir: Path) -> tuple:
    """What makes two base folders the same model: architecture config and origin."""
    config = json.loads((base_dir / "config.json").read_text())
    config.pop("_name_or_path", None)
    origin = base_dir / "tunelab_base.json"
    return (json.dumps(config, sort_keys=True),
            json.loads(origin.read_text()).get("base") if origin.is_file() else None)


def check_adapters(adapter_dirs: list[Path], method: str, base: str | None) -> Path:
    """The shared base folder of ``adapter_dirs``; MergeError if they cannot merge by ``method``."""
    from tunelab.eval.inference import resolve_model
    from tunelab.models import loading

    if method not in METHODS:
        raise MergeError(f"--method: unknown method {method!r} (choose from {', '.join(METHODS)})")
    configs = [adapter_config(d) for d in adapter_dirs]
    bases = [resolve_model(d, base)[0] for d in adapter_dirs]
    for adapter_dir, base_dir in zip(adapter_dirs[1:], bases[1:]):
        if base_identity(base_dir) != base_identity(bases[0]):
            raise MergeError(f"{adapter_dir}: trained on base {base_dir}, but {adapter_dirs[0]} "
                             f"on {bases[0]}: adapters of different bases cannot be merged")
    for adapter_dir, config in zip(adapter_dirs, configs):
        if config.get("peft_type") != "LORA":
            raise MergeError(f"{adapter_dir}: a {config.get('peft_type')} adapter; only LoRA merges")
        for flag, name in (("use_dora", "DoRA"), ("use_rslora", "rsLoRA")):
            if config.get(flag):
                raise MergeError(f"{adapter_dir}: a {name} adapter; merge supports plain LoRA only")
    ranks = [config["r"] for config in configs]
    if method in ("linear", *DENSITY_METHODS) and len(set(ranks)) > 1:
        shown = ", ".join(f"{d}: r={r}" for d, r in zip(adapter_dirs, ranks))
        raise MergeError(f"--method {method} needs equal ranks ({shown}); use cat or svd")
    quantizations = {json.dumps(loading.read_train_info(d).get("quantization")) for d in adapter_dirs}
    if len(quantizations) > 1:
        raise MergeError("adapters were trained on differently quantized bases "
                         f"({', '.join(sorted(quantizations))})")
    return bases[0]


def merge(adapter_dirs, weights: list[float], method: str, output: str | Path,
          density: float | None = None, svd_rank: int | None = None, base: str | None = None,
          seed: int = 0) -> dict:
    """Write the weighted merge of ``adapter_dirs`` to ``output`` (atomically); its summary."""
    import torch
    from peft import PeftModel

    from tunelab.models import loading

    adapter_dirs = [Path(d) for d in adapter_dirs]
    if len(weights) != len(adapter_dirs):
        raise MergeError(f"--weights: {len(weights)} weights for {len(adapter_dirs)} adapters")
    if density is not None and method not in DENSITY_METHODS:
        raise MergeError(f"--density applies to {', '.join(DENSITY_METHODS)}, not {method}")
    if method in DENSITY_METHODS:
        density = 0.5 if density is None else density
        if not 0 < density <= 1:
            raise MergeError(f"--density: must be in (0, 1], got {density}")
    if svd_rank is not None and (method != "svd" or svd_rank <= 0):
        raise MergeError(f"--svd-rank: a positive rank, for --method svd only (got {svd_rank})")
    base_dir = check_adapters(adapter_dirs, method, base)

    # The adapter weights do not depend on how the base was stored, so the merge
    # always runs on the fp32 base; tunelab_train.json keeps how to reload it.
    names = [f"input{i}" for i in range(len(adapter_dirs))]
    model = PeftModel.from_pretrained(loading.load_base(base_dir), str(adapter_dirs[0]),
                                      adapter_name=names[0])
    for name, adapter_dir in zip(names[1:], adapter_dirs[1:]):
        model.load_adapter(str(adapter_dir), adapter_name=name)
    torch.manual_seed(seed)  # dare_ties drops weights at random
    # "default" is the name PEFT saves at the folder root, like a trained adapter.
    model.add_weighted_adapter(names, weights, adapter_name="default", combination_type=method,
                               svd_rank=svd_rank, density=density)
    model.set_adapter("default")
    for name in names:
        model.delete_adapter(name)
    summary = {"adapters": [str(d) for d in adapter_dirs], "weights": weights, "method": method,
               "density": density, "svd_rank": svd_rank, "rank": model.peft_config["default"].r,
               "seed": seed}
    with files.atomic_path(output) as staging:
        model.save_pretrained(str(staging))
        tokenizer_source = tokenizer_folder(adapter_dirs[0], base_dir)
        for name in TOKENIZER_FILES:  # copied as they are: loading and saving costs seconds
            if (tokenizer_source / name).is_file():
                shutil.copy2(tokenizer_source / name, staging / name)
        info = loading.read_train_info(adapter_dirs[0])
        (staging / loading.TRAIN_INFO).write_text(json.dumps(
            {"method": info.get("method", "lora"), "precision": info.get("precision", "fp32"),
             "quantization": info.get("quantization")}, indent=2) + "\n")
        (staging / MERGE_INFO).write_text(json.dumps(summary, indent=2) + "\n")
    return summary
