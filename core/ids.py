"""Identifiers: short random hex suffixes behind a readable prefix (`agent-proj-3f9a1c`)."""

from __future__ import annotations

import secrets


def new_id(prefix: str, nbytes: int = 6) -> str:
    return f"{prefix}-{secrets.token_hex(nbytes)}"
