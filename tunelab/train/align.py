"""Alignment after SFT (issue 16): preference tuning (dpo, orpo, kto) or RL against a
reward (grpo), with TRL's trainers, continuing to train the SFT adapter.

The result is ONE LoRA adapter on the original base, in the shape train writes
(``tunelab_train.json``, sorted target_modules), so evaluate, export and serve take it in
place of models/adapter unchanged. The policy is base + the SFT adapter loaded trainable
(PEFT's "default" adapter); no new adapter is stacked on it.

The reference (dpo, kto, and grpo with beta > 0) is the SFT model as it was before the
first step: base + a frozen copy of the SFT adapter. TRL 1.16 builds it so itself when
handed a PeftModel and no ``ref_model`` (DPOTrainer, KTOTrainer and GRPOTrainer
``__init__``: ``model.add_adapter("ref", model.peft_config["default"])``, then each
``.default.`` weight copied into ``.ref.``); every reference forward runs under
``torch.no_grad()`` inside ``trl.trainer.utils.use_adapter(model, "ref")``, and
``disable_dropout`` (set below for all four) removes dropout from both. One base is held,
not two: an explicit ``ref_model`` would hold a second copy of the base and
``precompute_ref_log_probs`` is not needed. Only one case falls back to the base (adapters
disabled): PEFT 0.17-0.19 with a ``target_parameters`` LoRA, where TRL skips the copy;
``check_reference`` refuses that rather than align against the wrong model. tests/
test_align.py pins it: DPO's first loss is ln 2, which holds only when reference == policy.
ORPO has no reference. GRPO's reward functions come from the caller (tunelab.eval.reward's
reward_function in the stage: this package may not import evaluation).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch
from transformers import AutoTokenizer, set_seed

from tunelab.config.params import AlignParams, QuantizationParams
from tunelab.errors import ParamsError
from tunelab.models import loading
from tunelab.train import align_data, run_support

# TRL's evaluation metrics on held-out pairs, under the names the summary gives them.
PAIR_METRICS = {"eval_loss": "loss", "eval_rewards/accuracies": "preference_accuracy",
                "eval_rewards/margins": "reward_margin"}


def align(settings: AlignParams, base_dir: str | Path, sft_adapter_dir: str | Path,
          train_examples: list[dict], adapter_dir: str | Path, checkpoint_dir: str | Path,
          live_dir: str | Path, eval_examples: list[dict] | None = None, reward_funcs=(),
          callbacks=()) -> dict:
    """Align the SFT adapter in ``sft_adapter_dir`` and write the result to ``adapter_dir``
    with ``tunelab_align.json``; returns the summary (with wall time, which the files leave
    out so equal runs write equal bytes). ``live_dir``: DVCLive metrics and training.log.

    Checkpoints go to ``checkpoint_dir`` every ``settings.save_steps``; a run killed after
    one resumes there as train does (tunelab.train.checkpoints: the fingerprint covers the
    align params, the base, the SFT adapter and the examples), to the same adapter."""
    from dvclive import Live

    sft_files = [Path(sft_adapter_dir) / name
                 for name in ("adapter_model.safetensors", "adapter_config.json")]
    resume_from, keeper = run_support.resume_point(
        settings, base_dir, sft_files, checkpoint_dir, live_dir, writer=True, section="align",
        data=[train_examples, eval_examples or []])
    resumed = resume_from is not None  # DVCLive and training.log continue the restored logs
    live = Live(dir=str(live_dir), resume=resumed, save_dvc_exp=False, dvcyaml=None)
    logs = [run_support.StepAlignedDVCLive(live=live),
            run_support.TrainingLog(Path(live_dir) / "training.log", fresh=not resumed)]
    started = time.monotonic()
    trainer = build_align_trainer(settings, base_dir, sft_adapter_dir, train_examples,
                                  eval_examples, checkpoint_dir, reward_funcs,
                                  [keeper, *callbacks])
    keeper.trainer = trainer
    # Held-out pairs before the first step (the SFT model: for dpo the reference itself, so
    # a loss of ln 2, margin 0; a resumed run loads its checkpoint only in train()) and after
    # the last: what the objective moved. The first is left out of the curves, which a
    # resumed run restores from its checkpoint and would otherwise log twice.
    before = pair_metrics(trainer)
    for callback in logs:
        trainer.add_callback(callback)
    result = trainer.train(resume_from_checkpoint=str(resume_from) if resume_from else None)
    losses = logged(trainer, "loss")
    steps = trainer.state.global_step
    summary = {
        "objective": settings.objective,
        "beta": settings.objective_beta,
        "precision": run_support.resolve_precision(settings.precision),
        "steps": steps,
        "train_loss": round(keeper.train_loss(result.training_loss, steps), 6),
        "final_loss": round(losses[-1], 6) if losses else None,
        "train_rows": len(trainer.train_dataset),
    }
    if before is not None:
        summary["heldout_pairs"] = {"rows": len(trainer.eval_dataset), "before": before,
                                    "after": pair_metrics(trainer)}
    save_adapter(trainer, settings, sft_adapter_dir, adapter_dir, summary)
    return {**summary, "train_seconds": round(time.monotonic() - started, 1)}


def build_align_trainer(settings: AlignParams, base_dir: str | Path,
                        sft_adapter_dir: str | Path, train_examples: list[dict],
                        eval_examples: list[dict] | None, output_dir: str | Path,
                        reward_funcs=(), callbacks=()):
    """The TRL trainer for ``settings.objective``: seeded, the policy base + the SFT
    adapter (trainable), the reference its frozen copy (module docstring)."""
    set_seed(settings.seed)
    precision = run_support.resolve_precision(settings.precision)
    tokenizer = AutoTokenizer.from_pretrained(base_dir)
    model = policy_model(base_dir, sft_adapter_dir, precision)
    to_dataset = {"dpo": align_data.to_preference_dataset, "orpo": align_data.to_preference_dataset,
                  "kto": align_data.to_kto_dataset, "grpo": align_data.to_grpo_dataset
                  }[settings.objective]
    train_set = to_dataset(train_examples)
    # GRPO's eval would generate for every prompt: the evaluate stage measures the result.
    eval_set = (to_dataset(eval_examples) if eval_examples and settings.objective != "grpo"
                else None)
    args = trl_config(settings, output_dir, precision)
    extra = {}
    if settings.objective == "dpo":
        from trl import DPOTrainer as Trainer
    elif settings.objective == "kto":
        from trl import KTOTrainer as Trainer
    elif settings.objective == "orpo":
        from trl.experimental.orpo import ORPOTrainer as Trainer
    else:
        if not reward_funcs:
            raise ValueError("grpo needs reward_funcs (tunelab.eval.reward.reward_function)")
        from trl import GRPOTrainer as Trainer

        extra["reward_funcs"] = list(reward_funcs)
    trainer = Trainer(model=model, args=args, train_dataset=train_set, eval_dataset=eval_set,
                      processing_class=tokenizer, callbacks=list(callbacks), **extra)
    check_reference(trainer.model, settings)
    return trainer


def policy_model(base_dir: str | Path, sft_adapter_dir: str | Path, precision: str):
    """base + the SFT adapter as a PeftModel whose LoRA weights train: on the base the
    adapter was trained on (quantized for a qlora adapter), as loading.load_trained reads it."""
    from peft import PeftModel

    if (Path(sft_adapter_dir) / "config.json").is_file():
        raise ParamsError("align continues the SFT adapter, but models/adapter holds a whole "
                          "model (train.method: full); align a lora or qlora run")
    quantization = loading.read_train_info(sft_adapter_dir).get("quantization")
    base = run_support.adapter_base(base_dir, precision,
                                 QuantizationParams(**quantization) if quantization else None)
    if quantization:
        from peft import prepare_model_for_kbit_training

        base = prepare_model_for_kbit_training(base, use_gradient_checkpointing=False)
    return PeftModel.from_pretrained(base, str(sft_adapter_dir), is_trainable=True)


def check_reference(model, settings: AlignParams) -> None:
    """Refuse a run whose reference TRL made the bare base instead of the SFT model."""
    if settings.has_reference and "ref" not in model.peft_config:
        raise RuntimeError(f"{settings.objective}: TRL did not copy the SFT adapter as the "
                           "reference (PEFT < 0.20 with a target_parameters LoRA?); it would "
                           "align against the base model. Upgrade peft.")


def trl_config(settings: AlignParams, output_dir: str | Path, precision: str):
    """The objective's TRL config; what all four share is set once here."""
    common = dict(
        output_dir=str(output_dir),
        learning_rate=settings.learning_rate,
        max_steps=settings.max_steps,
        num_train_epochs=settings.epochs,
        per_device_train_batch_size=settings.batch_size,
        # TRL averages its reward metrics per batch: in batches of one pair the accuracy is
        # the share of pairs. kto's KL term needs two completions in a batch.
        per_device_eval_batch_size=settings.batch_size if settings.objective == "kto" else 1,
        gradient_accumulation_steps=settings.gradient_accumulation,
        beta=settings.objective_beta,
        seed=settings.seed,
        data_seed=settings.seed,
        bf16=precision == "bf16",  # TRL's configs default bf16 on: say it either way
        fp16=precision == "fp16",
        gradient_checkpointing=False,  # TRL's default is on; small CPU runs pay ~20% for it
        disable_dropout=True,  # policy and reference agree exactly before the first step
        logging_steps=settings.logging_steps,
        logging_first_step=True,
        logging_nan_inf_filter=False,
        save_strategy="steps" if settings.save_steps else "no",
        save_steps=settings.save_steps or 500,  # 500: the trainer's default, unused with "no"
        save_total_limit=2,  # two, so a checkpoint half-written by a kill leaves a complete one
        eval_strategy="no",  # align() evaluates before and after
        report_to=[],  # DVCLive is a callback, pointed at the stage's metrics folder
        dataloader_num_workers=0,
        use_cpu=not torch.cuda.is_available(),
    )
    if settings.objective == "dpo":
        from trl import DPOConfig

        return DPOConfig(**common, max_length=settings.max_length, loss_type=[settings.loss_type])
    if settings.objective == "kto":
        from trl import KTOConfig

        return KTOConfig(**common, max_length=settings.max_length)
    if settings.objective == "orpo":
        from trl.experimental.orpo import ORPOConfig

        return ORPOConfig(**common, max_length=settings.max_length)
    from trl import GRPOConfig

    # GRPO's batch counts completions: batch_size prompts x num_generations samples each.
    common["per_device_train_batch_size"] = settings.batch_size * settings.num_generations
    common["per_device_eval_batch_size"] = settings.batch_size * settings.num_generations
    return GRPOConfig(**common, num_generations=settings.num_generations,
                      max_completion_length=settings.max_completion_length,
                      temperature=settings.temperature)


