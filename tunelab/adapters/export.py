"""`tunelab export`: fold an adapter into its base and save a plain model folder.

The result (safetensors + config + tokenizer + chat template) loads with plain
``AutoModelForCausalLM.from_pretrained(DIR)``: no PEFT, no tunelab. Before the
folder is put in place, the exported model is reloaded from disk and its logits
are compared with the adapter model's on a few prompts; beyond the tolerance the
export fails and leaves nothing behind.

A QLoRA adapter was trained (and evaluated) on the quantized base, so that base
is loaded quantized and dequantized to fp32 before merging: the export then
reproduces the model that was evaluated, not one on the original weights. Two
checks, like with like:

- merge: the exported model against the unmerged adapter on that same dequantized
  fp32 base. Only the order of float sums differs, so ``--tolerance`` holds everywhere.
- dequantization: the exported model against the live quantized model as it was
  evaluated. bitsandbytes does not compute that one in fp32 everywhere: 8-bit layers
  quantize their inputs to int8, and on a CPU with AVX512-BF16 (or AMX) its fused 4-bit
  kernel rounds inputs, block scales and outputs to bfloat16 whatever the compute
  dtype. So this check allows ``--tolerance`` plus the rounding such arithmetic can
  make (``rounding_allowance``): negligible in fp32; in bf16 about 2 on the tests' tiny
  model, whose logits merging into the unquantized weights would move by about 6.
"""

from __future__ import annotations

import json
from pathlib import Path

from tunelab.errors import AdapterError
from tunelab.util import files

EXPORT_INFO = "tunelab_export.json"
DEFAULT_PROMPTS_FILE = "data/prepared/test.jsonl"
DEFAULT_TOLERANCE = 1e-3  # fp32 logits of ~10..30; merging reorders sums at ~1e-5
# bitsandbytes rounds a quantized layer's input, its block scales and its output.
ROUNDINGS_PER_LAYER = 3
# Unit roundoff (largest relative rounding error) of the arithmetic bnb may compute in;
# int8: half a step of the 127 levels an input row is scaled to.
UNIT_ROUNDOFF = {"float32": 2.0 ** -24, "float16": 2.0 ** -11, "bfloat16": 2.0 ** -8,
                 "int8": 1 / 254}
BUILTIN_PROMPTS = (
    "Summarise in one sentence why unit tests matter.",
    "My order ORD-123456 arrived broken. What should I do?",
    "List three colours of the rainbow.",
    "Translate 'good morning' into French.",
)


class ExportError(AdapterError):
    """The export cannot be made or does not match the adapter model."""


def base_as_trained(base_dir: Path, adapter_dir: Path, dequantize: bool):
    """The base the adapter was trained on: fp32, or quantized as tunelab_train.json says
    (``dequantize``: exactly those quantized values, as fp32 weights a merge can add to)."""
    import torch

    from tunelab.config.params import QuantizationParams
    from tunelab.models import loading

    info = loading.read_train_info(adapter_dir)
    if not info.get("quantization"):
        return loading.load_base(base_dir)
    base = loading.load_base(base_dir, QuantizationParams(**info["quantization"]), info["precision"])
    # dequantize() converts only the quantized layers: embeddings and norms of a bf16 model
    # would stay bf16, a mixed model that cannot run.
    return base.dequantize(dtype=torch.float32).float() if dequantize else base


def adapter_model(base_dir: Path, adapter_dir: Path, dequantize: bool = False):
    """The adapter on its base (unmerged): exactly as training and evaluation used it, or
    on the dequantized fp32 base a merge folds it into."""
    from peft import PeftModel

    base = base_as_trained(base_dir, adapter_dir, dequantize=dequantize)
    return PeftModel.from_pretrained(base, str(adapter_dir)).eval()


def merge_into_base(base_dir: Path, adapter_dir: Path):
    """A plain fp32 transformers model with the adapter folded into its weights."""
    return adapter_model(base_dir, adapter_dir, dequantize=True).merge_and_unload().eval()


def check_prompts(tokenizer, count: int, prompts_file: str | Path | None,
                  max_length: int = 256) -> list[list[int]]:
    """Token ids of ``count`` prompts: test examples (answer included) when there are any."""
    from tunelab.data import encoding

    if prompts_file and Path(prompts_file).is_file():
        examples = files.read_jsonl(prompts_file)[:count]
        if examples:
            return [encoding.encode(tokenizer, e, max_length).input_ids for e in examples]
    chats = [{"messages": [{"role": "user", "content": text}, {"role": "assistant", "content": ""}]}
             for text in BUILTIN_PROMPTS]
    return [encoding.prompt_ids(tokenizer, chat) for chat in (chats * count)[:count]]


def compare_logits(model_a, model_b, prompts: list[list[int]]) -> tuple[float, float]:
    """(max |logit difference|, max |logit| of ``model_a``) over the prompts."""
    import torch
    from tqdm import tqdm

    worst = peak = 0.0
    with torch.no_grad():
        for ids in tqdm(prompts, desc="compare logits", disable=len(prompts) < 2):
            batch = torch.tensor([ids])
            logits_a = model_a(input_ids=batch).logits.float()
            diff = logits_a - model_b(input_ids=batch).logits.float()
            worst = max(worst, diff.abs().max().item())
            peak = max(peak, logits_a.abs().max().item())
    return worst, peak


