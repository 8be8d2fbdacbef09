"""What every other tool's key map is built from (from_axolotl, from_llamafactory, from_guide).

A key map is a table, {the tool's key: rule}, where a rule is ``To(tunelab key, convert)``,
a sentence saying why the key has no counterpart here, or a function of the value that
returns that sentence. ``by_table`` turns a config's keys into lines: ``Mapped`` (the
tool's key and value, the tunelab key and value) or ``Unmapped`` (the key and why). A convert function raises ``NoCounterpart`` for a value
tunelab has no counterpart for (``finetuning_type: freeze``); a value outside a tunelab
range is left for tunelab.config.import_config to refuse in the schema's own words.

A tunelab key starting ``*.`` belongs to the run the config describes: ``train.`` for
supervised fine-tuning, ``align.`` where the config trains on preferences (axolotl's
``rl: dpo``, LLaMA-Factory's ``stage: dpo``), because tunelab runs those as a second step
after SFT. The rules that read several keys at once (precision, epochs, warmup) are here
because every tool has them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

# The reasons several tools share, in one place.
WANDB = "tunelab logs every run with DVCLive (metrics/train, `dvc plots`), no W&B"
TRACKER = "tunelab logs every run with DVCLive (metrics/train, `dvc plots`), no other tracker"
MULTI_GPU = ("multi-GPU launcher config; tunelab runs on several GPUs or nodes through `make "
             "train-multi ACCELERATE_CONFIG=configs/accelerate/...` (docs/multi-node.md), not "
             "through params.yaml")
HUB = ("no model hub here: tunelab shares models through the DVC remote and the GTO registry "
       "(docs/sharing.md)")
OUTPUT_DIR = ("tunelab writes the adapter to models/adapter, a DVC output (each `dvc exp run` "
              "keeps its own)")
RESUME = "a killed run resumes from its last checkpoint by itself (train.save_steps)"
ATTENTION = ("tunelab picks the attention kernel itself (SDPA, each example apart with "
             "train.padding_free)")
KERNELS = ("tunelab has its own speedups instead (train.padding_free, train.answer_only_logits, "
           "train.compile)")
WORKERS = "the prepare stage tokenizes once, before training: no loader workers to set"
CACHE = "DVC caches the prepare stage's output and reruns it when the data or params change"
SPECIAL_TOKENS = ("tunelab keeps the tokenizer's special tokens; model.chat_template adds a "
                  "family's turn tokens (and trains their rows)")
EVAL_DATA = ("tunelab evaluates on the test split (prepare.test_ratio) and evaluate.heldout (a "
             "file in data/heldout/)")
RAW_DATA = ("tunelab reads every data file in prepare.raw_dir (data/raw): copy your files there "
            "(no dataset hub here)")
NEW_ADAPTER = "tunelab trains a new adapter on model.base; continuing an existing one has no key"
FULL_WEIGHT_ALIGN = ("a full-weight preference run: tunelab's align step trains the SFT adapter "
                     "(train.method lora or qlora)")
TOKENIZER = "tunelab reads the tokenizer and model config from model.base"
NO_COUNTERPART = "no counterpart in tunelab's params"
ADAMW = ("adamw_torch", "adamw_torch_fused", "adamw_hf", "adamw")


@dataclass(frozen=True)
class Mapped:
    source: str      # the tool's key, dotted where nested (lora_config.r)
    source_value: Any
    key: str         # the tunelab params key it sets ("*." = the config's run: train or align)
    value: Any
    note: str = ""   # a few words shown after the line, where the mapping needs them


@dataclass(frozen=True)
class Unmapped:
    source: str
    reason: str


@dataclass
class Converted:
    lines: list = field(default_factory=list)  # Mapped and Unmapped, in the config's order
    run: str = "train"                         # the section "*." keys go to


class NoCounterpart(Exception):
    """A value tunelab has no counterpart for; ``args[0]`` says why."""


@dataclass(frozen=True)
class To:
    key: str
    convert: Callable[[Any], Any] = lambda value: value


def by_table(raw: dict, table: dict) -> list:
    """A line per key of ``raw`` from ``table``; a key the table lacks is unknown to tunelab."""
    lines = []
    for source, value in raw.items():
        source = str(source)  # YAML allows a number as a key
        rule = table.get(source, f"a key tunelab's import does not know; {NO_COUNTERPART}")
        if not isinstance(rule, To):
            lines.append(Unmapped(source, rule if isinstance(rule, str) else rule(value)))
            continue
        try:
            lines.append(Mapped(source, value, rule.key, rule.convert(value)))
        except NoCounterpart as err:
            lines.append(Unmapped(source, err.args[0]))
    return lines


def flattened(raw: dict, groups: tuple[str, ...]) -> dict:
    """``raw`` with the mappings under ``groups`` opened into dotted keys (trl.beta)."""
    flat = {}
    for key, value in raw.items():
        if key in groups and isinstance(value, dict):
            flat.update({f"{key}.{inner}": item for inner, item in value.items()})
        else:
            flat[key] = value
    return flat


# --- convert functions -----------------------------------------------------------------

def number(value):
    """A number written as a YAML 1.1 string ("2e-4", no dot) as the float it means; anything
    else as it is (an int stays one; a word is left for the schema to refuse)."""
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return value


def whole(value):
    """An int that may be written 10.0; a share of a run (0.25) has no counterpart."""
    if isinstance(value, float) and value.is_integer() and value >= 1:
        return int(value)
    if isinstance(value, float):
        raise NoCounterpart(f"{value:g} is a share of the run; tunelab counts this in steps")
    return value


def share(value):
    """A share of the examples (val_set_size: 0.05); a count of them has no counterpart."""
    if isinstance(value, int) and not isinstance(value, bool) and value >= 1:
        raise NoCounterpart(f"{value} is a count of examples; tunelab's prepare.val_ratio is a "
                            "share (0..1)")
    return number(value)


def one_of(table: dict, why: str) -> Callable[[Any], Any]:
    """The tunelab choice for each of the tool's choices; any other has no counterpart
    (``why`` may name it as {value})."""
    def convert(value):
        if value in table:
            return table[value]
        raise NoCounterpart(why.format(value=value))
    return convert


def module_names(value):
    """Module names as a list ("q_proj,v_proj" too); "all" / all-linear as tunelab's word."""
    if isinstance(value, str):
        value = [name.strip() for name in value.split(",") if name.strip()]
    if value in (["all"], ["all-linear"], ["all_linear"]):
        return "all-linear"
    return value


