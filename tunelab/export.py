"""`tunelab export`: fold an adapter into its base and save a plain model folder.

The result (safetensors + config + tokenizer + chat template) loads with plain
``AutoModelForCausalLM.from_pretrained(DIR)``: no PEFT, no tunelab. Before the
folder is put in place, the exported model is reloaded from disk and its logits
are compared with the adapter model's on a few prompts; beyond the tolerance the
export fails and leaves nothing behind.

A QLoRA adapter was trained (and evaluated) on the quantized base, so that base
is loaded quantized and dequantized to fp32 before merging: the export then
reproduces the model that was evaluated, not one on the original weights.
"""

from __future__ import annotations

import json
from pathlib import Path

from tunelab import io
from tunelab.basemodel import ModelSourceError

EXPORT_INFO = "tunelab_export.json"
DEFAULT_PROMPTS_FILE = "data/prepared/test.jsonl"
DEFAULT_TOLERANCE = 1e-3  # fp32 logits of ~10..30; merging reorders sums at ~1e-5
BUILTIN_PROMPTS = (
    "Summarise in one sentence why unit tests matter.",
    "My order ORD-123456 arrived broken. What should I do?",
    "List three colours of the rainbow.",
    "Translate 'good morning' into French.",
)


class ExportError(ModelSourceError):
    """The export cannot be made or does not match the adapter model."""


def base_as_trained(base_dir: Path, adapter_dir: Path, dequantize: bool):
    """The base the adapter was trained on: fp32, or quantized as tunelab_train.json says
    (``dequantize``: exactly those quantized values, as fp32 weights a merge can add to)."""
    import torch

    from tunelab import models
    from tunelab.params import QuantizationParams

    info = models.read_train_info(adapter_dir)
    if not info.get("quantization"):
        return models.load_base(base_dir)
    base = models.load_base(base_dir, QuantizationParams(**info["quantization"]), info["precision"])
    return base.dequantize(dtype=torch.float32) if dequantize else base


def adapter_model(base_dir: Path, adapter_dir: Path):
    """The adapter on its base exactly as training and evaluation used it (unmerged)."""
    from peft import PeftModel

    base = base_as_trained(base_dir, adapter_dir, dequantize=False)
    return PeftModel.from_pretrained(base, str(adapter_dir)).eval()


def merge_into_base(base_dir: Path, adapter_dir: Path):
    """A plain fp32 transformers model with the adapter folded into its weights."""
    from peft import PeftModel

    base = base_as_trained(base_dir, adapter_dir, dequantize=True)
    return PeftModel.from_pretrained(base, str(adapter_dir)).merge_and_unload().eval()


def check_prompts(tokenizer, count: int, prompts_file: str | Path | None,
                  max_length: int = 256) -> list[list[int]]:
    """Token ids of ``count`` prompts: test examples (answer included) when there are any."""
    from tunelab import encoding

    if prompts_file and Path(prompts_file).is_file():
        examples = io.read_jsonl(prompts_file)[:count]
        if examples:
            return [encoding.encode(tokenizer, e, max_length).input_ids for e in examples]
    chats = [{"messages": [{"role": "user", "content": text}, {"role": "assistant", "content": ""}]}
             for text in BUILTIN_PROMPTS]
    return [encoding.prompt_ids(tokenizer, chat) for chat in (chats * count)[:count]]


def max_logit_diff(model_a, model_b, prompts: list[list[int]]) -> float:
    import torch
    from tqdm import tqdm

    worst = 0.0
    with torch.no_grad():
        for ids in tqdm(prompts, desc="compare logits", disable=len(prompts) < 2):
            batch = torch.tensor([ids])
            diff = model_a(input_ids=batch).logits.float() - model_b(input_ids=batch).logits.float()
            worst = max(worst, diff.abs().max().item())
    return worst


def export_adapter(adapter_dir, output, base=None, prompt_count: int = 4,
                   tolerance: float = DEFAULT_TOLERANCE,
                   prompts_file: str | Path | None = DEFAULT_PROMPTS_FILE) -> dict:
    """Write the merged model to ``output`` if it matches the adapter model; its summary."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tunelab import models
    from tunelab.inference import resolve_model

    if not tolerance >= 0:
        raise ExportError(f"--tolerance: must be >= 0, got {tolerance}")
    if prompt_count <= 0:
        raise ExportError(f"--check-prompts: must be > 0, got {prompt_count}")
    base_dir, adapter_dir = resolve_model(adapter_dir, base)
    if base_dir is None or not (adapter_dir / "adapter_config.json").is_file():
        raise ExportError(f"{adapter_dir}: already a full model folder; nothing to merge")
    tokenizer_dir = adapter_dir if (adapter_dir / "tokenizer_config.json").is_file() else base_dir
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    prompts = check_prompts(tokenizer, prompt_count, prompts_file)

    reference = adapter_model(base_dir, adapter_dir)
    merged = merge_into_base(base_dir, adapter_dir)
    with io.atomic_path(output) as staging:
        merged.save_pretrained(str(staging))
        tokenizer.save_pretrained(str(staging))
        del merged
        # Compare what a user will load: the folder on disk, read by plain transformers.
        exported = AutoModelForCausalLM.from_pretrained(str(staging), dtype=torch.float32).eval()
        diff = max_logit_diff(exported, reference, prompts)
        summary = {"adapter": str(adapter_dir), "base": str(base_dir),
                   "method": models.read_train_info(adapter_dir).get("method", "lora"),
                   "prompts": len(prompts), "max_abs_logit_diff": diff, "tolerance": tolerance}
        if diff > tolerance:
            raise ExportError(f"exported model differs from the adapter model: max |logit diff| "
                              f"{diff:.3g} > tolerance {tolerance:g} on {len(prompts)} prompts; "
                              f"{output} not written")
        (staging / EXPORT_INFO).write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def run_cli(args) -> int:
    summary = export_adapter(args.adapter, args.output, base=args.base,
                             prompt_count=args.check_prompts, tolerance=args.tolerance,
                             prompts_file=args.prompts_file)
    print(f"max |logit diff| exported vs adapter model: {summary['max_abs_logit_diff']:.3g} "
          f"on {summary['prompts']} prompts (tolerance {summary['tolerance']:g})")
    print(f"exported {summary['adapter']} merged into {summary['base']} -> {args.output}")
    return 0


def register(commands) -> None:
    export = commands.add_parser("export", help="merge an adapter into its base and save a plain "
                                 "transformers model folder (checked against the adapter)")
    export.add_argument("--adapter", required=True, type=Path, help="adapter folder")
    export.add_argument("--output", required=True, type=Path, help="folder to write")
    export.add_argument("--base", default=None,
                        help="base model folder (default: the adapter's own base)")
    export.add_argument("--check-prompts", type=int, default=4,
                        help="prompts whose logits are compared (default 4)")
    export.add_argument("--tolerance", type=float, default=DEFAULT_TOLERANCE,
                        help=f"largest allowed |logit difference| (default {DEFAULT_TOLERANCE:g})")
    export.add_argument("--prompts-file", default=DEFAULT_PROMPTS_FILE,
                        help="JSONL examples to check on (default data/prepared/test.jsonl; "
                        "built-in prompts when absent)")
    export.set_defaults(handler=run_cli)
