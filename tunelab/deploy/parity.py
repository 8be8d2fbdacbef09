"""Does the GGUF still do the task? Each exported file against the transformers model.

For every GGUF file (and the GGUF LoRA on its base), on the evaluation's test
examples, with greedy decoding and the same ``max_new_tokens``:

- the task metrics, scored like the evaluation scores the transformers model;
- agreement: the share of examples whose llama.cpp answer equals the transformers
  model's answer (metrics/samples.jsonl) exactly;
- template differences: examples whose prompt tokens, as llama.cpp builds them from the
  chat template stored in the GGUF, differ from the tokens the trainer used;
- tokens/s of llama.cpp and of transformers on the same first ``speed_examples`` prompts,
  one prompt at a time, in the same process on the same machine.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from tunelab.chat import reasoning, stops
from tunelab.data import encoding
from tunelab.deploy import llama_runtime
from tunelab.eval import scorers, scoring

# What metrics/eval.json's tuned model is compared on: the scores both sides have.
SHARED_SCORES = ("loss", "perplexity")  # eval.json keys a GGUF run does not compute


@dataclass
class Contender:
    name: str                 # "q8_0", "lora", ...: its key in metrics/export.json
    model_file: Path          # the GGUF file llama.cpp loads (where it is now)
    shown_file: str           # where it is after the export (written in the metrics)
    lora_file: Path | None = None
    extra: dict | None = None  # more facts for its metrics row


def chat_examples(examples: list[dict]) -> list[dict]:
    return [e for e in examples if "messages" in e]


def transformers_speed(model, tokenizer, prompts: list[list[int]], max_new_tokens: int) -> float:
    """Generated tokens per second, greedy, one prompt at a time (EOS counted, as llama.cpp's
    end-of-generation token is)."""
    import torch

    tokens, seconds = 0, 0.0
    with torch.inference_mode():
        for ids in tqdm(prompts, desc="speed transformers"):
            start = time.perf_counter()
            output = model.generate(input_ids=torch.tensor([ids]), max_new_tokens=max_new_tokens,
                                    do_sample=False,
                                    eos_token_id=stops.stop_ids(tokenizer, model.generation_config),
                                    pad_token_id=tokenizer.pad_token_id)
            seconds += time.perf_counter() - start
            tokens += output.shape[1] - len(ids)
    return tokens / seconds


@dataclass
class HeldOut:
    """The evaluation's chat examples, prepared once for every file checked."""
    messages: list[list[dict]]     # each prompt's messages, up to where the answer starts
    prompts: list[list[int]]       # their token ids as the trainer built them
    references: list[str]          # the reference answers
    transformers_answers: list[str]  # metrics/samples.jsonl's tuned answers
    tools: list[list[dict] | None]  # each example's tools (None: it has none)
    records: list[dict]            # the examples themselves (a scorer plugin reads them)


def held_out(tokenizer, examples: list[dict], transformers_answers: list[str]) -> HeldOut:
    chats = chat_examples(examples)
    return HeldOut([encoding.split_prompt(e)[0] for e in chats],
                   [encoding.prompt_ids(tokenizer, e) for e in chats],
                   [encoding.split_prompt(e)[1]["content"] for e in chats], transformers_answers,
                   [e.get("tools") for e in chats], chats)


def run_contender(contender: Contender, split: HeldOut, max_new_tokens: int,
                  speed_examples: int, threads: int | None, scorer: scorers.Scorer) -> dict:
    """The metrics row of one GGUF file, its answers scored by the evaluate scorer."""
    context = max(map(len, split.prompts), default=0) + max_new_tokens + 16
    llm = llama_runtime.load(contender.model_file, context=context, threads=threads,
                             lora=contender.lora_file)
    answers, differ, tokens, seconds = [], 0, 0, 0.0
    with contextlib.closing(llm):
        for i, (messages, tools, trained) in enumerate(tqdm(
                list(zip(split.messages, split.tools, split.prompts)),
                desc=f"llama.cpp {contender.name}")):
            prompt = llama_runtime.chat_prompt_tokens(llm, messages, tools)
            differ += prompt != trained
            generation = llama_runtime.generate(llm, prompt, max_new_tokens)
            answers.append(reasoning.split(generation.text, llama_runtime.chat_template(llm))[1])
            if i < speed_examples:
                tokens += len(generation.token_ids)
                seconds += generation.seconds
    row = {"file": contender.shown_file, **(contender.extra or {}),
           "size_mb": round((contender.lora_file or contender.model_file).stat().st_size
                            / 2 ** 20, 1)}
    row.update(scorer.score_split(answers, split.references, split.records))
    row.update(scoring.text_scores(answers, split.references))
    row["agreement"] = sum(a == r for a, r in zip(answers, split.transformers_answers)) / \
        max(len(answers), 1)
    row["template_differences"] = differ
    row["tokens_per_second"] = tokens / seconds if seconds else 0.0
    return row


def check(contenders: list[Contender], split: HeldOut, tuned_metrics: dict,
          transformers_tokens_per_second: float, max_new_tokens: int, speed_examples: int,
          threads: int | None, scorer: scorers.Scorer) -> dict:
    """metrics/export.json: the transformers row, then one row per contender."""
    result = {"examples": len(split.prompts),
              "speed_examples": min(speed_examples, len(split.prompts)),
              "max_new_tokens": max_new_tokens, "threads": threads,
              "llama_cpp_cpu": llama_runtime.cpu_backend(),  # whose kernels the speeds are
              "transformers": {**{k: v for k, v in tuned_metrics.items()
                                  if k not in SHARED_SCORES},
                               "tokens_per_second": transformers_tokens_per_second}}
    for contender in contenders:
        row = run_contender(contender, split, max_new_tokens, speed_examples, threads, scorer)
        row["speedup"] = row["tokens_per_second"] / transformers_tokens_per_second
        result[contender.name] = row
        accuracy = (f"task_accuracy {row['task_accuracy']:.4f} (transformers "
                    f"{tuned_metrics.get('task_accuracy', 0):.4f}), " if "task_accuracy" in row
                    else "")
        print(f"export: {contender.name}: {accuracy}agreement "
              f"{row['agreement']:.3f}, template differences {row['template_differences']}, "
              f"{row['tokens_per_second']:.1f} tokens/s ({row['speedup']:.1f}x)")
    return rounded(result)


def rounded(value):
    if isinstance(value, float):
        return round(value, 6)
    if isinstance(value, dict):
        return {k: rounded(v) for k, v in value.items()}
    return value


def template_drift(result: dict) -> dict[str, int]:
    """{contender: examples whose prompt tokens differ} for those with any."""
    return {name: row["template_differences"] for name, row in result.items()
            if isinstance(row, dict) and row.get("template_differences")}
