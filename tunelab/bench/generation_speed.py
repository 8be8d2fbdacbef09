"""`tunelab bench-generate`: the evaluate stage's generation, timed before and after.

    tunelab bench-generate --batch-sizes 8,24 --repeats 3

The evaluate stage answers every chat example of the test split with the base and with
the tuned model (``evaluation.generate``, greedy, ``evaluate.max_new_tokens``). This
times that call on the same prompts, loaded as the stage loads them
(``loading.load_trained``: the tuned LoRA merged), per model, batch size and variant:

    before               the prompts in file order, each batch left-padded to its longest
                         prompt (evaluation.generate before issue 14)
    after                the longest prompts first (sort_by_length, the default)
    after_shared_prefix  after + the prompts' common prefix computed once and its KV cache
                         copied into every batch (share_prefix)
    after_static_cache   after + transformers' StaticCache (cache_implementation="static")

Per variant: generated tokens (each answer's new tokens up to and including its EOS; the
padding a finished row gets while its batch goes on is not counted), seconds and
tokens/s (min / median / max over the repeats), and how many answers differ from
"before" (greedy: any difference is float rounding flipping a near-tie). One short
untimed call per model first pays for thread pools and allocator warm-up; the variants
take turns within each repeat, so a change in background load hits them alike.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Callable

from tunelab.bench.training_speed import spread
from tunelab.data import encoding
from tunelab.errors import DataError
from tunelab.eval import evaluation
from tunelab.models import loading
from tunelab.train import run_support
from tunelab.util import files, machine

VARIANTS = {
    "before": {"sort_by_length": False},
    "after": {"sort_by_length": True},
    "after_shared_prefix": {"sort_by_length": True, "share_prefix": True},
    "after_static_cache": {"sort_by_length": True, "cache_implementation": "static"},
}
DEFAULT_VARIANTS = ("before", "after", "after_shared_prefix")
DEFAULT_OUTPUT = "metrics/bench/generation.json"


def run_generation_bench(base_dir: str | Path, adapter_dir: str | Path, test_file: str | Path,
                         out_path: str | Path = DEFAULT_OUTPUT, batch_sizes=(24,),
                         max_new_tokens: int = 64, max_examples: int = 0, repeats: int = 3,
                         variants=DEFAULT_VARIANTS,
                         on_progress: Callable[[str], None] | None = None) -> dict:
    """Time every variant for the base and the tuned model, write ``out_path``, return it."""
    unknown = [name for name in variants if name not in VARIANTS]
    if unknown or not variants:
        raise DataError(f"variants: {', '.join(unknown) or 'none given'}: "
                        f"choose from {', '.join(VARIANTS)}")
    examples = chat_examples(test_file)[:max_examples or None]
    settings = {"base_dir": str(base_dir), "adapter_dir": str(adapter_dir),
                "test_file": str(test_file), "examples": len(examples),
                "batch_sizes": list(batch_sizes), "max_new_tokens": max_new_tokens,
                "repeats": repeats, "variants": list(variants), "decoding": "greedy",
                "dtype": "fp32"}
    # before the runs, so the load average is the background load
    machine_context = machine.bench_context(run_support.cpu_supports_bf16())
    runs = []
    for model_name, trained_dir in (("base", None), ("tuned", adapter_dir)):
        model, tokenizer = loading.load_trained(base_dir, trained_dir)
        prompts = [encoding.prompt_ids(tokenizer, e) for e in examples]
        evaluation.generate_ids(model, tokenizer, prompts[:max(batch_sizes)], 2,
                                max(batch_sizes), desc="warm-up")
        for batch_size in batch_sizes:
            if on_progress:
                on_progress(f"bench-generate: {model_name}, batch {batch_size}: "
                            f"{repeats} x {', '.join(variants)} ...")
            runs += time_variants(model, tokenizer, prompts, model_name, batch_size,
                                  max_new_tokens, repeats, variants)
        del model
    result = {"machine": machine_context, "settings": settings, "runs": runs}
    files.write_json_atomic(out_path, result)
    return result


def chat_examples(test_file: str | Path) -> list[dict]:
    """The chat examples of ``test_file`` (prepared JSONL); none is a one-line DataError."""
    if not Path(test_file).is_file():
        raise DataError(f"{test_file}: file not found (run `dvc repro prepare`, or pass --test)")
    chat = [e for e in files.read_jsonl(test_file) if "messages" in e]
    if not chat:
        raise DataError(f"{test_file}: no chat examples (records with 'messages'): "
                        "the evaluation generates answers only for those")
    return chat


def time_variants(model, tokenizer, prompts: list[list[int]], model_name: str,
                  batch_size: int, max_new_tokens: int, repeats: int, variants) -> list[dict]:
    """One row per variant: its tokens, timings and answers compared with "before"."""
    seconds = {name: [] for name in variants}
    answers, tokens = {}, {}
    for _ in range(repeats):
        for name in variants:
            started = time.perf_counter()
            answer_ids = evaluation.generate_ids(model, tokenizer, prompts, max_new_tokens,
                                                 batch_size, desc=f"{model_name} {name}",
                                                 **VARIANTS[name])
            texts = evaluation.decode_answers(tokenizer, answer_ids)  # as generate does
            seconds[name].append(time.perf_counter() - started)
            answers[name] = texts  # greedy: the same on every repeat
            tokens[name] = sum(len(ids) for ids in answer_ids)
    rates = {name: [tokens[name] / s for s in seconds[name]] for name in variants}
    rows = []
    for name in variants:
        row = {"model": model_name, "batch_size": batch_size, "variant": name,
               "generated_tokens": tokens[name],
               "seconds": spread(seconds[name], 5), "tokens_per_s": spread(rates[name], 1)}
        if "before" in variants:
            differing = [index for index, (answer, before) in
                         enumerate(zip(answers[name], answers["before"])) if answer != before]
            row["answers_differing_from_before"] = len(differing)
            row["differing_examples"] = differing  # indices into the chat examples used
            row["speedup_vs_before"] = round(statistics.median(rates[name])
                                             / statistics.median(rates["before"]), 3)
        rows.append(row)
    return rows


def table(result: dict):
    """A rich Table of the result, one row per model, batch size and variant."""
    from rich.table import Table

    settings = result["settings"]
    out = Table(title=f"tunelab bench-generate: {settings['examples']} examples, "
                      f"max_new_tokens {settings['max_new_tokens']}, {settings['repeats']} repeats",
                caption="tokens = new tokens up to and including EOS; tok/s = median "
                        "(min-max); differ = answers unlike 'before'")
    for column in ("model", "batch", "variant", "tokens", "tok/s", "x before", "differ"):
        out.add_column(column, justify="left" if column in ("model", "variant") else "right")
    for row in result["runs"]:
        rate = row["tokens_per_s"]
        out.add_row(row["model"], str(row["batch_size"]), row["variant"],
                    str(row["generated_tokens"]),
                    f"{rate['median']:.1f} ({rate['min']:.1f}-{rate['max']:.1f})",
                    f"{row['speedup_vs_before']:.2f}" if "speedup_vs_before" in row else "",
                    str(row.get("answers_differing_from_before", "")))
    return out
