"""Data analysis: the figures `tunelab analyze-data` prints and metrics/data.json keeps
under "analysis".

What to know about a data set before training on it: how long its examples are in tokens
next to train.max_length (a histogram, percentiles and the max_length that would cover p95
or p99), how many examples the limit cuts, which share of the tokens carries loss, exact
and near duplicates, and the counts per task and per input format. Every length and loss
mask comes from ``encoding.encode``, the function the trainer uses, so a figure here is
what training sees. ``analyze``'s figures are plain JSON values; ``render_text`` draws them
for the terminal from that dict alone, so the CLI and metrics/data.json show the same
numbers. From the same encodings ``analyze`` gives the prepare stage metrics/data.json's
"tokens" too (the lengths of the examples deduplication keeps): no example is encoded twice.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from datasketch import MinHash, MinHashLSH

from tunelab.data import columns, encoding, formats, prepare, readers
from tunelab.errors import DataError

# Suggested max_length values are rounded up to a multiple of 8: the padding multiple
# tensor-core kernels run fastest on (transformers' pad_to_multiple_of=8 for the same reason).
LENGTH_MULTIPLE = 8
HISTOGRAM_MAX_BINS = 24       # rows of the terminal histogram, at most
MIN_BIN_WIDTH = 8             # bins are 8, 16, 32, ... tokens wide: edges stay round numbers
BAR_WIDTH = 40                # characters of the longest bar

# Near duplicates: two examples whose sets of word 5-grams have a Jaccard similarity of at
# least 0.8, the level at which deduplication studies of LLM training data (e.g. Lee et al.
# 2022, "Deduplicating Training Data Makes Language Models Better") treat texts as copies of
# one another. 5-grams, not single words: a shared vocabulary is not a shared text.
NEAR_DUPLICATE_THRESHOLD = 0.8
SHINGLE_WORDS = 5
# MinHash LSH proposes candidate pairs without comparing every pair; the exact Jaccard of
# the two shingle sets then confirms each (a 128-permutation estimate is only good to about
# +-0.09). LSH misses pairs near its own threshold, so it looks from a lower one: at 0.6,
# datasketch picks 18 bands of 7 rows, and a pair at 0.8 becomes a candidate with
# probability 0.986, one at 0.85 with 0.999 (at 0.8 itself only 0.40 would be, and the
# shipped tickets' closest pair, 0.846, was missed). Fixed seed: the same data, the same pairs.
LSH_THRESHOLD = 0.6
MINHASH_PERMUTATIONS = 128
MINHASH_SEED = 1
LISTED_PAIRS = 10             # near-duplicate pairs named in metrics/data.json and the output


@dataclass
class Analysis:
    figures: dict  # what `tunelab analyze-data` prints and metrics/data.json keeps as "analysis"
    tokens: dict   # prepare.length_stats of the distinct examples: metrics/data.json's "tokens"
    untrainable: list[dict]  # the distinct chat examples max_length cuts before any answer
    # token: the prepare stage keeps them out of every split (validate.untrainable judges them)


def analyze(examples: list[dict], tokenizer, *, max_length: int, train_on: str,
            text_stride: int = 0, format_counts: dict[str, int]) -> Analysis:
    """The figures for ``examples`` as the trainer would encode them with train's
    ``max_length``, ``train_on`` and ``text_stride``; ``format_counts`` from count_formats.
    The lengths are before truncation, so they do not depend on max_length or train_on."""
    if not examples:
        raise DataError("no examples to analyze")
    if any("messages" in e for e in examples) and not tokenizer.chat_template:
        raise DataError(encoding.NO_TEMPLATE)
    lengths, rows, truncated, cut = [], [], [], set()
    for index, example in enumerate(examples):
        encoded = encoding.encode(tokenizer, example, max_length, train_on)
        lengths.append(encoded.full_tokens)  # before truncation: what max_length must cover
        if "messages" in example and encoded.cut_to_no_answer:  # text: windows always train
            cut.add(index)
        rows += training_rows(tokenizer, example, encoded, max_length, train_on, text_stride)
        if encoded.truncated and "text" not in example:
            truncated.append(encoded)
    trained_tokens = sum(len(row.input_ids) for row in rows)
    loss_tokens = sum(row.loss_tokens for row in rows)
    lengths_summary = token_lengths(lengths)
    figures = {
        "examples": len(examples),
        "training_rows": len(rows),
        "max_length": max_length,
        "train_on": train_on,
        "text_stride": text_stride,
        "token_lengths": lengths_summary,
        "suggested_max_length": {"p95": round_up(lengths_summary["p95"]),
                                 "p99": round_up(lengths_summary["p99"])},
        "histogram": histogram(lengths, max_length),
        "truncated": {"examples": len(truncated), "share": round(len(truncated) / len(examples), 4),
                      "tokens_cut": sum(e.full_tokens - len(e.input_ids) for e in truncated),
                      "without_loss_tokens": sum(e.loss_tokens == 0 for e in truncated)},
        "loss_tokens": {"count": loss_tokens, "of_tokens": trained_tokens,
                        "share": round(loss_tokens / trained_tokens, 4)},
        "duplicates": duplicates(examples),
        "tasks": dict(sorted(Counter(e.get("task") or "(none)" for e in examples).items())),
        "formats": dict(sorted(format_counts.items())),
    }
    kept = prepare.distinct_indexes(examples)  # the examples prepare keeps
    return Analysis(figures, prepare.length_stats([lengths[i] for i in kept]),
                    [examples[i] for i in kept if i in cut])


def training_rows(tokenizer, example: dict, encoded: encoding.Encoded, max_length: int,
                  train_on: str, text_stride: int) -> list[encoding.Encoded]:
    """The rows training sees (encoding.windows): a chat example as ``encoded``, its
    encoding at max_length; a text example longer than max_length as windows."""
    if "text" not in example:
        return [encoded]  # what windows() returns, without encoding the chat a second time
    return encoding.windows(tokenizer, example, max_length, train_on, text_stride)


def count_formats(paths, fmt: str = "auto", text_split: str = "file",
                  mapping_for: Callable[[Path], columns.Mapping] | None = None) -> dict[str, int]:
    """Records per input format (alpaca, chat, ...) in ``paths``, read as
    ``prepare.load_files`` reads them (same arguments). Normalised examples no longer say
    which format they came in, so this reads the files again; a record that load_files
    rejects is not counted (its error comes from there)."""
    counts: Counter = Counter()
    for path in paths:
        try:
            records = readers.read_records(path, text_split)
        except DataError:
            continue
        mapping = mapping_for(Path(path)) if mapping_for else columns.Mapping()
        for _, record in records:
            try:
                counts[fmt if fmt != "auto" else formats.detect_format(
                    columns.apply(record, mapping))] += 1
            except ValueError:
                continue
    return dict(counts)


def token_lengths(lengths: list[int]) -> dict:
    """prepare.length_stats (mean, p50, p95, max) plus min and p99, by the same rank rule."""
    ordered = sorted(lengths)
    return {**prepare.length_stats(ordered), "min": ordered[0], "p99": _rank(ordered, 0.99)}


def round_up(length: int) -> int:
    return math.ceil(length / LENGTH_MULTIPLE) * LENGTH_MULTIPLE


def histogram(lengths: list[int], max_length: int) -> dict:
    """Equal-width bins from the shortest example (or max_length) to the longest (or
    max_length, unless it is over twice the longest: an empty tail would squash the
    bars). Bin i counts lengths in (edges[i], edges[i+1]], so with max_length on an edge
    every bin is wholly kept or wholly cut."""
    low = min(min(lengths), max_length)
    high = max(lengths) if max_length > 2 * max(lengths) else max(max(lengths), max_length)
    width = MIN_BIN_WIDTH
    while math.ceil(high / width) - (low - 1) // width > HISTOGRAM_MAX_BINS:
        width *= 2
    first, last = (low - 1) // width, math.ceil(high / width)
    edges = [width * i for i in range(first, last + 1)]
    counts = [0] * (len(edges) - 1)
    for length in lengths:
        counts[(length - 1) // width - first] += 1
    return {"bin_width": width, "edges": edges, "counts": counts}


def duplicates(examples: list[dict]) -> dict:
    """Exact duplicates (prepare.content_key: what the prepare stage drops) and near
    duplicates among the distinct examples."""
    kept = prepare.distinct_indexes(examples)
    pairs = near_duplicate_pairs([example_text(examples[i]) for i in kept])
    pairs = [(kept[a], kept[b], similarity) for a, b, similarity in pairs]
    pairs.sort(key=lambda pair: (-pair[2], pair[0], pair[1]))
    return {
        "exact": len(examples) - len(kept),
        "near_pairs": len(pairs),
        "near_examples": len({index for a, b, _ in pairs for index in (a, b)}),
        "near_threshold": NEAR_DUPLICATE_THRESHOLD,
        "near_listed": [{"first": examples[a]["source"], "second": examples[b]["source"],
                         "jaccard": round(similarity, 3)}
                        for a, b, similarity in pairs[:LISTED_PAIRS]],
    }


def near_duplicate_pairs(texts: list[str]) -> list[tuple[int, int, float]]:
    """(i, j, Jaccard) with i < j for every pair of ``texts`` at or above
    NEAR_DUPLICATE_THRESHOLD, found by MinHash LSH and confirmed exactly."""
    index = MinHashLSH(threshold=LSH_THRESHOLD, num_perm=MINHASH_PERMUTATIONS)
    shingle_sets, pairs = [], []
    for position, text in enumerate(texts):
        shingles = word_shingles(text)
        signature = MinHash(num_perm=MINHASH_PERMUTATIONS, seed=MINHASH_SEED)
        signature.update_batch([shingle.encode("utf-8") for shingle in shingles])
        # Query before inserting: each pair is found once, from its later member.
        for earlier in sorted(index.query(signature)):
            similarity = _jaccard(shingles, shingle_sets[earlier])
            if similarity >= NEAR_DUPLICATE_THRESHOLD:
                pairs.append((earlier, position, similarity))
        index.insert(position, signature)
        shingle_sets.append(shingles)
    return pairs


def example_text(example: dict) -> str:
    """What near-duplicate detection compares: every message's text (roles aside; a
    tool-call message may have none)."""
    if "text" in example:
        return example["text"]
    return "\n".join(message.get("content") or "" for message in example["messages"])


def word_shingles(text: str) -> set[str]:
    """The text's word SHINGLE_WORDS-grams, lowercased; a shorter text is one shingle."""
    words = re.findall(r"\w+", text.lower())
    if len(words) <= SHINGLE_WORDS:
        return {" ".join(words)}
    return {" ".join(words[i:i + SHINGLE_WORDS]) for i in range(len(words) - SHINGLE_WORDS + 1)}