def base_model(value):
    """model.base from a model folder, a .gguf file or a hub id (org/name); a local path is
    looked up from the working folder (run the import in the repository)."""
    name = str(value)
    if local_model(name) or is_hub_id(name):
        return name  # a hub id: import_config adds HUB_NOTE to its line
    raise NoCounterpart(f"{name!r} is neither a model folder or .gguf file here nor a hub id "
                        "(org/name): put the weights in a local folder and set model.base to it")


def local_model(name: str) -> bool:
    path = Path(name).expanduser()
    return path.is_dir() or (path.suffix == ".gguf" and path.is_file())


def is_hub_id(name: str) -> bool:
    return (name.count("/") == 1 and not name.startswith((".", "/", "~"))
            and not name.endswith(".gguf") and not Path(name).exists())


HUB_NOTE = ("a hub id: the base stage downloads it where a hub is reachable; offline, put the "
            "weights in a local folder and set model.base to it")


def prompt_loss(value) -> str:
    """Why train_on_inputs / train_on_prompt map to nothing."""
    if value is False:
        return "tunelab never trains on prompt tokens, which false asks: nothing to set"
    return "tunelab never trains on prompt tokens (train.train_on picks which answers train)"


def eval_strategy(source: str, value):
    """HF's eval_strategy: steps is what tunelab does, no is train.eval_steps: 0."""
    if value == "no":
        return Mapped(source, value, "*.eval_steps", 0)
    if value == "steps":
        return Unmapped(source, "tunelab evaluates every train.eval_steps steps: nothing more to "
                                "set")
    return Unmapped(source, f"tunelab evaluates every train.eval_steps steps; no counterpart "
                            f"for {value}")


