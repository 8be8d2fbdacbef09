"""Read user training data (.jsonl, .json array, .csv, .parquet) in any of
FORMATS and normalise each record to tunelab's one example schema:

    {"messages": [{"role": ..., "content": ...}, ...], "task": ..., "source": "path:line"}
    {"text": ..., "task": ..., "source": "path:line"}

Any problem in the data raises ``DataError`` as one line ``path:line: reason``,
so a typo in row 40,000 is found in seconds. "line" is the real file line for
.jsonl, .json and .csv, and the row number (from 1) for .parquet. Files are
only ever read.
"""

from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path
from typing import Any

from tunelab.config import params
from tunelab.errors import DataError

FORMATS = params.CHOICES["prepare.format"]  # the schema's list: what prepare.format accepts
ROLES = ("system", "user", "assistant")
SHAREGPT_ROLES = {"system": "system", "human": "user", "user": "user",
                  "gpt": "assistant", "assistant": "assistant", "bot": "assistant"}
# Auto-detection: the first key present decides; one distinctive key is
# enough, so a half-filled alpaca record gets "missing field 'output'" rather
# than a vague "cannot tell the format".
DETECTED_BY = (("messages", "chat"), ("conversations", "sharegpt"), ("instruction", "alpaca"),
               ("prompt", "prompt_completion"), ("completion", "prompt_completion"), ("text", "text"))


def load_examples(path: str | os.PathLike, fmt: str = "auto") -> list[dict]:
    """Read ``path`` and normalise every record; ``fmt="auto"`` detects per record."""
    return [normalise(record, fmt, f"{path}:{line}") for line, record in read_records(path)]


def read_records(path: str | os.PathLike) -> list[tuple[int, dict]]:
    """Return ``(line, record)`` pairs from a .jsonl, .json, .csv or .parquet file."""
    suffix = Path(path).suffix.lower()
    if suffix == ".parquet":
        records = _parquet_records(path)
    elif suffix in (".jsonl", ".json", ".csv"):
        text = _read_utf8(path)
        if not text.strip():
            raise DataError(f"{path}: empty file")
        parse = {".jsonl": _jsonl_records, ".json": _json_records, ".csv": _csv_records}[suffix]
        records = parse(path, text)
    else:
        kind = f"'{suffix}'" if suffix else "(no extension)"
        raise DataError(f"{path}: unsupported file type {kind} (use .jsonl, .json, .csv, .parquet)")
    if not records:
        raise DataError(f"{path}: no records")
    return records


def detect_format(record: dict) -> str:
    """Name the format of ``record`` from its keys; raise ValueError if none fits."""
    for key, fmt in DETECTED_BY:
        if key in record:
            return fmt
    keys = ", ".join(_shown(key) for key in list(record)[:10]) or "none"
    if len(record) > 10:
        keys += f" and {len(record) - 10} more"
    raise ValueError("cannot tell the format: expected keys 'messages', 'conversations', "
                     f"'instruction'+'output', 'prompt'+'completion' or 'text'; got {keys}")


def normalise(record: dict, fmt: str, source: str) -> dict:
    """Turn one record of format ``fmt`` (or "auto") into a tunelab example."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown format '{fmt}' (use {', '.join(FORMATS)})")
    try:
        if fmt == "auto":
            fmt = detect_format(record)
        if fmt == "text":
            example: dict[str, Any] = {"text": _required_str(record, "text")}
        else:
            example = {"messages": _messages(record, fmt)}
        example["task"] = _optional_str(record, "task")
    except ValueError as err:
        raise DataError(f"{source}: {err}") from None
    example["source"] = source
    return example


# --- formats ------------------------------------------------------------------

def _messages(record: dict, fmt: str) -> list[dict]:
    if fmt == "alpaca":
        instruction = _required_str(record, "instruction")
        answer = _required_str(record, "output")
        extra_input = _optional_str(record, "input")
        system = _optional_str(record, "system")
        user = f"{instruction}\n\n{extra_input}" if extra_input else instruction
        messages = [{"role": "user", "content": user}, {"role": "assistant", "content": answer}]
        return ([{"role": "system", "content": system}] if system else []) + messages
    if fmt == "prompt_completion":
        return [{"role": "user", "content": _required_str(record, "prompt")},
                {"role": "assistant", "content": _required_str(record, "completion")}]
    if fmt == "chat":
        messages = _conversation(record, "messages", "role", "content", {r: r for r in ROLES})
    else:  # sharegpt
        messages = _conversation(record, "conversations", "from", "value", SHAREGPT_ROLES)
    # Training learns from the assistant turns; without a user turn or a final
    # assistant answer the example teaches nothing useful.
    if not any(message["role"] == "user" for message in messages):
        raise ValueError("conversation has no user message")
    if messages[-1]["role"] != "assistant":
        raise ValueError("conversation must end with an assistant message")
    return messages


def _conversation(record: dict, key: str, role_key: str, content_key: str,
                  role_names: dict[str, str]) -> list[dict]:
    turns = _required(record, key, list)
    if not turns:
        raise ValueError(f"empty field '{key}'")
    messages = []
    for number, turn in enumerate(turns, start=1):
        where = f" in message {number}"
        if not isinstance(turn, dict):
            raise ValueError(f"message {number} must be an object, got {_type_name(turn)}")
        role = _required(turn, role_key, str, where)
        if role not in role_names:
            raise ValueError(f"unknown role {_shown(role)}{where} (use {', '.join(role_names)})")
        messages.append({"role": role_names[role], "content": _required_str(turn, content_key, where)})
    return messages


def _required(record: dict, key: str, kind: type, where: str = "") -> Any:
    if key not in record:
        raise ValueError(f"missing field '{key}'{where}")
    value = record[key]
    if not isinstance(value, kind):
        raise ValueError(f"field '{key}'{where} must be a {kind.__name__}, got {_type_name(value)}")
    return value


def _required_str(record: dict, key: str, where: str = "") -> str:
    value = _required(record, key, str, where)
    if not value.strip():
        raise ValueError(f"empty field '{key}'{where}")
    return value


def _optional_str(record: dict, key: str) -> str | None:
    """A missing, null or blank optional field all mean "not given"."""
    if record.get(key) is None:
        return None
    value = _required(record, key, str)
    return value if value.strip() else None


def _type_name(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def _shown(text: str, limit: int = 40) -> str:
    """A user's string quoted for a message, cut short: errors stay one readable line."""
    if len(text) <= limit:
        return repr(text)
    return repr(text[:limit]) + f"... ({len(text)} characters)"