def shown_examples(count: int, total: int) -> list[int]:
    """Indexes of ``count`` examples spread evenly over ``total``, first and last included."""
    if count >= total:
        return list(range(total))
    if count == 1:
        return [0]
    return sorted({round(i * (total - 1) / (count - 1)) for i in range(count)})


# --- text for the terminal --------------------------------------------------------------

def render_text(figures: dict) -> str:
    """Every figure of ``analyze`` as lines for the terminal, the histogram first."""
    lengths, suggested = figures["token_lengths"], figures["suggested_max_length"]
    cut, loss, dups = figures["truncated"], figures["loss_tokens"], figures["duplicates"]
    lines = [render_histogram(figures["histogram"], figures["max_length"]), "",
             f"tokens: p50 {lengths['p50']}  p95 {lengths['p95']}  p99 {lengths['p99']}  "
             f"max {lengths['max']}  (min {lengths['min']}, mean {lengths['mean']})",
             f"suggested train.max_length: {suggested['p95']} covers p95, {suggested['p99']} "
             f"covers p99 (rounded up to a multiple of {LENGTH_MULTIPLE})",
             f"truncated at max_length {figures['max_length']}: {cut['examples']} of "
             f"{figures['examples']} examples ({cut['share']:.1%}), {cut['tokens_cut']:,} tokens "
             f"cut, {cut['without_loss_tokens']} left with no loss token",
             *([f"training rows: {figures['training_rows']} (texts longer than max_length are "
                f"split into windows, train.text_stride {figures['text_stride']})"]
               if figures["training_rows"] > figures["examples"] else []),
             f"loss tokens: {loss['count']:,} of {loss['of_tokens']:,} tokens "
             f"({loss['share']:.1%})",
             f"exact duplicates: {dups['exact']}; near-duplicate pairs: {dups['near_pairs']} "
             f"({dups['near_examples']} examples; Jaccard >= {dups['near_threshold']} on word "
             f"{SHINGLE_WORDS}-grams)"]
    lines += [f"  {pair['first']} ~ {pair['second']} ({pair['jaccard']:.3f})"
              for pair in dups["near_listed"]]
    if dups["near_pairs"] > len(dups["near_listed"]):
        lines.append(f"  ... and {dups['near_pairs'] - len(dups['near_listed'])} more pairs")
    lines.append("tasks: " + _counts(figures["tasks"]))
    lines.append("formats: " + _counts(figures["formats"]))
    return "\n".join(lines)