def bnb_arithmetic(model) -> tuple[str, int]:
    """(the coarsest arithmetic a quantized model computed in, its number of quantized
    layers). Call it after a forward pass: bnb switches to its CPU kernel on the first."""
    import bitsandbytes as bnb
    import torch

    used, layers = {p.dtype for p in model.parameters() if p.is_floating_point()}, 0
    for module in model.modules():
        if isinstance(module, bnb.nn.Linear8bitLt):
            used.add("int8")
        elif isinstance(module, bnb.nn.Linear4bit):
            packed_for_cpu = getattr(module.weight.quant_state, "packing_format_for_cpu", False)
            used.add(torch.bfloat16 if packed_for_cpu else module.compute_dtype or torch.float32)
        else:
            continue
        layers += 1
    names = {str(dtype).removeprefix("torch.") for dtype in used}
    return max(names, key=lambda name: UNIT_ROUNDOFF.get(name, 0.0)), layers


def rounding_allowance(arithmetic: str, layers: int, peak_logit: float) -> tuple[float, str]:
    """How far rounding in ``arithmetic`` can move the logits, and how that was reckoned.

    To first order each rounding moves a value by at most u (the unit roundoff) relative,
    and those errors add up through the layers: |logit error| <= roundings * u * max|logit|.
    An estimate, not a bound (a layer can amplify an error), so every quantized layer is
    counted, not just those on one path: on the 2-layer test model it allows about twice
    what bf16 or int8 arithmetic makes there. It grows with depth, so on a deep model in
    bf16 this check catches only gross mistakes; the merge check stays exact.
    """
    unit = UNIT_ROUNDOFF[arithmetic]
    allowance = ROUNDINGS_PER_LAYER * layers * unit * peak_logit
    return allowance, (f"{ROUNDINGS_PER_LAYER} roundings x {layers} quantized layers x "
                       f"{arithmetic} unit roundoff {unit:.3g} x max |logit| {peak_logit:.3g}")


def export_adapter(adapter_dir, output, base=None, prompt_count: int = 4,
                   tolerance: float = DEFAULT_TOLERANCE,
                   prompts_file: str | Path | None = DEFAULT_PROMPTS_FILE) -> dict:
    """Write the merged model to ``output`` if it matches the adapter model; its summary."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tunelab.adapters.merge import tokenizer_folder
    from tunelab.eval.inference import resolve_model
    from tunelab.models import loading

    if not tolerance >= 0:
        raise ExportError(f"--tolerance: must be >= 0, got {tolerance}")
    if prompt_count <= 0:
        raise ExportError(f"--check-prompts: must be > 0, got {prompt_count}")
    base_dir, adapter_dir = resolve_model(adapter_dir, base)
    if base_dir is None or not (adapter_dir / "adapter_config.json").is_file():
        raise ExportError(f"{adapter_dir}: already a full model folder; nothing to merge")
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_folder(adapter_dir, base_dir))
    prompts = check_prompts(tokenizer, prompt_count, prompts_file)

    info = loading.read_train_info(adapter_dir)
    merged = merge_into_base(base_dir, adapter_dir)
    with files.atomic_path(output) as staging:
        merged.save_pretrained(str(staging))
        tokenizer.save_pretrained(str(staging))
        del merged
        # Compare what a user will load: the folder on disk, read by plain transformers.
        exported = AutoModelForCausalLM.from_pretrained(str(staging), dtype=torch.float32).eval()
        diff, peak = compare_logits(exported, adapter_model(base_dir, adapter_dir, True), prompts)
        summary = {"adapter": str(adapter_dir), "base": str(base_dir),
                   "method": info.get("method", "lora"),
                   "prompts": len(prompts), "max_abs_logit_diff": diff, "tolerance": tolerance}
        if diff > tolerance:
            raise ExportError(f"exported model differs from the adapter model: max |logit diff| "
                              f"{diff:.3g} > tolerance {tolerance:g} on {len(prompts)} prompts; "
                              f"{output} not written")
        if info.get("quantization"):
            summary["quantized"] = check_against_quantized(exported, base_dir, adapter_dir,
                                                           prompts, tolerance, peak, output)
        (staging / EXPORT_INFO).write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def check_against_quantized(exported, base_dir: Path, adapter_dir: Path, prompts,
                            tolerance: float, peak_logit: float, output) -> dict:
    """The exported model against the quantized model as evaluated, allowing for the
    rounding of bnb's arithmetic; raises beyond it."""
    diff, _ = compare_logits(exported, live := adapter_model(base_dir, adapter_dir), prompts)
    arithmetic, layers = bnb_arithmetic(live)
    allowance, reckoning = rounding_allowance(arithmetic, layers, peak_logit)
    if diff > tolerance + allowance:
        raise ExportError(f"exported model differs from the quantized model it was evaluated "
                          f"as: max |logit diff| {diff:.3g} > tolerance {tolerance:g} + "
                          f"{allowance:.3g} for bitsandbytes computing in {arithmetic} "
                          f"({reckoning}) on {len(prompts)} prompts; {output} not written")
    return {"arithmetic": arithmetic, "max_abs_logit_diff": diff,
            "tolerance": tolerance + allowance, "rounding_allowance": reckoning}