def optimizer(value) -> str:
    """Why an optimizer choice maps to nothing: tunelab has none to make."""
    if value in ADAMW:
        return "tunelab trains with AdamW (torch), which this names: nothing to set"
    return f"tunelab trains with AdamW (torch) only; no counterpart for {value}"


# --- rules over several keys -----------------------------------------------------------

def precision(raw: dict, bf16: str, fp16: str) -> list:
    """train.precision (or align's) from a tool's bf16/fp16 switches (HF Trainer's meaning:
    both false is fp32; axolotl's bf16: auto is tunelab's auto)."""
    present = [key for key in (bf16, fp16) if key in raw]
    if not present:
        return []
    on = [key for key in present if raw[key] is True or raw[key] == "auto"]
    if len(on) == 2:
        return [Unmapped(key, f"{bf16} and {fp16} are both on; tunelab trains in one precision "
                              "(train.precision)") for key in present]
    if on:
        chosen = on[0]
        word = "auto" if raw[chosen] == "auto" else ("bf16" if chosen == bf16 else "fp16")
        return [Mapped(chosen, raw[chosen], "*.precision", word) if key == chosen
                else Unmapped(key, f"{chosen}: {_yaml_word(raw[chosen])} decides the precision")
                for key in present]
    if any(raw[key] is not False for key in present):
        return [Unmapped(key, f"expected true, false (or auto for {bf16}), got {raw[key]!r}")
                for key in present]
    if bf16 not in raw:
        return [Unmapped(fp16, "says only that fp16 is off; train.precision stays (auto picks "
                               "bf16 where the GPU has it)")]
    return [Mapped(bf16, False, "*.precision", "fp32",
                   f"{bf16} and {fp16} off: full precision")] + \
        ([Unmapped(fp16, f"{bf16}: false already decides (fp32)")] if fp16 in raw else [])


def epochs(source: str, value, max_steps) -> list:
    """*.epochs, and *.max_steps: -1 where the config gives no step limit: tunelab stops at
    max_steps (90 by default) before it looks at epochs."""
    lines = [Mapped(source, value, "*.epochs", number(value))]
    if max_steps is None or (isinstance(max_steps, int) and max_steps <= 0):
        lines.append(Mapped(source, value, "*.max_steps", -1,
                            "no step limit in the config: the run trains for epochs"))
    return lines


def warmup(raw: dict, steps_key: str, ratio_key: str, max_steps_key: str) -> list:
    """*.warmup_ratio from a ratio, or from warmup steps and the config's max_steps."""
    steps, ratio = raw.get(steps_key), raw.get(ratio_key)
    lines = []
    if steps and ratio:
        return [Unmapped(key, f"{steps_key} and {ratio_key} are both set: set train.warmup_ratio "
                              "yourself") for key in (steps_key, ratio_key)]
    if ratio_key in raw:
        lines.append(Mapped(ratio_key, ratio, "*.warmup_ratio", number(ratio)))
    if steps_key in raw:
        lines.append(_warmup_steps(steps_key, steps, raw.get(max_steps_key), max_steps_key))
    return lines


def _warmup_steps(key: str, steps, max_steps, max_steps_key: str):
    if not steps:  # 0 (or null): no warmup
        return Mapped(key, steps, "*.warmup_ratio", 0.0)
    if not (isinstance(steps, int) and isinstance(max_steps, int) and max_steps > 0):
        return Unmapped(key, f"tunelab sets warmup as a share of the run (train.warmup_ratio) "
                             f"and the run's length in steps is not known here (no "
                             f"{max_steps_key}); set it to {steps} / your total steps")
    ratio = float(f"{steps / max_steps:.6g}")
    if math.ceil(ratio * max_steps) != steps:  # transformers rounds ratio x steps up
        ratio = float(f"{(steps - 0.5) / max_steps:.6g}")
    return Mapped(key, steps, "*.warmup_ratio", ratio, f"{steps} of {max_steps_key} {max_steps}")


def _yaml_word(value) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)
