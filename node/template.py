"""The commented config `icn-node init` writes, rendered from the typed settings.

Every default lives once, in the settings models (`node.settings` and the
`[network]` and `[generation]` models it includes); this module only prints a
settings object as TOML, each key with its field's description as a comment,
so the file an operator starts from cannot drift from what the node assumes.
`tests/node/test_template.py` parses the rendered file back and compares.
"""

from __future__ import annotations

import enum
import json
import math
import textwrap
from datetime import datetime
from pathlib import Path

from pydantic import BaseModel

from node.settings import NodeSettings

COMMENT_COLUMN = 40
LINE_WIDTH = 110  # a description that does not fit beside its key goes above it, wrapped

HEADER = """\
# ICN node configuration. Check it with `icn-node config check {config_name}`.
# Relative paths are relative to this file's folder. Every key below shows its default
# (or, in [node] and [chain], what `icn-node init` chose); a key left out takes its default.
"""


def render(settings: NodeSettings, *, config_name: str, notes: dict[str, str] | None = None) -> str:
    """The settings as commented TOML; `notes` adds a comment above a top-level table (why it differs)."""
    lines = [HEADER.format(config_name=config_name).rstrip("\n")]
    for name in type(settings).model_fields:
        if notes and name in notes:
            lines += ["", *_comment(notes[name])]
        _table(lines, [name], getattr(settings, name))
    return "\n".join(lines) + "\n"


def _comment(text: str) -> list[str]:
    return textwrap.wrap(text, LINE_WIDTH - 2, initial_indent="# ", subsequent_indent="# ")


def _table(lines: list[str], path: list[str], model: BaseModel, *, array: bool = False) -> None:
    body: list[str] = []
    nested: list[tuple[str, BaseModel]] = []
    arrays: list[tuple[str, list[BaseModel]]] = []
    for name, field in type(model).model_fields.items():
        value = getattr(model, name)
        if isinstance(value, BaseModel):
            nested.append((name, value))
            continue
        if isinstance(value, tuple | list) and value and all(isinstance(v, BaseModel) for v in value):
            arrays.append((name, list(value)))
            continue
        note = field.description or ""
        if value is None:
            body += _comment(f"{name}: not set{'; ' + note if note else ''}")
            continue
        line = f"{name} = {_value(value)}"
        beside = f"{line.ljust(COMMENT_COLUMN)} # {note}"
        if not note:
            body.append(line)
        elif len(line) < COMMENT_COLUMN and len(beside) <= LINE_WIDTH:
            body.append(beside)
        else:
            body += [*_comment(note), line]
    if body or array:  # a table with only sub-tables needs no header of its own
        lines.append("")
        doc = type(model).__doc__
        if doc and "__doc__" in type(model).__dict__:
            lines += _comment(" ".join(doc.strip().split("\n\n")[0].split()))
        dotted = ".".join(path)
        lines.append(f"[[{dotted}]]" if array else f"[{dotted}]")
        lines += body
    for name, sub in nested:
        _table(lines, [*path, name], sub)
    for name, items in arrays:
        for item in items:
            _table(lines, [*path, name], item, array=True)


def _value(value: object) -> str:
    """A TOML literal for one settings value (JSON's string escapes are TOML's)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, enum.Enum):
        return _value(value.value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str | Path):
        return json.dumps(str(value))
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, tuple | list):
        return "[" + ", ".join(_value(v) for v in value) + "]"
    raise TypeError(f"no TOML form for a settings value of type {type(value).__name__}")
