"""Generate the shipped preference sample: ticket triage pairs for the align stage (issue 16).

Writes data/preferences/tickets_pref.jsonl, one TRL conversational preference pair per line:
  {"prompt": [{"role": "user", "content": <instruction + ticket>}],
   "chosen": [{"role": "assistant", "content": <the correct JSON>}],
   "rejected": [{"role": "assistant", "content": <a mistaken answer>}],
   "mistake": "wrong_priority", "template": "billing/3"}
The tickets come from data/generate_tickets.py's generator (called, not copied) and the
prompt is the user message the SFT data makes of one (tunelab.data.formats' alpaca: the
instruction, a blank line, the ticket), so preference tuning sharpens the task SFT taught.
The chosen answer is the SFT label; the rejected one is a mistake a small model makes on
this task, six kinds in equal shares, named in `mistake`:
  wrong_priority     one step off (high for urgent, low for medium)
  wrong_category     a category whose tickets read alike (refunds sound like shipping)
  wrong_sentiment    one step off (neutral for negative or positive)
  missing_field      a key left out of the JSON
  prose              a sentence about the ticket instead of JSON
  invented_order_id  an id the ticket does not contain (with or without a real one)
`template` is the ticket's: tunelab.data.preferences.split_preferences with group_by
"template" and prepare's seed and ratios keeps each template on the side it has in the
SFT split, so no test template's phrasing is tuned on.

The default seed (17) differs from generate_tickets.py's (13) so the tickets are others
than the SFT data's. Standard library only; the same seed gives a byte-identical file.

Run: python data/generate_preferences.py [--count 300] [--seed 17] [--output PATH] [--force]
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path

# A script's own folder is on sys.path, so the ticket generator beside it imports by name.
import generate_tickets as tickets

MISTAKES = ["wrong_priority", "wrong_category", "wrong_sentiment", "missing_field", "prose",
            "invented_order_id"]
# Small models are off by one step, rarely by two: urgent becomes high, not low.
PRIORITY_NEIGHBOURS = {"low": ["medium"], "medium": ["low", "high"], "high": ["medium", "urgent"],
                       "urgent": ["high"]}
SENTIMENT_NEIGHBOURS = {"negative": ["neutral"], "neutral": ["negative", "positive"],
                        "positive": ["neutral"]}
# Categories whose tickets share words: a refund for a parcel, a locked login that "does not work".
CATEGORY_CONFUSIONS = {"billing": ["account", "shipping"], "technical": ["account", "feedback"],
                       "account": ["technical", "billing"], "shipping": ["billing", "technical"],
                       "feedback": ["technical", "account"]}
# Prose answers: what a chat-tuned model says when it ignores "Extract a JSON object".
PROSE = ["This is a {category} ticket with {priority} priority; the customer sounds {sentiment}{about}.",
         "Sure! This is a {category} request{about}. I would rate it {priority} priority, and the "
         "sentiment is {sentiment}.",
         "The customer has a {category} issue{about}. Priority: {priority}. Sentiment: {sentiment}.",
         "Here is my analysis: category {category}, priority {priority}, sentiment {sentiment}{about}."]


def main() -> None:
    args = parse_args()
    output_path = Path(args.output)
    if output_path.exists() and not args.force:
        sys.exit(f"error: {output_path} already exists; pass --force to overwrite it")
    pairs = generate_pairs(args.count, args.seed)
    tickets.write_jsonl_atomic(output_path, pairs)
    print(f"wrote {len(pairs)} preference pairs to {output_path}")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=300, help="number of pairs (default 300)")
    parser.add_argument("--seed", type=int, default=17, help="random seed; same seed, same file (default 17)")
    parser.add_argument("--output", "--out", default="data/preferences/tickets_pref.jsonl",
                        help="where to write the JSON Lines file")
    parser.add_argument("--force", action="store_true", help="overwrite the output if it exists")
    return parser.parse_args()


def generate_pairs(count: int, seed: int) -> list[dict]:
    """`count` pairs, one per generated ticket, the mistakes in equal shares."""
    # Its own stream: drawn from the tickets' seed, the shuffle below would mirror theirs.
    rng = random.Random(f"preferences/{seed}")
    mistakes = [MISTAKES[i % len(MISTAKES)] for i in range(count)]
    rng.shuffle(mistakes)
    pairs = []
    for ticket, mistake in zip(tickets.generate_examples(count, seed), mistakes):
        labels = json.loads(ticket["output"])
        pairs.append({"prompt": [{"role": "user", "content": f"{ticket['instruction']}\n\n{ticket['input']}"}],
                      "chosen": [{"role": "assistant", "content": ticket["output"]}],
                      "rejected": [{"role": "assistant", "content": mistaken_answer(rng, labels, mistake)}],
                      "mistake": mistake, "template": ticket["template"]})
    return pairs


def mistaken_answer(rng: random.Random, labels: dict, mistake: str) -> str:
    """The answer with one `mistake`; every kind changes it, so it never equals the label."""
    wrong = dict(labels)
    if mistake == "wrong_priority":
        wrong["priority"] = rng.choice(PRIORITY_NEIGHBOURS[labels["priority"]])
    elif mistake == "wrong_category":
        wrong["category"] = rng.choice(CATEGORY_CONFUSIONS[labels["category"]])
    elif mistake == "wrong_sentiment":
        wrong["sentiment"] = rng.choice(SENTIMENT_NEIGHBOURS[labels["sentiment"]])
    elif mistake == "missing_field":
        del wrong[rng.choice(list(wrong))]
    elif mistake == "invented_order_id":
        wrong["order_id"] = invented_id(rng, labels["order_id"])
    else:  # prose
        about = f" about {labels['product']}" if labels["product"] else ""
        about += f" (order {labels['order_id']})" if labels["order_id"] else ""
        return rng.choice(PROSE).format(**labels, about=about)
    return json.dumps(wrong)  # as the SFT labels are written: same keys, same spacing


def invented_id(rng: random.Random, real_id: str | None) -> str:
    """An id of one of the generator's shapes that is not the ticket's."""
    while True:
        made = tickets.make_id(rng, rng.choice(tickets.ID_FORMATS)[1])
        if made != real_id:
            return made


if __name__ == "__main__":
    main()
