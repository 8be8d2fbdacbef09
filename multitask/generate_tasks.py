"""Generate the two-task sample dataset for the multi-task pipeline.

Writes multitask/data/raw/tasks.jsonl: support tickets from the seeded
data/generate_tickets.py, each used for two alpaca-style examples:
  task "triage":    the ticket -> the triage JSON object (as in data/raw/tickets.jsonl)
  task "sentiment": the ticket -> one word, negative | neutral | positive
Both examples of a ticket carry its `template` (the topic sentence it was written
around, "billing/3"): multitask/params.yaml splits by it (prepare.group_by), so a ticket,
and every ticket sharing its topic phrasing, is on one side of the split for both tasks.
Standard library only; the same seed gives a byte-identical file.

Run: python multitask/generate_tasks.py [--count 160] [--seed 29] [--output PATH] [--force]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SENTIMENT_INSTRUCTION = ("What is the customer's sentiment in this support ticket? "
                         "Answer with one word: negative, neutral or positive.")


def ticket_generator():
    """data/generate_tickets.py as a module (data/ is not a package)."""
    spec = importlib.util.spec_from_file_location("generate_tickets",
                                                  REPO / "data" / "generate_tickets.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def generate_examples(count: int, seed: int) -> list[dict]:
    """2 x ``count`` examples: each ticket as a triage and as a sentiment example, both
    with the ticket's ``template`` (the split group)."""
    examples = []
    for ticket in ticket_generator().generate_examples(count, seed):
        labels = json.loads(ticket["output"])
        template = ticket["template"]
        examples.append({"instruction": ticket["instruction"], "input": ticket["input"],
                         "output": ticket["output"], "task": "triage", "template": template})
        examples.append({"instruction": SENTIMENT_INSTRUCTION, "input": ticket["input"],
                         "output": labels["sentiment"], "task": "sentiment", "template": template})
    return examples


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=160, help="tickets (examples = 2 x this)")
    parser.add_argument("--seed", type=int, default=29, help="random seed (default 29)")
    parser.add_argument("--output", default=str(REPO / "multitask/data/raw/tasks.jsonl"))
    parser.add_argument("--force", action="store_true", help="overwrite the output if it exists")
    args = parser.parse_args()
    output = Path(args.output)
    if output.exists() and not args.force:
        print(f"{output} exists; pass --force to overwrite", file=sys.stderr)
        return 1
    output.parent.mkdir(parents=True, exist_ok=True)
    lines = [json.dumps(e, ensure_ascii=False) + "\n" for e in generate_examples(args.count, args.seed)]
    tmp = output.with_name(output.name + ".tmp")
    tmp.write_text("".join(lines), encoding="utf-8")
    tmp.replace(output)
    print(f"wrote {len(lines)} examples to {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
