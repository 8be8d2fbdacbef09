"""Read a user's data file into ``(line, record)`` pairs: .jsonl, .json (an array),
.csv, .parquet, .jsonl.gz and .json.gz, and .txt/.md documents (a ``text`` record per
file, or per blank-line-separated block). "line" is the real file line for .jsonl,
.json and .csv (and a document's first line), and the row number (from 1) for .parquet.

Any problem raises ``DataError`` as one line ``path:line: reason``; files are only
ever read. What a record means is tunelab.data.formats' business.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import os
from pathlib import Path
from typing import Any

from tunelab.errors import DataError
from tunelab.util import files
from tunelab.util.names import shown as _shown, type_name as _type_name

SUFFIXES = (".jsonl", ".json", ".csv", ".parquet", ".jsonl.gz", ".json.gz", ".txt", ".md")
GZIP_SUFFIXES = (".jsonl", ".json")  # what may be gzipped
COMPRESSED_SUFFIXES = (".gz", ".zst", ".bz2", ".xz", ".zip")  # recognised, so refused by name
TEXT_SUFFIXES = (".txt", ".md")  # plain documents: each becomes a `text` example
FILE_TYPES = (".jsonl", ".json", ".csv", ".parquet", *TEXT_SUFFIXES)


def is_data_file(path: str | os.PathLike) -> bool:
    """True for a file prepare reads: one of SUFFIXES, or another compression of a known
    type (``.csv.gz``, ``.jsonl.zst``), which read_records then refuses by name rather
    than prepare passing it over without a word."""
    if any(Path(path).name.lower().endswith(suffix) for suffix in SUFFIXES):
        return True
    return _compressed(path) and data_suffix(path) in FILE_TYPES


def data_suffix(path: str | os.PathLike) -> str:
    """The suffix that names a file's type: ``.jsonl`` for ``x.jsonl.gz`` too."""
    suffixes = [s.lower() for s in Path(path).suffixes]
    if _compressed(path) and len(suffixes) > 1:
        return suffixes[-2]
    return suffixes[-1] if suffixes else ""


def _compressed(path: str | os.PathLike) -> bool:
    return Path(path).suffix.lower() in COMPRESSED_SUFFIXES


def read_records(path: str | os.PathLike, text_split: str = "file") -> list[tuple[int, dict]]:
    """Return ``(line, record)`` pairs from a data file (see SUFFIXES)."""
    suffix = data_suffix(path)
    if _compressed(path) and (Path(path).suffix.lower() != ".gz" or suffix not in GZIP_SUFFIXES):
        raise DataError(f"{path}: unsupported compressed file (use .jsonl.gz or .json.gz)")
    if suffix not in FILE_TYPES:
        kind = f"'{suffix}'" if suffix else "(no extension)"
        raise DataError(f"{path}: unsupported file type {kind} (use {', '.join(SUFFIXES)})")
    if suffix == ".parquet":
        records = _parquet_records(path)
    else:
        text = _read_utf8(path)
        if not text.strip():
            raise DataError(f"{path}: empty file")
        if suffix in TEXT_SUFFIXES:
            records = _document_records(text, text_split)
        else:
            parse = {".jsonl": _jsonl_records, ".json": _json_records, ".csv": _csv_records}[suffix]
            records = parse(path, text)
    if not records:
        raise DataError(f"{path}: no records")
    return records


def _parse_json(path, line: int, text: str) -> Any:
    """files.parse_json with every failure as a DataError naming ``path:line`` (``text``
    starts on ``line``)."""
    try:
        return files.parse_json(text)
    except files.InvalidJSON as err:
        raise DataError(f"{path}:{line + err.line - 1}: invalid JSON: {err.reason}") from None


# --- files --------------------------------------------------------------------

def _read_utf8(path: str | os.PathLike) -> str:
    data = Path(path).read_bytes()
    if Path(path).suffix.lower() == ".gz":
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError) as err:  # gzip.BadGzipFile is an OSError
            raise DataError(f"{path}: not a valid gzip file: {err}") from None
    # Spreadsheet tools often prepend a byte-order mark; it is not content.
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        line = data.count(b"\n", 0, err.start) + 1
        raise DataError(f"{path}:{line}: not valid UTF-8") from None


def _document_records(text: str, text_split: str) -> list[tuple[int, dict]]:
    """A .txt/.md file as one document ("file"), or one per blank-line-separated block."""
    if text_split == "file":
        first = text[: len(text) - len(text.lstrip())].count("\n") + 1
        return [(first, {"text": text.strip()})]
    records, block, start = [], [], 0
    for line, row in enumerate([*text.split("\n"), ""], start=1):
        if row.strip():
            start = start or line
            block.append(row)
        elif block:
            records.append((start, {"text": "\n".join(block).strip()}))
            block, start = [], 0
    return records


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