def save_adapter(trainer, settings: AlignParams, sft_adapter_dir: str | Path,
                 adapter_dir: str | Path, summary: dict) -> None:
    """The trained "default" adapter alone (PEFT would save the "ref" copy in a subfolder),
    with the SFT run's tunelab_train.json (how to load the base) and tunelab_align.json."""
    model = trainer.accelerator.unwrap_model(trainer.model)
    if "ref" in model.peft_config:
        model.delete_adapter("ref")
    trainer.save_model(str(adapter_dir))
    trainer.processing_class.save_pretrained(str(adapter_dir))
    (Path(adapter_dir) / run_support.TRAINING_ARGS_PICKLE).unlink(missing_ok=True)
    run_support.sort_target_modules(Path(adapter_dir) / "adapter_config.json")
    info = loading.read_train_info(sft_adapter_dir)
    (Path(adapter_dir) / loading.TRAIN_INFO).write_text(json.dumps(info, indent=2) + "\n")
    align_info = {**summary, "settings": settings.model_dump()}
    (Path(adapter_dir) / loading.ALIGN_INFO).write_text(json.dumps(align_info, indent=2) + "\n")


def pair_metrics(trainer) -> dict | None:
    """TRL's evaluation on the held-out rows, the PAIR_METRICS it reports (dpo and orpo:
    the share of pairs whose implicit reward ranks chosen above rejected and the mean
    margin; kto: the loss), rounded; None without held-out rows."""
    if trainer.eval_dataset is None:
        return None
    found = trainer.evaluate()
    return {name: round(found[key], 6) for key, name in PAIR_METRICS.items() if key in found}


def logged(trainer, key: str) -> list[float]:
    """Every value of ``key`` the trainer logged during training, in step order."""
    return [log[key] for log in trainer.state.log_history if key in log]
