"""Generate the shipped sample dataset: customer support tickets -> triage JSON.

Writes data/raw/tickets.jsonl, one alpaca-style example per line:
  {"instruction": ..., "input": <ticket text>, "output": <JSON string>, "task": "ticket_triage",
   "template": "billing/3"}
where the output is {"category", "priority", "sentiment", "product", "order_id"} and
`template` names the topic sentence the ticket was written around ("billing/3",
"feedback/positive/2"): prepare.group_by splits by it, so a topic phrasing is never on
both sides of the train/test line.

The task is chosen so the tiny base model (SmolLM2-135M-Instruct) is visibly weak
at it and a few hundred CPU LoRA steps make it strong. Every label is recoverable
from the text: topic phrases give the category, cue phrases such as "ASAP" or "no
rush" the priority, mood sentences the sentiment; the product is named (in any casing:
the label is its canonical name) and the order or reference id is written exactly as
the label holds it. The wording varies around those cues so that a model has to read
rather than match: 120 topic templates, 40 products (one to three words), 12 id formats
placed in five spots, six tones from one-liners to several paragraphs, subject lines,
greetings and signatures, the odd typo, and tickets without a product or an id.
Standard library only; the same seed gives a byte-identical file.

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
SOFTWARE = ["CloudSync", "PayFlow", "SmartHub", "TaskPilot", "PhotoVault", "MailBridge", "DataDash",
            "SecureKey", "Acme Cloud Backup", "Zen Notes Pro", "LedgerLite", "Orbit CRM", "Pixel Studio",
            "Harbor VPN", "BudgetBee", "Kite Mail", "Swift Invoice", "Cobalt Password Manager",
            "Mosaic Photo Editor", "Quill Writer", "Summit Payroll", "Tandem Calendar", "NoteNest",
            "TimeKeeper Plus", "Atlas Maps"]
DEVICES = ["HomeCam 360", "FitTrack Band", "SoundWave Buds", "Vista Router X2", "Echo Speaker Mini",
           "StreamBox 4K", "Lumen Desk Lamp", "Polar Thermostat", "TrailBlazer GPS", "Nova Smartwatch",
           "Beacon Doorbell", "RapidScan S1", "AquaPure Filter", "PowerCell 20K", "Glide Mouse"]
PRODUCTS = SOFTWARE + DEVICES  # shipping tickets name devices only: software is not posted
PRODUCT_SHARE = 0.7  # share of tickets that name a product
# ~40% overall
ORDER_ID_SHARE = {"billing": 0.75, "shipping": 0.8, "technical": 0.25, "account": 0.15, "feedback": 0.05}
TYPO_SHARE = 0.12
ID_ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"  # no I/O/0/1, as printed codes avoid them

# What each category's tickets are about. "{thing}" becomes a product mention or a generic noun.
# A ticket's `template` is its category and the index here: keep the order when adding.
TOPICS = {
    "billing": ["I was charged twice for {thing} this month.", "My invoice for {thing} shows the wrong amount.",
                "I cancelled {thing} but you still billed my card.",
                "I'd like a refund for {thing}, the charge was a mistake.",
                "There is a charge for {thing} on my statement that I don't recognise.",
                "The renewal price for {thing} is higher than what I signed up for.",
                "My payment for {thing} went through but the invoice still says unpaid.",
                "I was billed for {thing} after my free trial was supposed to end.",
                "Why did the price of {thing} go up without any notice?",
                "The discount code for {thing} wasn't applied at checkout.",
                "You took money for {thing} twice and I only have one licence.",
                "Can I get a VAT receipt for {thing}?",
                "My card was declined when paying for {thing}, but the bank says it's fine.",
                "I got charged the yearly price for {thing} instead of the monthly one.",
                "I'm still waiting on the refund you promised for {thing}.",
                "Please switch {thing} to invoice billing instead of credit card.",
                "Your system charged me for three seats of {thing} but we only have two users.",
                "The receipt for {thing} is missing our company name and address.",
                "I paid for {thing} by bank transfer and the money left my account, but it shows as unpaid.",
                "Is it possible to pause {thing} instead of paying while I'm away?",
                "An automatic payment for {thing} was taken from the wrong card.",
                "I upgraded {thing} mid-month and got charged the full price on top.",
                "Could you explain the extra fee on my last bill for {thing}?",
                "The currency on my invoice for {thing} is wrong, I should be billed in euros."],
    "technical": ["{thing} crashes every time I open it.", "I keep getting error {code} in {thing}.",
                  "{thing} freezes when I try to export a report.", "After the latest update, {thing} won't start.",
                  "When I log in to {thing} I get an 'unexpected server error' message.",
                  "Sync in {thing} stopped working and shows a red error icon.",
                  "{thing} shows a blank white screen after the loading page.",
                  "Uploads in {thing} fail halfway with a timeout error ({code}).",
                  "{thing} won't connect to the wifi anymore.", "Notifications from {thing} stopped coming through.",
                  "{thing} drains the battery within a couple of hours.",
                  "The search in {thing} returns nothing, even for files I can see.",
                  "{thing} keeps logging me out every few minutes.",
                  "Since the firmware update {thing} reboots on its own.",
                  "{thing} is extremely slow, every page takes a minute to load.",
                  "Printing from {thing} gives me garbled pages.",
                  "Error {code} pops up whenever I save a file in {thing}.",
                  "{thing} doesn't pair with my phone over Bluetooth.",
                  "The screen on {thing} flickers and then goes black.",
                  "Two-way sync in {thing} creates duplicate copies of every file.",
                  "I can't install {thing}, the installer stops at 90%.",
                  "{thing} shows the wrong time even after a reset.",
                  "Since this morning {thing} refuses to open any attachments.",
                  "The camera feed in {thing} lags by several seconds."],
    "account": ["I need to reset the password for {thing}.", "Please change the email address on {thing}.",
                "I'd like to close {thing} permanently.", "I lost my phone and can't get the 2FA codes for {thing}.",
                "The password reset link for {thing} never arrives.",
                "How do I turn on two-factor authentication for {thing}?", "I want to change the username on {thing}.",
                "Please delete {thing} and all the data in it.", "{thing} got locked after too many login attempts.",
                "Can you merge {thing} with the one I made with my work email?",
                "I think someone else has been using {thing}, there are logins I don't recognise.",
                "Please add my colleague as an admin on {thing}.",
                "I can't verify the email on {thing}, the code is always rejected.",
                "How do I transfer {thing} to a new owner?",
                "I'd like to download a copy of all my data from {thing}.",
                "The name on {thing} is misspelled and I can't edit it.",
                "I never signed up for {thing} but I keep getting emails asking me to confirm it.",
                "Please update the phone number linked to {thing}.",
                "The security questions for {thing} were reset and I don't know the answers.",
                "I'd like to switch {thing} from a personal to a business profile.",
                "The login page says {thing} isn't registered, but it is.",
                "Can two people share {thing}, or does each of us need our own login?",
                "Please stop sending marketing emails to {thing}.",
                "I was signed out of {thing} and now it asks for a recovery code I never got."],
    "shipping": ["{thing} still hasn't arrived.", "The tracking for {thing} hasn't updated in a week.",
                 "{thing} arrived damaged, the box was crushed.", "{thing} was shipped to my old address by mistake.",
                 "{thing} came with the wrong item inside.",
                 "The courier says {thing} was delivered but nothing came.",
                 "Tracking says {thing} is stuck in customs.", "{thing} was left at the wrong address.",
                 "Only half of {thing} came, the second box is missing.",
                 "Can I change the delivery address for {thing}? It hasn't shipped yet.",
                 "{thing} was returned to the sender and I don't know why.",
                 "I want to send {thing} back, how do I get a return label?",
                 "The delivery date for {thing} keeps getting pushed back.",
                 "{thing} arrived without the charger and the manual.", "{thing} came twice but I only ordered one.",
                 "Nobody was home and the courier took {thing} back to the depot.",
                 "{thing} has been sitting at the local post office for days.",
                 "The driver left {thing} outside in the rain and it's soaked.",
                 "I'd like to cancel {thing} before it ships.", "The label on {thing} has the wrong postcode.",
                 "{thing} arrived opened, someone had taken the cable out.",
                 "Can you ship {thing} to a pickup point instead of my home?",
                 "The tracking number you gave me for {thing} doesn't work on the courier's site.",
                 "{thing} was marked as delivered to a neighbour I've never heard of."],
}
FEEDBACK_TOPICS = {  # feedback carries its own mood, so its topics are grouped by sentiment
    "positive": ["Just wanted to say {thing} is fantastic.",
                 "The latest update to {thing} is great, everything feels faster.",
                 "Love {thing}! A dark mode would make it even better.",
                 "{thing} saves me hours every week, thank you!", "Great job on {thing}, the new dashboard is lovely.",
                 "{thing} is the best purchase I made this year.", "Kudos to whoever designed {thing}, it just works.",
                 "Switching to {thing} was the best decision our team made."],
    "neutral": ["Suggestion: it would be useful if {thing} could export to CSV.",
                "Feature request: please add a dark mode to {thing}.",
                "Could {thing} support keyboard shortcuts in a future version?",
                "It would help if {thing} had a calendar view.",
                "An idea for {thing}: let users pick a default folder.", "Is there a plan to bring {thing} to Linux?",
                "Some feedback on {thing}: the settings page could be grouped better.",
                "Would you consider adding a shared folder option to {thing}?"],
    "negative": ["The new layout in {thing} is confusing, please bring back the old one.",
                 "{thing} got harder to use after the redesign.",
                 "I don't like the new menus in {thing}, they hide everything.",
                 "The recent changes to {thing} made it worse, please reconsider them.",
                 "{thing} used to be simple, now it's cluttered with features nobody asked for.",
                 "The ads you added to {thing} are really annoying.",
                 "{thing} feels like a step backwards since the last version.",
                 "The onboarding in {thing} is far too long and pushy."],
}
# How a ticket of each category names the product ("{P}" canonical, "{p}" lower case, "{U}"
# upper case), or avoids naming one.
PRODUCT_FORMS = {
    "billing": ["my {P} subscription", "the {P} plan", "{P}", "{p} premium", "your {P} service", "my {U} licence"],
    "technical": ["the {P} app", "{P}", "{p}", "your {P} software", "the {P} desktop client", "my {P}", "{U}"],
    "account": ["my {P} account", "my {p} login", "my account on {P}", "my {P} profile", "my {U} account"],
    "shipping": ["my {P} order", "the {P} I ordered", "my {P}", "the {P} package", "my new {p}", "the {U}"],
    "feedback": ["{P}", "the {P} app", "{p}", "your {P} service", "the new {P}"],
}
GENERIC_FORMS = {
    "billing": ["my subscription", "my plan", "your service", "the premium plan", "my licence"],
    "technical": ["the app", "your software", "the desktop client", "the mobile app", "the device"],
    "account": ["my account", "my profile", "my user account", "my login"],
    "shipping": ["my package", "my order", "the parcel", "my delivery", "the device I ordered"],
    "feedback": ["the app", "your product", "the service", "the new version"],
}
DETAILS = {
    "billing": ["The amount was $49.99 both times.", "I have the bank statement if you need it.",
                "It went on my card ending in 4421.", "Please send me a corrected invoice.",
                "My billing history lists it twice.", "I only use the free features anyway.",
                "My accountant needs this sorted before the end of the quarter.",
                "The total was 120 euros instead of 60."],
    "technical": ["I'm on Windows 11.", "I already reinstalled it.", "Restarting my phone didn't help.",
                  "It started after yesterday's update.", "Clearing the cache did nothing.",
                  "I'm using the latest version on a Mac.", "My colleague has the same problem on Android.",
                  "It worked fine until last week."],
    "account": ["My old email address no longer works.", "I have a new phone number as well.",
                "I can verify my identity if needed.", "I set it up with my work email.",
                "I already tried the 'forgot password' page.", "I've had this account for six years.",
                "I changed jobs, so the old address is gone."],
    "shipping": ["It was supposed to arrive last Tuesday.", "The tracking page just says 'in transit'.",
                 "I can send photos of the box.", "My neighbours didn't get it either.",
                 "I moved two months ago and updated my address.", "It was meant to be a birthday present.",
                 "I paid for express delivery."],
    "feedback": ["I use it every day at work.", "My whole team uses it.", "I've been a customer for three years.",
                 "I tried a few alternatives before this one.", "I mostly use it on my tablet."],
}
SUBJECTS = {  # email subject lines; they say what the ticket is about, as real ones do
    "billing": ["Billing question", "Wrong charge", "Refund request", "Problem with my invoice", "Payment issue"],
    "technical": ["App not working", "Bug report", "Error message", "Technical problem", "It keeps crashing"],
    "account": ["Account help", "Login problem", "Account change", "Access to my account"],
    "shipping": ["Where is my order?", "Delivery problem", "Damaged parcel", "Shipping question"],
    "feedback": ["Feedback", "A suggestion", "Some thoughts", "About the latest version"],
}
PRIORITY_CUES = {  # "medium" is a plain request, so it may also have no cue at all
    "urgent": ["I need this fixed ASAP.", "Please help right now, my business is down.",
               "We cannot work at all until this is sorted.", "I have a deadline today, please handle this right now.",
               "This is urgent, I need an answer ASAP.", "Our whole team cannot work at all, please respond ASAP.",
               "Please look at this immediately, it's an emergency.",
               "We're losing customers every hour this goes on, please act now."],
    "high": ["I need this fixed soon.", "This is the third time I've had to write about this.",
             "Please sort this out soon, it keeps happening.", "This has happened several times now.",
             "I've asked twice already and nothing changed.", "I've been waiting over a week for an answer.",
             "Please prioritise this, it's getting in the way of my work."],
    "medium": ["Could you take a look?", "Can you help with this?", "Please let me know what to do.",
               "Could someone check this for me?", "What are my options?", "Any idea what's going on?",
               "Is there a fix for this?"],
    "low": ["No rush, whenever you have time.", "Not urgent at all.", "Whenever you have time is fine.",
            "No hurry on this one.", "It's not urgent, just letting you know.", "Low priority, just flagging it.",
            "Take your time with this one."],
}
URGENT_PREFIXES = ["URGENT: ", "Urgent - ", "EMERGENCY: "]  # an urgent ticket may say it up front instead
FRUSTRATED_HIGH_CUE = "This is very frustrating and I need it fixed soon."  # high cue for negative tickets only
SENTIMENT_CUES = {  # "neutral" tickets carry no mood sentence
    "negative": ["This is ridiculous.", "I'm really disappointed.", "Honestly, this is terrible service.",
                 "I'm fed up with this.", "Not impressed at all.", "This is unacceptable.",
                 "Worst experience I've had with any company.", "I'm losing my patience with you.",
                 "I'm very unhappy about this."],
    "positive": ["I really love your product otherwise!", "You're usually great, thanks!",
                 "Thanks so much, I appreciate your help!", "Big fan of your service, keep it up.",
                 "Your support has always been wonderful.", "Happy customer overall :)",
                 "You guys are awesome, by the way.", "Keep up the great work :)"],
}
# Order and reference ids: (the noun a ticket calls it, its shape). In a shape "9" is a digit,
# "a" a letter or digit of ID_ALPHABET (the id gets at least one of each), "l" a letter, "y" a
# year, "m" a month; the rest is literal. The label is the id exactly as written.
ID_FORMATS = [("order", "ORD-999999"), ("invoice", "INV-y-9999"), ("order", "#99999"),
              ("order", "aaaa-aaaa"), ("order", "y/m/9999"), ("purchase order", "PO 99-9999"),
              ("order", "SO9999999"), ("return", "RMA-99999"), ("booking", "lll999999"),
              ("order", "999-9999999-9999999"), ("order", "W999999999"), ("reference", "REF 9999 9999")]
ID_CATEGORIES = {"invoice": ("billing",), "return": ("shipping",)}  # ids that only some tickets cite
ID_PLACES = ["after", "before", "inline", "subject", "signature"]  # where the id goes
ID_PLACE_WEIGHTS = [45, 15, 15, 15, 10]
REFERENCES = ["My {noun} number is {id}.", "{Noun} {id}.", "{Noun} no. {id}", "{Noun}: {id}.",
              "It's about {noun} {id}.", "The {noun} is {id}.", "Reference: {id}.", "({noun} {id})"]
LEADING_REFERENCES = ["Re: {noun} {id}.", "About {noun} {id}:", "{Noun} {id} -", "Regarding {noun} {id}."]
TONES = ["terse", "polite", "rambling", "casual", "formal"]  # and "angry", for negative tickets only
GREETINGS = ["Hi,", "Hello,", "Hi team,", "Hey,", "Hello support,", "Dear support team,", "Good morning,", "Hi there,"]
CASUAL_GREETINGS = ["hey", "hi guys", "yo", "hey there", "hiya"]
FORMAL_GREETINGS = ["Dear Sir or Madam,", "To whom it may concern,", "Dear Customer Service,"]
FORMAL_OPENERS = ["I am writing regarding the following matter.",
                  "I would like to bring the following to your attention.",
                  "Please allow me to describe an issue."]
FORMAL_CLOSERS = ["I look forward to your reply.", "Thank you in advance for your assistance.",
                  "I would appreciate a written response."]
CLOSERS = ["Thanks.", "Thank you.", "Regards.", "Cheers.", "Thanks in advance."]
CASUAL_CLOSERS = ["thx", "ty", "cheers", "thanks!!"]
CASUAL_WORDS = {" you ": " u ", "please": "pls", "thanks": "thx", " are ": " r ", "because": "cuz"}
SIGNATURES = ["Maria", "- Tom", "Priya Shah", "J. Becker", "Sam", "-- Alex", "Best, Jordan", "Kind regards, Li Wei",
              "Yours faithfully,\nDr. A. Novak", "Sent from my phone", "Carlos M.\nOps lead"]
RAMBLING_OPENERS = ["Not sure if this is the right place to ask.", "So, long story short, here is what happened.",
                    "I've been meaning to write about this for a while.", "Sorry for the long message.",
                    "I tried the help pages first but found nothing.", "Bit of a strange one, bear with me."]
ID_MARK = "\0"  # stands for the id until the text is final, so no tone change can alter it


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
            ticket_text, labels, template = make_ticket(rng, category)
            if ticket_text not in seen_inputs:
                break
        else:
            raise RuntimeError(f"could not make a new unique {category} ticket; lower --count")
        seen_inputs.add(ticket_text)
        examples.append({"instruction": INSTRUCTION, "input": ticket_text,
                         "output": json.dumps(labels), "task": "ticket_triage", "template": template})
    return examples


def make_ticket(rng: random.Random, category: str) -> tuple[str, dict, str]:
    """Draw the labels first, then write a ticket whose wording carries each of them;
    returns (text, labels, template)."""
    priority = pick_priority(rng, category)
    sentiment = pick_sentiment(rng, category, priority)
    named = rng.random() < PRODUCT_SHARE
    product = rng.choice(DEVICES if category == "shipping" else PRODUCTS) if named else None
    id_formats = [f for f in ID_FORMATS if category in ID_CATEGORIES.get(f[0], CATEGORIES)]
    id_format = rng.choice(id_formats) if rng.random() < ORDER_ID_SHARE[category] else None
    order_id = make_id(rng, id_format[1]) if id_format else None
    tone = rng.choice(TONES + (["angry"] * 2 if sentiment == "negative" else []))
    place = rng.choices(ID_PLACES, weights=ID_PLACE_WEIGHTS)[0] if id_format else None
    if (place == "subject" and tone not in ("polite", "rambling", "formal")) or \
            (place == "signature" and tone == "terse"):
        place = "after"  # these tones write no subject line (or no signature)
    noun = id_format[0] if id_format else ""

    inline = f" ({noun} {ID_MARK})" if place == "inline" else ""
    template, topic = topic_sentence(rng, category, sentiment, product, inline)
    sentences = [topic]
    if place == "after":
        sentences.append(reference(rng, REFERENCES, noun))
    elif place == "before":
        sentences.insert(0, reference(rng, LEADING_REFERENCES, noun))
    detail_count = {"terse": 0, "casual": 0, "rambling": rng.randint(1, 3)}.get(tone, int(rng.random() < 0.4))
    sentences += rng.sample(DETAILS[category], detail_count)

    mood_cue = mood_sentence(rng, category, sentiment)
    if mood_cue and tone == "angry":
        mood_cue = mood_cue.upper() if rng.random() < 0.3 else mood_cue.rstrip(".!") + "!!"
    if mood_cue and sentiment == "positive" and rng.random() < 0.5:
        sentences.insert(0, mood_cue)
    elif mood_cue:
        sentences.append(mood_cue)
    cue = priority_sentence(rng, priority, sentiment, tone)
    if priority == "urgent" and rng.random() < 0.25:
        sentences[0] = rng.choice(URGENT_PREFIXES) + sentences[0]
    elif cue and rng.random() < 0.2:
        sentences.insert(0, cue)  # some writers lead with how pressing it is
    elif cue:
        sentences.append(cue)
    if tone == "rambling":
        sentences.insert(0, rng.choice(RAMBLING_OPENERS))

    ticket_text = frame(rng, tone, category, sentences, place, noun)
    labels = {"category": category, "priority": priority, "sentiment": sentiment,
              "product": product, "order_id": order_id}
    return ticket_text.replace(ID_MARK, order_id or ""), labels, template


def frame(rng: random.Random, tone: str, category: str, sentences: list[str], place: str | None,
          noun: str) -> str:
    """The ticket around its sentences: greeting, subject line, sign-off, as the tone writes them."""
    if tone == "rambling" and len(sentences) > 4:  # long messages come in paragraphs
        cut = rng.randint(2, len(sentences) - 2)
        body = " ".join(sentences[:cut]) + "\n\n" + " ".join(sentences[cut:])
    else:
        body = " ".join(sentences)
    signature = rng.choice(SIGNATURES)
    signed_id = f"\n{noun.capitalize()} {ID_MARK}" if place == "signature" else ""
    if tone == "terse":
        return body
    if tone == "casual":
        text = (rng.choice(CASUAL_GREETINGS) + " " if rng.random() < 0.7 else "") + body
        text = " " + text.lower() + (" " + rng.choice(CASUAL_CLOSERS) if rng.random() < 0.5 else "") + " "
        for word, slang in CASUAL_WORDS.items():
            text = text.replace(word, slang)
        return text.strip() + (signed_id and f"\n{signature}{signed_id}")
    if tone == "angry":
        signed = rng.random() < 0.4 or bool(signed_id)
        return body + (f"\n{signature}{signed_id}" if signed else "")
    if tone == "formal":
        text = (f"{rng.choice(FORMAL_GREETINGS)}\n\n{rng.choice(FORMAL_OPENERS)} {body}\n\n"
                f"{rng.choice(FORMAL_CLOSERS)}\n\n{signature}{signed_id}")
    else:  # polite, rambling
        greeting = rng.choice(GREETINGS) + "\n" if rng.random() < 0.8 else ""
        closer = " " + rng.choice(CLOSERS) if rng.random() < 0.6 else ""
        signed = rng.random() < 0.6 or bool(signed_id)
        text = greeting + body + closer + (f"\n{signature}{signed_id}" if signed else "")
    if place == "subject" or rng.random() < 0.3:
        subject = rng.choice(SUBJECTS[category]) + (f" ({noun} {ID_MARK})" if place == "subject" else "")
        text = f"Subject: {subject}\n\n{text}"
    return text


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


def make_id(rng: random.Random, shape: str) -> str:
    """An id of `shape` (see ID_FORMATS); the alphanumeric shapes mix letters and digits."""
    letters = "".join(c for c in ID_ALPHABET if c.isalpha())
    while True:
        made = "".join(rng.choice("0123456789") if c == "9" else rng.choice(ID_ALPHABET) if c == "a"
                       else rng.choice(letters) if c == "l" else c for c in shape)
        if "a" not in shape or (any(c.isdigit() for c in made) and any(c.isalpha() for c in made)):
            break
    return made.replace("y", str(rng.randint(2021, 2025)), 1).replace("m", f"{rng.randint(1, 12):02d}", 1)


def reference(rng: random.Random, forms: list[str], noun: str) -> str:
    return rng.choice(forms).format(noun=noun, Noun=noun.capitalize(), id=ID_MARK)


def topic_sentence(rng: random.Random, category: str, sentiment: str, product: str | None,
                   inline: str) -> tuple[str, str]:
    """(template, sentence): what the ticket is about, naming the product when there is one;
    `inline` (an id in brackets) follows the product or the noun that stands for it."""
    if category == "feedback":
        templates, group = FEEDBACK_TOPICS[sentiment], f"feedback/{sentiment}"
    else:
        templates, group = TOPICS[category], category
    index = rng.randrange(len(templates))
    template = templates[index]
    if rng.random() < TYPO_SHARE:
        template = add_typo(rng, template)
    if product:
        thing = rng.choice(PRODUCT_FORMS[category]).format(P=product, p=product.lower(), U=product.upper())
    else:
        thing = rng.choice(GENERIC_FORMS[category])
    sentence = template.format(thing=thing + inline, code=f"{rng.choice('EX')}{rng.randint(100, 999)}")
    return f"{group}/{index}", sentence[0].upper() + sentence[1:]


def mood_sentence(rng: random.Random, category: str, sentiment: str) -> str:
    """A sentence that shows the writer's mood; feedback topics already show it, so it is optional there."""
    if sentiment == "neutral" or (category == "feedback" and rng.random() < 0.5):
        return ""
    return rng.choice(SENTIMENT_CUES[sentiment])


def priority_sentence(rng: random.Random, priority: str, sentiment: str, tone: str) -> str:
    if priority == "medium" and (tone in ("terse", "casual") or rng.random() < 0.3):
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