def _parse_json(path, line: int, text: str) -> Any:
    """json.loads with every failure as a DataError naming ``path:line``."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise DataError(f"{path}:{line + err.lineno - 1}: invalid JSON: {err.msg}") from None
    except RecursionError:
        raise DataError(f"{path}:{line}: invalid JSON: nested too deeply") from None
    except ValueError:  # an integer beyond Python's digit limit
        raise DataError(f"{path}:{line}: invalid JSON: number too large") from None


# --- files --------------------------------------------------------------------

def _read_utf8(path: str | os.PathLike) -> str:
    data = Path(path).read_bytes()
    # Spreadsheet tools often prepend a byte-order mark; it is not content.
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        line = data.count(b"\n", 0, err.start) + 1
        raise DataError(f"{path}:{line}: not valid UTF-8") from None


def _jsonl_records(path: str | os.PathLike, text: str) -> list[tuple[int, dict]]:
    records = []
    # split("\n"), not splitlines(): the latter also breaks on characters such
    # as U+2028 that may sit inside JSON strings, which would skew line numbers.
    for line, row in enumerate(text.split("\n"), start=1):
        if not row.strip():
            continue
        record = _parse_json(path, line, row)
        if not isinstance(record, dict):
            raise DataError(f"{path}:{line}: not a JSON object (got {_type_name(record)})")
        records.append((line, record))
    return records


def _json_records(path: str | os.PathLike, text: str) -> list[tuple[int, dict]]:
    items = _parse_json(path, 1, text)
    if not isinstance(items, list):
        first_line = text[: len(text) - len(text.lstrip())].count("\n") + 1
        raise DataError(f"{path}:{first_line}: expected a JSON array of objects, got {_type_name(items)}")
    records = list(zip(_array_element_lines(text), items))
    for line, item in records:
        if not isinstance(item, dict):
            raise DataError(f"{path}:{line}: not a JSON object (got {_type_name(item)})")
    return records


def _array_element_lines(text: str) -> list[int]:
    """Line on which each element of a valid top-level JSON array starts."""
    # A second pass with raw_decode is simpler than a line-tracking parser and
    # cheap next to training; the text is known valid, so it cannot fail.
    decoder = json.JSONDecoder()
    lines, line, counted_to = [], 1, 0
    pos = text.index("[") + 1
    while True:
        while text[pos] in " \t\r\n,":
            pos += 1
        if text[pos] == "]":
            return lines
        line += text.count("\n", counted_to, pos)
        counted_to = pos
        lines.append(line)
        _, pos = decoder.raw_decode(text, pos)


def _csv_records(path: str | os.PathLike, text: str) -> list[tuple[int, dict]]:
    # Long-context examples exceed csv's default 128 KiB cell limit.
    csv.field_size_limit(2**31 - 1)
    reader = csv.reader(io.StringIO(text, newline=""))
    records = []
    try:
        header = [name.strip() for name in next(reader)]
        for name in header:
            if name and header.count(name) > 1:
                raise DataError(f"{path}:1: duplicate column {_shown(name)} in header")
        row_start = reader.line_num + 1
        for cells in reader:
            # A quoted cell may span lines: the row starts where the last one ended.
            line, row_start = row_start, reader.line_num + 1
            if not any(cell.strip() for cell in cells):
                continue
            if len(cells) != len(header):
                raise DataError(f"{path}:{line}: row has {len(cells)} cells, the header has {len(header)}")
            # An empty cell means "not given", as a missing key does in JSON.
            records.append((line, {name: cell for name, cell in zip(header, cells) if cell != ""}))
    except csv.Error as err:
        raise DataError(f"{path}:{reader.line_num}: invalid CSV: {err}") from None
    return records


def _parquet_records(path: str | os.PathLike) -> list[tuple[int, dict]]:
    import pyarrow  # imported here: heavy, and needed only for this file type
    import pyarrow.parquet

    if os.path.getsize(path) == 0:
        raise DataError(f"{path}: empty file")
    try:
        rows = pyarrow.parquet.read_table(path).to_pylist()
    except pyarrow.ArrowInvalid as err:
        reason = str(err).splitlines()[0][:200] if str(err) else "unreadable"
        raise DataError(f"{path}: not a valid Parquet file: {reason}") from None
    # Nulls are how Parquet spells an empty cell: treat them as missing keys.
    return [(index, {key: value for key, value in row.items() if value is not None})
            for index, row in enumerate(rows, start=1)]
