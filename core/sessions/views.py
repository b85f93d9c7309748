"""The hub's view of a session: what its rows say about it now (its bucket, its counts, what may be done with it),
built for a whole page of sessions with a fixed number of queries (tasks by status, participants), never one per
session. The REST dialect (adapters/rest/agentuity.py) only names these on the wire."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import func
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from core.people.access import Principal
from core.sessions.participants import OBSERVER, Participant, participants_of
from core.sessions.rows import ARCHIVED, may_manage, may_run
from core.store.models import Session, Task
from core.tasks.state import TaskStatus

RUNNING, PAUSED, PROVISIONING, HISTORY = "running", "paused", "provisioning", "history"
_RUNNING = {TaskStatus.INITIALIZING.value, TaskStatus.RUNNING.value}
_PROVISIONING = {TaskStatus.PENDING.value, TaskStatus.QUEUED.value}
_LOOP_RUNNING = frozenset({"running"})  # "starting": its task waits for a runner (provisioning)


@dataclass(frozen=True)
class SessionView:
    row: Session
    bucket: str  # running (a task works) | provisioning (one waits to start) | paused (live, idle) | history
    task_count: int
    sub_agent_count: int  # task agents at work now (each running task has one)
    observer_count: int  # connected observers
    participant_count: int  # connected participants
    runtime_available: bool  # a runner is up to run its tasks
    control_available: bool  # the reader may run tasks in it and steer them now
    manage_available: bool  # the reader may update, archive, resume, delete it
    wake_available: bool  # something of it can be woken by the reader: an archived session, a paused task
    history_only: bool
    live_expected: bool  # something of it runs or is about to


def bucket_of(row: Session, statuses: dict[str, int]) -> str:
    if row.status == ARCHIVED:
        return HISTORY
    if any(statuses.get(s) for s in _RUNNING) or row.loop_status in _LOOP_RUNNING:
        return RUNNING
    if any(statuses.get(s) for s in _PROVISIONING):
        return PROVISIONING
    return PAUSED


async def session_views(
    session: AsyncSession, principal: Principal, rows: Sequence[Session], *, runner_alive: bool,
) -> tuple[list[SessionView], dict[str, list[Participant]]]:
    """The views of `rows` as `principal` sees them, and each one's participants."""
    ids = [r.id for r in rows]
    statuses: dict[str, dict[str, int]] = {i: {} for i in ids}
    if ids:
        counted = await session.exec(
            select(Task.session_id, Task.status, func.count()).where(col(Task.session_id).in_(ids))
            .group_by(col(Task.session_id), col(Task.status)))
        for sid, status, n in counted:
            statuses[str(sid)][status] = int(n)
    people = await participants_of(session, rows)
    views = []
    for row in rows:
        mine = statuses[row.id]
        bucket = bucket_of(row, mine)
        archived = row.status == ARCHIVED
        connected = [p for p in people[row.id] if p.connected]
        runs, manages = may_run(principal, row), may_manage(principal, row)
        views.append(SessionView(
            row=row, bucket=bucket, task_count=sum(mine.values()),
            sub_agent_count=sum(mine.get(s, 0) for s in _RUNNING),
            observer_count=sum(1 for p in connected if p.role == OBSERVER), participant_count=len(connected),
            runtime_available=runner_alive and not archived, control_available=runs and not archived,
            manage_available=manages,
            wake_available=(archived and manages) or (not archived and runs and bool(mine.get(TaskStatus.PAUSED))),
            history_only=archived, live_expected=bucket in (RUNNING, PROVISIONING),
        ))
    return views, people
