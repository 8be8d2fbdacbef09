"""Stage: read every raw data file, normalise, deduplicate and split.

Reads params `prepare`; writes data/prepared/{train,val,test}.jsonl and
metrics/data.json. data/raw/ is only read.
"""

import sys

from transformers import AutoTokenizer

from tunelab import data, encoding, io, params, stage

BASE_DIR = "models/base"
PREPARED_DIR = "data/prepared"
DATA_METRICS = "metrics/data.json"


def main() -> int:
    p = params.load("prepare")
    params.check_split(p)
    files = data.raw_files(p.raw_dir)
    loaded = data.load_files(files, p.format, p.system_prompt)
    if loaded.errors:
        for message in loaded.errors[:20]:
            print(message, file=sys.stderr)
        more = len(loaded.errors) - 20
        raise io.DataError(f"{len(loaded.errors)} bad records in {p.raw_dir}"
                           + (f" (first 20 shown, {more} more)" if more > 0 else "")
                           + "; nothing was written")
    unique, duplicates = data.deduplicate(loaded.examples)
    splits = data.split(unique, p.val_ratio, p.test_ratio, p.seed)

    tokenizer = AutoTokenizer.from_pretrained(BASE_DIR)
    # Lengths before truncation, so the user can pick train.max_length from p95/max.
    lengths = [encoding.encode(tokenizer, e, max_length=1 << 30).full_tokens for e in unique]

    with io.atomic_path(PREPARED_DIR) as staging:
        staging.mkdir()
        for name, examples in splits.items():
            io.write_jsonl_atomic(staging / f"{name}.jsonl", examples)
    stats = {
        "files": loaded.files,
        "examples_read": len(loaded.examples),
        "duplicates_dropped": duplicates,
        "kind": "text" if "text" in unique[0] else "chat",
        "tasks": sorted({e["task"] for e in unique if e.get("task")}),
        "splits": {name: len(examples) for name, examples in splits.items()},
        "tokens": data.length_stats(lengths),
    }
    io.write_json_atomic(DATA_METRICS, stats)
    print(f"prepare: {len(loaded.examples)} examples read from {len(files)} files, "
          f"{duplicates} duplicates dropped, split {stats['splits']}, "
          f"tokens p95={stats['tokens']['p95']} max={stats['tokens']['max']}")
    return 0


if __name__ == "__main__":
    stage.run(main, "prepare")
