"""Identifiers: a readable prefix and a random hex suffix (`agent-proj-3f9a1c07be12`).

Six random bytes keep collisions out of reach (about one in 10^7 at a million rows per prefix);
shorter suffixes collide by the birthday bound at a few thousand agents.
"""

from __future__ import annotations

import os
import secrets
import socket


def new_id(prefix: str, nbytes: int = 6) -> str:
    return f"{prefix}-{secrets.token_hex(nbytes)}"


def new_node_id() -> str:
    """This process among others sharing one database (runners, dispatchers): `host:pid:random`. The random
    part tells a restarted process that reused a pid from its previous life."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"
