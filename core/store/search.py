"""Searching text columns the way people type a search: case-insensitive, anywhere in the value, with `%` and `_`
taken literally (they are LIKE's wildcards otherwise)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import ColumnElement, func


def contains(column: Any, text: str) -> ColumnElement[bool]:
    """`column` holds `text` anywhere, whatever the case."""
    escaped = text.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return func.lower(column).like(f"%{escaped}%", escape="\\")
