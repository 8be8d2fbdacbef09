"""Checks that must pass before any training: each error names ``file:line``.

Parsing errors (bad JSON, missing fields, unknown roles, ...) come from
``tunelab.data.formats``; this module adds the checks that need the tokenizer,
run through the same ``encoding.encode`` the trainer uses.

An example whose prompt leaves no answer token within train.max_length is untrainable.
The prepare stage sets such examples aside (analysis.analyze's ``untrainable``), so no split holds one;
this module judges them (``untrainable``, validate.untrainable): ``fail`` makes each an
error, ``drop`` names each in a warning and leaves it out of training, unless more than
validate.max_dropped_ratio of the examples are, when each is an error again.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from tunelab.chat import reasoning
from tunelab.data import encoding, prepare


@dataclass
class ValidationResult:
    checked: int = 0
    truncated: int = 0
    windows: int = 0         # training rows of the text examples (long ones are cut into several)
    dropped: list[str] = field(default_factory=list)  # sources of the untrainable examples left out
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    preview: str = ""

    @property
    def ok(self) -> bool:
        return not self.errors

    @property
    def kept(self) -> int:
        """Examples checked and left in training (the untrainable ones dropped are not)."""
        return self.checked - len(self.dropped)

    def summary(self) -> dict:
        return {"examples_checked": self.checked, "errors": len(self.errors),
                "error_messages": self.errors[:50], "warnings": self.warnings,
                "truncated": self.truncated, "text_windows": self.windows,
                "dropped_untrainable": len(self.dropped),
                "dropped_untrainable_examples": self.dropped}


def check_examples(examples: list[dict], tokenizer, max_length: int,
                   max_truncated_ratio: float = 0.05,
                   train_on: str = "all_assistant", text_stride: int = 0, *,
                   untrainable: str = "fail", max_dropped_ratio: float = 0.05) -> ValidationResult:
    result = ValidationResult()
    cannot_train: list[tuple[str, str]] = []  # (source, reason) per untrainable example
    if any("messages" in e for e in examples) and not tokenizer.chat_template:
        result.errors.append(encoding.NO_TEMPLATE)
        return result
    complaint = reasoning.unsupported(tokenizer, examples, keep=True)
    if complaint:
        first = next(e for e in examples if reasoning.has_reasoning(e))
        result.errors.append(f"{first.get('source', '?')}: {complaint}")
        return result
    eos = tokenizer.eos_token
    prefix_mismatches, preview_turns = 0, 0
    for example in examples:
        rows = encoding.windows(tokenizer, example, max_length, train_on, text_stride)
        encoded = rows[0]
        result.windows += len(rows) if "text" in example else 0
        source = example.get("source", "?")
        result.checked += 1
        prefix_mismatches += not encoded.prefix_ok
        if not rows[-1].ends_with_eos:  # a long text's EOS is in its last window
            result.errors.append(f"{source}: the chat template loses the EOS token {eos!r} after the "
                                 "answer (and writes no end-of-turn token), so the model would "
                                 "never learn to stop")
        elif encoded.cut_to_no_answer:  # judged below, by their share
            cannot_train.append((source, f"{source}: the prompt alone is {encoded.prompt_tokens} "
                                 "tokens, so no answer token survives train.max_length="
                                 f"{max_length}"))
            continue  # counted as untrainable, not as truncated
        result.truncated += encoded.truncated
        # The preview shows the first example with the most trained turns: a multi-turn
        # file's preview then shows loss on every assistant turn, not a one-turn example.
        if encoded.loss_tokens and encoded.trained_turns > preview_turns:
            result.preview = encoding.render_loss_preview(tokenizer, encoded)
            preview_turns = encoded.trained_turns
    if result.truncated:
        share = result.truncated / max(result.checked, 1)
        message = (f"{result.truncated} of {result.checked} examples ({share:.0%}) are cut at "
                   f"train.max_length={max_length}; their answers lose their ends")
        if share > max_truncated_ratio:
            message += f" (more than validate.max_truncated_ratio={max_truncated_ratio:g})"
        result.warnings.append(message)
    if prefix_mismatches:
        result.warnings.append(f"{prefix_mismatches} examples: the chat template renders the prompt "
                               "differently inside the full conversation; training and inference "
                               "contexts differ slightly")
    _judge_untrainable(result, cannot_train, untrainable, max_dropped_ratio)
    return result


def _judge_untrainable(result: ValidationResult, untrainable_examples: list[tuple[str, str]],
                       untrainable: str, max_dropped_ratio: float) -> None:
    """validate.untrainable's verdict on the examples no answer token of which survives
    (``(source, reason)`` each): left out with a warning each, or each an error. Dropping
    more than validate.max_dropped_ratio of the data fails too: then train.max_length, not
    a few odd records, is what is wrong."""
    if not untrainable_examples:
        return
    share = len(untrainable_examples) / max(result.checked, 1)
    if untrainable == "drop" and share <= max_dropped_ratio:
        result.dropped = [source for source, _ in untrainable_examples]
        result.warnings += [f"{reason}; left out of training (validate.untrainable=drop)"
                            for _, reason in untrainable_examples]
        return
    if untrainable == "drop":
        result.warnings.append(
            f"{len(untrainable_examples)} of {result.checked} examples ({share:.1%}) leave no "
            f"answer token within train.max_length, more than validate.max_dropped_ratio="
            f"{max_dropped_ratio:g} to leave out of training: each is an error")
    result.errors += [f"{reason} (raise train.max_length or shorten it)"
                      for _, reason in untrainable_examples]


def validate_files(paths, tokenizer, max_length: int, fmt: str = "auto",
                   max_truncated_ratio: float = 0.05, train_on: str = "all_assistant",
                   text_split: str = "file", text_stride: int = 0,
                   mapping_for=None, *, untrainable: str = "fail",
                   max_dropped_ratio: float = 0.05) -> ValidationResult:
    """All checks on arbitrary files: parsing first, then tokenizer checks."""
    loaded = prepare.load_files(paths, fmt, text_split=text_split, mapping_for=mapping_for)
    result = check_examples(loaded.examples, tokenizer, max_length, max_truncated_ratio, train_on,
                            text_stride, untrainable=untrainable,
                            max_dropped_ratio=max_dropped_ratio)
    result.errors = loaded.errors + result.errors
    return result
