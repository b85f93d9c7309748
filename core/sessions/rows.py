"""Finding a session's row inside a transaction: the one lookup every writer of sessions and tasks uses."""

from __future__ import annotations

from typing import Any

from sqlalchemy import ColumnElement, Select, or_, select
from sqlmodel.ext.asyncio.session import AsyncSession

from core.errors import Conflict, Forbidden, NotFound
from core.people.access import Principal, Scope
from core.store.models import Confirmation, Session, Task, table_of

ACTIVE = "active"
ARCHIVED = "archived"
# deleted: what is left of a deleted session is who owned it and whether it was private, so that its tasks (kept as
# history) stay hidden as they were; every lookup answers 404 for it
DELETED = "deleted"
PRIVATE = "private"
COLLABORATE = "collaborate"


async def find_session(session: AsyncSession, org_id: str, session_id: str) -> Session:
    """The org's session, or 404 SESSION_NOT_FOUND (another org's is not found either)."""
    row = await session.get(Session, session_id) if session_id else None
    if row is None or row.org_id != org_id or row.status == DELETED:
        raise NotFound(f"session {session_id!r} not found", code="SESSION_NOT_FOUND")
    return row


async def live_session(session: AsyncSession, org_id: str, session_id: str) -> Session:
    """`find_session`, refusing an archived one (history only: nothing runs in it) with 409 SESSION_ARCHIVED."""
    row = await find_session(session, org_id, session_id)
    if row.status == ARCHIVED:
        raise Conflict(f"session {session_id} is archived: resume it to run tasks in it", code="SESSION_ARCHIVED")
    return row


# --- who may do what with a session (its visibility; ARCHITECTURE section 2) --------------------------------------
# private: its owner and admins; organization: everyone in the org reads it; collaborate: everyone also runs tasks
# in it and steers it. Its owner or an admin manages it (update, archive, resume, delete).


def owns(principal: Principal, row: Session) -> bool:
    return row.owner_id == principal.identity


def may_read(principal: Principal, row: Session) -> bool:
    return row.visibility != PRIVATE or owns(principal, row) or principal.can(Scope.ADMIN)


def may_manage(principal: Principal, row: Session) -> bool:
    return owns(principal, row) or principal.can(Scope.ADMIN)


def may_run(principal: Principal, row: Session) -> bool:
    """Run tasks in it, steer it: whoever manages it, and anyone of the org in a collaborate session."""
    return may_manage(principal, row) or row.visibility == COLLABORATE


# --- the same rule in SQL, for every read of tasks and of what they ask (confirmations) ------------------------------
# A private session's tasks and their confirmations are its owner's and admins'; to anyone else they do not exist
# (absent from lists and counts, 404 when named). One extra predicate on the read, none for an admin.

_S, _T, _C = table_of(Session), table_of(Task), table_of(Confirmation)


def hidden_sessions(org: Any, viewer: Any | None) -> Select[Any]:
    """The ids of the org's private sessions that are not `viewer`'s (an identity; None: every private one, for
    what is shown to no one in particular, as a digest). `org` and `viewer` are values or bound parameters."""
    where: list[Any] = [_S.c.org_id == org, _S.c.visibility == PRIVATE]
    if viewer is not None:
        where.append(_S.c.owner_id != viewer)
    return select(_S.c.id).where(*where)


def shown_session(column: Any, org: Any, viewer: Any | None) -> ColumnElement[bool]:
    """`column` (a task's session id) names no session hidden from `viewer`."""
    return or_(column.is_(None), column.not_in(hidden_sessions(org, viewer)))


def shown_task(column: Any, org: Any, viewer: Any | None) -> ColumnElement[bool]:
    """`column` (a confirmation's task id) names no task of a session hidden from `viewer` (ix_task_session)."""
    hidden = select(_T.c.id).where(_T.c.session_id.in_(hidden_sessions(org, viewer)))
    return or_(column.is_(None), column.not_in(hidden))


def shown_tasks(principal: Principal) -> list[ColumnElement[bool]]:
    """The predicates (none for an admin) that keep a task of someone else's private session out of a read."""
    if principal.can(Scope.ADMIN):
        return []
    return [shown_session(_T.c.session_id, principal.org_id, principal.identity)]


def shown_confirmations(principal: Principal) -> list[ColumnElement[bool]]:
    """The same for confirmations: one asked for a task of someone else's private session is hidden too."""
    if principal.can(Scope.ADMIN):
        return []
    return [shown_task(_C.c.task_id, principal.org_id, principal.identity)]


async def readable_session(session: AsyncSession, principal: Principal, session_id: str) -> Session:
    """`find_session` for someone who may read it: a session hidden from them is not found (404), as another org's."""
    row = await find_session(session, principal.org_id, session_id)
    if not may_read(principal, row):
        raise NotFound(f"session {session_id!r} not found", code="SESSION_NOT_FOUND")
    return row


async def managed_session(session: AsyncSession, principal: Principal, session_id: str) -> Session:
    """A session the principal may manage: its owner's or, for an admin, any they can see; else 403."""
    row = await readable_session(session, principal, session_id)
    if not may_manage(principal, row):
        raise Forbidden(f"session {session_id} is {row.owner_name}'s: only its owner or an admin manages it",
                        code="NOT_SESSION_OWNER")
    return row


async def joinable_session(session: AsyncSession, principal: Principal, session_id: str) -> Session:
    """A live session the principal may run tasks in (a task joining it): 404 hidden, 403 not theirs to run in
    (not collaborate), 409 archived."""
    row = await readable_session(session, principal, session_id)
    if not may_run(principal, row):
        raise Forbidden(f"session {session_id} is {row.visibility}: only its owner or an admin runs tasks in it "
                        "(or anyone, once it is collaborate)", code="SESSION_NOT_COLLABORATIVE")
    return await live_session(session, principal.org_id, session_id)


async def refuse_archived(session: AsyncSession, org_id: str, session_id: str | None) -> None:
    """A follow-up to a task of an archived session is refused (409 SESSION_ARCHIVED): nothing runs in it. A task of
    no session, or of a deleted one (its tasks stay as history), is not held back."""
    row = await session.get(Session, session_id) if session_id else None
    if row is not None and row.org_id == org_id and row.status == ARCHIVED:
        raise Conflict(f"session {session_id} is archived: resume it to run tasks in it", code="SESSION_ARCHIVED")


async def in_private_session(session: AsyncSession, task_session_id: str | None) -> bool:
    """Whether a task belongs to a private session (a deleted one too): its questions and news go to its own
    threads only, never to its project's shared approval channels."""
    if task_session_id is None:
        return False
    row = await session.get(Session, task_session_id)
    return row is not None and row.visibility == PRIVATE
