"""Identifiers: a readable prefix and a random hex suffix (`agent-proj-3f9a1c07be12`).

Six random bytes keep collisions out of reach (about one in 10^7 at a million rows per prefix);
shorter suffixes collide by the birthday bound at a few thousand agents.
"""

from __future__ import annotations

import secrets


def new_id(prefix: str, nbytes: int = 6) -> str:
    return f"{prefix}-{secrets.token_hex(nbytes)}"
