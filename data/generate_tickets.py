"""Generate the shipped sample dataset: customer support tickets -> triage JSON.

Writes data/raw/tickets.jsonl, one alpaca-style example per line:
  {"instruction": ..., "input": <ticket text>, "output": <JSON string>, "task": "ticket_triage"}
where the output is {"category", "priority", "sentiment", "product", "order_id"}.

The task is chosen so the tiny base model (SmolLM2-135M-Instruct) is visibly weak
at it and a few hundred CPU LoRA steps make it strong. Every label is recoverable
from consistent cues in the text: topic phrases give the category, phrases such as
"ASAP" or "no rush" give the priority, mood sentences give the sentiment, and the
product and ORD-number are named verbatim. The wording varies around those cues:
many templates, four writing styles, optional greetings and signatures, the odd
typo. Standard library only; the same seed gives a byte-identical file.

Run: python data/generate_tickets.py [--count 480] [--seed 13] [--output PATH] [--force]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
from pathlib import Path

INSTRUCTION = (
    "Extract a JSON object from the support ticket with keys category "
    "(billing|technical|account|shipping|feedback), priority (low|medium|high|urgent), "
    "sentiment (negative|neutral|positive), product and order_id (null if absent)."
)
CATEGORIES = ["billing", "technical", "account", "shipping", "feedback"]
PRODUCTS = ["CloudSync", "PayFlow", "SmartHub", "TaskPilot", "PhotoVault", "MailBridge", "DataDash", "SecureKey"]
PRODUCT_SHARE = 0.7  # share of tickets that name a product
ORDER_ID_SHARE = {"billing": 0.75, "shipping": 0.8, "technical": 0.25, "account": 0.15, "feedback": 0.05}  # ~40% overall
TYPO_SHARE = 0.12

# What each category's tickets are about. "{thing}" becomes a product mention or a generic noun.
TOPICS = {
    "billing": [
        "I was charged twice for {thing} this month.", "My invoice for {thing} shows the wrong amount.",
        "I cancelled {thing} but you still billed my card.", "I'd like a refund for {thing}, the charge was a mistake.",
        "There is a charge for {thing} on my statement that I don't recognise.",
        "The renewal price for {thing} is higher than what I signed up for.",
        "My payment for {thing} went through but the invoice still says unpaid.",
        "I was billed for {thing} after my free trial was supposed to end.",
    ],
    "technical": [
        "{thing} crashes every time I open it.", "I keep getting error {code} in {thing}.",
        "{thing} freezes when I try to export a report.", "After the latest update, {thing} won't start.",
        "When I log in to {thing} I get an 'unexpected server error' message.",
        "Sync in {thing} stopped working and shows a red error icon.",
        "{thing} shows a blank white screen after the loading page.",
        "Uploads in {thing} fail halfway with a timeout error ({code}).",
    ],
    "account": [
        "I need to reset the password for {thing}.", "Please change the email address on {thing}.",
        "I'd like to close {thing} permanently.", "I lost my phone and can't get the 2FA codes for {thing}.",
        "The password reset link for {thing} never arrives.", "How do I turn on two-factor authentication for {thing}?",
        "I want to change the username on {thing}.", "Please delete {thing} and all the data in it.",
    ],
    "shipping": [
        "{thing} still hasn't arrived.", "The tracking for {thing} hasn't updated in a week.",
        "{thing} arrived damaged, the box was crushed.", "{thing} was shipped to my old address by mistake.",
        "{thing} came with the wrong item inside.", "The courier says {thing} was delivered but nothing came.",
        "Tracking says {thing} is stuck in customs.", "{thing} was left at the wrong address.",
    ],
}
FEEDBACK_TOPICS = {  # feedback carries its own mood, so its topics are grouped by sentiment
    "positive": [
        "Just wanted to say {thing} is fantastic.", "The latest update to {thing} is great, everything feels faster.",
        "Love {thing}! A dark mode would make it even better.", "{thing} saves me hours every week, thank you!",
        "Great job on {thing}, the new dashboard is lovely.",
    ],
    "neutral": [
        "Suggestion: it would be useful if {thing} could export to CSV.", "Feature request: please add a dark mode to {thing}.",
        "Could {thing} support keyboard shortcuts in a future version?", "It would help if {thing} had a calendar view.",
        "An idea for {thing}: let users pick a default folder.",
    ],
    "negative": [
        "The new layout in {thing} is confusing, please bring back the old one.",
        "{thing} got harder to use after the redesign.", "I don't like the new menus in {thing}, they hide everything.",
        "The recent changes to {thing} made it worse, please reconsider them.",
    ],
}
# How a ticket of each category names the product ("{P}" canonical, "{p}" lower case), or avoids naming one.
PRODUCT_FORMS = {
    "billing": ["my {P} subscription", "the {P} plan", "{P}", "{p} premium", "your {P} service"],
    "technical": ["the {P} app", "{P}", "{p}", "your {P} software", "the {P} desktop client"],
    "account": ["my {P} account", "my {p} login", "my account on {P}", "my {P} profile"],
    "shipping": ["my {P} order", "the {P} I ordered", "my {P} device", "the {P} package"],
    "feedback": ["{P}", "the {P} app", "{p}", "your {P} service"],
}
GENERIC_FORMS = {
    "billing": ["my subscription", "my plan", "your service", "the premium plan"],
    "technical": ["the app", "your software", "the desktop client", "the mobile app"],
    "account": ["my account", "my profile", "my user account"],
    "shipping": ["my package", "my order", "the parcel", "my delivery"],
    "feedback": ["the app", "your product", "the service"],
}
DETAILS = {
    "billing": ["The amount was $49.99 both times.", "I have the bank statement if you need it.",
                "It went on my card ending in 4421.", "Please send me a corrected invoice.",
                "My billing history lists it twice."],
    "technical": ["I'm on Windows 11.", "I already reinstalled it.", "Restarting my phone didn't help.",
                  "It started after yesterday's update.", "Clearing the cache did nothing."],
    "account": ["My old email address no longer works.", "I have a new phone number as well.",
                "I can verify my identity if needed.", "I set it up with my work email.",
                "I already tried the 'forgot password' page."],
    "shipping": ["It was supposed to arrive last Tuesday.", "The tracking page just says 'in transit'.",
                 "I can send photos of the box.", "My neighbours didn't get it either.",
                 "I moved two months ago and updated my address."],
    "feedback": ["I use it every day at work.", "My whole team uses it.", "I've been a customer for three years.",
                 "I tried a few alternatives before this one."],
}
PRIORITY_CUES = {  # "medium" is a plain request, so it may also have no cue at all
    "urgent": ["I need this fixed ASAP.", "Please help right now, my business is down.",
               "We cannot work at all until this is sorted.", "I have a deadline today, please handle this right now.",
               "This is urgent, I need an answer ASAP.", "Our whole team cannot work at all, please respond ASAP."],
    "high": ["I need this fixed soon.", "This is the third time I've had to write about this.",
             "Please sort this out soon, it keeps happening.", "This has happened several times now.",
             "I've asked twice already and nothing changed."],
    "medium": ["Could you take a look?", "Can you help with this?", "Please let me know what to do.",
               "Could someone check this for me?", "What are my options?"],
    "low": ["No rush, whenever you have time.", "Not urgent at all.", "Whenever you have time is fine.",
            "No hurry on this one.", "It's not urgent, just letting you know."],
}
FRUSTRATED_HIGH_CUE = "This is very frustrating and I need it fixed soon."  # high cue for negative tickets only
SENTIMENT_CUES = {  # "neutral" tickets carry no mood sentence
    "negative": ["This is ridiculous.", "I'm really disappointed.", "Honestly, this is terrible service.",
                 "I'm fed up with this.", "Not impressed at all.", "This is unacceptable."],
    "positive": ["I really love your product otherwise!", "You're usually great, thanks!",
                 "Thanks so much, I appreciate your help!", "Big fan of your service, keep it up.",
                 "Your support has always been wonderful.", "Happy customer overall :)"],
}
ORDER_REFERENCES = ["My order number is {order_id}.", "Order ID: {order_id}.", "Order {order_id}.",
                    "The order is {order_id}.", "Reference: {order_id}."]
GREETINGS = ["Hi,", "Hello,", "Hi team,", "Hey,", "Hello support,", "Dear support team,", "Good morning,", "Hi there,"]
CLOSERS = ["Thanks.", "Thank you.", "Regards.", "Cheers.", "Thanks in advance."]
SIGNATURES = ["Maria", "- Tom", "Priya Shah", "J. Becker", "Sam", "-- Alex", "Best, Jordan", "Kind regards, Li Wei"]
RAMBLING_OPENERS = ["Not sure if this is the right place to ask.", "So, long story short, here is what happened.",
                    "I've been meaning to write about this for a while.", "Sorry for the long message.",
                    "I tried the help pages first but found nothing."]


def main() -> None:
    args = parse_args()
    output_path = Path(args.output)
    if output_path.exists() and not args.force:
        sys.exit(f"error: {output_path} already exists; pass --force to overwrite it")
    examples = generate_examples(args.count, args.seed)
    write_jsonl_atomic(output_path, examples)
    print(f"wrote {len(examples)} examples to {output_path}")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=480, help="number of examples (default 480)")
    parser.add_argument("--seed", type=int, default=13, help="random seed; same seed, same file (default 13)")
    parser.add_argument("--output", default="data/raw/tickets.jsonl", help="where to write the JSON Lines file")
    parser.add_argument("--force", action="store_true", help="overwrite the output if it exists")
    return parser.parse_args()


def generate_examples(count: int, seed: int) -> list[dict]:
    """Return `count` examples with unique inputs, categories in equal shares."""
    rng = random.Random(seed)
    categories = [CATEGORIES[i % len(CATEGORIES)] for i in range(count)]
    rng.shuffle(categories)
    examples, seen_inputs = [], set()
    for category in categories:
        for _attempt in range(1000):
            ticket_text, labels = make_ticket(rng, category)
            if ticket_text not in seen_inputs:
                break
        else:
            raise RuntimeError(f"could not make a new unique {category} ticket; lower --count")
        seen_inputs.add(ticket_text)
        examples.append({"instruction": INSTRUCTION, "input": ticket_text,
                         "output": json.dumps(labels), "task": "ticket_triage"})
    return examples


def make_ticket(rng: random.Random, category: str) -> tuple[str, dict]:
    """Draw the labels first, then write a ticket whose wording carries each of them."""
    priority = pick_priority(rng, category)
    sentiment = pick_sentiment(rng, category, priority)
    product = rng.choice(PRODUCTS) if rng.random() < PRODUCT_SHARE else None
    order_id = f"ORD-{rng.randint(100000, 999999)}" if rng.random() < ORDER_ID_SHARE[category] else None
    style = rng.choice(["terse", "polite", "rambling"] + (["angry"] * 2 if sentiment == "negative" else []))

    sentences = [topic_sentence(rng, category, sentiment, product)]
    if order_id:
        sentences.append(rng.choice(ORDER_REFERENCES).format(order_id=order_id))
    if style == "rambling":
        sentences.append(rng.choice(DETAILS[category]))
    elif style in ("polite", "angry") and rng.random() < 0.4:
        sentences.append(rng.choice(DETAILS[category]))

    mood_cue = mood_sentence(rng, category, sentiment)
    if mood_cue and style == "angry":
        mood_cue = mood_cue.rstrip(".!") + "!!"
    if mood_cue and sentiment == "positive" and rng.random() < 0.5:
        sentences.insert(0, mood_cue)
    elif mood_cue:
        sentences.append(mood_cue)
    sentences.append(priority_sentence(rng, priority, sentiment, style))
    if style == "rambling":
        sentences.insert(0, rng.choice(RAMBLING_OPENERS))

    body = " ".join(sentence for sentence in sentences if sentence)
    if style == "terse":
        ticket_text = body
    elif style == "angry":
        ticket_text = body + (f"\n{rng.choice(SIGNATURES)}" if rng.random() < 0.4 else "")
    else:
        greeting = rng.choice(GREETINGS) + "\n" if rng.random() < 0.8 else ""
        closer = " " + rng.choice(CLOSERS) if rng.random() < 0.6 else ""
        signature = "\n" + rng.choice(SIGNATURES) if rng.random() < 0.6 else ""
        ticket_text = greeting + body + closer + signature
    labels = {"category": category, "priority": priority, "sentiment": sentiment,
              "product": product, "order_id": order_id}
    return ticket_text, labels


def pick_priority(rng: random.Random, category: str) -> str:
    if category == "feedback":  # suggestions and praise are rarely pressing
        return rng.choices(["low", "medium", "high"], weights=[60, 30, 10])[0]
    return rng.choices(["urgent", "high", "medium", "low"], weights=[25, 25, 28, 22])[0]


def pick_sentiment(rng: random.Random, category: str, priority: str) -> str:
    if category == "feedback":
        weights = [20, 35, 45]
    elif priority == "low":
        weights = [15, 45, 40]
    else:
        weights = [45, 35, 20]
    return rng.choices(["negative", "neutral", "positive"], weights=weights)[0]


def topic_sentence(rng: random.Random, category: str, sentiment: str, product: str | None) -> str:
    """The sentence that says what the ticket is about, naming the product when there is one."""
    templates = FEEDBACK_TOPICS[sentiment] if category == "feedback" else TOPICS[category]
    template = rng.choice(templates)
    if rng.random() < TYPO_SHARE:
        template = add_typo(rng, template)
    if product:
        thing = rng.choice(PRODUCT_FORMS[category]).format(P=product, p=product.lower())
    else:
        thing = rng.choice(GENERIC_FORMS[category])
    sentence = template.format(thing=thing, code=f"{rng.choice('EX')}{rng.randint(100, 999)}")
    return sentence[0].upper() + sentence[1:]


def mood_sentence(rng: random.Random, category: str, sentiment: str) -> str:
    """A sentence that shows the writer's mood; feedback topics already show it, so it is optional there."""
    if sentiment == "neutral" or (category == "feedback" and rng.random() < 0.5):
        return ""
    return rng.choice(SENTIMENT_CUES[sentiment])


