"""Atomic file output, JSON Lines input, and JSON text parsed with each failure in words.

Every writer goes through a temp file in the destination folder and an
``os.replace``, so a crash never leaves a half-written output behind.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterable, Iterator

from tunelab.errors import DataError


class InvalidJSON(ValueError):
    """Why a JSON text did not parse, as ``reason`` (the words after "invalid JSON"), and
    the line of the text it failed on, from 1 (the first line where json gives none)."""

    def __init__(self, reason: str, line: int = 1):
        super().__init__(reason)
        self.reason, self.line = reason, line


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temp path beside ``path``; on success rename it into place.

    Works for files and folders: a folder that already exists at ``path`` is
    replaced whole.
    """
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=final.parent)) / final.name
    try:
        yield tmp
        if final.is_dir() and not final.is_symlink():
            shutil.rmtree(final)
        os.replace(tmp, final)
    finally:
        shutil.rmtree(tmp.parent, ignore_errors=True)


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json_atomic(path: str | os.PathLike, obj: Any) -> None:
    write_text_atomic(path, json.dumps(obj, indent=2, ensure_ascii=False) + "\n")


def write_jsonl_atomic(path: str | os.PathLike, rows: Iterable[dict]) -> None:
    write_text_atomic(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))


def read_json(path: str | os.PathLike) -> Any:
    with open(path, encoding="utf-8") as f:
        try:
            return json.load(f)
        except json.JSONDecodeError as err:
            raise DataError(f"{path}:{err.lineno}: invalid JSON: {err.msg}") from None


def parse_json(text: str) -> Any:
    """json.loads, with each way user text fails it as InvalidJSON: a syntax error, nesting
    deeper than the recursion limit, an integer beyond Python's digit limit."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise InvalidJSON(err.msg, err.lineno) from None
    except RecursionError:
        raise InvalidJSON("nested too deeply") from None
    except ValueError:  # an integer beyond Python's digit limit
        raise InvalidJSON("number too large") from None


def read_jsonl(path: str | os.PathLike) -> list[dict]:
    """Read a JSON Lines file written by tunelab (blank lines skipped)."""
    rows = []
    with open(path, encoding="utf-8") as f:
        for line_no, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as err:
                raise DataError(f"{path}:{line_no}: invalid JSON: {err.msg}") from None
    return rows
