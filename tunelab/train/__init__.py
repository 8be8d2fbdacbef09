"""tunelab.train: fine-tuning with TRL + PEFT.

Owns building the SFTTrainer and its config for lora / qlora / full (training, with the
SFTTrainer subclass in sft_trainer; what it shares with align, from precision and callbacks
to the resume point, in run_support), the speed-ups that change no result beyond float
rounding (speedups: answer-only logits, per-example attention in padding-free rows), the
checkpoints a killed run resumes from and their fingerprints (checkpoints), and the guards
that stop a diverging or out-of-memory run with one line naming the knob (guards). It also
owns alignment after SFT: DPO, ORPO, KTO or GRPO training the SFT adapter on, against the
SFT model as reference (align; the TRL datasets in align_data). May import tunelab.data,
tunelab.models, tunelab.chat, tunelab.config, tunelab.util and tunelab.errors; never evaluation,
reporting, experiments or the CLI.
"""
