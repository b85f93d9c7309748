"""Who and what is attached to a session (the hub's participants): the person who started it (role `lead`, over
the channel it began in), each thread that watches its tasks (role `observer`, over that thread's channel;
disconnected once the thread has ended) and each person who voted on one of its tasks' confirmations (role
`controller`, over the channel they voted from). Read for a whole page of sessions at once: two queries, not two
per session."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlmodel import col
from sqlmodel.ext.asyncio.session import AsyncSession

from core.store.models import Confirmation, Session, Task, Thread, Vote

LEAD, OBSERVER, CONTROLLER = "lead", "observer", "controller"


@dataclass(frozen=True)
class Participant:
    id: str
    role: str
    transport: str
    connected_at: datetime | None
    disconnected_at: datetime | None = None
    last_activity_at: datetime | None = None
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def connected(self) -> bool:
        return self.disconnected_at is None


def lead(row: Session) -> Participant:
    transport = str(row.origin.get("channel") or "rest") if isinstance(row.origin, dict) else "rest"
    return Participant(row.owner_id, LEAD, transport, row.created_at, None, row.last_activity_at,
                       {"name": row.owner_name})


async def participants_of(session: AsyncSession, rows: Sequence[Session]) -> dict[str, list[Participant]]:
    """Each session's participants: its lead, then its observers and its controllers, each in the order they came."""
    ids = [r.id for r in rows]
    found: dict[str, list[Participant]] = {r.id: [lead(r)] for r in rows}
    if not ids:
        return found
    # one observer per place, however many of the session's tasks were followed there
    conn = await session.connection()
    places = await conn.execute(
        select(col(Task.session_id), col(Thread.channel), col(Thread.address), func.min(Thread.created_at),
               func.max(Thread.created_at), func.count(), func.count(col(Thread.ended_at)), func.max(Thread.ended_at))
        .join(Thread, col(Thread.task_id) == col(Task.id))
        .where(col(Task.session_id).in_(ids), col(Thread.opening).is_(None))
        .group_by(col(Task.session_id), col(Thread.channel), col(Thread.address))
        .order_by(func.min(Thread.created_at))
    )
    for sid, channel, address, first, last, threads, ended, ended_at in places:
        gone = ended_at if threads == ended else None  # every thread of the place has ended
        found[str(sid)].append(Participant(f"{channel}:{address}", OBSERVER, channel, first, gone, last,
                                           {"channel": channel, "address": address}))
    voters = await conn.execute(
        select(col(Task.session_id), col(Vote.voter_id), func.max(Vote.voter_name), func.max(Vote.via),
               func.min(Vote.at),
               func.max(Vote.at), func.count())
        .join(Confirmation, col(Confirmation.task_id) == col(Task.id))
        .join(Vote, col(Vote.confirmation_id) == col(Confirmation.id))
        .where(col(Task.session_id).in_(ids))
        .group_by(col(Task.session_id), col(Vote.voter_id))
        .order_by(func.min(Vote.at))
    )
    for sid, voter, name, via, first, last, votes in voters:
        found[str(sid)].append(Participant(voter, CONTROLLER, via, first, None, last, {"name": name, "votes": votes}))
    return found
