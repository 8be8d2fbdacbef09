"""Names and dotted keys: the did-you-mean hint and the quoting of user strings that every
one-line error uses, and the dotted-key view of nested mappings (``tuned.task_accuracy``
for ``{"tuned": {"task_accuracy": ...}}``) that metrics files, params and reports share."""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping


def did_you_mean(word: str, options: Iterable[str], prefix: str = "") -> str:
    """`` (did you mean 'x'?)`` for the closest of ``options``, or "" when none is close.
    ``prefix`` goes before the suggestion: the part of a dotted name (``train.``) that
    ``word`` and ``options`` leave out."""
    close = difflib.get_close_matches(str(word), [str(option) for option in options], n=1)
    return f" (did you mean '{prefix}{close[0]}'?)" if close else ""


def shown(text: str, limit: int = 40) -> str:
    """A user's string quoted for a message, cut short: errors stay one readable line."""
    if len(text) <= limit:
        return repr(text)
    return repr(text[:limit]) + f"... ({len(text)} characters)"


def shown_keys(record: Mapping, limit: int = 10) -> str:
    """A record's first ``limit`` keys quoted (``shown``) for a message, with how many more
    it has after them; "none" for an empty record."""
    keys = ", ".join(shown(key) for key in list(record)[:limit]) or "none"
    if len(record) > limit:
        keys += f" and {len(record) - limit} more"
    return keys


def type_name(value) -> str:
    """The JSON-ish name of a value's type for a message: ``null`` for None."""
    return "null" if value is None else type(value).__name__


def lookup(tree, dotted: str):
    """The value at a dotted key, or None when any part is missing."""
    for part in dotted.split("."):
        if not isinstance(tree, Mapping) or part not in tree:
            return None
        tree = tree[part]
    return tree


def flatten(tree: Mapping, prefix: str = "") -> dict[str, object]:
    """Every leaf of a nested mapping under its dotted key, in order. A non-empty mapping
    is opened; anything else (a number, a list, an empty mapping) is a leaf."""
    flat: dict[str, object] = {}
    for key, value in tree.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            flat.update(flatten(value, f"{dotted}."))
        else:
            flat[dotted] = value
    return flat
