"""Finding a session's row inside a transaction: the one lookup every writer of sessions and tasks uses."""

from __future__ import annotations

from sqlmodel.ext.asyncio.session import AsyncSession

from core.errors import Conflict, NotFound
from core.store.models import Session

ARCHIVED = "archived"


async def find_session(session: AsyncSession, org_id: str, session_id: str) -> Session:
    """The org's session, or 404 SESSION_NOT_FOUND (another org's is not found either)."""
    row = await session.get(Session, session_id) if session_id else None
    if row is None or row.org_id != org_id:
        raise NotFound(f"session {session_id!r} not found", code="SESSION_NOT_FOUND")
    return row


async def live_session(session: AsyncSession, org_id: str, session_id: str) -> Session:
    """`find_session`, refusing an archived one (history only: nothing runs in it) with 409 SESSION_ARCHIVED."""
    row = await find_session(session, org_id, session_id)
    if row.status == ARCHIVED:
        raise Conflict(f"session {session_id} is archived: resume it to run tasks in it", code="SESSION_ARCHIVED")
    return row