def priority_sentence(rng: random.Random, priority: str, sentiment: str, style: str) -> str:
    if priority == "medium" and (style == "terse" or rng.random() < 0.3):
        return ""
    cues = PRIORITY_CUES[priority]
    if priority == "high" and sentiment == "negative":
        cues = cues + [FRUSTRATED_HIGH_CUE]
    return rng.choice(cues)


def add_typo(rng: random.Random, template: str) -> str:
    """Swap two neighbouring letters inside one longer lower-case word, as fast typists do."""
    words = template.split(" ")
    candidates = [index for index, word in enumerate(words) if word.isalpha() and word.islower() and len(word) >= 5]
    if not candidates:
        return template
    index = rng.choice(candidates)
    word = words[index]
    position = rng.randrange(1, len(word) - 2)
    words[index] = word[:position] + word[position + 1] + word[position] + word[position + 2:]
    return " ".join(words)


def write_jsonl_atomic(path: Path, examples: list[dict]) -> None:
    """Write through a temp file beside `path`, so a crash never leaves half a dataset."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temp_path = path.with_name(f".{path.name}.tmp")
    with temp_path.open("w", encoding="utf-8", newline="\n") as out:
        for example in examples:
            out.write(json.dumps(example) + "\n")
    os.replace(temp_path, path)


if __name__ == "__main__":
    main()
