"""Threads bound to sessions: a chat thread (Slack, Telegram, GitHub, the console) that runs tasks is a session.

The first task run in a thread makes a session (labelled from its prompt, its origin the thread) and the thread's
row for that task carries the session's id; later tasks run there find it and join it. Archived (or deleted)
sessions are not joined again: the next task run in the thread begins a new one. Both happen inside the task's
own transaction (core.tasks.service.Tasks.create): one read, and one more row written for the first task only.
"""

from __future__ import annotations

import secrets
from typing import Any

from sqlalchemy import bindparam
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from core.clock import utcnow
from core.people.access import Principal
from core.sessions import fields
from core.sessions.rows import ACTIVE, COLLABORATE
from core.store.events import record
from core.store.models import Session, Thread
from core.tasks.steering import owner_of

# the oldest live session a place's threads are bound to (the place's first; `--session` elsewhere moves nothing)
_PLACE_SESSION = (
    select(Session.id).join(Thread, col(Thread.session_id) == col(Session.id))
    .where(Thread.org_id == bindparam("org"), Thread.channel == bindparam("channel"),
           Thread.address == bindparam("address"), Session.status == ACTIVE)
    .order_by(col(Thread.created_at), col(Thread.id)).limit(1)
)


def new_session_id() -> str:
    return f"sess_{secrets.token_hex(8)}"


async def place_session(session: AsyncSession, org_id: str, channel: str, address: str) -> str | None:
    """The live session the thread at (channel, address) is bound to, if any."""
    params = {"org": org_id, "channel": channel, "address": address}
    return (await session.exec(_PLACE_SESSION, params=params)).first()


async def session_for_thread(
    session: AsyncSession, principal: Principal, channel: str, address: str, prompt: str,
) -> str:
    """The session a task run in this thread joins: the thread's, or a new one it begins. A thread's session is
    `collaborate`: whoever may speak in the thread already steers the tasks run there."""
    found = await place_session(session, principal.org_id, channel, address)
    if found is not None:
        return found
    owner_id, owner_name = owner_of(principal)
    now = utcnow()
    row = Session(
        id=new_session_id(), org_id=principal.org_id, label=fields.label(None, prompt), task=prompt,
        visibility=COLLABORATE, owner_id=owner_id, owner_name=owner_name,
        origin={"channel": channel, "address": address}, created_at=now, updated_at=now, last_activity_at=now,
    )
    session.add(row)
    await session.flush()  # the task that joins it finds it
    await record(session, principal, "session", "session.created", session_id=row.id,
                 payload=created_payload(row))
    return row.id


def created_payload(row: Session) -> dict[str, Any]:
    return {"label": row.label, "workflowMode": row.workflow_mode, "visibility": row.visibility,
            "origin": row.origin or None}
