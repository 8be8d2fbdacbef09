"""Column and role maps: the user's field names -> the names tunelab's formats read.

``prepare.columns`` says ``{their field: tunelab field}`` (``question: instruction``,
``speaker: role``), ``prepare.roles`` says ``{their role: tunelab role}``
(``customer: user``), and ``prepare.per_file`` gives either for the files whose path
under ``prepare.raw_dir`` matches a glob (``qa/*.csv``), on top of the global maps.
The target name decides where a column map applies: a record field (``instruction``,
``text``, ``messages``...) renames keys of the record, a message field (``role``,
``content``, ``from``, ``value``...) renames keys inside each message of the record's
conversation. The params schema has already checked every name (tunelab.config.params,
with a did-you-mean); records are renamed in a copy, files are only read.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field
from pathlib import PurePosixPath

from tunelab.config import params

CONVERSATION_KEYS = ("messages", "conversations")


@dataclass(frozen=True)
class Mapping:
    record: dict[str, str] = field(default_factory=dict)    # their record key -> ours
    message: dict[str, str] = field(default_factory=dict)   # their message key -> ours
    roles: dict[str, str] = field(default_factory=dict)     # their role value -> ours

    def __bool__(self) -> bool:
        return bool(self.record or self.message or self.roles)


def build(columns: dict[str, str], roles: dict[str, str]) -> Mapping:
    """Split a column map into its record and its message renames."""
    record = {theirs: ours for theirs, ours in columns.items() if ours in params.RECORD_FIELDS}
    message = {theirs: ours for theirs, ours in columns.items() if ours in params.MESSAGE_FIELDS}
    return Mapping(record, message, dict(roles))


def from_params(p, raw_dir):
    """``path -> Mapping`` for the prepare section ``p`` (its columns, roles, per_file)."""
    def mapping_for(path) -> Mapping:
        relative = _relative(path, raw_dir)
        merged_columns, merged_roles = dict(p.columns), dict(p.roles)
        for pattern, override in p.per_file.items():
            if fnmatch.fnmatch(relative, pattern):
                merged_columns.update(override.columns)
                merged_roles.update(override.roles)
        return build(merged_columns, merged_roles)
    return mapping_for


def apply(record: dict, mapping: Mapping) -> dict:
    """``record`` with its keys (and its messages' keys and roles) renamed; a new dict."""
    if not mapping:
        return record
    renamed = _renamed(record, mapping.record)
    for key in CONVERSATION_KEYS:
        turns = renamed.get(key)
        if isinstance(turns, list) and (mapping.message or mapping.roles):
            renamed[key] = [_message(turn, mapping) if isinstance(turn, dict) else turn
                            for turn in turns]
    return renamed


def _message(turn: dict, mapping: Mapping) -> dict:
    turn = _renamed(turn, mapping.message)
    for role_key in ("role", "from"):
        value = turn.get(role_key)
        if isinstance(value, str) and value in mapping.roles:
            turn[role_key] = mapping.roles[value]
    return turn


def _renamed(values: dict, names: dict[str, str]) -> dict:
    # A mapped column replaces a same-named one the record also has: the user said which
    # column means that field.
    targets = {names[k] for k in values if k in names}
    return {names.get(k, k): v for k, v in values.items() if k in names or k not in targets}


def _relative(path, raw_dir) -> str:
    """``path`` under ``raw_dir`` as a/b.csv (its name alone when it is elsewhere)."""
    try:
        return PurePosixPath(path).relative_to(PurePosixPath(raw_dir)).as_posix()
    except ValueError:
        return PurePosixPath(path).name