def render_histogram(histogram_figures: dict, max_length: int) -> str:
    """ASCII bars, one row per bin; the bin that holds max_length is marked, and a
    max_length beyond the chart is said below it."""
    edges, counts = histogram_figures["edges"], histogram_figures["counts"]
    tallest = max(counts)
    per_mark = max(1.0, tallest / BAR_WIDTH)  # examples per '#': bars shrink, never stretch
    label_width = len(f"{edges[-2] + 1}-{edges[-1]}")
    count_width = len(str(tallest))
    scale = "one example" if per_mark == 1 else f"{per_mark:.1f} examples"
    rows = [f"token lengths ({histogram_figures['bin_width']}-token bins, {sum(counts)} examples; "
            f"each # is {scale}):"]
    for low, high, count in zip(edges, edges[1:], counts):
        bar = "#" * math.ceil(count / per_mark)
        row = f"  {f'{low + 1}-{high}':>{label_width}} | {bar:<{BAR_WIDTH}} {count:>{count_width}}"
        if low < max_length <= high:
            row += (f"  <- max_length {max_length}" if max_length == high
                    else f"  <- max_length {max_length} (cut inside this bin)")
        rows.append(row.rstrip())
    if max_length > edges[-1]:
        rows.append(f"  (max_length {max_length} is beyond the longest example)")
    return "\n".join(rows)


def render_example(tokenizer, example: dict, max_length: int, train_on: str,
                   text_stride: int = 0) -> str:
    """One example as training sees it (a long text: its first window), loss tokens in
    [[ ]], under a line naming it."""
    encoded = encoding.encode(tokenizer, example, max_length, train_on)
    rows = training_rows(tokenizer, example, encoded, max_length, train_on, text_stride)
    shown = rows[0]
    note = (f", cut from {shown.full_tokens}" if shown.truncated
            else f", the first of {len(rows)} windows" if len(rows) > 1 else "")
    header = (f"--- {example['source']}: {len(shown.input_ids)} tokens{note}, "
              f"{shown.loss_tokens} carry loss (in [[ ]]) ---")
    return header + "\n" + encoding.render_loss_preview(tokenizer, shown)


def _counts(counts: dict[str, int]) -> str:
    return ", ".join(f"{name} {count}" for name, count in counts.items())


def _rank(ordered: list[int], share: float) -> int:
    """The value at rank ``share`` of a sorted list, as prepare.length_stats takes p95."""
    return ordered[min(len(ordered) - 1, int(len(ordered) * share))]


def _jaccard(a: set, b: set) -> float:
    return len(a & b) / len(a | b)

