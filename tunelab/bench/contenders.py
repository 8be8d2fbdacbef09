"""The contenders of `tunelab bench`: what each changes, and the trainer it trains with.

Each differs from a reference in one thing, so each ratio reads as the gain of that one
thing:

- ``baseline``: the usual tutorial script. A plain ``transformers.Trainer`` with a PEFT
  LoRA adapter (tunelab's r, alpha and targets, the tutorials' dropout 0.05), fp32, the
  chat template rendered to text, every example padded to ``max_length``, loss on every
  token. ``baseline_dynamic_padding`` pads each batch only to its longest example;
  ``baseline_dropout0`` drops the adapter dropout.
- ``tunelab_before``: tunelab's own trainer (``training.build_trainer``, what the train
  stage builds) with its defaults from before the speed switches existed: each batch padded
  to its longest example, TRL's LM head scoring every position (on a CPU; TRL scores only
  trained ones on CUDA either way), loss on the answer only, fp32. Each
  ``tunelab_before+SWITCH`` turns one switch on alone.
- ``tunelab``: ``TrainParams()`` as it is now (``padding_free`` and
  ``answer_only_logits`` on); ``tunelab+SWITCH`` adds one more. ``qlora``, ``full`` and
  ``packing`` change ``method`` or ``packing`` on top of the same defaults.

Imports nothing from the rest of tunelab.bench (``training_speed`` runs these), and torch
and the trainer only inside the functions that build one, so `tunelab --help` lists the
names without loading torch.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from tunelab.config.params import TrainParams
from tunelab.data import encoding
from tunelab.util import files

TUTORIAL = {"padding": "max_length", "lora_dropout": 0.05}  # what the PEFT/TRL tutorials do
# tunelab's defaults before the speed switches: they are what `tunelab_before` sets.
BEFORE = {"padding_free": False, "answer_only_logits": False, "group_by_length": False,
          "compile": False}


@dataclass(frozen=True)
class Contender:
    trainer: str  # "tutorial" (plain transformers Trainer) or "tunelab" (training.build_trainer)
    # tutorial: keys of TUTORIAL; tunelab: TrainParams fields, off their defaults
    changes: dict = field(default_factory=dict)
    needs_native_bf16: bool = False  # skipped where neither the CPU nor a GPU computes bf16


CONTENDERS: dict[str, Contender] = {
    "baseline": Contender("tutorial"),
    "baseline_dynamic_padding": Contender("tutorial", {"padding": "longest"}),
    "baseline_dropout0": Contender("tutorial", {"lora_dropout": 0.0}),
    "tunelab_before": Contender("tunelab", BEFORE),
    "tunelab_before+answer_only_logits": Contender("tunelab",
                                                   {**BEFORE, "answer_only_logits": True}),
    "tunelab_before+padding_free": Contender("tunelab", {**BEFORE, "padding_free": True}),
    "tunelab_before+group_by_length": Contender("tunelab", {**BEFORE, "group_by_length": True}),
    "tunelab": Contender("tunelab"),
    "tunelab+group_by_length": Contender("tunelab", {"group_by_length": True}),
    "tunelab+compile": Contender("tunelab", {"compile": True}),
    "tunelab+bf16": Contender("tunelab", {"precision": "bf16"}, needs_native_bf16=True),
    "qlora": Contender("tunelab", {"method": "qlora"}),
    "full": Contender("tunelab", {"method": "full"}),
    "packing": Contender("tunelab", {"packing": True}),
}


def train_params(name: str, max_steps: int, batch_size: int, max_length: int) -> TrainParams:
    """The params contender ``name`` trains with: no evaluation, no checkpoints, one log
    at the end (so nothing but training steps happens between the timed steps)."""
    run = {"max_steps": max_steps, "batch_size": batch_size, "max_length": max_length,
           "eval_steps": 0, "save_steps": 0, "logging_steps": max_steps}
    contender = CONTENDERS[name]
    return TrainParams(**run, **(contender.changes if contender.trainer == "tunelab" else {}))


def tutorial_settings(name: str) -> dict:
    return {**TUTORIAL, **CONTENDERS[name].changes}


def pads(name: str, p: TrainParams) -> bool:
    """Whether the contender's batches hold padding (and so an attention mask to count by)."""
    if CONTENDERS[name].trainer == "tutorial":
        return True
    return not (p.padding_free or p.packing)  # packing trains padding-free too


