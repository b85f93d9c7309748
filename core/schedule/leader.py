"""Who leads: the one process of a deployment that runs the scheduled jobs (and polls Telegram), named `host:pid`.

The election itself is the process assembly's (bot.leader: an advisory lock on PostgreSQL, a file lock on SQLite);
core sees it through `Leadership`, so `/readyz` and `schedules` can say who leads from any process, leading or not.
"""

from __future__ import annotations

import os
import socket
from typing import Protocol

from sqlalchemy import text

from core.store.db import Database

# The advisory lock's key (bigint; below 2**32, so pg_locks shows it as classid 0, objid LOCK_KEY, objsubid 1).
LOCK_KEY = 0x53_48_45_50  # "SHEP"
APP_PREFIX = "shepherd leader "  # application_name of the lock's connection: "shepherd leader host:pid"
NAME_MAX = 63  # PostgreSQL cuts application_name to 63 bytes


def me() -> str:
    """This process as `host:pid`."""
    return f"{socket.gethostname()}:{os.getpid()}"


class Leadership(Protocol):
    me: str  # this process, host:pid

    @property
    def leads(self) -> bool:
        """Whether this process leads now."""
        ...

    async def leader(self) -> str | None:
        """Who leads now (host:pid), as anyone can see it; None when nobody does."""
        ...


class NoElection:
    """A process that takes no part (a tool, a test without a scheduler): it never leads and sees no leader."""

    def __init__(self) -> None:
        self.me = me()

    @property
    def leads(self) -> bool:
        return False

    async def leader(self) -> str | None:
        return None


_WHO_HOLDS = text(
    "SELECT a.application_name FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
    f"WHERE l.locktype = 'advisory' AND l.classid = 0 AND l.objid = {LOCK_KEY} AND l.objsubid = 1 AND l.granted "
    "AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())"
)


async def pg_leader(db: Database) -> str | None:
    """Who holds the leader's advisory lock, from its connection's application_name (pg_locks joined with
    pg_stat_activity: what an operator can type in psql too)."""
    rows = await db.rows(_WHO_HOLDS)
    for (name,) in rows:
        if isinstance(name, str) and name.startswith(APP_PREFIX):
            return name.removeprefix(APP_PREFIX)
        return name if isinstance(name, str) and name else "unknown (the lock's holder hides its name)"
    return None
