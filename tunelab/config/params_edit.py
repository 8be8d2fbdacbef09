"""params.yaml edited in place: values changed, every comment and blank line kept.

params.yaml is the user's manual (a comment per knob), so a command that sets values in it
(`tunelab import-config`) never rewrites it from a dict. ``load`` reads it with ruamel.yaml's
round trip, which keeps the comments, the key order and the text of every value nothing
sets; ``set_value`` changes one dotted key; ``text`` writes numbers and nulls the way the
file does (``1.0e-4``, ``null``) and lists in one line (``[q_proj, v_proj]``), so each
change stays on its key's line beside its comment. ``text(load(path))`` is the file byte for
byte (a test checks it on the repo's params.yaml).
"""

from __future__ import annotations

import io
from pathlib import Path

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq

from tunelab.config import params

MISSING = object()  # value_at's answer for a key the file does not have


def load(path: str | Path) -> CommentedMap:
    """The file as an editable document; a missing file or bad YAML is params' one line."""
    params.read_file(path)  # the one-line errors validate-config gives
    return _yaml().load(Path(path).read_text(encoding="utf-8"))


def value_at(document: CommentedMap, key: str):
    """The value at dotted ``key`` (``train.lora.r``), or MISSING."""
    node = document
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return MISSING
        node = node[part]
    return node


def set_value(document: CommentedMap, key: str, value) -> None:
    """Set dotted ``key``; a section or key the file lacks is added at its section's end."""
    *parents, last = key.split(".")
    node = document
    for part in parents:
        if not isinstance(node.get(part), dict):
            node[part] = CommentedMap()
        node = node[part]
    node[last] = one_line(value) if isinstance(value, list) else value


def one_line(values: list) -> CommentedSeq:
    """A list written in one line, [q_proj, v_proj], as params.yaml writes lists."""
    written = CommentedSeq(values)
    written.fa.set_flow_style()
    return written


def text(document: CommentedMap) -> str:
    out = io.StringIO()
    _yaml().dump(document, out)
    return out.getvalue()


def _yaml() -> YAML:
    yaml = YAML()  # round trip
    yaml.width = 4096  # never fold a long value onto a second line
    yaml.preserve_quotes = True
    yaml.representer.add_representer(type(None), _null)
    yaml.representer.add_representer(float, _float)
    return yaml


def _null(representer, _value):
    return representer.represent_scalar("tag:yaml.org,2002:null", "null")


def _float(representer, value: float):
    """``2.0e-4`` as params.yaml writes small rates (with the dot and signed exponent that
    YAML 1.1 readers, PyYAML among them, need to read a float), else ``0.05``, ``3.0``."""
    written = repr(value)
    if "e" in written or 0 < abs(value) < 0.01:
        mantissa, exponent = f"{value:e}".split("e")
        mantissa = mantissa.rstrip("0")
        written = f"{mantissa}0e{int(exponent):+d}" if mantissa.endswith(".") else \
            f"{mantissa}e{int(exponent):+d}"
    return representer.represent_scalar("tag:yaml.org,2002:float", written)