def config(name: str, p: TrainParams) -> dict:
    """What contender ``name`` trains with, in the same keys for every contender (the
    precision asked for: the measurement records the one it resolved to)."""
    if CONTENDERS[name].trainer == "tutorial":
        tutorial = tutorial_settings(name)
        return {"trainer": "transformers.Trainer", "method": "lora", "precision": "fp32",
                "padding": tutorial["padding"], "lora_dropout": tutorial["lora_dropout"],
                "loss": "every token", **{switch: False for switch in BEFORE}, "packing": False}
    return {"trainer": "tunelab", "method": p.method, "precision": p.precision,
            "padding": "longest" if pads(name, p) else "none", "lora_dropout": p.lora.dropout,
            "loss": "answer tokens", **{switch: getattr(p, switch) for switch in BEFORE},
            "packing": p.packing}


def build(name: str, p: TrainParams, base_dir, train_file, output_dir) -> tuple:
    """(trainer, precision it trains in) for contender ``name``."""
    from tunelab.train import training

    if CONTENDERS[name].trainer == "tutorial":
        return tutorial_trainer(p, tutorial_settings(name), base_dir, train_file, output_dir)
    # the trainer `training.train` builds, without its logging and saving callbacks
    trainer, precision, _ = training.build_trainer(p, base_dir, train_file, output_dir)
    return trainer, precision


def tutorial_trainer(p: TrainParams, tutorial: dict, base_dir, train_file, output_dir):
    """The tutorial recipe: plain Trainer + PEFT LoRA, fp32, loss on every token."""
    import torch
    from datasets import Dataset
    from peft import get_peft_model
    from transformers import (AutoModelForCausalLM, AutoTokenizer, DataCollatorForSeq2Seq,
                              Trainer, TrainingArguments, default_data_collator, set_seed)

    from tunelab.train import training

    set_seed(p.seed)
    tokenizer = AutoTokenizer.from_pretrained(base_dir)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    texts = [example["text"] if "text" in example
             else tokenizer.apply_chat_template(example["messages"], tokenize=False)
             for example in files.read_jsonl(train_file)]
    if tutorial["padding"] == "max_length":
        encoded = tokenizer(texts, padding="max_length", truncation=True, max_length=p.max_length)
        collator = default_data_collator
    else:
        encoded = tokenizer(texts, truncation=True, max_length=p.max_length)
        # Pads each batch to its longest example, the labels with -100.
        collator = DataCollatorForSeq2Seq(tokenizer, label_pad_token_id=encoding.IGNORE_INDEX)
    # Mask padding by the attention mask, not by pad id: here pad is EOS, which must train.
    labels = [[token if real else encoding.IGNORE_INDEX for token, real in zip(ids, mask)]
              for ids, mask in zip(encoded["input_ids"], encoded["attention_mask"])]
    train_set = Dataset.from_dict({"input_ids": encoded["input_ids"],
                                   "attention_mask": encoded["attention_mask"], "labels": labels})
    model = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    adapter = p.model_copy(update={"lora": p.lora.model_copy(
        update={"dropout": tutorial["lora_dropout"]})})
    model = get_peft_model(model, training.lora_config(adapter))
    args = TrainingArguments(output_dir=str(output_dir), max_steps=p.max_steps,
                             per_device_train_batch_size=p.batch_size,
                             learning_rate=p.learning_rate, seed=p.seed, data_seed=p.seed,
                             logging_steps=p.logging_steps, save_strategy="no", report_to=[],
                             use_cpu=not torch.cuda.is_available())
    trainer = Trainer(model=model, args=args, train_dataset=train_set, data_collator=collator)
    return trainer, "fp32"
