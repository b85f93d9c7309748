"""First turns recorded together, with set-based statements: a hundred tasks starting at once are one locked read of
their rows, one UPDATE, one INSERT of their input lines, one UPDATE of their agents and one INSERT of their events,
each executed for all of them, in one transaction (core.tasks.group.BulkWrites). Recorded one by one, each start was
a savepoint, a locked load of the task, its flush, three more statements and the savepoint's release: on PostgreSQL
seven round trips, taken in turn, so the hundredth task's output waited seconds to be read.

A follow-up turn (its input taken off the queue people add to) or a loop's iteration (its session's row moves with
it) is recorded by core.tasks.turns, one at a time, from the task's row loaded under lock."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from sqlalchemy import bindparam, func, insert, update
from sqlalchemy import select as sa_select
from sqlmodel.ext.asyncio.session import AsyncSession

from core.clock import utcnow
from core.people.access import Principal
from core.store.bulk import each
from core.store.events import event_row, record_rows
from core.store.models import Task, TaskLog, table_of
from core.tasks import state as task_state
from core.tasks.rows import agents_started
from core.tasks.state import LogType


@dataclass(frozen=True)
class FirstTurn:
    """A task's first turn, its agent started: what its row records."""

    task: Task  # as the runner read it after its claim, its workspace and base set (id, org, agent: never change)
    pid: int | None
    runner_kind: str
    unit: str
    session_ref: str
    text: str  # its input: the first line of its log


_T = table_of(Task)
_START = update(_T).where(_T.c.id == bindparam("b_id")).values(
    workspace=bindparam("b_workspace"), base_branch=bindparam("b_base_branch"), base_sha=bindparam("b_base_sha"),
    pid=bindparam("b_pid"), runner_kind=bindparam("b_kind"), runner_unit=bindparam("b_unit"),
    session_ref=bindparam("b_session_ref"), turns=_T.c.turns + 1, log_count=_T.c.log_count + 1,
)
_INPUT = insert(table_of(TaskLog))


def first_turns(runner_id: str) -> Callable[[AsyncSession, Sequence[FirstTurn]], Awaitable[list[int | None]]]:
    """The bulk write of first turns started by `runner_id`: for each, its turn's number, or None when the task is no
    longer this runner's to start (ended, deleted or claimed elsewhere while it prepared)."""

    async def write(session: AsyncSession, starts: Sequence[FirstTurn]) -> list[int | None]:
        conn = await session.connection()
        ids = list(dict.fromkeys(start.task.id for start in starts))
        # (locked in one order, the turn counts read under the lock)
        held: dict[str, int] = {row[0]: row[1] for row in (await conn.execute(
            sa_select(_T.c.id, _T.c.turns).where(_T.c.id.in_(ids), task_state.startable_by(runner_id))
            .order_by(_T.c.id).with_for_update())).all()}
        first: dict[str, int] = {}  # a task twice in one batch starts once: the first
        for at, start in enumerate(starts):
            if start.task.id in held:
                first.setdefault(start.task.id, at)
        mine = {task_id: starts[at] for task_id, at in first.items()}
        if mine:
            now = utcnow()
            rows = [{"b_id": s.task.id, "b_workspace": s.task.workspace, "b_base_branch": s.task.base_branch,
                     "b_base_sha": s.task.base_sha, "b_pid": s.pid, "b_kind": s.runner_kind, "b_unit": s.unit,
                     "b_session_ref": s.session_ref} for s in mine.values()]
            await conn.execute(
                _START.where(task_state.startable_by(runner_id)).values(
                    **task_state.turn_started(now, follow_up=False), started_at=func.coalesce(_T.c.started_at, now)),
                each(rows))
            lines = [{"task_id": s.task.id, "time": now, "type": LogType.INPUT.value, "content": s.text}
                     for s in mine.values()]
            await conn.execute(_INPUT, each(lines))
            await agents_started(session, [s.task.agent_id for s in mine.values()])
            await record_rows(session, [
                event_row(Principal.system(s.task.org_id), "task", "task.turn_started", agent_id=s.task.agent_id,
                          task_id=s.task.id, payload={"turn": held[s.task.id] + 1, "pid": s.pid, "followUp": False})
                for s in mine.values()])
        return [held[start.task.id] + 1 if first.get(start.task.id) == at else None for at, start in enumerate(starts)]

    return write
