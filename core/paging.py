"""Keyset pages: an opaque cursor that says where the next page begins, so that a page costs the page and not
the rows before it (an offset makes the database walk past every row it skips).

A cursor carries the last row's sort key, the list and filter it was made for (a cursor used with another
filter is refused rather than silently answering another list), and, for a filtered list, the total counted
once on its first page.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from dataclasses import dataclass
from datetime import datetime

from core.errors import ValidationFailed

MAX_CURSOR = 500  # characters: a cursor is a few dozen; anything longer was not made here


@dataclass(frozen=True)
class Cursor:
    created_at: datetime  # as the store hands it back (SQLite: naive UTC), so that it binds back equal
    id: str
    total: int | None = None  # a filtered list's total, counted on its first page


def scope_of(*parts: object) -> str:
    """A short fingerprint of what a cursor belongs to: the list and its filter."""
    return hashlib.sha256(repr(parts).encode()).hexdigest()[:12]


def encode(cursor: Cursor, scope: str) -> str:
    data = [scope, cursor.created_at.isoformat(), cursor.id, cursor.total]
    return base64.urlsafe_b64encode(json.dumps(data, separators=(",", ":")).encode()).decode().rstrip("=")


def decode(text: str, scope: str) -> Cursor:
    """The cursor in `text`, if it was made for this list and filter; else a 400 INVALID_CURSOR."""
    try:
        if len(text) > MAX_CURSOR:
            raise ValueError("too long")
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
        made_for, created_at, row_id, total = json.loads(raw)
        if not isinstance(row_id, str) or not (total is None or isinstance(total, int)):
            raise ValueError("malformed")
        cursor = Cursor(datetime.fromisoformat(created_at), row_id, total)
    except (ValueError, TypeError, binascii.Error, UnicodeDecodeError):
        raise ValidationFailed("cursor: not a cursor this list gave out; start again without one",
                               code="INVALID_CURSOR") from None
    if made_for != scope:
        raise ValidationFailed("cursor: it was given out for another filter; send the same filter with it, or "
                               "start again without a cursor", code="INVALID_CURSOR")
    return cursor
